/**
 * Recurring capsules through the real runner context (a real SQLite store, real child processes, the real
 * scheduler and run lane) with an injected clock: accepted once and kept, each slot a new run with its own
 * records and bundle, the runner down across N slots (each catch-up rule), a wall clock that jumps back and
 * forward, a DST gap and overlap in a named zone, no overlapping runs, replacement, expiry, a rotation that
 * drops the signer, and a kept file altered on disk.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import { runCapsule } from '../../runner/agent/run-capsule.js';
import { RunLane } from '../../runner/agent/lane.js';
import { verifyBundle } from '../../runner/evidence/bundle.js';
import { buildRejection, verifyRejection } from '../../runner/evidence/rejection.js';
import { rejectionFactsOf, rejectionFor } from '../../runner/agent/answers.js';
import { bundleLogFor } from '../../runner/agent/log.js';
import { parseRecordLeaf, type RecordBodies, type RecordKind } from '../../runner/log/record.js';
import { Scheduler } from '../../runner/schedule/scheduler.js';
import type { FiringOutcome } from '../../runner/schedule/fire.js';
import { makeTrustBody, makeWorld, signTrust, type World, type WorldOptions } from '../helpers/world.js';
import { directSelector } from '../helpers/runner.js';
import { verifyTrustDocument } from '../../runner/trust/trust.js';
import { sha256Hex } from '../../runner/core/digest.js';

let nowMs = 0;
const clock = () => new Date(nowMs);
const set = (iso: string) => {
  nowMs = Date.parse(iso);
};
const worlds: World[] = [];
const contexts: RunnerContext[] = [];
afterEach(() => {
  for (const ctx of contexts.splice(0)) ctx.close();
  for (const w of worlds.splice(0)) w.cleanup();
});

function world(options: WorldOptions = {}): World {
  const w = makeWorld(options);
  worlds.push(w);
  return w;
}

function open(w: World): RunnerContext {
  const ctx = openRunner(w.stateDir, { launcher: directSelector, clock });
  contexts.push(ctx);
  return ctx;
}

function close(ctx: RunnerContext): void {
  ctx.close();
  contexts.splice(contexts.indexOf(ctx), 1);
}

/** A scheduler on the injected clock; its outcomes collected. */
function schedulerOf(ctx: RunnerContext, lane = new RunLane()) {
  const outcomes: FiringOutcome[] = [];
  const scheduler = new Scheduler(ctx, { lane, now: () => nowMs, sleep: async () => {}, onFiring: (_row, outcome) => outcomes.push(outcome) });
  return { scheduler, outcomes };
}

/**
 * Looks until the scheduler has nothing to do now (it releases the lane after each firing and asks for the
 * next look at once); returns when it next wants to look.
 */
async function settle(scheduler: Scheduler): Promise<number | undefined> {
  for (let i = 0; i < 50; i++) {
    const wake = await scheduler.lookNow();
    if (wake === undefined || wake > nowMs) return wake;
  }
  throw new Error('the scheduler kept asking to look again');
}

/** A recurring capsule valid from the injected clock's now for `hours`. */
function recurring(w: World, schedule: { cron: string; timezone?: string }, patch: Parameters<World['capsule']>[0] = {}, hours = 24) {
  return Buffer.from(
    JSON.stringify(
      w.capsule({
        schedule,
        issuedAt: new Date(nowMs - 60_000).toISOString(),
        notBefore: new Date(nowMs - 60_000).toISOString(),
        expiresAt: new Date(nowMs + hours * 3600_000).toISOString(),
        ...patch,
      }),
    ),
  );
}

function records<K extends RecordKind>(ctx: RunnerContext, kind: K): RecordBodies[K][] {
  const out: RecordBodies[K][] = [];
  for (const stored of ctx.store.records()) {
    const record = parseRecordLeaf(stored.leaf, stored.seq);
    if (record.kind === kind) out.push(record.body as RecordBodies[K]);
  }
  return out;
}

async function accept(ctx: RunnerContext, bytes: Buffer) {
  const outcome = await runCapsule(ctx, bytes);
  expect(outcome.kind, JSON.stringify(outcome)).toBe('scheduled');
  return outcome as Extract<typeof outcome, { kind: 'scheduled' }>;
}

const completed = (outcome: FiringOutcome | undefined) => {
  expect(outcome?.kind, JSON.stringify(outcome)).toBe('completed');
  return outcome as Extract<FiringOutcome, { kind: 'completed' }>;
};

