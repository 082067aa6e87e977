/**
 * The agent: one runner context (runner.ts) for the whole life of the process, one coordinator client, one
 * shipper. It reports its status, long-polls the work feed from the cursor it keeps in its store, fetches
 * each capsule by digest and runs it through runCapsule, one at a time, moving the cursor inside the
 * transaction of the record that decides the capsule (so after any crash a capsule is either decided and
 * behind the cursor, or read again: never run twice, never skipped). The shipper sends the answers and
 * the witness gets the checkpoints, concurrently with the runs.
 *
 * Approvals of this runner's proposals come in the same feed answers, after a cursor of their own (kept in
 * the store under APPROVALS_CURSOR_PREFIX + the coordinator URL): each is fetched by digest and handed to
 * acceptApproval in the run lane (it records its acceptance or refusal and applies the change once it is
 * authorized), then the cursor moves past it. A crash between the two delivers it again at the next start,
 * which is harmless: the runner keeps an approval once by digest. What the coordinator serves is checked
 * first: bytes that are not an approval by an approver key of the runner's trust, or an approval naming
 * another runner, are passed over with a warning and no record (a coordinator could make them up without end,
 * and the log keeps every record for ever); an approval that cannot be fetched now does not hold up the
 * capsules (the feed is read again, capsules first).
 *
 * A capsule that cannot be fetched is retried with backoff, never passed over. At stop (SIGTERM): no more
 * polling, a running capsule gets `stopGraceMs` to end and is then aborted (its run is recorded as aborted,
 * RUN_AGENT_STOPPED, and answered as such), the outbox is flushed for at most `flushMs`, and the agent returns.
 */
import { randomInt } from 'node:crypto';
import { CoordinatorClient } from '../api/client.js';
import { isCodedError } from '../core/errors.js';
import { CAPSULE_MAX_BYTES } from '../capsule/capsule-file.js';
import { backoffDelayMs, type BackoffPolicy } from '../outbox/classify.js';
import { OutboxError } from '../outbox/errors.js';
import { realSleep, Shipper, type Sleep } from '../outbox/shipper.js';
import { WitnessSubmitter, witnessKeysOf } from '../outbox/witness.js';
import type { WitnessKey } from '../protocol/witness.js';
import { parseStatusReport, formatStatusReport, type ApprovalItem, type RunnerStatusReport, type WorkItem } from '../protocol/wire.js';
import { ApprovalError } from '../policy/errors.js';
import { verifyApproval, type VerifiedApproval } from '../policy/approval.js';
import { acceptApproval } from '../remediate/approvals.js';
import { RUNNER_VERSION } from '../version.js';
import { Scheduler, type SchedulerOptions } from '../schedule/scheduler.js';
import { rejectionFor } from './answers.js';
import { RunError } from './errors.js';
import { RunLane } from './lane.js';
import { WaitingChanges } from './waiting-changes.js';
import { earlyUntil, validFrom } from './approvals-later.js';
import { runCapsule } from './run-capsule.js';
import type { RunnerContext } from './runner.js';
import { movedPin, reloadMovedPin, TrustFollower } from './trust-update.js';

export interface AgentOptions {
  /** Tests: a client of their own (one is built from the configuration otherwise). */
  client?: CoordinatorClient;
  /** Milliseconds since the epoch (defaults to the context's clock). */
  now?: () => number;
  sleep?: Sleep;
  /** In [0, 1) (defaults to crypto randomness). */
  random?: () => number;
  /** The one-run-at-a-time lane (a new one otherwise); the feed's capsules and the scheduler's firings share it. */
  lane?: RunLane;
  /** Tests and benchmarks: the scheduler's bounds and its firing hook (its clock and sleep are the agent's). */
  schedule?: Pick<SchedulerOptions, 'maxSleepMs' | 'onTimeToleranceMs' | 'onFiring'>;
  /** How often open changes are decided again while the agent runs (runner/agent/waiting-changes.ts). */
  waitingChangesEveryMs?: number;
}

/** What the agent knows about the link, for its status and for tests. */
export interface AgentView {
  /** The coordinator's trust version as its feed last said, and how it compares with the pinned one. */
  coordinatorTrust: { version: number; relation: 'same' | 'older' | 'newer' } | undefined;
  capsulesRun: number;
  /** Approvals the feed delivered and acceptApproval decided (accepted or refused). */
  approvalsTaken: number;
  /** What the feed served as approvals that were not this runner's to decide (not recorded): see takeApproval. */
  approvalsPassedOver: number;
  lastStatusAt: number | undefined;
}

