/**
 * The coordinator witnesses every runner's log, in the shapes C2SP specifies, so that any C2SP witness or
 * client could stand on either side:
 *
 * - C2SP tlog-witness v1.0.0, `add-checkpoint`: the request body is an old size line (`old N`), up to 63
 *   consistency proof lines (one base64 hash each), an empty line, and the checkpoint as a signed note; the
 *   witness answers 404 for an unknown origin, 403 without a valid signature by the log's key, 400 when the
 *   old size exceeds the checkpoint size, 409 with the size it holds (`text/x.tlog.size`) when the old size
 *   is not that one, 422 when the checkpoint is not consistent with what it holds, and else persists the
 *   checkpoint (compare-and-swap, the caller's job) and returns cosignature lines.
 * - C2SP tlog-cosignature, `cosignature/v1` (Ed25519): a note signature line whose key ID is
 *   SHA-256(name || "\n" || 0x04 || public key)[:4] and whose signature is an 8-byte big-endian timestamp
 *   followed by the Ed25519 signature over "cosignature/v1\n" "time T\n" and the checkpoint body.
 *
 * decideAddCheckpoint is the witness's whole decision as a pure function of the request, the checkpoint it
 * holds for that log and the log's verifier keys; a 422 on a validly signed checkpoint that contradicts the
 * held one is returned as `fork` so the coordinator keeps it as evidence (tlog-witness allows logging such
 * requests and forbids cosigning them).
 */
import { createHash } from 'node:crypto';
import type { PrivateKey, PublicKey } from '../core/ed25519.js';
import { NOTE_LIMITS, isValidKeyName, parseCheckpoint, verifyCheckpoint, type Checkpoint, type NoteVerifier } from '../log/checkpoint.js';
import { LogError } from '../log/errors.js';
import { EMPTY_ROOT, HASH_BYTES, verifyConsistency } from '../log/merkle.js';
import { ProtocolError, PROTOCOL_ERROR_SENTENCES, type ProtocolErrorCode } from './errors.js';
import type { VerifiedTrust } from '../trust/trust.js';
import { CAPS } from './wire.js';

/** A witness whose cosignatures count: its key name in the trust document and its public key. */
export interface WitnessKey {
  name: string;
  key: PublicKey;
}

/** The witnesses of a trust document: its keys with the `witness` role, by name. */
export function witnessKeysOf(trust: VerifiedTrust): WitnessKey[] {
  const out: WitnessKey[] = [];
  for (const key of trust.keys) {
    if (!key.roles.includes('witness')) continue;
    const name = trust.nameOf(key.keyid);
    if (name !== undefined) out.push({ name, key: key.publicKey });
  }
  return out;
}

export interface ParsedAddCheckpoint {
  oldSize: number;
  proof: Buffer[];
  /** The checkpoint as a signed note (text, blank line, signature lines). */
  note: string;
}

export type WitnessDecision =
  | { kind: 'cosign'; checkpoint: Checkpoint }
  | { kind: 'conflict'; size: number }
  /** `reason` is the WITNESS_* code (answered with 422 and its sentence). */
  | { kind: 'fork'; reason: string; checkpoint: Checkpoint }
  | { kind: 'error'; status: 400 | 403 | 404 | 422; code: string; message: string };

/** tlog-witness: a client MUST NOT send more than 63 consistency proof lines. */
export const MAX_PROOF_LINES = 63;
/** The media type of a 409 answer: the held size in decimal and a newline. */
export const TLOG_SIZE_MEDIA_TYPE = 'text/x.tlog.size';

