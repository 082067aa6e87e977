/**
 * `kill -9` of the air-gapped agent (the built CLI, spool folder from the operator's TOML file: spool.dir)
 * at random moments while capsule files keep arriving in DIR/in/. Afterwards: every file was decided
 * exactly once (spool_inbox_v1, and one acceptance or rejection record each), every answer the log owes is
 * in DIR/out/ exactly once under its content address, whole (no file there is cut short: only a writer's
 * dot-named temporary file may be left by a kill), and the log's outbox is settled by `outbox.spooled`.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { layoutOf } from '../../runner/state/state.js';
import { makeLinkWorld, waitFor } from '../helpers/agent-link.js';
import { CLI_ENTRY } from '../helpers/cli.js';
import { column, value, withRawDb } from '../helpers/raw-db.js';

const KILLS = Number(process.env.SPOOL_CRASH_KILLS ?? 12);
const world = makeLinkWorld({ runnerId: 'runner-spool-crash' });
afterAll(() => world.cleanup());

const spool = join(world.dir, 'spool');
const configFile = join(world.dir, 'agent.toml');

function startAgent(logLevel = 'warn') {
  const child = spawn(process.execPath, [CLI_ENTRY, 'agent', '--state', world.stateDir, '--config', configFile], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', EDGE_RUNNER_LOG_LEVEL: logLevel },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (text: string) => stderr.push(text));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, exit, stderr };
}

describe.skipIf(!existsSync(CLI_ENTRY))('kill -9 of the spool agent (needs dist/)', () => {
  it(`${KILLS} kills with files arriving decide each file once and leave every answer in out/ once, whole`, async () => {
    writeFileSync(configFile, `[spool]\ndir = ${JSON.stringify(spool)}\n\n[coordinator]\nstopGraceMs = 500\n`, { mode: 0o600 });
    mkdirSync(join(spool, 'in'), { recursive: true });
    let dropped = 0;
    const drop = () => {
      const i = dropped++;
      const kind = i % 4;
      const bytes =
        kind === 2
          ? world.capsule({ id: `crash-${i}`, target: { runners: ['another-runner'] } }) // refused
          : kind === 3
            ? world.capsule({ id: `crash-${i}`, target: { runners: [world.runnerId] }, steps: [{ name: 'fails', run: ['/bin/false'] }] })
            : world.capsule({ id: `crash-${i}`, target: { runners: [world.runnerId] }, steps: [{ name: 'short', run: ['/bin/sleep', '0.05'] }] });
      const path = join(spool, 'in', `crash-${i}.capsule.json`);
      writeFileSync(path, bytes);
      const past = new Date(Date.now() - 60_000);
      utimesSync(path, past, past);
    };
    for (let i = 0; i < 3; i++) drop();
    for (let kill = 0; kill < KILLS; kill++) {
      drop();
      const agent = startAgent();
      await new Promise((resolve) => setTimeout(resolve, 300 + Math.floor(Math.random() * 900)));
      agent.child.kill('SIGKILL');
      await agent.exit;
    }

    const database = layoutOf(world.stateDir).database;
    const last = startAgent('info');
    await waitFor(
      () =>
        withRawDb(
          database,
          (db) =>
            value<number>(db, 'SELECT COUNT(*) FROM spool_inbox_v1') === dropped &&
            value<number>(db, "SELECT COUNT(*) FROM outbox_v1 WHERE state = 'queued'") === 0 &&
            value<number>(db, "SELECT COUNT(*) FROM runs_v1 WHERE status = 'running'") === 0,
          { readOnly: true },
        ),
      'every file decided and every answer spooled',
      120_000,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${last.stderr.join('').slice(-3000)}`);
    });
    // The state may already be complete when the last agent starts: SIGTERM only once it listens for it
    // (it says so as it starts), or Node's default ends it by the signal.
    await waitFor(() => last.stderr.join('').includes('spool agent started'), 'the last agent started', 60_000);
    last.child.kill('SIGTERM');
    expect(await last.exit, last.stderr.join('').slice(-2000)).toEqual({ code: 0, signal: null });

    const { digests, decisions, spooled } = withRawDb(
      database,
      (db) => ({
        digests: column<string>(db, "SELECT digest FROM outbox_v1 WHERE state = 'acked' ORDER BY id"),
        decisions: column<string>(db, "SELECT kind FROM records_v1 WHERE kind IN ('capsule.accepted', 'capsule.rejected')"),
        spooled: column<string>(db, "SELECT kind FROM records_v1 WHERE kind = 'outbox.spooled'").length,
      }),
      { readOnly: true },
    );
    // Each file decided once: one acceptance or refusal per file (a run cut by a kill is answered as aborted).
    expect(decisions).toHaveLength(dropped);
    expect(spooled).toBe(digests.length);
    // out/ holds exactly the answers, once each, whole; nothing else but a kill's temporary files.
    const inOut: string[] = [];
    for (const folder of ['bundles', 'rejections']) {
      for (const name of readdirSync(join(spool, 'out', folder))) {
        if (name.startsWith('.')) continue;
        const hex = name.split('.')[0]!;
        expect(
          createHash('sha256')
            .update(readFileSync(join(spool, 'out', folder, name)))
            .digest('hex'),
          name,
        ).toBe(hex);
        inOut.push(`sha256:${hex}`);
      }
    }
    expect(inOut.sort()).toEqual([...digests].sort());
    expect(new Set(digests).size).toBe(digests.length);
  }, 240_000);
});
