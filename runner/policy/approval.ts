/**
 * Approvals: one person's signed decision on one proposed change. An in-toto Statement v1 whose only
 * subject is the change digest (runner/policy/change-digest.ts), with the approval predicate v1, in a DSSE
 * envelope signed by one key holding the approver role. Verifying takes bytes and the trust document and
 * returns what verified; whether it counts for a change at a decision time is count.ts's question. Pure.
 */
import { toCanonicalJson } from '../core/canonical-json.js';
import { toDigestRef } from '../core/digest.js';
import { DsseError, parseEnvelope, signEnvelope, verifyEnvelope, type Envelope } from '../core/dsse.js';
import type { PrivateKey } from '../core/ed25519.js';
import { JsonError, parseJson } from '../core/json.js';
import { toPrintableExcerpt } from '../core/printable.js';
import { checkSchema } from '../core/schema.js';
import { IN_TOTO_PAYLOAD_TYPE, STATEMENT_TYPE } from '../evidence/statement.js';
import type { VerifiedTrust } from '../trust/trust.js';
import { ApprovalError } from './errors.js';
import type { ApprovalDecision } from './types.js';
import approvalSchema from './approval.schema.json' with { type: 'json' };

export { approvalSchema };

export const APPROVAL_PREDICATE_TYPE = 'https://edge-runner.dev/approval/v1';
/** An approval file (a DSSE envelope in JSON) is at most this many bytes. */
export const APPROVAL_MAX_BYTES = 16 * 1024;

export interface ApprovalPredicate {
  /** The evidence digest of the proposal bundle the approver read. */
  proposal: string;
  /** The runner that proposed the change (its name in the trust document). */
  runner: string;
  target: string;
  capsule: { id: string; digest: string };
  /** The signing key's name in the trust document: the person. */
  approver: string;
  decision: ApprovalDecision;
  signedAt: string;
  notAfter: string;
  /** The change-control reference (a ticket id) the approval is given under. */
  changeTicket?: string;
}

export interface ApprovalStatement {
  _type: typeof STATEMENT_TYPE;
  subject: [{ name: string; digest: { sha256: string } }];
  predicateType: typeof APPROVAL_PREDICATE_TYPE;
  predicate: ApprovalPredicate;
}

export interface VerifiedApproval {
  /** `sha256:` + SHA-256 of the canonical JSON of `envelope`: one approval has one digest, however it was spelt. */
  digest: string;
  /** The envelope rebuilt from the one signature that verified (canonical base64, the signer's true keyid). */
  envelope: Envelope;
  keyid: string;
  /** The trust document's name of `keyid` (equal to the predicate's approver). */
  approver: string;
  /** `sha256:HEX` of the subject. */
  changeDigest: string;
  predicate: ApprovalPredicate;
}

export interface SignedApproval {
  envelope: Envelope;
  statement: ApprovalStatement;
  digest: string;
}

/** The statement for `predicate` over `changeDigest` (`sha256:HEX`). */
export function buildApprovalStatement(changeDigest: string, predicate: ApprovalPredicate): ApprovalStatement {
  return {
    _type: STATEMENT_TYPE,
    subject: [{ name: `change/${predicate.target}`, digest: { sha256: changeDigest.replace(/^sha256:/, '') } }],
    predicateType: APPROVAL_PREDICATE_TYPE,
    predicate,
  };
}

/** Builds, checks (the same schema every verifier applies) and signs an approval with one approver key. */
export function signApproval(changeDigest: string, predicate: ApprovalPredicate, key: PrivateKey): SignedApproval {
  const statement = buildApprovalStatement(changeDigest, predicate);
  checkStatement(statement);
  const envelope = signEnvelope(IN_TOTO_PAYLOAD_TYPE, Buffer.from(toCanonicalJson(statement), 'utf8'), [key]);
  return { envelope, statement, digest: approvalDigestOf(envelope) };
}

/** The bytes of an approval file. */
export function formatApproval(envelope: Envelope): string {
  return `${JSON.stringify(envelope, null, 2)}\n`;
}

/** `sha256:` + SHA-256 of the envelope's canonical JSON. */
export function approvalDigestOf(envelope: Envelope): string {
  return toDigestRef(Buffer.from(toCanonicalJson(envelope), 'utf8'));
}

