/**
 * "No record, no run", for the log (issue 4), and a runner killed with SIGKILL mid-run: through the built CLI
 * on a real state folder.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { column, openRawDb, value } from '../helpers/raw-db.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../runner/store/store.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { makeWorld, type World } from '../helpers/world.js';

const ENV = { PATH: '/usr/bin:/bin' };

const sleepMs = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function readDb<T>(world: World, fn: (db: DatabaseSync) => T): T {
  const db = openRawDb(join(world.stateDir, 'runner.db'), { readOnly: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

const recordCount = (world: World) => readDb(world, (db) => value<number>(db, 'SELECT COUNT(*) FROM records_v1')!);

/** Where `exec` would keep the stdout of a step that printed `text`. */
const blobOfOutput = (world: World, text: string) =>
  join(world.stateDir, 'evidence', 'blobs', `sha256-${createHash('sha256').update(text).digest('hex')}`);

/** Host pids whose command line is exactly `argv` (the sandboxed step is visible from the host). */
function pidsRunning(argv: string[]): number[] {
  const wanted = `${argv.join('\0')}\0`;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8') !== wanted) continue;
      // A zombie nobody reaped is not running.
      if (/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${entry}/stat`, 'utf8'))) continue;
      pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleepMs(50);
  }
}

/** The tree has one leaf per record and every stored node checks. */
function expectTreeMatchesRecords(world: World): void {
  const store = Store.open(join(world.stateDir, 'runner.db'));
  try {
    expect(store.merkle.size()).toBe(store.recordCount());
    store.merkle.checkNodes();
  } finally {
    store.close();
  }
}

describe('when the record, which is the leaf, cannot be appended to the log', () => {
  let world: World;
  beforeAll(() => {
    world = makeWorld();
    const warmup = runCli(['exec', world.writeCapsule(world.capsule()), '--state', world.stateDir]);
    expect(warmup.status, warmup.stderr).toBe(0);
  });
  afterAll(() => world.cleanup());

  function withTrigger(when: string, fn: () => void): void {
    const db = openRawDb(join(world.stateDir, 'runner.db'));
    // A record and its tree hashes are one row of records_v1: refusing the row refuses the leaf.
    db.exec(`CREATE TRIGGER inject_append_failure BEFORE INSERT ON records_v1 ${when} BEGIN SELECT RAISE(ABORT, 'injected'); END`);
    db.close();
    try {
      fn();
    } finally {
      const cleanup = openRawDb(join(world.stateDir, 'runner.db'));
      cleanup.exec('DROP TRIGGER inject_append_failure');
      cleanup.close();
    }
  }

  it('exec exits 2 with STORE_WRITE_FAILED, writes no record, and the step never runs', () => {
    const token = `never-ran-${randomBytes(8).toString('hex')}`;
    const before = recordCount(world);
    withTrigger('', () => {
      const result = runCli(
        ['exec', world.writeCapsule(world.capsule({ steps: [{ name: 'trace', run: ['/bin/echo', token] }] })), '--state', world.stateDir],
        { env: ENV },
      );
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr).toContain('STORE_WRITE_FAILED');
    });
    expect(recordCount(world)).toBe(before);
    expect(existsSync(blobOfOutput(world, `${token}\n`))).toBe(false);
  });

  it('when only the run.started leaf fails, the acceptance is recorded but no run starts and the step never runs', () => {
    const token = `never-ran-${randomBytes(8).toString('hex')}`;
    const before = recordCount(world);
    // capsule.accepted lands at index `before`, run.started at `before + 1`.
    withTrigger(`WHEN NEW.seq = ${before + 1} AND NEW.kind = 'run.started'`, () => {
      const result = runCli(
        ['exec', world.writeCapsule(world.capsule({ steps: [{ name: 'trace', run: ['/bin/echo', token] }] })), '--state', world.stateDir],
        { env: ENV },
      );
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr).toContain('STORE_WRITE_FAILED');
    });
    expect(readDb(world, (db) => column(db, 'SELECT kind FROM records_v1 WHERE seq >= ? ORDER BY seq', before))).toEqual(['capsule.accepted']);
    expect(readDb(world, (db) => value(db, "SELECT COUNT(*) FROM runs_v1 WHERE status = 'running'"))).toBe(0);
    expect(existsSync(blobOfOutput(world, `${token}\n`))).toBe(false);
    expectTreeMatchesRecords(world);
  });
});

describe('when the runner is killed with SIGKILL in the middle of a run', () => {
  let world: World;
  let runId: string;
  let stepPids: number[];
  let stepGoneAfterKill: boolean;
  const sleepArgv = ['/bin/sleep', `30.${randomBytes(3).readUIntBE(0, 3)}`]; // unique among concurrent tests

  beforeAll(async () => {
    world = makeWorld();
    const file = world.writeCapsule(world.capsule({ steps: [{ name: 'sleep', run: sleepArgv, timeoutSeconds: 60 }] }));
    const child = spawn(process.execPath, [CLI_ENTRY, 'exec', file, '--state', world.stateDir], { env: ENV, stdio: 'ignore' });
    try {
      runId = await waitFor(
        'a run.started record',
        () => readDb(world, (db) => value(db, "SELECT run_id FROM records_v1 WHERE kind = 'run.started'")),
        15_000,
      );
      stepPids = await waitFor(
        'the sleeping step',
        () => {
          const pids = pidsRunning(sleepArgv);
          return pids.length > 0 ? pids : undefined;
        },
        15_000,
      );
    } finally {
      child.kill('SIGKILL');
    }
    await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));
    // bwrap --die-with-parent should take the step with the runner; give it a bounded moment.
    stepGoneAfterKill = await waitFor('the step to end', () => (pidsRunning(sleepArgv).length === 0 ? true : undefined), 5_000).catch(() => false);
    const next = runCli(['exec', world.writeCapsule(world.capsule()), '--state', world.stateDir], { env: ENV });
    expect(next.status, next.stderr).toBe(0);
  }, 60_000);

  afterAll(() => {
    for (const pid of pidsRunning(sleepArgv)) process.kill(pid, 'SIGKILL');
    world.cleanup();
  });

  it('the sleeping step does not outlive the runner', () => {
    expect(stepPids.length).toBeGreaterThan(0);
    expect(stepGoneAfterKill, `step pids ${stepPids.join(', ')} still running after the runner was SIGKILLed`).toBe(true);
  });

  it('the next process records the interrupted run as run.aborted (RUN_RUNNER_RESTARTED) and closes it in runs_v1', () => {
    const aborted = readDb(world, (db) =>
      (db.prepare("SELECT leaf FROM records_v1 WHERE kind = 'run.aborted' AND run_id = ?").all(runId) as { leaf: Uint8Array }[]).map(
        (row) => row.leaf,
      ),
    );
    expect(aborted.map((leaf) => JSON.parse(Buffer.from(leaf).toString('utf8')))).toEqual([
      expect.objectContaining({ kind: 'run.aborted', runId, reason: 'RUN_RUNNER_RESTARTED' }),
    ]);
    expect(readDb(world, (db) => (db.prepare('SELECT status FROM runs_v1 WHERE run_id = ?').get(runId) as { status: string }).status)).toBe(
      'aborted',
    );
  });

  it('the log is consistent: every tree node checks, and log export + log verify pass', () => {
    expectTreeMatchesRecords(world);
    const out = join(world.dir, 'after-kill.log.jsonl');
    const exported = runCli(['log', 'export', '--state', world.stateDir, '--out', out]);
    expect(exported.status, exported.stderr).toBe(0);
    const verified = runCli(['log', 'verify', out, '--trust', world.trustPath]);
    expect(verified.status, verified.stdout + verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(/^OK log of runner /);
  });
});
