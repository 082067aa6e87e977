import { describe, expect, it } from 'vitest';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { signEnvelope } from '../../../runner/core/dsse.js';
import { TRUST_MAX_BYTES, TRUST_PAYLOAD_TYPE, verifyTrustDocument, verifyTrustUpdate } from '../../../runner/trust/trust.js';
import { makeTrustBody, signTrust } from '../../helpers/world.js';
import { codeOf } from '../../helpers/codes.js';

const now = new Date();
const rootA = PrivateKey.generate();
const rootB = PrivateKey.generate();
const signer = PrivateKey.generate();

function body(version = 1, roots = [rootA], rootThreshold = 1) {
  return {
    ...makeTrustBody(
      [
        ...roots.map((key, i) => ({ name: `root-${i}`, key, roles: ['root' as const] })),
        { name: 'signer', key: signer, roles: ['capsule-signer' as const] },
      ],
      { root: rootThreshold },
    ),
    version,
  };
}

describe('verifyTrustDocument', () => {
  it('accepts a document signed by its root threshold and lists its keys', () => {
    const trust = verifyTrustDocument(signTrust(body(), [rootA]), { now });
    expect(trust.signers).toEqual([rootA.keyid]);
    expect(trust.keyByName('signer', 'capsule-signer')?.keyid).toBe(signer.keyid);
  });

  describe('when the root threshold is 2 and one root signed', () => {
    it('rejects with TRUST_SIGNATURE', () => {
      expect(codeOf(() => verifyTrustDocument(signTrust(body(1, [rootA, rootB], 2), [rootA]), { now }))).toBe('TRUST_SIGNATURE');
    });
  });

  describe('when a capsule signer, not a root, signed it', () => {
    it('rejects with TRUST_SIGNATURE', () => {
      expect(codeOf(() => verifyTrustDocument(signTrust(body(), [signer]), { now }))).toBe('TRUST_SIGNATURE');
    });
  });

  describe('when a listed keyid is not the digest of its key', () => {
    it('rejects with TRUST_KEYID_MISMATCH', () => {
      const b = body();
      const entry = b.keys[signer.keyid]!;
      delete b.keys[signer.keyid];
      b.keys['0'.repeat(64)] = entry;
      expect(codeOf(() => verifyTrustDocument(signTrust(b, [rootA]), { now }))).toBe('TRUST_KEYID_MISMATCH');
    });
  });

  describe('when it has expired', () => {
    it('rejects with TRUST_EXPIRED, and still verifies when no clock is given (offline audit)', () => {
      const b = { ...body(), expires: '2020-01-01T00:00:00Z' };
      expect(codeOf(() => verifyTrustDocument(signTrust(b, [rootA]), { now }))).toBe('TRUST_EXPIRED');
      expect(verifyTrustDocument(signTrust(b, [rootA])).body.version).toBe(1);
    });
  });

  describe('when a field is outside the schema', () => {
    it('rejects with TRUST_SCHEMA', () => {
      expect(codeOf(() => verifyTrustDocument(signTrust({ ...body(), extra: true } as never, [rootA]), { now }))).toBe('TRUST_SCHEMA');
    });
  });

  describe('when it is not an envelope, or too large', () => {
    it('rejects with TRUST_UNPARSEABLE and TRUST_TOO_LARGE', () => {
      expect(codeOf(() => verifyTrustDocument(Buffer.from('nope'), { now }))).toBe('TRUST_UNPARSEABLE');
      expect(codeOf(() => verifyTrustDocument(Buffer.alloc(TRUST_MAX_BYTES + 1, 0x20), { now }))).toBe('TRUST_TOO_LARGE');
    });
  });

  describe('when the payloadType is a capsule type', () => {
    it('rejects with TRUST_SIGNATURE', () => {
      const envelope = signEnvelope('application/vnd.edge-runner.capsule.v1+json', Buffer.from(JSON.stringify(body())), [rootA]);
      expect(codeOf(() => verifyTrustDocument(Buffer.from(JSON.stringify(envelope)), { now }))).toBe('TRUST_SIGNATURE');
      expect(TRUST_PAYLOAD_TYPE).toBe('application/vnd.edge-runner.trust.v1+json');
    });
  });
});

describe('verifyTrustUpdate (TUF 5.3)', () => {
  const current = verifyTrustDocument(signTrust(body(1), [rootA]), { now });

  it('accepts version + 1 signed by the old and the new roots (root rotation)', () => {
    const next = signTrust(body(2, [rootB]), [rootA, rootB]);
    expect(verifyTrustUpdate(current, next, now).body.version).toBe(2);
  });

  describe('when the new version is signed only by the new root', () => {
    it('rejects with TRUST_SIGNATURE', () => {
      expect(codeOf(() => verifyTrustUpdate(current, signTrust(body(2, [rootB]), [rootB]), now))).toBe('TRUST_SIGNATURE');
    });
  });

  describe('when the version goes back or stays', () => {
    it('rejects with TRUST_ROLLBACK', () => {
      expect(codeOf(() => verifyTrustUpdate(current, signTrust(body(1), [rootA]), now))).toBe('TRUST_ROLLBACK');
    });
  });

  describe('when a version is skipped', () => {
    it('rejects with TRUST_VERSION_SKIP', () => {
      expect(codeOf(() => verifyTrustUpdate(current, signTrust(body(3), [rootA]), now))).toBe('TRUST_VERSION_SKIP');
    });
  });
});
