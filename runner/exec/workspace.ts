/**
 * A fresh workspace per run. Inputs are written read-only (0444, or 0555 when marked executable), with
 * every parent created by us and checked not to be a symlink, so nothing is written outside the workspace.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants,
  existsSync,
  fchmodSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  unlinkSync,
} from 'node:fs';
import { join, sep } from 'node:path';
import { ExecError } from './errors.js';
import { isContainedPath, type InputFile } from '../capsule/manifest.js';
import { EXCLUSIVE_CREATE_FLAGS, writeFailure, writeFully } from '../state/files.js';

export function createWorkspace(runDir: string): string {
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const workspace = join(runDir, 'workspace');
  mkdirSync(workspace, { mode: 0o755 });
  return realpathSync(workspace);
}

export function writeInputs(workspace: string, inputs: readonly InputFile[], bytes: ReadonlyMap<string, Buffer>): void {
  for (const input of inputs) {
    const target = resolveInside(workspace, input.path, { forWrite: true });
    const data = bytes.get(input.path);
    if (!data) throw new ExecError('EXEC_INPUT_MISSING', `The capsule carries no bytes for the input "${input.path}".`, { path: input.path });
    // A new file, never through a symlink, every byte checked (a full disk is STATE_DISK_FULL).
    let fd: number;
    try {
      fd = openSync(target, EXCLUSIVE_CREATE_FLAGS, 0o600);
    } catch (err) {
      throw writeFailure(target, err);
    }
    try {
      writeFully(fd, data);
      fchmodSync(fd, input.executable ? 0o555 : 0o444);
    } catch (err) {
      throw writeFailure(target, err);
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * Resolves a manifest path inside the workspace. Each existing component is lstat-ed: a symlink anywhere on
 * the way is an escape (CAPSULE_PATH_ESCAPE), as is a lexical escape. With forWrite, missing parents are made.
 */
export function resolveInside(workspace: string, path: string, options: { forWrite?: boolean } = {}): string {
  const escape = () => new ExecError('EXEC_PATH_ESCAPE', `The path "${path}" would leave the run's workspace.`, { path });
  if (!isContainedPath(path)) throw escape();
  const segments = path.split('/');
  let current = workspace;
  for (let i = 0; i < segments.length; i++) {
    current = join(current, segments[i]!);
    const last = i === segments.length - 1;
    let stat;
    try {
      stat = lstatSync(current);
    } catch {
      if (options.forWrite && !last) {
        mkdirSync(current, { mode: 0o755 });
        continue;
      }
      return current; // absent: the caller decides what a missing file means
    }
    if (stat.isSymbolicLink()) throw escape();
    if (!last && !stat.isDirectory()) throw escape();
  }
  if (!current.startsWith(workspace + sep)) throw escape();
  return current;
}

/** Folders held open at once while removing a tree; a subtree deeper than this is moved up to the top. */
const REMOVE_OPEN_DEPTH = 64;
/** Times one folder is read again after it was emptied (something still writing into it), before giving up. */
const REMOVE_REREADS = 16;
const PROC_FD = '/proc/self/fd';
const DIRECTORY_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** The path of `name` inside the folder open as `fd`: openat(2) through /proc, always a short path. */
const at = (fd: number, name?: string): string => (name === undefined ? `${PROC_FD}/${fd}` : `${PROC_FD}/${fd}/${name}`);

interface Folder {
  fd: number;
  /** Its name in the folder below it on the stack (unused for the top folder). */
  name: string;
  /** Subfolders still to empty; undefined until the folder is read. */
  pending: string[] | undefined;
  rereads: number;
}

/**
 * Removes a run folder whatever its depth or shape, and never outside it. `rmSync(recursive)` fails on a
 * tree a step can make: thousands of nested folders exceed PATH_MAX (ENAMETOOLONG) or, walked with one open
 * folder per level, the open-files limit (EMFILE). This walk names everything relative to an open folder
 * (`/proc/self/fd/N/NAME`, the openat(2) of a language without openat, so no path is ever long), opens
 * each folder with O_NOFOLLOW|O_DIRECTORY (a symlink is removed, never followed), holds at most
 * REMOVE_OPEN_DEPTH folders open, and renames a subtree that lies deeper to a short name at the top, to be
 * emptied from there. Throws EXEC_WORKSPACE_NOT_REMOVED (with the errno) when something cannot be removed;
 * what is left is retried when the next runner opens. A missing folder is not an error.
 */
