/**
 * Checkpoints and signed notes, as C2SP specifies them, so that golang.org/x/mod/sumdb/note (and any other
 * C2SP implementation) can check what the runner signs:
 *
 * - C2SP tlog-checkpoint: the body is `origin\nsize\nbase64(root)\n` followed by optional extension lines.
 * - C2SP signed-note: `text` + `\n` + one line per signature, `— name base64(keyhash || signature)\n`,
 *   where keyhash is the first 4 bytes of SHA-256(name || "\n" || 0x01 || ed25519 public key) and the
 *   Ed25519 signature covers the text bytes exactly.
 * - C2SP signed-note verifier keys: `name+hex8(keyhash)+base64(0x01 || public key)`.
 *
 * Pure: strings and bytes in, values out, or a coded LogError.
 */
import { createHash } from 'node:crypto';
import { PublicKey, type PrivateKey } from '../core/ed25519.js';
import { LogError } from './errors.js';
import { HASH_BYTES } from './merkle.js';

/** Limits for untrusted notes. A checkpoint is about 150 bytes plus about 100 per signature. */
export const NOTE_LIMITS = {
  maxNoteBytes: 16_384, // bytes, whole note (text and signature lines)
  maxSignatures: 100, // signature lines, as golang.org/x/mod/sumdb/note
} as const;

/** C2SP signed-note: the Ed25519 signature type byte, inside key hashes and verifier keys. */
const ALG_ED25519 = 0x01;
const SIGNATURE_PREFIX = '\u2014 '; // em dash U+2014 and a space
const ED25519_SIGNATURE_BYTES = 64;
const STD_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const DECIMAL = /^(?:0|[1-9][0-9]*)$/;

// ---------------------------------------------------------------------------------------------------------
// Checkpoint body (C2SP tlog-checkpoint)

export interface Checkpoint {
  /** Unique identity of the log; first line. */
  readonly origin: string;
  /** Number of leaves in the tree. */
  readonly size: number;
  /** RFC 9162 root hash of the tree of `size` leaves (32 bytes). */
  readonly rootHash: Buffer;
  /** Extension lines, without their newlines, in order. */
  readonly extensions: readonly string[];
}

function isLineContent(line: string): boolean {
  // C2SP: lines are non-empty and hold no newline; signed-note forbids other ASCII control characters.
  return line.length > 0 && !hasControlCharacter(line, { newline: false, del: false });
}

/** True when the text holds a character below U+0020 (newline allowed if asked), or DEL if not allowed. */
function hasControlCharacter(text: string, allow: { newline: boolean; del: boolean }): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 && !(allow.newline && code === 0x0a)) return true;
    if (code === 0x7f && !allow.del) return true;
  }
  return false;
}

/** The text of a checkpoint, ready to be signed as a note. Throws LOG_CHECKPOINT_MALFORMED on bad input. */
export function formatCheckpoint(checkpoint: Checkpoint): string {
  const { origin, size, rootHash, extensions } = checkpoint;
  if (!isLineContent(origin)) {
    throw new LogError('LOG_CHECKPOINT_MALFORMED', 'The checkpoint origin is empty or holds control characters.');
  }
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new LogError('LOG_CHECKPOINT_MALFORMED', 'The checkpoint size is not a non-negative integer.', { size });
  }
  if (rootHash.length !== HASH_BYTES) {
    throw new LogError('LOG_CHECKPOINT_MALFORMED', 'The checkpoint root hash is not 32 bytes long.', { length: rootHash.length });
  }
  for (const line of extensions) {
    if (!isLineContent(line)) {
      throw new LogError('LOG_CHECKPOINT_MALFORMED', 'A checkpoint extension line is empty or holds control characters.');
    }
  }
  return [origin, String(size), rootHash.toString('base64'), ...extensions].map((line) => `${line}\n`).join('');
}

/**
 * Parses a checkpoint body (the text of a verified note). Every line must end in a newline; the size is
 * ASCII decimal without leading zeros; the root is standard padded base64 of 32 bytes; extension lines are
 * non-empty. Throws LOG_CHECKPOINT_MALFORMED.
 */
