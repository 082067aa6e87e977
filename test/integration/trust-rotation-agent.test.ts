/**
 * Trust rotation through the real agent and the real coordinator, processes on 127.0.0.1 with a recording
 * proxy between them. The coordinator keeps every trust version it pinned (`trust-update`) and serves each
 * at GET /v1/trust/{version}; an agent whose feed names a newer version fetches pin + 1 and applies it under
 * TUF's rule before it takes the feed's capsules, records trust.updated, moves its pin and switches its live
 * context. The rotation replaces the root key (leaked) and the capsule signer: a capsule of the old signer
 * waiting in the feed is refused after the update, the new signer's runs, and the bundle made before the
 * rotation still verifies against state/trust/1.dsse.json. A hostile or broken coordinator serving the
 * wrong document for a version (a higher one: fast-forward; a lower one: rollback) is refused with the
 * code and recorded; the pin stays until the real document comes.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { packCapsule } from '../../runner/capsule/pack.js';
import { makeLinkWorld, type LinkWorld } from '../helpers/agent-link.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { killAll, spawnAgent, startProxiedCoordinator, waitForAsync, type RecordingProxy } from '../helpers/link.js';
import { pinOf, rotatedBody, trustRecords } from '../helpers/rotation.js';
import { baseTemplate, signTrust } from '../helpers/world.js';
import { COORDINATOR_ENTRY, runCoordinatorCli, startCoordinator, type RunningCoordinator } from '../coordinator/helpers.js';

const built = existsSync(COORDINATOR_ENTRY) && existsSync(CLI_ENTRY);
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

const worlds: LinkWorld[] = [];
const proxies: RecordingProxy[] = [];
const coordinators: RunningCoordinator[] = [];
afterAll(async () => {
  await killAll();
  for (const c of coordinators) await c.stop().catch(() => undefined);
  for (const proxy of proxies) await proxy.stop();
  for (const world of worlds) world.cleanup();
});

/** v2 of a link world's trust: root-1 (leaked) and signer-1 out, root-2 and signer-2 in; signed by both roots. */
function rotation(world: LinkWorld) {
  const root2 = PrivateKey.generate();
  const signer2 = PrivateKey.generate();
  const body = rotatedBody(world.trust.body, {
    remove: [world.root, world.signer],
    add: [
      { name: 'root-2', key: root2, roles: ['root'] },
      { name: 'signer-2', key: signer2, roles: ['capsule-signer'] },
    ],
  });
  const bytes = signTrust(body, [world.root, root2]);
  const file = join(world.dir, 'trust-v2.dsse.json');
  writeFileSync(file, bytes);
  return { root2, signer2, body, bytes, file };
}

const capsuleBy = (signer: PrivateKey, runnerId: string) =>
  Buffer.from(JSON.stringify(packCapsule(baseTemplate({ target: { runners: [runnerId] } }), new Map(), [signer])));

/** Operator calls to a coordinator started here (its URL changes when it restarts). */
function operatorOf(stateDir: string, url: () => string) {
  const token = readFileSync(join(stateDir, 'operator.token'), 'utf8').trim();
  return async (path: string, init: RequestInit = {}) => {
    const answer = await fetch(`${url()}${path}`, { ...init, headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(20_000) });
    const body = Buffer.from(await answer.arrayBuffer());
    return { status: answer.status, body, json: () => JSON.parse(body.toString('utf8')) };
  };
}

