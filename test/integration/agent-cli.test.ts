/**
 * `edge-runner agent` as a real process (dist/runner/main.js) against the stand-in coordinator on
 * 127.0.0.1: configuration refusals, a capsule through the agent, TLS with a CA made by openssl, and SIGTERM
 * (stop polling, abort the running step after the grace, flush, exit 0).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Store } from '../../runner/store/store.js';
import { layoutOf } from '../../runner/state/state.js';
import { makeLinkWorld, makeTlsMaterial, StandInCoordinator, waitFor, type LinkWorld } from '../helpers/agent-link.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';

interface Agent {
  child: ChildProcess;
  stderr: string[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function world(): LinkWorld {
  const w = makeLinkWorld();
  cleanups.push(() => w.cleanup());
  return w;
}

async function coordinatorFor(w: LinkWorld, tls?: { key: Buffer; cert: Buffer }): Promise<StandInCoordinator> {
  const c = new StandInCoordinator(w, tls);
  await c.start();
  cleanups.push(() => c.stop());
  return c;
}

function configFile(w: LinkWorld, coordinator: Record<string, unknown>): string {
  const path = join(w.dir, 'agent.json');
  writeFileSync(
    path,
    JSON.stringify({ coordinator: { pollWaitSeconds: 1, backoffBaseMs: 50, backoffCapMs: 500, flushMs: 3000, stopGraceMs: 500, ...coordinator } }),
  );
  return path;
}

function startAgent(args: string[], env: Record<string, string> = {}): Agent {
  const child = spawn(process.execPath, [CLI_ENTRY, 'agent', ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (text: string) => stderr.push(text));
  child.stdout!.resume();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exit;
  });
  return { child, stderr, exit };
}

const logLines = (agent: Agent) =>
  agent.stderr
    .join('')
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);

function recordsOf(w: LinkWorld): { kind: string; body: Record<string, unknown> }[] {
  const store = Store.open(layoutOf(w.stateDir).database);
  try {
    return [...store.records()].map((r) => ({ kind: r.kind, body: JSON.parse(r.leaf.toString('utf8')) }));
  } finally {
    store.close();
  }
}

describe('edge-runner agent', () => {
  it('refuses a plain-http coordinator that is not loopback with CONFIG_COORDINATOR_PLAIN_HTTP (exit 2)', () => {
    const w = world();
    const result = runCli(['agent', '--state', w.stateDir, '--coordinator', 'http://coordinator.example:8080']);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/CONFIG_COORDINATOR_PLAIN_HTTP/);
  });

  it('refuses to start without a coordinator URL with OUTBOX_NO_COORDINATOR (exit 2)', () => {
    const w = world();
    const result = runCli(['agent', '--state', w.stateDir]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/OUTBOX_NO_COORDINATOR/);
  });

  it('takes the coordinator from EDGE_RUNNER_COORDINATOR_URL, runs a published capsule, ships its bundle, and exits 0 at SIGTERM', async () => {
    const w = world();
    const c = await coordinatorFor(w);
    const agent = startAgent(['--state', w.stateDir, '--config', configFile(w, {})], { EDGE_RUNNER_COORDINATOR_URL: c.url });
    c.publish(w.capsule());
    await waitFor(() => c.bundles.size === 1, 'the bundle', 30_000);
    await waitFor(() => c.cosigned.length > 0, 'the cosigned checkpoint', 10_000);
    agent.child.kill('SIGTERM');
    expect(await agent.exit).toEqual({ code: 0, signal: null });
    const lines = logLines(agent);
    expect(lines.some((line) => line.msg === 'answer delivered')).toBe(true);
    expect(lines.some((line) => line.msg === 'agent stopped')).toBe(true);
    expect(c.signatureFailures).toEqual([]);
  }, 60_000);

  it('SIGTERM during a long step: the step is aborted after the grace, the run recorded as aborted and answered, exit 0', async () => {
    const w = world();
    const c = await coordinatorFor(w);
    const agent = startAgent(['--state', w.stateDir, '--config', configFile(w, { stopGraceMs: 300 }), '--coordinator', c.url]);
    c.publish(w.capsule({ steps: [{ name: 'long', run: ['/bin/sleep', '60'] }] }));
    await waitFor(() => logLines(agent).some((line) => line.step === undefined && line.msg === 'agent started'), 'the agent', 30_000);
    await waitFor(() => c.count('capsule') === 1, 'the capsule fetched', 30_000);
    await new Promise((resolve) => setTimeout(resolve, 1000)); // the step is running
    const stoppedAt = Date.now();
    agent.child.kill('SIGTERM');
    expect(await agent.exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - stoppedAt).toBeLessThan(15_000);
    const aborted = recordsOf(w).filter((r) => r.kind === 'run.aborted');
    expect(aborted.map((r) => r.body.reason)).toEqual(['RUN_AGENT_STOPPED']);
    expect(c.rejections.size).toBe(1);
  }, 60_000);

  it('over https, trusts the coordinator through the CA file it is given, and refuses (retries with API_TLS) without it', async () => {
    const w = world();
    const tls = makeTlsMaterial(w.dir);
    const c = await coordinatorFor(w, tls);
    // Without the CA: the system store does not know this CA; nothing is accepted, the agent keeps trying.
    const untrusting = startAgent(['--state', w.stateDir, '--config', configFile(w, {}), '--coordinator', c.url]);
    await waitFor(() => logLines(untrusting).some((line) => line.code === 'API_TLS'), 'an API_TLS retry', 30_000);
    expect(c.exchanges).toEqual([]);
    untrusting.child.kill('SIGTERM');
    expect((await untrusting.exit).code).toBe(0);
    // With it (EDGE_RUNNER_CA_FILE): the capsule runs and its bundle arrives.
    const agent = startAgent(['--state', w.stateDir, '--config', configFile(w, {}), '--coordinator', c.url], { EDGE_RUNNER_CA_FILE: tls.caFile });
    c.publish(w.capsule());
    await waitFor(() => c.bundles.size === 1, 'the bundle over https', 30_000);
    agent.child.kill('SIGTERM');
    expect((await agent.exit).code).toBe(0);
  }, 90_000);
});