/**
 * The approvals feed's cursor is kept beside the capsules' in the store's feed cursors, under the coordinator
 * URL with this prefix (a space: no URL starts so, so the two never share a row).
 */
export const APPROVALS_CURSOR_PREFIX = 'approvals ';

/** A coordinator that refused the approvals parameter (one older than them) is asked again after this long. */
export const APPROVALS_ASK_AGAIN_MS = 10 * 60_000;

/** Approvals kept for later (refused for the time) at most at once, and decisions of each at most. */
const LATER_APPROVALS = 64;
const LATER_TRIES = 3;

interface LaterApproval {
  item: ApprovalItem;
  bytes: Buffer;
  verified: VerifiedApproval;
  /** Decisions so far. */
  tries: number;
  /** By the runner's clock (ms): when it is decided again. */
  dueAt?: number;
}

export class RunnerAgent {
  readonly client: CoordinatorClient;
  readonly shipper: Shipper;
  /** Fires the recurring capsules this runner accepted (runner/schedule), beside the feed, through the lane. */
  readonly scheduler: Scheduler;
  readonly lane: RunLane;
  readonly view: AgentView = { coordinatorTrust: undefined, capsulesRun: 0, approvalsTaken: 0, approvalsPassedOver: 0, lastStatusAt: undefined };
  private readonly ctx: RunnerContext;
  private readonly now: () => number;
  private readonly sleep: Sleep;
  private readonly backoff: BackoffPolicy;
  /** The feed's cursor key in the store: the coordinator's base URL as configured. */
  private readonly feedKey: string;
  /** The approvals feed's cursor key in the store. */
  private readonly approvalsKey: string;
  /**
   * The feed is asked for approvals except until this time (by `now`): a coordinator older than them refuses
   * the parameter (400 FEED_BAD_QUERY) and is read without it, as before approvals, for APPROVALS_ASK_AGAIN_MS;
   * then asked again, so a coordinator upgraded while the agent runs delivers them without a restart.
   */
  private approvalsOffUntil = Number.NEGATIVE_INFINITY;
  /** Aborted at stop: the long poll, backoff sleeps, capsule fetches. */
  private readonly stopping = new AbortController();
  /** Aborted a grace after stop: the running step. */
  private readonly abortRun = new AbortController();
  private running: Promise<unknown> | undefined;
  /** The pinned trust's witness keys, replaced in place when the trust moves (the witness submitter holds this array). */
  private readonly witnesses: WitnessKey[];
  /** Fetches and applies newer trust documents when the feed names one (runner/agent/trust-update.ts). */
  private readonly trustFollower: TrustFollower;
  private statusDirty = true;
  private progressReport: Promise<void> | undefined;
  /** Capsules in a row that stopped with an error before they were decided. */
  private runFailures = 0;
  /** Fetches of approvals in a row that got a retryable answer (their backoff). */
  private approvalFetchFailures = 0;
  /** The trust version the feed last named (an approval by a key of a newer version waits for the pin). */
  private feedTrustVersion: number | undefined;
  /** Approvals refused only for the time, by digest, to be decided again at `dueAt` (keepForLater). */
  private readonly later = new Map<string, LaterApproval>();
  private readonly waitingChanges: WaitingChanges;