const DECIMAL = /^(?:0|[1-9][0-9]*)$/;
const STD_BASE64_HASH = /^[A-Za-z0-9+/]{43}=$/;
const STD_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const SIGNATURE_PREFIX = '\u2014 ';
/** tlog-cosignature: the Ed25519 cosignature type byte in key IDs (0x01 is a plain note signature). */
const ALG_COSIGNATURE_V1 = 0x04;
const TIMESTAMP_BYTES = 8;
const ED25519_SIGNATURE_BYTES = 64;
/** Timestamps are seconds; the spec caps them at 2^63 - 1, JavaScript numbers at 2^53 - 1. */
const MAX_TIMESTAMP = Number.MAX_SAFE_INTEGER;

// ---------------------------------------------------------------------------------------------------------
// add-checkpoint body

/** The request body: `old N\n`, one base64 hash per line, `\n`, then the signed checkpoint note. */
export function formatAddCheckpoint(oldSize: number, proof: readonly Uint8Array[], checkpointNote: string): Buffer {
  if (!Number.isSafeInteger(oldSize) || oldSize < 0) throw bodyMalformed('The old size is not a non-negative integer.');
  if (proof.length > MAX_PROOF_LINES) throw bodyMalformed(`The consistency proof has more than ${MAX_PROOF_LINES} hashes.`);
  for (const hash of proof) if (hash.length !== HASH_BYTES) throw bodyMalformed('A consistency proof hash is not 32 bytes.');
  const lines = [`old ${oldSize}`, ...proof.map((hash) => Buffer.from(hash).toString('base64'))].map((line) => `${line}\n`).join('');
  const body = Buffer.from(`${lines}\n${checkpointNote}`, 'utf8');
  if (body.length > CAPS.addCheckpointBytes) throw bodyMalformed(`The add-checkpoint body is over the ${CAPS.addCheckpointBytes}-byte cap.`);
  return body;
}

/**
 * Parses an add-checkpoint body strictly: capped before it is read, UTF-8, the old size in decimal without
 * leading zeros, at most 63 proof lines each the canonical base64 of 32 bytes, an empty line, and a
 * non-empty note (checked as a signed note by decideAddCheckpoint). Throws WITNESS_BODY_MALFORMED.
 */
export function parseAddCheckpoint(body: Uint8Array): ParsedAddCheckpoint {
  if (body.length > CAPS.addCheckpointBytes) {
    throw bodyMalformed(`The add-checkpoint body is over the ${CAPS.addCheckpointBytes}-byte cap.`, { bytes: body.length });
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body);
  } catch {
    throw bodyMalformed('The add-checkpoint body is not UTF-8.');
  }
  let position = 0;
  const nextLine = (): string => {
    const end = text.indexOf('\n', position);
    if (end < 0) throw bodyMalformed('The add-checkpoint body ends before the blank line that precedes the checkpoint.');
    const line = text.slice(position, end);
    position = end + 1;
    return line;
  };
  const oldLine = nextLine();
  if (!oldLine.startsWith('old ') || !DECIMAL.test(oldLine.slice(4)) || !Number.isSafeInteger(Number(oldLine.slice(4)))) {
    throw bodyMalformed('The first line is not "old" and a decimal size without leading zeros.');
  }
  const oldSize = Number(oldLine.slice(4));
  const proof: Buffer[] = [];
  for (;;) {
    const line = nextLine();
    if (line === '') break;
    if (proof.length === MAX_PROOF_LINES) throw bodyMalformed(`The consistency proof has more than ${MAX_PROOF_LINES} lines.`);
    const hash = STD_BASE64_HASH.test(line) ? Buffer.from(line, 'base64') : undefined;
    if (hash === undefined || hash.length !== HASH_BYTES || hash.toString('base64') !== line) {
      throw bodyMalformed('A consistency proof line is not the base64 of a 32-byte hash.', { line: proof.length + 1 });
    }
    proof.push(hash);
  }
  const note = text.slice(position);
  if (note.length === 0) throw bodyMalformed('The add-checkpoint body has no checkpoint after the blank line.');
  return { oldSize, proof, note };
}

// ---------------------------------------------------------------------------------------------------------
// The witness decision (tlog-witness v1.0.0, add-checkpoint)

