/**
 * verifyBundle on remediation bundles: the change digest recomputed, the footprint and tier derived again,
 * and a decided change's approvals verified and counted again at its recorded decision time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatBundle, verifyBundle, type Bundle } from '../../../runner/evidence/bundle.js';
import { checkClosedBundle, guardBundle } from '../../../runner/evidence/egress.js';
import { verifyTrustDocument } from '../../../runner/trust/trust.js';
import { codeOf } from '../../helpers/codes.js';
import { signTrust } from '../../helpers/world.js';
import { makeApprovalWorld, type ApprovalWorld, type Proposal } from '../../helpers/approvals.js';

describe('verifyBundle of a remediation', () => {
  let world: ApprovalWorld;
  let proposal: Proposal;
  beforeAll(() => {
    world = makeApprovalWorld();
    proposal = world.proposal();
  });
  afterAll(() => world.cleanup());
  const verify = (bytes: Buffer) => verifyBundle(bytes, world.trust);
  const encode = (bundle: Bundle) => Buffer.from(formatBundle(bundle));
  const owners = () => [world.approve(proposal, world.keys.alice), world.approve(proposal, world.keys.bob)];

  describe('a proposal', () => {
    it('verifies, with its derived tier and no approvals', () => {
      const verified = verify(proposal.bytes);
      expect(verified.remediation?.evidence.phase).toBe('proposed');
      expect(verified.remediation?.evidence.tier.approvals).toBe(2);
      expect(verified.remediation?.approvals).toEqual([]);
    });

    it('carrying an approval is refused (BUNDLE_SCHEMA), and the runner would not write it (EGRESS_SCHEMA)', () => {
      const carrying = { ...proposal.bundle, approvals: [owners()[0]!.envelope] };
      expect(codeOf(() => verify(encode(carrying)))).toBe('BUNDLE_SCHEMA');
      expect(checkClosedBundle(carrying)).toMatchObject({ kind: 'schema', path: '/approvals' });
      expect(codeOf(() => guardBundle(carrying))).toBe('EGRESS_SCHEMA');
    });
  });

  describe('an applied change', () => {
    it('verifies with two ledger owners, counted again at the decision time', () => {
      const { bytes } = world.final(proposal, { approvals: owners() });
      const verified = verify(bytes);
      expect(verified.remediation?.count?.satisfied).toBe(true);
      expect(verified.remediation?.approvals.map((a) => a.approver)).toEqual(['alice', 'bob']);
      expect(verified.bundle.approvals).toHaveLength(2);
    });

    it.each([
      ['one approval below the tier of two', (w: ApprovalWorld, p: Proposal) => [w.approve(p, w.keys.alice)]],
      ['one person with two keys', (w: ApprovalWorld, p: Proposal) => [w.approve(p, w.keys.alice), w.approve(p, w.keys.alice2)]],
      [
        'the capsule signer approving with their approver key',
        (w: ApprovalWorld, p: Proposal) => [w.approve(p, w.keys.alice), w.approve(p, w.keys.malloryApprover)],
      ],
      [
        'an approver outside the ledger owners for the group',
        (w: ApprovalWorld, p: Proposal) => [w.approve(p, w.keys.alice), w.approve(p, w.keys.dave)],
      ],
      [
        'an approval of another change',
        (w: ApprovalWorld, p: Proposal) => [w.approve(p, w.keys.alice), w.approve(p, w.keys.bob, { changeDigest: `sha256:${'e'.repeat(64)}` })],
      ],
      [
        'a veto',
        (w: ApprovalWorld, p: Proposal) => [
          ...[w.keys.alice, w.keys.bob].map((k) => w.approve(p, k)),
          w.approve(p, w.keys.carol, { decision: 'reject' }),
        ],
      ],
    ])('is refused with %s (BUNDLE_APPROVALS_INVALID)', (_what, make) => {
      const { bytes } = world.final(proposal, { approvals: make(world, proposal) });
      expect(codeOf(() => verify(bytes))).toBe('BUNDLE_APPROVALS_INVALID');
    });

    it('judges expiry at the recorded decision time: valid then, though expired now', () => {
      const old = { signedAt: '2026-01-01T10:00:00.000Z', notAfter: '2026-01-02T10:00:00.000Z' };
      const approvals = [world.approve(proposal, world.keys.alice, old), world.approve(proposal, world.keys.bob, old)];
      expect(codeOf(() => verify(world.final(proposal, { approvals, decidedAt: new Date('2026-01-02T09:59:59.999Z') }).bytes))).toBeUndefined();
      expect(codeOf(() => verify(world.final(proposal, { approvals, decidedAt: new Date('2026-01-02T10:00:00.000Z') }).bytes))).toBe(
        'BUNDLE_APPROVALS_INVALID',
      );
    });

    it('is refused when the evidence lists other counted approvals than the bundle carries', () => {
      const carol = world.approve(proposal, world.keys.carol);
      const { bytes } = world.final(proposal, {
        approvals: owners(),
        edit: (r) => (r.approvals!.counted[1] = { digest: carol.digest, approver: 'carol' }),
      });
      expect(codeOf(() => verify(bytes))).toBe('BUNDLE_APPROVALS_INVALID');
    });

    it('is refused when the approvals are not in the counted order', () => {
      const approvals = owners();
      const { bytes } = world.final(proposal, { approvals, envelopes: approvals.map((a) => a.envelope).reverse() });
      expect(codeOf(() => verify(bytes))).toBe('BUNDLE_APPROVALS_INVALID');
    });

    it('is refused when an approval envelope is not as it verified (BUNDLE_SIGNATURE_UNVERIFIED)', () => {
      // A ticket of the length that makes alice's payload end in padding, which base64 may leave off.
      const alice = ['T', 'TT', 'TTT']
        .map((t) => world.approve(proposal, world.keys.alice, { changeTicket: t }))
        .find((a) => a.envelope.payload.endsWith('='))!;
      const approvals = [alice, world.approve(proposal, world.keys.bob)];
      const envelopes = approvals.map((a) => ({ ...a.envelope, payload: a.envelope.payload.replace(/=+$/, '') }));
      const { bytes } = world.final(proposal, { approvals, envelopes });
      expect(codeOf(() => verify(bytes))).toBe('BUNDLE_SIGNATURE_UNVERIFIED');
    });

    it('is refused when it claims no human was needed for a tier of two', () => {
      const { bytes } = world.final(proposal, { approvals: [], autonomous: true });
      expect(codeOf(() => verify(bytes))).toBe('BUNDLE_APPROVALS_INVALID');
    });
  });

  describe('a refused change', () => {
    it('verifies with a veto and fewer approvals than the tier', () => {
      const approvals = [world.approve(proposal, world.keys.alice), world.approve(proposal, world.keys.carol, { decision: 'reject' })];
      const verified = verify(world.final(proposal, { phase: 'refused', approvals, code: 'CHANGE_VETOED' }).bytes);
      expect(verified.remediation?.count?.vetoes.map((a) => a.approver)).toEqual(['carol']);
    });
  });

  describe('an autonomous change (tier 0 on an auto-apply surface)', () => {
    it('verifies with no approvals', () => {
      const docs = world.proposal({
        files: [{ path: 'docs/guide.md', action: 'modify', linesAdded: 2, linesRemoved: 1 }],
        change: { declaredTier: { approvals: 0 } },
      });
      expect(docs.remediation.tier.approvals).toBe(0);
      const verified = verify(world.final(docs, { autonomous: true }).bytes);
      expect(verified.statement.predicate.policy.rule).toBe('autonomous-change');
    });
  });

  describe('when the evidence understates what the change needs', () => {
    it('refuses a tier lower than the policy derives (BUNDLE_TIER_MISMATCH)', () => {
      const { bytes } = world.final(proposal, {
        approvals: [world.approve(proposal, world.keys.alice)],
        edit: (r) => {
          r.tier.approvals = 1;
          r.tier.requirements = [{ approvals: 1 }];
        },
      });
      expect(codeOf(() => verify(bytes))).toBe('BUNDLE_TIER_MISMATCH');
    });

    it('refuses a footprint without the surface its paths are on (BUNDLE_TIER_MISMATCH)', () => {
      const { bytes } = world.final(proposal, { approvals: owners(), edit: (r) => (r.footprint.surfaces = ['unclassified']) });
      expect(codeOf(() => verify(bytes))).toBe('BUNDLE_TIER_MISMATCH');
    });

    it('refuses a proposal whose tier the capsule declared and the runner copied (BUNDLE_TIER_MISMATCH)', () => {
      // A runner that believed the capsule's declaredTier of 1 over a ledger path.
      const forged = world.final(proposal, { approvals: owners(), edit: (r) => (r.tier.declared = { approvals: 1, comparison: 'matches' }) });
      expect(codeOf(() => verify(forged.bytes))).toBe('BUNDLE_TIER_MISMATCH');
    });
  });

  describe('the change digest', () => {
    it('is refused when it does not bind these states (BUNDLE_CHANGE_DIGEST)', () => {
      const { bytes } = world.final(proposal, { approvals: owners(), edit: (r) => (r.preState = `sha256:${'c'.repeat(64)}`) });
      expect(codeOf(() => verify(bytes))).toBe('BUNDLE_CHANGE_DIGEST');
    });

    it('is refused under a trust document with another policy (BUNDLE_CHANGE_DIGEST names the version to use)', () => {
      const body = structuredClone(world.trustBody);
      body.policy.remediation!.default = { approvals: 2 };
      const other = verifyTrustDocument(signTrust(body, [world.keys.root]));
      let err: (Error & { code?: string }) | undefined;
      try {
        verifyBundle(proposal.bytes, other);
      } catch (e) {
        err = e as Error & { code?: string };
      }
      expect(err?.code).toBe('BUNDLE_CHANGE_DIGEST');
      expect(err?.message).toContain('trust document version 1');
    });
  });

  describe('the policy rule', () => {
    it('is refused when an applied change names the rule of a proposal (BUNDLE_INCONSISTENT)', () => {
      const { bytes } = world.final(proposal, { approvals: owners(), edit: (r) => (r.phase = 'proposed') });
      expect(codeOf(() => verify(bytes))).toBe('BUNDLE_INCONSISTENT');
    });
  });
});
