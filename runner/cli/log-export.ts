/**
 * `log export` and `log verify`: the runner's whole log as JSON Lines (runner/log/export.ts), and the
 * offline audit of such a file against the trust document and, optionally, a checkpoint kept from earlier.
 * I/O only: the format and the checks are in runner/log/export.ts.
 */
import { createReadStream } from 'node:fs';
import type { Command } from 'commander';
import { checkpointNow, originOf } from '../agent/log.js';
import { parseJson } from '../core/json.js';
import { BUNDLE_MAX_BYTES } from '../evidence/bundle.js';
import { LogError } from '../log/errors.js';
import {
  ExportVerifier,
  formatCheckpointLine,
  formatExportHeader,
  formatLeafLine,
  verifyExportBytes,
  type Cosigned,
  type ExportReport,
} from '../log/export.js';
import type { Store } from '../store/store.js';
import { TRUST_MAX_BYTES, verifyTrustDocument, type VerifiedTrust } from '../trust/trust.js';
import { AtomicFileWriter } from '../state/files.js';
import { readFileCapped } from './files.js';
import { EXIT, UsageError, printJson, toPrintable } from './output.js';
import { inRunner } from './context.js';

/** Bytes buffered before each write of the export file. */
const WRITE_CHUNK_BYTES = 1 << 20;
/** Bytes read at a time by `log verify` (lines are cut from these chunks without copying). */
const READ_CHUNK_BYTES = 1 << 20;

export function addLogExportCommands(log: Command): void {
  log
    .command('export')
    .description('Write every leaf and every signed checkpoint of the log to FILE (JSON Lines), ending with a fresh checkpoint.')
    .requiredOption('--state <dir>', 'the runner state folder')
    .requiredOption('--out <file>', 'the export file to write (replaced atomically)')
    .action(async (opts: { state: string; out: string }) => {
      await inRunner(opts.state, ({ store, state }) => {
        const { leaves, checkpoints } = exportLog(store, { runnerId: state.identity.id, key: state.key }, opts.out, state.trust);
        process.stdout.write(`exported ${leaves} leaves and ${checkpoints} checkpoints to ${opts.out}\n`);
      });
    });
  log
    .command('verify')
    .description("Recompute a log export's tree and check every checkpoint, and consistency with an earlier checkpoint.")
    .argument('<file>', 'a file written by `log export`')
    .requiredOption('--trust <trust-dsse-json>', 'the trust document that enrols the runner')
    .option('--checkpoint <old>', 'a checkpoint note kept from earlier, or a bundle whose log.checkpoint is used')
    .option('--json', 'print a machine-readable result')
    .action(async (file: string, opts: { trust: string; checkpoint?: string; json?: boolean }) => {
      // Offline audit, as `verify`: the trust document's signatures are checked, its expiry is not.
      const trust = verifyTrustDocument(readFileCapped(opts.trust, TRUST_MAX_BYTES).bytes);
      const earlier = opts.checkpoint !== undefined ? readEarlierCheckpoint(opts.checkpoint) : undefined;
      let report: ExportReport;
      try {
        const chunks = createReadStream(file, { highWaterMark: READ_CHUNK_BYTES });
        report = await verifyExportBytes(chunks, { trust, ...(earlier !== undefined ? { earlier } : {}) });
      } catch (err) {
        if (!(err instanceof LogError)) throw err;
        const place = err.details.earlier === true ? 'earlier checkpoint' : `line ${String(err.details.line)}`;
        const index = typeof err.details.index === 'number' ? err.details.index : undefined;
        const sentence = typeof err.details.sentence === 'string' ? err.details.sentence : err.message;
        if (opts.json) {
          printJson({ ok: false, file, code: err.code, message: toPrintable(err.message), line: err.details.line ?? null, index: index ?? null });
        } else {
          process.stdout.write(`FAIL ${place}${index !== undefined ? ` (leaf ${index})` : ''}: ${err.code}: ${toPrintable(sentence)}\n`);
        }
        process.exitCode = EXIT.failed;
        return;
      }
      if (opts.json) {
        printJson({ ok: true, file, ...report });
      } else {
        const consistent = report.earlier
          ? `, consistent with the earlier checkpoint at size ${report.earlier.size}${describeCosigned(report.earlier.cosigned, ' (cosigned by ', ')')}`
          : '';
        process.stdout.write(
          `OK log of runner ${report.runner.id}: ${report.size} leaves, root ${report.root}, ${report.checkpoints} checkpoints verified${consistent}${describeCosigned(report.cosigned, '; witnessed: ', '')}\n`,
        );
      }
      process.exitCode = EXIT.ok;
    });
}

/** "W1 at size N (time), W2 at size M (time)", framed by `before` and `after`; empty without cosignatures. */
function describeCosigned(cosigned: readonly Cosigned[], before: string, after: string): string {
  if (cosigned.length === 0) return '';
  return `${before}${cosigned.map((c) => `${toPrintable(c.witness)} at size ${c.size} (${c.at})`).join(', ')}${after}`;
}