describe.skipIf(!built)('the agent follows a trust rotation published by the coordinator (needs dist/: npx tsc -p tsconfig.build.json)', () => {
  type Item = { digest: string; verdict?: string; code?: string; capsuleId?: string };
  let s: {
    world: LinkWorld;
    v2: ReturnType<typeof rotation>;
    proxy: RecordingProxy;
    agentLog: Record<string, unknown>[];
    agentText: string;
    bundles: Item[];
    rejections: Item[];
    beforeBundle: Buffer;
    fleet: { runners: { id: string; trustVersion: number | null }[]; trust: { version: number } };
  };

  it('runs a capsule under v1, then after the coordinator pins v2 the agent updates, refuses the old signer’s capsule and runs the new signer’s', async () => {
    const world = makeLinkWorld();
    worlds.push(world);
    const v2 = rotation(world);
    const { proxy, coordinator } = await startProxiedCoordinator(world);
    proxies.push(proxy);
    let url = coordinator.url;
    const operator = operatorOf(coordinator.stateDir, () => url);
    let agent = spawnAgent(world, proxy.url);
    expect((await operator('/v1/capsules', { method: 'POST', body: capsuleBy(world.signer, world.runnerId) })).status).toBe(201);
    let bundles: Item[] = [];
    await waitForAsync(
      async () => (bundles = (await operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as Item[]).length === 1,
      `the v1 bundle\n${agent.stderr().slice(-3000)}`,
      60_000,
    );
    const beforeBundle = (await operator(`/v1/bundles/${bundles[0]!.digest.replace('sha256:', '')}`)).body;
    await agent.stop();

    // A capsule of the old signer waits in the feed while the coordinator moves to v2.
    expect((await operator('/v1/capsules', { method: 'POST', body: capsuleBy(world.signer, world.runnerId) })).status).toBe(201);
    await coordinator.running.stop();
    const update = runCoordinatorCli(['trust-update', '--state', coordinator.stateDir, v2.file]);
    expect(update.status, update.stderr).toBe(0);
    const restarted = await startCoordinator(coordinator.stateDir, ['--public-url', proxy.url]);
    coordinators.push(restarted);
    url = restarted.url;
    proxy.target = restarted.url;

    agent = spawnAgent(world, proxy.url, {}, 'agent-2');
    let rejections: Item[] = [];
    await waitForAsync(
      async () => (rejections = (await operator(`/v1/rejections?runner=${world.runnerId}`)).json().items as Item[]).length === 1,
      `the old signer's capsule refused after the update\n${agent.stderr().slice(-3000)}`,
      60_000,
    );
    expect((await operator('/v1/capsules', { method: 'POST', body: capsuleBy(v2.signer2, world.runnerId) })).status).toBe(201);
    await waitForAsync(
      async () => (bundles = (await operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as Item[]).length === 2,
      `the new signer's bundle\n${agent.stderr().slice(-3000)}`,
      60_000,
    );
    await waitForAsync(
      () => proxy.to('PUT', `/v1/runners/${world.runnerId}/status`).some((e) => JSON.parse(e.requestBody.toString('utf8')).trustVersion === 2),
      'a status report naming the new pin',
      20_000,
    );
    await agent.stop();
    const fleet = (await operator('/v1/runners')).json();
    s = { world, v2, proxy, agentLog: agent.lines, agentText: agent.stderr(), bundles, rejections, beforeBundle, fleet };
    expect(rejections[0]!.code, JSON.stringify(rejections)).toMatch(/^CAPSULE_SIGN/);
    expect(bundles.map((b) => b.verdict)).toEqual(['pass', 'pass']);
  }, 180_000);

  it('the agent fetched GET /v1/trust/2 and recorded trust.updated (source coordinator) before the capsules; its pin is v2, v1 and v2 kept', () => {
    expect(s.proxy.to('GET', '/v1/trust/2').length).toBeGreaterThan(0);
    const records = trustRecords(s.world.stateDir);
    expect(records).toEqual([
      { kind: 'trust.updated', body: { fromVersion: 1, toVersion: 2, trustDigest: `sha256:${sha256(s.v2.bytes)}`, source: 'coordinator' } },
    ]);
    const pin = pinOf(s.world.stateDir);
    expect(pin.trustSha256).toBe(sha256(s.v2.bytes));
    expect(pin.trust.equals(s.v2.bytes)).toBe(true);
    expect(readFileSync(join(s.world.stateDir, 'trust', '1.dsse.json')).equals(s.world.trustBytes)).toBe(true);
    expect(readFileSync(join(s.world.stateDir, 'trust', '2.dsse.json')).equals(s.v2.bytes)).toBe(true);
    expect(
      s.agentLog.find((l) => l.msg === 'trust updated from the coordinator'),
      s.agentText.slice(-2000),
    ).toMatchObject({ fromVersion: 1, toVersion: 2 });
  });

  it('the fleet view shows the runner on the coordinator’s version (2)', () => {
    expect(s.fleet.trust.version).toBe(2);
    expect(s.fleet.runners.find((r) => r.id === s.world.runnerId)?.trustVersion).toBe(2);
  });

  it('the bundle made before the rotation verifies against state/trust/1.dsse.json, and not against v2 (its signer left)', () => {
    const file = join(s.world.dir, 'before.bundle.json');
    writeFileSync(file, s.beforeBundle);
    const underV1 = runCli(['verify', file, '--trust', join(s.world.stateDir, 'trust', '1.dsse.json')]);
    expect(underV1.status, underV1.stderr).toBe(0);
    expect(runCli(['verify', file, '--trust', join(s.world.stateDir, 'trust', '2.dsse.json')]).status).toBe(1);
  });
});

describe.skipIf(!built)('a coordinator serving the wrong document for a trust version (needs dist/)', () => {
  it('fast-forward (v3 served as 2) and rollback (v1 served as 2) are refused with their codes and recorded once each; the pin stays v1; the real v2 is then applied and its signer’s capsule runs', async () => {
    const world = makeLinkWorld();
    worlds.push(world);
    const v2 = rotation(world);
    // Same roots as v2 (signed by root-1 and root-2, so it passes the v1 roots' threshold), but version 3.
    const v3 = signTrust(rotatedBody(v2.body, { version: 3 }), [world.root, v2.root2]);
    const { proxy, coordinator } = await startProxiedCoordinator(world, { updates: [v2.file] });
    proxies.push(proxy);
    let serve: 'v3' | 'v1' | 'real' = 'v3';
    proxy.rules.push((request) => {
      if (request.method !== 'GET' || request.path !== '/v1/trust/2' || serve === 'real') return undefined;
      return {
        kind: 'answer',
        status: 200,
        headers: { 'content-type': 'application/json' },
        body: (serve === 'v3' ? v3 : world.trustBytes).toString('utf8'),
      };
    });
    const agent = spawnAgent(world, proxy.url);
    const refusedCodes = () => trustRecords(world.stateDir).flatMap((r) => (r.kind === 'trust.refused' ? [r.body.code] : []));
    const publish = async () =>
      expect((await coordinator.operator('/v1/capsules', { method: 'POST', body: capsuleBy(v2.signer2, world.runnerId) })).status).toBe(201);
    const rejections = async () =>
      ((await coordinator.operator(`/v1/rejections?runner=${world.runnerId}`)).json().items as { code: string }[]).map((r) => r.code);
    // At start the agent asks for pin + 1 (a feed without work names no version).
    await waitForAsync(() => refusedCodes().includes('TRUST_FAST_FORWARD'), `TRUST_FAST_FORWARD recorded\n${agent.stderr().slice(-3000)}`, 30_000);
    // A v2 capsule in the feed: the agent tries v2 again (the same wrong bytes: not recorded twice), keeps v1,
    // and refuses the capsule under v1 (its signer is not one of v1's): fail closed.
    await publish();
    await waitForAsync(async () => (await rejections()).length === 1, `the v2 capsule refused under v1\n${agent.stderr().slice(-3000)}`, 30_000);
    expect((await rejections())[0]).toMatch(/^CAPSULE_SIGN/);
    serve = 'v1';
    await publish();
    await waitForAsync(() => refusedCodes().includes('TRUST_ROLLBACK'), `TRUST_ROLLBACK recorded\n${agent.stderr().slice(-3000)}`, 30_000);
    expect(pinOf(world.stateDir).trustSha256, 'the pin stays v1').toBe(sha256(world.trustBytes));
    const records = trustRecords(world.stateDir);
    expect(records).toEqual([
      { kind: 'trust.refused', body: { code: 'TRUST_FAST_FORWARD', trustDigest: `sha256:${sha256(v3)}`, source: 'coordinator', toVersion: 3 } },
      {
        kind: 'trust.refused',
        body: { code: 'TRUST_ROLLBACK', trustDigest: `sha256:${sha256(world.trustBytes)}`, source: 'coordinator', toVersion: 1 },
      },
    ]);
    serve = 'real';
    await publish();
    // trust.updated is recorded before the pin moves (runner.json is rewritten just after): wait for both.
    await waitForAsync(
      () => trustRecords(world.stateDir).some((r) => r.kind === 'trust.updated') && pinOf(world.stateDir).trustSha256 === sha256(v2.bytes),
      `the real v2 applied and pinned\n${agent.stderr().slice(-3000)}`,
      30_000,
    );
    // The live context took v2's signers: that capsule ran.
    await waitForAsync(
      async () => ((await coordinator.operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as unknown[]).length === 1,
      `the new signer's bundle\n${agent.stderr().slice(-3000)}`,
      60_000,
    );
    await agent.stop();
  }, 180_000);
});

describe.skipIf(!built)('edge-runner trust update while the agent runs (needs dist/)', () => {
  it('the agent takes the pin the CLI moved at its next poll: the new signer’s capsule runs without a restart', async () => {
    const world = makeLinkWorld();
    worlds.push(world);
    const v2 = rotation(world);
    const { proxy, coordinator } = await startProxiedCoordinator(world, { updates: [v2.file] });
    proxies.push(proxy);
    // The coordinator does not hand out v2 here: the operator applies it by hand.
    proxy.rules.push((request) =>
      request.method === 'GET' && request.path.startsWith('/v1/trust/')
        ? { kind: 'answer', status: 404, headers: { 'content-type': 'application/json' }, body: '{"code":"FEED_TRUST_NOT_FOUND","message":"none"}' }
        : undefined,
    );
    const agent = spawnAgent(world, proxy.url);
    await waitForAsync(() => agent.lines.some((l) => l.msg === 'agent started'), `the agent started\n${agent.stderr().slice(-2000)}`, 20_000);
    const update = runCli(['trust', 'update', v2.file, '--state', world.stateDir, '--json']);
    expect(update.status, update.stderr).toBe(0);
    expect(trustRecords(world.stateDir)).toEqual([
      { kind: 'trust.updated', body: { fromVersion: 1, toVersion: 2, trustDigest: `sha256:${sha256(v2.bytes)}`, source: 'file' } },
    ]);
    await waitForAsync(
      () => agent.lines.some((l) => l.msg === 'trust pin moved by trust update; the agent follows it'),
      `the agent took the moved pin\n${agent.stderr().slice(-3000)}`,
      20_000,
    );
    expect((await coordinator.operator('/v1/capsules', { method: 'POST', body: capsuleBy(v2.signer2, world.runnerId) })).status).toBe(201);
    type Item = { verdict: string };
    let items: Item[] = [];
    await waitForAsync(
      async () => (items = (await coordinator.operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as Item[]).length === 1,
      `the new signer's bundle\n${agent.stderr().slice(-3000)}`,
      60_000,
    );
    expect(items[0]!.verdict).toBe('pass');
    expect((await coordinator.operator(`/v1/rejections?runner=${world.runnerId}`)).json().items).toEqual([]);
    await agent.stop();
  }, 120_000);
});

describe.skipIf(!built)('evidence made before a rotation, still in the outbox when the coordinator rotates (needs dist/)', () => {
  it('is stored by the coordinator under the kept version it names (not dead-lettered), after the agent moved to v2', async () => {
    const world = makeLinkWorld();
    worlds.push(world);
    const v2 = rotation(world);
    const { proxy, coordinator } = await startProxiedCoordinator(world);
    proxies.push(proxy);
    let url = coordinator.url;
    const operator = operatorOf(coordinator.stateDir, () => url);
    // The bundle cannot leave yet (a coordinator behind a proxy that answers 503).
    let hold = true;
    proxy.rules.push((request) =>
      hold && request.method === 'PUT' && request.path.startsWith('/v1/bundles/')
        ? { kind: 'answer', status: 503, headers: { 'content-type': 'text/plain' }, body: 'later' }
        : undefined,
    );
    let agent = spawnAgent(world, proxy.url);
    expect((await operator('/v1/capsules', { method: 'POST', body: capsuleBy(world.signer, world.runnerId) })).status).toBe(201);
    await waitForAsync(() => proxy.to('PUT', '/v1/bundles/').length > 0, `a bundle shipped and held\n${agent.stderr().slice(-3000)}`, 60_000);
    await agent.stop();
    await coordinator.running.stop();
    expect(runCoordinatorCli(['trust-update', '--state', coordinator.stateDir, v2.file]).status).toBe(0);
    const restarted = await startCoordinator(coordinator.stateDir, ['--public-url', proxy.url]);
    coordinators.push(restarted);
    url = restarted.url;
    proxy.target = restarted.url;
    hold = false;
    agent = spawnAgent(world, proxy.url, {}, 'agent-2');
    type Item = { verdict: string };
    let items: Item[] = [];
    await waitForAsync(
      async () => (items = (await operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as Item[]).length === 1,
      `the v1 bundle stored after the rotation\n${agent.stderr().slice(-3000)}`,
      60_000,
    );
    expect(items[0]!.verdict).toBe('pass');
    await waitForAsync(() => trustRecords(world.stateDir).some((r) => r.kind === 'trust.updated'), 'the agent on v2', 20_000);
    await agent.stop();
    expect(agent.lines.filter((l) => typeof l.msg === 'string' && /dead/.test(l.msg as string))).toEqual([]);
  }, 180_000);
});
