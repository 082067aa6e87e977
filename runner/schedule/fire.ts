/**
 * One firing of a recurring capsule: the kept capsule file read back (by its digest), verified again now
 * (signatures against the trust pinned now, schema, freshness, target, inputs, policy; the nonce was burnt
 * at acceptance and is not checked again), admitted again (step environment, isolation), then run as a new
 * run whose run.started carries `scheduledFor`, recorded in one transaction with the slot handled and the
 * slots missed before it. What can change between firings decides the outcome:
 * - the capsule expired: schedule.ended `expired`;
 * - the trust no longer trusts its signers (a rotation), no longer allows its kind, or the runner's identity
 *   no longer matches its target: schedule.ended with the acceptance code (CAPSULE_SIGNATURE_THRESHOLD, ...);
 * - the kept file is gone or altered: schedule.ended SCHEDULE_CAPSULE_UNAVAILABLE;
 * - what is the host's and may pass (the pinned trust expired, isolation unavailable, the disk below its
 *   reserve): the slot is recorded as missed and the schedule stays.
 */
import { lstatSync, readFileSync } from 'node:fs';
import { sha256Hex } from '../core/digest.js';
import { CapsuleError } from '../capsule/errors.js';
import { CAPSULE_MAX_BYTES } from '../capsule/capsule-file.js';
import { verifyCapsule, type AcceptedCapsule } from '../capsule/verify.js';
import type { ScheduleRow } from '../store/store.js';
import type { ScheduleCatchUp } from '../trust/trust.js';
import { admitAccepted, freeBytesOf, runAccepted, type CapsuleOutcome } from '../agent/run-capsule.js';
import type { Launcher } from '../agent/launcher.js';
import type { RunnerContext } from '../agent/runner.js';
import type { SlotSpan } from './slots.js';
import { catchUpOfTrust, missedBody } from './missed.js';

export type FiringOutcome =
  | (CapsuleOutcome & { kind: 'completed' })
  /** Not run; the slot (and those missed before it) recorded as missed. */
  | { kind: 'missed'; code: string }
  /** The schedule ended (recorded): `expired`, or a code. */
  | { kind: 'ended'; reason: string }
  /** The run started (the slot is handled) and stopped midway with this code (its run.aborted is recorded). */
  | { kind: 'failed'; code: string };

export interface FireOptions {
  /** The slot to run. */
  slot: Date;
  /** Slots missed before it (a late catch-up run's span includes `slot` itself). */
  missed: SlotSpan | undefined;
  signal?: AbortSignal;
  stopping?: AbortSignal;
}

/** The catch-up rule of the pinned trust's signed policy (`skip` when it names none). */
export function catchUpOf(ctx: RunnerContext): ScheduleCatchUp {
  return catchUpOfTrust(ctx.state.trust);
}

export { missedBody };

/** The span of `missed` with `slot` added at its end (when it is not there yet). */
function withSlot(missed: SlotSpan | undefined, slot: Date): SlotSpan {
  if (missed === undefined) return { count: 1, first: slot, last: slot };
  if (missed.last.getTime() >= slot.getTime()) return missed;
  return { count: missed.count + 1, first: missed.first, last: slot };
}

export async function fireSchedule(ctx: RunnerContext, row: ScheduleRow, options: FireOptions): Promise<FiringOutcome> {
  const { store, state } = ctx;
  const { slot, missed } = options;
  const catchUp = catchUpOf(ctx);
  const ops = ctx.logger.child({ capsuleId: row.capsuleId, manifestDigest: row.manifestDigest, scheduledFor: slot.toISOString() });
  const notRun = (code: string): FiringOutcome => {
    store.recordScheduleMissed(missedBody(row, withSlot(missed, slot), catchUp));
    ops.warn({ code }, 'scheduled run not started; the slot is recorded as missed');
    return { kind: 'missed', code };
  };
  const end = (reason: string): FiringOutcome => {
    store.transaction(() => {
      // The slot it ends at is not run either: it is missed with those before it.
      store.recordScheduleMissed(missedBody(row, withSlot(missed, slot), catchUp));
      store.endSchedule({ capsuleId: row.capsuleId, manifestDigest: row.manifestDigest, reason });
    });
    ops.warn({ reason }, 'schedule ended');
    return { kind: 'ended', reason };
  };

  const now = ctx.clock();
  if (Date.parse(state.trust.body.expires) <= now.getTime()) return notRun('STATE_TRUST_INVALID');
  const bytes = readKept(ctx, row);
  if (bytes === undefined) return end('SCHEDULE_CAPSULE_UNAVAILABLE');
  let accepted: AcceptedCapsule;
  let launcher: Launcher;
  try {
    accepted = verifyCapsule(bytes, {
      trust: state.trust,
      runner: { id: state.identity.id, labels: state.identity.labels },
      now,
      // The nonce was burnt when the capsule was accepted; each firing is that acceptance's, not a new one.
      hasSeen: () => false,
    });
    if (accepted.manifestDigest !== row.manifestDigest) return end('SCHEDULE_CAPSULE_UNAVAILABLE');
    launcher = admitAccepted(ctx, accepted);
  } catch (err) {
    if (!(err instanceof CapsuleError)) throw err;
    if (err.code === 'CAPSULE_EXPIRED') return end('expired');
    if (err.code === 'CAPSULE_ISOLATION_UNAVAILABLE') return notRun(err.code);
    return end(err.code);
  }
  let free: number;
  try {
    free = freeBytesOf(state.layout.dir);
  } catch {
    free = 0;
  }
  if (free < ctx.config.store.reserveBytes) return notRun('RUN_DISK_RESERVE');
  const scheduledFor = slot.toISOString();
  return runAccepted(ctx, accepted, launcher, {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.stopping ? { stopping: options.stopping } : {}),
    scheduled: {
      scheduledFor,
      beforeStart: () => {
        if (missed !== undefined) store.appendRecord('schedule.missed', missedBody(row, missed, catchUp));
        store.markScheduleSlot(row.manifestDigest, scheduledFor);
      },
    },
  });
}

/** The kept capsule file, when it is there and is the file accepted (its digest); undefined otherwise. */
function readKept(ctx: RunnerContext, row: ScheduleRow): Buffer | undefined {
  const cap = ctx.state.trust.body.policy.maxCapsuleBytes ?? CAPSULE_MAX_BYTES;
  const path = ctx.state.blobs.pathOf(row.fileDigest);
  let bytes: Buffer;
  try {
    // A regular file within the cap (never followed through a link), read whole only then.
    const stats = lstatSync(path);
    if (!stats.isFile() || stats.size > cap) return undefined;
    bytes = readFileSync(path);
  } catch {
    return undefined;
  }
  if (bytes.length > cap || `sha256:${sha256Hex(bytes)}` !== row.fileDigest) return undefined;
  return bytes;
}
