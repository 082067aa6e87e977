/**
 * The air-gapped agent (`edge-runner agent --spool DIR`): no coordinator, no network. Capsule files dropped
 * into DIR/in/ go through runCapsule one at a time (the same RunLane as the scheduler's firings), each
 * decided once by the SHA-256 of its bytes: the spool_inbox_v1 row is written inside the transaction of the
 * record that decides it (runCapsule's `decided`), as the work feed's cursor is. Every answer (bundle,
 * rejection) and a checkpoint of the log go to DIR/out/ as content-addressed files with the outbox's
 * guarantees (runner/spool/outbox.ts). Recurring capsules fire through the same Scheduler as the online
 * agent's, and their bundles go to DIR/out/ too. Approval files in DIR/in/ (runner/spool/approvals.ts) go to
 * acceptApproval in the same lane, as the online agent's feed delivers them.
 *
 * At stop (SIGTERM): no new file is taken, a running capsule gets `stopGraceMs` to end and is then aborted
 * (recorded, answered with a rejection), and the outbox is drained to DIR/out/ before the agent returns.
 */
import { join } from 'node:path';
import { isCodedError } from '../core/errors.js';
import { CAPSULE_MAX_BYTES } from '../capsule/capsule-file.js';
import { backoffDelayMs, type BackoffPolicy } from '../outbox/classify.js';
import { realSleep, type Sleep } from '../outbox/shipper.js';
import { SPOOL_IN, SPOOL_OUT, SPOOL_OUT_FOLDERS } from '../protocol/spool.js';
import { Scheduler, type SchedulerOptions } from '../schedule/scheduler.js';
import { ensureSpoolFolders } from '../spool/files.js';
import { SpoolApprovals } from '../spool/approvals.js';
import { acceptCosigned } from '../spool/cosigned.js';
import { acceptApproval } from '../remediate/approvals.js';
import { verifyApproval, type VerifiedApproval } from '../policy/approval.js';
import { earlyUntil, validFrom } from './approvals-later.js';
import { lookCosigned, SpoolInbox, type SpoolFile } from '../spool/inbox.js';
import { originOf } from './log.js';
import { witnessKeysOf } from '../protocol/witness.js';
import { CAPS } from '../protocol/wire.js';
import { SpoolWriter, type DrainResult } from '../spool/outbox.js';
import { RunError } from './errors.js';
import { RunLane } from './lane.js';
import { WaitingChanges } from './waiting-changes.js';
import { freeBytesOf, runCapsule, type CapsuleOutcome } from './run-capsule.js';
import type { RunnerContext } from './runner.js';

export interface SpoolAgentOptions {
  /** The spool folder (its in/ and out/ are made when missing). */
  dir: string;
  /** Milliseconds since the epoch (defaults to the context's clock). */
  now?: () => number;
  sleep?: Sleep;
  lane?: RunLane;
  /** Between looks at in/, in milliseconds (default 1,000). */
  pollMs?: number;
  /** How long a file in in/ must have been left alone before it is read, in milliseconds (default 2,000). */
  settleMs?: number;
  random?: () => number;
  schedule?: Pick<SchedulerOptions, 'maxSleepMs' | 'onTimeToleranceMs' | 'onFiring'>;
  /** How often open changes are decided again while the agent runs (runner/agent/waiting-changes.ts). */
  waitingChangesEveryMs?: number;
}

/** Times one approval file refused for the time is read again (a clock that keeps going back). */
const LATER_TRIES = 3;

/** Decisions kept in the view (the log has them all). */
const OUTCOMES_KEPT = 100;

/** What the spool agent did, for tests and its log. */
export interface SpoolAgentView {
  decided: number;
  /** The latest OUTCOMES_KEPT decisions. */
  outcomes: { name: string; digest: string; outcome: CapsuleOutcome['kind']; code?: string }[];
  spooled: number;
}

