/**
 * Ed25519, RFC 8032, verified strictly.
 *
 * The engine is node:crypto (OpenSSL): one KeyObject per key, made once. tweetnacl is the second,
 * independent implementation used by differential tests and by verifiers without node:crypto. Neither is
 * trusted to be strict on its own, so both sit behind the same checks, made here before either runs:
 * - a public key is a canonical encoding (y < p, no sign bit on x = 0) of a point on the curve that is not
 *   of small order (edwards25519.ts), checked once when the key is loaded, whatever the path (raw, SPKI,
 *   PEM, derived from a private key);
 * - a signature is 64 bytes, its S is below L (RFC 8032 section 5.1.7; tweetnacl 1.0.3 accepts S + L) and its
 *   R is canonical and not of small order (libsodium's rule).
 * OpenSSL 3.0 (Node 20, most distributions' openssl) accepts the identity key with R = identity, S = 0 for any
 * message, and tweetnacl does too; OpenSSL 3.5 (Node 24) refuses it. test/unit/core/ed25519.test.ts records
 * what each engine returns on its own.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import nacl from 'tweetnacl';
import { CoreError } from './errors.js';
import { sha256Hex } from './digest.js';
import { isAcceptableR, publicKeyProblem, type PointProblem } from './edwards25519.js';

export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;

// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING }.
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

// Group order L = 2^252 + 27742317777372353535851937790883648493, little-endian as in signatures.
const L_LE = Buffer.from('edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010', 'hex');

export class PublicKey {
  /** Lowercase hex SHA-256 of the SPKI DER encoding (DESIGN.md: keyid). */
  readonly keyid: string;
  readonly raw: Buffer;
  readonly spkiDer: Buffer;
  readonly keyObject: KeyObject;

  private constructor(raw: Buffer) {
    const problem = publicKeyProblem(raw);
    if (problem) throw new CoreError('CORE_KEY_INVALID', KEY_PROBLEM_MESSAGES[problem], { reason: problem });
    this.raw = raw;
    this.spkiDer = Buffer.concat([SPKI_PREFIX, raw]);
    this.keyid = sha256Hex(this.spkiDer);
    this.keyObject = createPublicKey({ key: this.spkiDer, format: 'der', type: 'spki' });
  }

  static fromRaw(raw: Uint8Array): PublicKey {
    if (raw.length !== PUBLIC_KEY_BYTES) {
      throw new CoreError('CORE_KEY_INVALID', 'The public key is not a 32-byte Ed25519 key.');
    }
    return new PublicKey(Buffer.from(raw));
  }

  static fromSpkiDer(der: Uint8Array): PublicKey {
    const bytes = Buffer.from(der);
    if (bytes.length !== SPKI_PREFIX.length + PUBLIC_KEY_BYTES || !bytes.subarray(0, SPKI_PREFIX.length).equals(SPKI_PREFIX)) {
      throw new CoreError('CORE_KEY_INVALID', 'The public key is not an Ed25519 SubjectPublicKeyInfo.');
    }
    return new PublicKey(bytes.subarray(SPKI_PREFIX.length));
  }

  static fromPem(pem: string): PublicKey {
    let key: KeyObject;
    try {
      key = createPublicKey({ key: pem, format: 'pem' });
    } catch (cause) {
      throw new CoreError('CORE_KEY_INVALID', 'The public key PEM cannot be read.', {}, { cause });
    }
    if (key.asymmetricKeyType !== 'ed25519') {
      throw new CoreError('CORE_KEY_INVALID', 'The public key is not an Ed25519 key.');
    }
    const publicKey = PublicKey.fromSpkiDer(key.export({ format: 'der', type: 'spki' }));
    // Exactly the one PEM of this key (toPem, the final newline optional): OpenSSL skips text around the
    // block and derives a public key from a private one, so a trust document could carry other words, or
    // a private key, in a field every runner and auditor receives.
    const canonical = publicKey.toPem();
    if (pem !== canonical && pem !== canonical.slice(0, -1)) {
      throw new CoreError('CORE_KEY_INVALID', 'The public key is not exactly one SPKI "PUBLIC KEY" PEM block (other text, or a private key).', {
        reason: 'not exactly one public key PEM block',
      });
    }
    return publicKey;
  }

  toPem(): string {
    return this.keyObject.export({ format: 'pem', type: 'spki' }).toString();
  }

  /** Strict verification with node:crypto. Never throws on a bad signature; returns false. */
  verify(message: Uint8Array, signature: Uint8Array): boolean {
    if (!isWellFormedSignature(signature)) return false;
    try {
      return verify(null, message, this.keyObject, signature);
    } catch {
      return false;
    }
  }
}

