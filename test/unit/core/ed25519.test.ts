import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PrivateKey, PublicKey, verifyWithTweetnacl, isCanonicalScalar } from '../../../runner/core/ed25519.js';

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
