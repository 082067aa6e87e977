import { createHash, createPublicKey, generateKeyPairSync, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import nacl from 'tweetnacl';
import { describe, expect, it } from 'vitest';
import { PrivateKey, PublicKey, verifyWithTweetnacl, isCanonicalScalar, isWellFormedSignature, verifyKeyPair } from '../../../runner/core/ed25519.js';
import { addPoints, decodePoint, isAcceptableR, isIdentity, publicKeyProblem, type AffinePoint } from '../../../runner/core/edwards25519.js';
import type { CoreError } from '../../../runner/core/errors.js';
import {
  IDENTITY,
  IDENTITY_FORGERY,
  L,
  P,
  SMALL_ORDER_ALIASES,
  SMALL_ORDER_POINTS,
  Y8,
  encode,
  fromLe,
  keyidOfRaw,
  pemOfRaw,
  spkiOf,
  toLe,
} from '../../helpers/small-order.js';

interface WycheproofTest {
  tcId: number;
  comment: string;
  msg: string;
  sig: string;
  result: 'valid' | 'invalid' | 'acceptable';
  flags: string[];
}
interface WycheproofGroup {
  publicKey: { pk: string };
  tests: WycheproofTest[];
}

const vectors = JSON.parse(readFileSync(new URL('../../fixtures/wycheproof/ed25519_test.json', import.meta.url), 'utf8')) as {
  numberOfTests: number;
  testGroups: WycheproofGroup[];
};

const cases = vectors.testGroups.flatMap((group) => group.tests.map((test) => ({ pk: group.publicKey.pk, ...test })));

function verifyNode(pkHex: string, msg: Buffer, sig: Buffer): boolean {
  let key: PublicKey;
  try {
    key = PublicKey.fromRaw(Buffer.from(pkHex, 'hex'));
  } catch {
    return false;
  }
  return key.verify(msg, sig);
}

describe('Ed25519 against Wycheproof ed25519_test.json', () => {
  it('holds every test case the file announces', () => {
    expect(cases.length).toBe(vectors.numberOfTests);
  });

  describe.each(cases)('tcId $tcId ($comment)', ({ pk, msg, sig, result }) => {
    const m = Buffer.from(msg, 'hex');
    const s = Buffer.from(sig, 'hex');
    const expected = result === 'valid';
    it(`node:crypto says ${result}`, () => {
      expect(verifyNode(pk, m, s)).toBe(expected);
    });
    it(`tweetnacl (strict wrapper) says ${result}`, () => {
      expect(verifyWithTweetnacl(Buffer.from(pk, 'hex'), m, s)).toBe(expected);
    });
  });
});

describe('Ed25519 strictness', () => {
  const key = PrivateKey.generate();
  const message = Buffer.from('edge-runner');
  const good = key.sign(message);
  // S + L: the malleated signature tweetnacl 1.0.3 accepts on its own.
  const L = (1n << 252n) + 27742317777372353535851937790883648493n;
  const sPlusL = (() => {
    let s = 0n;
    for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(good[32 + i]!);
    s += L;
    const out = Buffer.from(good);
    for (let i = 0; i < 32; i++) {
      out[32 + i] = Number(s & 0xffn);
      s >>= 8n;
    }
    return out;
  })();

  it('accepts a fresh signature in both implementations', () => {
    expect(key.publicKey.verify(message, good)).toBe(true);
    expect(verifyWithTweetnacl(key.publicKey.raw, message, good)).toBe(true);
  });

  it('rejects a signature with S >= L in both implementations', () => {
    expect(isCanonicalScalar(sPlusL)).toBe(false);
    expect(key.publicKey.verify(message, sPlusL)).toBe(false);
    expect(verifyWithTweetnacl(key.publicKey.raw, message, sPlusL)).toBe(false);
  });

  it('rejects truncated and extended signatures', () => {
    expect(key.publicKey.verify(message, good.subarray(0, 63))).toBe(false);
    expect(key.publicKey.verify(message, Buffer.concat([good, Buffer.alloc(1)]))).toBe(false);
    expect(verifyWithTweetnacl(key.publicKey.raw, message, good.subarray(0, 63))).toBe(false);
  });

  it('rejects a public key of the wrong length', () => {
    expect(() => PublicKey.fromRaw(Buffer.alloc(31))).toThrow(/32-byte/);
  });

  it('derives the keyid as the SHA-256 of the SPKI DER', () => {
    const pem = key.publicKey.toPem();
    expect(PublicKey.fromPem(pem).keyid).toBe(key.keyid);
    expect(key.keyid).toMatch(/^[0-9a-f]{64}$/);
  });
});

/*
 * Issue 8, point 10: small-order keys forge signatures. What each engine returns on its own, and what ours
 * returns. The engines, raw:
 * - node:crypto (OpenSSL) imports any 32 bytes as a key (no point check at import). On Node 24 (OpenSSL
 *   3.5.9) verify refuses every forgery below; on Node 20 (OpenSSL 3.0.19, and the system openssl of this
 *   host) it accepts the identity key with R = identity, S = 0 for any message (checked by hand, and in
 *   test/integration/holes-trust.test.ts when that openssl is installed). So the runtime alone decides, and
 *   a verifier with standard tools may not refuse it: the checks have to be ours.
 * - tweetnacl 1.0.3 checks only the cofactorless equation [S]B = R + [k]A on points it decoded leniently,
 *   so it accepts every forgery below, S + L, and a valid equation with R = identity.
 */
describe('issue 8, point 10: small-order points and non-canonical encodings', () => {
  const message = Buffer.from('any capsule at all');

  function nodeRaw(raw: Uint8Array, msg: Uint8Array, sig: Uint8Array): boolean {
    const key = createPublicKey({ key: spkiOf(raw), format: 'der', type: 'spki' });
    return nodeVerify(null, msg, key, sig);
  }

  /** For a small-order A and S = 0, some small-order R satisfies R = -[k]A (k hashes R): tweetnacl accepts it. */
  function forgeryFor(a: Buffer): { msg: Buffer; sig: Buffer } {
    for (let i = 0; i < 64; i++) {
      const msg = Buffer.from(`forged ${i}`);
      for (const { encoding } of SMALL_ORDER_POINTS) {
        const sig = Buffer.concat([encoding, Buffer.alloc(32)]);
        if (nacl.sign.detached.verify(msg, sig, a)) return { msg, sig };
      }
    }
    throw new Error(`no forgery found for ${a.toString('hex')}`);
  }

  function affine(encoding: Buffer): AffinePoint {
    const point = decodePoint(encoding);
    if (typeof point === 'string') throw new Error(`${encoding.toString('hex')} does not decode: ${point}`);
    return point;
  }

  function orderOf(point: AffinePoint): number {
    let q = point;
    for (let n = 1; n <= 8; n++) {
      if (isIdentity(q)) return n;
      q = addPoints(q, point);
    }
    return Infinity;
  }

  it('lists all eight small-order points: distinct, orders 1, 2, 4, 4, 8, 8, 8, 8 (affine addition, not the checked code path)', () => {
    const points = SMALL_ORDER_POINTS.map(({ encoding }) => affine(encoding));
    expect(new Set(points.map((p) => `${p.x}:${p.y}`)).size).toBe(8);
    expect(points.map(orderOf)).toEqual(SMALL_ORDER_POINTS.map(({ order }) => order));
    // The order-8 y solve d y^4 + 2 y^2 - 1 = 0 (doubling lands on y = 0, x^2 = -y^2): a check that Y8 is derived,
    // not only copied.
    const d = (((-121665n * modPow(121666n, P - 2n)) % P) + P) % P;
    const y2 = (Y8 * Y8) % P;
    expect((((d * y2 * y2 + 2n * y2 - 1n) % P) + P) % P).toBe(0n);
  });

  describe.each([...SMALL_ORDER_POINTS, ...SMALL_ORDER_ALIASES])('public key $name', ({ encoding }) => {
    it('is refused by PublicKey (CORE_KEY_INVALID: small-order or non-canonical) and by the tweetnacl wrapper', () => {
      let code: string | undefined;
      let reason: unknown;
      try {
        PublicKey.fromRaw(encoding);
      } catch (err) {
        code = (err as CoreError).code;
        reason = (err as CoreError).details.reason;
      }
      expect(code).toBe('CORE_KEY_INVALID');
      expect(['small-order', 'non-canonical']).toContain(reason);
      const { msg, sig } = forgeryFor(encoding);
      expect(verifyWithTweetnacl(encoding, msg, sig)).toBe(false);
    });

    it('has a forgery with S = 0 that tweetnacl raw accepts and node:crypto raw (OpenSSL 3.5) refuses', () => {
      const { msg, sig } = forgeryFor(encoding);
      expect(nacl.sign.detached.verify(msg, sig, encoding)).toBe(true);
      expect(nodeRaw(encoding, msg, sig)).toBe(false);
    });
  });

  it('refuses the review forgery (identity key, R = identity, S = 0) everywhere it is ours; tweetnacl raw accepts it for any message', () => {
    expect(nacl.sign.detached.verify(message, IDENTITY_FORGERY, IDENTITY)).toBe(true);
    expect(nacl.sign.detached.verify(Buffer.from('another'), IDENTITY_FORGERY, IDENTITY)).toBe(true);
    expect(nodeRaw(IDENTITY, message, IDENTITY_FORGERY)).toBe(false);
    expect(() => PublicKey.fromRaw(IDENTITY)).toThrow(/small order/);
    expect(() => PublicKey.fromPem(pemOfRaw(IDENTITY))).toThrow(/small order/);
    expect(verifyWithTweetnacl(IDENTITY, message, IDENTITY_FORGERY)).toBe(false);
  });

  it('refuses every encoding with y >= p (p .. 2^255 - 1, both sign bits) as non-canonical, on the curve or not', () => {
    for (let y = P; y < 1n << 255n; y++) {
      for (const sign of [0, 1] as const) {
        expect(publicKeyProblem(encode(y, sign))).toBe('non-canonical');
        expect(() => PublicKey.fromRaw(encode(y, sign))).toThrow(/canonical/);
      }
    }
  });

  it('refuses y + p for a point of large order: node:crypto imports it under a second keyid, ours refuses it', () => {
    // The y below 19 that are on the curve and not small-order have a second encoding y + p < 2^255.
    const aliased = [...Array(19).keys()].map((y) => BigInt(y)).filter((y) => publicKeyProblem(encode(y)) === undefined);
    expect(aliased.length).toBeGreaterThan(0);
    for (const y of aliased) {
      const canonical = PublicKey.fromRaw(encode(y));
      const alias = encode(y + P);
      expect(createPublicKey({ key: spkiOf(alias), format: 'der', type: 'spki' }).asymmetricKeyType).toBe('ed25519');
      expect(keyidOfRaw(alias)).not.toBe(canonical.keyid);
      expect(publicKeyProblem(alias)).toBe('non-canonical');
    }
  });

  it('refuses points that are not on the curve', () => {
    const off = [...Array(64).keys()].map((y) => encode(BigInt(y) + 2n)).find((e) => decodePoint(e) === 'not-on-curve')!;
    expect(() => PublicKey.fromRaw(off)).toThrow(/not a point on the Ed25519 curve/);
  });

  describe('signatures whose R is small-order or non-canonical, under an honest key', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url');
    const seed = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
    const az = Buffer.from(createHash('sha512').update(seed).digest().subarray(0, 32));
    az[0]! &= 248;
    az[31]! &= 127;
    az[31]! |= 64;
    const a = fromLe(az);
    const ours = PublicKey.fromRaw(raw);
    /** S = k a mod L makes [S]B = R + [k]A hold for R = identity (any encoding of it): a valid cofactorless equation. */
    const withIdentityR = (r: Buffer) => {
      const k = fromLe(createHash('sha512').update(r).update(raw).update(message).digest()) % L;
      return Buffer.concat([r, toLe((k * a) % L)]);
    };

    it('R = identity with a valid equation: tweetnacl raw accepts, node:crypto raw (OpenSSL 3.5) refuses, ours refuses', () => {
      const sig = withIdentityR(IDENTITY);
      expect(nacl.sign.detached.verify(message, sig, raw)).toBe(true);
      expect(nodeVerify(null, message, publicKey, sig)).toBe(false);
      expect(ours.verify(message, sig)).toBe(false);
      expect(verifyWithTweetnacl(raw, message, sig)).toBe(false);
    });

    it.each(SMALL_ORDER_POINTS.filter((p) => p.order > 1))(
      'R = $name: no valid equation exists; both raw engines and ours refuse',
      ({ encoding }) => {
        const sig = Buffer.concat([encoding, toLe(12345n)]);
        expect(nacl.sign.detached.verify(message, sig, raw)).toBe(false);
        expect(nodeVerify(null, message, publicKey, sig)).toBe(false);
        expect(ours.verify(message, sig)).toBe(false);
        expect(verifyWithTweetnacl(raw, message, sig)).toBe(false);
      },
    );

    it.each(SMALL_ORDER_ALIASES)(
      'R = $name (identity or small-order, non-canonical): both raw engines refuse (they compare R with a canonical encoding), so do we',
      ({ encoding }) => {
        const sig = withIdentityR(encoding);
        expect(nacl.sign.detached.verify(message, sig, raw)).toBe(false);
        expect(nodeVerify(null, message, publicKey, sig)).toBe(false);
        expect(isWellFormedSignature(sig)).toBe(false);
        expect(verifyWithTweetnacl(raw, message, sig)).toBe(false);
      },
    );

    it('S + L: tweetnacl raw accepts, node:crypto raw refuses (OpenSSL checks S < L), ours refuses', () => {
      const good = nodeSign(null, message, privateKey);
      const s = fromLe(good.subarray(32)) + L;
      const malleated = Buffer.concat([good.subarray(0, 32), toLe(s)]);
      expect(nacl.sign.detached.verify(message, malleated, raw)).toBe(true);
      expect(nodeVerify(null, message, publicKey, malleated)).toBe(false);
      expect(ours.verify(message, malleated)).toBe(false);
      expect(verifyWithTweetnacl(raw, message, malleated)).toBe(false);
    });
  });

  it('refuses on R, before either engine, only Wycheproof cases that are invalid anyway and that both engines refused already (R special values, R == 0, y = 1 with the sign bit)', () => {
    const refused = cases.filter(({ pk, sig }) => {
      const s = Buffer.from(sig, 'hex');
      return publicKeyProblem(Buffer.from(pk, 'hex')) !== undefined || (s.length === 64 && !isAcceptableR(s.subarray(0, 32)));
    });
    expect(refused.map(({ tcId }) => tcId)).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 25, 26, 27, 28, 29, 60, 61, 151]);
    expect(refused.every(({ result }) => result === 'invalid')).toBe(true);
    // No Wycheproof public key is small-order or non-canonical.
    expect(vectors.testGroups.every((group) => publicKeyProblem(Buffer.from(group.publicKey.pk, 'hex')) === undefined)).toBe(true);
  });

  it('passes a fresh key pair through verifyKeyPair (keygen and init run it before a key is written or used)', () => {
    expect(() => verifyKeyPair(PrivateKey.generate())).not.toThrow();
  });
});

function modPow(base: bigint, exponent: bigint): bigint {
  let result = 1n;
  let b = base % P;
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % P;
    b = (b * b) % P;
  }
  return result;
}
