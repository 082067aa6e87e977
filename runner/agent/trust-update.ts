/**
 * Trust rotation: moving the runner's pin to the next trust document, from a file (`edge-runner trust
 * update`) or from the coordinator (the agent, when the feed names a newer version). Both go through
 * applyTrustUpdate, in this order:
 *
 *   1. TUF's rule (runner/trust/trust.ts verifyTrustUpdate): signed by a threshold of the pinned root keys,
 *      version exactly one more (lower or equal: TRUST_ROLLBACK; further: TRUST_VERSION_SKIP; a document
 *      offered as one version carrying a higher one: TRUST_FAST_FORWARD), signed by a threshold of its own
 *      root keys, not expired; and the runner's key holds no role but `runner` in it. A refusal is recorded
 *      (trust.refused with its code) and the pin stays.
 *   2. The document is kept in the history (`trust/<version>.dsse.json`), the pinned one too if it is not
 *      there yet (state folders made before the history existed).
 *   3. trust.updated is recorded: no record, no effect.
 *   4. The pin moves (runner/state/state.ts moveTrustPin: trust.dsse.json, then runner.json, each renamed
 *      whole) and the live state switches to the new document.
 *
 * A crash anywhere leaves a state that the next open (finishTrustUpdate, from openRunner) finishes or refuses:
 * the kept document of pin + 1 with a trust.updated record naming its digest is finished; kept without the
 * record (verified, never recorded) it is removed; trust.dsse.json one verified step ahead of runner.json is
 * finished when the log recorded it and refused (STATE_TRUST_MISMATCH) when it did not.
 */
import { readFileSync, rmSync } from 'node:fs';
import { sha256Hex } from '../core/digest.js';
import { isCodedError } from '../core/errors.js';
import { parseRecordLeaf, type RecordBodies } from '../log/record.js';
import { StateError } from '../state/errors.js';
import { historyPath, keepTrustHistory, loadState, moveTrustPin, readTrustHistory, type RunnerState } from '../state/state.js';
import type { CoordinatorClient } from '../api/client.js';
import { TRUST_STEPS_PER_FEED } from '../protocol/wire.js';
import type { Store } from '../store/store.js';
import type { Logger } from './logger.js';
import { TrustError } from '../trust/errors.js';
import { claimedTrustVersion, verifyTrustUpdate, type VerifiedTrust } from '../trust/trust.js';

/** Where an update came from, as trust.updated and trust.refused record it. */
export type TrustSource = 'file' | 'coordinator';

/** What an update acts on: the live state (switched in place) and the store its records go to. */
export interface TrustTarget {
  readonly state: RunnerState;
  readonly store: Store;
}

export type TrustUpdateResult =
  | {
      kind: 'updated';
      fromVersion: number;
      toVersion: number;
      trustDigest: string;
      /**
       * Whether the new document still enrols this runner's key under the runner role and its id. A key taken
       * out is the roots' revocation: accepted (refusing would keep the runner on the roots and signers they
       * replaced), and said, since nothing this runner signs verifies any more.
       */
      runnerEnrolled: boolean;
    }
  /** The bytes are the pinned document itself: nothing to do, nothing recorded. */
  | { kind: 'unchanged'; version: number; trustDigest: string };

export interface TrustUpdateOptions {
  source: TrustSource;
  /** One clock reading for the decision (the new document's expiry). */
  now: Date;
  /** The version the coordinator served the document as (GET /v1/trust/{version}). */
  offeredVersion?: number;
  /**
   * Whether a refusal with this code is recorded (default: always). The follower records each code once per
   * version it asks for: a coordinator serving other refused bytes at every feed answer cannot grow the log.
   */
  recordRefusal?(code: string): boolean;
}

/**
 * Verifies `bytes` as the pinned document's successor, records the decision, and moves the pin (see the top
 * of this file). Throws the refusal's coded error after recording trust.refused.
 */