describe('a recurring capsule', () => {
  it('is accepted once and kept, runs nothing now, and each slot fires a new run with its own records and bundle', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    const scheduled = await accept(ctx, recurring(w, { cron: '0 * * * *' }));
    expect(scheduled).toMatchObject({ cron: '0 * * * *', timezone: 'UTC', firstSlot: '2026-01-01T10:00:00.000Z', replaced: [] });
    expect(records(ctx, 'capsule.accepted')).toHaveLength(1);
    expect(records(ctx, 'run.started')).toHaveLength(0);
    expect(ctx.store.activeSchedules()).toMatchObject([{ capsuleId: scheduled.capsuleId, manifestDigest: scheduled.manifestDigest }]);
    expect(ctx.store.activeSchedules()[0]!.lastSlot).toBeUndefined();

    const { scheduler, outcomes } = schedulerOf(ctx);
    expect(await settle(scheduler)).toBe(Date.parse('2026-01-01T10:00:00Z'));
    expect(outcomes).toHaveLength(0);

    set('2026-01-01T10:00:00.250Z');
    expect(await settle(scheduler)).toBe(Date.parse('2026-01-01T11:00:00Z'));
    set('2026-01-01T11:00:01Z');
    await settle(scheduler);
    expect(outcomes.map((o) => o.kind)).toEqual(['completed', 'completed']);
    const [first, second] = outcomes.map(completed);
    expect(first!.runId).not.toBe(second!.runId);
    expect(records(ctx, 'run.started').map((r) => r.scheduledFor)).toEqual(['2026-01-01T10:00:00.000Z', '2026-01-01T11:00:00.000Z']);
    expect(records(ctx, 'run.started').every((r) => r.manifestDigest === scheduled.manifestDigest)).toBe(true);
    expect(records(ctx, 'evidence.signed')).toHaveLength(2);
    // Each bundle verifies and says which slot its run fired for.
    for (const [i, outcome] of [first!, second!].entries()) {
      const verified = verifyBundle(readFileSync(outcome.bundlePath), w.trust);
      expect(verified.statement.predicate.run.scheduledFor).toBe(['2026-01-01T10:00:00.000Z', '2026-01-01T11:00:00.000Z'][i]);
      expect(verified.statement.predicate.capsule.digest).toBe(scheduled.manifestDigest);
    }
    expect(ctx.store.outboxStats().queued).toBe(2);
    expect(ctx.store.activeSchedules()[0]!.lastSlot).toBe('2026-01-01T11:00:00.000Z');
  });

  it('refuses an invalid schedule at acceptance with CAPSULE_SCHEDULE_INVALID (and burns no nonce)', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    for (const schedule of [{ cron: '0 25 * * *' }, { cron: '0 * * * *', timezone: 'Mars/Olympus_Mons' }, { cron: '0 0 30 2 *' }]) {
      const outcome = await runCapsule(ctx, recurring(w, schedule));
      expect(outcome).toMatchObject({ kind: 'rejected', code: 'CAPSULE_SCHEDULE_INVALID' });
    }
    // Hourly, but the capsule expires in 10 minutes: no slot before its expiry.
    expect(await runCapsule(ctx, recurring(w, { cron: '0 * * * *' }, {}, 10 / 60))).toMatchObject({ code: 'CAPSULE_SCHEDULE_INVALID' });
    expect(records(ctx, 'capsule.accepted')).toHaveLength(0);
    expect(ctx.store.activeSchedules()).toHaveLength(0);
  });

  it('refuses a recurring capsule that claims to be issued in the future (CAPSULE_NOT_YET_VALID): it would be irreplaceable', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    const outcome = await runCapsule(ctx, recurring(w, { cron: '0 * * * *' }, { issuedAt: '2099-01-01T00:00:00.000Z' }));
    expect(outcome).toMatchObject({ kind: 'rejected', code: 'CAPSULE_NOT_YET_VALID' });
    expect(ctx.store.activeSchedules()).toHaveLength(0);
  });
});

describe('the runner down across N slots', () => {
  it('skip (the default): on restart one schedule.missed with the count, first and last, and no run', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    let ctx = open(w);
    await accept(ctx, recurring(w, { cron: '0 * * * *' }));
    set('2026-01-01T10:00:00.100Z');
    await settle(schedulerOf(ctx).scheduler);
    close(ctx);
    // Down from just after 10:00 to 15:20: 11:00 .. 15:00 passed.
    set('2026-01-01T15:20:00Z');
    ctx = open(w);
    const { scheduler, outcomes } = schedulerOf(ctx);
    expect(await settle(scheduler)).toBe(Date.parse('2026-01-01T16:00:00Z'));
    expect(outcomes).toHaveLength(0);
    expect(records(ctx, 'schedule.missed')).toEqual([
      expect.objectContaining({ count: 5, first: '2026-01-01T11:00:00.000Z', last: '2026-01-01T15:00:00.000Z', catchUp: 'skip' }),
    ]);
    expect(records(ctx, 'run.started')).toHaveLength(1);
    // A second look records nothing again.
    await settle(scheduler);
    expect(records(ctx, 'schedule.missed')).toHaveLength(1);
  });

  it('latest-once (signed policy): the N are recorded missed, then the latest runs once, late, in the same transaction', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world({ catchUp: 'latest-once' });
    let ctx = open(w);
    await accept(ctx, recurring(w, { cron: '0 * * * *' }));
    close(ctx);
    set('2026-01-01T15:20:00Z');
    ctx = open(w);
    const { scheduler, outcomes } = schedulerOf(ctx);
    await settle(scheduler);
    expect(outcomes.map((o) => o.kind)).toEqual(['completed']);
    expect(records(ctx, 'schedule.missed')).toEqual([
      expect.objectContaining({ count: 6, first: '2026-01-01T10:00:00.000Z', last: '2026-01-01T15:00:00.000Z', catchUp: 'latest-once' }),
    ]);
    expect(records(ctx, 'run.started').map((r) => r.scheduledFor)).toEqual(['2026-01-01T15:00:00.000Z']);
    // The missed record comes right before the run it led to.
    const kinds = [...ctx.store.records()].map((r) => parseRecordLeaf(r.leaf, r.seq).kind);
    expect(kinds.slice(kinds.indexOf('schedule.missed'), kinds.indexOf('schedule.missed') + 2)).toEqual(['schedule.missed', 'run.started']);
    await settle(scheduler);
    expect(records(ctx, 'run.started')).toHaveLength(1);
  });
});

