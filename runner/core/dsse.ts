/**
 * DSSE v1 envelopes (https://github.com/secure-systems-lab/dsse/blob/master/protocol.md).
 *
 * Signatures cover PAE(payloadType, payload). Verification returns the verified payload bytes; callers
 * parse those and never the envelope's payload field a second time. Thresholds count distinct keys; a
 * signature's keyid is a hint only (DESIGN.md).
 */
import { parseBase64, toBase64 } from './base64.js';
import type { PrivateKey, PublicKey } from './ed25519.js';
import { CodedError } from './errors.js';
import { toPrintableExcerpt } from './printable.js';

export interface Signature {
  keyid?: string;
  sig: string;
}

export interface Envelope {
  payloadType: string;
  payload: string;
  signatures: Signature[];
}

export type DsseErrorCode =
  | 'DSSE_MALFORMED'
  | 'DSSE_PAYLOAD_TYPE'
  | 'DSSE_BASE64_INVALID'
  | 'DSSE_NO_VALID_SIGNATURE'
  | 'DSSE_SIGNATURE_DUPLICATE'
  | 'DSSE_KEYID_MISMATCH'
  | 'DSSE_SIGNER_ROLE'
  | 'DSSE_THRESHOLD';

export class DsseError extends CodedError<DsseErrorCode> {}

export const MAX_SIGNATURES = 32;