export function removeTree(path: string): void {
  if (!existsSync(PROC_FD)) {
    rmSync(path, { recursive: true, force: true });
    return;
  }
  let rootFd: number;
  try {
    rootFd = openSync(path, DIRECTORY_FLAGS);
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code;
    if (errno === 'ENOENT') return;
    if (errno === 'ENOTDIR' || errno === 'ELOOP') return unlinkOrThrow(path);
    throw notRemoved(path, err);
  }
  try {
    emptyFolder(rootFd, path);
  } finally {
    closeSync(rootFd);
  }
  try {
    rmdirSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw notRemoved(path, err);
  }
}

function emptyFolder(rootFd: number, path: string): void {
  const stack: Folder[] = [{ fd: rootFd, name: '', pending: undefined, rereads: 0 }];
  let movedUp = 0;
  try {
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.pending === undefined || top.pending.length === 0) {
        const names = readdirSync(at(top.fd));
        if (names.length === 0) {
          stack.pop();
          if (stack.length === 0) return;
          closeSync(top.fd);
          rmdirSync(at(stack[stack.length - 1]!.fd, top.name));
          continue;
        }
        // The top folder is read again after each subtree moved up into it.
        if (++top.rereads > REMOVE_REREADS + (stack.length === 1 ? movedUp : 0)) {
          throw Object.assign(new Error('the folder keeps filling while it is removed'), { code: 'ENOTEMPTY' });
        }
        top.pending = unlinkEntries(top.fd, names);
        continue;
      }
      const name = top.pending.pop()!;
      if (stack.length >= REMOVE_OPEN_DEPTH) {
        renameSync(at(top.fd, name), at(rootFd, `.rm-${randomBytes(8).toString('hex')}`));
        movedUp += 1;
        continue;
      }
      const fd = openFolder(top.fd, name);
      if (fd !== undefined) stack.push({ fd, name, pending: undefined, rereads: 0 });
    }
  } catch (err) {
    throw notRemoved(path, err);
  } finally {
    for (const folder of stack.slice(1)) closeSync(folder.fd);
  }
}

/** Unlinks every entry of the folder that is not a folder; returns the names of the folders. */
function unlinkEntries(fd: number, names: readonly string[]): string[] {
  const folders: string[] = [];
  for (const name of names) {
    try {
      unlinkSync(at(fd, name));
    } catch (err) {
      const errno = (err as NodeJS.ErrnoException).code;
      if (errno === 'ENOENT') continue;
      if (errno === 'EISDIR' || (errno === 'EPERM' && isFolder(at(fd, name)))) {
        folders.push(name);
        continue;
      }
      if (errno !== 'EACCES') throw err;
      // A folder the step made read-only (when the runner is not root): it is ours to open again.
      fchmodSync(fd, 0o700);
      unlinkSync(at(fd, name));
    }
  }
  return folders;
}

/** Opens a subfolder without following a symlink; undefined when it is gone or turned out not to be a folder (then it is unlinked). */
function openFolder(parentFd: number, name: string): number | undefined {
  const path = at(parentFd, name);
  try {
    return openSync(path, DIRECTORY_FLAGS);
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code;
    if (errno === 'ENOENT') return undefined;
    if (errno === 'ENOTDIR' || errno === 'ELOOP') {
      unlinkOrThrow(path);
      return undefined;
    }
    // A folder the step left unreadable (mode 0): only when the runner is not root, so the step is the
    // runner's own user and gains nothing by racing this chmod.
    if (errno !== 'EACCES' || process.getuid?.() === 0 || !isFolder(path)) throw err;
    chmodSync(path, 0o700);
    return openSync(path, DIRECTORY_FLAGS);
  }
}

function isFolder(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

function unlinkOrThrow(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw notRemoved(path, err);
  }
}

function notRemoved(path: string, cause: unknown): ExecError<'EXEC_WORKSPACE_NOT_REMOVED'> {
  if (cause instanceof ExecError && cause.code === 'EXEC_WORKSPACE_NOT_REMOVED') return cause as ExecError<'EXEC_WORKSPACE_NOT_REMOVED'>;
  const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
  return new ExecError(
    'EXEC_WORKSPACE_NOT_REMOVED',
    `The run folder ${path} could not be removed whole${typeof errno === 'string' && errno !== '' ? ` (${errno})` : ''}; the next start tries again.`,
    { path, ...(typeof errno === 'string' && errno !== '' ? { errno } : {}) },
    { cause },
  );
}