export function applyTrustUpdate(target: TrustTarget, bytes: Buffer, options: TrustUpdateOptions): TrustUpdateResult {
  const { state, store } = target;
  const trustDigest = `sha256:${sha256Hex(bytes)}`;
  const from = state.trust.body.version;
  // The pinned document given again as a file changes nothing; served as the next version it is a rollback.
  if (options.offeredVersion === undefined && trustDigest === `sha256:${state.identity.trustSha256}`) {
    return { kind: 'unchanged', version: from, trustDigest };
  }
  let next: VerifiedTrust;
  try {
    next = verifyTrustUpdate(state.trust, bytes, options.now, options.offeredVersion !== undefined ? { offeredVersion: options.offeredVersion } : {});
    verifyRunnerRole(next, state);
  } catch (err) {
    const code = isCodedError(err) ? err.code : 'TRUST_UNPARSEABLE';
    const toVersion = claimedTrustVersion(bytes) ?? options.offeredVersion;
    if (options.recordRefusal && !options.recordRefusal(code)) throw err;
    store.appendRecord('trust.refused', { code, trustDigest, source: options.source, ...(toVersion !== undefined ? { toVersion } : {}) });
    throw err;
  }
  keepTrustHistory(state.layout, from, pinnedBytes(state));
  keepTrustHistory(state.layout, next.body.version, bytes);
  store.appendRecord('trust.updated', { fromVersion: from, toVersion: next.body.version, trustDigest, source: options.source });
  moveTrustPin(state, bytes, next);
  return { kind: 'updated', fromVersion: from, toVersion: next.body.version, trustDigest, runnerEnrolled: isEnrolled(state) };
}

export type TrustFinish = { kind: 'none' } | { kind: 'finished'; toVersion: number } | { kind: 'discarded'; version: number };

/**
 * At open: finishes a trust update that a crash cut short, or refuses to go on (see the top of this file).
 * Cheap when there is nothing to finish: one look for the kept document of pin + 1.
 */
export function finishTrustUpdate(target: TrustTarget, options: { discard?: boolean } = {}): TrustFinish {
  const { state, store } = target;
  const pinned = state.trust.body.version;
  const pending = state.pendingTrust;
  if (pending !== undefined) {
    const recorded = lastUpdate(store);
    const digest = `sha256:${sha256Hex(pending.bytes)}`;
    if (recorded?.trustDigest !== digest || recorded.toVersion !== pending.trust.body.version) {
      throw new StateError(
        'STATE_TRUST_MISMATCH',
        `${state.layout.trust} is version ${pending.trust.body.version}, signed as the successor of the pinned version ${pinned}, but the log records no update to it; nothing moves without a record. Copy ${historyPath(state.layout, pinned)} back to ${state.layout.trust}, then apply the new document with edge-runner trust update.`,
        { pinned: state.identity.trustSha256 ?? '', actual: sha256Hex(pending.bytes) },
      );
    }
    keepTrustHistory(state.layout, pending.trust.body.version, pending.bytes);
    moveTrustPin(state, pending.bytes, pending.trust);
    return { kind: 'finished', toVersion: pending.trust.body.version };
  }
  const kept = readTrustHistory(state.layout, pinned + 1);
  if (kept === undefined) return { kind: 'none' };
  const recorded = lastUpdate(store);
  if (recorded?.fromVersion === pinned && recorded.toVersion === pinned + 1 && recorded.trustDigest === `sha256:${sha256Hex(kept)}`) {
    // Recorded when it verified; its expiry is not what decides now (the record did), its signatures still are.
    moveTrustPin(state, kept, verifyTrustUpdate(state.trust, kept, undefined));
    return { kind: 'finished', toVersion: pinned + 1 };
  }
  // Verified and kept, then the process died before the record: never decided, so it is not history. (A live
  // agent does not discard: a `trust update` of another process may be between keeping and recording.)
  if (options.discard === false) return { kind: 'none' };
  rmSync(historyPath(state.layout, pinned + 1), { force: true });
  return { kind: 'discarded', version: pinned + 1 };
}

/**
 * The pin moved on disk by another process (`edge-runner trust update` while the agent runs): when runner.json
 * pins other bytes than the live state and the log's last trust.updated names them, the state folder is
 * loaded again (every check of an open) and the live state takes its trust. Returns the new trust, if any.
 * Reads runner.json only (a few hundred bytes) when nothing moved.
 */
