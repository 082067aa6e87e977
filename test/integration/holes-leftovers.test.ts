/**
 * Issue 8, point 14: a run folder that cannot be removed is recorded (workspace.not-removed, with its code),
 * and removed at a later open once it can be. Through the built CLI; the obstacle is a tmpfs mounted inside
 * a leftover run folder (EBUSY), which only root can make.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { withRawDb } from '../helpers/raw-db.js';
import { makeWorld, type World } from '../helpers/world.js';

const isRoot = process.getuid?.() === 0;
let world: World | undefined;
let mounted: string | undefined;
afterAll(() => {
  if (mounted) spawnSync('umount', [mounted]);
  world?.cleanup();
});

describe('attack 14: a run folder that cannot be removed', () => {
  it.skipIf(!isRoot)('is recorded as workspace.not-removed with its code, and removed at the next open once it can be (needs root)', () => {
    const w = (world = makeWorld());
    const runId = randomUUID();
    const runDir = join(w.stateDir, 'runs', runId);
    mounted = join(runDir, 'busy');
    mkdirSync(mounted, { recursive: true, mode: 0o700 });
    expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mounted]).status).toBe(0);

    const first = runCli(['exec', w.writeCapsule(w.capsule()), '--state', w.stateDir]);
    expect(first.status, first.stderr).toBe(0);
    expect(existsSync(runDir), 'the folder with a mount in it is still there').toBe(true);
    const records = withRawDb(join(w.stateDir, 'runner.db'), (db) =>
      (db.prepare("SELECT leaf FROM records_v1 WHERE kind = 'workspace.not-removed'").all() as { leaf: Uint8Array }[]).map((row) =>
        JSON.parse(Buffer.from(row.leaf).toString('utf8')),
      ),
    );
    expect(records).toEqual([expect.objectContaining({ runId, code: 'EXEC_WORKSPACE_NOT_REMOVED', errno: 'EBUSY' })]);

    expect(spawnSync('umount', [mounted]).status).toBe(0);
    mounted = undefined;
    const second = runCli(['exec', w.writeCapsule(w.capsule()), '--state', w.stateDir]);
    expect(second.status, second.stderr).toBe(0);
    expect(existsSync(runDir)).toBe(false);
  });
});
