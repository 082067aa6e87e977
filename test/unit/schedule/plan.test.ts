/**
 * What a recurring capsule owes at one instant (runner/schedule/plan.ts, pure): on time, missed after
 * downtime across N slots with each catch-up rule, a clock that jumps forward or back, expiry, and a stretch
 * too long for one record.
 */
import { describe, expect, it } from 'vitest';
import { planSchedule, type ScheduleState, type ScheduleStep } from '../../../runner/schedule/plan.js';

const hourly: ScheduleState = {
  cron: '0 * * * *',
  timezone: 'UTC',
  acceptedAt: '2026-01-01T09:30:00.000Z',
  expiresAt: '2026-01-02T00:00:00.000Z',
};
const at = (iso: string) => new Date(iso);
const summary = (step: ScheduleStep) => {
  switch (step.kind) {
    case 'wait':
      return { kind: step.kind, wakeAt: step.wakeAt?.toISOString() };
    case 'missed':
      return { kind: step.kind, count: step.span.count, first: step.span.first.toISOString(), last: step.span.last.toISOString() };
    case 'fire':
      return {
        kind: step.kind,
        slot: step.slot.toISOString(),
        late: step.late,
        missed: step.missed && { count: step.missed.count, first: step.missed.first.toISOString(), last: step.missed.last.toISOString() },
      };
    case 'expired':
      return { kind: step.kind, missed: step.missed?.count };
  }
};

describe('planSchedule', () => {
  it('waits for the first slot after the acceptance', () => {
    expect(summary(planSchedule(hourly, at('2026-01-01T09:45:00Z'), { catchUp: 'skip' }))).toEqual({
      kind: 'wait',
      wakeAt: '2026-01-01T10:00:00.000Z',
    });
  });

  it('fires a slot that is due and on time, nothing missed', () => {
    expect(summary(planSchedule(hourly, at('2026-01-01T10:00:00.300Z'), { catchUp: 'skip' }))).toEqual({
      kind: 'fire',
      slot: '2026-01-01T10:00:00.000Z',
      late: false,
      missed: undefined,
    });
  });

  it('after the runner was down across 5 slots (skip): the 5 are missed, none runs', () => {
    const state = { ...hourly, lastSlot: '2026-01-01T10:00:00.000Z' };
    expect(summary(planSchedule(state, at('2026-01-01T15:20:00Z'), { catchUp: 'skip' }))).toEqual({
      kind: 'missed',
      count: 5,
      first: '2026-01-01T11:00:00.000Z',
      last: '2026-01-01T15:00:00.000Z',
    });
  });

  it('after the runner was down across 5 slots (latest-once): the 5 are missed and the latest runs once, late', () => {
    const state = { ...hourly, lastSlot: '2026-01-01T10:00:00.000Z' };
    expect(summary(planSchedule(state, at('2026-01-01T15:20:00Z'), { catchUp: 'latest-once' }))).toEqual({
      kind: 'fire',
      slot: '2026-01-01T15:00:00.000Z',
      late: true,
      missed: { count: 5, first: '2026-01-01T11:00:00.000Z', last: '2026-01-01T15:00:00.000Z' },
    });
  });

  it('back just after a slot: that slot fires on time and the earlier ones are missed (whatever the rule)', () => {
    const state = { ...hourly, lastSlot: '2026-01-01T10:00:00.000Z' };
    for (const catchUp of ['skip', 'latest-once'] as const) {
      expect(summary(planSchedule(state, at('2026-01-01T15:00:20Z'), { catchUp }))).toEqual({
        kind: 'fire',
        slot: '2026-01-01T15:00:00.000Z',
        late: false,
        missed: { count: 4, first: '2026-01-01T11:00:00.000Z', last: '2026-01-01T14:00:00.000Z' },
      });
    }
  });

  it('a wall clock that jumps back does not make a handled slot due again: it waits for the next one', () => {
    const state = { ...hourly, lastSlot: '2026-01-01T12:00:00.000Z' };
    expect(summary(planSchedule(state, at('2026-01-01T10:15:00Z'), { catchUp: 'latest-once' }))).toEqual({
      kind: 'wait',
      wakeAt: '2026-01-01T13:00:00.000Z',
    });
  });

  it('a wall clock that jumps forward across slots: they are missed, never a burst', () => {
    const state = { ...hourly, lastSlot: '2026-01-01T10:00:00.000Z' };
    const step = planSchedule(state, at('2026-01-01T13:30:00Z'), { catchUp: 'skip' });
    expect(summary(step)).toMatchObject({ kind: 'missed', count: 3 });
  });

  it('a slot that came while the previous run went (10:00 ran until 10:00:45 on a 30 s schedule) is missed', () => {
    const state = { ...hourly, cron: '*/30 * * * * *', lastSlot: '2026-01-01T10:00:00.000Z' };
    expect(summary(planSchedule(state, at('2026-01-01T10:00:45Z'), { catchUp: 'skip', onTimeToleranceMs: 10_000 }))).toEqual({
      kind: 'missed',
      count: 1,
      first: '2026-01-01T10:00:30.000Z',
      last: '2026-01-01T10:00:30.000Z',
    });
  });

  it('ends at the expiry, counting the slots missed before it and none after', () => {
    const state = { ...hourly, lastSlot: '2026-01-01T21:00:00.000Z' };
    expect(summary(planSchedule(state, at('2026-01-02T05:00:00Z'), { catchUp: 'latest-once' }))).toEqual({ kind: 'expired', missed: 2 });
    expect(summary(planSchedule({ ...hourly, lastSlot: '2026-01-01T23:00:00.000Z' }, at('2026-01-02T00:00:00Z'), { catchUp: 'skip' }))).toEqual({
      kind: 'expired',
      missed: undefined,
    });
  });

  it('wakes at the expiry when no slot comes before it', () => {
    const state = { ...hourly, lastSlot: '2026-01-01T23:00:00.000Z' };
    expect(summary(planSchedule(state, at('2026-01-01T23:10:00Z'), { catchUp: 'skip' }))).toEqual({
      kind: 'wait',
      wakeAt: '2026-01-02T00:00:00.000Z',
    });
  });

  it('counts a stretch too long for one record in pieces', () => {
    const state = { ...hourly, cron: '* * * * * *', lastSlot: '2026-01-01T10:00:00.000Z' };
    const step = planSchedule(state, at('2026-01-01T12:00:00Z'), { catchUp: 'skip', maxSpan: 1000 });
    expect(summary(step)).toEqual({ kind: 'missed', count: 1000, first: '2026-01-01T10:00:01.000Z', last: '2026-01-01T10:16:40.000Z' });
  });
});