export function parseCheckpoint(text: string): Checkpoint {
  if (!text.endsWith('\n')) {
    throw new LogError('LOG_CHECKPOINT_MALFORMED', 'The checkpoint text does not end with a newline.');
  }
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3) {
    throw new LogError('LOG_CHECKPOINT_MALFORMED', 'The checkpoint has fewer than three lines.', { lines: lines.length });
  }
  const [origin, sizeText, rootText, ...extensions] = lines as [string, string, string, ...string[]];
  if (!isLineContent(origin)) {
    throw new LogError('LOG_CHECKPOINT_MALFORMED', 'The checkpoint origin line is empty or holds control characters.');
  }
  if (!DECIMAL.test(sizeText) || !Number.isSafeInteger(Number(sizeText))) {
    throw new LogError('LOG_CHECKPOINT_MALFORMED', 'The checkpoint size is not a decimal number in range.', { size: sizeText });
  }
  if (!STD_BASE64.test(rootText) || Buffer.from(rootText, 'base64').length !== HASH_BYTES) {
    throw new LogError('LOG_CHECKPOINT_MALFORMED', 'The checkpoint root is not base64 of 32 bytes.');
  }
  const rootHash = Buffer.from(rootText, 'base64');
  if (rootHash.toString('base64') !== rootText) {
    throw new LogError('LOG_CHECKPOINT_MALFORMED', 'The checkpoint root is not canonical base64.');
  }
  extensions.forEach((line, position) => {
    if (!isLineContent(line)) {
      throw new LogError('LOG_CHECKPOINT_MALFORMED', 'A checkpoint extension line is empty or holds control characters.', { position });
    }
  });
  return { origin, size: Number(sizeText), rootHash, extensions };
}

// ---------------------------------------------------------------------------------------------------------
// Key names, key hashes, verifier keys (C2SP signed-note)

/** C2SP signed-note: a key name is non-empty, valid UTF-8, and holds no Unicode space and no '+'. */
export function isValidKeyName(name: string): boolean {
  // \s covers Unicode White_Space except U+0085, which Go's unicode.IsSpace also counts.
  return name.length > 0 && isWellFormedUtf16(name) && !/[\s+\u0085]/u.test(name) && !hasControlCharacter(name, { newline: false, del: true });
}

/** True when a string has no lone surrogate, so it encodes to UTF-8 without replacement. */
function isWellFormedUtf16(text: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
}

function checkKeyName(name: string): void {
  if (!isValidKeyName(name)) throw new LogError('LOG_NAME_INVALID', undefined, { name });
}

/** First 4 bytes of SHA-256(name || "\n" || 0x01 || public key), as a big-endian number. */
export function toNoteKeyHash(name: string, publicKey: PublicKey): number {
  const digest = createHash('sha256')
    .update(name, 'utf8')
    .update('\n')
    .update(Buffer.from([ALG_ED25519]))
    .update(publicKey.raw)
    .digest();
  return digest.readUInt32BE(0);
}

/** `name+hex8(keyhash)+base64(0x01 || public key)`, accepted as-is by note.NewVerifier. */
export function toVerifierKey(name: string, publicKey: PublicKey): string {
  checkKeyName(name);
  const hash = toNoteKeyHash(name, publicKey).toString(16).padStart(8, '0');
  const key = Buffer.concat([Buffer.from([ALG_ED25519]), publicKey.raw]).toString('base64');
  return `${name}+${hash}+${key}`;
}

export interface NoteVerifier {
  readonly name: string;
  readonly publicKey: PublicKey;
}

/** Parses a verifier key and checks that its key hash matches its name and key. Throws LOG_VERIFIER_KEY_INVALID. */
export function parseVerifierKey(verifierKey: string): NoteVerifier {
  const invalid = (reason: string): LogError => new LogError('LOG_VERIFIER_KEY_INVALID', undefined, { reason });
  if (verifierKey.length > 1024) throw invalid('too-long');
  // name+hash+key, split at the first two '+' only: standard base64 may itself hold '+'.
  const first = verifierKey.indexOf('+');
  const second = first < 0 ? -1 : verifierKey.indexOf('+', first + 1);
  if (second < 0) throw invalid('not-three-plus-separated-fields');
  const name = verifierKey.slice(0, first);
  const hashText = verifierKey.slice(first + 1, second);
  const keyText = verifierKey.slice(second + 1);
  if (!isValidKeyName(name)) throw invalid('name');
  if (!/^[0-9a-f]{8}$/i.test(hashText)) throw invalid('key-hash-not-8-hex-digits');
  if (!STD_BASE64.test(keyText)) throw invalid('key-not-base64');
  const key = Buffer.from(keyText, 'base64');
  if (key.length !== 1 + 32) throw invalid('key-length');
  if (key[0] !== ALG_ED25519) throw invalid('algorithm-not-ed25519');
  let publicKey: PublicKey;
  try {
    publicKey = PublicKey.fromRaw(key.subarray(1));
  } catch (cause) {
    throw new LogError('LOG_VERIFIER_KEY_INVALID', undefined, { reason: 'ed25519-key' }, { cause });
  }
  if (Number.parseInt(hashText, 16) !== toNoteKeyHash(name, publicKey)) throw invalid('key-hash-mismatch');
  return { name, publicKey };
}

