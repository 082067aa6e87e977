/**
 * The scheduler inside the agent (runner/agent/daemon.ts), in process against the stand-in coordinator on
 * 127.0.0.1, real clock: a recurring capsule taken from the feed is fired by the agent's scheduler and its
 * bundles are shipped; a capsule from the feed and a scheduled firing share one run lane (never two runs at
 * once); and a stop while a scheduled run goes gives it the stop grace, then aborts it (run.aborted
 * RUN_AGENT_STOPPED, answered), like a run from the feed.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { RunnerAgent } from '../../runner/agent/daemon.js';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import { parseRecordLeaf, type LogRecord } from '../../runner/log/record.js';
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
afterEach(async () => {
  for (const r of open.splice(0)) {
    r.agent.stop();
    r.agent.stop();
    await r.done.catch(() => {});
    r.ctx.close();
    await r.coordinator.stop();
    r.world.cleanup();
  }
});

async function startAgent(): Promise<Running> {
  const world = makeLinkWorld();
  const coordinator = new StandInCoordinator(world);
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
          flushMs: 3000,
          stopGraceMs: 500,
        },
      },
    },
  });
  const agent = new RunnerAgent(ctx);
  const running = { world, coordinator, ctx, agent, done: agent.run() };
  open.push(running);
  return running;
}

const recordsOf = (ctx: RunnerContext): LogRecord[] => [...ctx.store.records()].map((r) => parseRecordLeaf(r.leaf, r.seq));

describe('the agent fires recurring capsules', () => {
  it('takes a recurring capsule from the feed once, fires it at its slots, and ships each bundle', async () => {
    const r = await startAgent();
    r.coordinator.publish(r.world.capsule({ target: { runners: [r.world.runnerId] }, schedule: { cron: '* * * * * *' } }));
    await waitFor(() => r.coordinator.bundles.size >= 2, 'two bundles of two firings', 20_000);
    const records = recordsOf(r.ctx);
    expect(records.filter((x) => x.kind === 'capsule.accepted')).toHaveLength(1);
    const slots = records.flatMap((x) => (x.kind === 'run.started' ? [x.body.scheduledFor] : []));
    expect(slots.length).toBeGreaterThanOrEqual(2);
    expect(new Set(slots).size).toBe(slots.length);
  });

  it('a capsule from the feed and a scheduled firing share one lane: never two runs at once, and a busy schedule does not starve the feed', async () => {
    const r = await startAgent();
    const slow = [{ name: 'slow', run: ['/bin/sleep', '0.7'] }];
    r.coordinator.publish(r.world.capsule({ target: { runners: [r.world.runnerId] }, schedule: { cron: '* * * * * *' }, steps: slow }));
    await waitFor(() => recordsOf(r.ctx).some((x) => x.kind === 'run.started'), 'a firing', 20_000);
    for (let i = 0; i < 3; i++) r.coordinator.publish(r.world.capsule({ target: { runners: [r.world.runnerId] }, steps: slow }));
    await waitFor(() => recordsOf(r.ctx).filter((x) => x.kind === 'run.finished').length >= 6, 'six runs', 30_000);
    const runs = recordsOf(r.ctx).filter((x) => x.kind === 'run.started' || x.kind === 'run.finished' || x.kind === 'run.aborted');
    // Strictly alternating: every run ends before the next one starts.
    runs.forEach((x, i) => expect(x.kind).toBe(i % 2 === 0 ? 'run.started' : 'run.finished'));
    const started = runs.filter((x) => x.kind === 'run.started');
    expect(started.filter((x) => x.body.scheduledFor === undefined).length).toBe(3);
    expect(started.filter((x) => x.body.scheduledFor !== undefined).length).toBeGreaterThanOrEqual(2);
  });

  it('a stop while a scheduled run goes: the step gets the grace, then is aborted; the run is recorded aborted and answered', async () => {
    const r = await startAgent();
    r.coordinator.publish(
      r.world.capsule({
        target: { runners: [r.world.runnerId] },
        schedule: { cron: '* * * * * *' },
        steps: [{ name: 'long', run: ['/bin/sleep', '30'] }],
      }),
    );
    await waitFor(() => recordsOf(r.ctx).some((x) => x.kind === 'run.started'), 'a firing', 20_000);
    const stoppedAt = Date.now();
    r.agent.stop();
    await r.done;
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);
    const records = recordsOf(r.ctx);
    expect(records.filter((x) => x.kind === 'run.started')).toHaveLength(1);
    expect(records.filter((x) => x.kind === 'run.aborted').map((x) => x.body)).toEqual([expect.objectContaining({ reason: 'RUN_AGENT_STOPPED' })]);
    expect(r.coordinator.rejections.size).toBe(1);
  });
});
