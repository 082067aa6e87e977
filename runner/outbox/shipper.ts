/**
 * The shipper: moves the outbox (runner/store/outbox.ts) to the coordinator's inbox, one row at a time, and
 * never more than one body in memory. A rejection's row gets its document the first time it is sent
 * (runner/agent/answers.ts) and keeps those bytes for every retry. Each answer is classified once
 * (classify.ts): an ack settles the row (Store.outboxAck, with a record), a permanent refusal dead-letters it
 * with its code (Store.outboxDead, once, never retried), anything else puts it back with a delay.
 *
 * A retryable failure also pauses the shipper as a whole for that delay (capped exponential backoff with full
 * jitter, at least the Retry-After): when the coordinator is down, 10,000 queued bundles cost one request per
 * backoff period, not 10,000. The clock and the sleep are injected, so an outage of hours is a fast test.
 * After shipping, the latest checkpoint goes to the witness (witness.ts).
 */
import type { CoordinatorClient } from '../api/client.js';
import type { Logger } from '../agent/logger.js';
import { isCodedError } from '../core/errors.js';
import type { OutboxRow, Store } from '../store/store.js';
import { backoffDelayMs, type Answer, type BackoffPolicy } from './classify.js';
import type { WitnessSubmitter } from './witness.js';

/** Sleeps `ms`, or less when `signal` aborts (then it resolves, never rejects). */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

export const realSleep: Sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, Math.max(0, Math.min(ms, 2 ** 31 - 1)));
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

export interface ShipperOptions {
  store: Store;
  client: Pick<CoordinatorClient, 'putBundle' | 'putRejection'>;
  /** The document of a rejection row whose body is still null. */
  buildRejection: (row: OutboxRow) => { bytes: Buffer; digest: string };
  witness?: WitnessSubmitter;
  backoff: BackoffPolicy;
  /** Milliseconds since the epoch. */
  now: () => number;
  sleep: Sleep;
  logger: Logger;
  /** Called after a round of shipping that settled a row or got a cosignature (the agent reports its status). */
  onProgress?: () => void;
}

export type ShipResult = 'acked' | 'dead' | 'retry' | 'idle';

export class Shipper {
  /** Retryable failures in a row; the backoff grows with it and an ack resets it. */
  private failures = 0;
  /** No request before this time (ms): the shipper as a whole is backing off. */
  private pausedUntil = 0;
  private witnessFailures = 0;
  private witnessPausedUntil = 0;
  /** Something was acked since the last cosigned checkpoint. */
  private witnessDue = true;
  private wakeUp: AbortController | undefined;
  /** Rows settled and checkpoints cosigned so far: a round that moves it is progress worth reporting. */
  private progress = 0;

  constructor(private readonly options: ShipperOptions) {}

  /** The time (ms) until which the shipper is backing off; 0 when it is not. */
  get backingOffUntil(): number {
    return this.pausedUntil;
  }

  /** New rows were queued: a shipper waiting for its next due row looks again now. */
  wake(): void {
    this.wakeUp?.abort();
  }

  /** Ships until `signal` aborts: due rows one at a time, the witness after shipping, then waits for more. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const before = this.progress;
      try {
        await this.pass(signal);
        if (signal.aborted) break;
        await this.witnessIfDue(signal);
      } catch (err) {
        this.storeFailed(err);
      }
      if (this.progress !== before) this.options.onProgress?.();
      if (signal.aborted) break;
      // Woken by wake() or by the stop signal, whichever comes first (listeners removed after: no leak
      // across thousands of waits on one long-lived signal).
      const wake = new AbortController();
      const onStop = () => wake.abort();
      signal.addEventListener('abort', onStop, { once: true });
      this.wakeUp = wake;
      try {
        await this.options.sleep(this.idleMs(), wake.signal);
      } finally {
        this.wakeUp = undefined;
        signal.removeEventListener('abort', onStop);
      }
    }
  }

  /**
   * Ships what can be shipped before `deadlineMs` (an agent stopping): due rows, waiting out backoffs that
   * end before the deadline, then the witness. Resolves when the outbox is empty or the deadline is reached.
   */
  async flush(deadlineMs: number): Promise<{ queued: number }> {
    const { store, now } = this.options;
    // A request in flight at the deadline is aborted: the bound holds even against a coordinator that hangs.
    const bound = new AbortController();
    const timer = setTimeout(() => bound.abort(), Math.max(0, deadlineMs - now()));
    const signal = bound.signal;
    try {
      while (now() < deadlineMs && !signal.aborted) {
        await this.pass(signal, deadlineMs);
        if (store.outboxStats().queued === 0) break;
        const wakeAt = Math.max(this.pausedUntil, this.dueAt() ?? 0);
        if (wakeAt >= deadlineMs) break;
        await this.options.sleep(Math.max(0, wakeAt - now()), signal);
      }
      if (now() < deadlineMs && !signal.aborted) await this.witnessIfDue(signal);
    } catch (err) {
      // The store refused a write (a full disk): what is not recorded as acked is sent again at the next start.
      this.storeFailed(err);
    } finally {
      clearTimeout(timer);
    }
    try {
      return { queued: store.outboxStats().queued };
    } catch {
      return { queued: -1 };
    }
  }

