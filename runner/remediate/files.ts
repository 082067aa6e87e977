/**
 * A change's plan written to a target, kept, and put back: the only code that writes a change target.
 *
 * - Every path is walked from the target's root one folder at a time, each opened with
 *   O_DIRECTORY|O_NOFOLLOW and what is inside it named relative to that open folder (/proc/self/fd/N/NAME):
 *   a symlink anywhere on the way, or one swapped in between a check and the write, is never followed
 *   (CHANGE_PATH_ESCAPE); a file is read through O_NOFOLLOW.
 * - A file gets its bytes under a temporary name in its own folder (one name per planned path,
 *   TEMP_PREFIX + a digest of the path, created O_EXCL|O_NOFOLLOW), fsync'ed, given its mode, renamed over
 *   its name, and the folder fsync'ed: a reader, or a crash, sees the old file or the new one, never a mix.
 *   A delete is an unlink. Folders the plan needs are created 0755. The temporary names are fixed so that
 *   restorePlan finds and removes what a killed writePlan left.
 * - snapshotPlan keeps every file the plan changes or deletes (bytes by digest, mode, owner) in a folder of
 *   the runner's, and the folders the plan will create, before anything is written; restorePlan puts every
 *   planned path back from it. Both writePlan and restorePlan are idempotent: after a kill -9 at any point
 *   of either, restorePlan brings the tree back to the pre-state (test/integration/remediate-files-crash).
 * - As root, a written file keeps the owner of the file it replaces, and a new file or folder takes the
 *   owner of the folder it is made in (ownership is not in the tree digest; the service reading the target
 *   must still be able to).
 */
import {
  closeSync,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmdirSync,
  unlinkSync,
  type Stats,
} from 'node:fs';
import { join } from 'node:path';
import { isContainedPath } from '../capsule/manifest.js';
import { sha256Hex } from '../core/digest.js';
import { toPrintableExcerpt } from '../core/printable.js';
import { EXCLUSIVE_CREATE_FLAGS, writeFailure, writeFileAtomic, writeFully } from '../state/files.js';
import { ChangeError } from './errors.js';
import { TEMP_PREFIX, verifyChangePath, type FilePlan, type PlannedRead } from './patch.js';

export { TEMP_PREFIX };
import { at, FILE_READ_FLAGS, FOLDER_FLAGS } from './tree.js';

/** The snapshot's index in the snapshot folder, written last: once it is there, every kept file is. */
export const SNAPSHOT_INDEX = 'snapshot.json';
/** Mode of a folder the plan creates. */
export const CREATED_FOLDER_MODE = 0o755;

/** The fixed temporary name of a planned path, in the path's own folder: TEMP_PREFIX + 32 hex digits of the path's SHA-256. */
export const tempNameOf = (path: string): string => `${TEMP_PREFIX}${sha256Hex(Buffer.from(path, 'utf8')).slice(0, 32)}`;

const isRoot = (): boolean => process.getuid?.() === 0;
const errnoOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** What `planChange` reads: the bytes and mode of a plain file of the target, never through a symlink. */
export function readPlanned(root: string, path: string): PlannedRead {
  if (!isContainedPath(path)) return 'not-a-file';
  const rootFd = openRoot(root);
  try {
    const segments = path.split('/');
    const name = segments.pop()!;
    const parent = walkFolders(rootFd, segments, path, 'read');
    if (typeof parent === 'string') return parent;
    const read = withClose(parent, () => readFileAt(parent.fd, name, path));
    return typeof read === 'string' ? read : { bytes: read.bytes, mode: read.mode };
  } finally {
    closeSync(rootFd);
  }
}

/**
 * Writes the plan to `root`, file by file in path order (see the top of this file). A file already as
 * planned is left; a file already deleted stays deleted; a file that is neither as planned nor as the plan
 * found it (someone changed it since) is CHANGE_TARGET_CHANGED and not written. Throws CHANGE_PATH_ESCAPE
 * when a symlink or a non-folder is on the way or at the path, and STATE_WRITE_FAILED / STATE_DISK_FULL
 * when a write fails (its temporary file removed: the file is the old one or the new one).
 */