/**
 * Verifies an approval (file bytes, or an envelope already parsed from a bundle): size cap, parse, one
 * signature by a key with the approver role (DSSE: only the verified payload is read), the closed
 * statement schema, the subject naming the predicate's target, a validity that ends after it begins, and
 * the approver being the trust document's name of the key that signed. Throws ApprovalError.
 */
export function verifyApproval(input: Uint8Array | Envelope, trust: VerifiedTrust): VerifiedApproval {
  const envelope = input instanceof Uint8Array ? parseApproval(input) : input;
  if (!(input instanceof Uint8Array) && Buffer.byteLength(toCanonicalJson(envelope), 'utf8') > APPROVAL_MAX_BYTES) {
    throw new ApprovalError('APPROVAL_TOO_LARGE', `The approval is larger than ${APPROVAL_MAX_BYTES} bytes.`);
  }

  // 1. One person, one signature: an envelope with two is two decisions in one file.
  if (envelope.signatures.length !== 1) {
    throw new ApprovalError('APPROVAL_SIGNATURE', `The approval carries ${envelope.signatures.length} signatures; an approval is signed by one key.`);
  }
  let verified;
  try {
    verified = verifyEnvelope(envelope, { payloadType: IN_TOTO_PAYLOAD_TYPE, keys: trust.keys, role: 'approver', threshold: 1 });
  } catch (err) {
    if (!(err instanceof DsseError)) throw err;
    if (err.code === 'DSSE_BASE64_INVALID') throw new ApprovalError('APPROVAL_UNPARSEABLE', `The approval is not a DSSE envelope: ${err.message}`);
    throw new ApprovalError('APPROVAL_SIGNATURE', `The approval is not signed by an approver key of the trust document: ${err.message}`, {
      dsse: err.code,
    });
  }
  const keyid = verified.signers[0]!;

  // 2. The statement, from the verified payload only, against its closed schema.
  let statement: ApprovalStatement;
  try {
    statement = parseJson(verified.payload) as ApprovalStatement;
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    throw new ApprovalError('APPROVAL_SCHEMA', `The approval payload is not valid JSON: ${cause.message}.`, {}, { cause });
  }
  checkStatement(statement);
  const { predicate } = statement;

  // 3. The approver is the person the trust document says holds that key.
  const approver = trust.nameOf(keyid)!;
  if (predicate.approver !== approver) {
    throw new ApprovalError(
      'APPROVAL_NAME_MISMATCH',
      `The approval names the approver "${toPrintableExcerpt(predicate.approver)}" but is signed by the key of "${toPrintableExcerpt(approver)}".`,
      { keyid },
    );
  }
  return {
    digest: approvalDigestOf(verified.verifiedEnvelope),
    envelope: verified.verifiedEnvelope,
    keyid,
    approver,
    changeDigest: `sha256:${statement.subject[0].digest.sha256}`,
    predicate,
  };
}

function parseApproval(bytes: Uint8Array): Envelope {
  if (bytes.length > APPROVAL_MAX_BYTES) {
    throw new ApprovalError('APPROVAL_TOO_LARGE', `The approval is ${bytes.length} bytes, over the ${APPROVAL_MAX_BYTES}-byte cap.`);
  }
  try {
    return parseEnvelope(parseJson(bytes));
  } catch (cause) {
    if (!(cause instanceof JsonError) && !(cause instanceof DsseError)) throw cause;
    throw new ApprovalError('APPROVAL_UNPARSEABLE', `The approval is not a DSSE envelope in JSON: ${cause.message}`, {}, { cause });
  }
}

function checkStatement(statement: unknown): asserts statement is ApprovalStatement {
  const problem = checkSchema(approvalSchema, statement);
  if (problem) {
    throw new ApprovalError('APPROVAL_SCHEMA', `The approval statement does not match its schema at ${problem.path}: ${problem.message}.`);
  }
  const { subject, predicate } = statement as ApprovalStatement;
  if (subject[0].name !== `change/${predicate.target}`) {
    throw new ApprovalError('APPROVAL_SCHEMA', "The approval's subject does not name the change target its predicate names.");
  }
  if (Date.parse(predicate.notAfter) <= Date.parse(predicate.signedAt)) {
    throw new ApprovalError('APPROVAL_SCHEMA', 'The approval expires before it was signed (notAfter is not after signedAt).');
  }
}
