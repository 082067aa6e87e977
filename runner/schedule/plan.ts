/**
 * What a recurring capsule owes at one instant (pure: the schedule's row and one clock reading in, one step
 * out). The scheduler applies the step (a record first), reads the clock again and asks again, so a long
 * stretch of missed slots is handled in bounded pieces and a clock that jumped is read as it now is.
 *
 * The rules (issue 10, "Recurring validation"):
 * - slots count from the last slot handled (fired or recorded as missed), or from the acceptance: a slot is
 *   never handled twice, so a wall clock that jumps back does not repeat a slot, it waits for the next one;
 * - the latest due slot fires if it is at most `onTimeToleranceMs` late; every earlier due slot is missed
 *   (the runner was down, the clock jumped forward, or the previous run of the schedule was still going);
 * - when the latest due slot is later than that, every due slot is missed, and the signed policy's catch-up
 *   rule decides: `skip` runs none of them, `latest-once` runs the latest once, late. Never a burst;
 * - slots at or after the capsule's `expiresAt` do not exist; once the clock reaches it the schedule ends.
 */
import type { ScheduleCatchUp } from '../trust/trust.js';
import { nextSlotAfter, slotsBetween, MISSED_COUNT_STEP_MAX, type SlotSpan } from './slots.js';

/** Default lateness up to which a slot still fires as on time, in milliseconds. */
export const ON_TIME_TOLERANCE_MS = 60_000;

export interface ScheduleState {
  cron: string;
  timezone: string;
  /** RFC 3339. */
  expiresAt: string;
  acceptedAt: string;
  lastSlot?: string | undefined;
}

export type ScheduleStep =
  /** Nothing due: ask again at `wakeAt` (the next slot, or the expiry), or never (`undefined`). */
  | { kind: 'wait'; wakeAt: Date | undefined }
  /** Record these missed slots (no run); more may follow. */
  | { kind: 'missed'; span: SlotSpan }
  /** Record the missed slots, if any, then run `slot` (`late`: a catch-up run). */
  | { kind: 'fire'; slot: Date; late: boolean; missed: SlotSpan | undefined }
  /** The capsule expired: record the missed slots before its expiry, if any, then end the schedule. */
  | { kind: 'expired'; missed: SlotSpan | undefined };

export interface PlanOptions {
  catchUp: ScheduleCatchUp;
  onTimeToleranceMs?: number;
  /** Slots one missed record counts at most (MISSED_COUNT_STEP_MAX). */
  maxSpan?: number;
}

export function planSchedule(state: ScheduleState, now: Date, options: PlanOptions): ScheduleStep {
  const spec = { cron: state.cron, timezone: state.timezone };
  const base = new Date(state.lastSlot ?? state.acceptedAt);
  const expiresMs = Date.parse(state.expiresAt);
  const expired = now.getTime() >= expiresMs;
  // Slots are strictly before the expiry.
  const horizon = new Date(Math.min(now.getTime(), expiresMs - 1));
  const due = slotsBetween(spec, base, horizon, options.maxSpan ?? MISSED_COUNT_STEP_MAX);
  if (due === undefined) {
    if (expired) return { kind: 'expired', missed: undefined };
    const next = nextSlotAfter(spec.cron, spec.timezone, base);
    const wakeAt = next === undefined || next.getTime() >= expiresMs ? new Date(expiresMs) : next;
    return { kind: 'wait', wakeAt };
  }
  if (due.more) return { kind: 'missed', span: due.span };
  if (expired) return { kind: 'expired', missed: due.span };
  const latest = due.span.last;
  const lateness = now.getTime() - latest.getTime();
  if (lateness <= (options.onTimeToleranceMs ?? ON_TIME_TOLERANCE_MS)) {
    const before = due.span.count > 1 ? slotsBetween(spec, base, new Date(latest.getTime() - 1), Number.MAX_SAFE_INTEGER)?.span : undefined;
    return { kind: 'fire', slot: latest, late: false, missed: before };
  }
  if (options.catchUp === 'latest-once') return { kind: 'fire', slot: latest, late: true, missed: due.span };
  return { kind: 'missed', span: due.span };
}