describe('a wall clock that jumps (injected)', () => {
  it('backwards: no handled slot runs again; the schedule waits for the next slot after the last one handled', async () => {
    set('2026-01-01T11:59:00Z');
    const w = world();
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '0 * * * *' }));
    const { scheduler, outcomes } = schedulerOf(ctx);
    set('2026-01-01T12:00:00.500Z');
    await settle(scheduler);
    expect(outcomes).toHaveLength(1);
    set('2026-01-01T09:10:00Z'); // three hours back
    expect(await settle(scheduler)).toBe(Date.parse('2026-01-01T13:00:00Z'));
    set('2026-01-01T11:00:00.100Z'); // a slot, but one before the last handled
    await settle(scheduler);
    expect(outcomes).toHaveLength(1);
    expect(records(ctx, 'schedule.missed')).toHaveLength(0);
    set('2026-01-01T13:00:00.100Z');
    await settle(scheduler);
    expect(records(ctx, 'run.started').map((r) => r.scheduledFor)).toEqual(['2026-01-01T12:00:00.000Z', '2026-01-01T13:00:00.000Z']);
  });

  it('forwards: the slots jumped over are recorded missed, the one on time fires, never a burst', async () => {
    set('2026-01-01T11:59:00Z');
    const w = world({ catchUp: 'latest-once' });
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '0 * * * *' }));
    const { scheduler, outcomes } = schedulerOf(ctx);
    set('2026-01-01T12:00:00.500Z');
    await settle(scheduler);
    set('2026-01-01T16:00:05Z'); // four hours forward, just past a slot
    await settle(scheduler);
    expect(outcomes.map((o) => o.kind)).toEqual(['completed', 'completed']);
    expect(records(ctx, 'schedule.missed')).toEqual([
      expect.objectContaining({ count: 3, first: '2026-01-01T13:00:00.000Z', last: '2026-01-01T15:00:00.000Z' }),
    ]);
    expect(records(ctx, 'run.started').map((r) => r.scheduledFor)).toEqual(['2026-01-01T12:00:00.000Z', '2026-01-01T16:00:00.000Z']);
  });
});

describe('daylight saving time through the scheduler (Europe/London)', () => {
  it('01:30 daily fires at 02:00 BST on the gap night (01:00Z) and once on the overlap night', async () => {
    set('2026-03-28T12:00:00Z');
    const w = world();
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '30 1 * * *', timezone: 'Europe/London' }, {}, 24 * 240));
    const { scheduler } = schedulerOf(ctx);
    expect(await settle(scheduler)).toBe(Date.parse('2026-03-29T01:00:00Z'));
    set('2026-03-29T01:00:00.200Z');
    await settle(scheduler);
    close(ctx);
    // Autumn: start from just before the overlap night; 01:30 BST is 00:30Z, 01:30 GMT (01:30Z) does not fire.
    set('2026-10-24T12:00:00Z');
    const autumn = open(w);
    const s2 = schedulerOf(autumn);
    // Down since March: the missed days are recorded in one record (skip), then the overlap night.
    await settle(s2.scheduler);
    expect(records(autumn, 'schedule.missed')).toHaveLength(1);
    set('2026-10-25T00:30:00.300Z');
    expect(await settle(s2.scheduler)).toBe(Date.parse('2026-10-26T01:30:00Z'));
    set('2026-10-25T01:30:00.300Z');
    await settle(s2.scheduler);
    expect(records(autumn, 'run.started').map((r) => r.scheduledFor)).toEqual(['2026-03-29T01:00:00.000Z', '2026-10-25T00:30:00.000Z']);
  });

  it('every 30 minutes skips the two local times of the gap and fires both occurrences in the overlap', async () => {
    set('2026-10-24T22:59:00Z');
    const w = world();
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '*/30 * * * *', timezone: 'Europe/London' }));
    const { scheduler } = schedulerOf(ctx);
    // Step the clock to each wake-up the scheduler asks for, 8 times: 00:00 BST .. 02:30 GMT.
    for (let i = 0; i < 9; i++) {
      const wake = await settle(scheduler);
      nowMs = wake! + 100;
    }
    const slots = records(ctx, 'run.started').map((r) => r.scheduledFor);
    expect(slots).toHaveLength(8);
    // 01:00 and 01:30 local, twice each: 00:00Z, 00:30Z (BST) and 01:00Z, 01:30Z (GMT).
    expect(slots).toEqual(
      expect.arrayContaining(['2026-10-25T00:00:00.000Z', '2026-10-25T00:30:00.000Z', '2026-10-25T01:00:00.000Z', '2026-10-25T01:30:00.000Z']),
    );
  });
});

