/**
 * The state of a change target as one digest: what the proposal's pre-state and post-state name, what apply
 * checks under its lock, and what an auditor recomputes with find(1) and sha256sum(1).
 *
 * THE TREE DIGEST (a contract: pre-state, post-state and target digests are all computed this way):
 *   every entry below the target folder, recursively, symlinks never followed, one line each, sorted by the
 *   bytes of the '/'-joined relative path in UTF-8 (`LC_ALL=C sort`; JavaScript's code-unit order differs
 *   from it only between U+E000–U+FFFF and characters above U+FFFF, and the auditor's sort is bytes):
 *     file <mode> <sha256 hex of the content> <path>\n
 *     dir <mode> - <path>\n
 *     symlink 0777 <sha256 hex of the link text> <path>\n
 *   where <mode> is st_mode & 07777 as four octal digits (`0644`, `4755`). The root folder itself is not a
 *   line. digest = `sha256:` + hex SHA-256 of the lines concatenated (an empty target: the SHA-256 of nothing).
 *   Ownership and times are not in it. A fifo, socket or device refuses the target (CHANGE_TARGET_UNSUPPORTED),
 *   and so does a name that is not UTF-8 or holds a control character (a newline in a name would make two
 *   trees read as the same lines).
 *
 * The walk opens every folder with O_DIRECTORY|O_NOFOLLOW and names what is inside it relative to that open
 * folder (/proc/self/fd/N/NAME), so a folder swapped for a symlink while it is read is never followed; each
 * file's mode and bytes come from the one descriptor that was read.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  symlinkSync,
  type Stats,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { toPrintableExcerpt } from '../core/printable.js';
import { removeTree } from '../exec/workspace.js';
import { EXCLUSIVE_CREATE_FLAGS, writeFailure, writeFully } from '../state/files.js';
import { ChangeError } from './errors.js';

export type TreeEntry =
  | { type: 'file'; path: string; mode: number; sha256: string; size: number }
  | { type: 'dir'; path: string; mode: number }
  | { type: 'symlink'; path: string; sha256: string };

export interface TreeState {
  /** `sha256:HEX` over the entries' lines (see the top of this file). */
  digest: string;
  /** Sorted by path (UTF-8 byte order). */
  entries: TreeEntry[];
}

export interface TreeCaps {
  /** The most bytes of file content (default of a target's `maxBytes`: 256 MiB). */
  maxBytes: number;
  /** The most entries: files, folders and symlinks (a target's `maxEntries`: 100,000). */
  maxEntries: number;
}

/** Folders below the root, at most: each level holds one open descriptor while it is walked. */
export const TREE_MAX_DEPTH = 256;

const READ_CHUNK_BYTES = 1024 * 1024;
const PROC_FD = '/proc/self/fd';
export const FOLDER_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
/** O_NONBLOCK: a file swapped for a fifo after its lstat does not hang the open. */
export const FILE_READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** The path of `name` inside the folder open as `fd`: openat(2) through /proc. */
export const at = (fd: number, name?: string): string => (name === undefined ? `${PROC_FD}/${fd}` : `${PROC_FD}/${fd}/${name}`);

/** One entry's line of the digest. */
export function treeLineOf(entry: TreeEntry): string {
  switch (entry.type) {
    case 'file':
      return `file ${toOctalMode(entry.mode)} ${entry.sha256} ${entry.path}\n`;
    case 'dir':
      return `dir ${toOctalMode(entry.mode)} - ${entry.path}\n`;
    case 'symlink':
      return `symlink 0777 ${entry.sha256} ${entry.path}\n`;
  }
}

/** `sha256:` + SHA-256 of the entries' lines in path order (the entries are sorted here; the input is not changed). */
export function treeDigestOf(entries: readonly TreeEntry[]): string {
  const hash = createHash('sha256');
  for (const entry of sortEntries(entries)) hash.update(treeLineOf(entry), 'utf8');
  return `sha256:${hash.digest('hex')}`;
}

/** Entries sorted by the UTF-8 bytes of their paths (a copy). */
export function sortEntries(entries: readonly TreeEntry[]): TreeEntry[] {
  return entries
    .map((entry) => ({ key: Buffer.from(entry.path, 'utf8'), entry }))
    .sort((a, b) => Buffer.compare(a.key, b.key))
    .map(({ entry }) => entry);
}

export const toOctalMode = (mode: number): string => (mode & 0o7777).toString(8).padStart(4, '0');

