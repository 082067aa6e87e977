/**
 * The `log` member of a bundle: proof that the evidence record is leaf `index` of the runner's Merkle log,
 * under a checkpoint signed by the runner's key. Pure: given the member, the runner's identity from the
 * trust document and the evidence digest, it checks the signed note (C2SP signed-note), the checkpoint body
 * (C2SP tlog-checkpoint), that the leaf is the `evidence.signed` record of this evidence, and the RFC 9162
 * §2.1.3.2 inclusion proof up to the checkpoint's root.
 */
import { parseBase64, toBase64 } from '../core/base64.js';
import type { PublicKey } from '../core/ed25519.js';
import { toPrintableExcerpt } from '../core/printable.js';
import { LogError } from './errors.js';
import { hashLeaf, verifyInclusion } from './merkle.js';
import { runnerOrigin, verifyCheckpoint, type Checkpoint } from './checkpoint.js';
import { parseRecordLeaf, type LogRecord } from './record.js';

export interface BundleLogMember {
  index: number;
  /** The leaf's bytes (canonical JSON of the evidence.signed record), base64. */
  leaf: string;
  inclusionProof: string[];
  /** The signed checkpoint note covering `index`. */
  checkpoint: string;
}

export function toBundleLogMember(index: number, leaf: Uint8Array, proof: readonly Uint8Array[], checkpointNote: string): BundleLogMember {
  return { index, leaf: toBase64(leaf), inclusionProof: proof.map(toBase64), checkpoint: checkpointNote };
}

export interface BundleLogContext {
  runnerId: string;
  runnerKey: PublicKey;
  evidenceDigest: string;
}

export interface VerifiedBundleLog {
  index: number;
  checkpoint: Checkpoint;
}

const MAX_PROOF_ELEMENTS = 64;

export function verifyBundleLog(value: unknown, context: BundleLogContext): VerifiedBundleLog {
  const { index, checkpoint } = verifyLogMember(value, context, (record, at) => verifyEvidenceRecord(record, at, context.evidenceDigest));
  return { index, checkpoint };
}

export interface VerifiedLogMember extends VerifiedBundleLog {
  /** The leaf bytes and the record they encode. */
  leaf: Buffer;
  record: LogRecord;
}

/**
 * The same member for any record (a bundle's evidence.signed, a rejection's capsule.rejected or
 * run.aborted): the note signed by this runner's key under its log's origin, the index inside the
 * checkpoint, the leaf a canonical record that `checkRecord` accepts (it throws), the inclusion proof.
 */
export function verifyLogMember(
  value: unknown,
  context: { runnerId: string; runnerKey: PublicKey },
  checkRecord: (record: LogRecord, index: number) => void,
): VerifiedLogMember {
  const member = parseMember(value);
  // The note must be signed by this runner's key, under the name that is its log's origin.
  const origin = runnerOrigin(context.runnerId, context.runnerKey.keyid);
  const checkpoint = verifyCheckpoint(member.checkpoint, [{ name: origin, publicKey: context.runnerKey }], origin);
  if (member.index >= checkpoint.size) {
    throw new LogError('LOG_INDEX_OUT_OF_RANGE', `The log leaf index ${member.index} is not below the checkpoint size ${checkpoint.size}.`);
  }
  const leaf = decode(member.leaf, 'leaf');
  const record = parseLeaf(leaf);
  checkRecord(record, member.index);
  const proof = member.inclusionProof.map((p) => decode(p, 'proof element'));
  verifyInclusion(member.index, checkpoint.size, hashLeaf(leaf), proof, checkpoint.rootHash);
  return { index: member.index, checkpoint, leaf, record };
}

function parseMember(value: unknown): BundleLogMember {
  const malformed = (why: string) => new LogError('LOG_EXPORT_INVALID', `The bundle's log member is malformed: ${why}.`);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed('not an object');
  const { index, leaf, inclusionProof, checkpoint, ...rest } = value as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw malformed(`unexpected member "${toPrintableExcerpt(Object.keys(rest)[0]!)}"`);
  if (!Number.isSafeInteger(index) || (index as number) < 0) throw malformed('index is not a non-negative integer');
  if (typeof leaf !== 'string' || leaf.length > 16_384) throw malformed('leaf is not a short base64 string');
  if (!Array.isArray(inclusionProof) || inclusionProof.length > MAX_PROOF_ELEMENTS || !inclusionProof.every((p) => typeof p === 'string')) {
    throw malformed('inclusionProof is not a list of base64 hashes');
  }
  if (typeof checkpoint !== 'string') throw malformed('checkpoint is not a signed note');
  return { index: index as number, leaf, inclusionProof: inclusionProof as string[], checkpoint };
}

/** The leaf is a record exactly as runner/log/record.ts encodes it (parseRecordLeaf). */
function parseLeaf(leaf: Buffer): LogRecord {
  try {
    return parseRecordLeaf(leaf);
  } catch (cause) {
    if (!(cause instanceof LogError)) throw cause;
    throw new LogError('LOG_PROOF_INVALID', `The bundle's log leaf is not a record: ${cause.message}`, { ...cause.details }, { cause });
  }
}

/** The leaf must be the evidence.signed record, at this index, of exactly this evidence: of kind evidence.signed, whose seq is the index. */
function verifyEvidenceRecord(record: LogRecord, index: number, evidenceDigest: string): void {
  if (record.kind !== 'evidence.signed' || record.seq !== index || record.body.evidenceDigest !== evidenceDigest) {
    throw new LogError('LOG_PROOF_INVALID', "The bundle's log leaf is not the record of this evidence at this index.", {
      kind: record.kind,
      seq: record.seq,
      index,
    });
  }
}

function decode(text: string, what: string): Buffer {
  try {
    return parseBase64(text, what);
  } catch {
    throw new LogError('LOG_PROOF_INVALID', `The bundle's log ${what} is not valid base64.`);
  }
}