describe('daylight saving time through the scheduler (America/New_York)', () => {
  it('02:30 daily fires at 03:00 EDT on the March gap day; 01:30 fires once on the November overlap day, every 30 minutes fires 01:30 twice', async () => {
    set('2026-03-07T12:00:00Z');
    const w = world();
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '30 2 * * *', timezone: 'America/New_York' }, { id: 'ny-gap' }));
    const { scheduler } = schedulerOf(ctx);
    expect(await settle(scheduler)).toBe(Date.parse('2026-03-08T07:00:00Z'));
    set('2026-10-31T12:00:00Z');
    const fixed = await accept(ctx, recurring(w, { cron: '30 1 * * *', timezone: 'America/New_York' }, { id: 'ny-fixed' }));
    const interval = await accept(ctx, recurring(w, { cron: '*/30 * * * *', timezone: 'America/New_York' }, { id: 'ny-interval' }));
    // Walk the night of 1 November slot by slot: 00:00 EDT (04:00Z) .. 02:00 EST (07:00Z).
    set('2026-11-01T03:59:00Z');
    for (let guard = 0; guard < 20 && nowMs < Date.parse('2026-11-01T07:00:00Z'); guard++) {
      const wake = await settle(scheduler);
      nowMs = Math.min(wake!, Date.parse('2026-11-01T07:00:00Z')) + 100;
    }
    await settle(scheduler);
    const started = records(ctx, 'run.started');
    const slotsOf = (digest: string) => started.filter((r) => r.manifestDigest === digest).map((r) => r.scheduledFor);
    expect(slotsOf(fixed.manifestDigest)).toEqual(['2026-11-01T05:30:00.000Z']);
    expect(slotsOf(interval.manifestDigest)).toEqual(
      expect.arrayContaining(['2026-11-01T05:00:00.000Z', '2026-11-01T05:30:00.000Z', '2026-11-01T06:00:00.000Z', '2026-11-01T06:30:00.000Z']),
    );
  });
});

describe('one run at a time', () => {
  it('a slot that comes while the previous run of the schedule goes is recorded missed, not run beside it', async () => {
    set('2026-01-01T10:00:00Z');
    const w = world();
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '*/30 * * * * *' }, { steps: [{ name: 'slow', run: ['/bin/sleep', '1'] }] }));
    const lane = new RunLane();
    const { scheduler, outcomes } = schedulerOf(ctx, lane);
    set('2026-01-01T10:00:30.100Z');
    // While the run of 10:00:30 goes, the clock passes 10:01:00 and 10:01:30.
    const jump = setTimeout(() => set('2026-01-01T10:01:35Z'), 300);
    let concurrent = false;
    const other = new Promise<void>((resolve) => {
      setTimeout(() => {
        concurrent = lane.busy;
        resolve();
      }, 500);
    });
    await settle(scheduler);
    clearTimeout(jump);
    await other;
    expect(concurrent).toBe(true); // the lane was held by the run
    const started = records(ctx, 'run.started');
    const missed = records(ctx, 'schedule.missed');
    expect(started.map((r) => r.scheduledFor)).toEqual(['2026-01-01T10:00:30.000Z', '2026-01-01T10:01:30.000Z']);
    expect(missed).toEqual([expect.objectContaining({ count: 1, first: '2026-01-01T10:01:00.000Z', last: '2026-01-01T10:01:00.000Z' })]);
    // Never two runs at once: each run ended before the next started.
    const kinds = [...ctx.store.records()].map((r) => parseRecordLeaf(r.leaf, r.seq).kind).filter((k) => k === 'run.started' || k === 'run.finished');
    expect(kinds).toEqual(['run.started', 'run.finished', 'run.started', 'run.finished']);
    expect(outcomes.map((o) => o.kind)).toEqual(['completed', 'completed']);
  });

  it('two schedules always due take turns: one whose runs fill its interval does not starve the other', async () => {
    set('2026-01-01T10:00:00Z');
    const w = world();
    const ctx = open(w);
    const a = await accept(ctx, recurring(w, { cron: '* * * * * *' }));
    const b = await accept(ctx, recurring(w, { cron: '* * * * * *' }));
    const { scheduler } = schedulerOf(ctx);
    // Each look finds both due (the clock moves a second per look, as if each run took that long).
    for (let i = 0; i < 6; i++) {
      nowMs += 1000;
      await scheduler.lookNow();
    }
    const fired = records(ctx, 'run.started').map((r) => r.manifestDigest);
    expect(fired).toHaveLength(6);
    expect(fired.filter((d) => d === a.manifestDigest)).toHaveLength(3);
    expect(fired.filter((d) => d === b.manifestDigest)).toHaveLength(3);
  });

  it('the lane runs its holders one after the other', async () => {
    const lane = new RunLane();
    const order: string[] = [];
    const hold = (name: string, ms: number) =>
      lane.exclusive(async () => {
        order.push(`${name}+`);
        await new Promise((resolve) => setTimeout(resolve, ms));
        order.push(`${name}-`);
      });
    const failing = lane.exclusive(() => Promise.reject(new Error('boom')));
    await Promise.all([hold('a', 30), failing.catch(() => {}), hold('b', 1)]);
    expect(order).toEqual(['a+', 'a-', 'b+', 'b-']);
    expect(lane.busy).toBe(false);
  });
});