/** The target's state, read without following any symlink; throws CHANGE_TARGET_* (see errors.ts). */
export function readTree(root: string, caps: TreeCaps): TreeState {
  return walkTree(root, caps, undefined);
}

/**
 * Copies the target to `dest` (created 0700; it must not exist) and returns the state of what it copied:
 * the digest is computed from the bytes written to the copy, so it is the copy's own state even when the
 * source changes meanwhile (a re-read of the source would then differ). Symlinks are copied as symlinks,
 * modes exactly (a setuid bit too: it is the target's own, and bwrap binds the workspace nosuid). A failure removes
 * what was copied. Errors writing the copy are STATE_WRITE_FAILED / STATE_DISK_FULL.
 */
export function copyTree(root: string, dest: string, caps: TreeCaps): TreeState {
  try {
    mkdirSync(dest, { mode: 0o700 });
  } catch (err) {
    throw writeFailure(dest, err);
  }
  let destFd: number | undefined;
  try {
    destFd = openSync(dest, FOLDER_FLAGS);
    fchmodSync(destFd, 0o700);
  } catch (err) {
    if (destFd !== undefined) closeSync(destFd);
    removeTree(dest);
    throw writeFailure(dest, err);
  }
  try {
    return walkTree(root, caps, destFd);
  } catch (err) {
    closeSync(destFd);
    destFd = undefined;
    removeTree(dest);
    throw err;
  } finally {
    if (destFd !== undefined) closeSync(destFd);
  }
}

interface Walk {
  caps: TreeCaps;
  entries: TreeEntry[];
  bytes: number;
  buffer: Buffer;
}

function walkTree(root: string, caps: TreeCaps, destFd: number | undefined): TreeState {
  let rootFd: number;
  try {
    rootFd = openSync(root, FOLDER_FLAGS);
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code;
    if (errno === 'ENOENT' || errno === 'ENOTDIR' || errno === 'ELOOP') {
      throw new ChangeError('CHANGE_TARGET_MISSING', 'The change target is not a folder (a symlink is not followed).', { path: root });
    }
    throw unreadable('', err);
  }
  const walk: Walk = { caps, entries: [], bytes: 0, buffer: Buffer.allocUnsafe(READ_CHUNK_BYTES) };
  try {
    walkFolder(walk, rootFd, '', 1, destFd);
  } finally {
    closeSync(rootFd);
  }
  const entries = sortEntries(walk.entries);
  return { digest: treeDigestOf(entries), entries };
}

function walkFolder(walk: Walk, fd: number, prefix: string, depth: number, destFd: number | undefined): void {
  let names: Buffer[];
  try {
    names = readdirSync(at(fd), { encoding: 'buffer' });
  } catch (err) {
    throw unreadable(prefix, err);
  }
  for (const raw of names) {
    const name = toEntryName(raw, prefix);
    const path = prefix === '' ? name : `${prefix}/${name}`;
    if (walk.entries.length >= walk.caps.maxEntries) {
      throw new ChangeError('CHANGE_TARGET_TOO_LARGE', `The change target holds more than ${walk.caps.maxEntries} entries.`, {
        limit: 'maxEntries',
        cap: walk.caps.maxEntries,
      });
    }
    let stat: Stats;
    try {
      stat = lstatSync(at(fd, name));
    } catch (err) {
      throw unreadable(path, err);
    }
    if (stat.isSymbolicLink()) {
      walkSymlink(walk, fd, name, path, destFd);
    } else if (stat.isDirectory()) {
      if (depth > TREE_MAX_DEPTH) {
        throw new ChangeError('CHANGE_TARGET_TOO_LARGE', `The change target has folders more than ${TREE_MAX_DEPTH} deep.`, {
          limit: 'depth',
          cap: TREE_MAX_DEPTH,
        });
      }
      walkSubfolder(walk, fd, name, path, depth, destFd);
    } else if (stat.isFile()) {
      walkFile(walk, fd, name, path, destFd);
    } else {
      throw unsupported(path, 'is a fifo, socket or device');
    }
  }
}

function walkSymlink(walk: Walk, fd: number, name: string, path: string, destFd: number | undefined): void {
  let text: Buffer;
  try {
    text = readlinkSync(at(fd, name), { encoding: 'buffer' });
  } catch (err) {
    throw unreadable(path, err);
  }
  if (destFd !== undefined) {
    try {
      symlinkSync(text, at(destFd, name));
    } catch (err) {
      throw writeFailure(path, err);
    }
  }
  walk.entries.push({ type: 'symlink', path, sha256: createHash('sha256').update(text).digest('hex') });
}