  /**
   * The store failed under the shipper (a full disk, a locked database): not the coordinator's doing and
   * not a reason to stop shipping for good. Logged, and the shipper backs off as after a failed attempt;
   * a row whose ack could not be recorded is sent again, and the coordinator answers it "existing".
   */
  private storeFailed(err: unknown): void {
    const code = isCodedError(err) ? err.code : 'OUTBOX_STORE_FAILED';
    this.failures += 1;
    const delay = backoffDelayMs(this.failures, this.options.backoff);
    this.pausedUntil = this.options.now() + delay;
    this.options.logger.error({ code, delayMs: delay }, 'the outbox could not be read or written; will retry');
  }

  /**
   * The earliest queued row's due time, for waiting. A due time further ahead than any backoff can put it
   * (the cap) comes from a clock that has since jumped back: that row is due now, not in a year.
   */
  private dueAt(): number | undefined {
    const due = this.options.store.outboxNextDueAt();
    if (due === undefined) return undefined;
    const now = this.options.now();
    return due - now > this.options.backoff.capMs ? now : due;
  }

  /** A pause that ends further ahead than the cap was set by a clock that has since jumped back: it is over. */
  private unpauseAfterClockJump(): void {
    const now = this.options.now();
    const cap = this.options.backoff.capMs;
    if (this.pausedUntil - now > cap) this.pausedUntil = 0;
    if (this.witnessPausedUntil - now > cap) this.witnessPausedUntil = 0;
  }

  /** Ships due rows until none is due or one fails retryably (then the shipper backs off). */
  async pass(signal?: AbortSignal, deadlineMs = Number.POSITIVE_INFINITY): Promise<void> {
    while (!signal?.aborted && this.options.now() < deadlineMs) {
      const result = await this.shipOne(signal);
      if (result === 'idle' || result === 'retry') return;
    }
  }

  /** One due row (if any, and not backing off) to the coordinator, and its answer recorded. */
  async shipOne(signal?: AbortSignal): Promise<ShipResult> {
    const { store, now, logger } = this.options;
    this.unpauseAfterClockJump();
    if (now() < this.pausedUntil) return 'idle';
    let row = store.outboxNext(now());
    if (row === undefined) {
      // Rows put off by a clock that has since jumped back are due now (dueAt), oldest due first.
      const due = this.dueAt();
      if (due !== undefined && due <= now()) row = store.outboxNext(store.outboxNextDueAt()!);
    }
    if (row === undefined) return 'idle';
    const content = this.contentOf(row);
    if (content === undefined) return 'retry';
    const answer =
      row.kind === 'bundle'
        ? await this.options.client.putBundle(content.digest, content.bytes, signal)
        : await this.options.client.putRejection(content.digest, content.bytes, signal);
    return this.settle(row, content.digest, answer, logger);
  }