/**
 * What the witness does with one request, given the checkpoint it holds for the log (undefined: never
 * cosigned, size 0) and the log's verifier keys (the runner's note key under its origin). The caller
 * persists a `cosign` with compare-and-swap on the held size, answers `conflict` with 409 and
 * formatTlogSize, and keeps a `fork` as evidence before answering 422.
 */
export function decideAddCheckpoint(
  request: ParsedAddCheckpoint,
  held: { size: number; rootHash: Buffer } | undefined,
  logVerifiers: readonly NoteVerifier[],
): WitnessDecision {
  // The origin is the first line of the note text; it picks the verifier keys. Unknown origin: 404.
  const origin = originOf(request.note);
  if (origin === undefined) return error(400, 'WITNESS_BODY_MALFORMED', 'The checkpoint note is not well formed.');
  const verifiers = logVerifiers.filter((verifier) => verifier.name === origin);
  if (verifiers.length === 0) return error(404, 'WITNESS_UNKNOWN_LOG');

  // A valid signature by a trusted key for the origin, signatures of unknown keys ignored: else 403.
  let checkpoint: Checkpoint;
  try {
    const verified = verifyCheckpoint(request.note, verifiers, origin);
    checkpoint = { origin: verified.origin, size: verified.size, rootHash: verified.rootHash, extensions: verified.extensions };
  } catch (cause) {
    if (!(cause instanceof LogError)) throw cause;
    if (cause.code === 'LOG_CHECKPOINT_UNKNOWN_SIGNER' || cause.code === 'LOG_CHECKPOINT_BAD_SIGNATURE') {
      return error(403, 'WITNESS_BAD_SIGNATURE');
    }
    return error(400, 'WITNESS_BODY_MALFORMED', `The checkpoint is not well formed: ${cause.message}`);
  }

  // An edge-runner log writes no extension lines: a checkpoint with some is not one of its checkpoints, and
  // the witness would keep and cosign free text a runner chose (nothing free-form crosses the link): 400.
  if (checkpoint.extensions.length > 0) {
    return error(400, 'WITNESS_BODY_MALFORMED', 'The checkpoint carries extension lines, which an edge-runner log never writes.');
  }

  // The old size is at most the checkpoint size: else 400.
  if (request.oldSize > checkpoint.size) return error(400, 'WITNESS_OLD_SIZE_TOO_LARGE');

  // The old size is the size last cosigned for this origin (0 if none): else 409 with that size.
  const heldSize = held?.size ?? 0;
  if (request.oldSize !== heldSize) return { kind: 'conflict', size: heldSize };

  // A checkpoint of size zero has the empty tree's root (RFC 6962 section 2.1): else 422.
  if (checkpoint.size === 0 && !checkpoint.rootHash.equals(EMPTY_ROOT)) return error(422, 'WITNESS_EMPTY_ROOT');

  if (request.oldSize === 0) {
    // The empty tree is consistent with every tree, so the proof is empty: else 422.
    if (request.proof.length > 0) return error(422, 'WITNESS_PROOF_AT_ZERO');
    return { kind: 'cosign', checkpoint };
  }
  const heldRoot = held!.rootHash;
  if (request.oldSize === checkpoint.size) {
    // Same size: same root, or the log signed two trees of one size.
    if (!checkpoint.rootHash.equals(heldRoot)) return { kind: 'fork', reason: 'WITNESS_ROOT_CONFLICT', checkpoint };
    // The tree is the one held; a proof between a tree and itself is empty (RFC 6962 section 2.1.2).
    if (request.proof.length > 0) return error(422, 'WITNESS_CONSISTENCY');
    return { kind: 'cosign', checkpoint };
  }
  // RFC 6962 section 2.1.2 consistency proof from the held tree to this one: else 422, kept as a fork.
  try {
    verifyConsistency(request.oldSize, checkpoint.size, request.proof, heldRoot, checkpoint.rootHash);
  } catch (cause) {
    if (!(cause instanceof LogError)) throw cause;
    return { kind: 'fork', reason: 'WITNESS_CONSISTENCY', checkpoint };
  }
  return { kind: 'cosign', checkpoint };
}

