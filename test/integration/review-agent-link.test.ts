/**
 * A hostile review of the agent (issue 9), in process against the stand-in coordinator on 127.0.0.1: a
 * coordinator that turns the poll into a busy loop, that refuses signatures because a clock is out of step,
 * a plain-http loopback coordinator with an http_proxy set on the host, a coordinator whose trust version
 * differs from the pin, and a stop between two steps.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { RunnerAgent } from '../../runner/agent/daemon.js';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import type { RunnerConfig } from '../../runner/config/config.js';
import { formatWorkFeed } from '../../runner/protocol/wire.js';
import { makeLinkWorld, StandInCoordinator, waitFor, type LinkWorld } from '../helpers/agent-link.js';
import { directSelector } from '../helpers/runner.js';

interface Running {
  world: LinkWorld;
  coordinator: StandInCoordinator;
  ctx: RunnerContext;
  agent: RunnerAgent;
  done: Promise<void>;
}

const open: Running[] = [];
const servers: Server[] = [];

afterEach(async () => {
  for (const r of open.splice(0)) {
    r.agent.stop();
    r.agent.stop();
    await r.done.catch(() => {});
    r.ctx.close();
    await r.coordinator.stop();
    r.world.cleanup();
  }
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

async function startAgent(world: LinkWorld, coordinator: StandInCoordinator, link: Partial<RunnerConfig['coordinator']> = {}): Promise<Running> {
  await coordinator.start();
  const ctx = openRunner(world.stateDir, {
    launcher: directSelector,
    config: {
      flags: {
        coordinator: {
          url: coordinator.url,
          pollWaitSeconds: 1,
          backoffBaseMs: 20,
          backoffCapMs: 300,
          requestTimeoutMs: 5000,
          flushMs: 2000,
          stopGraceMs: 2000,
          ...link,
        },
      },
    },
  });
  const agent = new RunnerAgent(ctx);
  const running: Running = { world, coordinator, ctx, agent, done: agent.run() };
  open.push(running);
  return running;
}

const records = (ctx: RunnerContext) => [...ctx.store.records()].map((r) => ({ kind: r.kind, body: JSON.parse(r.leaf.toString('utf8')) }));

describe('review: a coordinator that would make the agent spin', () => {
  it('attack instant 204: a coordinator that ignores `wait` and answers 204 at once is polled with backoff, not in a busy loop', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    for (let i = 0; i < 20_000; i++) coordinator.faults.push({ route: 'work', kind: 'status', status: 204 });
    await startAgent(world, coordinator, { pollWaitSeconds: 30, backoffBaseMs: 200, backoffCapMs: 1000 });
    await new Promise((resolve) => setTimeout(resolve, 2000));
    // Two seconds at loopback speed would be hundreds of polls; with backoff it is a handful.
    expect(coordinator.count('work')).toBeGreaterThan(1);
    expect(coordinator.count('work')).toBeLessThan(30);
  });

  it('attack cursor backwards: a feed that lists only capsules already decided is backed off, and nothing runs twice', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    const r = await startAgent(world, coordinator, { pollWaitSeconds: 30, backoffBaseMs: 200, backoffCapMs: 1000 });
    const { cursor, digest } = coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle');
    const before = coordinator.count('work');
    // From now on the feed answers the decided item again, at once, whatever `after` says.
    const stale = formatWorkFeed({ items: [{ cursor, capsule: digest, size: 1000 }], cursor, trust: { version: 1 } }).toString('utf8');
    for (let i = 0; i < 20_000; i++) coordinator.faults.push({ route: 'work', kind: 'status', status: 200, body: stale });
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect(coordinator.count('work') - before).toBeLessThan(30);
    expect(records(r.ctx).filter((rec) => rec.kind === 'run.started')).toHaveLength(1);
    expect(r.ctx.store.feedCursor(coordinator.url)).toBe(cursor);
  });
});

describe('review: refusals of the request, not of the document', () => {
  it('attack clock skew: a coordinator refusing the signature (401 PROTOCOL_CREATED_FUTURE) does not dead-letter the bundle; it arrives once the clocks agree', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    const skew = JSON.stringify({ code: 'PROTOCOL_CREATED_FUTURE', message: 'The signature was created in the future.' });
    for (let i = 0; i < 3; i++) coordinator.faults.push({ route: 'bundle', kind: 'status', status: 401, body: skew });
    const r = await startAgent(world, coordinator);
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle after the 401s');
    // Stored before answered: the ack is recorded a moment after the coordinator holds the bundle.
    await waitFor(() => r.ctx.store.outboxStats().acked === 1, 'the ack recorded');
    expect(r.ctx.store.outboxStats()).toMatchObject({ dead: 0, acked: 1 });
    expect(records(r.ctx).filter((rec) => rec.kind === 'outbox.dead')).toEqual([]);
    expect(coordinator.exchanges.filter((e) => e.route === 'bundle').map((e) => e.answered)).toEqual([401, 401, 401, 201]);
  });

  it('attack proxy block page: a 403 HTML page on the way does not dead-letter the bundle', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    coordinator.faults.push({
      route: 'bundle',
      kind: 'status',
      status: 403,
      body: '<html>Blocked by policy</html>',
      headers: { 'content-type': 'text/html' },
    });
    const r = await startAgent(world, coordinator);
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle after the block page');
    await waitFor(() => r.ctx.store.outboxStats().acked === 1, 'the ack recorded');
    expect(r.ctx.store.outboxStats()).toMatchObject({ dead: 0, acked: 1 });
  });
});

describe('review: a plain-http loopback coordinator and the host’s http_proxy', () => {
  it('attack plaintext hop: with http_proxy set, a plain-http loopback coordinator is reached directly, never through the proxy', async () => {
    // A "proxy" that records what reaches it: with the old code every request (signed, with the bundle's
    // bytes) went to it in the clear, and it could answer for the coordinator.
    const seen: string[] = [];
    const proxy = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      res.writeHead(502).end();
    });
    servers.push(proxy);
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', () => resolve()));
    const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    await startAgent(world, coordinator, { httpProxy: proxyUrl, httpsProxy: proxyUrl });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle, sent directly');
    expect(seen).toEqual([]);
  });
});

describe('review: trust versions', () => {
  it('attack two coordinators’ worth of confusion: the status report names the coordinator’s trust version (older and newer) beside the pin, which is kept', async () => {
    for (const [version, pinned] of [
      [3, 2],
      [1, 2],
    ] as const) {
      const world = makeLinkWorld({ trustVersion: pinned });
      const coordinator = new StandInCoordinator(world);
      coordinator.trustVersion = version;
      const r = await startAgent(world, coordinator);
      coordinator.publish(world.capsule());
      await waitFor(() => coordinator.statuses.some((s) => s.coordinatorTrustVersion === version), `a status naming version ${version}`);
      expect(coordinator.statuses.at(-1)).toMatchObject({ trustVersion: pinned, coordinatorTrustVersion: version });
      expect(r.agent.view.coordinatorTrust).toEqual({ version, relation: version > pinned ? 'newer' : 'older' });
      expect(r.ctx.state.trust.body.version).toBe(pinned);
    }
  });
});

describe('review: stop between steps', () => {
  it('attack stop between steps: at stop no further step starts; the grace covers the running step only', async () => {
    const world = makeLinkWorld();
    const coordinator = new StandInCoordinator(world);
    const r = await startAgent(world, coordinator, { stopGraceMs: 20_000 });
    coordinator.publish(
      world.capsule({
        steps: [
          { name: 'first', run: ['/bin/sleep', '1'] },
          { name: 'second', run: ['/bin/sleep', '30'] },
        ],
      }),
    );
    await waitFor(() => records(r.ctx).some((rec) => rec.kind === 'run.started'), 'the run to start');
    const stoppedAt = Date.now();
    r.agent.stop();
    await r.done;
    // The first step ends by itself within its second; the second never starts (with the old code it
    // started and ran until the 20-second grace aborted it).
    expect(Date.now() - stoppedAt).toBeLessThan(8000);
    const steps = records(r.ctx).filter((rec) => rec.kind === 'step.finished');
    expect(steps.map((s) => s.body.name)).toEqual(['first']);
    expect(steps[0]!.body.status).toBe('succeeded');
    expect(
      records(r.ctx)
        .filter((rec) => rec.kind === 'run.aborted')
        .map((rec) => rec.body.reason),
    ).toEqual(['RUN_AGENT_STOPPED']);
    expect(coordinator.rejections.size).toBe(1);
  }, 30_000);
});