describe('replacement, expiry and what changes between firings', () => {
  it('a newer capsule with the same id replaces the schedule (schedule.ended replaced); an older one is refused CAPSULE_SUPERSEDED', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    const id = 'nightly-validation';
    const first = await accept(ctx, recurring(w, { cron: '0 * * * *' }, { id }));
    set('2026-01-01T09:40:00Z');
    const second = await accept(ctx, recurring(w, { cron: '15 * * * *' }, { id }));
    expect(second.replaced).toEqual([first.manifestDigest]);
    expect(records(ctx, 'schedule.ended')).toEqual([{ capsuleId: id, manifestDigest: first.manifestDigest, reason: 'replaced' }]);
    expect(ctx.store.activeSchedules().map((s) => s.manifestDigest)).toEqual([second.manifestDigest]);
    // An older capsule with the id (issued before the active one) does not undo it.
    const older = await runCapsule(ctx, recurring(w, { cron: '0 * * * *' }, { id, issuedAt: '2026-01-01T08:00:00.000Z' }));
    expect(older).toMatchObject({ kind: 'rejected', code: 'CAPSULE_SUPERSEDED' });
    expect(records(ctx, 'capsule.rejected').map((r) => r.code)).toEqual(['CAPSULE_SUPERSEDED']);
    const { scheduler } = schedulerOf(ctx);
    set('2026-01-01T10:15:00.100Z');
    await settle(scheduler);
    expect(records(ctx, 'run.started').map((r) => [r.manifestDigest, r.scheduledFor])).toEqual([[second.manifestDigest, '2026-01-01T10:15:00.000Z']]);
  });

  it('ends at its expiry (schedule.ended expired), counting the slots missed before it', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    let ctx = open(w);
    const scheduled = await accept(ctx, recurring(w, { cron: '0 * * * *' }, {}, 3)); // expires 12:30
    close(ctx);
    set('2026-01-01T14:00:00Z');
    ctx = open(w);
    const { scheduler, outcomes } = schedulerOf(ctx);
    expect(await settle(scheduler)).toBeUndefined();
    expect(outcomes).toHaveLength(0);
    expect(records(ctx, 'schedule.missed')).toEqual([
      expect.objectContaining({ count: 3, first: '2026-01-01T10:00:00.000Z', last: '2026-01-01T12:00:00.000Z' }),
    ]);
    expect(records(ctx, 'schedule.ended')).toEqual([{ capsuleId: scheduled.capsuleId, manifestDigest: scheduled.manifestDigest, reason: 'expired' }]);
    expect(ctx.store.activeSchedules()).toHaveLength(0);
  });

  it('a trust that no longer names its signer ends the schedule at the next firing, with the acceptance code', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    const scheduled = await accept(ctx, recurring(w, { cron: '0 * * * *' }));
    // The context's trust after a rotation that removed the capsule signer (the trust helper moves the pin).
    const body = makeTrustBody([
      { name: 'root-1', key: w.root, roles: ['root'] },
      { name: 'signer-new', key: w.outsider, roles: ['capsule-signer'] },
      { name: w.runnerId, key: w.runnerKey, roles: ['runner'] },
    ]);
    body.version = 2;
    const rotated = { ...ctx, state: { ...ctx.state, trust: verifyTrustDocument(signTrust(body, [w.root]), { now: new Date() }) } };
    const { scheduler, outcomes } = schedulerOf(rotated);
    set('2026-01-01T10:00:00.100Z');
    await settle(scheduler);
    expect(outcomes).toEqual([{ kind: 'ended', reason: 'CAPSULE_SIGNATURE_INVALID' }]);
    expect(records(ctx, 'schedule.ended')).toEqual([
      { capsuleId: scheduled.capsuleId, manifestDigest: scheduled.manifestDigest, reason: 'CAPSULE_SIGNATURE_INVALID' },
    ]);
    expect(records(ctx, 'run.started')).toHaveLength(0);
  });

  it('what is the host’s and may pass (isolation unavailable, the disk below its reserve) records the slot missed and keeps the schedule', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '0 * * * *' }));
    const noSandbox: RunnerContext = { ...ctx, launcher: () => ({ unavailable: 'bubblewrap is missing here' }) };
    const first = schedulerOf(noSandbox);
    set('2026-01-01T10:00:00.100Z');
    await settle(first.scheduler);
    expect(first.outcomes).toEqual([{ kind: 'missed', code: 'CAPSULE_ISOLATION_UNAVAILABLE' }]);
    const full: RunnerContext = { ...ctx, config: { ...ctx.config, store: { ...ctx.config.store, reserveBytes: 2 ** 60 } } };
    const second = schedulerOf(full);
    set('2026-01-01T11:00:00.100Z');
    await settle(second.scheduler);
    expect(second.outcomes).toEqual([{ kind: 'missed', code: 'RUN_DISK_RESERVE' }]);
    expect(records(ctx, 'schedule.missed').map((r) => [r.count, r.first, r.last])).toEqual([
      [1, '2026-01-01T10:00:00.000Z', '2026-01-01T10:00:00.000Z'],
      [1, '2026-01-01T11:00:00.000Z', '2026-01-01T11:00:00.000Z'],
    ]);
    expect(records(ctx, 'run.started')).toHaveLength(0);
    // Back to normal: the next slot runs.
    const third = schedulerOf(ctx);
    set('2026-01-01T12:00:00.100Z');
    await settle(third.scheduler);
    expect(third.outcomes.map((o) => o.kind)).toEqual(['completed']);
    expect(ctx.store.activeSchedules()).toHaveLength(1);
  });

  it('a pinned trust that expired records the slot missed (STATE_TRUST_INVALID) and keeps the schedule for a new pin', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '0 * * * *' }));
    const trust = { ...ctx.state.trust, body: { ...ctx.state.trust.body, expires: '2026-01-01T09:45:00Z' } };
    const { scheduler, outcomes } = schedulerOf({ ...ctx, state: { ...ctx.state, trust } });
    set('2026-01-01T10:00:00.100Z');
    await settle(scheduler);
    expect(outcomes).toEqual([{ kind: 'missed', code: 'STATE_TRUST_INVALID' }]);
    expect(records(ctx, 'schedule.missed')).toHaveLength(1);
    expect(ctx.store.activeSchedules()).toHaveLength(1);
  });

  it('a kept capsule file altered on disk ends the schedule with SCHEDULE_CAPSULE_UNAVAILABLE, and nothing runs', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '0 * * * *' }));
    const row = ctx.store.activeSchedules()[0]!;
    // Another capsule, validly signed by the same signer, put in the kept file's place.
    writeFileSync(ctx.state.blobs.pathOf(row.fileDigest), recurring(w, { cron: '0 * * * *' }, { steps: [{ name: 'other', run: ['/bin/false'] }] }));
    const { scheduler, outcomes } = schedulerOf(ctx);
    set('2026-01-01T10:00:00.100Z');
    await settle(scheduler);
    expect(outcomes).toEqual([{ kind: 'ended', reason: 'SCHEDULE_CAPSULE_UNAVAILABLE' }]);
    expect(records(ctx, 'run.started')).toHaveLength(0);
  });
});

