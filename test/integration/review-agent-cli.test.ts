/**
 * A hostile review of `edge-runner agent` as a real process (dist/runner/main.js), steps in the real
 * sandbox: a second SIGTERM (an impatient operator, a supervisor that signals twice) while a step runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Store } from '../../runner/store/store.js';
import { layoutOf } from '../../runner/state/state.js';
import { makeLinkWorld, StandInCoordinator, waitFor } from '../helpers/agent-link.js';
import { CLI_ENTRY } from '../helpers/cli.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('review: edge-runner agent and its signals', () => {
  it('attack second SIGTERM: a second signal aborts the running step at once; the run is recorded and answered, and the agent exits 0', async () => {
    const w = makeLinkWorld();
    cleanups.push(() => w.cleanup());
    const c = new StandInCoordinator(w);
    await c.start();
    cleanups.push(() => c.stop());
    const config = join(w.dir, 'agent.json');
    writeFileSync(
      config,
      JSON.stringify({ coordinator: { pollWaitSeconds: 1, backoffBaseMs: 50, backoffCapMs: 500, flushMs: 3000, stopGraceMs: 60_000 } }),
    );
    const child: ChildProcess = spawn(process.execPath, [CLI_ENTRY, 'agent', '--state', w.stateDir, '--config', config, '--coordinator', c.url], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
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
    c.publish(w.capsule({ steps: [{ name: 'long', run: ['/bin/sleep', '60'] }] }));
    await waitFor(() => stderr.join('').includes('"run.started"') || c.count('capsule') === 1, 'the capsule fetched', 30_000);
    await new Promise((resolve) => setTimeout(resolve, 1500)); // the step is running
    const stoppedAt = Date.now();
    child.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.kill('SIGTERM');
    // With the old code the second SIGTERM found no listener and Node's default killed the agent.
    expect(await exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - stoppedAt).toBeLessThan(20_000);
    const store = Store.open(layoutOf(w.stateDir).database);
    try {
      const aborted = [...store.records()].filter((r) => r.kind === 'run.aborted').map((r) => JSON.parse(r.leaf.toString('utf8')).reason);
      expect(aborted).toEqual(['RUN_AGENT_STOPPED']);
    } finally {
      store.close();
    }
    expect(c.rejections.size).toBe(1);
  }, 60_000);
});
