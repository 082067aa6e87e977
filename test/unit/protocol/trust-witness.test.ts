/** The optional witness role of the trust document: the coordinator's cosigning key, which holds only that role. */
import { describe, expect, it } from 'vitest';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { verifyTrustDocument } from '../../../runner/trust/trust.js';
import { makeTrustBody, signTrust, type NamedKey } from '../../helpers/world.js';
import { codeOf } from '../../helpers/codes.js';

const root = PrivateKey.generate();
const witness = PrivateKey.generate();
const base: NamedKey[] = [
  { name: 'root-1', key: root, roles: ['root'] },
  { name: 'runner-a', key: PrivateKey.generate(), roles: ['runner'] },
];

describe('the witness role', () => {
  it('a document with a witness key and a witness threshold verifies, and the key is listed with its role', () => {
    const body = makeTrustBody([...base, { name: 'coordinator.example', key: witness, roles: ['witness'] }]);
    body.roles.witness = { threshold: 1 };
    const trust = verifyTrustDocument(signTrust(body, [root]), { now: new Date() });
    expect(trust.keyByName('coordinator.example', 'witness')?.keyid).toBe(witness.keyid);
  });

  it('a document without any witness (as before issue 9) still verifies', () => {
    expect(codeOf(() => verifyTrustDocument(signTrust(makeTrustBody(base), [root]), { now: new Date() }))).toBeUndefined();
  });

  it('a witness key that also holds another role is refused with TRUST_ROLE_CONFLICT', () => {
    for (const other of ['root', 'capsule-signer', 'runner', 'approver'] as const) {
      const body = makeTrustBody([...base, { name: 'coordinator.example', key: witness, roles: ['witness', other] }]);
      expect(
        codeOf(() => verifyTrustDocument(signTrust(body, [root]), { now: new Date() })),
        other,
      ).toBe('TRUST_ROLE_CONFLICT');
    }
  });

  it('a witness threshold above the number of witness keys is refused with TRUST_THRESHOLD_UNSATISFIABLE', () => {
    const body = makeTrustBody([...base, { name: 'coordinator.example', key: witness, roles: ['witness'] }]);
    body.roles.witness = { threshold: 2 };
    expect(codeOf(() => verifyTrustDocument(signTrust(body, [root]), { now: new Date() }))).toBe('TRUST_THRESHOLD_UNSATISFIABLE');
  });

  it('an unknown role name is still refused with TRUST_SCHEMA', () => {
    const body = makeTrustBody(base) as unknown as { roles: Record<string, unknown> };
    body.roles.cosigner = { threshold: 1 };
    expect(codeOf(() => verifyTrustDocument(signTrust(body as never, [root]), { now: new Date() }))).toBe('TRUST_SCHEMA');
  });
});