/**
 * Writes the export of the log as it stands after signing a fresh checkpoint of size N: leaves 0..N-1, the
 * stored checkpoints up to N in place, and any stored checkpoint larger than the tree itself at the end (a
 * sign the tree lost leaves, which `log verify` reports). Reads inside one read transaction, so records a
 * concurrent `exec` appends meanwhile are not mixed in. Written to a temporary file, synced, then renamed.
 * Every line goes through the checks of `log verify` (against the pinned trust) as it is written: an export
 * its own verifier would reject is never written (the error of the first failing check, and no file).
 */
export function exportLog(
  store: Store,
  identity: Parameters<typeof checkpointNow>[1],
  out: string,
  trust: VerifiedTrust,
): { leaves: number; checkpoints: number } {
  const fresh = checkpointNow(store, identity);
  const verifier = new ExportVerifier({ trust });
  const size = fresh.size;
  // runner/state/files.ts: a random O_EXCL|O_NOFOLLOW temporary file, checked writes, renamed when whole.
  const file = new AtomicFileWriter(out, { mode: 0o644 });
  let written = { leaves: 0, checkpoints: 0 };
  try {
    const writer = bufferedWriter(file, (line) => verifier.push(line));
    // One read transaction: every read below sees the same WAL snapshot.
    written = store.snapshot(() => {
      const treeSize = store.merkle.size();
      const stored = store.checkpoints();
      const inPlace = stored.filter((c) => c.size <= size);
      const stale = stored.filter((c) => c.size > treeSize);
      let next = 0; // position in inPlace
      const emitUpTo = (reached: number): void => {
        while (next < inPlace.length && inPlace[next]!.size <= reached) writer.line(formatCheckpointLine(cosignedNote(store, inPlace[next++]!)));
      };
      writer.line(formatExportHeader({ origin: originOf(identity), runner: { id: identity.runnerId, keyid: identity.key.keyid }, size }));
      emitUpTo(0);
      let leaves = 0;
      for (const record of store.records(0)) {
        if (leaves >= size) break;
        // The leaf at position i is what the store holds at position i; if rows are missing or moved, the
        // export shows it and `log verify` names the place.
        writer.line(formatLeafLine(leaves, record.leaf));
        leaves += 1;
        emitUpTo(leaves);
      }
      emitUpTo(Number.MAX_SAFE_INTEGER);
      for (const checkpoint of stale) writer.line(formatCheckpointLine(checkpoint.note));
      if (leaves !== size) {
        process.stderr.write(
          `edge-runner: warning: the store holds ${leaves} records for a tree of ${size} leaves; the export shows what is there\n`,
        );
      }
      return { leaves, checkpoints: inPlace.length + stale.length };
    });
    refuseUnverified(() => verifier.finish());
    writer.flush();
    file.commit();
  } catch (err) {
    file.abort();
    throw err;
  }
  return written;
}

/**
 * A stored checkpoint with the cosignature lines witnesses returned for its size appended (C2SP: a
 * cosignature is one more signature line on the note), so an auditor's export shows who witnessed what.
 */
function cosignedNote(store: Store, checkpoint: { size: number; note: string }): string {
  const lines = store.cosignatures(checkpoint.size).map((cosignature) => cosignature.line);
  return lines.length === 0 ? checkpoint.note : `${checkpoint.note}${lines.join('')}`;
}

/** Runs a check of the export being written; its failure becomes "the log does not verify", with its code. */
function refuseUnverified<T>(check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (!(err instanceof LogError)) throw err;
    throw new LogError(err.code, `The log does not verify, so no export was written: ${err.message}`, err.details, { cause: err });
  }
}

/** Buffers lines into writes of about WRITE_CHUNK_BYTES; each line is handed to `check` before it is kept. */
function bufferedWriter(file: AtomicFileWriter, check: (line: string) => void): { line(text: string): void; flush(): void } {
  let parts: string[] = [];
  let bytes = 0;
  const flush = (): void => {
    if (parts.length === 0) return;
    file.write(Buffer.from(parts.join(''), 'utf8'));
    parts = [];
    bytes = 0;
  };
  return {
    line(text) {
      refuseUnverified(() => check(text));
      parts.push(text, '\n');
      bytes += text.length + 1;
      if (bytes >= WRITE_CHUNK_BYTES) flush();
    },
    flush,
  };
}

/**
 * The auditor's earlier checkpoint: a note file as `log checkpoint` prints it, or a bundle (JSON) whose
 * `log.checkpoint` member is that note. Its signature is checked by verifyExport against the runner's key.
 */
function readEarlierCheckpoint(path: string): string {
  const { bytes, size } = readFileCapped(path, BUNDLE_MAX_BYTES);
  if (size > BUNDLE_MAX_BYTES) throw new UsageError(`${path} is ${size} bytes, over the ${BUNDLE_MAX_BYTES}-byte limit.`);
  const text = bytes.toString('utf8');
  if (!text.trimStart().startsWith('{')) return text;
  let value: unknown;
  try {
    value = parseJson(bytes);
  } catch {
    throw new UsageError(`${path} starts like JSON but is not JSON: give a checkpoint note or a bundle.`);
  }
  const note = (value as { log?: { checkpoint?: unknown } } | null)?.log?.checkpoint;
  if (typeof note !== 'string') throw new UsageError(`${path} is JSON without a log.checkpoint note: give a checkpoint note or a bundle.`);
  return note;
}
