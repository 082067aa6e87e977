/**
 * The issue's goal for the work feed: a coordinator holding 1,000 idle long polls (one per simulated runner)
 * spends at most 50 KiB of memory on each. The polls are spread over 250 enrolled runners, four each: the
 * coordinator keeps at most MAX_POLLS_PER_RUNNER (4) waiting polls per runner, and a trust document enrols at
 * most 256 keys. Measured as the coordinator process's resident set before and
 * while the polls wait (RSS only counts what the process really holds; it includes the sockets' buffers).
 */
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_POLLS_PER_RUNNER } from '../../coordinator/src/feed.js';
import { signRequest } from '../../runner/protocol/http-signature.js';
import { initCoordinator, makeCoordinatorWorld, signedCall, startCoordinator, type CoordinatorWorld, type RunningCoordinator } from './helpers.js';

const POLLS = 1000;
const RUNNERS = POLLS / MAX_POLLS_PER_RUNNER;
const rssOf = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

let cw: CoordinatorWorld;
let coordinator: RunningCoordinator;
beforeAll(async () => {
  cw = makeCoordinatorWorld({ extraRunners: RUNNERS });
  initCoordinator(cw);
  coordinator = await startCoordinator(cw.stateDir);
});
afterAll(async () => {
  await coordinator?.stop();
  cw?.world.cleanup();
});

describe('idle long polls', () => {
  it('1,000 idle long polls cost the coordinator at most 50 KiB each', { timeout: 60_000 }, async () => {
    const pid = coordinator.proc.pid!;
    const urlOf = (id: string) => `${coordinator.url}/v1/runners/${id}/work?after=0&wait=30`;
    // Warm the paths a poll takes (signature check, SQLite statements) so the baseline is a running coordinator.
    for (let i = 0; i < 20; i++) await signedCall(urlOf(cw.world.runnerId).replace('wait=30', 'wait=0'), cw.world.runnerKey);
    const before = rssOf(pid);
    const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
    const requests = [];
    const answered: number[] = [];
    let failed = 0;
    for (let i = 0; i < POLLS; i++) {
      const runner = cw.extraRunners[i % RUNNERS]!;
      const url = urlOf(runner.id);
      const headers = await signRequest({ method: 'GET', url }, runner.key, { now: new Date() });
      const req = request(url, { headers, agent }, (res) => {
        answered.push(res.statusCode!);
        res.resume();
      });
      req.on('error', () => (failed += 1));
      req.end();
      requests.push(req);
    }
    // Wait until the coordinator holds them all (a status answer would have arrived by now if not).
    await new Promise((r) => setTimeout(r, 3000));
    const during = rssOf(pid);
    // Every poll is still open and waiting: none answered, none failed.
    expect(answered).toEqual([]);
    expect(failed).toBe(0);
    const perPoll = (during - before) / POLLS;
    console.log(
      `idle long polls: ${(perPoll / 1024).toFixed(1)} KiB each (RSS ${(before / 1048576).toFixed(1)} -> ${(during / 1048576).toFixed(1)} MiB)`,
    );
    expect(perPoll).toBeLessThanOrEqual(50 * 1024);
    requests.forEach((req) => req.on('error', () => {}).destroy());
    agent.destroy();
  });
});