  /** The bytes a row sends: its body, or for a rejection not yet made, its document made now and kept. */
  private contentOf(row: OutboxRow): { digest: string; bytes: Buffer } | undefined {
    if (row.body !== null && row.digest !== null) return { digest: row.digest, bytes: row.body };
    const { store, logger } = this.options;
    try {
      const built = this.options.buildRejection(row);
      store.outboxSetBody(row.id, built.digest, built.bytes);
      // Read back: if another process gave the row its body first, those bytes are the ones sent.
      const kept = store.outboxRow(row.id);
      if (kept?.body && kept.digest) return { digest: kept.digest, bytes: kept.body };
      return { digest: built.digest, bytes: built.bytes };
    } catch (err) {
      // Not the coordinator's doing, and not to be dropped: the row stays queued with the code, and is
      // tried again after a long wait (status shows it as queued; the operator log says why).
      const code = isCodedError(err) ? err.code : 'OUTBOX_ANSWER_UNAVAILABLE';
      logger.error({ code, outboxId: row.id, recordSeq: row.recordSeq }, 'the rejection document cannot be made');
      store.outboxRetry(row.id, this.options.now() + this.options.backoff.capMs, code);
      return undefined;
    }
  }

  private settle(row: OutboxRow, digest: string, answer: Answer<{ stored: 'created' | 'existing' }>, logger: Logger): ShipResult {
    const { store, now } = this.options;
    switch (answer.kind) {
      case 'ok':
        store.outboxAck(row.id, answer.value.stored);
        this.progress += 1;
        this.failures = 0;
        this.pausedUntil = 0;
        this.witnessDue = true;
        logger.info({ outboxId: row.id, answer: row.kind, digest, stored: answer.value.stored }, 'answer delivered');
        return 'acked';
      case 'permanent':
        store.outboxDead(row.id, answer.code);
        this.progress += 1;
        this.failures = 0;
        logger.error(
          { outboxId: row.id, answer: row.kind, digest, code: answer.code, status: answer.status },
          'answer refused for good: dead letter',
        );
        return 'dead';
      case 'retry': {
        // Aborted by the agent itself (stopping): not the coordinator's failure; the row is untouched and
        // the flush that follows sends it again at once.
        if (answer.code === 'API_ABORTED') return 'idle';
        this.failures += 1;
        const delay = backoffDelayMs(this.failures, this.options.backoff, answer.retryAfterMs);
        const at = now() + delay;
        store.outboxRetry(row.id, at, answer.code);
        this.pausedUntil = at;
        logger.warn(
          { outboxId: row.id, answer: row.kind, code: answer.code, status: answer.status, delayMs: delay, attempts: row.attempts + 1 },
          'answer not delivered; will retry',
        );
        return 'retry';
      }
    }
  }

  /** Submits the latest checkpoint when something was shipped since the last cosignature (and not backing off). */
  async witnessIfDue(signal?: AbortSignal): Promise<void> {
    const { witness } = this.options;
    this.unpauseAfterClockJump();
    if (!witness || !this.witnessDue || this.options.now() < this.witnessPausedUntil || this.options.now() < this.pausedUntil) return;
    const outcome = await witness.submit(signal);
    if (outcome.kind === 'retry' && outcome.code === 'API_ABORTED') return; // the agent is stopping; tried again in the flush
    if (outcome.kind === 'cosigned') this.progress += 1;
    if (outcome.kind === 'cosigned' || outcome.kind === 'current') {
      this.witnessDue = false;
      this.witnessFailures = 0;
      return;
    }
    this.witnessFailures += 1;
    const delay = backoffDelayMs(this.witnessFailures, this.options.backoff, outcome.kind === 'retry' ? outcome.retryAfterMs : undefined);
    this.witnessPausedUntil = this.options.now() + (outcome.kind === 'refused' ? this.options.backoff.capMs : delay);
  }

  /** How long to wait before looking again: until the next due row or the end of a backoff, at most a minute. */
  private idleMs(): number {
    const now = this.options.now();
    const due = this.dueAt();
    let wakeAt = now + 60_000;
    if (due !== undefined) wakeAt = Math.min(wakeAt, Math.max(due, this.pausedUntil));
    if (this.witnessDue && this.options.witness) wakeAt = Math.min(wakeAt, Math.max(this.witnessPausedUntil, this.pausedUntil, now + 1));
    return Math.max(1, wakeAt - now);
  }
}
