/**
 * The answer a rejection owes the coordinator (DESIGN.md: "every capsule gets an answer"): the signed
 * rejection document of an outbox row whose record is `capsule.rejected`, `run.aborted`, or the
 * `schedule.ended` of a recurring capsule that never ran. Built the first
 * time the row is sent, from the record itself (its leaf, read back from the log), the run it ends (for an
 * aborted run: which capsule it was), and the record's inclusion proof under a checkpoint that covers it;
 * the shipper keeps the bytes in the row (Store.outboxSetBody), so every retry sends exactly them.
 */
import { buildRejection, scheduleEndCode, type RejectionFacts } from '../evidence/rejection.js';
import { parseRecordLeaf } from '../log/record.js';
import type { OutboxRow, Store } from '../store/store.js';
import type { PrivateKey } from '../core/ed25519.js';
import { RUNNER_VERSION } from '../version.js';
import { OutboxError } from '../outbox/errors.js';
import { bundleLogFor } from './log.js';

export interface AnswerIdentity {
  runnerId: string;
  key: PrivateKey;
}

/** The rejection document of `row` (kind 'rejection'), and its digest. Throws a coded error when it cannot be made. */
export function rejectionFor(store: Store, identity: AnswerIdentity, row: OutboxRow): { bytes: Buffer; digest: string } {
  const facts = rejectionFactsOf(store, identity, row.recordSeq);
  const stored = store.record(row.recordSeq)!;
  const log = bundleLogFor(store, identity, stored.seq, stored.leaf);
  return buildRejection(facts, log, identity.key);
}

/** What the rejection says, taken from the record at `seq` (and, for an aborted run, the run's row). */
export function rejectionFactsOf(store: Store, identity: AnswerIdentity, seq: number): RejectionFacts {
  const stored = store.record(seq);
  if (stored === undefined)
    throw new OutboxError('OUTBOX_ANSWER_UNAVAILABLE', `The record ${seq} an outbox row answers for is not in the log.`, { seq });
  const record = parseRecordLeaf(stored.leaf, seq);
  const runner = { id: identity.runnerId, keyid: identity.key.keyid, version: RUNNER_VERSION };
  switch (record.kind) {
    case 'capsule.rejected': {
      const { code, capsuleId, manifestDigest, fileDigest, fileSize } = record.body;
      return {
        runner,
        stage: 'acceptance',
        code,
        capsule: {
          ...(capsuleId !== undefined ? { id: capsuleId } : {}),
          ...(manifestDigest !== undefined ? { manifestDigest } : {}),
          ...(fileDigest !== undefined ? { fileDigest } : {}),
          ...(fileSize !== undefined ? { fileSize } : {}),
        },
        record: { index: seq, kind: 'capsule.rejected' },
      };
    }
    case 'run.aborted': {
      const { runId, reason } = record.body;
      const run = store.run(runId);
      return {
        runner,
        stage: 'run',
        code: reason,
        capsule: run ? { id: run.capsuleId, manifestDigest: run.manifestDigest } : {},
        runId,
        record: { index: seq, kind: 'run.aborted' },
      };
    }
    case 'schedule.ended': {
      // Queued only for a schedule that never ran (Store.endSchedule): nothing else answered for it.
      const { capsuleId, manifestDigest, reason } = record.body;
      return {
        runner,
        stage: 'schedule',
        code: scheduleEndCode(reason),
        capsule: { id: capsuleId, manifestDigest },
        record: { index: seq, kind: 'schedule.ended' },
      };
    }
    default:
      throw new OutboxError('OUTBOX_ANSWER_UNAVAILABLE', `The record ${seq} is a ${record.kind} record, which no rejection answers for.`, { seq });
  }
}