export function writePlan(root: string, plan: readonly FilePlan[]): void {
  verifyPlanPaths(plan);
  const rootFd = openRoot(root);
  try {
    for (const file of plan) {
      const segments = file.path.split('/');
      const name = segments.pop()!;
      const parent = walkFolders(rootFd, segments, file.path, file.after === undefined ? 'write' : 'create');
      if (parent === 'absent') continue; // a delete whose folder is gone: the file is gone too
      if (parent === 'not-a-file') throw escape(file.path);
      try {
        removeTemp(parent.fd, file.path);
        const current = lstatAt(parent.fd, name, file.path);
        if (current !== undefined && !current.isFile()) throw escape(file.path);
        // What is there must be the plan's before (or, written already, its after): a file someone changed
        // or made since the plan is never overwritten.
        const now = current === undefined ? undefined : stateAt(parent.fd, name);
        const is = (want: { sha256: string; mode: number } | undefined) =>
          want === undefined ? now === undefined : now !== undefined && now.sha256 === want.sha256 && now.mode === want.mode;
        if (is(file.after)) continue;
        if (!is(file.before)) throw changed(file.path);
        if (file.after === undefined) unlinkAt(parent.fd, name, file.path);
        else replaceAt(parent.fd, name, file.path, file.after.bytes, file.after.mode, current ?? fstatSync(parent.fd));
        syncFd(parent.fd, file.path);
      } finally {
        parent.close();
      }
    }
  } finally {
    closeSync(rootFd);
  }
}

interface SnapshotIndex {
  version: 1;
  /** Every file the plan modifies or deletes, as it was. */
  files: Array<{ path: string; sha256: string; mode: number; uid: number; gid: number }>;
  /** The folders writePlan will create (missing before it), sorted. */
  folders: string[];
}

/**
 * Keeps, in `dir` (created 0700), what restorePlan needs: the bytes (by SHA-256, fsync'ed), mode and owner
 * of every file the plan modifies or deletes, checked against the plan's `before` (else CHANGE_TARGET_CHANGED:
 * the target is not what the plan was made against), and the folders writePlan will create. Its index is
 * written last; once it is there, snapshotPlan of the same plan returns at once (so it is safe to call again
 * after a crash, even one inside the writePlan that followed), and of another plan is CHANGE_RESTORE_FAILED.
 */
export function snapshotPlan(root: string, plan: readonly FilePlan[], dir: string): void {
  verifyPlanPaths(plan);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw writeFailure(dir, err);
  }
  // Once kept, a snapshot is never taken again: after a writePlan began, the target is no longer the
  // pre-state, and a second look would miss the folders the write created.
  const existing = readSnapshotIndex(dir);
  if (existing !== undefined) {
    const kept = new Map(existing.files.map((file) => [file.path, file.sha256]));
    const same = plan.every((file) => file.before === undefined || kept.get(file.path) === file.before.sha256);
    if (same && kept.size === plan.filter((file) => file.before !== undefined).length) return;
    throw restoreFailed(SNAPSHOT_INDEX, 'the snapshot folder already holds the snapshot of another plan');
  }
  const index: SnapshotIndex = { version: 1, files: [], folders: [] };
  const folders = new Set<string>();
  const rootFd = openRoot(root);
  try {
    for (const file of plan) {
      const segments = file.path.split('/');
      const name = segments.pop()!;
      if (file.before === undefined) {
        for (const folder of missingFolders(rootFd, segments, file.path)) folders.add(folder);
        continue;
      }
      const parent = walkFolders(rootFd, segments, file.path, 'read');
      if (parent === 'not-a-file') throw escape(file.path);
      const current = parent === 'absent' ? 'absent' : withClose(parent, () => readFileAt(parent.fd, name, file.path));
      if (current === 'not-a-file') throw escape(file.path);
      if (current === 'absent' || sha256Hex(current.bytes) !== file.before.sha256 || current.mode !== file.before.mode) throw changed(file.path);
      const blob = join(dir, file.before.sha256);
      if (!isBlobKept(blob, file.before.sha256)) writeFileAtomic(blob, current.bytes, { mode: 0o600 });
      index.files.push({ path: file.path, sha256: file.before.sha256, mode: file.before.mode, uid: current.uid, gid: current.gid });
    }
  } finally {
    closeSync(rootFd);
  }
  index.folders = [...folders].sort();
  writeFileAtomic(join(dir, SNAPSHOT_INDEX), `${JSON.stringify(index)}\n`, { mode: 0o600 });
}