/**
 * The origin line (and note key name) of one runner's log: `edge-runner.local/<runnerId>/<first 16 hex
 * of keyid>`. Unique per runner and key; a valid C2SP key name. Throws LOG_NAME_INVALID if runnerId is
 * empty, longer than 128 characters, or holds anything but printable ASCII other than '+' and '/'.
 */
export function runnerOrigin(runnerId: string, keyid: string): string {
  if (!/^[\x21-\x7e]{1,128}$/.test(runnerId) || runnerId.includes('+') || runnerId.includes('/')) {
    throw new LogError('LOG_NAME_INVALID', 'The runner id cannot be part of a log origin.', { runnerId });
  }
  if (!/^[0-9a-f]{64}$/.test(keyid)) {
    throw new LogError('LOG_NAME_INVALID', 'The keyid is not 64 lowercase hex digits.', { keyid });
  }
  return `edge-runner.local/${runnerId}/${keyid.slice(0, 16)}`;
}

// ---------------------------------------------------------------------------------------------------------
// Signed notes (C2SP signed-note)

/** Signs `text` (which must end in a newline) as a C2SP note with one Ed25519 signature. */
export function signNote(text: string, name: string, key: PrivateKey): string {
  checkKeyName(name);
  if (!text.endsWith('\n') || !isNoteText(text)) {
    throw new LogError('LOG_NOTE_MALFORMED', 'The note text must end with a newline and hold no control characters.');
  }
  const hash = Buffer.alloc(4);
  hash.writeUInt32BE(toNoteKeyHash(name, key.publicKey));
  const signature = key.sign(Buffer.from(text, 'utf8'));
  return `${text}\n${SIGNATURE_PREFIX}${name} ${Buffer.concat([hash, signature]).toString('base64')}\n`;
}

function isNoteText(text: string): boolean {
  // C2SP signed-note: UTF-8 with no ASCII control character (below 0x20) other than newline; the same test
  // as note.Open in golang.org/x/mod/sumdb/note.
  return isWellFormedUtf16(text) && !hasControlCharacter(text, { newline: true, del: true });
}

export interface NoteSignature {
  readonly name: string;
  readonly keyHash: number;
}

export interface VerifiedNote {
  /** The signed text, ending in a newline; the only part of the note that may be trusted. */
  readonly text: string;
  /** Signatures that verified, one per known key. */
  readonly signatures: readonly NoteSignature[];
  /** Signatures by keys the caller did not list (ignored, as C2SP requires). */
  readonly unverified: readonly NoteSignature[];
}

/**
 * Opens a C2SP signed note: checks its framing, then every signature line. Lines from unknown keys are
 * ignored; a line from a known key that does not verify fails the whole note. Step by step:
 *   1. size cap (LOG_NOTE_TOO_LARGE);
 *   2. UTF-8 with no control characters but newline (LOG_NOTE_MALFORMED);
 *   3. split at the last blank line: text ends in a newline, signature block is non-empty and ends in one;
 *   4. each line is `— name base64(keyhash || signature)`, at most NOTE_LIMITS.maxSignatures lines;
 *   5. a known (name, keyhash) whose signature fails: LOG_CHECKPOINT_BAD_SIGNATURE;
 *   6. no signature from a known key: LOG_CHECKPOINT_UNKNOWN_SIGNER.
 */