/** The 409 body: the held size in decimal and a newline. */
export function formatTlogSize(size: number): string {
  if (!Number.isSafeInteger(size) || size < 0) throw bodyMalformed('The tree size is not a non-negative integer.');
  return `${size}\n`;
}

/** Reads a 409 body: one decimal line without leading zeros. Throws WITNESS_BODY_MALFORMED. */
export function parseTlogSize(body: Uint8Array): number {
  if (body.length > 32) throw bodyMalformed('The tree size answer is longer than a size.');
  const text = Buffer.from(body).toString('latin1');
  if (!text.endsWith('\n') || !DECIMAL.test(text.slice(0, -1)) || !Number.isSafeInteger(Number(text.slice(0, -1)))) {
    throw bodyMalformed('The tree size answer is not a decimal size and a newline.');
  }
  return Number(text.slice(0, -1));
}

// ---------------------------------------------------------------------------------------------------------
// cosignature/v1 (tlog-cosignature, Ed25519)

/** SHA-256(name || "\n" || 0x04 || 32-byte Ed25519 public key)[:4]. */
export function cosignatureKeyId(name: string, key: PublicKey): Buffer {
  return createHash('sha256')
    .update(name, 'utf8')
    .update('\n')
    .update(Buffer.from([ALG_COSIGNATURE_V1]))
    .update(key.raw)
    .digest()
    .subarray(0, 4);
}

/**
 * The message a cosignature/v1 signs: "cosignature/v1\n", "time T\n" (T in decimal, no leading zeros),
 * then the checkpoint body with its final newline and without signature lines. `checkpointNote` may be the
 * signed note or its body alone.
 */
export function cosignedMessage(checkpointNote: string, timestampSeconds: number): Buffer {
  return Buffer.from(`cosignature/v1\ntime ${timestampSeconds}\n${noteBody(checkpointNote)}`, 'utf8');
}

/** One note signature line, `— name base64(keyID || timestamp || signature)\n`, for the 200 answer. */
export function signCosignature(checkpointNote: string, name: string, key: PrivateKey, timestampSeconds: number): string {
  if (!isValidKeyName(name)) throw cosignatureMalformed('The witness name is not a valid note key name.');
  // tlog-witness: the cosignature MUST NOT omit the timestamp (zero).
  if (!Number.isSafeInteger(timestampSeconds) || timestampSeconds <= 0 || timestampSeconds > MAX_TIMESTAMP) {
    throw cosignatureMalformed('The cosignature timestamp is not a positive number of seconds.');
  }
  parseCheckpoint(noteBody(checkpointNote)); // a cosignature covers a checkpoint, nothing else
  const timestamp = Buffer.alloc(TIMESTAMP_BYTES);
  timestamp.writeBigUInt64BE(BigInt(timestampSeconds));
  const signature = key.sign(cosignedMessage(checkpointNote, timestampSeconds));
  const blob = Buffer.concat([cosignatureKeyId(name, key.publicKey), timestamp, signature]).toString('base64');
  return `${SIGNATURE_PREFIX}${name} ${blob}\n`;
}

/**
 * Checks cosignature lines (a 200 answer, or the signature block of a note) for a checkpoint against the
 * witnesses the caller trusts. Lines of unknown names or key IDs are ignored (tlog-witness: the client MUST
 * ignore them); lines that are not note signature lines, and lines of a known key whose signature does not
 * verify, are refused (signed-note: such a note is malformed) with WITNESS_COSIGNATURE_MALFORMED. Returns
 * the valid cosignatures, one per witness key.
 */
