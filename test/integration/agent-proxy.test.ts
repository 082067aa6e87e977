/**
 * The agent through a real CONNECT proxy on 127.0.0.1 (Debian's tinyproxy) to a stand-in coordinator over
 * https with a CA made by openssl: proxy settings come from HTTPS_PROXY / NO_PROXY through the runner's
 * configuration, proxy credentials from the proxy URL's user:password, and the proxy's failures (407, down)
 * are retried, never dead-lettered.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { connect as tlsConnect, TLSSocket } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { RunnerAgent } from '../../runner/agent/daemon.js';
import { openRunner } from '../../runner/agent/runner.js';
import { pino } from 'pino';
import { freePort, makeLinkWorld, makeTlsMaterial, StandInCoordinator, TinyProxy, waitFor, type LinkWorld } from '../helpers/agent-link.js';
import { directSelector } from '../helpers/runner.js';

const hasTinyproxy = (() => {
  try {
    execFileSync('tinyproxy', ['-v'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
})();

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setUp(proxyAuth?: { user: string; password: string }) {
  const world: LinkWorld = makeLinkWorld();
  cleanups.push(() => world.cleanup());
  const tls = makeTlsMaterial(world.dir);
  const coordinator = new StandInCoordinator(world, tls);
  await coordinator.start();
  cleanups.push(() => coordinator.stop());
  const proxy = new TinyProxy(world.dir, await freePort(), proxyAuth);
  cleanups.push(() => proxy.stop());
  return { world, tls, coordinator, proxy };
}

/** An in-process agent whose proxy settings come from the environment, as the CLI's would. */
function startAgent(world: LinkWorld, env: Record<string, string>) {
  const lines: Record<string, unknown>[] = [];
  const ctx = openRunner(world.stateDir, {
    launcher: directSelector,
    logger: silentCollector(lines),
    config: { env, flags: { coordinator: { pollWaitSeconds: 1, backoffBaseMs: 50, backoffCapMs: 400, requestTimeoutMs: 5000, flushMs: 1000 } } },
  });
  const agent = new RunnerAgent(ctx);
  const done = agent.run();
  cleanups.push(async () => {
    agent.stop();
    await done;
    ctx.close();
  });
  return { ctx, agent, lines };
}

/** A logger that keeps every line's object (level and message included) in `lines`, and prints nothing. */
function silentCollector(lines: Record<string, unknown>[]) {
  return pino({ level: 'info' }, { write: (text: string) => void lines.push(JSON.parse(text)) });
}

describe.skipIf(!hasTinyproxy)('the agent through a CONNECT proxy (tinyproxy)', () => {
  it('HTTPS_PROXY: the capsule and its bundle go through the proxy tunnel to the coordinator over TLS', async () => {
    const { world, tls, coordinator, proxy } = await setUp();
    await proxy.start();
    startAgent(world, { EDGE_RUNNER_COORDINATOR_URL: coordinator.url, EDGE_RUNNER_CA_FILE: tls.caFile, HTTPS_PROXY: proxy.url });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle through the proxy');
    expect(proxy.log.join('')).toMatch(/CONNECT/);
    expect(coordinator.signatureFailures).toEqual([]);
  });

  it('a proxy that asks for credentials (407) is retried as API_PROXY_AUTH; with user:password in HTTPS_PROXY it lets the agent through', async () => {
    const { world, tls, coordinator, proxy } = await setUp({ user: 'agent', password: 's3cret' });
    await proxy.start();
    const first = startAgent(world, { EDGE_RUNNER_COORDINATOR_URL: coordinator.url, EDGE_RUNNER_CA_FILE: tls.caFile, https_proxy: proxy.url });
    await waitFor(() => first.lines.some((line) => line.code === 'API_PROXY_AUTH'), 'an API_PROXY_AUTH retry');
    expect(coordinator.exchanges).toEqual([]);
    await cleanups.pop()!(); // stop that agent
    const authenticated = proxy.url.replace('http://', 'http://agent:s3cret@');
    const second = startAgent(world, { EDGE_RUNNER_COORDINATOR_URL: coordinator.url, EDGE_RUNNER_CA_FILE: tls.caFile, https_proxy: authenticated });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle through the authenticating proxy');
    expect(second.ctx.store.outboxStats().dead).toBe(0);
  });

  it('a proxy that is down is retried; when it comes up the bundle arrives, exactly once', async () => {
    const { world, tls, coordinator, proxy } = await setUp();
    coordinator.publish(world.capsule());
    const { ctx, lines } = startAgent(world, {
      EDGE_RUNNER_COORDINATOR_URL: coordinator.url,
      EDGE_RUNNER_CA_FILE: tls.caFile,
      HTTPS_PROXY: proxy.url,
    });
    await waitFor(
      () => lines.filter((line) => line.code === 'API_NETWORK' || line.code === 'API_PROXY').length >= 2,
      'retries while the proxy is down',
    );
    expect(coordinator.exchanges).toEqual([]);
    await proxy.start();
    await waitFor(() => coordinator.bundles.size === 1 && ctx.store.outboxStats().acked === 1, 'the bundle once the proxy is up');
    expect(coordinator.stores.filter((s) => s.stored === 'created')).toHaveLength(1);
  });

  it('NO_PROXY naming the coordinator bypasses the proxy (which is down)', async () => {
    const { world, tls, coordinator, proxy } = await setUp();
    startAgent(world, {
      EDGE_RUNNER_COORDINATOR_URL: coordinator.url,
      EDGE_RUNNER_CA_FILE: tls.caFile,
      HTTPS_PROXY: proxy.url,
      NO_PROXY: '127.0.0.1',
    });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle without the proxy');
    expect(proxy.log).toEqual([]);
  });
});

