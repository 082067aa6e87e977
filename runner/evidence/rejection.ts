/**
 * Signed rejections: every capsule gets an answer. When a runner refuses a capsule (acceptance), a run
 * stops before it finishes (run.aborted), or a recurring capsule's schedule ends before it ever ran
 * (schedule.ended, stage `schedule`), it ships this document instead of a bundle, so the coordinator
 * knows each capsule's fate on each runner without receiving anything raw:
 *
 *   {"mediaType": REJECTION_MEDIA_TYPE, "statement": DSSE, "log": {index, leaf, inclusionProof, checkpoint}}
 *
 * The DSSE payload is an in-toto Statement v1 (predicateType REJECTION_PREDICATE_TYPE) signed by the runner
 * key. Its subjects are the log record (SHA-256 of the leaf bytes) and the capsule's manifest and/or file
 * digests when the runner knows them; its predicate says who refused, at which stage, with which code, and
 * which record of the log says so. The `log` member is the same proof a bundle carries (runner/log/
 * bundle-log.ts): that record is leaf `index` of the runner's log under a checkpoint the runner signed.
 *
 * For a capsule.rejected record every fact of the predicate is checked against the leaf (code, capsule id
 * and digests, file size). A run.aborted record holds only the run id and the reason; the capsule id and
 * manifest digest a run rejection names (taken by the agent from the run.started record) are the runner's
 * signed claim, checked for format only.
 *
 * The document is written once, in canonical JSON (runner/core/canonical-json.ts), and its digest is the
 * SHA-256 of those bytes; verifyRejection accepts only that spelling, so one rejection has one digest.
 * Pure: bytes and the trust document in, a verified rejection out, or an EvidenceError REJECTION_*.
 */
import { toCanonicalJson } from '../core/canonical-json.js';
import { sha256Hex } from '../core/digest.js';
import { DsseError, parseEnvelope, signEnvelope, verifyEnvelope, type Envelope } from '../core/dsse.js';
import type { PrivateKey } from '../core/ed25519.js';
import { JsonError, parseJson } from '../core/json.js';
import { toPrintableExcerpt } from '../core/printable.js';
import { verifyLogMember, type BundleLogMember } from '../log/bundle-log.js';
import { LogError } from '../log/errors.js';
import type { LogRecord } from '../log/record.js';
import type { VerifiedTrust } from '../trust/trust.js';
import { checkClosedRejection, guardRejection, guardRejectionStatement } from './egress.js';
import { EvidenceError } from './errors.js';
import { IN_TOTO_PAYLOAD_TYPE, STATEMENT_TYPE } from './statement.js';

export const REJECTION_MEDIA_TYPE = 'application/vnd.edge-runner.rejection.v1+json';
export const REJECTION_PREDICATE_TYPE = 'https://edge-runner.dev/rejection/v1';
/** Bytes; the same cap as CAPS.rejectionBytes of the link. */
export const REJECTION_MAX_BYTES = 64 * 1024;

export interface RejectionFacts {
  runner: { id: string; keyid: string; version: string };
  stage: 'acceptance' | 'run' | 'schedule';
  code: string;
  capsule: { id?: string; manifestDigest?: string; fileDigest?: string; fileSize?: number };
  runId?: string;
  record: { index: number; kind: 'capsule.rejected' | 'run.aborted' | 'schedule.ended' };
}

/**
 * The code a schedule.ended record answers with: its reason when that is a code (a signer no longer
 * trusted, the kept file gone), CAPSULE_EXPIRED for `expired`, CAPSULE_SUPERSEDED for `replaced`.
 */
export function scheduleEndCode(reason: string): string {
  return reason === 'expired' ? 'CAPSULE_EXPIRED' : reason === 'replaced' ? 'CAPSULE_SUPERSEDED' : reason;
}

export interface VerifiedRejection extends RejectionFacts {
  /** `sha256:HEX` of the document's bytes. */
  digest: string;
  /** The signing key's name in the trust document (equal to runner.id). */
  runnerName: string;
}