export function reloadMovedPin(target: TrustTarget, now: Date): VerifiedTrust | undefined {
  const { state, store } = target;
  const pinned = movedPin(state);
  if (pinned === undefined) return undefined;
  if (lastUpdate(store)?.trustDigest !== `sha256:${pinned}`) return undefined;
  const fresh = loadState(state.layout.dir, now, { trustExpiry: 'ignore' });
  if (fresh.identity.trustSha256 !== pinned || fresh.trust.body.version <= state.trust.body.version) return undefined;
  state.identity = fresh.identity;
  state.trust = fresh.trust;
  return fresh.trust;
}

/** The digest runner.json pins when it is not the live state's (a cheap look: one small file read). */
export function movedPin(state: RunnerState): string | undefined {
  try {
    const pinned = (JSON.parse(readFileSync(state.layout.config, 'utf8')) as { trustSha256?: unknown }).trustSha256;
    return typeof pinned === 'string' && pinned !== state.identity.trustSha256 ? pinned : undefined;
  } catch {
    return undefined; // unreadable now: the next look, or the next open, decides
  }
}

function lastUpdate(store: Store): RecordBodies['trust.updated'] | undefined {
  const record = store.lastTrustUpdated();
  if (record === undefined) return undefined;
  const parsed = parseRecordLeaf(record.leaf, record.seq);
  return parsed.kind === 'trust.updated' ? parsed.body : undefined;
}

/** The pinned document's bytes, which must still be the ones runner.json pins. */
function pinnedBytes(state: RunnerState): Buffer {
  const bytes = readFileSync(state.layout.trust);
  const actual = sha256Hex(bytes);
  if (actual !== state.identity.trustSha256) {
    throw new StateError('STATE_TRUST_MISMATCH', `${state.layout.trust} is not the trust document this runner pinned (sha256 ${actual}).`, {
      pinned: state.identity.trustSha256 ?? '',
      actual,
    });
  }
  return bytes;
}

/** Whether the pinned document enrols this runner's key under the runner role, by its runner id. */
export function isEnrolled(state: RunnerState): boolean {
  return state.trust.keyByName(state.identity.id, 'runner')?.keyid === state.key.keyid;
}

export const RUNNER_NOT_ENROLLED =
  "the new trust document does not enrol this runner's key under its runner id: its evidence and requests no longer verify";

/** As loadState requires of the pinned document: the runner's key holds the runner role only. */
function verifyRunnerRole(next: VerifiedTrust, state: RunnerState): void {
  const roles = next.body.keys[state.key.keyid]?.roles.filter((role) => role !== 'runner') ?? [];
  if (roles.length > 0) {
    throw new TrustError(
      'TRUST_ROLE_CONFLICT',
      `The new trust document enrols this runner's key as ${roles.join(', ')}; a runner key holds only the runner role.`,
      {
        keyid: state.key.keyid,
      },
    );
  }
}

export interface TrustFollowerOptions {
  target: TrustTarget;
  client: Pick<CoordinatorClient, 'trust'>;
  logger: Logger;
  clock: () => Date;
  /** Called after each step the pin moved (the agent switches its witness keys and reports its status). */
  onUpdated(trust: VerifiedTrust, result: Extract<TrustUpdateResult, { kind: 'updated' }>): void;
  /**
   * Runs each decision (finishing, applying) in the agent's run lane, so no run decides meanwhile. Fetches
   * happen outside it: a coordinator that drips a document for the whole request timeout holds nothing.
   */
  exclusive?<T>(decide: () => T): Promise<T>;
}

/**
 * The agent's side of rotation: when the feed names a trust version above the pin, fetches pin + 1, + 2, ...
 * (`GET /v1/trust/{version}`) and applies each as the coordinator's (applyTrustUpdate), at most
 * TRUST_STEPS_PER_FEED per feed answer. A fetch that fails stops the walk until the next feed answer; a
 * refusal stops it too, and is recorded once per code for the version asked for: the same bytes again are
 * not verified again, and other bytes refused for the same reason are logged, not recorded (a hostile
 * coordinator serving fresh garbage at every feed answer would otherwise add a record a second, forever).
 * What is remembered is bounded and forgotten when the pin moves.
 */
