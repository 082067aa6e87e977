/**
 * Spool files on disk: writing a document once under its content address (the outbox's guarantees, as
 * runner/state/files.ts gives them: a temporary `.NAME.tmp-*` in the same folder, fsync, link(2) onto the
 * name so an existing file is never replaced, fsync of the folder), and reading a file from a folder others
 * write into (no symlinks, regular files only, a size cap, and a file that changed while it was read is not
 * taken).
 */
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { isCodedError } from '../core/errors.js';
import { writeFileAtomic } from '../state/files.js';
import { SpoolError } from './errors.js';

/**
 * Writes `bytes` to `path` unless a file is there: 'created', or 'existing' when it holds these very bytes
 * (a crash after the write and before its record; the file is not written twice). Other bytes under the
 * name: SPOOL_OUT_CONFLICT, and nothing is touched.
 */
export function writeSpoolFileOnce(path: string, bytes: Buffer): 'created' | 'existing' {
  if (sameFileThere(path, bytes)) return 'existing';
  try {
    writeFileAtomic(path, bytes, { replace: false, mode: 0o644 });
    return 'created';
  } catch (err) {
    // Someone (another agent on this folder) named it first: the same bytes are as good as ours.
    if (isCodedError(err) && (err.details as { errno?: string }).errno === 'EEXIST' && sameFileThere(path, bytes)) return 'existing';
    if (isCodedError(err) && err.code === 'SPOOL_OUT_CONFLICT') throw err;
    throw new SpoolError('SPOOL_WRITE_FAILED', `The spool file ${path} could not be written durably.`, { path }, { cause: err });
  }
}

function sameFileThere(path: string, bytes: Buffer): boolean {
  let stat: Stats;
  try {
    stat = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new SpoolError('SPOOL_WRITE_FAILED', `The spool file ${path} cannot be examined.`, { path }, { cause: err });
  }
  const held = stat.isFile() && stat.size === bytes.length ? readSpoolFile(path, bytes.length) : undefined;
  if (held?.kind === 'read' && held.bytes.equals(bytes)) return true;
  throw new SpoolError('SPOOL_OUT_CONFLICT', `${path} holds other bytes than its content address names; it is left as it is.`, { path });
}

export type SpoolRead =
  | { kind: 'read'; bytes: Buffer; size: number; mtimeMs: number; ino: number }
  /** Over the cap: the first cap+1 bytes, for acceptance to refuse by size; `size` is the file's. */
  | { kind: 'over-cap'; bytes: Buffer; size: number; mtimeMs: number; ino: number }
  /**
   * Not a regular file (a symlink, a folder, a fifo), a file with other hard links (a local user linking a
   * file the runner may read, to learn its digest from the rejection), gone, unreadable, or changed while
   * it was read.
   */
  | { kind: 'skipped'; reason: SkipReason };

export type SkipReason = 'not-regular' | 'linked' | 'gone' | 'unreadable' | 'changing';

/** Reads a file of a spool folder without following a symlink, at most `capBytes` + 1 bytes of it. */
export function readSpoolFile(path: string, capBytes: number): SpoolRead {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { kind: 'skipped', reason: code === 'ENOENT' ? 'gone' : code === 'ELOOP' ? 'not-regular' : 'unreadable' };
  }
  try {
    const before = fstatSync(fd);
    if (!before.isFile()) return { kind: 'skipped', reason: 'not-regular' };
    if (before.nlink > 1) return { kind: 'skipped', reason: 'linked' };
    const want = Math.min(before.size, capBytes + 1);
    const bytes = Buffer.alloc(want);
    let got = 0;
    while (got < want) {
      const n = readSync(fd, bytes, got, want - got, got);
      if (n <= 0) break;
      got += n;
    }
    const after = fstatSync(fd);
    // Still being copied (or rewritten): not these bytes; the next look takes the file once it is still.
    if (got !== want || after.size !== before.size || after.mtimeMs !== before.mtimeMs) return { kind: 'skipped', reason: 'changing' };
    return { kind: before.size > capBytes ? 'over-cap' : 'read', bytes, size: before.size, mtimeMs: before.mtimeMs, ino: before.ino };
  } catch {
    return { kind: 'skipped', reason: 'unreadable' };
  } finally {
    closeSync(fd);
  }
}

/**
 * Makes `dir` and its subfolders (mode 0755 for new ones); a path that is not a folder is SPOOL_DIR_INVALID.
 * `dir` itself may be a symlink (a mount point's alias); a subfolder may not (it could point anywhere).
 */
export function ensureSpoolFolders(dir: string, subfolders: readonly string[]): void {
  for (const sub of ['', ...subfolders]) {
    const path = sub === '' ? dir : join(dir, sub);
    try {
      mkdirSync(path, { recursive: true, mode: 0o755 });
      if (!(sub === '' ? statSync(path) : lstatSync(path)).isDirectory()) throw new Error('not a folder');
    } catch (err) {
      throw new SpoolError('SPOOL_DIR_INVALID', `The spool folder ${path} is not a folder the runner can use.`, { path }, { cause: err });
    }
  }
}
