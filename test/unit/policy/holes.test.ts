/**
 * A hostile review of the policy module: paths a capsule signer chooses to dodge the surface patterns, and
 * approvals whose predicate tells another story than the digests they are bound to.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countApprovals, type CountInput } from '../../../runner/policy/count.js';
import type { VerifiedApproval } from '../../../runner/policy/approval.js';
import { MAX_MATCHED_PATH_SEGMENTS, surfacesOfPath } from '../../../runner/policy/surfaces.js';
import { deriveFootprint } from '../../../runner/policy/surfaces.js';
import { deriveTier } from '../../../runner/policy/tier.js';
import { signApproval, verifyApproval } from '../../../runner/policy/approval.js';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { verifyTrustDocument } from '../../../runner/trust/trust.js';
import type { Tier } from '../../../runner/policy/types.js';
import { makeTrustBody, signTrust } from '../../helpers/world.js';
import { makeApprovalWorld, TEST_POLICY, type ApprovalWorld, type Proposal } from '../../helpers/approvals.js';

describe('surfacesOfPath against paths chosen to dodge the patterns', () => {
  describe('on a target folder that folds case or normalizes names (ext4 casefold, vfat, exfat, a macOS share)', () => {
    it.each([
      ['LEDGER/rounding.txt', 'upper case'],
      ['Ledger/Rounding.txt', 'mixed case'],
      ['ｌｅｄｇｅｒ/rounding.txt', 'fullwidth letters (NFKC)'],
    ])('puts %s (%s) on the ledger too, and keeps unclassified (the exact names match nothing)', (path) => {
      const surfaces = surfacesOfPath(path, TEST_POLICY);
      expect(surfaces).toContain('ledger');
      expect(surfaces).toContain('unclassified');
    });

    it('matches a pattern written in one Unicode normal form against a path in the other', () => {
      const policy = { ...TEST_POLICY, surfaces: { ...TEST_POLICY.surfaces, ledger: ['ledger/caf\u00e9/**'] } };
      expect(surfacesOfPath('ledger/cafe\u0301/x.txt', policy)).toContain('ledger');
    });

    it('needs the ledger owners for such a path: the tier never gets laxer than the exact reading', () => {
      const files = [{ path: 'LEDGER/rounding.txt', action: 'modify' as const, linesAdded: 1, linesRemoved: 1 }];
      const tier = deriveTier(deriveFootprint(files, TEST_POLICY), TEST_POLICY);
      expect(tier.approvals).toBe(2);
      expect(tier.requirements).toContainEqual({ group: 'ledger-owners', approvals: 2 });
    });

    it('leaves a plain lower-case path as it was', () => {
      expect(surfacesOfPath('ledger/rounding.txt', TEST_POLICY)).toEqual(['ledger']);
      expect(surfacesOfPath('README.md', TEST_POLICY)).toEqual(['docs']);
    });
  });

  describe('a very deep path (matchesGlob takes time that grows steeply with depth and ** patterns)', () => {
    it(`puts a path of more than ${MAX_MATCHED_PATH_SEGMENTS} segments on every surface without matching it`, () => {
      const deep = `${Array.from({ length: MAX_MATCHED_PATH_SEGMENTS }, () => 'docs').join('/')}/x.md`;
      expect(surfacesOfPath(deep, TEST_POLICY)).toEqual(['docs', 'ledger', 'payments', 'unclassified']);
    });

    it(`matches a path of exactly ${MAX_MATCHED_PATH_SEGMENTS} segments as usual`, () => {
      const deep = `${Array.from({ length: MAX_MATCHED_PATH_SEGMENTS - 1 }, () => 'ledger').join('/')}/x.txt`;
      expect(surfacesOfPath(deep, TEST_POLICY)).toEqual(['ledger']);
    });

    it('puts a path longer than 4096 characters on every surface too', () => {
      expect(surfacesOfPath(`docs/${'a'.repeat(4100)}.md`, TEST_POLICY)).toEqual(['docs', 'ledger', 'payments', 'unclassified']);
    });
  });

  describe('dot-names, ./ and trailing slashes (the change paths are checked before; the policy still holds)', () => {
    it.each(['ledger/.env', 'ledger/.git/config', 'ledger/sub/.hidden/x'])('puts %s on ledger', (path) => {
      expect(surfacesOfPath(path, TEST_POLICY)).toContain('ledger');
    });
  });
});

describe('countApprovals when the predicate names another runner, target or capsule than the proposal', () => {
  let world: ApprovalWorld;
  let proposal: Proposal;
  const at = new Date();
  beforeAll(() => {
    world = makeApprovalWorld();
    proposal = world.proposal();
  });
  afterAll(() => world.cleanup());
  const count = (approvals: VerifiedApproval[], patch: Partial<CountInput> = {}) =>
    countApprovals({
      approvals,
      changeDigest: proposal.changeDigest,
      proposal: proposal.evidenceDigest,
      tier: proposal.remediation.tier,
      capsuleSigners: [world.keys.signer.keyid],
      trust: world.trust,
      decisionTime: at,
      proposed: {
        runner: world.runnerId,
        target: proposal.remediation.target,
        capsule: { id: proposal.manifest.id, digest: proposal.manifestDigest },
      },
      ...patch,
    });

  it('counts an approval that names this runner, target and capsule', () => {
    expect(count([world.approve(proposal, world.keys.alice)]).counted).toHaveLength(1);
  });

  it.each([
    ['another runner', { runner: 'runner-elsewhere' }, 'APPROVAL_WRONG_PROPOSAL'],
    ['another capsule id', { capsule: { id: 'other-fix', digest: `sha256:${'c'.repeat(64)}` } }, 'APPROVAL_WRONG_PROPOSAL'],
    ['another capsule digest', { capsule: { id: 'x', digest: `sha256:${'c'.repeat(64)}` } }, 'APPROVAL_WRONG_PROPOSAL'],
    ['another target (its subject names it too)', { target: 'other-target' }, 'APPROVAL_WRONG_CHANGE'],
  ] as const)('refuses one naming %s, though bound to this change digest and proposal', (_what, patch, code) => {
    const edited = 'capsule' in patch && patch.capsule.id === 'x' ? { capsule: { id: proposal.manifest.id, digest: patch.capsule.digest } } : patch;
    const approval = world.approve(proposal, world.keys.alice, edited);
    const result = count([approval]);
    expect(result.counted).toEqual([]);
    expect(result.refused.map((r) => r.code)).toEqual([code]);
  });
});

describe('countApprovals when the trust document spells one person two ways (names differing in case only)', () => {
  // Names are often addresses, and Alice@Example.com is alice@example.com: counting them as two persons, or
  // letting one approve what the other signed, would turn a root's slip into a second approver.
  const root = PrivateKey.generate();
  const alice = PrivateKey.generate();
  const aliceUpper = PrivateKey.generate();
  const bob = PrivateKey.generate();
  const signer = PrivateKey.generate();
  const body = makeTrustBody(
    [
      { name: 'root-1', key: root, roles: ['root'] },
      { name: 'alice@example.com', key: alice, roles: ['approver'] },
      { name: 'Alice@Example.com', key: aliceUpper, roles: ['approver'] },
      { name: 'bob@example.com', key: bob, roles: ['approver'] },
      { name: 'Bob@example.com', key: signer, roles: ['capsule-signer'] },
    ],
    { approver: 1 },
  );
  const trust = verifyTrustDocument(signTrust(body, [root]));
  const at = new Date('2026-12-02T12:00:00.000Z');
  const changeDigest = `sha256:${'d'.repeat(64)}`;
  const proposal = `sha256:${'e'.repeat(64)}`;
  const tier: Tier = { approvals: 2, requirements: [{ approvals: 2 }], changeControl: false, rules: [] };
  const approve = (key: PrivateKey) =>
    verifyApproval(
      Buffer.from(
        JSON.stringify(
          signApproval(
            changeDigest,
            {
              proposal,
              runner: 'runner-1',
              target: 'config',
              capsule: { id: 'fix', digest: `sha256:${'f'.repeat(64)}` },
              approver: trust.nameOf(key.keyid)!,
              decision: 'approve',
              signedAt: '2026-12-02T11:00:00.000Z',
              notAfter: '2026-12-02T13:00:00.000Z',
            },
            key,
          ).envelope,
        ),
      ),
      trust,
    );
  const count = (approvals: VerifiedApproval[], capsuleSigners: string[] = []) =>
    countApprovals({ approvals, changeDigest, proposal, tier, capsuleSigners, trust, decisionTime: at });

  it('counts alice@example.com and Alice@Example.com once (APPROVAL_DUPLICATE_PERSON)', () => {
    const result = count([approve(alice), approve(aliceUpper)]);
    expect(result.counted).toHaveLength(1);
    expect(result.refused.map((r) => r.code)).toEqual(['APPROVAL_DUPLICATE_PERSON']);
    expect(result.satisfied).toBe(false);
  });

  it('refuses bob@example.com when Bob@example.com signed the capsule (APPROVAL_SELF)', () => {
    const result = count([approve(bob), approve(alice)], [signer.keyid]);
    expect(result.refused.map((r) => [r.approval.approver, r.code])).toEqual([['bob@example.com', 'APPROVAL_SELF']]);
  });
});
