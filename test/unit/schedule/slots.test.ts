/**
 * Slot maths (runner/schedule/slots.ts) over croner 11, with named zones: the next slot, the slots of a
 * stretch (counted, first, last), and the daylight saving time rules as the README states them.
 */
import { describe, expect, it } from 'vitest';
import { codeOf } from '../../helpers/codes.js';
import { nextSlotAfter, parseSchedule, slotsBetween } from '../../../runner/schedule/slots.js';

const at = (iso: string) => new Date(iso);
const iso = (d: Date | undefined) => d?.toISOString();

describe('nextSlotAfter', () => {
  it('gives the first slot strictly after the instant, in UTC when no zone is named', () => {
    expect(iso(nextSlotAfter('0 * * * *', undefined, at('2026-01-01T10:00:00Z')))).toBe('2026-01-01T11:00:00.000Z');
    expect(iso(nextSlotAfter('0 * * * *', undefined, at('2026-01-01T10:59:59.900Z')))).toBe('2026-01-01T11:00:00.000Z');
  });

  it('reads the expression in the named zone (09:00 in New York is 14:00 UTC in winter, 13:00 in summer)', () => {
    expect(iso(nextSlotAfter('0 9 * * *', 'America/New_York', at('2026-01-15T00:00:00Z')))).toBe('2026-01-15T14:00:00.000Z');
    expect(iso(nextSlotAfter('0 9 * * *', 'America/New_York', at('2026-07-15T00:00:00Z')))).toBe('2026-07-15T13:00:00.000Z');
  });

  it('takes six fields as seconds first', () => {
    expect(iso(nextSlotAfter('*/10 * * * * *', 'UTC', at('2026-01-01T00:00:01Z')))).toBe('2026-01-01T00:00:10.000Z');
  });

  it('is undefined for an expression that names no instant (30 February)', () => {
    expect(nextSlotAfter('0 0 30 2 *', 'UTC', at('2026-01-01T00:00:00Z'))).toBeUndefined();
  });
});

describe('parseSchedule', () => {
  it('refuses a cron expression croner cannot read with SCHEDULE_CRON_INVALID', () => {
    expect(codeOf(() => parseSchedule({ cron: '61 * * * *' }))).toBe('SCHEDULE_CRON_INVALID');
    expect(codeOf(() => parseSchedule({ cron: '* * * * * * * *' }))).toBe('SCHEDULE_CRON_INVALID');
    // Seven fields (a year) are not taken: five or six.
    expect(codeOf(() => parseSchedule({ cron: '0 0 0 1 1 * 2030' }))).toBe('SCHEDULE_CRON_INVALID');
  });

  it('refuses an unknown zone with SCHEDULE_TIMEZONE_INVALID', () => {
    expect(codeOf(() => parseSchedule({ cron: '0 * * * *', timezone: 'Mars/Olympus_Mons' }))).toBe('SCHEDULE_TIMEZONE_INVALID');
  });
});

describe('slotsBetween', () => {
  it('counts the slots in (after, until], with the first and the last', () => {
    const stretch = slotsBetween({ cron: '0 * * * *' }, at('2026-01-01T10:00:00Z'), at('2026-01-01T15:00:00Z'));
    expect(stretch).toMatchObject({ more: false, span: { count: 5 } });
    expect(iso(stretch!.span.first)).toBe('2026-01-01T11:00:00.000Z');
    expect(iso(stretch!.span.last)).toBe('2026-01-01T15:00:00.000Z');
  });

  it('is undefined when no slot falls in the stretch', () => {
    expect(slotsBetween({ cron: '0 * * * *' }, at('2026-01-01T10:00:00Z'), at('2026-01-01T10:59:59Z'))).toBeUndefined();
    // A stretch that runs backwards (a clock that jumped back) holds nothing.
    expect(slotsBetween({ cron: '0 * * * *' }, at('2026-01-01T10:00:00Z'), at('2026-01-01T08:00:00Z'))).toBeUndefined();
  });

  it('walks at most `max` slots and says there are more', () => {
    const stretch = slotsBetween({ cron: '* * * * * *' }, at('2026-01-01T00:00:00Z'), at('2026-01-02T00:00:00Z'), 1000);
    expect(stretch).toMatchObject({ more: true, span: { count: 1000 } });
    expect(iso(stretch!.span.last)).toBe('2026-01-01T00:16:40.000Z');
  });
});

describe('daylight saving time in a named zone', () => {
  // Europe/London: 2026-03-29 01:00 GMT -> 02:00 BST (gap); 2026-10-25 02:00 BST -> 01:00 GMT (overlap).
  it('a fixed-time slot in the spring gap fires at the first valid instant after it (01:30 -> 02:00 BST)', () => {
    const stretch = slotsBetween({ cron: '30 1 * * *', timezone: 'Europe/London' }, at('2026-03-28T00:00:00Z'), at('2026-03-30T12:00:00Z'));
    expect(stretch!.span.count).toBe(3);
    expect(iso(nextSlotAfter('30 1 * * *', 'Europe/London', at('2026-03-28T12:00:00Z')))).toBe('2026-03-29T01:00:00.000Z');
  });

  it('a fixed-time slot in the autumn overlap fires once, at the first occurrence (01:30 BST)', () => {
    const stretch = slotsBetween({ cron: '30 1 * * *', timezone: 'Europe/London' }, at('2026-10-24T12:00:00Z'), at('2026-10-25T12:00:00Z'));
    expect(stretch!.span.count).toBe(1);
    expect(iso(stretch!.span.first)).toBe('2026-10-25T00:30:00.000Z');
  });

  it('an interval slot skips the local times of the gap (no 01:00 or 01:30 on 29 March)', () => {
    // 00:00 GMT .. 03:00 BST local is 00:00Z .. 02:00Z: every half hour would be 6 local times, 2 do not exist.
    const stretch = slotsBetween({ cron: '*/30 * * * *', timezone: 'Europe/London' }, at('2026-03-28T23:59:00Z'), at('2026-03-29T02:00:00Z'));
    expect(stretch!.span.count).toBe(5);
  });

  it('an interval slot fires on both occurrences of a repeated local time (01:00 and 01:30 twice)', () => {
    // 00:00 BST (23:00Z) .. 03:00 GMT (03:00Z): 4 hours of real time, 8 half hours, each fired.
    const stretch = slotsBetween({ cron: '*/30 * * * *', timezone: 'Europe/London' }, at('2026-10-24T22:59:00Z'), at('2026-10-25T02:59:00Z'));
    expect(stretch!.span.count).toBe(8);
  });

  it('America/New_York: 02:30 daily on the March gap day fires at 03:00 EDT, and once on the November overlap day (01:30)', () => {
    expect(iso(nextSlotAfter('30 2 * * *', 'America/New_York', at('2026-03-08T00:00:00Z')))).toBe('2026-03-08T07:00:00.000Z');
    const overlap = slotsBetween({ cron: '30 1 * * *', timezone: 'America/New_York' }, at('2026-11-01T00:00:00Z'), at('2026-11-01T12:00:00Z'));
    expect(overlap!.span.count).toBe(1);
    expect(iso(overlap!.span.first)).toBe('2026-11-01T05:30:00.000Z');
  });
});