export class SpoolAgent {
  readonly scheduler: Scheduler;
  readonly lane: RunLane;
  readonly view: SpoolAgentView = { decided: 0, outcomes: [], spooled: 0 };
  private readonly ctx: RunnerContext;
  private readonly now: () => number;
  private readonly sleep: Sleep;
  private readonly pollMs: number;
  private readonly backoff: BackoffPolicy;
  private readonly inbox: SpoolInbox;
  private readonly approvals: SpoolApprovals;
  private readonly waitingChanges: WaitingChanges;
  /** Approval files read again for the time (readAgainWhenValid), by name: how many times. */
  private readonly laterTries = new Map<string, number>();
  private readonly writer: SpoolWriter;
  private readonly dir: string;
  private readonly inDir: string;
  private readonly outDir: string;
  private readonly stopping = new AbortController();
  private readonly abortRun = new AbortController();
  private waking: AbortController | undefined;
  private failures = 0;
  /** Cosigned checkpoints taken from in/ by this process: name -> modification time. */
  private readonly cosignedTaken = new Map<string, number>();
  /** File names already warned about (a symlink, a hard link, an unreadable file). */
  private readonly warned = new Set<string>();
  private readonly checkFolders: () => void;
  /** The state is below its disk reserve (said once, until there is room again). */
  private short = false;

  constructor(ctx: RunnerContext, options: SpoolAgentOptions) {
    this.ctx = ctx;
    this.now = options.now ?? (() => ctx.clock().getTime());
    this.sleep = options.sleep ?? realSleep;
    this.pollMs = options.pollMs ?? 1000;
    this.backoff = { baseMs: 1000, capMs: 60_000, random: options.random ?? Math.random };
    this.dir = options.dir;
    this.inDir = join(options.dir, SPOOL_IN);
    this.outDir = join(options.dir, SPOOL_OUT);
    const subfolders = [SPOOL_IN, SPOOL_OUT, ...Object.values(SPOOL_OUT_FOLDERS).map((f) => join(SPOOL_OUT, f))];
    // Checked at start and again before every look and every write: in/ or out/ swapped for a symlink
    // later is not followed (SPOOL_DIR_INVALID until it is a folder again).
    this.checkFolders = () => ensureSpoolFolders(options.dir, subfolders);
    this.checkFolders();
    this.lane = options.lane ?? new RunLane();
    this.waitingChanges = new WaitingChanges(ctx, this.lane, this.now, options.waitingChangesEveryMs);
    this.inbox = new SpoolInbox({
      inDir: this.inDir,
      capBytes: () => ctx.state.trust.body.policy.maxCapsuleBytes ?? CAPSULE_MAX_BYTES,
      isDecided: (digest) => ctx.store.spoolDecidedSeq(digest) !== undefined,
      now: this.now,
      ...(options.settleMs !== undefined ? { settleMs: options.settleMs } : {}),
    });
    this.approvals = new SpoolApprovals({
      inDir: this.inDir,
      now: this.now,
      ...(options.settleMs !== undefined ? { settleMs: options.settleMs } : {}),
    });
    this.writer = new SpoolWriter({
      store: ctx.store,
      identity: { runnerId: ctx.state.identity.id, key: ctx.state.key },
      outDir: this.outDir,
      now: this.now,
      logger: ctx.logger.child({ part: 'spool' }),
      checkFolders: this.checkFolders,
      witnesses: () => witnessKeysOf(ctx.state.trust).map((key) => key.name),
    });
    this.scheduler = new Scheduler(ctx, {
      lane: this.lane,
      now: this.now,
      sleep: this.sleep,
      ...options.schedule,
      onFiring: (row, outcome) => {
        this.drainOut();
        options.schedule?.onFiring?.(row, outcome);
      },
    });
  }

  /** Runs until stop(): resolves after the running capsule ended and the outbox was drained to out/. */
  async run(): Promise<void> {
    const { logger } = this.ctx;
    logger.info({ spool: this.dir }, 'spool agent started');
    this.drainOut(); // answers queued before this start (a crash between a run and its file)
    const scheduling = this.scheduler.run(this.stopping.signal, this.abortRun.signal);
    try {
      while (!this.stopping.signal.aborted) {
        const delay = await this.lookOnce();
        if (this.stopping.signal.aborted) break;
        await this.sleepOrWake(delay);
      }
    } finally {
      this.stopping.abort();
      await scheduling;
      await this.lane.idle();
      const drained = this.drainOut();
      logger.info(
        { queued: this.ctx.store.outboxStats().queued, ...(drained ? { spooled: drained.written + drained.existing } : {}) },
        'spool agent stopped',
      );
    }
  }

  /** Same contract as RunnerAgent.stop(): a second call aborts the running step at once. */
  stop(): void {
    if (this.stopping.signal.aborted) {
      this.abortRun.abort();
      return;
    }
    this.ctx.logger.info({ running: this.lane.busy }, 'spool agent stopping');
    this.stopping.abort();
    this.waking?.abort();
    const grace = setTimeout(() => this.abortRun.abort(), this.ctx.config.coordinator.stopGraceMs);
    const done = () => clearTimeout(grace);
    if (this.lane.busy) this.lane.idle().then(done, done);
    else done();
  }