export function verifyNote(note: Uint8Array | string, verifiers: readonly NoteVerifier[]): VerifiedNote {
  const bytes = typeof note === 'string' ? Buffer.from(note, 'utf8') : Buffer.from(note.buffer, note.byteOffset, note.byteLength);
  const malformed = (reason: string, extra: Record<string, unknown> = {}): LogError =>
    new LogError('LOG_NOTE_MALFORMED', undefined, { reason, ...extra });

  // Step 1: cap before parsing.
  if (bytes.length > NOTE_LIMITS.maxNoteBytes) {
    throw new LogError('LOG_NOTE_TOO_LARGE', undefined, { bytes: bytes.length, limit: NOTE_LIMITS.maxNoteBytes });
  }

  // Step 2: valid UTF-8, no control characters but newline.
  let message: string;
  try {
    message = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw malformed('not-utf8');
  }
  if (!isNoteText(message)) throw malformed('control-character');

  // Step 3: text, blank line, signature block.
  const split = message.lastIndexOf('\n\n');
  if (split < 0) throw malformed('no-signature-block');
  const text = message.slice(0, split + 1);
  const block = message.slice(split + 2);
  if (block.length === 0 || !block.endsWith('\n')) throw malformed('signature-block-not-newline-terminated');

  // Step 4 to 6: signature lines.
  const known = new Map<string, NoteVerifier>();
  for (const verifier of verifiers) known.set(`${verifier.name}+${toNoteKeyHash(verifier.name, verifier.publicKey)}`, verifier);
  const signed = Buffer.from(text, 'utf8');
  const signatures: NoteSignature[] = [];
  const unverified: NoteSignature[] = [];
  const seen = new Set<string>();
  const lines = block.slice(0, -1).split('\n');
  if (lines.length > NOTE_LIMITS.maxSignatures) throw malformed('too-many-signatures', { lines: lines.length });
  for (const line of lines) {
    if (!line.startsWith(SIGNATURE_PREFIX)) throw malformed('signature-line-prefix');
    const rest = line.slice(SIGNATURE_PREFIX.length);
    const space = rest.indexOf(' ');
    if (space < 0) throw malformed('signature-line-fields');
    const name = rest.slice(0, space);
    const encoded = rest.slice(space + 1);
    if (!isValidKeyName(name) || encoded.length === 0 || !STD_BASE64.test(encoded)) throw malformed('signature-line-fields');
    const decoded = Buffer.from(encoded, 'base64');
    // The one canonical encoding of these bytes: spare bits set in the last character would be a channel.
    if (decoded.toString('base64') !== encoded) throw malformed('signature-line-fields');
    if (decoded.length < 5) throw malformed('signature-too-short');
    const keyHash = decoded.readUInt32BE(0);
    const id = `${name}+${keyHash}`;
    const verifier = known.get(id);
    if (verifier === undefined) {
      unverified.push({ name, keyHash });
      continue;
    }
    if (seen.has(id)) continue; // repeated signatures by one key count once
    seen.add(id);
    const signature = decoded.subarray(4);
    if (signature.length !== ED25519_SIGNATURE_BYTES || !verifier.publicKey.verify(signed, signature)) {
      throw new LogError('LOG_CHECKPOINT_BAD_SIGNATURE', undefined, { name, keyHash });
    }
    signatures.push({ name, keyHash });
  }
  if (signatures.length === 0) {
    throw new LogError('LOG_CHECKPOINT_UNKNOWN_SIGNER', undefined, {
      found: unverified.map((s) => `${s.name}+${s.keyHash.toString(16).padStart(8, '0')}`),
      expected: verifiers.map((v) => v.name),
    });
  }
  return { text, signatures, unverified };
}

/** A checkpoint signed as a note by the runner's key under `name` (normally the checkpoint's origin). */
export function signCheckpoint(checkpoint: Checkpoint, name: string, key: PrivateKey): string {
  return signNote(formatCheckpoint(checkpoint), name, key);
}

/**
 * Verifies a signed checkpoint note and parses its body; with `expectedOrigin`, also checks that the
 * checkpoint names that log (LOG_CHECKPOINT_ORIGIN_MISMATCH).
 */
export function verifyCheckpoint(
  note: Uint8Array | string,
  verifiers: readonly NoteVerifier[],
  expectedOrigin?: string,
): Checkpoint & { readonly note: VerifiedNote } {
  const verified = verifyNote(note, verifiers);
  const checkpoint = parseCheckpoint(verified.text);
  if (expectedOrigin !== undefined && checkpoint.origin !== expectedOrigin) {
    throw new LogError('LOG_CHECKPOINT_ORIGIN_MISMATCH', undefined, { expected: expectedOrigin, actual: checkpoint.origin });
  }
  return { ...checkpoint, note: verified };
}