/**
 * Puts every planned path of `root` back as it was before the plan: an added file removed, a modified or
 * deleted one rewritten from the snapshot in `dir` (its bytes checked by digest; mode and owner as kept),
 * the temporary names of writePlan and restorePlan removed, the folders writePlan created removed when they
 * are empty. Idempotent; same rename discipline as writePlan. Without a snapshot index in `dir` it does
 * nothing (writePlan must only ever run after snapshotPlan returned). Throws CHANGE_RESTORE_FAILED when a
 * file it must rewrite has no kept bytes (or bytes that do not match), or a folder stands where a file was;
 * CHANGE_PATH_ESCAPE when a symlink is on a planned path's way (never followed); STATE_* when a write fails.
 */
export function restorePlan(root: string, plan: readonly FilePlan[], dir: string): void {
  verifyPlanPaths(plan);
  const index = readSnapshotIndex(dir);
  // No index: snapshotPlan never finished, so writePlan never began (the caller's order), and nothing of the
  // plan's is in the target. Touching nothing is then exact: a file that differs was changed by someone else.
  if (index === undefined) return;
  const kept = new Map(index.files.map((file) => [file.path, file]));
  const rootFd = openRoot(root);
  try {
    for (const file of plan) {
      const segments = file.path.split('/');
      const name = segments.pop()!;
      const parent = walkFolders(rootFd, segments, file.path, file.before === undefined ? 'write' : 'create');
      if (parent === 'absent') continue; // an added file whose folder was never made
      if (parent === 'not-a-file') throw escape(file.path);
      try {
        removeTemp(parent.fd, file.path);
        const current = lstatAt(parent.fd, name, file.path);
        if (current?.isDirectory() === true) throw restoreFailed(file.path, 'a folder stands where the file was');
        if (file.before === undefined) {
          if (current !== undefined) unlinkAt(parent.fd, name, file.path);
        } else if (current === undefined || !current.isFile() || !isAlready(parent.fd, name, file.before)) {
          const snapshot = kept.get(file.path);
          const bytes = readBlob(dir, file.path, file.before.sha256);
          const owner = snapshot ?? current ?? fstatSync(parent.fd);
          replaceAt(parent.fd, name, file.path, bytes, file.before.mode, owner);
        }
        syncFd(parent.fd, file.path);
      } finally {
        parent.close();
      }
    }
    // Deepest first: a created folder inside another created folder goes before it.
    for (const folder of [...index.folders].sort().reverse()) removeCreatedFolder(rootFd, folder);
  } finally {
    closeSync(rootFd);
  }
}

interface OpenFolder {
  fd: number;
  close: () => void;
}

function withClose<T>(folder: OpenFolder, fn: () => T): T {
  try {
    return fn();
  } finally {
    folder.close();
  }
}

function openRoot(root: string): number {
  try {
    return openSync(root, FOLDER_FLAGS);
  } catch (err) {
    const errno = errnoOf(err);
    if (errno === 'ENOENT' || errno === 'ENOTDIR' || errno === 'ELOOP') {
      throw new ChangeError('CHANGE_TARGET_MISSING', 'The change target is not a folder (a symlink is not followed).', { path: root });
    }
    throw new ChangeError('CHANGE_TARGET_UNREADABLE', `The change target could not be opened${errno === undefined ? '' : ` (${errno})`}.`, {
      path: '',
      ...(errno === undefined ? {} : { errno }),
    });
  }
}

