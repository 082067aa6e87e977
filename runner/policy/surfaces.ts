/**
 * Which surfaces of the signed policy a change touches, and which it reaches through the system graph.
 * Derived from the paths of the signed change and the trust document's policy, never from what the capsule
 * says about itself. Pure.
 */
import { posix } from 'node:path';
import { UNCLASSIFIED_SURFACE, type RemediationPolicy } from '../trust/trust.js';
import type { Footprint, FootprintFile } from './types.js';

/**
 * Every surface with a pattern matching `path` (path.posix.matchesGlob), sorted; `['unclassified']` when
 * none does. matchesGlob lets no wildcard match a name that starts with a dot, so `ledger/**` alone would
 * leave `ledger/.env` unclassified (and on the default rule, perhaps a laxer one): a path also matches
 * when it does with every leading dot of a segment, in the path and the pattern alike, read as a plain
 * character (NUL, which neither a contained path nor a pattern can hold). Wildcards match dot-names.
 */
export function surfacesOfPath(path: string, policy: RemediationPolicy): string[] {
  // The second reading only for a path with a dot-name (about 4 µs a match here).
  const hidden = /(^|\/)\./.test(path) ? undot(path) : undefined;
  const matched = Object.entries(policy.surfaces)
    .filter(([, patterns]) =>
      patterns.some((pattern) => posix.matchesGlob(path, pattern) || (hidden !== undefined && posix.matchesGlob(hidden, undot(pattern)))),
    )
    .map(([surface]) => surface);
  return matched.length === 0 ? [UNCLASSIFIED_SURFACE] : matched.sort(byCodeUnit);
}

/**
 * The footprint of a change's files: one entry per path sorted by path, the line totals, the surfaces the
 * paths are on, and the dependents: every surface that depends on a touched one through `dependsOn`,
 * directly or through other surfaces (a cycle ends where it started), and is not touched itself.
 */
export function deriveFootprint(files: readonly FootprintFile[], policy: RemediationPolicy): Footprint {
  const sorted = [...files].sort((a, b) => byCodeUnit(a.path, b.path)).map((file) => ({ ...file }));
  const touched = new Set(sorted.flatMap((file) => surfacesOfPath(file.path, policy)));
  return {
    files: sorted,
    linesAdded: sorted.reduce((sum, file) => sum + file.linesAdded, 0),
    linesRemoved: sorted.reduce((sum, file) => sum + file.linesRemoved, 0),
    surfaces: [...touched].sort(byCodeUnit),
    dependents: dependentsOf(touched, policy).sort(byCodeUnit),
  };
}

/** The surfaces reached from `touched` along reversed dependsOn edges (who depends on what changed), not touched ones. */
function dependentsOf(touched: ReadonlySet<string>, policy: RemediationPolicy): string[] {
  const dependedOnBy = new Map<string, string[]>();
  for (const [surface, dependencies] of Object.entries(policy.dependsOn ?? {})) {
    for (const dependency of dependencies) dependedOnBy.set(dependency, [...(dependedOnBy.get(dependency) ?? []), surface]);
  }
  const reached = new Set<string>(touched);
  const queue = [...touched];
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    for (const dependent of dependedOnBy.get(next) ?? []) {
      if (reached.has(dependent)) continue;
      reached.add(dependent);
      queue.push(dependent);
    }
  }
  return [...reached].filter((surface) => !touched.has(surface));
}

function undot(path: string): string {
  return path
    .split('/')
    .map((segment) => (segment.startsWith('.') ? `\u0000${segment.slice(1)}` : segment))
    .join('/');
}

/** Code-unit order (the order the plan's digests and the evidence use), not locale order. */
export function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
