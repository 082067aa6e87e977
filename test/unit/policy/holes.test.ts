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
