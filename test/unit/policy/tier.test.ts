/** The tier: the strictest rule of every touched and dependent surface; the capsule's claim only compared. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deriveFootprint } from '../../../runner/policy/surfaces.js';
import { deriveTier } from '../../../runner/policy/tier.js';
import type { RemediationPolicy } from '../../../runner/trust/trust.js';
import { TEST_POLICY } from '../../helpers/approvals.js';

const touching = (policy: RemediationPolicy, ...paths: string[]) =>
  deriveFootprint(
    paths.map((path) => ({ path, action: 'modify' as const, linesAdded: 1, linesRemoved: 1 })),
    policy,
  );
const tierOf = (policy: RemediationPolicy, ...paths: string[]) => deriveTier(touching(policy, ...paths), policy);

describe('deriveTier', () => {
  describe('auto-apply', () => {
    it('lets a surface the policy names for auto-apply need zero approvals when its rule says 0', () => {
      const tier = tierOf(TEST_POLICY, 'docs/readme.md');
      expect(tier.approvals).toBe(0);
      expect(tier.requirements).toEqual([]);
      expect(tier.rules).toEqual([
        { surface: 'docs', via: 'touched', source: 'rule', approvals: 0, changeControl: false, noAutonomy: false, autoApply: true },
      ]);
    });

    it('raises a rule of 0 to one approval on a surface the policy does not name for auto-apply', () => {
      const policy: RemediationPolicy = { ...TEST_POLICY, autoApply: [] };
      expect(tierOf(policy, 'docs/readme.md').approvals).toBe(1);
      // The default rule too: unclassified paths are not auto-applied unless named.
      const zeroDefault: RemediationPolicy = { ...TEST_POLICY, default: { approvals: 0 } };
      expect(tierOf(zeroDefault, 'src/x.c').rules[0]).toMatchObject({ surface: 'unclassified', source: 'default', approvals: 1 });
      expect(tierOf({ ...zeroDefault, autoApply: ['unclassified'] }, 'src/x.c').approvals).toBe(0);
    });

    it('raises a rule of 0 with change control to one approval (a ticket needs a person)', () => {
      const policy: RemediationPolicy = { ...TEST_POLICY, rules: { ...TEST_POLICY.rules, docs: { approvals: 0, changeControl: true } } };
      const tier = tierOf(policy, 'docs/a.md');
      expect([tier.approvals, tier.changeControl]).toEqual([1, true]);
    });
  });

  describe('no-autonomy', () => {
    it('raises a no-autonomy surface to one approval even when its rule says 0', () => {
      const policy: RemediationPolicy = { ...TEST_POLICY, rules: { ...TEST_POLICY.rules, ledger: { approvals: 0 } } };
      expect(tierOf(policy, 'ledger/x').rules[0]).toMatchObject({ surface: 'ledger', approvals: 1, noAutonomy: true });
    });

    it('raises a no-autonomy surface reached only as a dependent', () => {
      const policy: RemediationPolicy = {
        ...TEST_POLICY,
        dependsOn: { ledger: ['docs'] },
        rules: { ...TEST_POLICY.rules, ledger: { approvals: 0 } },
      };
      const tier = tierOf(policy, 'docs/a.md');
      expect(tier.rules.map((r) => [r.surface, r.via, r.approvals])).toEqual([
        ['docs', 'touched', 0],
        ['ledger', 'dependent', 1],
      ]);
      expect(tier.approvals).toBe(1);
    });
  });

  describe('the strictest rule wins', () => {
    it('takes the largest approvals and per group the largest requirement, any-approver first', () => {
      const policy: RemediationPolicy = {
        ...TEST_POLICY,
        surfaces: { ...TEST_POLICY.surfaces, auth: ['auth/**'], infra: ['infra/**'] },
        rules: {
          ...TEST_POLICY.rules,
          auth: { approvals: 3, group: 'security' },
          infra: { approvals: 1, group: 'ledger-owners', changeControl: true },
        },
        groups: { 'ledger-owners': ['alice', 'bob', 'carol'], security: ['alice', 'bob', 'dave'] },
      };
      const tier = tierOf(policy, 'ledger/x', 'payments/y', 'auth/z', 'infra/w');
      expect(tier.approvals).toBe(3);
      expect(tier.requirements).toEqual([{ approvals: 1 }, { group: 'ledger-owners', approvals: 2 }, { group: 'security', approvals: 3 }]);
      expect(tier.changeControl).toBe(true);
      expect(tier.rules.map((r) => r.surface)).toEqual(['auth', 'infra', 'ledger', 'payments']);
    });

    it('counts a dependent surface: a change to ledger also needs what payments needs', () => {
      const policy: RemediationPolicy = { ...TEST_POLICY, rules: { ...TEST_POLICY.rules, payments: { approvals: 3 } } };
      const tier = tierOf(policy, 'ledger/x');
      expect(tier.rules.map((r) => [r.surface, r.via])).toEqual([
        ['ledger', 'touched'],
        ['payments', 'dependent'],
      ]);
      expect(tier.approvals).toBe(3);
      expect(tier.requirements).toEqual([{ approvals: 3 }, { group: 'ledger-owners', approvals: 2 }]);
    });
  });

  describe("the capsule's declared tier", () => {
    const footprint = touching(TEST_POLICY, 'ledger/x');
    it.each([
      [2, 'matches'],
      [1, 'understated'],
      [0, 'understated'],
      [3, 'overstated'],
    ] as const)('records a declaration of %i as %s and keeps the derived tier', (approvals, comparison) => {
      const tier = deriveTier(footprint, TEST_POLICY, { approvals });
      expect(tier.declared).toEqual({ approvals, comparison });
      expect(tier.approvals).toBe(2);
    });

    it('records nothing when the capsule declares nothing', () => {
      expect(deriveTier(footprint, TEST_POLICY).declared).toBeUndefined();
    });
  });

  it('uses the default rule for a surface named like an Object member (own rules only)', () => {
    const policy: RemediationPolicy = { ...TEST_POLICY, surfaces: { constructor: ['c/**'] }, rules: {}, default: { approvals: 2 } };
    expect(tierOf(policy, 'c/x').rules[0]).toMatchObject({ surface: 'constructor', source: 'default', approvals: 2 });
  });
});

describe('deriveTier over any set of paths (property)', () => {
  const paths = ['ledger/a', 'ledger/.b', 'payments/c', 'docs/d.md', 'e.md', 'src/f.c', '.github/g'];
  it('is the largest rule, never zero on a no-autonomy or unlisted surface, whatever the order of the files', () => {
    fc.assert(
      fc.property(fc.shuffledSubarray(paths, { minLength: 1 }), (chosen) => {
        const tier = tierOf(TEST_POLICY, ...chosen);
        expect(tier.approvals).toBe(Math.max(...tier.rules.map((r) => r.approvals)));
        for (const rule of tier.rules) if (rule.noAutonomy || !rule.autoApply) expect(rule.approvals).toBeGreaterThanOrEqual(1);
        expect(tierOf(TEST_POLICY, ...[...chosen].reverse())).toEqual(tier);
        if (chosen.some((p) => p.startsWith('ledger/'))) expect(tier.approvals).toBeGreaterThanOrEqual(2);
      }),
    );
  });
});
