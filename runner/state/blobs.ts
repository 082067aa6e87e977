/**
 * The local evidence store: content-addressed files under STATE/evidence/blobs, named by SHA-256. Raw step
 * output and collected files stay here, inside the boundary; bundles carry only their digests.
 *
 * A blob is written to a temporary file (random name, O_EXCL|O_NOFOLLOW, mode 0600) with checked writes,
 * synced, and renamed to its digest only then: no file is ever named by a digest its content does not have.
 * A write that fails removes the temporary file and ends with a coded error (STATE_DISK_FULL or
 * STATE_WRITE_FAILED). A temporary file's name says which process writes it (`.tmp-PID-START-RANDOM`, START
 * that process's start time, so that a reused pid is not taken for it), so a runner opening the store removes those of dead writers and never those
 * of a live runner on the same state folder.
 */
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, lstatSync, mkdirSync, readdirSync, renameSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { currentProcess, isProcessAlive, type ProcessIdentity } from './process.js';
import { StateError } from './errors.js';
import { createExclusive, syncFolder, writeFailure, writeFully } from './files.js';

export interface CappedBlob {
  digest: string;
  /** Bytes kept in the store (at most the cap). */
  size: number;
  /** Bytes the source produced. */
  totalSize: number;
  truncated: boolean;
}

/** A temporary blob of the old format (`.tmp-` and 16 hex digits) names no writer: removed once this old. */
const UNOWNED_TEMP_MAX_AGE_MS = 60 * 60 * 1000;

const TEMP_NAME = /^\.tmp-(\d{1,10})-(\d{1,20})-[0-9a-f]{24}$/;
const UNOWNED_TEMP_NAME = /^\.tmp-[0-9a-f]{16}$/;

/**
 * The identity a temporary name carries: the pid and the process's start in clock ticks since boot (the
 * store's ProcessIdentity.start is `BOOT:TICKS`; the boot is this one's, as a temporary file of an earlier
 * boot has no live writer whatever its numbers).
 */
function splitStart(start: string): { boot: string; ticks: string } {
  const colon = start.lastIndexOf(':');
  return { boot: start.slice(0, colon), ticks: start.slice(colon + 1) };
}

export class BlobStore {
  private readonly tempPrefix: string;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const self = currentProcess();
    const ticks = self ? splitStart(self.start).ticks : '';
    this.tempPrefix = `.tmp-${process.pid}-${/^\d{1,20}$/.test(ticks) ? ticks : '0'}-`;
  }

  pathOf(digest: string): string {
    return join(this.dir, digest.replace(':', '-'));
  }

  /** Stores bytes, returns `sha256:HEX`. */
  put(data: Uint8Array): string {
    const writer = this.writer(Number.MAX_SAFE_INTEGER);
    writer.write(data);
    return writer.finish().digest;
  }

  /** A streaming writer that keeps the first `capBytes` bytes and counts the rest. */
  writer(capBytes: number): BlobWriter {
    return new BlobWriter(this, capBytes);
  }

  /** A new temporary file for a blob (used by BlobWriter). */
  createTemporary(): { fd: number; path: string } {
    return createExclusive(this.dir, this.tempPrefix);
  }

  /**
   * Removes the temporary files of writers that are gone (a runner killed with SIGKILL leaves its step
   * output's temporary file behind). A file whose writer is alive (this process, or another runner on the
   * same state folder) is kept; one of the old unowned format only once it is an hour old. Returns the
   * names removed; a name that cannot be removed is left for the next open.
   */
  removeDeadTemporaries(now: Date = new Date(), isAlive: (owner: ProcessIdentity) => boolean = isProcessAlive): string[] {
    const removed: string[] = [];
    const self = currentProcess();
    const boot = self ? splitStart(self.start).boot : undefined;
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return removed;
    }
    for (const name of names) {
      if (!name.startsWith('.tmp-')) continue;
      const path = join(this.dir, name);
      let dead: boolean;
      const owned = TEMP_NAME.exec(name);
      if (owned) {
        // Without /proc nothing says whether the writer lives: keep it.
        if (boot === undefined) continue;
        dead = !isAlive({ pid: Number(owned[1]), start: `${boot}:${owned[2]}` });
      } else if (UNOWNED_TEMP_NAME.test(name)) {
        try {
          dead = now.getTime() - lstatSync(path).mtimeMs > UNOWNED_TEMP_MAX_AGE_MS;
        } catch {
          continue;
        }
      } else {
        continue;
      }
      if (!dead) continue;
      try {
        unlinkSync(path);
        removed.push(name);
      } catch {
        // gone meanwhile, or not removable now: the next open tries again
      }
    }
    return removed;
  }
}

export class BlobWriter {
  private readonly hash = createHash('sha256');
  private readonly tmpPath: string;
  private readonly fd: number;
  private kept = 0;
  private total = 0;
  private state: 'open' | 'finished' | 'failed' = 'open';
  private failure: StateError | undefined;

  constructor(
    private readonly store: BlobStore,
    private readonly capBytes: number,
  ) {
    const created = store.createTemporary();
    this.tmpPath = created.path;
    this.fd = created.fd;
  }

  /** The error that ended this writer, if a write failed. */
  get failed(): StateError | undefined {
    return this.failure;
  }

  /**
   * Keeps the part of `chunk` within the cap. A failed write removes the temporary file and throws the coded
   * error; later writes are ignored and finish() throws the same error.
   */
  write(chunk: Uint8Array): void {
    if (this.state !== 'open') return;
    this.total += chunk.length;
    const room = this.capBytes - this.kept;
    if (room <= 0) return;
    const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
    try {
      writeFully(this.fd, part);
    } catch (err) {
      throw this.fail(err);
    }
    this.hash.update(part);
    this.kept += part.length;
  }

  /** Syncs the bytes and names the file by their digest; throws the coded error of a failed write. */
  finish(): CappedBlob {
    if (this.state === 'failed') throw this.failure!;
    if (this.state === 'finished') throw new StateError('STATE_WRITE_FAILED', 'This blob was already stored.', { path: this.tmpPath });
    const digest = `sha256:${this.hash.digest('hex')}`;
    try {
      fsyncSync(this.fd);
      closeSync(this.fd);
      this.state = 'finished';
      renameSync(this.tmpPath, this.store.pathOf(digest));
    } catch (err) {
      throw this.fail(err);
    }
    syncFolder(this.store.dir);
    return { digest, size: this.kept, totalSize: this.total, truncated: this.total > this.kept };
  }

  abort(): void {
    if (this.state !== 'open') return;
    this.state = 'failed';
    this.failure = new StateError('STATE_WRITE_FAILED', 'This blob was abandoned.', { path: this.tmpPath });
    this.discard();
  }

  private fail(err: unknown): StateError {
    const wasOpen = this.state === 'open';
    this.state = 'failed';
    this.failure = writeFailure(this.store.dir, err);
    if (wasOpen) this.discard();
    else removeQuietly(this.tmpPath);
    return this.failure;
  }

  private discard(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    removeQuietly(this.tmpPath);
  }
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // gone already
  }
}
