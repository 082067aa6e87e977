/**
 * The local evidence store: content-addressed files under STATE/evidence/blobs, named by SHA-256. Raw step
 * output and collected files stay here, inside the boundary; bundles carry only their digests.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface CappedBlob {
  digest: string;
  /** Bytes kept in the store (at most the cap). */
  size: number;
  /** Bytes the source produced. */
  totalSize: number;
  truncated: boolean;
}

export class BlobStore {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
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
}

export class BlobWriter {
  private readonly hash = createHash('sha256');
  private readonly tmpPath: string;
  private readonly fd: number;
  private kept = 0;
  private total = 0;
  private done = false;

  constructor(
    private readonly store: BlobStore,
    private readonly capBytes: number,
  ) {
    this.tmpPath = join(store.dir, `.tmp-${randomBytes(8).toString('hex')}`);
    this.fd = openSync(this.tmpPath, 'wx', 0o600);
  }

  write(chunk: Uint8Array): void {
    if (this.done) return;
    this.total += chunk.length;
    const room = this.capBytes - this.kept;
    if (room <= 0) return;
    const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
    this.hash.update(part);
    writeSync(this.fd, part);
    this.kept += part.length;
  }

  finish(): CappedBlob {
    this.done = true;
    fsyncSync(this.fd);
    closeSync(this.fd);
    const digest = `sha256:${this.hash.digest('hex')}`;
    renameSync(this.tmpPath, this.store.pathOf(digest));
    return { digest, size: this.kept, totalSize: this.total, truncated: this.total > this.kept };
  }

  abort(): void {
    if (this.done) return;
    this.done = true;
    closeSync(this.fd);
    rmSync(this.tmpPath, { force: true });
  }
}