/** The missed slots recorded, as [count, first, last]. */
const spans = (ctx: RunnerContext) => records(ctx, 'schedule.missed').map((r) => [r.count, r.first, r.last]);

describe('review: every slot accounted for exactly once', () => {
  it('a replacement accepted while slots of the old schedule were due and unhandled records them missed before ending it', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    let ctx = open(w);
    const id = 'nightly-validation';
    const old = await accept(ctx, recurring(w, { cron: '0 * * * *' }, { id }));
    close(ctx);
    // The agent was down across 10:00, 11:00 and 12:00; the operator runs the replacement by hand first.
    set('2026-01-01T12:30:00Z');
    ctx = open(w);
    const replacement = await accept(ctx, recurring(w, { cron: '15 * * * *' }, { id }));
    expect(replacement.replaced).toEqual([old.manifestDigest]);
    expect(spans(ctx)).toEqual([[3, '2026-01-01T10:00:00.000Z', '2026-01-01T12:00:00.000Z']]);
    const kinds = [...ctx.store.records()].map((r) => parseRecordLeaf(r.leaf, r.seq).kind);
    expect(kinds.indexOf('schedule.missed')).toBeLessThan(kinds.indexOf('schedule.ended'));
  });

  it('a schedule ended at a firing (its signer no longer trusted) records that slot missed, not silently dropped', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '0 * * * *' }));
    const body = makeTrustBody([
      { name: 'root-1', key: w.root, roles: ['root'] },
      { name: 'signer-new', key: w.outsider, roles: ['capsule-signer'] },
      { name: w.runnerId, key: w.runnerKey, roles: ['runner'] },
    ]);
    body.version = 2;
    const rotated = { ...ctx, state: { ...ctx.state, trust: verifyTrustDocument(signTrust(body, [w.root]), { now: new Date() }) } };
    const { scheduler } = schedulerOf(rotated);
    set('2026-01-01T10:00:00.100Z');
    await settle(scheduler);
    expect(spans(ctx)).toEqual([[1, '2026-01-01T10:00:00.000Z', '2026-01-01T10:00:00.000Z']]);
    expect(records(ctx, 'schedule.ended')).toHaveLength(1);
  });

  it('a host that cannot run (disk below its reserve) does not write one record per slot: the slots are counted together, each once', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    await accept(ctx, recurring(w, { cron: '* * * * * *' }));
    const full: RunnerContext = { ...ctx, config: { ...ctx.config, store: { ...ctx.config.store, reserveBytes: 2 ** 60 } } };
    const { scheduler } = schedulerOf(full);
    // Ten minutes of a looking agent, one look a second (as its every-second schedule asks).
    for (let s = 1; s <= 600; s++) {
      set(new Date(Date.parse('2026-01-01T09:30:00Z') + s * 1000 + 100).toISOString());
      await settle(scheduler);
    }
    const missed = records(ctx, 'schedule.missed');
    expect(missed.length).toBeLessThanOrEqual(30);
    // Exactly once: contiguous spans covering 09:30:01 .. the last slot handled, counts adding up.
    let expected = Date.parse('2026-01-01T09:30:01Z');
    let total = 0;
    for (const r of missed) {
      expect(Date.parse(r.first)).toBe(expected);
      expect((Date.parse(r.last) - Date.parse(r.first)) / 1000 + 1).toBe(r.count);
      expected = Date.parse(r.last) + 1000;
      total += r.count;
    }
    const handled = Date.parse(ctx.store.activeSchedules()[0]!.lastSlot!);
    expect(total).toBe((handled - Date.parse('2026-01-01T09:30:00Z')) / 1000);
    // Nothing left silently behind (status's STATUS_SCHEDULE_BEHIND is 5 minutes).
    expect(Date.parse('2026-01-01T09:40:00Z') - handled).toBeLessThan(5 * 60_000);
    expect(records(ctx, 'run.started')).toHaveLength(0);
  });
});

