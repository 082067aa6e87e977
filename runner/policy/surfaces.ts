/**
 * Which surfaces of the signed policy a change touches, and which it reaches through the system graph.
 * Derived from the paths of the signed change and the trust document's policy, never from what the capsule
 * says about itself. Pure.
 */
import { posix } from 'node:path';
import { UNCLASSIFIED_SURFACE, type RemediationPolicy } from '../trust/trust.js';
import type { Footprint, FootprintFile } from './types.js';

/**
 * A path deeper than this many segments, or longer than MAX_MATCHED_PATH_CHARS, is not matched at all: it is
 * on every surface and on unclassified (the strictest reading). matchesGlob's time grows steeply with the
 * depth of the path on `**` patterns (a 500-segment path takes about 0.2 s against a pattern with two `**` here, and a
 * 16 MiB diff names thousands of such paths); no real configuration is that deep.
 */
export const MAX_MATCHED_PATH_SEGMENTS = 64;
export const MAX_MATCHED_PATH_CHARS = 4096;

/**
 * Every surface with a pattern matching `path` (path.posix.matchesGlob), sorted; `['unclassified']` when
 * none does. matchesGlob lets no wildcard match a name that starts with a dot, so `ledger/**` alone would
 * leave `ledger/.env` unclassified (and on the default rule, perhaps a laxer one): a path also matches
 * when it does with every leading dot of a segment, in the path and the pattern alike, read as a plain
 * character (NUL, which neither a contained path nor a pattern can hold). Wildcards match dot-names.
 *
 * A target folder may fold case or normalize names (ext4 casefold, vfat, exfat, a share from a Mac), where
 * `LEDGER/rates.txt` is the file `ledger/rates.txt`: a path also matches when its folded form (NFKC, case
 * folded) matches the folded pattern. Such a reading only adds surfaces, and a path whose exact name matches
 * no pattern stays on unclassified as well, so folding never makes a tier laxer than the exact names give.
 */
export function surfacesOfPath(path: string, policy: RemediationPolicy): string[] {
  if (path.length > MAX_MATCHED_PATH_CHARS || path.split('/').length > MAX_MATCHED_PATH_SEGMENTS) {
    return [...new Set([...Object.keys(policy.surfaces), UNCLASSIFIED_SURFACE])].sort(byCodeUnit);
  }
  const exact = new Reading(path);
  const folded = fold(path);
  const foldedReading = folded === path ? exact : new Reading(folded);
  let exactMatched = false;
  const matched: string[] = [];
  for (const [surface, patterns] of Object.entries(policy.surfaces)) {
    const byName = patterns.some((pattern) => exact.matches(pattern));
    exactMatched ||= byName;
    if (byName || patterns.some((pattern) => (foldedReading !== exact || fold(pattern) !== pattern) && foldedReading.matches(fold(pattern)))) {
      matched.push(surface);
    }
  }
  if (!exactMatched) matched.push(UNCLASSIFIED_SURFACE);
  return matched.sort(byCodeUnit);
}

/** A path as matched: as it is, and with its dot-names read as plain names (only when it has one: about 4 µs a match here). */
class Reading {
  private readonly hidden: string | undefined;
  constructor(private readonly path: string) {
    this.hidden = /(^|\/)\./.test(path) ? undot(path) : undefined;
  }
  matches(pattern: string): boolean {
    return posix.matchesGlob(this.path, pattern) || (this.hidden !== undefined && posix.matchesGlob(this.hidden, undot(pattern)));
  }
}

/** Compatibility-normalized and case-folded (upper then lower case: `ß` folds as `ss`, as case folding does). */
function fold(text: string): string {
  return text.normalize('NFKC').toUpperCase().toLowerCase().normalize('NFKC');
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
