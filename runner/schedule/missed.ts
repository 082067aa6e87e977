/**
 * Slots that passed unrun, as the log says them (schedule.missed): the record's body, and the recording of
 * every due slot of a schedule that is about to end, so no slot goes unaccounted for (never silent).
 */
import type { RecordBodies } from '../log/record.js';
import type { Store, ScheduleRow } from '../store/store.js';
import type { ScheduleCatchUp, VerifiedTrust } from '../trust/trust.js';
import { ScheduleError } from './errors.js';
import { slotsBetween, type SlotSpan } from './slots.js';

/** The catch-up rule of a trust's signed policy (`skip` when it names none). */
export function catchUpOfTrust(trust: VerifiedTrust): ScheduleCatchUp {
  return trust.body.policy.schedule?.catchUp ?? 'skip';
}

export function missedBody(row: ScheduleRow, span: SlotSpan, catchUp: ScheduleCatchUp): RecordBodies['schedule.missed'] {
  return {
    capsuleId: row.capsuleId,
    manifestDigest: row.manifestDigest,
    count: span.count,
    first: span.first.toISOString(),
    last: span.last.toISOString(),
    catchUp,
  };
}

/**
 * Records as missed every slot of `row` due by `now` (before its expiry) and not handled yet, in pieces of
 * at most MISSED_COUNT_STEP_MAX: call in the transaction that ends the schedule (a replacement), before its
 * schedule.ended, so the slots it will never run are in the log.
 */
export function recordDueAsMissed(store: Store, row: ScheduleRow, now: Date, catchUp: ScheduleCatchUp): void {
  const spec = { cron: row.cron, timezone: row.timezone };
  const until = new Date(Math.min(now.getTime(), Date.parse(row.expiresAt) - 1));
  let base = new Date(row.lastSlot ?? row.acceptedAt);
  for (;;) {
    let due: ReturnType<typeof slotsBetween>;
    try {
      due = slotsBetween(spec, base, until);
    } catch (err) {
      // A row this runtime cannot read (scheduler.ts ends such a row with the code): nothing to count.
      if (err instanceof ScheduleError) return;
      throw err;
    }
    if (due === undefined) return;
    store.recordScheduleMissed(missedBody(row, due.span, catchUp));
    if (!due.more) return;
    base = due.span.last;
  }
}
