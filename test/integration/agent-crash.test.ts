/**
 * `kill -9` of the agent at random moments, 50 times, with work flowing (capsules that pass, fail, are
 * refused, and answers lost on the way back), against the stand-in coordinator. Afterwards the coordinator
 * holds exactly the runner's set of answers (compared by digest), none stored twice, every capsule was
 * decided exactly once (never run twice, never skipped), the runner's log verifies, and the witness holds a
 * checkpoint of this very log.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Store } from '../../runner/store/store.js';
import { layoutOf } from '../../runner/state/state.js';
import { makeLinkWorld, StandInCoordinator, waitFor } from '../helpers/agent-link.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { column, value, withRawDb } from '../helpers/raw-db.js';

const KILLS = Number(process.env.AGENT_CRASH_KILLS ?? 50);
const world = makeLinkWorld();
const coordinator = new StandInCoordinator(world);
afterAll(async () => {
  await coordinator.stop();
  world.cleanup();
});

function startAgent(config: string, logLevel = 'warn') {
  const child = spawn(process.execPath, [CLI_ENTRY, 'agent', '--state', world.stateDir, '--config', config, '--coordinator', coordinator.url], {
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

describe('kill -9 of the agent', () => {
  it(`${KILLS} kills at random moments with work flowing lose nothing and duplicate nothing`, async () => {
    await coordinator.start();
    const config = join(world.dir, 'agent.json');
    writeFileSync(
      config,
      JSON.stringify({ coordinator: { pollWaitSeconds: 1, backoffBaseMs: 20, backoffCapMs: 200, flushMs: 3000, stopGraceMs: 500 } }),
    );
    const published: string[] = [];
    const publish = (i: number) => {
      const kind = i % 5;
      const id = `crash-${i}`;
      const capsule =
        kind === 3
          ? world.capsule({ id, target: { runners: ['another-runner'] } }) // refused: a signed rejection
          : kind === 4
            ? world.capsule({ id, steps: [{ name: 'fails', run: ['/bin/false'] }] })
            : world.capsule({ id, steps: [{ name: 'short', run: ['/bin/sleep', '0.05'] }] });
      coordinator.publish(capsule);
      published.push(id);
    };
    for (let i = 0; i < 3; i++) publish(i);
    for (let kill = 0; kill < KILLS; kill++) {
      publish(published.length);
      if (kill % 7 === 3) coordinator.faults.push({ route: 'bundle', kind: 'store-then-drop' });
      if (kill % 11 === 5) coordinator.faults.push({ route: 'rejection', kind: 'store-then-drop' });
      const agent = startAgent(config);
      await new Promise((resolve) => setTimeout(resolve, 250 + Math.floor(Math.random() * 900)));
      agent.child.kill('SIGKILL');
      const { signal } = await agent.exit;
      expect(signal === 'SIGKILL' || agent.stderr.join('') === '', agent.stderr.join('')).toBe(true);
    }

    // A last agent drains everything, then stops cleanly.
    const database = layoutOf(world.stateDir).database;
    const last = startAgent(config, 'info');
    await waitFor(() => last.stderr.join('').includes('"agent started"'), 'the last agent to start', 30_000);
    const drained = waitFor(
      () =>
        withRawDb(
          database,
          (db) =>
            value<number>(db, 'SELECT cursor FROM feed_cursor_v1') === published.length &&
            value<number>(db, "SELECT COUNT(*) FROM outbox_v1 WHERE state = 'queued'") === 0 &&
            value<number>(db, "SELECT COUNT(*) FROM runs_v1 WHERE status = 'running'") === 0,
          { readOnly: true },
        ),
      'every capsule decided and every answer delivered',
      120_000,
    );
    await drained.catch((err: unknown) => {
      const state = withRawDb(
        database,
        (db) => ({
          cursor: value(db, 'SELECT cursor FROM feed_cursor_v1'),
          pending: db.prepare("SELECT id, kind, record_seq, state, attempts, last_code FROM outbox_v1 WHERE state <> 'acked'").all(),
          running: value(db, "SELECT COUNT(*) FROM runs_v1 WHERE status = 'running'"),
        }),
        { readOnly: true },
      );
      throw new Error(`${String(err)}: ${JSON.stringify({ published: published.length, ...state })}\n${last.stderr.join('').slice(-3000)}`);
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    last.child.kill('SIGTERM');
    expect(await last.exit, last.stderr.join('').slice(-2000)).toEqual({ code: 0, signal: null });

    const { rows, records, logSize, heldRoot } = withStore((store) => ({
      rows: withRawDb(database, (db) => column<string>(db, 'SELECT digest FROM outbox_v1 ORDER BY id'), { readOnly: true }),
      records: [...store.records()].map((r) => ({ seq: r.seq, kind: r.kind, body: JSON.parse(r.leaf.toString('utf8')) as Record<string, unknown> })),
      logSize: store.merkle.size(),
      heldRoot: coordinator.held ? store.merkle.root(coordinator.held.size) : undefined,
    }));

    // The coordinator holds exactly the runner's answers: same digests, none twice on either side.
    const held = [...coordinator.bundles.keys(), ...coordinator.rejections.keys()].map((hex) => `sha256:${hex}`).sort();
    expect(new Set(rows).size).toBe(rows.length);
    expect([...rows].sort()).toEqual(held);
    const created = coordinator.stores.filter((s) => s.stored === 'created').map((s) => s.digest);
    expect(new Set(created).size).toBe(created.length);
    expect(withRawDb(database, (db) => value<number>(db, "SELECT COUNT(*) FROM outbox_v1 WHERE state <> 'acked'"), { readOnly: true })).toBe(0);

    // Every capsule decided exactly once: accepted (then run, or aborted by a kill) or refused, never both, never twice.
    const decisions = new Map<string, string[]>();
    for (const r of records) {
      if (r.kind !== 'capsule.accepted' && r.kind !== 'capsule.rejected') continue;
      const id = String(r.body.capsuleId);
      decisions.set(id, [...(decisions.get(id) ?? []), r.kind === 'capsule.rejected' ? String(r.body.code) : 'accepted']);
    }
    expect([...decisions.keys()].sort()).toEqual([...published].sort());
    for (const [id, kinds] of decisions) expect(kinds, id).toHaveLength(1);
    expect(records.some((r) => r.kind === 'capsule.rejected' && r.body.code === 'CAPSULE_REPLAY')).toBe(false);
    // Every answer record has its outbox row (and so its answer at the coordinator).
    const answers = records.filter((r) => r.kind === 'evidence.signed' || r.kind === 'capsule.rejected' || r.kind === 'run.aborted');
    expect(answers).toHaveLength(rows.length);

    // The runner's log verifies, and the witness holds a checkpoint of this log.
    const exportPath = join(world.dir, 'log.jsonl');
    const exported = runCli(['log', 'export', '--state', world.stateDir, '--out', exportPath]);
    expect(exported.status, exported.stderr).toBe(0);
    const verify = runCli(['log', 'verify', exportPath, '--trust', join(world.dir, 'trust.dsse.json')]);
    expect(verify.status, verify.stderr).toBe(0);
    expect(coordinator.held).toBeDefined();
    expect(coordinator.held!.size).toBeLessThanOrEqual(logSize);
    expect(coordinator.held!.rootHash.equals(heldRoot!)).toBe(true);
  }, 400_000);
});

function withStore<T>(fn: (store: Store) => T): T {
  const store = Store.open(layoutOf(world.stateDir).database);
  try {
    return fn(store);
  } finally {
    store.close();
  }
}