  /** Look at in/ now (tests; a file was just dropped). */
  wake(): void {
    this.waking?.abort();
  }

  /** One look at in/: every ready file decided in turn; returns how long to wait before the next look. */
  async lookOnce(): Promise<number> {
    const { logger } = this.ctx;
    try {
      this.checkFolders();
      const { ready, passedOver } = this.inbox.look();
      for (const skipped of passedOver) {
        // What an operator must fix is said once per file name, not at every look.
        const odd =
          skipped.reason === 'not-regular' ||
          skipped.reason === 'linked' ||
          skipped.reason === 'unreadable' ||
          skipped.reason === 'too-large' ||
          skipped.reason === 'bad-name';
        const level = odd && !this.warned.has(skipped.name) ? 'warn' : 'debug';
        if (odd) this.warned.add(skipped.name);
        logger[level](
          { file: skipped.name, reason: skipped.reason, ...(skipped.digest ? { fileDigest: skipped.digest } : {}) },
          'spool file passed over',
        );
      }
      this.takeCosigned();
      await this.takeApprovals();
      await this.waitingChanges.decideIfDue({ stopping: this.stopping.signal, signal: this.abortRun.signal });
      if (ready.length > 0 && this.belowReserve()) {
        // runCapsule would record the refusal and, through `decided`, mark the file decided for ever; on a
        // spool the same file is the only way it comes again, so it waits in in/ until there is room.
        if (!this.short)
          logger.warn({ waiting: ready.length, reserveBytes: this.ctx.config.store.reserveBytes }, 'disk below reserve; files in in/ wait');
        this.short = true;
        this.drainOut();
        return this.pollMs;
      }
      if (this.short && ready.length > 0) logger.info({}, 'disk above reserve again; files in in/ are taken');
      if (ready.length > 0) this.short = false;
      for (const file of ready) {
        if (this.stopping.signal.aborted) break;
        await this.take(file);
        this.drainOut();
      }
      // Rows put back for a retry (a full disk, a swapped folder, a planted name) are due again some day:
      // every look drains what is due, not only a look that took a file.
      this.drainOut();
      this.failures = 0;
      return this.pollMs;
    } catch (err) {
      this.failures += 1;
      const delay = backoffDelayMs(this.failures, this.backoff);
      logger.error({ code: isCodedError(err) ? err.code : 'RUN_INTERNAL', delayMs: delay }, 'spool look failed; will retry');
      return delay;
    }
  }

  private async take(file: SpoolFile): Promise<void> {
    const { store, logger } = this.ctx;
    const stop = this.stopping.signal;
    const outcome = await this.lane.exclusive(() =>
      stop.aborted
        ? Promise.reject(new RunError('RUN_AGENT_STOPPED', 'The agent stopped before the file was taken; it is read again at the next start.'))
        : runCapsule(this.ctx, file.bytes, {
            ...(file.size !== file.bytes.length ? { size: file.size } : {}),
            decided: () => store.spoolDecide(file.digest),
            stopping: stop,
            signal: this.abortRun.signal,
          }),
    );
    if (outcome.kind === 'scheduled') this.scheduler.wake();
    this.view.decided += 1;
    // The latest decisions only: an agent runs for months.
    if (this.view.outcomes.length >= OUTCOMES_KEPT) this.view.outcomes.shift();
    this.view.outcomes.push({
      name: file.name,
      digest: file.digest,
      outcome: outcome.kind,
      ...(outcome.kind === 'rejected' ? { code: outcome.code } : {}),
    });
    logger.info(
      {
        file: file.name,
        fileDigest: file.digest,
        outcome: outcome.kind,
        ...(outcome.kind === 'rejected' ? { code: outcome.code } : outcome.kind === 'completed' ? { verdict: outcome.verdict } : {}),
      },
      'spool file decided',
    );
  }

  private belowReserve(): boolean {
    try {
      return freeBytesOf(this.ctx.state.layout.dir) < this.ctx.config.store.reserveBytes;
    } catch {
      return true; // no answer is no room: fail closed, as runCapsule does
    }
  }