  constructor(ctx: RunnerContext, options: AgentOptions = {}) {
    const link = ctx.config.coordinator;
    if (link.url === '') {
      throw new OutboxError(
        'OUTBOX_NO_COORDINATOR',
        'No coordinator is configured: set coordinator.url, EDGE_RUNNER_COORDINATOR_URL or --coordinator.',
      );
    }
    this.ctx = ctx;
    this.now = options.now ?? (() => ctx.clock().getTime());
    this.sleep = options.sleep ?? realSleep;
    const random = options.random ?? (() => randomInt(0, 2 ** 32) / 2 ** 32);
    this.backoff = { baseMs: link.backoffBaseMs, capMs: link.backoffCapMs, random };
    this.client = options.client ?? new CoordinatorClient({ settings: link, runnerId: ctx.state.identity.id, key: ctx.state.key, clock: ctx.clock });
    this.feedKey = this.client.baseUrl;
    this.approvalsKey = `${APPROVALS_CURSOR_PREFIX}${this.client.baseUrl}`;
    this.lane = options.lane ?? new RunLane();
    this.waitingChanges = new WaitingChanges(ctx, this.lane, this.now, options.waitingChangesEveryMs);
    this.scheduler = new Scheduler(ctx, {
      lane: this.lane,
      now: this.now,
      sleep: this.sleep,
      ...options.schedule,
      onFiring: (row, outcome) => {
        this.statusDirty = true;
        this.shipper.wake();
        options.schedule?.onFiring?.(row, outcome);
      },
    });
    const identity = { runnerId: ctx.state.identity.id, key: ctx.state.key };
    this.witnesses = witnessKeysOf(ctx.state.trust);
    this.trustFollower = new TrustFollower({
      target: ctx,
      client: this.client,
      logger: ctx.logger.child({ part: 'trust' }),
      clock: ctx.clock,
      // Each decision in the lane (no run decides meanwhile); the fetches outside it.
      exclusive: (decide) => this.lane.exclusive(decide),
      onUpdated: (trust) => {
        // The live context already holds the new document (signers, policy, expiry); the witness keys follow.
        this.witnesses.splice(0, this.witnesses.length, ...witnessKeysOf(trust));
        this.statusDirty = true;
      },
    });
    const witness = new WitnessSubmitter({
      store: ctx.store,
      client: this.client,
      identity,
      witnesses: this.witnesses,
      logger: ctx.logger.child({ part: 'witness' }),
    });
    this.shipper = new Shipper({
      store: ctx.store,
      client: this.client,
      buildRejection: (row) => rejectionFor(ctx.store, identity, row),
      witness,
      backoff: this.backoff,
      now: this.now,
      sleep: this.sleep,
      logger: ctx.logger.child({ part: 'shipper' }),
      // The fleet view should not wait for the next poll to learn that the outbox drained.
      onProgress: () => this.reportProgress(),
    });
  }

  /** Runs until stop(): resolves after the running capsule ended and the outbox was flushed (bounded). */
  async run(): Promise<void> {
    const { logger, config } = this.ctx;
    const shipping = new AbortController();
    const shipper = this.shipper.run(shipping.signal);
    logger.info({ coordinator: this.client.baseUrl, cursor: this.ctx.store.feedCursor(this.feedKey) }, 'agent started');
    const scheduling = this.scheduler.run(this.stopping.signal, this.abortRun.signal);
    try {
      await this.pollLoop();
    } finally {
      // The scheduler stops with the feed (stopping) and lets its running firing end like a feed run does.
      this.stopping.abort();
      await scheduling;
      shipping.abort();
      await shipper;
      // Shipping and the last status report share the flush bound: a coordinator out of reach cannot hold
      // the agent's exit for longer.
      const deadline = this.now() + config.coordinator.flushMs;
      const flushed = await this.shipper.flush(deadline);
      await this.reportStatus(AbortSignal.timeout(Math.min(config.coordinator.requestTimeoutMs, Math.max(100, deadline - this.now()))));
      logger.info({ queued: flushed.queued }, 'agent stopped');
      await this.client.destroy();
    }
  }

  /**
   * Stops: no more polling, no further step starts, the running step gets stopGraceMs to end and is then
   * aborted. A second stop (a second SIGTERM or ^C) aborts the running step at once; the run is recorded and
   * the flush still happens. Returns at once; run() resolves when the agent is done.
   */
  stop(): void {
    if (this.stopping.signal.aborted) {
      if (!this.abortRun.signal.aborted)
        this.ctx.logger.warn({ running: this.running !== undefined }, 'agent stopping now: the running step is aborted');
      this.abortRun.abort();
      return;
    }
    this.ctx.logger.info({ running: this.running !== undefined }, 'agent stopping');
    this.stopping.abort();
    const grace = setTimeout(() => this.abortRun.abort(), this.ctx.config.coordinator.stopGraceMs);
    const done = () => clearTimeout(grace);
    // A run holds the lane, whether the feed's or a scheduled firing: the grace lasts until the lane is free.
    if (this.running || this.lane.busy) this.lane.idle().then(done, done);
    else done();
  }

  get stopped(): boolean {
    return this.stopping.signal.aborted;
  }

