/**
 * Who may change the state folder. Whoever can write runner.json, trust.dsse.json, the database or the
 * folder holding them can swap the runner's trust, replay its capsules or edit its log, so the runner
 * refuses to open (or to create) a state folder that anyone but itself (or root) could change:
 *   - every folder above it (real path) belongs to root or the runner, and is writable by neither group nor
 *     others unless it has the sticky bit (/tmp: others cannot rename or remove what they do not own there),
 *     so nobody can put another state folder in its place;
 *   - the state folder, every entry directly in it, `evidence/` and every entry in it (`blobs/`, `bundles/`)
 *     belong to the runner (or root), are not symbolic links, and are writable by neither group nor others.
 * Not checked one by one: the run workspaces under `runs/` (a root runner hands them to the step user for the
 * length of a run; `runs/` itself is checked), and the files inside `evidence/blobs/` and `evidence/bundles/`
 * (thousands of them; the runner writes them 0600 into folders only it can write, and reads a blob back by
 * its digest).
 * Files written 0644 are fine: reading is not the concern here (the private key has its own, stricter check
 * in keyfile.ts), changing is.
 */
import { existsSync, lstatSync, readdirSync, realpathSync, type Stats } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { StateLayout } from './state.js';
import { StateError } from './errors.js';

const GROUP_OTHER_WRITE = 0o022;
const STICKY = 0o1000;

export interface PermissionOptions {
  /** The uid the runner runs as (process.geteuid()); files it made belong to it. */
  uid: number;
}

function modeText(stats: Stats): string {
  return (stats.mode & 0o7777).toString(8).padStart(4, '0');
}

function refuse(path: string, message: string, stats?: Stats): StateError {
  return new StateError('STATE_PERMISSIONS', message, { path, ...(stats ? { mode: modeText(stats), uid: stats.uid } : {}) });
}

function checkOwner(path: string, stats: Stats, options: PermissionOptions): void {
  if (stats.uid !== options.uid && stats.uid !== 0) {
    throw refuse(path, `${path} belongs to uid ${stats.uid}, not to the runner (uid ${options.uid}) or root.`, stats);
  }
}

/** The state folder's own entries: owned by the runner, no links, not writable by group or others. */
function checkEntry(path: string, options: PermissionOptions): Stats {
  const stats = lstatSync(path);
  if (stats.isSymbolicLink()) throw refuse(path, `${path} is a symbolic link; nothing in the state folder may be one.`);
  checkOwner(path, stats, options);
  if ((stats.mode & GROUP_OTHER_WRITE) !== 0) {
    throw refuse(path, `${path} is writable by group or others (mode ${modeText(stats)}); run chmod go-w on it.`, stats);
  }
  return stats;
}

/**
 * Every existing folder above `dir` (which need not exist yet), on its real path: nobody else can rename the
 * state folder away or put another in its place.
 */
export function verifyAncestors(dir: string, options: PermissionOptions): void {
  let existing = dirname(resolve(dir));
  while (!existsSync(existing)) existing = dirname(existing);
  let current = realpathSync(existing);
  for (;;) {
    const stats = lstatSync(current);
    checkOwner(current, stats, options);
    if ((stats.mode & GROUP_OTHER_WRITE) !== 0 && (stats.mode & STICKY) === 0) {
      throw refuse(
        current,
        `${current}, above the state folder, is writable by group or others without the sticky bit (mode ${modeText(stats)}); run chmod go-w on it.`,
        stats,
      );
    }
    const parent = dirname(current);
    if (parent === current) return;
    current = parent;
  }
}

/** The state folder itself (its real path; the folder may be reached through a link): the runner's or root's. */
export function verifyStateFolderOwner(dir: string, options: PermissionOptions): Stats {
  const stats = lstatSync(realpathSync(dir));
  checkOwner(dir, stats, options);
  return stats;
}

/** Throws STATE_PERMISSIONS, naming the path, when anyone but the runner or root could change the state folder. */
export function verifyStatePermissions(layout: Pick<StateLayout, 'dir' | 'blobs'>, options: PermissionOptions): void {
  verifyAncestors(layout.dir, options);
  const dirStats = verifyStateFolderOwner(layout.dir, options);
  if ((dirStats.mode & GROUP_OTHER_WRITE) !== 0) {
    throw refuse(layout.dir, `${layout.dir} is writable by group or others (mode ${modeText(dirStats)}); run chmod go-w on it.`, dirStats);
  }
  for (const name of readdirSync(layout.dir)) checkEntry(join(layout.dir, name), options);
  const evidence = dirname(layout.blobs);
  if (lstatSync(evidence, { throwIfNoEntry: false })?.isDirectory()) {
    for (const name of readdirSync(evidence)) checkEntry(join(evidence, name), options);
  }
}
