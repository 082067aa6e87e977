/**
 * The outbox drained into DIR/out/ instead of to a coordinator: each queued row's document (a bundle, or a
 * rejection made the first time and kept in the row, as the shipper does) is written once under its content
 * address (files.ts), and only then is the row settled with an `outbox.spooled` record. A crash between the
 * two writes the same bytes again at the next start, which finds them there ('existing'): written once.
 *
 * After the rows, a checkpoint of the log as it is now goes to out/checkpoints/, as a tlog-witness
 * add-checkpoint body whose consistency proof starts at the previous spooled checkpoint, so a coordinator
 * importing the spool in size order witnesses the log as if the runner had submitted each one.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { isCodedError } from '../core/errors.js';
import { checkpointNow, type LogIdentity } from '../agent/log.js';
import type { Logger } from '../agent/logger.js';
import { rejectionFor } from '../agent/answers.js';
import { formatAddCheckpoint } from '../protocol/witness.js';
import { SPOOL_OUT_FOLDERS, toSpoolCheckpointName, toSpoolDocumentName } from '../protocol/spool.js';
import type { OutboxRow, Store } from '../store/store.js';
import { writeSpoolFileOnce } from './files.js';

/** A row that could not be written is tried again after this long (milliseconds). */
export const SPOOL_RETRY_MS = 60_000;

export interface SpoolWriterOptions {
  store: Store;
  identity: LogIdentity;
  /** DIR/out/ (its subfolders exist: ensureSpoolFolders). */
  outDir: string;
  now: () => number;
  logger: Logger;
  /**
   * Throws when out/ or a subfolder is no longer a plain folder (a local user who may write DIR swapped it
   * for a symlink): called before every write, so no answer is written through it (ensureSpoolFolders).
   */
  checkFolders?: () => void;
  /** The trust document's witness names (their cosigned sizes come back through in/: catchUp). */
  witnesses?: () => readonly string[];
}

export interface DrainResult {
  written: number;
  existing: number;
  /** Rows left queued for a later drain (their code is in the row and in the log). */
  failed: number;
  checkpoint?: { size: number; name: string };
}

export class SpoolWriter {
  constructor(private readonly options: SpoolWriterOptions) {}

  /** Writes every due row, then a checkpoint if the log grew since the last one written. */
  drain(): DrainResult {
    const { store, now, logger } = this.options;
    const result: DrainResult = { written: 0, existing: 0, failed: 0 };
    const checkFolders = this.options.checkFolders ?? (() => {});
    checkFolders(); // a swapped folder: nothing is written, every row stays as it is
    for (let row = store.outboxNext(now()); row !== undefined; row = store.outboxNext(now())) {
      try {
        checkFolders();
        const { digest, bytes } = this.contentOf(row);
        const path = join(this.options.outDir, SPOOL_OUT_FOLDERS[row.kind], toSpoolDocumentName(row.kind, digest));
        const written = writeSpoolFileOnce(path, bytes);
        store.outboxSpooled(row.id);
        result[written === 'created' ? 'written' : 'existing'] += 1;
        logger.info({ outboxId: row.id, answer: row.kind, digest, written }, 'answer spooled');
      } catch (err) {
        const code = isCodedError(err) ? err.code : 'SPOOL_WRITE_FAILED';
        if (code.startsWith('STORE_')) throw err; // the store itself failed: the caller backs off
        // Not dropped, not looped: the row stays queued with the code and is tried again later.
        store.outboxRetry(row.id, now() + SPOOL_RETRY_MS, code);
        result.failed += 1;
        logger.error({ code, outboxId: row.id, answer: row.kind }, 'answer not spooled; will retry');
      }
    }
    const checkpoint = this.checkpointIfGrown();
    this.catchUp(checkpoint?.from);
    return checkpoint ? { ...result, checkpoint: { size: checkpoint.size, name: checkpoint.name } } : result;
  }

  /** The row's bytes: its body, or for a rejection not yet made, its document made now and kept in the row. */
  private contentOf(row: OutboxRow): { digest: string; bytes: Buffer } {
    if (row.body !== null && row.digest !== null) return { digest: row.digest, bytes: row.body };
    const { store, identity } = this.options;
    const built = rejectionFor(store, identity, row);
    store.outboxSetBody(row.id, built.digest, built.bytes);
    const kept = store.outboxRow(row.id);
    return kept?.body && kept.digest ? { digest: kept.digest, bytes: kept.body } : built;
  }

  /**
   * The chain of spooled checkpoints breaks for good when one file is lost on the way (each proves from the
   * one before, and the witness holds the size before the lost one). A witness's cosigned checkpoint that
   * came back (in/SIZE-ROOT16.cosigned) says what it holds: when that is below the latest spooled one, the
   * latest tree is also written proved from it (SIZE-ROOT16.from-OLD.checkpoint), once per size and witness.
   * Where nothing was lost, the importer finds the chain ahead of the file and passes it over.
   */
  private catchUp(regularFrom: number | undefined): void {
    const { store, identity, outDir } = this.options;
    const size = store.spoolCheckpointSize();
    if (size === 0 || store.merkle.size() !== size) return;
    const root = store.merkle.root(size);
    for (const witness of this.options.witnesses?.() ?? []) {
      const held = store.witnessedSize(witness);
      if (held === 0 || held >= size || held === regularFrom) continue;
      const name = toSpoolCheckpointName(size, root, held);
      const path = join(outDir, SPOOL_OUT_FOLDERS.checkpoint, name);
      if (existsSync(path)) continue;
      this.options.checkFolders?.();
      writeSpoolFileOnce(path, formatAddCheckpoint(held, store.merkle.consistencyProof(held, size), checkpointNow(store, identity).note));
      this.options.logger.info({ size, from: held, witness, name }, 'catch-up checkpoint spooled');
    }
  }

  private checkpointIfGrown(): { size: number; name: string; from: number } | undefined {
    const { store, identity, outDir } = this.options;
    const previous = store.spoolCheckpointSize();
    if (store.merkle.size() <= previous) return undefined;
    this.options.checkFolders?.();
    const checkpoint = checkpointNow(store, identity);
    const proof = previous === 0 ? [] : store.merkle.consistencyProof(previous, checkpoint.size);
    const name = toSpoolCheckpointName(checkpoint.size, store.merkle.root(checkpoint.size));
    writeSpoolFileOnce(join(outDir, SPOOL_OUT_FOLDERS.checkpoint, name), formatAddCheckpoint(previous, proof, checkpoint.note));
    store.spoolCheckpointWritten(checkpoint.size, name);
    this.options.logger.info({ size: checkpoint.size, from: previous, name }, 'checkpoint spooled');
    return { size: checkpoint.size, name, from: previous };
  }
}