describe('review: a replacement war', () => {
  it('two capsules with one id and one issuedAt: whichever comes first, the one with the greater manifest digest is the schedule', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    const issuedAt = '2026-01-01T09:00:00.000Z';
    const digestOf = (bytes: Buffer) =>
      `sha256:${sha256Hex(Buffer.from((JSON.parse(bytes.toString('utf8')) as { envelope: { payload: string } }).envelope.payload, 'base64'))}`;
    const pair = (id: string) =>
      [recurring(w, { cron: '0 * * * *' }, { id, issuedAt }), recurring(w, { cron: '15 * * * *' }, { id, issuedAt })].sort((a, b) =>
        digestOf(a) < digestOf(b) ? -1 : 1,
      );
    // The greater first: the lesser, arriving second, does not replace it.
    const [lowA, highA] = pair('tie-a');
    await accept(ctx, highA!);
    expect(await runCapsule(ctx, lowA!)).toMatchObject({ kind: 'rejected', code: 'CAPSULE_SUPERSEDED' });
    // The lesser first: the greater replaces it.
    const [lowB, highB] = pair('tie-b');
    await accept(ctx, lowB!);
    expect((await accept(ctx, highB!)).replaced).toEqual([digestOf(lowB!)]);
    expect(ctx.store.activeSchedules().map((s) => s.manifestDigest)).toEqual([digestOf(highA!), digestOf(highB!)]);
  });
});

describe('review: a long stretch of an every-second schedule', () => {
  it('is counted one piece per hold of the lane (the feed goes between pieces), each slot once', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    let ctx = open(w);
    await accept(ctx, recurring(w, { cron: '* * * * * *' }));
    close(ctx);
    set('2026-01-01T10:00:00.500Z'); // 1800 slots down
    ctx = open(w);
    const lane = new RunLane();
    const scheduler = new Scheduler(ctx, { lane, now: () => nowMs, sleep: async () => {}, maxSpan: 500 });
    const order: string[] = [];
    const look = scheduler.lookNow().then(() => order.push('look'));
    const feed = lane.exclusive(() => order.push(`feed after ${records(ctx, 'schedule.missed').length} piece(s)`));
    await Promise.all([look, feed]);
    expect(order).toEqual(['look', 'feed after 1 piece(s)']);
    await settle(scheduler);
    expect(spans(ctx)).toEqual([
      [500, '2026-01-01T09:30:01.000Z', '2026-01-01T09:38:20.000Z'],
      [500, '2026-01-01T09:38:21.000Z', '2026-01-01T09:46:40.000Z'],
      [500, '2026-01-01T09:46:41.000Z', '2026-01-01T09:55:00.000Z'],
      [299, '2026-01-01T09:55:01.000Z', '2026-01-01T09:59:59.000Z'],
    ]);
    // 10:00:00 is on time: it runs, with the 299 before it recorded in its start's transaction.
    expect(records(ctx, 'run.started').map((r) => r.scheduledFor)).toEqual(['2026-01-01T10:00:00.000Z']);
  });
});

describe('review: one schedule this runtime can no longer read', () => {
  it('(a zone the ICU data dropped, an expression a newer croner refuses) ends with its code and does not stop the others', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    const good = await accept(ctx, recurring(w, { cron: '0 * * * *' }, { id: 'good' }));
    const row = ctx.store.schedule(good.manifestDigest)!;
    // Rows as an older runtime accepted them; a later look here cannot parse them.
    for (const [digest, cron, timezone] of [
      ['sha256:' + 'a'.repeat(64), '0 * * * *', 'Mars/Olympus_Mons'],
      ['sha256:' + 'b'.repeat(64), '0 * * * * * *', 'UTC'],
    ] as const) {
      ctx.store.transaction(() => {
        const accepted = ctx.store.appendRecord('capsule.accepted', {
          capsuleId: `old-${digest.slice(7, 8)}`,
          capsuleKind: 'validation',
          manifestDigest: digest,
          nonce: digest.slice(7, 39),
          signers: ['signer-1'],
        });
        ctx.store.addSchedule({ ...row, manifestDigest: digest, capsuleId: `old-${digest.slice(7, 8)}`, acceptedSeq: accepted.seq, cron, timezone });
      });
    }
    const { scheduler, outcomes } = schedulerOf(ctx);
    set('2026-01-01T10:00:00.100Z');
    await settle(scheduler);
    expect(outcomes.map((o) => o.kind)).toEqual(['completed']);
    expect(records(ctx, 'schedule.ended').map((r) => [r.capsuleId, r.reason])).toEqual([
      ['old-a', 'SCHEDULE_TIMEZONE_INVALID'],
      ['old-b', 'SCHEDULE_CRON_INVALID'],
    ]);
    expect(ctx.store.activeSchedules().map((s) => s.capsuleId)).toEqual(['good']);
  });
});