export function verifyCosignatures(
  checkpointNote: string,
  lines: string,
  witnesses: readonly { name: string; key: PublicKey }[],
): { name: string; timestamp: number; line: string }[] {
  if (Buffer.byteLength(lines, 'utf8') > CAPS.cosignatureResponseBytes) {
    throw cosignatureMalformed(`The cosignature answer is over the ${CAPS.cosignatureResponseBytes}-byte cap.`);
  }
  if (lines.length === 0 || !lines.endsWith('\n')) throw cosignatureMalformed('The cosignature lines do not end with a newline.');
  const split = lines.slice(0, -1).split('\n');
  if (split.length > NOTE_LIMITS.maxSignatures) throw cosignatureMalformed('There are too many cosignature lines.');
  const known = new Map(witnesses.map((witness) => [`${witness.name} ${cosignatureKeyId(witness.name, witness.key).toString('hex')}`, witness]));
  const valid: { name: string; timestamp: number; line: string }[] = [];
  const seen = new Set<string>();
  for (const line of split) {
    if (!line.startsWith(SIGNATURE_PREFIX)) throw cosignatureMalformed('A cosignature line does not start with an em dash and a space.');
    const rest = line.slice(SIGNATURE_PREFIX.length);
    const space = rest.indexOf(' ');
    const name = space < 0 ? '' : rest.slice(0, space);
    const encoded = space < 0 ? '' : rest.slice(space + 1);
    if (!isValidKeyName(name) || encoded.length === 0 || !STD_BASE64.test(encoded)) {
      throw cosignatureMalformed('A cosignature line is not a key name and base64.');
    }
    const blob = Buffer.from(encoded, 'base64');
    if (blob.toString('base64') !== encoded || blob.length < 5) throw cosignatureMalformed('A cosignature line is not canonical base64.');
    const id = `${name} ${blob.subarray(0, 4).toString('hex')}`;
    const witness = known.get(id);
    if (witness === undefined || seen.has(id)) continue;
    if (blob.length !== 4 + TIMESTAMP_BYTES + ED25519_SIGNATURE_BYTES) {
      throw cosignatureMalformed('A cosignature by a known witness is not a timestamp and an Ed25519 signature.');
    }
    const timestamp = blob.readBigUInt64BE(4);
    if (timestamp === 0n || timestamp > BigInt(MAX_TIMESTAMP)) throw cosignatureMalformed('A cosignature timestamp is zero or out of range.');
    const seconds = Number(timestamp);
    if (!witness.key.verify(cosignedMessage(checkpointNote, seconds), blob.subarray(4 + TIMESTAMP_BYTES))) {
      throw cosignatureMalformed(`The cosignature by ${name} does not verify.`);
    }
    seen.add(id);
    valid.push({ name, timestamp: seconds, line: `${line}\n` });
  }
  return valid;
}

// ---------------------------------------------------------------------------------------------------------

/** The body of a signed note (up to and including the newline before the blank line), or the text itself. */
function noteBody(note: string): string {
  const split = note.lastIndexOf('\n\n');
  return split < 0 ? note : note.slice(0, split + 1);
}

function originOf(note: string): string | undefined {
  const split = note.lastIndexOf('\n\n');
  if (split < 0) return undefined;
  const end = note.indexOf('\n');
  const origin = note.slice(0, end);
  return origin.length === 0 ? undefined : origin;
}

function error(status: 400 | 403 | 404 | 422, code: ProtocolErrorCode, message?: string): WitnessDecision {
  return { kind: 'error', status, code, message: message ?? PROTOCOL_ERROR_SENTENCES[code] };
}

function bodyMalformed(message: string, details: Record<string, unknown> = {}): ProtocolError {
  return new ProtocolError('WITNESS_BODY_MALFORMED', message, details);
}

function cosignatureMalformed(message: string): ProtocolError {
  return new ProtocolError('WITNESS_COSIGNATURE_MALFORMED', message);
}