function walkSubfolder(walk: Walk, fd: number, name: string, path: string, depth: number, destFd: number | undefined): void {
  let sub: number;
  try {
    sub = openSync(at(fd, name), FOLDER_FLAGS);
  } catch (err) {
    throw unreadable(path, err);
  }
  let destSub: number | undefined;
  try {
    const mode = fstatSync(sub).mode & 0o7777;
    walk.entries.push({ type: 'dir', path, mode });
    if (destFd !== undefined) {
      try {
        mkdirSync(at(destFd, name), { mode: 0o700 });
        destSub = openSync(at(destFd, name), FOLDER_FLAGS);
      } catch (err) {
        throw writeFailure(path, err);
      }
    }
    walkFolder(walk, sub, path, depth + 1, destSub);
    // The mode last: a read-only folder is still written while its entries are copied.
    if (destSub !== undefined) {
      try {
        fchmodSync(destSub, mode);
      } catch (err) {
        throw writeFailure(path, err);
      }
    }
  } finally {
    closeSync(sub);
    if (destSub !== undefined) closeSync(destSub);
  }
}

function walkFile(walk: Walk, fd: number, name: string, path: string, destFd: number | undefined): void {
  let src: number;
  try {
    src = openSync(at(fd, name), FILE_READ_FLAGS);
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code;
    // Swapped for a symlink since its lstat: read it as what it now is.
    if (errno === 'ELOOP') return walkSymlink(walk, fd, name, path, destFd);
    throw unreadable(path, err);
  }
  let out: number | undefined;
  try {
    const stat = fstatSync(src);
    if (!stat.isFile()) throw unsupported(path, 'changed into something that is not a file while it was read');
    const mode = stat.mode & 0o7777;
    if (destFd !== undefined) {
      try {
        out = openSync(at(destFd, name), EXCLUSIVE_CREATE_FLAGS, 0o600);
      } catch (err) {
        throw writeFailure(path, err);
      }
    }
    const hash = createHash('sha256');
    let size = 0;
    for (;;) {
      let n: number;
      try {
        n = readSync(src, walk.buffer, 0, walk.buffer.length, null);
      } catch (err) {
        throw unreadable(path, err);
      }
      if (n === 0) break;
      size += n;
      walk.bytes += n;
      if (walk.bytes > walk.caps.maxBytes) {
        throw new ChangeError('CHANGE_TARGET_TOO_LARGE', `The change target holds more than ${walk.caps.maxBytes} bytes of files.`, {
          limit: 'maxBytes',
          cap: walk.caps.maxBytes,
        });
      }
      const chunk = walk.buffer.subarray(0, n);
      hash.update(chunk);
      if (out !== undefined) {
        try {
          writeFully(out, chunk);
        } catch (err) {
          throw writeFailure(path, err);
        }
      }
    }
    if (out !== undefined) {
      try {
        fchmodSync(out, mode);
      } catch (err) {
        throw writeFailure(path, err);
      }
    }
    walk.entries.push({ type: 'file', path, mode, sha256: hash.digest('hex'), size });
  } finally {
    closeSync(src);
    if (out !== undefined) closeSync(out);
  }
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

/** A folder entry's name as text: valid UTF-8 and no control character, or the target is refused. */
function toEntryName(raw: Buffer, prefix: string): string {
  let name: string;
  try {
    name = STRICT_UTF8.decode(raw);
  } catch {
    throw unsupported(prefix === '' ? raw.toString('latin1') : `${prefix}/${raw.toString('latin1')}`, 'has a name that is not UTF-8');
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) throw unsupported(prefix === '' ? name : `${prefix}/${name}`, 'has a name with a control character');
  return name;
}

function unsupported(path: string, why: string): ChangeError<'CHANGE_TARGET_UNSUPPORTED'> {
  return new ChangeError('CHANGE_TARGET_UNSUPPORTED', `The change target's entry "${toPrintableExcerpt(path)}" ${why}; the target is not digested.`, {
    path,
    why,
  });
}

function unreadable(path: string, cause: unknown): ChangeError<'CHANGE_TARGET_UNREADABLE'> {
  const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
  const what = path === '' ? 'The change target' : `The change target's entry "${toPrintableExcerpt(path)}"`;
  return new ChangeError(
    'CHANGE_TARGET_UNREADABLE',
    `${what} could not be read${typeof errno === 'string' ? ` (${errno})` : ''}.`,
    { path, ...(typeof errno === 'string' ? { errno } : {}) },
    { cause },
  );
}
