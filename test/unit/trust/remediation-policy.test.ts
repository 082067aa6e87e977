/**
 * The remediation policy is checked when the trust document is loaded (TRUST_POLICY_INVALID): a policy that
 * names what it does not declare, says two things, or asks for more approvers than can approve is refused,
 * whoever signed it, so no runner derives a tier from it.
 */
import { describe, expect, it } from 'vitest';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { verifyTrustDocument, type RemediationPolicy, type Role } from '../../../runner/trust/trust.js';
import { makeTrustBody, signTrust } from '../../helpers/world.js';

const root = PrivateKey.generate();
const keys: { name: string; key: PrivateKey; roles: Role[] }[] = [
  { name: 'root-1', key: root, roles: ['root'] },
  { name: 'signer-1', key: PrivateKey.generate(), roles: ['capsule-signer'] },
  { name: 'alice', key: PrivateKey.generate(), roles: ['approver'] },
  { name: 'bob', key: PrivateKey.generate(), roles: ['approver'] },
];
const VALID: RemediationPolicy = {
  surfaces: { ledger: ['ledger/**'], payments: ['payments/**'], docs: ['docs/**'] },
  dependsOn: { payments: ['ledger'] },
  rules: { ledger: { approvals: 2, group: 'owners' }, docs: { approvals: 0 } },
  default: { approvals: 1 },
  groups: { owners: ['alice', 'bob'] },
  noAutonomy: ['ledger', 'payments'],
  autoApply: ['docs'],
};

function load(remediation: RemediationPolicy) {
  const body = makeTrustBody(keys, {}, ['reproduce', 'validate', 'remediate']);
  body.policy.remediation = remediation;
  return verifyTrustDocument(signTrust(body, [root]));
}

function refusal(remediation: RemediationPolicy): string {
  try {
    load(remediation);
  } catch (err) {
    return `${(err as { code: string }).code}: ${(err as Error).message}`;
  }
  return 'loaded';
}

describe('the remediation policy, checked at load', () => {
  it('loads a policy whose every name is declared and whose rules can be met', () => {
    expect(load(VALID).body.policy.remediation).toEqual(VALID);
  });

  it.each<[string, RemediationPolicy, RegExp]>([
    ['a rule for an undeclared surface', { ...VALID, rules: { ...VALID.rules, auth: { approvals: 1 } } }, /surface "auth" in rules/],
    ['a dependency on an undeclared surface', { ...VALID, dependsOn: { payments: ['auth'] } }, /surface "auth" in dependsOn/],
    ['an undeclared no-autonomy surface', { ...VALID, noAutonomy: ['auth'] }, /surface "auth" in noAutonomy/],
    ['a surface both auto-applied and no-autonomy', { ...VALID, autoApply: ['docs', 'ledger'] }, /"ledger" both as auto-apply and as no-autonomy/],
    ['a group member who holds no approver key', { ...VALID, groups: { owners: ['alice', 'mallory'] } }, /"mallory" in the group "owners"/],
    ['a rule naming a group it does not define', { ...VALID, rules: { ledger: { approvals: 1, group: 'auditors' } } }, /group "auditors"/],
    [
      'a rule naming the group "constructor" (an Object member, not a group)',
      { ...VALID, rules: { ledger: { approvals: 1, group: 'constructor' } } },
      /group "constructor"/,
    ],
    [
      'more approvals than the group has persons',
      { ...VALID, rules: { ledger: { approvals: 3, group: 'owners' } } },
      /asks 3 approvals for "ledger" from 2 persons/,
    ],
    ['a default asking more than all approvers', { ...VALID, default: { approvals: 3 } }, /asks 3 approvals for "default" from 2 persons/],
  ])('refuses %s with TRUST_POLICY_INVALID', (_, remediation, message) => {
    const answer = refusal(remediation);
    expect(answer).toMatch(/^TRUST_POLICY_INVALID: The remediation policy /);
    expect(answer).toMatch(message);
  });

  it.each(['ledger/\u007f*', 'ledger/\n*', '/etc/**', 'ledger/../payments/**'])('refuses the surface pattern %j with TRUST_SCHEMA', (pattern) => {
    expect(refusal({ ...VALID, surfaces: { ...VALID.surfaces, ledger: [pattern] } })).toMatch(/^TRUST_SCHEMA: /);
  });

  it('lets `unclassified` (paths no pattern names) carry a rule without declaring it', () => {
    expect(refusal({ ...VALID, rules: { ...VALID.rules, unclassified: { approvals: 2 } } })).toBe('loaded');
  });
});
