/**
 * Slot maths of recurring capsules (pure: no clock, no timers, no I/O). A slot is an instant croner names
 * for a cron expression in an IANA time zone; every instant here is a `Date` the caller passes in, so the
 * scheduler's clock, and a test's, is injected.
 *
 * Daylight saving time is croner's rule (its `fixedTimeRule: 'single-value'`, the default): an expression
 * whose second, minute and hour are single values is a fixed-time job, which runs at the first valid
 * instant after a gap (01:30 on the night the clocks skip 01:00-02:00 fires at 02:00) and once when a local
 * time occurs twice (the first time); any other expression is an interval job, which skips local times in a
 * gap and fires on both occurrences of a repeated one.
 */
import { Cron } from 'croner';
import { ScheduleError } from './errors.js';

/** How many slots one missed-slot count walks at most; a longer stretch is counted in several pieces. */
export const MISSED_COUNT_STEP_MAX = 10_000;

export interface ScheduleSpec {
  cron: string;
  /** IANA name; UTC when absent. */
  timezone?: string | undefined;
}

/** Missed slots of one stretch: how many, the first and the last (both included). */
export interface SlotSpan {
  count: number;
  first: Date;
  last: Date;
}

const cache = new Map<string, Cron>();

/** The croner job (paused: it never starts a timer) for a cron expression in a zone; throws a coded error. */
export function parseSchedule({ cron, timezone }: ScheduleSpec): Cron {
  const zone = timezone ?? 'UTC';
  const key = `${zone} ${cron}`;
  const known = cache.get(key);
  if (known !== undefined) return known;
  let resolved: string;
  try {
    resolved = new Intl.DateTimeFormat('en', { timeZone: zone }).resolvedOptions().timeZone;
  } catch {
    throw new ScheduleError('SCHEDULE_TIMEZONE_INVALID', `The time zone "${zone}" is not an IANA zone this runner knows.`, { timezone: zone });
  }
  let job: Cron;
  try {
    // 5 or 6 fields (seconds first when 6); no year field, no nicknames' surprises beyond croner's own.
    // UTC (and its links: Etc/UTC, Zulu, GMT, ...) as a fixed offset: croner then skips Intl at every step,
    // about ten times faster, which counts a long stretch of an every-second schedule in bounded time.
    const where = resolved === 'UTC' ? { utcOffset: 0 } : { timezone: zone };
    job = new Cron(cron, { ...where, paused: true, mode: '5-or-6-parts' });
  } catch (cause) {
    throw new ScheduleError('SCHEDULE_CRON_INVALID', `The cron expression "${cron}" is not valid (five or six fields).`, { cron }, { cause });
  }
  if (cache.size > 1000) cache.clear();
  cache.set(key, job);
  return job;
}

/** The first slot strictly after `after`, or undefined when the expression names none. */
export function nextSlotAfter(cron: string, timezone: string | undefined, after: Date): Date | undefined {
  return parseSchedule({ cron, timezone }).nextRun(after) ?? undefined;
}

/**
 * The slots in (after, until], counted, with the first and the last: undefined when there is none. Walks at
 * most `max` slots: when the stretch holds more, the span covers the first `max` and `more` is true (the
 * caller counts on from `span.last`). Each slot is one step of croner's search: about 20 us in UTC, ten times
 * that in a named zone (croner asks Intl at every step), so a piece is at most a second or two of CPU.
 */
export function slotsBetween(
  spec: ScheduleSpec,
  after: Date,
  until: Date,
  max = MISSED_COUNT_STEP_MAX,
): { span: SlotSpan; more: boolean } | undefined {
  const job = parseSchedule(spec);
  const end = until.getTime();
  const first = job.nextRun(after);
  if (first === null || first.getTime() > end) return undefined;
  let last = first;
  let count = 1;
  while (count < max) {
    const next = job.nextRun(last);
    if (next === null || next.getTime() > end) return { span: { count, first, last }, more: false };
    last = next;
    count += 1;
  }
  const after2 = job.nextRun(last);
  return { span: { count, first, last }, more: after2 !== null && after2.getTime() <= end };
}