/** DSSE protocol: PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body. */
export function pae(payloadType: string, payload: Uint8Array): Buffer {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `, 'ascii'), type, Buffer.from(` ${payload.length} `, 'ascii'), payload]);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Checks the envelope's shape (not its signatures). Unknown members are refused: the format is closed. */
export function parseEnvelope(value: unknown): Envelope {
  const malformed = (why: string): DsseError => new DsseError('DSSE_MALFORMED', `The envelope is malformed: ${why}.`);
  if (!isRecord(value)) throw malformed('it is not a JSON object');
  for (const key of Object.keys(value)) {
    if (!['payloadType', 'payload', 'signatures'].includes(key)) throw malformed(`unexpected member "${toPrintableExcerpt(key)}"`);
  }
  const { payloadType, payload, signatures } = value;
  if (typeof payloadType !== 'string' || payloadType.length === 0 || payloadType.length > 256) {
    throw malformed('payloadType is missing or not a short string');
  }
  if (typeof payload !== 'string') throw malformed('payload is missing or not a string');
  if (!Array.isArray(signatures) || signatures.length === 0) throw malformed('there are no signatures');
  if (signatures.length > MAX_SIGNATURES) throw malformed(`more than ${MAX_SIGNATURES} signatures`);
  const parsed: Signature[] = signatures.map((entry: unknown) => {
    if (!isRecord(entry)) throw malformed('a signature is not an object');
    for (const key of Object.keys(entry)) {
      if (key !== 'keyid' && key !== 'sig') throw malformed(`unexpected signature member "${toPrintableExcerpt(key)}"`);
    }
    if (typeof entry.sig !== 'string') throw malformed('a signature has no sig');
    if (entry.keyid !== undefined && typeof entry.keyid !== 'string') throw malformed('a keyid is not a string');
    return entry.keyid === undefined ? { sig: entry.sig } : { keyid: entry.keyid, sig: entry.sig };
  });
  return { payloadType, payload, signatures: parsed };
}

export function signEnvelope(payloadType: string, payload: Uint8Array, keys: readonly PrivateKey[]): Envelope {
  const message = pae(payloadType, payload);
  return {
    payloadType,
    payload: toBase64(payload),
    signatures: keys.map((key) => ({ keyid: key.keyid, sig: toBase64(key.sign(message)) })),
  };
}

export interface TrustedKey {
  keyid: string;
  publicKey: PublicKey;
  roles: readonly string[];
}

export interface VerifyOptions {
  payloadType: string;
  /** Every key the trust document lists; the role decides which of them count. */
  keys: readonly TrustedKey[];
  role: string;
  threshold: number;
}

export interface VerifiedEnvelope {
  payload: Buffer;
  /** Distinct keyids, with the role, whose signatures verified. */
  signers: string[];
  /**
   * The envelope rebuilt from what verified: the payload, and one signature per counted key with its true
   * keyid, canonical base64 throughout. Nothing unauthenticated (an extra signature, a keyid hint of any
   * length) survives into a document we pass on.
   */
  verifiedEnvelope: Envelope;
}

type SignatureOutcome = { kind: 'valid'; keyid: string; hasRole: boolean; signature: Buffer } | { kind: 'keyid-mismatch' } | { kind: 'invalid' };

/**
 * Verifies an envelope against a role threshold. Throws DsseError with the most specific code when the
 * threshold is not met, so an operator can tell a forged signature from a missing co-signer.
 */
export function verifyEnvelope(envelope: Envelope, options: VerifyOptions): VerifiedEnvelope {
  // DSSE protocol, verification step 1: the payloadType is authenticated by PAE, but a type we do not
  // expect is refused before any signature work so a trust document cannot be replayed as a capsule.
  if (envelope.payloadType !== options.payloadType) {
    throw new DsseError('DSSE_PAYLOAD_TYPE', `The envelope's payloadType is not ${options.payloadType}.`, {
      expected: options.payloadType,
      actual: envelope.payloadType,
    });
  }
  const payload = decode(envelope.payload, 'payload');
  const message = pae(envelope.payloadType, payload);
  const byKeyid = new Map(options.keys.map((key) => [key.keyid, key]));

  const outcomes: SignatureOutcome[] = envelope.signatures.map(({ keyid, sig }) => {
    const signature = decode(sig, 'signature');
    const hinted = keyid === undefined ? undefined : byKeyid.get(keyid);
    if (hinted) {
      if (hinted.publicKey.verify(message, signature)) {
        return { kind: 'valid', keyid: hinted.keyid, hasRole: hinted.roles.includes(options.role), signature };
      }
      // The hint names a trusted key that did not make this signature: it counts for nothing, and if
      // another trusted key did make it, someone relabelled a signature to fake a second signer.
      const other = options.keys.some((key) => key !== hinted && key.publicKey.verify(message, signature));
      return other ? { kind: 'keyid-mismatch' } : { kind: 'invalid' };
    }
    // No hint, or a hint to no key we know: try every trusted key (keyids are hints only).
    for (const key of options.keys) {
      if (key.publicKey.verify(message, signature)) {
        return { kind: 'valid', keyid: key.keyid, hasRole: key.roles.includes(options.role), signature };
      }
    }
    return { kind: 'invalid' };
  });

  const signers = new Map<string, Buffer>();
  let duplicates = 0;
  let wrongRole = 0;
  let mismatched = 0;
  for (const outcome of outcomes) {
    if (outcome.kind === 'keyid-mismatch') mismatched++;
    if (outcome.kind !== 'valid') continue;
    if (!outcome.hasRole) wrongRole++;
    else if (signers.has(outcome.keyid)) duplicates++;
    else signers.set(outcome.keyid, outcome.signature);
  }
  const found = { threshold: options.threshold, actual: signers.size, role: options.role };
  if (signers.size >= options.threshold && options.threshold >= 1) {
    const keyids = [...signers.keys()].sort();
    return {
      payload,
      signers: keyids,
      verifiedEnvelope: {
        payloadType: envelope.payloadType,
        payload: toBase64(payload),
        signatures: keyids.map((keyid) => ({ keyid, sig: toBase64(signers.get(keyid)!) })),
      },
    };
  }
  if (mismatched > 0) {
    throw new DsseError('DSSE_KEYID_MISMATCH', 'A signature names a trusted key that did not make it.', found);
  }
  if (duplicates > 0) {
    throw new DsseError('DSSE_SIGNATURE_DUPLICATE', 'The same key signed more than once; a key counts once toward the threshold.', found);
  }
  if (wrongRole > 0) {
    throw new DsseError('DSSE_SIGNER_ROLE', `A valid signature comes from a key without the ${options.role} role.`, found);
  }
  if (signers.size === 0) {
    throw new DsseError('DSSE_NO_VALID_SIGNATURE', `No signature verifies with a trusted ${options.role} key.`, found);
  }
  throw new DsseError('DSSE_THRESHOLD', `Only ${signers.size} of the ${options.threshold} required ${options.role} signatures verify.`, found);
}

function decode(text: string, what: string): Buffer {
  try {
    return parseBase64(text, `envelope ${what}`);
  } catch {
    throw new DsseError('DSSE_BASE64_INVALID', `The envelope ${what} is not valid base64.`);
  }
}