/**
 * Opens the folders `segments` below the root, one at a time, never through a symlink. 'read' and 'write'
 * stop at a missing one ('absent'); 'create' makes it (0755, the parent's owner when root, the parent
 * fsync'ed). A symlink or a non-folder on the way is 'not-a-file'.
 */
function walkFolders(
  rootFd: number,
  segments: readonly string[],
  path: string,
  mode: 'read' | 'write' | 'create',
): OpenFolder | 'absent' | 'not-a-file' {
  let fd = rootFd;
  const opened: number[] = [];
  const close = () => {
    for (const open of opened) closeSync(open);
  };
  try {
    for (const segment of segments) {
      let next: number | undefined;
      try {
        next = openSync(at(fd, segment), FOLDER_FLAGS);
      } catch (err) {
        const errno = errnoOf(err);
        if (errno === 'ELOOP' || errno === 'ENOTDIR') {
          close();
          return 'not-a-file';
        }
        if (errno !== 'ENOENT') throw targetError(path, err, mode);
        if (mode !== 'create') {
          close();
          return 'absent';
        }
        next = createFolderAt(fd, segment, path);
      }
      opened.push(next);
      fd = next;
    }
  } catch (err) {
    close();
    throw err;
  }
  return { fd, close };
}

/** mkdir at(fd, name), 0755 exactly (not the umask's), owned as its parent when root; returns it open. */
function createFolderAt(parentFd: number, name: string, path: string): number {
  try {
    mkdirSync(at(parentFd, name), { mode: CREATED_FOLDER_MODE });
  } catch (err) {
    if (errnoOf(err) !== 'EEXIST') throw writeFailure(path, err);
  }
  let fd: number;
  try {
    fd = openSync(at(parentFd, name), FOLDER_FLAGS);
  } catch (err) {
    const errno = errnoOf(err);
    if (errno === 'ELOOP' || errno === 'ENOTDIR') throw escape(path); // swapped for a symlink just now
    throw writeFailure(path, err);
  }
  try {
    if (isRoot()) {
      const parent = fstatSync(parentFd);
      fchownSync(fd, parent.uid, parent.gid);
    }
    fchmodSync(fd, CREATED_FOLDER_MODE);
    syncFd(parentFd, path);
  } catch (err) {
    closeSync(fd);
    throw writeFailure(path, err);
  }
  return fd;
}

/** The folders of `segments` that do not exist yet, outermost first ('/'-joined from the root). */
function missingFolders(rootFd: number, segments: readonly string[], path: string): string[] {
  const missing: string[] = [];
  let fd = rootFd;
  const opened: number[] = [];
  try {
    for (let i = 0; i < segments.length; i++) {
      try {
        const next = openSync(at(fd, segments[i]!), FOLDER_FLAGS);
        opened.push(next);
        fd = next;
      } catch (err) {
        const errno = errnoOf(err);
        if (errno === 'ELOOP' || errno === 'ENOTDIR') throw escape(path);
        if (errno !== 'ENOENT') throw targetError(path, err, 'read');
        for (let j = i; j < segments.length; j++) missing.push(segments.slice(0, j + 1).join('/'));
        break;
      }
    }
  } finally {
    for (const open of opened) closeSync(open);
  }
  return missing;
}

function removeCreatedFolder(rootFd: number, folder: string): void {
  const segments = folder.split('/');
  const name = segments.pop()!;
  const parent = walkFolders(rootFd, segments, folder, 'write');
  if (typeof parent === 'string') return;
  try {
    rmdirSync(at(parent.fd, name));
    syncFd(parent.fd, folder);
  } catch (err) {
    const errno = errnoOf(err);
    // ENOTEMPTY: something else is in it now (the digest check after the restore says so); ENOTDIR: not ours.
    if (errno !== 'ENOENT' && errno !== 'ENOTEMPTY' && errno !== 'EEXIST' && errno !== 'ENOTDIR') throw writeFailure(folder, err);
  } finally {
    parent.close();
  }
}