export class PrivateKey {
  readonly keyObject: KeyObject;
  readonly publicKey: PublicKey;

  private constructor(keyObject: KeyObject) {
    this.keyObject = keyObject;
    this.publicKey = PublicKey.fromSpkiDer(createPublicKey(keyObject).export({ format: 'der', type: 'spki' }));
  }

  static generate(): PrivateKey {
    return new PrivateKey(generateKeyPairSync('ed25519').privateKey);
  }

  static fromPem(pem: string): PrivateKey {
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: pem, format: 'pem' });
    } catch (cause) {
      throw new CoreError('CORE_KEY_INVALID', 'The private key PEM cannot be read.', {}, { cause });
    }
    if (key.asymmetricKeyType !== 'ed25519') {
      throw new CoreError('CORE_KEY_INVALID', 'The private key is not an Ed25519 key.');
    }
    return new PrivateKey(key);
  }

  get keyid(): string {
    return this.publicKey.keyid;
  }

  toPem(): string {
    return this.keyObject.export({ format: 'pem', type: 'pkcs8' }).toString();
  }

  sign(message: Uint8Array): Buffer {
    return sign(null, message, this.keyObject);
  }
}

const KEY_PROBLEM_MESSAGES: Record<PointProblem, string> = {
  'non-canonical': 'The public key is not the canonical encoding of an Ed25519 point.',
  'not-on-curve': 'The public key is not a point on the Ed25519 curve.',
  'small-order': 'The public key is a point of small order, whose signatures anyone can forge.',
};

/** The checks on a signature that come before either engine: length, S < L, R canonical and not small-order. */
export function isWellFormedSignature(signature: Uint8Array): boolean {
  return signature.length === SIGNATURE_BYTES && isCanonicalScalar(signature) && isAcceptableR(signature.subarray(0, 32));
}

const SELF_TEST_MESSAGE = Buffer.from('edge-runner key pair self-test');

/**
 * Checks a key pair before it is written or used: its public half passed the point checks (the constructor),
 * and a signature made with the private half verifies under the public half in both engines, so a PKCS#8
 * file whose embedded public key is not the seed's is refused. Throws CORE_KEY_INVALID.
 */
export function verifyKeyPair(key: PrivateKey): void {
  const signature = key.sign(SELF_TEST_MESSAGE);
  if (!key.publicKey.verify(SELF_TEST_MESSAGE, signature) || !verifyWithTweetnacl(key.publicKey.raw, SELF_TEST_MESSAGE, signature)) {
    throw new CoreError('CORE_KEY_INVALID', 'The private key does not sign for its public key.', { reason: 'pair-mismatch' });
  }
}

/** True when the S half of a signature is below the group order L (RFC 8032 section 5.1.7 step 1). */
export function isCanonicalScalar(signature: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_BYTES) return false;
  for (let i = 31; i >= 0; i--) {
    const s = signature[32 + i]!;
    const l = L_LE[i]!;
    if (s < l) return true;
    if (s > l) return false;
  }
  return false; // S == L
}

/**
 * The second implementation: tweetnacl, with the checks it lacks. Same answers as `PublicKey.verify`
 * on every Wycheproof vector (test/unit/core/ed25519.test.ts).
 */
export function verifyWithTweetnacl(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== PUBLIC_KEY_BYTES || publicKeyProblem(publicKey) !== undefined) return false;
  if (!isWellFormedSignature(signature)) return false;
  return nacl.sign.detached.verify(message, signature, publicKey);
}
