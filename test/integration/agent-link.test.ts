/**
 * The agent against a stand-in coordinator on 127.0.0.1 (test/helpers/agent-link.ts): real HTTP, real
 * request signatures, a real state folder and store; steps run unsandboxed (directSelector) to keep the
 * tests about the link. Each fault the issue names has a test: 502, 200 with an HTML page, 429 with
 * Retry-After, a permanent 400, a connection closed before the answer, and one closed after the bundle was
 * stored.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { RunnerAgent } from '../../runner/agent/daemon.js';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import type { RunnerConfig } from '../../runner/config/config.js';
import { makeLinkWorld, StandInCoordinator, waitFor, type LinkWorld } from '../helpers/agent-link.js';
import { withRawDb } from '../helpers/raw-db.js';
import { directSelector } from '../helpers/runner.js';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { layoutOf } from '../../runner/state/state.js';

const HTML = '<!doctype html><html><head><title>Proxy</title></head><body>Gateway says hello</body></html>';

interface Running {
  world: LinkWorld;
  coordinator: StandInCoordinator;
  ctx: RunnerContext;
  agent: RunnerAgent;
  done: Promise<void>;
}

const open: Running[] = [];

afterEach(async () => {
  for (const r of open.splice(0)) {
    r.agent.stop();
    await r.done.catch(() => {});
    r.ctx.close();
    await r.coordinator.stop();
    r.world.cleanup();
  }
});

function settings(url: string, patch: Partial<RunnerConfig['coordinator']> = {}): Partial<RunnerConfig['coordinator']> {
  return { url, pollWaitSeconds: 1, backoffBaseMs: 20, backoffCapMs: 300, requestTimeoutMs: 5000, flushMs: 2000, stopGraceMs: 2000, ...patch };
}

async function startAgent(
  options: {
    world?: LinkWorld;
    coordinator?: StandInCoordinator;
    link?: Partial<RunnerConfig['coordinator']>;
    started?: boolean;
    lines?: Record<string, unknown>[];
  } = {},
): Promise<Running> {
  const world = options.world ?? makeLinkWorld();
  const coordinator = options.coordinator ?? new StandInCoordinator(world);
  if (options.started !== false) await coordinator.start();
  const lines = options.lines;
  const ctx = openRunner(world.stateDir, {
    launcher: directSelector,
    config: { flags: { coordinator: settings(coordinator.url, options.link) } },
    ...(lines ? { logger: pino({ level: 'info' }, { write: (text: string) => void lines.push(JSON.parse(text)) }) } : {}),
  });
  const agent = new RunnerAgent(ctx);
  const running: Running = { world, coordinator, ctx, agent, done: agent.run() };
  open.push(running);
  return running;
}

async function stopAgent(r: Running): Promise<void> {
  r.agent.stop();
  await r.done;
}

describe('the agent and a coordinator', () => {
  it('runs a published capsule once, delivers its bundle exactly once, moves its cursor, and reports its status', async () => {
    const r = await startAgent();
    const { cursor } = r.coordinator.publish(r.world.capsule({ target: { runners: [r.world.runnerId] } }));
    await waitFor(() => r.coordinator.bundles.size === 1, 'the bundle');
    await waitFor(() => r.ctx.store.outboxStats().acked === 1, 'the ack recorded');
    expect(r.ctx.store.feedCursor(r.agent.client.baseUrl)).toBe(cursor);
    expect(r.coordinator.stores).toEqual([{ route: 'bundle', digest: expect.stringMatching(/^sha256:/), stored: 'created' }]);
    expect(r.coordinator.count('capsule')).toBe(1);
    expect(r.coordinator.signatureFailures).toEqual([]);
    expect(r.coordinator.statuses.length).toBeGreaterThan(0);
    expect(r.coordinator.statuses[0]).toMatchObject({ version: expect.any(String), labels: ['test'], trustVersion: 1, deadLetters: 0 });
    await stopAgent(r);
    // Shipping is over: the final status says nothing is queued.
    expect(r.coordinator.statuses.at(-1)).toMatchObject({ outboxDepth: 0, deadLetters: 0 });
  });

  it('reports its status as soon as shipping drains the outbox, not at the end of the long poll it is waiting in', async () => {
    const r = await startAgent({ link: { pollWaitSeconds: 30 } });
    await waitFor(() => r.coordinator.statuses.length > 0, 'the first status report');
    r.coordinator.publish(r.world.capsule());
    await waitFor(() => r.coordinator.bundles.size === 1, 'the bundle');
    // The feed's poll now waits up to 30 s; the report that the outbox drained comes well before.
    await waitFor(
      () => r.coordinator.statuses.some((s) => s.logSize > 0 && s.outboxDepth === 0 && s.witnessedSize > 0),
      'a status report after the outbox drained and the witness cosigned',
      10_000,
    );
    await stopAgent(r);
  });

  it('submits the checkpoint to the witness after shipping and keeps the verified cosignature', async () => {
    const r = await startAgent();
    r.coordinator.publish(r.world.capsule());
    await waitFor(() => r.ctx.store.cosignatures().length > 0, 'a cosignature');
    const [cosignature] = r.ctx.store.cosignatures();
    expect(cosignature).toMatchObject({ witness: r.world.witnessName, line: expect.stringMatching(/^— coordinator-witness /) });
    expect(r.ctx.store.witnessedSize(r.world.witnessName)).toBe(cosignature!.size);
    // A second capsule: the next checkpoint is proved consistent from the size the witness holds.
    r.coordinator.publish(r.world.capsule());
    await waitFor(() => r.coordinator.bundles.size === 2 && r.coordinator.cosigned.length >= 2, 'a second cosignature');
    const sizes = r.coordinator.cosigned.map((c) => c.size);
    expect(sizes).toEqual([...sizes].sort((a, b) => a - b));
    await stopAgent(r);
  });

  it('a capsule whose target is another runner is answered with a signed rejection, delivered once', async () => {
    const r = await startAgent();
    r.coordinator.publish(r.world.capsule({ target: { runners: ['someone-else'] } }));
    await waitFor(() => r.coordinator.rejections.size === 1, 'the rejection');
    const document = JSON.parse([...r.coordinator.rejections.values()][0]!.toString('utf8'));
    expect(document.mediaType).toBe('application/vnd.edge-runner.rejection.v1+json');
    const payload = JSON.parse(Buffer.from(document.statement.payload, 'base64').toString('utf8'));
    expect(payload.predicate).toMatchObject({ stage: 'acceptance', code: 'CAPSULE_TARGET' });
    expect(r.coordinator.bundles.size).toBe(0);
    await stopAgent(r);
  });
});

describe('faults on the way to the inbox', () => {
  it('a 502 from a proxy is retried and not acked, then the bundle is delivered once', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    coordinator.faults.push({ route: 'bundle', kind: 'status', status: 502, body: HTML, headers: { 'content-type': 'text/html' } });
    const r = await startAgent({ world, coordinator });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle');
    expect(coordinator.exchanges.filter((e) => e.route === 'bundle').map((e) => e.answered)).toEqual([502, 201]);
    expect(coordinator.stores.map((s) => s.stored)).toEqual(['created']);
    await waitFor(() => r.ctx.store.outboxStats().acked === 1, 'the ack');
    await stopAgent(r);
  });

  it('a 200 with an HTML page (an intercepting proxy) is retried, not acked', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    coordinator.faults.push({ route: 'bundle', kind: 'status', status: 200, body: HTML, headers: { 'content-type': 'text/html' } });
    const r = await startAgent({ world, coordinator });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle');
    expect(coordinator.exchanges.filter((e) => e.route === 'bundle').map((e) => e.answered)).toEqual([200, 201]);
    await waitFor(() => r.ctx.store.outboxStats().acked === 1, 'the ack');
    await stopAgent(r);
  });

  it('a 429 with Retry-After is retried no sooner than it says', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    coordinator.faults.push({ route: 'bundle', kind: 'status', status: 429, headers: { 'retry-after': '1' } });
    const r = await startAgent({ world, coordinator, link: { backoffCapMs: 5000 } });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle');
    const [first, second] = coordinator.exchanges.filter((e) => e.route === 'bundle');
    expect(first!.answered).toBe(429);
    expect(second!.answered).toBe(201);
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(950);
    await stopAgent(r);
  });

  it('a permanent 400 dead-letters the bundle once, with its code, and it is never sent again', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    coordinator.faults.push({
      route: 'bundle',
      kind: 'status',
      status: 400,
      body: JSON.stringify({ code: 'INBOX_BODY_SCHEMA', message: 'The bundle is not a bundle.' }),
    });
    const r = await startAgent({ world, coordinator });
    coordinator.publish(world.capsule());
    await waitFor(() => r.ctx.store.outboxStats().dead === 1, 'the dead letter');
    // Another capsule ships normally afterwards; the dead one is not retried.
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the second bundle');
    // The coordinator stores before it answers: wait for the agent to have recorded the ack, or a stop in
    // between would (rightly) send the bundle once more and get 200 existing.
    await waitFor(() => r.ctx.store.outboxStats().acked === 1, 'the second bundle acked');
    await stopAgent(r);
    expect(coordinator.exchanges.filter((e) => e.route === 'bundle').map((e) => e.answered)).toEqual([400, 201]);
    const dead = [...r.ctx.store.records()].filter((record) => record.kind === 'outbox.dead');
    expect(dead).toHaveLength(1);
    expect(JSON.parse(dead[0]!.leaf.toString('utf8'))).toMatchObject({ code: 'INBOX_BODY_SCHEMA' });
    expect(coordinator.statuses.at(-1)).toMatchObject({ deadLetters: 1, outboxDepth: 0 });
  });

  it('a connection closed before the answer is retried, and the bundle arrives once', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    coordinator.faults.push({ route: 'bundle', kind: 'drop' });
    const r = await startAgent({ world, coordinator });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle');
    expect(coordinator.exchanges.filter((e) => e.route === 'bundle').map((e) => e.answered)).toEqual(['dropped', 201]);
    await waitFor(() => r.ctx.store.outboxStats().acked === 1, 'the ack');
    await stopAgent(r);
  });

  it('a bundle stored before the connection died is acknowledged by the retry as existing, stored once, never marked failed', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    coordinator.faults.push({ route: 'bundle', kind: 'store-then-drop' });
    const r = await startAgent({ world, coordinator });
    coordinator.publish(world.capsule());
    await waitFor(() => r.ctx.store.outboxStats().acked === 1, 'the ack');
    expect(coordinator.stores.map((s) => s.stored)).toEqual(['created', 'existing']);
    expect(coordinator.bundles.size).toBe(1);
    const acked = [...r.ctx.store.records()].filter((record) => record.kind === 'outbox.acked');
    expect(acked).toHaveLength(1);
    expect(JSON.parse(acked[0]!.leaf.toString('utf8'))).toMatchObject({ status: 'existing' });
    expect(r.ctx.store.outboxStats().dead).toBe(0);
    await stopAgent(r);
  });
});

describe('faults on the way to the work', () => {
  it('a capsule that cannot be fetched is retried with backoff and run once it comes, never skipped', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    for (let i = 0; i < 3; i++) coordinator.faults.push({ route: 'capsule', kind: 'status', status: 503 });
    const r = await startAgent({ world, coordinator });
    const first = coordinator.publish(world.capsule());
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 2, 'both bundles');
    expect(coordinator.exchanges.filter((e) => e.route === 'capsule').map((e) => e.answered)).toEqual([503, 503, 503, 200, 200]);
    expect(r.ctx.store.feedCursor(r.agent.client.baseUrl)).toBe(first.cursor + 1);
    await stopAgent(r);
  });

  it('a capsule served with bytes of another digest is not run; it is fetched again until the right bytes come', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    const other = world.capsule({ id: 'the-wrong-one' });
    coordinator.faults.push({ route: 'capsule', kind: 'status', status: 200, body: other.toString('utf8') });
    const lines: Record<string, unknown>[] = [];
    const r = await startAgent({ world, coordinator, lines });
    coordinator.publish(world.capsule({ id: 'the-right-one' }));
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle');
    expect(lines.some((line) => line.code === 'API_UNEXPECTED_BODY')).toBe(true);
    const accepted = [...r.ctx.store.records()]
      .filter((record) => record.kind === 'capsule.accepted')
      .map((record) => JSON.parse(record.leaf.toString('utf8')).capsuleId);
    expect(accepted).toEqual(['the-right-one']);
    await stopAgent(r);
  });

  it('a work feed answer over its 256 KiB cap is not read past the cap and is retried as PROTOCOL_RESPONSE_TOO_LARGE', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    coordinator.faults.push({ route: 'work', kind: 'status', status: 200, body: ' '.repeat(2 * 1024 * 1024) });
    const lines: Record<string, unknown>[] = [];
    const r = await startAgent({ world, coordinator, lines });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle');
    expect(lines.some((line) => line.code === 'PROTOCOL_RESPONSE_TOO_LARGE')).toBe(true);
    await stopAgent(r);
  });

  it('the coordinator down before, during and after the runs: when it comes back every bundle arrives exactly once', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    await coordinator.start();
    coordinator.publish(world.capsule());
    coordinator.publish(world.capsule());
    // Bundles are dropped (stored, answer lost) or refused with 503 while the runs happen, then it goes down.
    coordinator.faults.push({ route: 'bundle', kind: 'store-then-drop' }, { route: 'bundle', kind: 'status', status: 503 });
    const r = await startAgent({ world, coordinator, started: false });
    await waitFor(() => r.ctx.store.feedCursor(r.agent.client.baseUrl) === 2, 'both capsules decided');
    await coordinator.stop();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await coordinator.start();
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 3 && r.ctx.store.outboxStats().queued === 0, 'all three bundles');
    await stopAgent(r);
    const created = coordinator.stores.filter((s) => s.stored === 'created').map((s) => s.digest);
    expect(new Set(created).size).toBe(3);
    expect(created).toHaveLength(3);
    expect(r.ctx.store.outboxStats()).toMatchObject({ acked: 3, dead: 0, queued: 0 });
  });
});

describe('the witness', () => {
  it('the witness holds a size the runner forgot (409 text/x.tlog.size): the proof is made again from that size and cosigned', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    const first = await startAgent({ world, coordinator });
    coordinator.publish(world.capsule());
    await waitFor(() => first.ctx.store.cosignatures().length > 0, 'the first cosignature');
    await stopAgent(first);
    first.ctx.close();
    open.splice(open.indexOf(first), 1);
    const heldSize = coordinator.held!.size;
    withRawDb(layoutOf(world.stateDir).database, (db) => db.exec('DELETE FROM cosignatures_v1'));
    const before = coordinator.exchanges.filter((e) => e.route === 'checkpoint').length;
    const second = await startAgent({ world, coordinator, started: false });
    coordinator.publish(world.capsule());
    await waitFor(
      () => coordinator.bundles.size === 2 && second.ctx.store.witnessedSize(world.witnessName) > heldSize,
      'a cosignature past the held size',
    );
    const answers = coordinator.exchanges
      .filter((e) => e.route === 'checkpoint')
      .slice(before)
      .map((e) => e.answered);
    expect(answers.slice(0, 2)).toEqual([409, 200]);
    expect(answers.slice(2).every((status) => status === 200)).toBe(true);
    expect(second.ctx.store.witnessedSize(world.witnessName)).toBe(coordinator.held!.size);
    await stopAgent(second);
  });

  it("a cosignature that does not verify with the trust document's witness key is not kept, and the checkpoint is submitted again", async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    coordinator.cosignWith = PrivateKey.generate();
    const lines: Record<string, unknown>[] = [];
    const r = await startAgent({ world, coordinator, lines });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle');
    await waitFor(() => lines.some((line) => line.code === 'WITNESS_COSIGNATURE_UNVERIFIED'), 'the refusal of the cosignature');
    expect(r.ctx.store.cosignatures()).toEqual([]);
    coordinator.cosignWith = undefined;
    coordinator.held = undefined;
    await waitFor(() => r.ctx.store.cosignatures().length > 0, 'a good cosignature on a later attempt');
    await stopAgent(r);
  });
});

describe('stopping', () => {
  it('stop aborts a running step after the grace, records the run as aborted, ships its rejection, and returns', async () => {
    const r = await startAgent({ link: { stopGraceMs: 200 } });
    r.coordinator.publish(r.world.capsule({ steps: [{ name: 'sleep', run: ['/bin/sleep', '30'] }] }));
    await waitFor(() => [...r.ctx.store.records()].some((record) => record.kind === 'run.started'), 'the run to start');
    const stoppedAt = Date.now();
    await stopAgent(r);
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);
    const aborted = [...r.ctx.store.records()].filter((record) => record.kind === 'run.aborted');
    expect(aborted).toHaveLength(1);
    expect(JSON.parse(aborted[0]!.leaf.toString('utf8'))).toMatchObject({ reason: 'RUN_AGENT_STOPPED' });
    expect(r.coordinator.rejections.size).toBe(1);
  });

  it('stop flushes for at most flushMs: a coordinator that never answers cannot hold the exit, and the answer stays queued', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    for (let i = 0; i < 5; i++) coordinator.faults.push({ route: 'bundle', kind: 'hang' });
    const r = await startAgent({ world, coordinator, link: { flushMs: 500, requestTimeoutMs: 30_000 } });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.count('bundle') >= 1, 'the bundle PUT (which hangs)');
    const stoppedAt = Date.now();
    await stopAgent(r);
    expect(Date.now() - stoppedAt).toBeLessThan(3000);
    expect(r.ctx.store.outboxStats()).toMatchObject({ queued: 1, acked: 0, dead: 0 });
  });

  it('a coordinator whose trust document is newer than the pin is noted, and the pin is kept', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    coordinator.trustVersion = 2;
    const r = await startAgent({ world, coordinator });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle');
    expect(r.agent.view.coordinatorTrust).toEqual({ version: 2, relation: 'newer' });
    expect(r.ctx.state.trust.body.version).toBe(1);
    await stopAgent(r);
  });
});