interface PlainFile {
  bytes: Buffer;
  mode: number;
  uid: number;
  gid: number;
}

/** A plain file's bytes, mode and owner read at(fd, name) without following a symlink. */
function readFileAt(fd: number, name: string, path: string): PlainFile | 'absent' | 'not-a-file' {
  const stat = lstatAt(fd, name, path);
  if (stat === undefined) return 'absent';
  if (!stat.isFile()) return 'not-a-file';
  let file: number;
  try {
    file = openSync(at(fd, name), FILE_READ_FLAGS);
  } catch (err) {
    const errno = errnoOf(err);
    if (errno === 'ELOOP') return 'not-a-file';
    if (errno === 'ENOENT') return 'absent';
    throw targetError(path, err, 'read');
  }
  try {
    const opened = fstatSync(file);
    if (!opened.isFile()) return 'not-a-file';
    return { bytes: readFileSync(file), mode: opened.mode & 0o7777, uid: opened.uid, gid: opened.gid };
  } catch (err) {
    throw targetError(path, err, 'read');
  } finally {
    closeSync(file);
  }
}

function lstatAt(fd: number, name: string, path: string): Stats | undefined {
  try {
    return lstatSync(at(fd, name));
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw targetError(path, err, 'read');
  }
}

/** The digest and mode of the plain file at(fd, name), read without following a symlink; undefined when it is not one. */
function stateAt(fd: number, name: string): { sha256: string; mode: number } | undefined {
  let file: number;
  try {
    file = openSync(at(fd, name), FILE_READ_FLAGS);
  } catch {
    return undefined;
  }
  try {
    const stat = fstatSync(file);
    return stat.isFile() ? { sha256: sha256Hex(readFileSync(file)), mode: stat.mode & 0o7777 } : undefined;
  } finally {
    closeSync(file);
  }
}

/** Whether the plain file at(fd, name) already has `want`'s digest and mode. */
function isAlready(fd: number, name: string, want: { sha256: string; mode: number }): boolean {
  const now = stateAt(fd, name);
  return now !== undefined && now.sha256 === want.sha256 && now.mode === want.mode;
}

/**
 * The file at(fd, name) replaced by `bytes`: written under its temporary name, fsync'ed, owned (when root)
 * and moded, renamed over the name. On failure the temporary file is removed and nothing else changed.
 */
function replaceAt(fd: number, name: string, path: string, bytes: Uint8Array, mode: number, owner: { uid: number; gid: number }): void {
  const temp = tempNameOf(path);
  let out: number | undefined;
  try {
    out = openSync(at(fd, temp), EXCLUSIVE_CREATE_FLAGS, 0o600);
    writeFully(out, bytes);
    fsyncSync(out);
    // chown first: it clears setuid and setgid, which the mode then sets.
    if (isRoot()) fchownSync(out, owner.uid, owner.gid);
    fchmodSync(out, mode);
    closeSync(out);
    out = undefined;
    renameSync(at(fd, temp), at(fd, name));
  } catch (err) {
    if (out !== undefined) closeSync(out);
    removeTemp(fd, path);
    if (errnoOf(err) === 'EISDIR') throw escape(path);
    throw writeFailure(path, err);
  }
}

function removeTemp(fd: number, path: string): void {
  try {
    unlinkSync(at(fd, tempNameOf(path)));
  } catch (err) {
    const errno = errnoOf(err);
    if (errno !== 'ENOENT') throw writeFailure(path, err);
  }
}

function unlinkAt(fd: number, name: string, path: string): void {
  try {
    unlinkSync(at(fd, name));
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return;
    if (errnoOf(err) === 'EISDIR') throw escape(path);
    throw writeFailure(path, err);
  }
}