interface RejectionStatement {
  _type: typeof STATEMENT_TYPE;
  subject: Array<{ name: 'log-record' | 'capsule' | 'capsule-file'; digest: { sha256: string } }>;
  predicateType: typeof REJECTION_PREDICATE_TYPE;
  predicate: RejectionFacts;
}

interface RejectionDocument {
  mediaType: typeof REJECTION_MEDIA_TYPE;
  statement: Envelope;
  log: BundleLogMember;
}

/**
 * Builds, guards and signs a rejection. `log` is the member of the record the facts describe (its leaf
 * bytes, inclusion proof and a checkpoint covering it). Throws EGRESS_SCHEMA or EGRESS_PROVENANCE when
 * anything in it is more than a digest, code, id or count; the returned bytes are what the outbox sends.
 */
export function buildRejection(facts: RejectionFacts, log: BundleLogMember, key: PrivateKey): { bytes: Buffer; digest: string } {
  // Members set to undefined are left out, as in the bytes signed (canonical JSON drops them).
  const statement = toStatement(JSON.parse(toCanonicalJson(facts)) as RejectionFacts, Buffer.from(log.leaf, 'base64'));
  guardRejectionStatement(statement, { id: facts.runner.id, keyid: key.keyid });
  const payload = Buffer.from(toCanonicalJson(statement), 'utf8');
  const document: RejectionDocument = {
    mediaType: REJECTION_MEDIA_TYPE,
    statement: signEnvelope(IN_TOTO_PAYLOAD_TYPE, payload, [key]),
    log: { index: log.index, leaf: log.leaf, inclusionProof: [...log.inclusionProof], checkpoint: log.checkpoint },
  };
  guardRejection(document);
  const bytes = formatRejection(document);
  if (bytes.length > REJECTION_MAX_BYTES) {
    throw new EvidenceError('EGRESS_SCHEMA', `The rejection is ${bytes.length} bytes, over the ${REJECTION_MAX_BYTES}-byte cap.`);
  }
  return { bytes, digest: `sha256:${sha256Hex(bytes)}` };
}

/**
 * Verifies a rejection against a trust document, step by step:
 *   1. size cap, strict JSON, the three members (REJECTION_TOO_LARGE, REJECTION_UNPARSEABLE);
 *   2. the statement is signed by a runner key the trust document enrols (REJECTION_UNKNOWN_RUNNER,
 *      REJECTION_SIGNATURE);
 *   3. the statement's closed schema (REJECTION_STATEMENT_SCHEMA), and the predicate names the signing key
 *      by its enrolled name, the subjects are exactly the leaf digest and the capsule digests it states
 *      (REJECTION_INCONSISTENT);
 *   4. the log member: the leaf at that index under a checkpoint signed by the same runner (REJECTION_LOG_PROOF),
 *      and the record it holds is the one the predicate describes (REJECTION_LOG_MISMATCH);
 *   5. the whole document is closed (REJECTION_SCHEMA) and byte for byte the one spelling a runner writes
 *      of what verified (REJECTION_NOT_CANONICAL).
 */
