/**
 * The agent's scheduler: reads the active schedules from the store, asks planSchedule (pure) what each owes
 * now, applies it through the agent's RunLane (a record first, always), and sleeps until the next slot or
 * expiry. It holds no state of its own: the store's schedules_v1 is the truth, so a restart, a replacement
 * accepted by the feed meanwhile, or a clock that jumped are all read as they are at the next look.
 *
 * Sleeps are bounded (`maxSleepMs`): a timer runs on the monotonic clock, so a wall clock that jumps forward
 * is noticed within that bound, not when the timer would have fired. One schedule's firing runs to its end
 * before the next look (no overlapping runs of a schedule; one run at a time across the agent).
 */
import { isCodedError } from '../core/errors.js';
import type { RunLane } from '../agent/lane.js';
import type { RunnerContext } from '../agent/runner.js';
import type { ScheduleRow } from '../store/store.js';
import { realSleep, type Sleep } from '../outbox/shipper.js';
import { catchUpOf, fireSchedule, missedBody, type FiringOutcome } from './fire.js';
import { ON_TIME_TOLERANCE_MS, planSchedule } from './plan.js';
import { MISSED_COUNT_STEP_MAX } from './slots.js';
import { ScheduleError } from './errors.js';

/** Longest hold of a schedule the host could not run, in milliseconds (status warns after 5 minutes behind). */
export const HOLD_MAX_MS = 60_000;

export interface SchedulerOptions {
  lane: RunLane;
  /** Milliseconds since the epoch (defaults to the context's clock). */
  now?: () => number;
  sleep?: Sleep;
  /** Longest single sleep, in milliseconds (default 5,000). */
  maxSleepMs?: number;
  /** Lateness up to which a slot still fires as on time, in milliseconds (default 60,000). */
  onTimeToleranceMs?: number;
  /** Slots one schedule.missed record counts at most (MISSED_COUNT_STEP_MAX; tests make it small). */
  maxSpan?: number;
  /** Tests and benchmarks: told of each firing's outcome. */
  onFiring?: (row: ScheduleRow, outcome: FiringOutcome) => void;
}

export class Scheduler {
  private readonly ctx: RunnerContext;
  private readonly lane: RunLane;
  private readonly now: () => number;
  private readonly sleep: Sleep;
  private readonly maxSleepMs: number;
  private readonly toleranceMs: number;
  private readonly maxSpan: number;
  private readonly onFiring: SchedulerOptions['onFiring'];
  private waking: AbortController | undefined;
  /** The schedule that fired last: the next look starts after it, so a schedule always due cannot starve another. */
  private lastFired: string | undefined;
  private failures = 0;
  /**
   * Schedules the host could not run at their last firing (the disk below its reserve, no sandbox, the pin
   * expired): not looked at again until `until`, so an every-second schedule on a host that cannot run it
   * writes one schedule.missed record per hold (the slots counted together), not one per slot, least of all
   * when the disk is nearly full. Holds double up to HOLD_MAX_MS, under status's STATUS_SCHEDULE_BEHIND.
   */
  private readonly holds = new Map<string, { until: number; count: number }>();

  constructor(ctx: RunnerContext, options: SchedulerOptions) {
    this.ctx = ctx;
    this.lane = options.lane;
    this.now = options.now ?? (() => ctx.clock().getTime());
    this.sleep = options.sleep ?? realSleep;
    this.maxSleepMs = options.maxSleepMs ?? 5000;
    this.toleranceMs = options.onTimeToleranceMs ?? ON_TIME_TOLERANCE_MS;
    this.maxSpan = options.maxSpan ?? MISSED_COUNT_STEP_MAX;
    this.onFiring = options.onFiring;
  }

  /** Look again now (a capsule was just accepted): ends the current sleep. */
  wake(): void {
    this.waking?.abort();
  }

  /**
   * Runs until `stopping` fires: no firing starts after it; `abortRun` aborts a running step (the agent's
   * stop grace). Errors of one look (a store that cannot be written) are logged and backed off, never fatal.
   */
  async run(stopping: AbortSignal, abortRun: AbortSignal): Promise<void> {
    const { logger } = this.ctx;
    logger.info({ schedules: this.ctx.store.activeSchedules().length }, 'scheduler started');
    while (!stopping.aborted) {
      let wakeAt: number | undefined;
      try {
        wakeAt = await this.lookNow(stopping, abortRun);
        this.failures = 0;
      } catch (err) {
        this.failures += 1;
        const code = isCodedError(err) ? err.code : 'RUN_INTERNAL';
        logger.error({ code, failures: this.failures }, 'scheduler look failed; will retry');
        wakeAt = this.now() + Math.min(60_000, 1000 * 2 ** Math.min(this.failures, 6));
      }
      if (stopping.aborted) break;
      const delay = wakeAt === undefined ? this.maxSleepMs : Math.max(0, Math.min(this.maxSleepMs, wakeAt - this.now()));
      if (delay > 0) await this.sleepOrWake(delay, stopping);
    }
    logger.info({}, 'scheduler stopped');
  }

  /**
   * One look now, through the lane (what run() does each time it wakes): returns when the earliest schedule
   * next needs a look (ms since the epoch), undefined when none does. For tests with an injected clock.
   */
  lookNow(stopping: AbortSignal = new AbortController().signal, abortRun: AbortSignal = new AbortController().signal): Promise<number | undefined> {
    return this.lane.exclusive(() => this.look(stopping, abortRun));
  }