  private async pollLoop(): Promise<void> {
    const { store, logger, config } = this.ctx;
    const stop = this.stopping.signal;
    const wait = config.coordinator.pollWaitSeconds;
    let failures = 0;
    let idle = 0;
    // A feed without work (204) names no trust version: a runner that was down while its coordinator moved
    // on asks for pin + 1 once at start (404: there is none), so it catches up before anything arrives.
    await this.followTrust(Number.POSITIVE_INFINITY);
    while (!stop.aborted) {
      await this.takeMovedPin();
      await this.reportStatusIfDue(stop);
      if (stop.aborted) break;
      await this.takeDueApprovals();
      if (stop.aborted) break;
      await this.decideWaitingChanges();
      if (stop.aborted) break;
      const cursor = store.feedCursor(this.feedKey);
      const approvalsCursor = this.now() >= this.approvalsOffUntil ? store.feedCursor(this.approvalsKey) : undefined;
      const askedAt = performance.now();
      const answer = await this.client.work(cursor, wait, stop, approvalsCursor);
      if (stop.aborted) break;
      if (answer.kind === 'permanent' && approvalsCursor !== undefined && this.approvalsRefused(answer.code, approvalsCursor)) continue;
      if (answer.kind !== 'ok') {
        failures += 1;
        const delay = backoffDelayMs(failures, this.backoff, answer.kind === 'retry' ? answer.retryAfterMs : undefined);
        logger.warn({ code: answer.code, status: answer.status, delayMs: delay }, 'work feed not read; will retry');
        await this.sleep(delay, stop);
        continue;
      }
      failures = 0;
      if (answer.value !== null) {
        this.feedTrustVersion = answer.value.trust.version;
        await this.followTrust(answer.value.trust.version);
      }
      if (stop.aborted) break;
      const fresh = answer.value === null ? [] : answer.value.items.filter((item) => item.cursor > cursor);
      const freshApprovals = (answer.value?.approvals ?? []).filter((item) => approvalsCursor !== undefined && item.cursor > approvalsCursor);
      if (fresh.length === 0 && freshApprovals.length === 0) {
        // No new work. A 204 at the end of the wait is the feed working; an answer without new work before
        // the wait is up (a feed that lists only what was decided, a coordinator that ignores `wait`) is
        // backed off like a failure, and even a well-behaved empty poll comes at most once a second: the
        // coordinator cannot turn the agent into a busy loop.
        const elapsed = performance.now() - askedAt;
        if (elapsed < wait * 1000 - 250) {
          idle += 1;
          const delay = backoffDelayMs(idle, this.backoff);
          logger.warn({ code: 'FEED_NO_PROGRESS', cursor, delayMs: delay }, 'work feed answered without new work before its wait; will poll later');
          await this.sleep(delay, stop);
        } else {
          idle = 0;
          if (elapsed < 1000) await this.sleep(1000 - elapsed, stop);
        }
        continue;
      }
      idle = 0;
      let readAgain = false;
      for (const item of fresh) {
        if (stop.aborted) break;
        if (item.cursor <= store.feedCursor(this.feedKey)) continue; // decided already (a feed read twice)
        const decided = await this.takeCapsule(item);
        if (!decided) {
          readAgain = true;
          break; // read the feed again from the stored cursor
        }
      }
      if (readAgain) continue;
      for (const item of freshApprovals) {
        if (stop.aborted) break;
        if (item.cursor <= store.feedCursor(this.approvalsKey)) continue;
        if (!(await this.takeApproval(item))) break;
      }
    }
  }

  /**
   * A feed refusal that is about the approvals parameter, handled so the feed goes on: a coordinator older
   * than approvals (400 FEED_BAD_QUERY) is read without it from now on; an approvals cursor the coordinator
   * never handed out (409 FEED_APPROVALS_CURSOR_AHEAD: its database is an older copy) starts over from 0,
   * which delivers each approval once more at most. True when the feed should be read again at once.
   */
  private approvalsRefused(code: string, cursor: number): boolean {
    const { store, logger } = this.ctx;
    if (code === 'FEED_BAD_QUERY') {
      this.approvalsOffUntil = this.now() + APPROVALS_ASK_AGAIN_MS;
      logger.warn(
        { code, askAgainMs: APPROVALS_ASK_AGAIN_MS },
        'the coordinator does not deliver approvals (it refuses the parameter); the feed is read without them for a while',
      );
      return true;
    }
    if (code === 'FEED_APPROVALS_CURSOR_AHEAD' && cursor > 0) {
      store.setFeedCursor(this.approvalsKey, 0);
      logger.warn({ code, cursor }, 'the approvals cursor is past what the coordinator holds; approvals are read again from the start');
      return true;
    }
    return false;
  }