describe('review: every capsule gets an answer', () => {
  /**
   * The outbox rows queued, oldest first, taken as the shipper does: a rejection's document made from its
   * record (and verified against the trust), then each row acked so the next comes.
   */
  const drain = (ctx: RunnerContext, w: World) => {
    const rows: { kind: string; recordKind: RecordKind; rejection?: ReturnType<typeof verifyRejection> }[] = [];
    for (let row = ctx.store.outboxNext(Number.MAX_SAFE_INTEGER); row !== undefined; row = ctx.store.outboxNext(Number.MAX_SAFE_INTEGER)) {
      const recordKind = parseRecordLeaf(ctx.store.record(row.recordSeq)!.leaf, row.recordSeq).kind;
      if (row.kind === 'rejection') {
        const { bytes, digest } = rejectionFor(ctx.store, { runnerId: w.runnerId, key: w.runnerKey }, row);
        ctx.store.outboxSetBody(row.id, digest, bytes);
        rows.push({ kind: row.kind, recordKind, rejection: verifyRejection(bytes, w.trust) });
      } else rows.push({ kind: row.kind, recordKind });
      ctx.store.outboxAck(row.id, 'created');
    }
    return rows;
  };

  it('a schedule that ends without ever having run (down across all its slots to its expiry) is answered by a signed rejection, stage schedule', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    let ctx = open(w);
    const scheduled = await accept(ctx, recurring(w, { cron: '0 * * * *' }, {}, 3));
    expect(drain(ctx, w)).toEqual([]);
    close(ctx);
    set('2026-01-01T14:00:00Z');
    ctx = open(w);
    await settle(schedulerOf(ctx).scheduler);
    const rows = drain(ctx, w);
    expect(rows.map((r) => [r.kind, r.recordKind])).toEqual([['rejection', 'schedule.ended']]);
    expect(rows[0]!.rejection).toMatchObject({
      stage: 'schedule',
      code: 'CAPSULE_EXPIRED',
      capsule: { id: scheduled.capsuleId, manifestDigest: scheduled.manifestDigest },
      record: { kind: 'schedule.ended' },
    });
    // A runner's claim that does not match the record is refused: another code, another stage.
    const seq = [...ctx.store.records()].find((r) => parseRecordLeaf(r.leaf, r.seq).kind === 'schedule.ended')!.seq;
    const facts = rejectionFactsOf(ctx.store, { runnerId: w.runnerId, key: w.runnerKey }, seq);
    const log = bundleLogFor(ctx.store, { runnerId: w.runnerId, key: w.runnerKey }, seq, ctx.store.record(seq)!.leaf);
    for (const forged of [
      { ...facts, code: 'CAPSULE_REPLAY' },
      { ...facts, stage: 'run' as const },
    ]) {
      expect(() => verifyRejection(buildRejection(forged, log, w.runnerKey).bytes, w.trust)).toThrow(
        expect.objectContaining({ code: 'REJECTION_LOG_MISMATCH' }),
      );
    }
    // The store's integrity check (outbox against log) accepts the row at the next open.
    close(ctx);
    ctx = open(w);
    expect(ctx.store.activeSchedules()).toHaveLength(0);
  });

  it('replaced before its first slot: the old capsule is answered CAPSULE_SUPERSEDED; one that ran is not answered again at its end', async () => {
    set('2026-01-01T09:30:00Z');
    const w = world();
    const ctx = open(w);
    const id = 'replaced-early';
    const first = await accept(ctx, recurring(w, { cron: '0 * * * *' }, { id, issuedAt: '2026-01-01T09:00:00.000Z' }));
    await accept(ctx, recurring(w, { cron: '15 * * * *' }, { id, issuedAt: '2026-01-01T09:10:00.000Z' }));
    const answered = drain(ctx, w);
    expect(answered).toHaveLength(1);
    expect(answered[0]!.rejection).toMatchObject({
      stage: 'schedule',
      code: 'CAPSULE_SUPERSEDED',
      capsule: { id, manifestDigest: first.manifestDigest },
    });
    // The second runs at 10:15 (its bundle queued), then is replaced: its bundles answered for it.
    set('2026-01-01T10:15:00.100Z');
    await settle(schedulerOf(ctx).scheduler);
    expect(drain(ctx, w).map((r) => r.kind)).toEqual(['bundle']);
    await accept(ctx, recurring(w, { cron: '30 * * * *' }, { id }));
    expect(records(ctx, 'schedule.ended')).toHaveLength(2);
    expect(drain(ctx, w)).toEqual([]);
  });
});