export class TrustFollower {
  private readonly refused = new Set<string>();
  private readonly recordedCodes = new Set<string>();
  private rememberedFor: number | undefined;

  constructor(private readonly options: TrustFollowerOptions) {}

  /** Walks towards `advertised` (Infinity: as far as the coordinator serves); returns the pinned version it reached. */
  async follow(advertised: number, signal: AbortSignal): Promise<number> {
    const { target, client, logger } = this.options;
    const exclusive = this.options.exclusive ?? (async <T>(decide: () => T) => decide());
    // A move of this process that failed after its record (a full disk between the renames) is finished
    // first, so the same update is not recorded twice.
    await exclusive(() => this.finishOwn());
    for (let steps = 0; steps < TRUST_STEPS_PER_FEED && !signal.aborted; steps++) {
      const pinned = target.state.trust.body.version;
      if (advertised <= pinned) break;
      const version = pinned + 1;
      this.forgetUnless(version);
      const answer = await client.trust(version, signal);
      if (answer.kind !== 'ok') {
        if (answer.kind === 'permanent' && answer.status === 404)
          logger.debug({ trustVersion: version, code: answer.code }, 'no newer trust document at the coordinator');
        else logger.warn({ trustVersion: version, code: answer.code }, 'trust document not fetched; the pin stays until the next feed answer');
        break;
      }
      // The pin may have moved while the lane was free (a trust update by hand, taken meanwhile): look again.
      const moved = await exclusive(() => (target.state.trust.body.version === pinned ? this.decide(version, answer.value) : 'moved'));
      if (moved !== 'moved' && moved !== 'updated') break;
    }
    return target.state.trust.body.version;
  }

  private finishOwn(): void {
    const { target, logger, onUpdated } = this.options;
    const finished = finishTrustUpdate(target, { discard: false });
    if (finished.kind !== 'finished') return;
    logger.warn({ toVersion: finished.toVersion }, 'trust update recorded earlier finished now');
    onUpdated(target.state.trust, {
      kind: 'updated',
      fromVersion: finished.toVersion - 1,
      toVersion: finished.toVersion,
      trustDigest: `sha256:${target.state.identity.trustSha256}`,
      runnerEnrolled: isEnrolled(target.state),
    });
  }

  /** Applies the document fetched for `version` (in the lane); what the walk does next. */
  private decide(version: number, bytes: Buffer): 'updated' | 'stop' {
    const { target, logger, clock, onUpdated } = this.options;
    const digest = `sha256:${sha256Hex(bytes)}`;
    if (this.refused.has(digest)) return 'stop';
    try {
      const result = applyTrustUpdate(target, bytes, {
        source: 'coordinator',
        now: clock(),
        offeredVersion: version,
        recordRefusal: (code) => !this.recordedCodes.has(code),
      });
      if (result.kind === 'unchanged') return 'stop';
      logger.info(
        { fromVersion: result.fromVersion, toVersion: result.toVersion, trustDigest: result.trustDigest },
        'trust updated from the coordinator',
      );
      if (!result.runnerEnrolled) logger.error({ toVersion: result.toVersion }, RUNNER_NOT_ENROLLED);
      onUpdated(target.state.trust, result);
      return 'updated';
    } catch (err) {
      if (!(err instanceof TrustError)) throw err;
      if (this.refused.size >= REFUSALS_REMEMBERED) this.refused.clear();
      this.refused.add(digest);
      this.recordedCodes.add(err.code);
      logger.warn({ trustVersion: version, code: err.code, trustDigest: digest }, 'trust document from the coordinator refused; keeping the pin');
      return 'stop';
    }
  }

  /** Refusals are about the version asked for: once the pin has moved they say nothing more. */
  private forgetUnless(version: number): void {
    if (this.rememberedFor === version) return;
    this.refused.clear();
    this.recordedCodes.clear();
    this.rememberedFor = version;
  }
}

/** Digests of refused documents remembered (a few kilobytes); past it the set starts again. */
const REFUSALS_REMEMBERED = 64;
