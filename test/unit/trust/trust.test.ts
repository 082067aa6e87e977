import { describe, expect, it } from 'vitest';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { signEnvelope } from '../../../runner/core/dsse.js';
import { TRUST_MAX_BYTES, TRUST_PAYLOAD_TYPE, verifyTrustDocument, verifyTrustUpdate } from '../../../runner/trust/trust.js';
import { publicKeyProblem } from '../../../runner/core/edwards25519.js';
import type { Role } from '../../../runner/trust/trust.js';
import { makeTrustBody, signTrust, type NamedKey } from '../../helpers/world.js';
import { codeOf } from '../../helpers/codes.js';
import { IDENTITY, P, SMALL_ORDER_ALIASES, SMALL_ORDER_POINTS, encode, keyidOfRaw, pemOfRaw } from '../../helpers/small-order.js';

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

describe('issue 8, point 10: keys that are small-order or non-canonical', () => {
  const enrolling = (raw: Buffer, roles: Role[] = ['capsule-signer']) => {
    const b = body();
    b.keys[keyidOfRaw(raw)] = { publicKey: pemOfRaw(raw), name: 'mallory', roles };
    return b;
  };

  it.each([...SMALL_ORDER_POINTS, ...SMALL_ORDER_ALIASES])('refuses $name enrolled as a capsule signer with TRUST_KEY_INVALID', ({ encoding }) => {
    expect(codeOf(() => verifyTrustDocument(signTrust(enrolling(encoding), [rootA]), { now }))).toBe('TRUST_KEY_INVALID');
  });

  it('says which: the identity point is small-order', () => {
    expect(() => verifyTrustDocument(signTrust(enrolling(IDENTITY), [rootA]), { now })).toThrow(
      /mallory is not a usable Ed25519 public key \(small-order\)/,
    );
  });

  it('refuses the same point enrolled twice under two keyids (its canonical encoding and y + p) with TRUST_KEY_INVALID', () => {
    const y = [...Array(19).keys()].map(BigInt).find((v) => isUsableKey(encode(v)))!;
    const b = enrolling(encode(y));
    b.keys[keyidOfRaw(encode(y + P))] = { publicKey: pemOfRaw(encode(y + P)), name: 'mallory-2', roles: ['capsule-signer'] };
    expect(codeOf(() => verifyTrustDocument(signTrust(b, [rootA]), { now }))).toBe('TRUST_KEY_INVALID');
  });

  it('refuses one keyid listed twice (two PEM spellings of one key) as a duplicate member, TRUST_UNPARSEABLE', () => {
    const b = body();
    const entry = JSON.stringify(b.keys[signer.keyid]);
    const text = JSON.stringify(b).replace(
      `"${signer.keyid}":${entry}`,
      `"${signer.keyid}":${entry},"${signer.keyid}":${entry.replace(/\\n/g, '\\r\\n')}`,
    );
    expect(text.split(`"${signer.keyid}":`).length).toBe(3);
    const envelope = signEnvelope(TRUST_PAYLOAD_TYPE, Buffer.from(text), [rootA]);
    expect(() => verifyTrustDocument(Buffer.from(JSON.stringify(envelope)), { now })).toThrow(/payload is not valid JSON: .*two members/);
  });
});