  /** The witness's cosignatures carried back in in/ (runner/spool/cosigned.ts): kept when they verify. */
  private takeCosigned(): void {
    const { store, state, logger } = this.ctx;
    const origin = originOf({ runnerId: state.identity.id, key: state.key });
    for (const { name, bytes } of lookCosigned(this.inDir, CAPS.addCheckpointBytes + CAPS.cosignatureResponseBytes, this.cosignedTaken)) {
      try {
        const taken = acceptCosigned(store, witnessKeysOf(state.trust), origin, bytes);
        logger.info({ file: name, size: taken.size, witnesses: taken.witnesses.join(',') }, 'checkpoint cosigned (from the spool)');
      } catch (err) {
        if (!isCodedError(err) || !err.code.startsWith('SPOOL_')) throw err;
        logger.warn({ file: name, code: err.code }, 'cosigned checkpoint not taken');
      }
    }
  }

  /**
   * Approval files in in/: each handed to acceptApproval in the run lane (recorded as accepted or refused; a
   * change it authorizes is applied before this returns). A decision that fails (a full disk) leaves the file
   * to be read again at the next look, and the look backs off.
   */
  private async takeApprovals(): Promise<void> {
    const { logger } = this.ctx;
    const stop = this.stopping.signal;
    const { ready, passedOver } = this.approvals.look();
    for (const skipped of passedOver) {
      const level = skipped.reason !== 'settling' && !this.warned.has(skipped.name) ? 'warn' : 'debug';
      if (level === 'warn') this.warned.add(skipped.name);
      logger[level]({ file: skipped.name, reason: skipped.reason }, 'spool approval passed over');
    }
    for (const file of ready) {
      if (stop.aborted) {
        this.approvals.release(file.name);
        continue;
      }
      // Refused for the time already (the same approval in another file, or this one rewritten): read again
      // at its time, not refused again now.
      const verified = this.verified(file.bytes);
      const early = verified === undefined ? undefined : earlyUntil(this.ctx, verified);
      if (early !== undefined) {
        this.approvals.readAgainAt(file.name, early);
        continue;
      }
      try {
        const outcome = await this.lane.exclusive(() =>
          acceptApproval(this.ctx, file.bytes, 'spool', { stopping: stop, signal: this.abortRun.signal }),
        );
        if (outcome.status === 'refused' && outcome.code === 'APPROVAL_NOT_YET_VALID') this.readAgainWhenValid(file);
        logger.info(
          {
            file: file.name,
            approval: outcome.digest,
            status: outcome.status,
            ...(outcome.code !== undefined ? { code: outcome.code } : {}),
            ...(outcome.change !== undefined ? { change: outcome.change.state } : {}),
          },
          'spool approval decided',
        );
      } catch (err) {
        this.approvals.release(file.name);
        throw err;
      }
      this.drainOut();
    }
  }

  /**
   * An approval file refused only for the time (signed ahead of this runner's clock plus the skew) is read
   * again once the clock is past its signing time less the skew, if that is before it expires, at most
   * LATER_TRIES times per file in this process: a file is otherwise read once per version, and it would
   * count only after the agent restarted or someone touched it.
   */
  private readAgainWhenValid(file: { name: string; bytes: Buffer }): void {
    const tries = (this.laterTries.get(file.name) ?? 0) + 1;
    if (tries > LATER_TRIES) return;
    const verified = this.verified(file.bytes);
    if (verified === undefined) return;
    const at = validFrom(verified);
    if (at >= Date.parse(verified.predicate.notAfter)) return;
    this.laterTries.set(file.name, tries);
    this.approvals.readAgainAt(file.name, at);
  }

  private verified(bytes: Buffer): VerifiedApproval | undefined {
    try {
      return verifyApproval(bytes, this.ctx.state.trust);
    } catch {
      return undefined;
    }
  }

  /** Drains the outbox to out/; a store or disk failure is logged and tried again at the next drain. */
  private drainOut(): DrainResult | undefined {
    try {
      const result = this.writer.drain();
      this.view.spooled += result.written + result.existing;
      return result;
    } catch (err) {
      this.ctx.logger.error(
        { code: isCodedError(err) ? err.code : 'SPOOL_WRITE_FAILED' },
        'the outbox could not be drained to the spool; will retry',
      );
      return undefined;
    }
  }

  private async sleepOrWake(ms: number): Promise<void> {
    const wake = new AbortController();
    const onStop = () => wake.abort();
    this.stopping.signal.addEventListener('abort', onStop, { once: true });
    this.waking = wake;
    try {
      await this.sleep(ms, wake.signal);
    } finally {
      this.waking = undefined;
      this.stopping.signal.removeEventListener('abort', onStop);
    }
  }
}