  /**
   * One approval of the feed: fetched by digest, checked, then decided in the run lane by acceptApproval, and
   * the approvals cursor moved past it. An approval the coordinator answers for good that it will not serve
   * (404: not this runner's) is passed over with a warning: retrying it would hold the feed for ever, and an
   * approver can hand it over by file. One it cannot serve now (a retryable answer) is asked for again after a
   * backoff, from a new read of the feed: the capsules in that answer come first, so an approval the
   * coordinator keeps failing never holds them up. False when the feed should be read again (stopping, a
   * fetch to retry, or the decision failed: a full disk, a store not written).
   */
  private async takeApproval(item: ApprovalItem): Promise<boolean> {
    const { store, logger } = this.ctx;
    const stop = this.stopping.signal;
    const answer = await this.client.approval(item.approval, stop);
    if (stop.aborted) return false;
    if (answer.kind === 'permanent') {
      logger.warn({ approval: item.approval, cursor: item.cursor, code: answer.code, status: answer.status }, 'approval not served; passed over');
      store.setFeedCursor(this.approvalsKey, item.cursor);
      return true;
    }
    if (answer.kind === 'retry') {
      this.approvalFetchFailures += 1;
      const delay = backoffDelayMs(this.approvalFetchFailures, this.backoff, answer.retryAfterMs);
      logger.warn({ approval: item.approval, cursor: item.cursor, code: answer.code, delayMs: delay }, 'approval not fetched; will retry');
      await this.sleep(delay, stop);
      return false;
    }
    this.approvalFetchFailures = 0;
    const taken = answer.value;
    const verified = this.ours(item, taken);
    if (verified === 'later') {
      // Signed by a key the pin does not know while the coordinator names a newer trust version: the runner
      // catches up first (the trust follower), then decides it. Meanwhile the feed is read again, capsules first.
      this.approvalFetchFailures += 1;
      await this.sleep(backoffDelayMs(this.approvalFetchFailures, this.backoff), stop);
      return false;
    }
    if (verified === undefined) {
      this.view.approvalsPassedOver += 1;
      store.setFeedCursor(this.approvalsKey, item.cursor);
      return true;
    }
    const later = { item, bytes: taken, verified, tries: 1 };
    // Refused for the time already (another spelling of it): kept for its time, not refused again.
    if (earlyUntil(this.ctx, verified) !== undefined) {
      this.keepForLater(later);
      store.setFeedCursor(this.approvalsKey, item.cursor);
      return true;
    }
    return this.decideApproval(later, true);
  }

  /**
   * Decides an approval in the run lane with acceptApproval and, for one the feed just brought (`fromFeed`),
   * moves the approvals cursor past it. One refused only for the time (APPROVAL_NOT_YET_VALID: signed ahead of
   * this runner's clock plus the skew) is kept, in this process, to be decided again once the clock reaches
   * it (takeDueApprovals): the feed brings an approval once, and the coordinator would answer its upload
   * again only 'existing'. False when it was not decided (read the feed again).
   */
  private async decideApproval(later: LaterApproval, fromFeed: boolean): Promise<boolean> {
    const { store, logger } = this.ctx;
    const stop = this.stopping.signal;
    const { item, bytes } = later;
    const run = this.lane.exclusive(async () => {
      if (stop.aborted)
        throw new RunError('RUN_AGENT_STOPPED', 'The agent stopped before the approval was taken; it is read again at the next start.');
      const outcome = await acceptApproval(this.ctx, bytes, 'coordinator', { stopping: stop, signal: this.abortRun.signal });
      if (fromFeed) store.setFeedCursor(this.approvalsKey, item.cursor);
      return outcome;
    });
    this.running = run;
    try {
      const outcome = await run;
      this.view.approvalsTaken += 1;
      this.runFailures = 0;
      if (outcome.status === 'refused' && outcome.code === 'APPROVAL_NOT_YET_VALID') this.keepForLater(later);
      logger.info(
        {
          approval: item.approval,
          cursor: item.cursor,
          proposal: item.proposal,
          status: outcome.status,
          ...(outcome.code !== undefined ? { code: outcome.code } : {}),
          ...(outcome.change !== undefined ? { change: outcome.change.state } : {}),
        },
        'approval decided',
      );
      return true;
    } catch (err) {
      const code = isCodedError(err) ? err.code : 'RUN_INTERNAL';
      logger.error({ approval: item.approval, cursor: item.cursor, code }, 'approval not decided; read again');
      this.runFailures += 1;
      if (!stop.aborted) await this.sleep(backoffDelayMs(this.runFailures, this.backoff), stop);
      return false;
    } finally {
      this.running = undefined;
      this.statusDirty = true;
      this.shipper.wake();
    }
  }