export function verifyRejection(bytes: Uint8Array, trust: VerifiedTrust): VerifiedRejection {
  // 1. Cap, parse, shape.
  if (bytes.length > REJECTION_MAX_BYTES) {
    throw new EvidenceError('REJECTION_TOO_LARGE', `The rejection is ${bytes.length} bytes, over the ${REJECTION_MAX_BYTES}-byte cap.`);
  }
  const document = parseDocument(bytes);

  // 2. Signed by one enrolled runner key.
  let envelope: Envelope;
  let verified;
  try {
    envelope = parseEnvelope(document.statement);
    verified = verifyEnvelope(envelope, { payloadType: IN_TOTO_PAYLOAD_TYPE, keys: trust.keys, role: 'runner', threshold: 1 });
  } catch (err) {
    if (!(err instanceof DsseError)) throw err;
    // A signature that names an enrolled runner key but does not verify is a damaged statement; one by no
    // runner key at all is a document from outside the fleet.
    const namesEnrolledRunner = envelopeNamesRunner(document.statement, trust);
    if (!namesEnrolledRunner && (err.code === 'DSSE_NO_VALID_SIGNATURE' || err.code === 'DSSE_SIGNER_ROLE')) {
      throw new EvidenceError('REJECTION_UNKNOWN_RUNNER', 'The rejection is not signed by a runner key enrolled in the trust document.', {
        dsse: err.code,
      });
    }
    throw new EvidenceError('REJECTION_SIGNATURE', `The rejection statement does not verify: ${err.message}`, { dsse: err.code });
  }
  const runnerKeyid = verified.signers[0]!;
  const runnerName = trust.nameOf(runnerKeyid)!;

  // 3. The statement: its schema, and agreement with the signer.
  let statement: RejectionStatement;
  try {
    statement = parseJson(verified.payload) as RejectionStatement;
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    throw new EvidenceError('REJECTION_STATEMENT_SCHEMA', `The rejection statement is not valid JSON: ${cause.message}.`, { json: cause.code });
  }
  try {
    guardRejectionStatement(statement, { id: runnerName, keyid: runnerKeyid });
  } catch (err) {
    if (!(err instanceof EvidenceError)) throw err;
    if (err.code === 'EGRESS_PROVENANCE') {
      throw new EvidenceError('REJECTION_INCONSISTENT', 'The rejection names another runner than the key that signed it.');
    }
    throw new EvidenceError('REJECTION_STATEMENT_SCHEMA', err.message.replace('closed outbound schema', 'rejection schema'));
  }
  const facts = statement.predicate;
  if (!isObject(document.log) || typeof document.log.leaf !== 'string') {
    throw new EvidenceError('REJECTION_LOG_PROOF', "The rejection's log member is not a log proof.");
  }
  const expected = toStatement(facts, Buffer.from(document.log.leaf, 'base64'));
  if (toCanonicalJson(expected.subject) !== toCanonicalJson(statement.subject)) {
    throw new EvidenceError('REJECTION_INCONSISTENT', "The rejection's subjects are not the digests of its log record and capsule.");
  }

  // 4. The record is in the runner's log and is the one described.
  const runnerKey = trust.keys.find((key) => key.keyid === runnerKeyid)!.publicKey;
  try {
    verifyLogMember(document.log, { runnerId: runnerName, runnerKey }, (record, index) => verifyRecord(record, index, facts));
  } catch (err) {
    if (err instanceof EvidenceError) throw err;
    if (!(err instanceof LogError)) throw err;
    throw new EvidenceError('REJECTION_LOG_PROOF', `The rejection's log proof does not verify: ${err.message}`, { log: err.code });
  }

  // 5. Closed, and canonical: the bytes are formatRejection of what verified.
  const problem = checkClosedRejection({ mediaType: REJECTION_MEDIA_TYPE, ...document });
  if (problem !== undefined) {
    const where =
      problem.kind === 'schema' ? ` at ${toPrintableExcerpt(problem.path)}: ${problem.message}` : ': the log leaf is more than the record';
    throw new EvidenceError('REJECTION_SCHEMA', `The rejection does not match the closed rejection schema${where}.`);
  }
  const { index, leaf, inclusionProof, checkpoint } = document.log as unknown as BundleLogMember;
  const rebuilt = formatRejection({
    mediaType: REJECTION_MEDIA_TYPE,
    statement: verified.verifiedEnvelope,
    log: { index, leaf, inclusionProof, checkpoint },
  });
  if (!rebuilt.equals(Buffer.from(bytes)) || !Buffer.from(toCanonicalJson(statement), 'utf8').equals(verified.payload)) {
    throw new EvidenceError('REJECTION_NOT_CANONICAL', 'The rejection is not byte for byte the document a runner writes of it.');
  }

  return { ...facts, digest: `sha256:${sha256Hex(bytes)}`, runnerName };
}

/** The one spelling of a rejection document: canonical JSON, no trailing newline. */
function formatRejection(document: RejectionDocument): Buffer {
  return Buffer.from(toCanonicalJson(document), 'utf8');
}