/**
 * A TLS-inspecting proxy: it answers CONNECT, terminates the runner's TLS with a certificate of its own CA,
 * and opens its own TLS connection to the coordinator (trusting the coordinator's CA), relaying the bytes
 * in clear between the two. How a bank's inspection proxy looks to the runner.
 */
async function startInspectingProxy(
  material: { key: Buffer; cert: Buffer },
  upstreamCa: Buffer,
): Promise<{ url: string; tunnels: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const state = { tunnels: 0 };
  const server: NetServer = createNetServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      client.off('data', onData);
      const [method, target] = head.subarray(0, end).toString('latin1').split(' ');
      if (method !== 'CONNECT' || !target) return void client.end('HTTP/1.1 405 Method Not Allowed\r\n\r\n');
      const [host, port] = target.split(':');
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      state.tunnels += 1;
      const inner = new TLSSocket(client, { isServer: true, key: material.key, cert: material.cert });
      const upstream = tlsConnect({ host: host!, port: Number(port), ca: upstreamCa, servername: 'localhost' });
      sockets.add(upstream);
      upstream.on('close', () => sockets.delete(upstream));
      inner.pipe(upstream).pipe(inner);
      const close = () => {
        inner.destroy();
        upstream.destroy();
      };
      inner.on('error', close);
      upstream.on('error', close);
    };
    client.on('data', onData);
    client.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    get tunnels() {
      return state.tunnels;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('the agent through a TLS-inspecting proxy with its own CA', () => {
  it("trusts the inspecting proxy's CA when it is the configured CA file, and refuses (API_TLS) with only the coordinator's CA", async () => {
    const { world, tls, coordinator } = await setUp();
    const inspector = makeTlsMaterial(world.dir, 'inspector');
    const proxy = await startInspectingProxy(inspector, readFileSync(tls.caFile));
    cleanups.push(() => proxy.close());
    // The coordinator's own CA is not what the runner sees behind an inspecting proxy.
    const refused = startAgent(world, { EDGE_RUNNER_COORDINATOR_URL: coordinator.url, EDGE_RUNNER_CA_FILE: tls.caFile, HTTPS_PROXY: proxy.url });
    await waitFor(() => refused.lines.some((line) => line.code === 'API_TLS'), 'an API_TLS retry');
    expect(coordinator.exchanges).toEqual([]);
    await cleanups.pop()!();
    // The inspection CA, as the bank's operators configure it: the requests (still signed end to end) arrive.
    startAgent(world, { EDGE_RUNNER_COORDINATOR_URL: coordinator.url, EDGE_RUNNER_CA_FILE: inspector.caFile, HTTPS_PROXY: proxy.url });
    coordinator.publish(world.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle through the inspecting proxy');
    expect(proxy.tunnels).toBeGreaterThan(0);
    expect(coordinator.signatureFailures).toEqual([]);
  });
});