describe('issue 8, point 11: trust documents that cannot be satisfied or are ambiguous', () => {
  const runnerA = PrivateKey.generate();
  const runnerB = PrivateKey.generate();
  const approverA = PrivateKey.generate();
  const approverB = PrivateKey.generate();
  const doc = (keys: NamedKey[], thresholds: Partial<Record<Role, number>> = {}) =>
    signTrust(makeTrustBody([{ name: 'root-0', key: rootA, roles: ['root'] }, ...keys], thresholds), [rootA]);
  const load = (bytes: Buffer) => codeOf(() => verifyTrustDocument(bytes, { now }));

  it('refuses a capsule-signer threshold above the number of capsule-signer keys with TRUST_THRESHOLD_UNSATISFIABLE', () => {
    expect(load(doc([{ name: 'signer', key: signer, roles: ['capsule-signer'] }], { 'capsule-signer': 2 }))).toBe('TRUST_THRESHOLD_UNSATISFIABLE');
    expect(() => verifyTrustDocument(doc([{ name: 'signer', key: signer, roles: ['capsule-signer'] }], { 'capsule-signer': 2 }), { now })).toThrow(
      'The capsule-signer threshold is 2 but the document lists 1 capsule-signer key.',
    );
  });

  it('refuses a root threshold above the number of root keys with TRUST_THRESHOLD_UNSATISFIABLE (not only TRUST_SIGNATURE)', () => {
    expect(load(doc([{ name: 'signer', key: signer, roles: ['capsule-signer'] }], { root: 2 }))).toBe('TRUST_THRESHOLD_UNSATISFIABLE');
  });

  it('refuses a runner threshold above the number of runner keys', () => {
    expect(load(doc([{ name: 'runner-a', key: runnerA, roles: ['runner'] }], { runner: 2 }))).toBe('TRUST_THRESHOLD_UNSATISFIABLE');
  });

  it('counts approvers once per name: two keys of one person do not meet a threshold of 2', () => {
    const samePerson = [
      { name: 'alice', key: approverA, roles: ['approver'] as Role[] },
      { name: 'alice', key: approverB, roles: ['approver'] as Role[] },
    ];
    expect(load(doc(samePerson, { approver: 2 }))).toBe('TRUST_THRESHOLD_UNSATISFIABLE');
    expect(load(doc(samePerson, { approver: 1 }))).toBeUndefined();
    expect(load(doc([samePerson[0]!, { name: 'bob', key: approverB, roles: ['approver'] }], { approver: 2 }))).toBeUndefined();
  });

  it('accepts a role no key holds (not in use: nothing signed for it is accepted), as before', () => {
    // makeTrustBody's approver threshold is 2 with no approver; an auditor's document may list no capsule signer.
    expect(load(doc([{ name: 'runner-a', key: runnerA, roles: ['runner'] }]))).toBeUndefined();
  });

  it('refuses two runner keys with the same name with TRUST_NAME_DUPLICATE', () => {
    const keys: NamedKey[] = [
      { name: 'runner-ldn-01', key: runnerA, roles: ['runner'] },
      { name: 'runner-ldn-01', key: runnerB, roles: ['runner'] },
    ];
    expect(load(doc(keys))).toBe('TRUST_NAME_DUPLICATE');
  });

  it("refuses a runner's name held by another key (a capsule signer) with TRUST_NAME_DUPLICATE", () => {
    const keys: NamedKey[] = [
      { name: 'runner-ldn-01', key: runnerA, roles: ['runner'] },
      { name: 'runner-ldn-01', key: signer, roles: ['capsule-signer'] },
    ];
    expect(load(doc(keys))).toBe('TRUST_NAME_DUPLICATE');
  });

  it.each([['root'], ['capsule-signer'], ['approver']] as const)('refuses a runner key that also holds %s with TRUST_ROLE_CONFLICT', (role) => {
    const keys: NamedKey[] = [
      { name: 'signer', key: signer, roles: ['capsule-signer'] },
      { name: 'runner-ldn-01', key: runnerA, roles: ['runner', role] },
    ];
    expect(load(doc(keys))).toBe('TRUST_ROLE_CONFLICT');
  });

  it('applies the same rules to a trust update (TUF 5.3), so a signed update cannot bring them in', () => {
    const current = verifyTrustDocument(signTrust(body(1), [rootA]), { now });
    const next = {
      ...makeTrustBody([
        { name: 'root-0', key: rootA, roles: ['root'] },
        { name: 'runner-ldn-01', key: runnerA, roles: ['runner', 'capsule-signer'] },
      ]),
      version: 2,
    };
    expect(codeOf(() => verifyTrustUpdate(current, signTrust(next, [rootA]), now))).toBe('TRUST_ROLE_CONFLICT');
  });
});

function isUsableKey(raw: Buffer): boolean {
  return publicKeyProblem(raw) === undefined;
}
