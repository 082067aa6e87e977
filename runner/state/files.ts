/**
 * Every file the runner writes under a name (a bundle, `--out`, a signed trust document, a packed capsule, a
 * log export, a key pair) goes through here, so the same rules hold for all of them:
 *
 * - the bytes go first to a temporary file in the target's own folder, with a random name, created with
 *   O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600: a name planted in advance (a symlink to a file elsewhere, a
 *   file a local user can read) is never opened, it makes the create fail and another random name is tried;
 * - every write is checked: a short write goes on from where it stopped, and a write that writes nothing or
 *   fails ends with a coded error (STATE_DISK_FULL for ENOSPC and EDQUOT, STATE_WRITE_FAILED otherwise);
 * - the file is synced, given its final mode, and renamed (or, for files never replaced, hard-linked) onto
 *   its name, and the folder is synced: a reader sees the old file or the whole new one, never a cut-off one;
 * - on any failure the temporary file is removed.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fchmodSync, fsyncSync, linkSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { StateError } from './errors.js';

/** Flags of every temporary file: a new file or nothing, never through a symlink, write only. */
export const EXCLUSIVE_CREATE_FLAGS = constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW | constants.O_WRONLY;

/** Random names tried before giving up (each collision means someone planted a name; one retry is plenty). */
const CREATE_ATTEMPTS = 4;

const DISK_FULL_ERRNOS: ReadonlySet<string> = new Set(['ENOSPC', 'EDQUOT']);

/** Whether `err` (or anything in its cause chain) says the file system is full: ENOSPC, EDQUOT, or SQLITE_FULL. */
export function isDiskFull(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const { code, errcode, details } = e as { code?: unknown; errcode?: unknown; details?: { errno?: unknown } };
    if (code === 'STATE_DISK_FULL') return true;
    if (typeof code === 'string' && DISK_FULL_ERRNOS.has(code)) return true;
    if (typeof details?.errno === 'string' && DISK_FULL_ERRNOS.has(details.errno)) return true;
    // node:sqlite: code ERR_SQLITE_ERROR, errcode the SQLite result code; SQLITE_FULL is 13.
    if (code === 'ERR_SQLITE_ERROR' && typeof errcode === 'number' && (errcode & 0xff) === 13) return true;
  }
  return false;
}

/** A write failure as a coded error: the file's path and the errno, the cause kept. */
export function writeFailure(path: string, cause: unknown): StateError {
  if (cause instanceof StateError && (cause.code === 'STATE_WRITE_FAILED' || cause.code === 'STATE_DISK_FULL')) return cause;
  const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
  if (typeof errno === 'string' && DISK_FULL_ERRNOS.has(errno)) {
    return new StateError('STATE_DISK_FULL', `The file system holding ${path} is full; nothing was written there.`, { path, errno }, { cause });
  }
  return new StateError(
    'STATE_WRITE_FAILED',
    `${path} could not be written${typeof errno === 'string' ? ` (${errno})` : ''}; nothing was written there.`,
    { path, ...(typeof errno === 'string' ? { errno } : {}) },
    { cause },
  );
}

/**
 * Writes all of `bytes` at the file's current offset: a short write goes on from where it stopped; a write
 * that writes nothing, or fails, throws (the caller turns it into a coded error with writeFailure).
 */
export function writeFully(fd: number, bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.length) {
    const n = writeSync(fd, bytes, offset, bytes.length - offset);
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw Object.assign(new Error(`write wrote ${n} of ${bytes.length - offset} bytes`), { code: 'ESHORTWRITE' });
    }
    offset += n;
  }
}

/**
 * Creates a new file `prefix` + random hex in `dir`, mode 0600, with EXCLUSIVE_CREATE_FLAGS. A name that
 * exists (planted, or a collision) is never opened: another random name is tried.
 */
export function createExclusive(dir: string, prefix: string): { fd: number; path: string } {
  let lastError: unknown;
  for (let attempt = 0; attempt < CREATE_ATTEMPTS; attempt++) {
    const path = join(dir, `${prefix}${randomBytes(12).toString('hex')}`);
    try {
      return { fd: openSync(path, EXCLUSIVE_CREATE_FLAGS, 0o600), path };
    } catch (err) {
      lastError = err;
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') break;
    }
  }
  throw writeFailure(join(dir, prefix), lastError);
}

export interface AtomicWriteOptions {
  /** The file's mode once it has its name (0644 unless said); it is 0600 until then. */
  mode?: number;
  /** false: never replace an existing file (the name is taken with link(2), which fails if it exists). */
  replace?: boolean;
}

/**
 * A file written in pieces and given its name only once every byte is on disk (log exports stream through
 * this). `commit()` names it; `abort()`, or any failure, removes the temporary file.
 */
export class AtomicFileWriter {
  private readonly fd: number;
  private readonly tmpPath: string;
  private state: 'open' | 'committed' | 'aborted' = 'open';

  constructor(
    readonly path: string,
    private readonly options: AtomicWriteOptions = {},
  ) {
    const dir = dirname(path);
    try {
      mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw writeFailure(path, err);
    }
    const created = createExclusive(dir, `.${basename(path).slice(0, 128)}.tmp-`);
    this.fd = created.fd;
    this.tmpPath = created.path;
  }

  write(data: string | Uint8Array): void {
    if (this.state !== 'open') throw new StateError('STATE_WRITE_FAILED', `${this.path} is no longer being written.`, { path: this.path });
    try {
      writeFully(this.fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    } catch (err) {
      this.abort();
      throw writeFailure(this.path, err);
    }
  }

  commit(): void {
    if (this.state !== 'open') throw new StateError('STATE_WRITE_FAILED', `${this.path} is no longer being written.`, { path: this.path });
    try {
      fsyncSync(this.fd);
      fchmodSync(this.fd, this.options.mode ?? 0o644);
      closeSync(this.fd);
      this.state = 'committed';
      if (this.options.replace === false) {
        linkSync(this.tmpPath, this.path);
        unlinkSync(this.tmpPath);
      } else {
        renameSync(this.tmpPath, this.path);
      }
    } catch (err) {
      if (this.state === 'open') this.abort();
      else removeQuietly(this.tmpPath);
      this.state = 'aborted';
      if (this.options.replace === false && (err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new StateError(
          'STATE_WRITE_FAILED',
          `${this.path} already exists and is never overwritten.`,
          { path: this.path, errno: 'EEXIST' },
          { cause: err },
        );
      }
      throw writeFailure(this.path, err);
    }
    syncFolder(dirname(this.path));
  }

  abort(): void {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    removeQuietly(this.tmpPath);
  }
}

/** Writes a file so that readers see the old one or the whole new one (see the top of this file). */
export function writeFileAtomic(path: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): void {
  const writer = new AtomicFileWriter(path, options);
  writer.write(data);
  writer.commit();
}

/** Makes a rename or link in `dir` durable. Some file systems refuse fsync on a folder: that is not a failure. */
export function syncFolder(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    fsyncSync(fd);
  } catch {
    // EINVAL/EISDIR on some file systems; the rename itself already happened.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // gone already
  }
}