  /**
   * Whether bytes the feed served are an approval this runner is to decide: one signed by an approver key of
   * its pinned trust (verifyApproval, as acceptApproval checks it again) naming this runner; 'later' when the
   * signature does not verify and the feed names a newer trust version than the pin. Anything else is
   * not recorded: a refusal of each would be a log record a coordinator could make the runner append without
   * end (an approval is kept once by its digest, but junk has a new digest every time), and an approval of
   * another runner's proposal is that runner's. Said in the agent's log, and counted in the view.
   */
  private ours(item: ApprovalItem, bytes: Buffer): VerifiedApproval | 'later' | undefined {
    const { state, logger } = this.ctx;
    try {
      const verified = verifyApproval(bytes, state.trust);
      if (verified.predicate.runner === state.identity.id) return verified;
      logger.warn(
        { approval: item.approval, cursor: item.cursor, approver: verified.approver },
        "the feed served an approval of another runner's proposal; passed over",
      );
    } catch (err) {
      if (!(err instanceof ApprovalError)) throw err;
      if (err.code === 'APPROVAL_SIGNATURE' && (this.feedTrustVersion ?? 0) > state.trust.body.version) {
        logger.warn(
          { approval: item.approval, cursor: item.cursor, code: err.code, coordinatorTrustVersion: this.feedTrustVersion },
          'approval signed by a key the pinned trust does not know, under a newer coordinator trust; taken once the pin catches up',
        );
        return 'later';
      }
      logger.warn(
        { approval: item.approval, cursor: item.cursor, code: err.code },
        'the feed served bytes that are not an approval; passed over, not recorded',
      );
    }
    return undefined;
  }

  /**
   * Keeps an approval refused for the time until the runner's clock is past its signing time less the skew
   * (a second after), if that is before it expires; at most LATER_APPROVALS of them and LATER_TRIES decisions
   * each (a clock that went back again), so a coordinator cannot make it a loop or a heap.
   */
  private keepForLater(later: LaterApproval): void {
    const dueAt = validFrom(later.verified);
    const kept = this.later.has(later.verified.digest);
    if (later.tries >= LATER_TRIES || dueAt >= Date.parse(later.verified.predicate.notAfter) || (!kept && this.later.size >= LATER_APPROVALS)) return;
    this.later.set(later.verified.digest, { ...later, tries: later.tries + 1, dueAt });
    this.ctx.logger.info({ approval: later.item.approval, dueAt: new Date(dueAt).toISOString() }, 'approval not yet valid here; decided again then');
  }

  /** Open changes decided again when it is time (runner/agent/waiting-changes.ts), as the lane's run. */
  private async decideWaitingChanges(): Promise<void> {
    const signals = { stopping: this.stopping.signal, signal: this.abortRun.signal };
    try {
      if (!(await this.waitingChanges.decideIfDue(signals, (run) => (this.running = run)))) return;
    } finally {
      this.running = undefined;
    }
    this.statusDirty = true;
    this.shipper.wake();
  }

  /** The approvals kept for later whose time has come, decided again (in the run lane; the cursor stays). */
  private async takeDueApprovals(): Promise<void> {
    const now = this.ctx.clock().getTime();
    for (const [digest, later] of [...this.later]) {
      if (this.stopping.signal.aborted) return;
      if ((later.dueAt ?? 0) > now) continue;
      this.later.delete(digest);
      if (!(await this.decideApproval(later, false))) this.later.set(digest, later);
    }
  }