  /**
   * One look over every active schedule, inside the lane: applies each due step (missed records, an end, a
   * firing), reading the clock again after each, and returns when the earliest schedule next needs a look.
   */
  private async look(stopping: AbortSignal, abortRun: AbortSignal): Promise<number | undefined> {
    const { store } = this.ctx;
    let earliest: number | undefined;
    const active = store.activeSchedules();
    const after = active.findIndex((row) => row.manifestDigest === this.lastFired);
    for (const initial of [...active.slice(after + 1), ...active.slice(0, after + 1)]) {
      const hold = this.holds.get(initial.manifestDigest);
      if (hold !== undefined && hold.until > this.now()) {
        earliest = Math.min(earliest ?? Infinity, hold.until);
        continue;
      }
      let row: ScheduleRow | undefined = initial;
      // Bounded: each step moves the schedule's last slot forward or ends it; the bound is a guard.
      for (let steps = 0; row !== undefined && row.endedSeq === undefined && steps < 10_000; steps++) {
        if (stopping.aborted) return undefined;
        const now = new Date(this.now());
        let step: ReturnType<typeof planSchedule>;
        try {
          step = planSchedule(row, now, { catchUp: catchUpOf(this.ctx), onTimeToleranceMs: this.toleranceMs, maxSpan: this.maxSpan });
        } catch (err) {
          // A row this runtime can no longer read (a zone its ICU data dropped, an expression a newer croner
          // refuses): it ends with the code, recorded, and the other schedules go on.
          if (!(err instanceof ScheduleError)) throw err;
          store.endSchedule({ capsuleId: row.capsuleId, manifestDigest: row.manifestDigest, reason: err.code });
          this.ctx.logger.warn({ capsuleId: row.capsuleId, code: err.code }, 'schedule ended: it cannot be read here');
          break;
        }
        if (step.kind === 'wait') {
          if (step.wakeAt !== undefined) earliest = Math.min(earliest ?? Infinity, step.wakeAt.getTime());
          break;
        }
        if (step.kind === 'missed') {
          store.recordScheduleMissed(missedBody(row, step.span, catchUpOf(this.ctx)));
          this.ctx.logger.warn(
            { capsuleId: row.capsuleId, count: step.span.count, first: step.span.first, last: step.span.last },
            'scheduled slots missed',
          );
          // Counting a long stretch is CPU work (a piece of MISSED_COUNT_STEP_MAX slots in a named zone is a
          // second or two): after a full piece the lane is let go, so the feed and the shipper get their turn
          // between pieces, and the next look comes at once.
          if (step.span.count >= this.maxSpan) return this.now();
        } else if (step.kind === 'expired') {
          store.transaction(() => {
            if (step.missed !== undefined) store.recordScheduleMissed(missedBody(row!, step.missed, catchUpOf(this.ctx)));
            store.endSchedule({ capsuleId: row!.capsuleId, manifestDigest: row!.manifestDigest, reason: 'expired' });
          });
          this.ctx.logger.info({ capsuleId: row.capsuleId }, 'schedule ended: expired');
        } else {
          const outcome = await this.fire(row, step.slot, step.missed, stopping, abortRun);
          this.lastFired = row.manifestDigest;
          this.holdAfter(row.manifestDigest, outcome);
          this.onFiring?.(row, outcome);
          // One firing per hold of the lane: a capsule from the feed waiting for it goes next, so a schedule
          // whose runs fill its interval cannot starve the feed. The next look comes at once.
          return this.now();
        }
        row = store.schedule(row.manifestDigest);
      }
    }
    return earliest;
  }

  private async fire(
    row: ScheduleRow,
    slot: Date,
    missed: Parameters<typeof fireSchedule>[2]['missed'],
    stopping: AbortSignal,
    abortRun: AbortSignal,
  ): Promise<FiringOutcome> {
    const { logger } = this.ctx;
    try {
      const outcome = await fireSchedule(this.ctx, row, { slot, missed, signal: abortRun, stopping });
      logger.info(
        {
          capsuleId: row.capsuleId,
          scheduledFor: slot.toISOString(),
          outcome: outcome.kind,
          ...(outcome.kind === 'completed' ? { runId: outcome.runId, verdict: outcome.verdict } : {}),
          ...(outcome.kind === 'missed' || outcome.kind === 'failed' ? { code: outcome.code } : {}),
          ...(outcome.kind === 'ended' ? { reason: outcome.reason } : {}),
        },
        'scheduled firing',
      );
      return outcome;
    } catch (err) {
      // The run stopped midway (its run.aborted is recorded, and answered) or never started: the slot was
      // handled with run.started when there was one; if not, the next look finds it due again, or missed.
      const code = isCodedError(err) ? err.code : 'RUN_INTERNAL';
      logger.error({ capsuleId: row.capsuleId, scheduledFor: slot.toISOString(), code }, 'scheduled firing stopped with an error');
      const handled = (store: RunnerContext['store']) => {
        const now = store.schedule(row.manifestDigest);
        return now?.lastSlot !== undefined && now.lastSlot >= slot.toISOString();
      };
      if (!handled(this.ctx.store)) throw err;
      return { kind: 'failed', code };
    }
  }

  /** After a firing: a host that could not run the slot holds the schedule (longer each time); a run clears it. */
  private holdAfter(manifestDigest: string, outcome: FiringOutcome): void {
    if (outcome.kind !== 'missed') {
      this.holds.delete(manifestDigest);
      return;
    }
    const count = (this.holds.get(manifestDigest)?.count ?? 0) + 1;
    this.holds.set(manifestDigest, { until: this.now() + Math.min(HOLD_MAX_MS, 1000 * 2 ** count), count });
  }

  private async sleepOrWake(ms: number, stopping: AbortSignal): Promise<void> {
    const waking = new AbortController();
    this.waking = waking;
    const both = AbortSignal.any([stopping, waking.signal]);
    try {
      await this.sleep(ms, both);
    } finally {
      if (this.waking === waking) this.waking = undefined;
    }
  }
}
