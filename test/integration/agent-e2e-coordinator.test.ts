/**
 * End to end, real processes on 127.0.0.1: the reference coordinator (dist/coordinator/src/main.js) and the
 * runner's `edge-runner agent` (dist/runner/main.js). A capsule published through the operator API runs on
 * the runner, its bundle arrives at the coordinator (verified there), the bundle the coordinator serves
 * verifies offline with `edge-runner verify`, and the coordinator's fleet view shows the witnessed log.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
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

function spawnLogged(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
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

describe.skipIf(!built)('the agent and the reference coordinator (needs dist/: npx tsc -p tsconfig.build.json)', () => {
  it('a capsule published through the operator API runs on the agent, and its bundle arrives verified and verifies offline', async () => {
    const state = join(world.dir, 'coordinator');
    const witnessKey = join(world.dir, 'witness.key.pem');
    writeFileSync(witnessKey, world.witnessKey.toPem(), { mode: 0o600 });
    const init = spawnSync(
      process.execPath,
      [COORDINATOR, 'init', '--state', state, '--trust', join(world.dir, 'trust.dsse.json'), '--witness-key', witnessKey, '--listen', '127.0.0.1:0'],
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
    const agent = spawnLogged([CLI_ENTRY, 'agent', '--state', world.stateDir, '--config', config, '--coordinator', base]);

    const capsule = world.capsule({ target: { runners: [world.runnerId] } });
    const published = await operator('/v1/capsules', {
      method: 'POST',
      body: capsule,
      headers: { 'content-type': 'application/vnd.edge-runner.capsule-file.v1+json' },
    });
    expect(published.status, await published.clone().text()).toBe(201);

    let items: { digest: string; verdict: string }[] = [];
    const deadline = Date.now() + 60_000;
    while (items.length === 0 && Date.now() < deadline) {
      const listed = await operator(`/v1/bundles?runner=${world.runnerId}`);
      if (listed.status === 200) items = ((await listed.json()) as { items: typeof items }).items;
      if (items.length === 0) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(items, `${agent.err.join('').slice(-3000)}\n${coordinator.err.join('').slice(-2000)}`).toHaveLength(1);
    expect(items[0]!.verdict).toBe('pass');

    // The bundle as the coordinator serves it verifies offline against the trust document.
    const hex = items[0]!.digest.replace('sha256:', '');
    const bundle = Buffer.from(await (await operator(`/v1/bundles/${hex}`)).arrayBuffer());
    const bundlePath = join(world.dir, 'fetched.bundle.json');
    writeFileSync(bundlePath, bundle);
    const verified = runCli(['verify', bundlePath, '--trust', join(world.dir, 'trust.dsse.json')]);
    expect(verified.status, verified.stderr).toBe(0);

    // The fleet view: the runner reported, and its log is witnessed.
    await waitFor(() => agent.err.join('').includes('"checkpoint cosigned"'), 'the witness cosignature', 20_000);
    type Fleet = { runners: { id: string; witnessedSize: number; logSize: number; outboxDepth: number; deadLetters: number }[] };
    let me: Fleet['runners'][number] | undefined;
    for (let i = 0; i < 50 && !(me && me.witnessedSize > 0); i++) {
      me = ((await (await operator('/v1/runners')).json()) as Fleet).runners.find((r) => r.id === world.runnerId);
      if (!(me && me.witnessedSize > 0)) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(me).toMatchObject({ id: world.runnerId, deadLetters: 0 });
    expect(me!.witnessedSize).toBeGreaterThan(0);
    // The runner says which trust version it saw in this coordinator's feed, beside its own pin (review).
    expect(me).toMatchObject({ trustVersion: 1, coordinatorTrustVersion: 1 });

    // A capsule the runner refuses is still answered: the same id and nonce again (other bytes, so the
    // coordinator takes it) is a replay to the runner, and its signed rejection reaches the coordinator.
    const first = JSON.parse(Buffer.from(JSON.parse(capsule.toString('utf8')).envelope.payload, 'base64').toString('utf8'));
    const replay = world.capsule({
      id: first.id,
      nonce: first.nonce,
      target: { runners: [world.runnerId] },
      steps: [{ name: 'again', run: ['/bin/true'] }],
    });
    const republished = await operator('/v1/capsules', { method: 'POST', body: replay });
    expect(republished.status, await republished.clone().text()).toBe(201);
    let rejections: unknown[] = [];
    for (let i = 0; i < 150 && rejections.length === 0; i++) {
      const listed = await operator(`/v1/rejections?runner=${world.runnerId}`);
      if (listed.status === 200) rejections = ((await listed.json()) as { items: unknown[] }).items;
      if (rejections.length === 0) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(rejections).toHaveLength(1);

    agent.child.kill('SIGTERM');
    expect((await agent.exit).code).toBe(0);
    coordinator.child.kill('SIGTERM');
    expect((await coordinator.exit).code).toBe(0);
  }, 120_000);
});