  /**
   * One feed item: fetched (retried with backoff until it comes or the agent stops), then run. True when
   * the capsule was decided (accepted and run, or rejected); false when the feed should be read again.
   */
  private async takeCapsule(item: WorkItem): Promise<boolean> {
    const { store, logger, state } = this.ctx;
    const stop = this.stopping.signal;
    const limit = state.trust.body.policy.maxCapsuleBytes ?? CAPSULE_MAX_BYTES;
    let bytes: Buffer | undefined;
    let size: number | undefined;
    if (item.size > limit) {
      // Over the cap: not fetched. Enough bytes for acceptance to refuse it by size, and its size recorded.
      bytes = Buffer.alloc(limit + 1);
      size = item.size;
    }
    for (let failures = 1; bytes === undefined; failures++) {
      const answer = await this.client.capsule(item.capsule, stop);
      if (stop.aborted) return false;
      if (answer.kind === 'ok') {
        bytes = answer.value;
        break;
      }
      const delay = backoffDelayMs(failures, this.backoff, answer.kind === 'retry' ? answer.retryAfterMs : undefined);
      logger.warn({ capsule: item.capsule, cursor: item.cursor, code: answer.code, delayMs: delay }, 'capsule not fetched; will retry');
      await this.sleep(delay, stop);
      if (stop.aborted) return false;
    }
    if (stop.aborted) return false; // stopping: nothing new starts (runCapsule decides synchronously below)
    // One run at a time across the agent: a scheduled firing holding the lane goes first.
    const run = this.lane.exclusive(() =>
      stop.aborted
        ? Promise.reject(new RunError('RUN_AGENT_STOPPED', 'The agent stopped before the capsule was taken; it is read again at the next start.'))
        : runCapsule(this.ctx, bytes, {
            ...(size !== undefined ? { size } : {}),
            decided: () => store.setFeedCursor(this.feedKey, item.cursor),
            // At stop no further step starts; the grace covers the running step only, then `signal` aborts it.
            stopping: stop,
            signal: this.abortRun.signal,
          }),
    );
    this.running = run;
    try {
      const outcome = await run;
      if (outcome.kind === 'scheduled') this.scheduler.wake();
      this.view.capsulesRun += 1;
      this.runFailures = 0;
      logger.info(
        {
          capsule: item.capsule,
          cursor: item.cursor,
          outcome: outcome.kind,
          ...(outcome.kind === 'rejected'
            ? { code: outcome.code }
            : outcome.kind === 'scheduled'
              ? { cron: outcome.cron }
              : { verdict: outcome.verdict }),
        },
        'capsule decided',
      );
      return true;
    } catch (err) {
      const code = isCodedError(err) ? err.code : 'RUN_INTERNAL';
      const decided = store.feedCursor(this.feedKey) >= item.cursor;
      logger.error({ capsule: item.capsule, cursor: item.cursor, code, decided }, 'capsule stopped with an error');
      // Not decided (a full disk, an expired pin, a store that cannot be written): the capsule is read again
      // after a backoff that grows while the failure lasts.
      this.runFailures = decided ? 0 : this.runFailures + 1;
      if (!decided && !stop.aborted) await this.sleep(backoffDelayMs(this.runFailures, this.backoff), stop);
      return decided;
    } finally {
      this.running = undefined;
      this.statusDirty = true;
      this.shipper.wake();
    }
  }

  /**
   * The feed's trust version against the pin: a newer one is fetched and applied step by step under TUF's
   * rule before any capsule of this feed answer is taken (they may need the new signers), each step decided
   * in the lane (no run decides meanwhile) and fetched outside it (a slow coordinator does not hold up a
   * scheduled run); an older one is only reported, the pin never goes back.
   */
  private async followTrust(version: number): Promise<void> {
    if (version > this.ctx.state.trust.body.version) {
      try {
        await this.trustFollower.follow(version, this.stopping.signal);
      } catch (err) {
        // A store that cannot record the decision: nothing moved; the next feed answer tries again.
        this.ctx.logger.error({ code: isCodedError(err) ? err.code : 'RUN_INTERNAL' }, 'trust update not applied');
      }
    }
    if (Number.isSafeInteger(version)) this.noteTrustVersion(version);
  }

  /**
   * A pin moved by `edge-runner trust update` while the agent runs is taken at the next poll, in the lane (no
   * run decides meanwhile), before the feed's capsules.
   */
  private async takeMovedPin(): Promise<void> {
    if (movedPin(this.ctx.state) === undefined) return;
    await this.lane.exclusive(() => this.reloadPin());
  }

  private reloadPin(): void {
    try {
      const moved = reloadMovedPin(this.ctx, this.ctx.clock());
      if (moved === undefined) return;
      this.witnesses.splice(0, this.witnesses.length, ...witnessKeysOf(moved));
      this.statusDirty = true;
      this.ctx.logger.info({ trustVersion: moved.body.version }, 'trust pin moved by trust update; the agent follows it');
    } catch (err) {
      this.ctx.logger.error({ code: isCodedError(err) ? err.code : 'STATE_TRUST_INVALID' }, 'trust pin moved on disk but cannot be loaded');
    }
  }

  /** The feed's trust version against the pinned one: logged when it changes. */
  private noteTrustVersion(version: number): void {
    const own = this.ctx.state.trust.body.version;
    const relation = version === own ? 'same' : version < own ? 'older' : 'newer';
    if (this.view.coordinatorTrust?.version !== version) {
      const log = relation === 'same' ? this.ctx.logger.info.bind(this.ctx.logger) : this.ctx.logger.warn.bind(this.ctx.logger);
      log(
        { coordinatorTrustVersion: version, pinnedTrustVersion: own, relation },
        relation === 'same' ? 'coordinator trust matches the pin' : `coordinator trust is ${relation} than the pin; keeping the pin`,
      );
      this.statusDirty = true;
    }
    this.view.coordinatorTrust = { version, relation };
  }