/** The statement for these facts: subjects in a fixed order, the log record first. */
function toStatement(facts: RejectionFacts, leaf: Buffer): RejectionStatement {
  const hex = (ref: string) => ref.slice('sha256:'.length);
  const subject: RejectionStatement['subject'] = [{ name: 'log-record', digest: { sha256: sha256Hex(leaf) } }];
  if (facts.capsule.manifestDigest !== undefined) subject.push({ name: 'capsule', digest: { sha256: hex(facts.capsule.manifestDigest) } });
  if (facts.capsule.fileDigest !== undefined) subject.push({ name: 'capsule-file', digest: { sha256: hex(facts.capsule.fileDigest) } });
  return { _type: STATEMENT_TYPE, subject, predicateType: REJECTION_PREDICATE_TYPE, predicate: facts };
}

/**
 * The leaf is the record the predicate describes: its index and kind, the stage that kind belongs to,
 * and for capsule.rejected its code and every capsule fact (present in both or in neither), for
 * run.aborted its reason and run id, for schedule.ended (a recurring capsule that ended without ever
 * running) its reason as a code and the capsule id and manifest digest.
 */
function verifyRecord(record: LogRecord, index: number, facts: RejectionFacts): void {
  const mismatch = (what: string) => new EvidenceError('REJECTION_LOG_MISMATCH', `The rejection's log record does not match its ${what}.`);
  if (record.seq !== index || facts.record.index !== index) throw mismatch('record index');
  if (record.kind !== facts.record.kind) throw mismatch('record kind');
  if (record.kind === 'capsule.rejected') {
    if (facts.stage !== 'acceptance') throw mismatch('stage');
    if (record.body.code !== facts.code) throw mismatch('code');
    if (facts.runId !== undefined) throw mismatch('run id');
    const { capsuleId, manifestDigest, fileDigest, fileSize } = record.body;
    const { capsule } = facts;
    if (capsuleId !== capsule.id || manifestDigest !== capsule.manifestDigest || fileDigest !== capsule.fileDigest || fileSize !== capsule.fileSize) {
      throw mismatch('capsule');
    }
    return;
  }
  if (record.kind === 'run.aborted') {
    if (facts.stage !== 'run') throw mismatch('stage');
    if (record.body.reason !== facts.code) throw mismatch('code');
    if (record.body.runId !== facts.runId) throw mismatch('run id');
    return;
  }
  if (record.kind === 'schedule.ended') {
    if (facts.stage !== 'schedule') throw mismatch('stage');
    if (scheduleEndCode(record.body.reason) !== facts.code) throw mismatch('code');
    if (facts.runId !== undefined) throw mismatch('run id');
    const { capsule } = facts;
    if (
      record.body.capsuleId !== capsule.id ||
      record.body.manifestDigest !== capsule.manifestDigest ||
      capsule.fileDigest !== undefined ||
      capsule.fileSize !== undefined
    ) {
      throw mismatch('capsule');
    }
    return;
  }
  throw mismatch('record kind');
}

function parseDocument(bytes: Uint8Array): { statement: unknown; log: unknown } {
  let value: unknown;
  try {
    value = parseJson(bytes, { maxBytes: REJECTION_MAX_BYTES });
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    throw new EvidenceError('REJECTION_UNPARSEABLE', `The rejection is not valid JSON: ${cause.message}.`, { json: cause.code }, { cause });
  }
  const bad = (why: string) => new EvidenceError('REJECTION_UNPARSEABLE', `The rejection is malformed: ${why}.`);
  if (!isObject(value)) throw bad('not a JSON object');
  const { mediaType, statement, log, ...rest } = value;
  if (Object.keys(rest).length > 0) throw bad(`unexpected member "${toPrintableExcerpt(Object.keys(rest)[0]!)}"`);
  if (mediaType !== REJECTION_MEDIA_TYPE) throw bad(`mediaType is not ${REJECTION_MEDIA_TYPE}`);
  return { statement, log };
}

function envelopeNamesRunner(statement: unknown, trust: VerifiedTrust): boolean {
  const signatures = isObject(statement) && Array.isArray(statement.signatures) ? (statement.signatures as unknown[]) : [];
  return signatures.some(
    (sig) => isObject(sig) && typeof sig.keyid === 'string' && trust.keys.some((key) => key.keyid === sig.keyid && key.roles.includes('runner')),
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
