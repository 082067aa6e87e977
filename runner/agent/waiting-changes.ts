/**
 * Open changes decided again while an agent runs (the online agent and the spool agent). An authorized
 * change can wait (runner/remediate/machine.ts: the state disk below its reserve, another change holding its
 * target, a capsule this host cannot run now, an expired pinned trust) and is otherwise decided again only at
 * the next approval or the next start; a change a dead process left (a `change approve` killed mid-apply) is
 * otherwise taken on only at the next start. Every `everyMs`, when the store has open changes, resumeChanges
 * (what a start does) runs in the run lane.
 */
import { isCodedError } from '../core/errors.js';
import { resumeChanges } from '../remediate/machine.js';
import type { RunLane } from './lane.js';
import type { RunnerContext } from './runner.js';

export const WAITING_CHANGES_EVERY_MS = 60_000;

export class WaitingChanges {
  private dueAt: number;

  constructor(
    private readonly ctx: RunnerContext,
    private readonly lane: RunLane,
    private readonly now: () => number,
    private readonly everyMs = WAITING_CHANGES_EVERY_MS,
  ) {
    this.dueAt = now() + everyMs;
  }

  /** Decides the open changes when it is time; true when it ran (the caller reports and ships). */
  async decideIfDue(signals: { stopping: AbortSignal; signal: AbortSignal }, running?: (run: Promise<unknown>) => void): Promise<boolean> {
    if (this.now() < this.dueAt) return false;
    this.dueAt = this.now() + this.everyMs;
    if (this.ctx.store.openChanges().length === 0) return false;
    const { logger } = this.ctx;
    const run = this.lane.exclusive(() => (signals.stopping.aborted ? Promise.resolve([]) : resumeChanges(this.ctx, signals)));
    running?.(run);
    try {
      for (const outcome of await run) {
        logger.info(
          { changeDigest: outcome.changeDigest, state: outcome.state, ...(outcome.code ? { code: outcome.code } : {}) },
          'waiting change decided',
        );
      }
    } catch (err) {
      logger.error({ code: isCodedError(err) ? err.code : 'RUN_INTERNAL' }, 'waiting changes not decided; tried again later');
    }
    return true;
  }
}
