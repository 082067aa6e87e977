/** Surfaces of paths and the footprint of a change: derived from the signed policy, never from the capsule. */
import { describe, expect, it } from 'vitest';
import { deriveFootprint, surfacesOfPath } from '../../../runner/policy/surfaces.js';
import type { RemediationPolicy } from '../../../runner/trust/trust.js';
import type { FootprintFile } from '../../../runner/policy/types.js';
import { TEST_POLICY } from '../../helpers/approvals.js';

const file = (path: string, linesAdded = 1, linesRemoved = 0): FootprintFile => ({ path, action: 'modify', linesAdded, linesRemoved });

describe('surfacesOfPath', () => {
  it('gives every surface whose pattern matches, sorted', () => {
    const policy: RemediationPolicy = { ...TEST_POLICY, surfaces: { ledger: ['ledger/**'], audit: ['**/*.sql'] } };
    expect(surfacesOfPath('ledger/schema.sql', policy)).toEqual(['audit', 'ledger']);
    expect(surfacesOfPath('ledger/a/b/c.txt', policy)).toEqual(['ledger']);
  });

  it('puts a path no pattern matches on unclassified', () => {
    expect(surfacesOfPath('src/main.c', TEST_POLICY)).toEqual(['unclassified']);
    expect(surfacesOfPath('ledger', TEST_POLICY)).toEqual(['unclassified']);
  });

  describe('when a name starts with a dot (matchesGlob alone would not match it)', () => {
    it('still puts it on the surface whose wildcard covers it', () => {
      expect(surfacesOfPath('ledger/.env', TEST_POLICY)).toEqual(['ledger']);
      expect(surfacesOfPath('ledger/.git/hooks/pre-commit', TEST_POLICY)).toEqual(['ledger']);
      expect(surfacesOfPath('.hidden.md', TEST_POLICY)).toEqual(['docs']);
    });

    it('matches a pattern that names the dot literally, and no other surface', () => {
      const policy: RemediationPolicy = { ...TEST_POLICY, surfaces: { ci: ['.github/**'], docs: ['docs/**'] } };
      expect(surfacesOfPath('.github/workflows/.x.yml', policy)).toEqual(['ci']);
      expect(surfacesOfPath('.githubx/y', policy)).toEqual(['unclassified']);
    });
  });
});

describe('deriveFootprint', () => {
  it('sorts the files by path in code-unit order and adds up the lines', () => {
    const footprint = deriveFootprint([file('docs/b.md', 2, 1), file('Z.md', 0, 3), file('docs/a.md', 5, 0)], TEST_POLICY);
    expect(footprint.files.map((f) => f.path)).toEqual(['Z.md', 'docs/a.md', 'docs/b.md']);
    expect([footprint.linesAdded, footprint.linesRemoved]).toEqual([7, 4]);
    expect(footprint.surfaces).toEqual(['docs']);
  });

  it('lists the surfaces depending on a touched one as dependents, transitively', () => {
    const policy: RemediationPolicy = { ...TEST_POLICY, dependsOn: { payments: ['ledger'], checkout: ['payments'], reports: ['docs'] } };
    policy.surfaces = { ...policy.surfaces, checkout: ['checkout/**'], reports: ['reports/**'] };
    const footprint = deriveFootprint([file('ledger/x')], policy);
    expect(footprint.surfaces).toEqual(['ledger']);
    expect(footprint.dependents).toEqual(['checkout', 'payments']);
  });

  it('never lists a touched surface as a dependent, and a surface that depends on nothing touched is not reached', () => {
    const footprint = deriveFootprint([file('ledger/x'), file('payments/y')], TEST_POLICY);
    expect(footprint.surfaces).toEqual(['ledger', 'payments']);
    expect(footprint.dependents).toEqual([]);
    expect(deriveFootprint([file('payments/y')], TEST_POLICY).dependents).toEqual([]);
  });

  it('ends at a cycle of the system graph', () => {
    const policy: RemediationPolicy = {
      ...TEST_POLICY,
      surfaces: { a: ['a/**'], b: ['b/**'], c: ['c/**'] },
      dependsOn: { a: ['c'], b: ['a'], c: ['b'] },
      rules: {},
      noAutonomy: [],
      autoApply: [],
    };
    const footprint = deriveFootprint([file('a/1')], policy);
    expect(footprint.dependents).toEqual(['b', 'c']);
  });
});