/** fsync of an open folder; a file system that refuses it on folders is not a failure (as syncFolder). */
function syncFd(fd: number, path: string): void {
  try {
    fsyncSync(fd);
  } catch (err) {
    const errno = errnoOf(err);
    if (errno !== 'EINVAL' && errno !== 'EISDIR') throw writeFailure(path, err);
  }
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * The plan is read back from the runner's store before an apply or a rollback: its paths are checked again
 * as planChange checked them (a `..` segment would open the folder above), and its digests, which name
 * the snapshot's files, are hex.
 */
function verifyPlanPaths(plan: readonly FilePlan[]): void {
  for (const file of plan) {
    const digests = [file.before?.sha256, file.after?.sha256].filter((d) => d !== undefined);
    verifyChangePath(file.path);
    if (!digests.every((d) => SHA256_HEX.test(d))) throw escape(file.path);
  }
}

function isBlobKept(blob: string, sha256: string): boolean {
  try {
    return sha256Hex(readFileSync(blob)) === sha256;
  } catch {
    return false;
  }
}

function readBlob(dir: string, path: string, sha256: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(join(dir, sha256));
  } catch {
    throw restoreFailed(path, 'its snapshot is missing');
  }
  if (sha256Hex(bytes) !== sha256) throw restoreFailed(path, 'its snapshot does not match its digest');
  return bytes;
}

function readSnapshotIndex(dir: string): SnapshotIndex | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, SNAPSHOT_INDEX), 'utf8');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined; // snapshotPlan never finished: writePlan never began
    throw restoreFailed(SNAPSHOT_INDEX, 'the snapshot index cannot be read');
  }
  let index: unknown;
  try {
    index = JSON.parse(text);
  } catch {
    throw restoreFailed(SNAPSHOT_INDEX, 'the snapshot index is not JSON');
  }
  const { version, files, folders } = (index ?? {}) as Partial<SnapshotIndex>;
  const isName = (value: unknown): value is string => typeof value === 'string' && isContainedPath(value);
  const isId = (value: unknown): boolean => Number.isSafeInteger(value) && (value as number) >= 0;
  const valid =
    version === 1 &&
    Array.isArray(files) &&
    Array.isArray(folders) &&
    folders.every(isName) &&
    files.every(
      (f) => isName(f.path) && typeof f.sha256 === 'string' && /^[0-9a-f]{64}$/.test(f.sha256) && isId(f.mode) && isId(f.uid) && isId(f.gid),
    );
  if (!valid) throw restoreFailed(SNAPSHOT_INDEX, 'the snapshot index is not one snapshotPlan writes');
  return index as SnapshotIndex;
}

function escape(path: string): ChangeError<'CHANGE_PATH_ESCAPE'> {
  return new ChangeError(
    'CHANGE_PATH_ESCAPE',
    `The change path "${toPrintableExcerpt(path)}" is not a plain file of the change target (a symlink, a folder or a special file is there or on the way).`,
    { path },
  );
}

function changed(path: string): ChangeError<'CHANGE_TARGET_CHANGED'> {
  return new ChangeError(
    'CHANGE_TARGET_CHANGED',
    `The change target's "${toPrintableExcerpt(path)}" is not what the change was planned against; it was not written.`,
    { path },
  );
}

function restoreFailed(path: string, why: string): ChangeError<'CHANGE_RESTORE_FAILED'> {
  return new ChangeError('CHANGE_RESTORE_FAILED', `The change target's "${toPrintableExcerpt(path)}" cannot be put back: ${why}.`, { path, why });
}

function targetError(path: string, cause: unknown, mode: 'read' | 'write' | 'create'): Error {
  if (mode !== 'read') return writeFailure(path, cause);
  const errno = errnoOf(cause);
  return new ChangeError(
    'CHANGE_TARGET_UNREADABLE',
    `The change target's entry "${toPrintableExcerpt(path)}" could not be read${errno === undefined ? '' : ` (${errno})`}.`,
    { path, ...(errno === undefined ? {} : { errno }) },
    { cause },
  );
}
