/**
 * End to end, real processes on 127.0.0.1: the reference coordinator (dist/coordinator/src/main.js) and the
 * runner's `edge-runner agent` (dist/runner/main.js), on the real clock. A recurring capsule published once
 * through the operator API is accepted once by the agent and fires at each slot: the coordinator receives a
 * bundle per firing, each verified there and offline, each naming its own slot (run.scheduledFor) and the
 * same accepted capsule (its manifest digest). Stopped and started again, the agent records the slots it
 * was down for (schedule.missed) instead of running them.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { verifyBundle } from '../../runner/evidence/bundle.js';
import { parseRecordLeaf } from '../../runner/log/record.js';
import { Store } from '../../runner/store/store.js';
import { makeLinkWorld, waitFor } from '../helpers/agent-link.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';

const COORDINATOR = fileURLToPath(new URL('../../dist/coordinator/src/main.js', import.meta.url));
const built = existsSync(COORDINATOR) && existsSync(CLI_ENTRY);

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
  const exit = new Promise<{ code: number | null }>((resolve) => child.once('exit', (code) => resolve({ code })));
  return { child, out, err, exit };
}

describe.skipIf(!built)('a recurring capsule through the agent and the reference coordinator (needs dist/: npx tsc -p tsconfig.build.json)', () => {
  it('is published once, accepted once, and each slot arrives at the coordinator as its own verified bundle', async () => {
    const state = join(world.dir, 'coordinator');
    const witnessKey = join(world.dir, 'witness.key.pem');
    writeFileSync(witnessKey, world.witnessKey.toPem(), { mode: 0o600 });
    const trustPath = join(world.dir, 'trust.dsse.json');
    const init = spawnSync(
      process.execPath,
      [COORDINATOR, 'init', '--state', state, '--trust', trustPath, '--witness-key', witnessKey, '--listen', '127.0.0.1:0'],
      {
        encoding: 'utf8',
      },
    );
    expect(init.status, init.stderr).toBe(0);
    const token = readFileSync(join(state, 'operator.token'), 'utf8').trim();
    const coordinator = spawnLogged([COORDINATOR, 'serve', '--state', state]);
    await waitFor(() => /"listening":"http:\/\/127\.0\.0\.1:\d+"/.test(coordinator.out.join('')), 'the coordinator to listen', 20_000);
    const base = /"listening":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(coordinator.out.join(''))![1]!;
    const operator = (path: string, init: RequestInit = {}) =>
      fetch(`${base}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...init.headers } });

    const config = join(world.dir, 'agent.json');
    writeFileSync(config, JSON.stringify({ coordinator: { pollWaitSeconds: 2, backoffBaseMs: 100, backoffCapMs: 1000, flushMs: 3000 } }));
    const startAgent = () => spawnLogged([CLI_ENTRY, 'agent', '--state', world.stateDir, '--config', config, '--coordinator', base]);
    let agent = startAgent();

    // Every 3 seconds (six fields: seconds first).
    const capsule = world.capsule({ target: { runners: [world.runnerId] }, schedule: { cron: '*/3 * * * * *' } });
    const published = await operator('/v1/capsules', {
      method: 'POST',
      body: capsule,
      headers: { 'content-type': 'application/vnd.edge-runner.capsule-file.v1+json' },
    });
    expect(published.status, await published.clone().text()).toBe(201);

    type Item = { digest: string; verdict: string };
    const bundlesAtCoordinator = async (): Promise<Item[]> => {
      const listed = await operator(`/v1/bundles?runner=${world.runnerId}`);
      return listed.status === 200 ? ((await listed.json()) as { items: Item[] }).items : [];
    };
    let items: Item[] = [];
    const deadline = Date.now() + 60_000;
    while (items.length < 3 && Date.now() < deadline) {
      items = await bundlesAtCoordinator();
      if (items.length < 3) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(items.length, `${agent.err.join('').slice(-3000)}\n${coordinator.err.join('').slice(-2000)}`).toBeGreaterThanOrEqual(3);

    // Each bundle as the coordinator serves it: verified offline, its own slot, the same accepted capsule.
    const slots = new Set<string>();
    const manifests = new Set<string>();
    for (const item of items.slice(0, 3)) {
      const bytes = Buffer.from(await (await operator(`/v1/bundles/${item.digest.replace('sha256:', '')}`)).arrayBuffer());
      const path = join(world.dir, `${item.digest.slice(7, 19)}.bundle.json`);
      writeFileSync(path, bytes);
      const verified = runCli(['verify', path, '--trust', trustPath]);
      expect(verified.status, verified.stderr).toBe(0);
      const predicate = verifyBundle(bytes, world.trust).statement.predicate;
      expect(predicate.run.scheduledFor).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:(00|03|06|09|12|15|18|21|24|27|30|33|36|39|42|45|48|51|54|57)\.000Z$/);
      slots.add(predicate.run.scheduledFor!);
      manifests.add(predicate.capsule.digest);
    }
    expect(slots.size).toBe(3);
    expect(manifests.size).toBe(1);

    // Down for about 10 seconds: the slots passed are recorded missed on restart, not run in a burst.
    agent.child.kill('SIGTERM');
    expect((await agent.exit).code).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    agent = startAgent();
    await waitFor(
      () => agent.err.join('').includes('"scheduled slots missed"') || agent.err.join('').includes('"scheduled firing"'),
      'the scheduler to look',
      30_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 1500));
    agent.child.kill('SIGTERM');
    expect((await agent.exit).code).toBe(0);

    const store = Store.open(join(world.stateDir, 'runner.db'));
    try {
      const kinds: { kind: string; body: Record<string, unknown> }[] = [...store.records()].map((r) => parseRecordLeaf(r.leaf, r.seq) as never);
      expect(kinds.filter((r) => r.kind === 'capsule.accepted')).toHaveLength(1);
      const missed = kinds.filter((r) => r.kind === 'schedule.missed');
      expect(missed.length).toBeGreaterThanOrEqual(1);
      expect(missed.reduce((sum, r) => sum + (r.body.count as number), 0)).toBeGreaterThanOrEqual(2);
      expect(missed.every((r) => r.body.catchUp === 'skip')).toBe(true);
      // Never two runs at once: each run ended before the next started.
      const runs = kinds.filter((r) => r.kind === 'run.started' || r.kind === 'run.finished' || r.kind === 'run.aborted').map((r) => r.kind);
      for (let i = 0; i < runs.length; i += 2) expect(runs[i]).toBe('run.started');
    } finally {
      store.close();
    }
    coordinator.child.kill('SIGTERM');
    expect((await coordinator.exit).code).toBe(0);
  }, 150_000);
});
