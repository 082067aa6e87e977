/**
 * `kill -9` of the reference coordinator (dist/coordinator/src/main.js), 20 times, while one agent
 * (dist/runner/main.js agent) takes work and ships answers. Afterwards the coordinator holds exactly the
 * runner's answers (bundles and rejections, compared by digest, none listed twice), every capsule was
 * decided exactly once, and the witness holds a checkpoint of the runner's log.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Store } from '../../runner/store/store.js';
import { layoutOf } from '../../runner/state/state.js';
import { freePort, makeLinkWorld, waitFor } from '../helpers/agent-link.js';
import { CLI_ENTRY } from '../helpers/cli.js';
import { column, value, withRawDb } from '../helpers/raw-db.js';

const COORDINATOR = fileURLToPath(new URL('../../dist/coordinator/src/main.js', import.meta.url));
const built = existsSync(COORDINATOR) && existsSync(CLI_ENTRY);
const KILLS = Number(process.env.COORDINATOR_CRASH_KILLS ?? 20);

const children: ChildProcess[] = [];
const world = makeLinkWorld();
afterAll(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
  }
  world.cleanup();
});

function spawnLogged(args: string[]) {
  const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const out: string[] = [];
  const err: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (t: string) => out.push(t));
  child.stderr!.setEncoding('utf8').on('data', (t: string) => err.push(t));
  const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, out, err, exit };
}

describe.skipIf(!built)('kill -9 of the reference coordinator (needs dist/)', () => {
  it(`${KILLS} kills of the coordinator with work flowing: it ends with exactly the runner's answers, each once`, async () => {
    const state = join(world.dir, 'coordinator');
    const witnessKey = join(world.dir, 'witness.key.pem');
    writeFileSync(witnessKey, world.witnessKey.toPem(), { mode: 0o600 });
    const port = await freePort();
    const init = spawnSync(
      process.execPath,
      [
        COORDINATOR,
        'init',
        '--state',
        state,
        '--trust',
        join(world.dir, 'trust.dsse.json'),
        '--witness-key',
        witnessKey,
        '--listen',
        `127.0.0.1:${port}`,
      ],
      { encoding: 'utf8' },
    );
    expect(init.status, init.stderr).toBe(0);
    const token = readFileSync(join(state, 'operator.token'), 'utf8').trim();
    const base = `http://127.0.0.1:${port}`;
    const operator = (path: string, init: RequestInit = {}) =>
      fetch(`${base}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...init.headers } });
    const serve = async () => {
      const coordinator = spawnLogged([COORDINATOR, 'serve', '--state', state]);
      await waitFor(
        () => coordinator.out.join('').includes('"listening"') || coordinator.child.exitCode !== null,
        'the coordinator to listen',
        20_000,
      );
      expect(coordinator.child.exitCode, coordinator.err.join('')).toBeNull();
      return coordinator;
    };

    const config = join(world.dir, 'agent.json');
    writeFileSync(
      config,
      JSON.stringify({ coordinator: { pollWaitSeconds: 1, backoffBaseMs: 50, backoffCapMs: 500, flushMs: 3000, requestTimeoutMs: 5000 } }),
    );
    let coordinator = await serve();
    const agent = spawnLogged([CLI_ENTRY, 'agent', '--state', world.stateDir, '--config', config, '--coordinator', base]);

    let published = 0;
    const publish = async (i: number) => {
      const capsule =
        i % 4 === 3
          ? world.capsule({ id: `c-${i}`, steps: [{ name: 'fails', run: ['/bin/false'] }] })
          : world.capsule({ id: `c-${i}`, steps: [{ name: 'short', run: ['/bin/sleep', '0.05'] }] });
      const answer = await operator('/v1/capsules', { method: 'POST', body: capsule });
      expect(answer.status, await answer.clone().text()).toBe(201);
      published += 1;
    };
    for (let kill = 0; kill < KILLS; kill++) {
      await publish(published);
      await publish(published);
      await new Promise((resolve) => setTimeout(resolve, 150 + Math.floor(Math.random() * 700)));
      coordinator.child.kill('SIGKILL');
      await coordinator.exit;
      await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 300)));
      coordinator = await serve();
    }

    // Everything decided and delivered (the agent keeps running; the runner database is read beside it).
    const database = layoutOf(world.stateDir).database;
    await waitFor(
      () =>
        withRawDb(
          database,
          (db) =>
            value<number>(db, 'SELECT cursor FROM feed_cursor_v1') === published &&
            value<number>(db, "SELECT COUNT(*) FROM outbox_v1 WHERE state = 'queued'") === 0 &&
            value<number>(db, "SELECT COUNT(*) FROM runs_v1 WHERE status = 'running'") === 0,
          { readOnly: true },
        ),
      'every capsule decided and every answer delivered',
      120_000,
    );
    const rows = withRawDb(database, (db) => column<string>(db, 'SELECT digest FROM outbox_v1 ORDER BY id'), { readOnly: true });
    expect(withRawDb(database, (db) => value<number>(db, "SELECT COUNT(*) FROM outbox_v1 WHERE state <> 'acked'"), { readOnly: true })).toBe(0);

    const list = async (path: string) => ((await (await operator(path)).json()) as { items: { digest: string }[] }).items.map((item) => item.digest);
    const held = [
      ...(await list(`/v1/bundles?runner=${world.runnerId}&limit=1000`)),
      ...(await list(`/v1/rejections?runner=${world.runnerId}&limit=1000`)),
    ];
    expect(new Set(held).size).toBe(held.length);
    expect([...held].sort()).toEqual([...rows].sort());

    // Every capsule decided once.
    const store = Store.open(database);
    try {
      const decisions = [...store.records()].filter((r) => r.kind === 'capsule.accepted' || r.kind === 'capsule.rejected');
      expect(decisions).toHaveLength(published);
      expect(decisions.every((r) => r.kind === 'capsule.accepted')).toBe(true);
    } finally {
      store.close();
    }

    // The witness holds a checkpoint of this log, no larger than it.
    agent.child.kill('SIGTERM');
    expect((await agent.exit).code).toBe(0);
    const fleet = (await (await operator('/v1/runners')).json()) as {
      runners: { id: string; witnessedSize: number; logSize: number; forks: unknown }[];
    };
    const me = fleet.runners.find((r) => r.id === world.runnerId)!;
    const after = Store.open(database);
    try {
      expect(me.witnessedSize).toBeGreaterThan(0);
      expect(me.witnessedSize).toBeLessThanOrEqual(after.merkle.size());
      expect(after.witnessedSize(world.witnessName)).toBe(me.witnessedSize);
    } finally {
      after.close();
    }
    coordinator.child.kill('SIGTERM');
    expect((await coordinator.exit).code).toBe(0);
  }, 300_000);
});
