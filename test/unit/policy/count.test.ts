/** countApprovals: each rule at its boundary, once per person, the proposer excluded, a reject as a veto, order-free. */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countApprovals, DEFAULT_APPROVAL_MAX_SECONDS, type CountInput } from '../../../runner/policy/count.js';
import type { VerifiedApproval } from '../../../runner/policy/approval.js';
import type { Tier } from '../../../runner/policy/types.js';
import { makeTrustBody, signTrust } from '../../helpers/world.js';
import { verifyTrustDocument } from '../../../runner/trust/trust.js';
import { makeApprovalWorld, type ApprovalWorld, type Proposal } from '../../helpers/approvals.js';

describe('countApprovals', () => {
  let world: ApprovalWorld;
  let proposal: Proposal;
  const at = new Date('2026-12-02T12:00:00.000Z');
  const iso = (ms: number) => new Date(at.getTime() + ms).toISOString();
  const window = (signedMs: number, notAfterMs: number) => ({ signedAt: iso(signedMs), notAfter: iso(notAfterMs) });

  beforeAll(() => {
    world = makeApprovalWorld();
    proposal = world.proposal();
  });
  afterAll(() => world.cleanup());

  const approve = (key: keyof ApprovalWorld['keys'], patch: Parameters<ApprovalWorld['approve']>[2] = {}) =>
    world.approve(proposal, world.keys[key], { ...window(-3600_000, 3600_000), ...patch });
  const count = (approvals: VerifiedApproval[], patch: Partial<CountInput> = {}) =>
    countApprovals({
      approvals,
      changeDigest: proposal.changeDigest,
      proposal: proposal.evidenceDigest,
      tier: proposal.remediation.tier,
      capsuleSigners: [world.keys.signer.keyid],
      trust: world.trust,
      decisionTime: at,
      ...patch,
    });
  const codes = (result: ReturnType<typeof count>) => result.refused.map((r) => r.code);

  describe('when two ledger owners approve', () => {
    it('is satisfied: the tier of the ledger change is two owners', () => {
      expect(proposal.remediation.tier.requirements).toEqual([{ approvals: 1 }, { group: 'ledger-owners', approvals: 2 }]);
      const result = count([approve('bob'), approve('alice')]);
      expect(result.counted.map((a) => a.approver)).toEqual(['alice', 'bob']);
      expect([result.satisfied, result.missing, result.refused]).toEqual([true, [], []]);
    });

    it('is not satisfied with one, and says what is missing', () => {
      const result = count([approve('alice')]);
      expect(result.satisfied).toBe(false);
      expect(result.missing).toEqual([{ group: 'ledger-owners', approvals: 1 }]);
    });
  });

  describe('when one person approves with two keys', () => {
    it('counts them once (APPROVAL_DUPLICATE_PERSON)', () => {
      const result = count([approve('alice'), approve('alice2')]);
      expect(result.counted.map((a) => a.approver)).toEqual(['alice']);
      expect(codes(result)).toEqual(['APPROVAL_DUPLICATE_PERSON']);
      expect(result.satisfied).toBe(false);
    });

    it('counts the same approval given twice once', () => {
      const a = approve('alice');
      expect(codes(count([a, a]))).toEqual(['APPROVAL_DUPLICATE_PERSON']);
    });
  });

  describe('when the capsule signer approves', () => {
    it('refuses their approval with APPROVAL_SELF, though made with another key that has the approver role', () => {
      const policy = { ...world.trustBody.policy.remediation!, groups: { 'ledger-owners': ['alice', 'bob', 'mallory'] } };
      const tier: Tier = { ...proposal.remediation.tier };
      const trustBody = structuredClone(world.trustBody);
      trustBody.policy.remediation = policy;
      const trust = verifyTrustDocument(signTrust(trustBody, [world.keys.root]));
      const result = count([approve('malloryApprover'), approve('alice')], { trust, tier });
      expect(codes(result)).toEqual(['APPROVAL_SELF']);
      expect(result.counted.map((a) => a.approver)).toEqual(['alice']);
    });

    it('refuses a key that is itself a capsule signer of this capsule with APPROVAL_SELF', () => {
      // A key holding both roles signed the capsule and the approval.
      expect(codes(count([approve('bob')], { capsuleSigners: [world.keys.bob.keyid] }))).toEqual(['APPROVAL_SELF']);
      // Another key of the signer's person (alice2 when alice signed).
      expect(codes(count([approve('alice2')], { capsuleSigners: [world.keys.alice.keyid] }))).toEqual(['APPROVAL_SELF']);
    });
  });

  describe('binding', () => {
    it('refuses an approval of another change with APPROVAL_WRONG_CHANGE', () => {
      expect(codes(count([approve('alice', { changeDigest: `sha256:${'e'.repeat(64)}` })]))).toEqual(['APPROVAL_WRONG_CHANGE']);
    });

    it('refuses an approval naming another proposal with APPROVAL_WRONG_PROPOSAL', () => {
      expect(codes(count([approve('alice', { proposal: `sha256:${'f'.repeat(64)}` })]))).toEqual(['APPROVAL_WRONG_PROPOSAL']);
    });

    it('refuses an approval whose key lost the approver role in this trust document with APPROVAL_SIGNATURE', () => {
      const body = makeTrustBody(
        [
          { name: 'root-1', key: world.keys.root, roles: ['root'] },
          { name: 'alice', key: world.keys.alice, roles: ['capsule-signer'] },
          { name: 'bob', key: world.keys.bob, roles: ['approver'] },
        ],
        { approver: 1 },
      );
      const trust = verifyTrustDocument(signTrust(body, [world.keys.root]));
      const tier: Tier = { approvals: 1, requirements: [{ approvals: 1 }], changeControl: false, rules: [] };
      expect(codes(count([approve('alice')], { trust, tier }))).toEqual(['APPROVAL_SIGNATURE']);
    });
  });

  describe('time, at the decision time', () => {
    it('accepts one signed up to the skew after the decision time, and refuses one a millisecond later (APPROVAL_NOT_YET_VALID)', () => {
      expect(codes(count([approve('alice', window(60_000, 3600_000))]))).toEqual([]);
      expect(codes(count([approve('alice', window(60_001, 3600_000))]))).toEqual(['APPROVAL_NOT_YET_VALID']);
      expect(codes(count([approve('alice', window(1, 3600_000))], { clockSkewMs: 0 }))).toEqual(['APPROVAL_NOT_YET_VALID']);
    });

    it('refuses one whose notAfter is the decision time (APPROVAL_EXPIRED), and counts one expiring a millisecond after', () => {
      expect(codes(count([approve('alice', window(-3600_000, 0))]))).toEqual(['APPROVAL_EXPIRED']);
      expect(codes(count([approve('alice', window(-3600_000, 1))]))).toEqual([]);
    });

    it('judges expiry at the decision time given, not at the clock', () => {
      const a = approve('alice', window(-3600_000, 60_000));
      expect(codes(count([a], { decisionTime: new Date(at.getTime() + 59_999) }))).toEqual([]);
      expect(codes(count([a], { decisionTime: new Date(at.getTime() + 60_000) }))).toEqual(['APPROVAL_EXPIRED']);
    });

    it('refuses one valid for longer than the policy allows (APPROVAL_TOO_LONG), default 7 days', () => {
      const max = DEFAULT_APPROVAL_MAX_SECONDS * 1000;
      expect(codes(count([approve('alice', window(-1000, max - 1000))]))).toEqual([]);
      expect(codes(count([approve('alice', window(-1000, max - 999))]))).toEqual(['APPROVAL_TOO_LONG']);
      expect(codes(count([approve('alice', window(-1000, 3600_000))], { maxLifetimeSeconds: 3600 }))).toEqual(['APPROVAL_TOO_LONG']);
    });

    it("uses the policy's approvalMaxSeconds", () => {
      const trustBody = structuredClone(world.trustBody);
      trustBody.policy.remediation!.approvalMaxSeconds = 600;
      const trust = verifyTrustDocument(signTrust(trustBody, [world.keys.root]));
      expect(codes(count([approve('alice', window(-1000, 599_000))], { trust }))).toEqual([]);
      expect(codes(count([approve('alice', window(-1000, 599_001))], { trust }))).toEqual(['APPROVAL_TOO_LONG']);
    });
  });

  describe('groups', () => {
    it('refuses an approver outside the required groups with APPROVAL_GROUP when every requirement names a group', () => {
      const tier: Tier = { ...proposal.remediation.tier, requirements: [{ group: 'ledger-owners', approvals: 2 }] };
      expect(codes(count([approve('dave')], { tier }))).toEqual(['APPROVAL_GROUP']);
    });

    it('counts an approver outside the groups toward a requirement of any approver, but not toward the group', () => {
      const result = count([approve('dave'), approve('alice')]);
      expect(codes(result)).toEqual([]);
      expect(result.counted.map((a) => a.approver)).toEqual(['alice', 'dave']);
      expect(result.missing).toEqual([{ group: 'ledger-owners', approvals: 1 }]);
    });
  });

  describe('change control', () => {
    const tier = (): Tier => ({ ...proposal.remediation.tier, changeControl: true });
    it('refuses an approval without a change ticket with APPROVAL_CHANGE_TICKET', () => {
      const result = count([approve('alice'), approve('bob', { changeTicket: 'CHG-1' })], { tier: tier() });
      expect(codes(result)).toEqual(['APPROVAL_CHANGE_TICKET']);
      expect(result.satisfied).toBe(false);
    });

    it('is met when the counted approvals carry tickets', () => {
      const result = count([approve('alice', { changeTicket: 'CHG-1' }), approve('bob', { changeTicket: 'CHG-1' })], { tier: tier() });
      expect([result.satisfied, result.changeControlMet]).toEqual([true, true]);
    });
  });

  describe('a reject', () => {
    it('is a veto: not counted, and the change is not satisfied even with enough approvals', () => {
      const result = count([approve('alice'), approve('bob'), approve('carol', { decision: 'reject' })]);
      expect(result.vetoes.map((a) => a.approver)).toEqual(['carol']);
      expect(result.counted.map((a) => a.approver)).toEqual(['alice', 'bob']);
      expect(result.satisfied).toBe(false);
    });

    it("outweighs the same person's approval", () => {
      const result = count([approve('alice'), approve('alice2', { decision: 'reject' })]);
      expect(result.vetoes.map((a) => a.approver)).toEqual(['alice']);
      expect(result.counted).toEqual([]);
      expect(codes(result)).toEqual(['APPROVAL_DUPLICATE_PERSON']);
    });

    it('is no veto from a person who could not approve (expired, the capsule signer)', () => {
      const result = count([approve('alice', { decision: 'reject', ...window(-7200_000, -1) }), approve('malloryApprover', { decision: 'reject' })]);
      expect(result.vetoes).toEqual([]);
      expect(codes(result).sort()).toEqual(['APPROVAL_EXPIRED', 'APPROVAL_SELF']);
    });
  });

  describe('with zero approvals required (an auto-apply tier)', () => {
    it('is satisfied with none', () => {
      const tier: Tier = { approvals: 0, requirements: [], changeControl: false, rules: [] };
      expect(count([], { tier })).toMatchObject({ satisfied: true, missing: [], counted: [] });
    });
  });

  it('gives the same answer whatever the order of the approvals', () => {
    const pool = [
      approve('alice'),
      approve('alice2'),
      approve('bob', { decision: 'reject' }),
      approve('bob'),
      approve('carol'),
      approve('dave'),
      approve('malloryApprover'),
      approve('carol', window(-7200_000, -1)),
    ];
    const summary = (r: ReturnType<typeof count>) => ({
      counted: r.counted.map((a) => a.digest),
      vetoes: r.vetoes.map((a) => a.digest),
      refused: r.refused.map((x) => [x.approval.digest, x.code]),
      satisfied: r.satisfied,
      missing: r.missing,
    });
    fc.assert(
      fc.property(fc.subarray(pool), fc.infiniteStream(fc.nat()), (subset, stream) => {
        const shuffled = [...subset];
        for (let i = shuffled.length - 1; i > 0; i--) {
          const j = stream.next().value % (i + 1);
          [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
        }
        expect(summary(count(shuffled))).toEqual(summary(count(subset)));
      }),
      { numRuns: 200 },
    );
  });
});