  /** A status report now, unless one is on its way (shipping progressed while the feed's long poll waits). */
  private reportProgress(): void {
    this.statusDirty = true;
    if (this.progressReport !== undefined || this.stopping.signal.aborted) return;
    this.progressReport = this.reportStatus(this.stopping.signal)
      .catch((err: unknown) => this.ctx.logger.warn({ code: isCodedError(err) ? err.code : 'OUTBOX_STATUS_FAILED' }, 'status not reported'))
      .finally(() => {
        this.progressReport = undefined;
      });
  }

  private async reportStatusIfDue(signal: AbortSignal): Promise<void> {
    const every = Math.max(1000, this.ctx.config.coordinator.pollWaitSeconds * 1000);
    // A negative age is a clock that jumped back: reported now, not once the clock has caught up.
    const age = this.view.lastStatusAt === undefined ? undefined : this.now() - this.view.lastStatusAt;
    if (!this.statusDirty && age !== undefined && age >= 0 && age < every) return;
    await this.reportStatus(signal);
  }

  private async reportStatus(signal: AbortSignal): Promise<void> {
    const report = statusReportOf(this.ctx, this.now(), this.view.coordinatorTrust?.version);
    guardStatusReport(report, this.ctx);
    const answer = await this.client.status(report, signal);
    if (answer.kind === 'ok') {
      this.view.lastStatusAt = this.now();
      this.statusDirty = false;
    } else {
      this.ctx.logger.warn({ code: answer.code }, 'status not reported');
    }
  }
}

/**
 * The status the runner reports: counts, sizes, its version, labels, its trust version and (once the feed
 * named it) the coordinator's; nothing else.
 */
export function statusReportOf(ctx: RunnerContext, nowMs: number, coordinatorTrustVersion?: number): RunnerStatusReport {
  const { store, state } = ctx;
  const stats = store.outboxStats();
  const witnesses = witnessKeysOf(state.trust);
  return {
    version: RUNNER_VERSION,
    labels: [...state.identity.labels],
    trustVersion: state.trust.body.version,
    logSize: store.merkle.size(),
    witnessedSize: Math.max(0, ...witnesses.map((w) => store.witnessedSize(w.name))),
    outboxDepth: stats.queued,
    oldestQueuedSeconds: stats.oldestQueuedAt === null ? 0 : Math.max(0, Math.floor((nowMs - stats.oldestQueuedAt) / 1000)),
    deadLetters: stats.dead,
    ...(coordinatorTrustVersion !== undefined ? { coordinatorTrustVersion } : {}),
  };
}

/**
 * The egress guard for the status report (DESIGN.md rule 3): the closed wire schema (a strict round trip
 * through runner/protocol/wire.ts), every number a non-negative integer, and the only strings the runner's
 * own version and labels.
 */
export function guardStatusReport(report: RunnerStatusReport, ctx: RunnerContext): void {
  const refuse = (why: string) => new OutboxError('EGRESS_STATUS', `The status report is refused by the egress guard: ${why}.`);
  let parsed: RunnerStatusReport;
  try {
    parsed = parseStatusReport(formatStatusReport(report));
  } catch (err) {
    throw refuse(`it does not match the closed schema (${isCodedError(err) ? err.code : 'invalid'})`);
  }
  const keys = Object.keys(parsed)
    .filter((key) => key !== 'coordinatorTrustVersion')
    .sort()
    .join(',');
  if (keys !== 'deadLetters,labels,logSize,oldestQueuedSeconds,outboxDepth,trustVersion,version,witnessedSize') throw refuse('it has other members');
  for (const name of [
    'trustVersion',
    'logSize',
    'witnessedSize',
    'outboxDepth',
    'oldestQueuedSeconds',
    'deadLetters',
    'coordinatorTrustVersion',
  ] as const) {
    const value = parsed[name];
    if (value === undefined && name === 'coordinatorTrustVersion') continue;
    if (!Number.isSafeInteger(value) || value! < 0) throw refuse(`${name} is not a count`);
  }
  if (parsed.version !== RUNNER_VERSION) throw refuse('the version is not the runner’s');
  const own = new Set(ctx.state.identity.labels);
  if (!parsed.labels.every((label) => own.has(label))) throw refuse('a label is not one of the runner’s');
}
