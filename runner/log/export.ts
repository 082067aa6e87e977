/**
 * The log export and its verifier: every leaf and every signed checkpoint of one runner's log, as JSON
 * Lines, so that an auditor can recompute the tree alone and a million leaves stream through in one pass.
 *
 *   line 1      {"mediaType":"application/vnd.edge-runner.log-export.v1+jsonl","origin":O,"runner":{"id":I,"keyid":K},"size":N}
 *   then        {"index":i,"leaf":"<standard base64 of the leaf bytes>"}    for i = 0 .. N-1, in order
 *   and         {"checkpoint":"<C2SP signed note>"}                          right after the leaf that makes the
 *               tree reach the checkpoint's size (a size-0 checkpoint right after the header)
 *
 * Every line is byte for byte what formatExportHeader, formatLeafLine and formatCheckpointLine emit, so one
 * log has exactly one export (two auditors' `sha256sum` of it agree).
 *
 * Verification is pure (lines in, a report out, or a LogError whose details say the line), O(log n)
 * memory: the tree is rebuilt with a CompactRange (RFC 9162 section 2.1.1), each checkpoint (C2SP
 * tlog-checkpoint, C2SP signed-note) is checked against the root at its own position, which also makes
 * successive checkpoints consistent by construction (RFC 9162 section 2.1.4: two roots of prefixes of one
 * list of leaves), and an earlier checkpoint the auditor kept is checked the same way, so a log that was
 * rewritten, or truncated and re-appended, since then fails.
 */
import { TextDecoder } from 'node:util';
import { parseJson } from '../core/json.js';
import type { VerifiedTrust } from '../trust/trust.js';
import { LogError, type LogErrorCode } from './errors.js';
import { CompactRange, hashLeaf } from './merkle.js';
import { runnerOrigin, verifyCheckpoint, type Checkpoint, type NoteVerifier } from './checkpoint.js';
import { ProtocolError } from '../protocol/errors.js';
import { verifyCosignatures, witnessKeysOf } from '../protocol/witness.js';
import { verifyRecordLeaf, type RecordBodies, type RecordKind } from './record.js';

export const EXPORT_MEDIA_TYPE = 'application/vnd.edge-runner.log-export.v1+jsonl';

/** Caps on untrusted export input. A record leaf is a few hundred bytes; a checkpoint note about 250. */
export const EXPORT_LIMITS = {
  maxLineBytes: 65_536, // bytes per line, newline excluded; the exporter refuses to write a longer one
  maxHeaderBytes: 4_096, // bytes of line 1
} as const;

export interface ExportHeader {
  readonly origin: string;
  readonly runner: { readonly id: string; readonly keyid: string };
  /** Number of leaves that follow. */
  readonly size: number;
}

export interface ExportReport {
  readonly origin: string;
  readonly runner: { readonly id: string; readonly keyid: string };
  readonly size: number;
  /** RFC 9162 root of all the leaves, standard base64 (as in a checkpoint). */
  readonly root: string;
  /** Signed checkpoints verified in the export. */
  readonly checkpoints: number;
  /** Set when an earlier checkpoint was given and the log extends it (with the witnesses that cosigned it). */
  readonly earlier?: { readonly size: number; readonly cosigned: readonly Cosigned[] };
  /** Per witness of the trust document, the largest checkpoint of the export it cosigned (C2SP cosignature/v1). */
  readonly cosigned: readonly Cosigned[];
}

/** A verified cosignature/v1: which witness (its key name in the trust document), on which size, when. */
export interface Cosigned {
  readonly witness: string;
  readonly size: number;
  /** The cosignature's own time, RFC 3339. */
  readonly at: string;
}

export interface ExportVerifyOptions {
  /** The trust document that enrols the runner's key (role runner) under the runner's id. */
  trust: VerifiedTrust;
  /** A signed checkpoint note the auditor kept from earlier (or an old bundle's `log.checkpoint`). */
  earlier?: string;
}

// ---------------------------------------------------------------------------------------------------------
// Writing

/** Line 1 of an export. */
export function formatExportHeader(header: ExportHeader): string {
  const line = JSON.stringify({
    mediaType: EXPORT_MEDIA_TYPE,
    origin: header.origin,
    runner: { id: header.runner.id, keyid: header.runner.keyid },
    size: header.size,
  });
  return capped(line, EXPORT_LIMITS.maxHeaderBytes, 'header');
}

/** The line of leaf `index`. Throws LOG_EXPORT_LINE_TOO_LONG rather than write a line no verifier reads. */
export function formatLeafLine(index: number, leaf: Uint8Array): string {
  return capped(
    `{"index":${index},"leaf":"${Buffer.from(leaf.buffer, leaf.byteOffset, leaf.byteLength).toString('base64')}"}`,
    EXPORT_LIMITS.maxLineBytes,
    `leaf ${index}`,
  );
}

/** The line of a signed checkpoint note. */
export function formatCheckpointLine(note: string): string {
  return capped(JSON.stringify({ checkpoint: note }), EXPORT_LIMITS.maxLineBytes, 'checkpoint');
}

function capped(line: string, limit: number, what: string): string {
  const bytes = Buffer.byteLength(line, 'utf8');
  if (bytes > limit) {
    throw new LogError('LOG_EXPORT_LINE_TOO_LONG', `The ${what} line would be ${bytes} bytes, over the ${limit}-byte limit.`, { bytes, limit });
  }
  return line;
}

// ---------------------------------------------------------------------------------------------------------
// Reading

/**
 * Splits a byte stream into lines (at "\n" only) without ever holding more than one capped line: a line
 * longer than `maxLineBytes` fails as soon as it is seen (LOG_EXPORT_LINE_TOO_LONG), and a line that is
 * not UTF-8 fails (LOG_EXPORT_INVALID). A final line without its newline is still yielded. Pure: give it
 * any async iterable of chunks (a file stream, a socket, an array in a test).
 */
export async function* splitLines(
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  maxLineBytes: number = EXPORT_LIMITS.maxLineBytes,
): AsyncGenerator<string> {
  const reader = new LineReader(maxLineBytes);
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  for await (const chunk of chunks) {
    reader.feed(chunk);
    while (reader.next()) yield decodeLine(decoder, reader.line(), reader.lines);
  }
  if (reader.end()) yield decodeLine(decoder, reader.line(), reader.lines);
}

function decodeLine(decoder: TextDecoder, bytes: Uint8Array, line: number): string {
  try {
    return decoder.decode(bytes);
  } catch {
    throw fail('LOG_EXPORT_INVALID', { line }, 'the line is not UTF-8.');
  }
}

/**
 * The line splitting of splitLines, pulled one line at a time: feed a chunk, take its lines with next()
 * until it returns false (the chunk's tail is kept for the next chunk), and end() for a last line without a
 * newline. Each line found is lineBytes[lineStart, lineEnd): the chunk itself when the line lies inside it
 * (so use it before feeding the next chunk), without making a Buffer per line.
 */
class LineReader {
  private readonly maxLineBytes: number;
  private chunk: Buffer = Buffer.alloc(0);
  private offset = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Lines found so far. */
  lines = 0;
  /** The last line found: lineBytes[lineStart, lineEnd). */
  lineBytes: Buffer = this.chunk;
  lineStart = 0;
  lineEnd = 0;

  constructor(maxLineBytes: number) {
    this.maxLineBytes = maxLineBytes;
  }

  feed(chunk: Uint8Array): void {
    this.chunk = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.offset = 0;
  }

  /** Finds the next complete line of the chunk fed last; false when it holds no more newline. */
  next(): boolean {
    const buffer = this.chunk;
    const offset = this.offset;
    const newline = offset < buffer.length ? buffer.indexOf(0x0a, offset) : -1;
    if (newline < 0) {
      if (offset < buffer.length) {
        this.pendingBytes += buffer.length - offset;
        if (this.pendingBytes > this.maxLineBytes) throw this.tooLong();
        // Copy: the caller may reuse the chunk's memory once we return.
        this.pending.push(Buffer.from(buffer.subarray(offset)));
        this.offset = buffer.length;
      }
      return false;
    }
    if (this.pendingBytes + newline - offset > this.maxLineBytes) throw this.tooLong();
    this.offset = newline + 1;
    this.lines += 1;
    if (this.pendingBytes === 0) return this.found(buffer, offset, newline);
    this.pending.push(buffer.subarray(offset, newline));
    this.pendingBytes += newline - offset;
    return this.takePending();
  }

  /** Finds the last line when the stream does not end with a newline. */
  end(): boolean {
    if (this.pendingBytes === 0) return false;
    this.lines += 1;
    return this.takePending();
  }

  /** The last line found, as a view of its own. */
  line(): Buffer {
    return this.lineBytes.subarray(this.lineStart, this.lineEnd);
  }

  private found(bytes: Buffer, start: number, end: number): true {
    this.lineBytes = bytes;
    this.lineStart = start;
    this.lineEnd = end;
    return true;
  }

  private takePending(): true {
    const joined = Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    return this.found(joined, 0, joined.length);
  }

  private tooLong(): LogError {
    return fail('LOG_EXPORT_LINE_TOO_LONG', { line: this.lines + 1 }, `the line is longer than ${this.maxLineBytes} bytes.`, {
      limit: this.maxLineBytes,
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Verifying

/** Where a failure is: line 1234 (leaf 1232), and the tree size reached there. */
interface Position {
  line: number;
  index?: number;
  size?: number;
}

function where(position: Position): string {
  return position.index === undefined ? `line ${position.line}` : `line ${position.line} (leaf ${position.index})`;
}

function fail(code: LogErrorCode, position: Position, sentence: string, extra: Record<string, unknown> = {}, cause?: unknown): LogError {
  return new LogError(code, `${where(position)}: ${sentence}`, { ...position, sentence, ...extra }, cause === undefined ? undefined : { cause });
}

/**
 * Verifies a log export line by line. Steps, in order:
 *   1. header: media type, the runner key enrolled with the runner role under the runner's id, the origin
 *      is runnerOrigin(id, keyid) (LOG_EXPORT_INVALID, LOG_EXPORT_UNKNOWN_RUNNER);
 *   2. the earlier checkpoint, if given: signed by the runner's note key for this origin, and not larger
 *      than the export (checkpoint codes, LOG_EARLIER_CHECKPOINT_BEYOND_EXPORT);
 *   3. each leaf: sequential index, canonical base64, a canonical record with seq = index, v = 1 and a
 *      known kind (LOG_EXPORT_INVALID, LOG_LEAF_INVALID), appended to the compact range; no capsule id +
 *      nonce accepted twice (LOG_REPLAY_ACCEPTED);
 *   4. each checkpoint: signature and origin, size equal to the leaves seen (so sizes increase), root equal
 *      to the recomputed root (LOG_CHECKPOINT_*, LOG_ROOT_MISMATCH);
 *   5. when the tree reaches the earlier checkpoint's size, its root (LOG_EARLIER_CHECKPOINT_MISMATCH);
 *   6. at the end: as many leaves as the header says, and the last ones covered by a checkpoint
 *      (LOG_EXPORT_TRUNCATED, LOG_EXPORT_UNCHECKPOINTED).
 */
export async function verifyExport(lines: AsyncIterable<string> | Iterable<string>, options: ExportVerifyOptions): Promise<ExportReport> {
  const verifier = new ExportVerifier(options);
  for await (const line of lines) verifier.push(line);
  return verifier.finish();
}

/**
 * verifyExport over the bytes of the export (chunks cut anywhere), split into lines as splitLines does, with
 * the same checks, caps and errors: what `log verify` runs. Leaf lines are read as bytes, without turning
 * each one into a string first.
 */
export async function verifyExportBytes(
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: ExportVerifyOptions,
): Promise<ExportReport> {
  const verifier = new ExportVerifier(options);
  const reader = new LineReader(EXPORT_LIMITS.maxLineBytes);
  for await (const chunk of chunks) {
    reader.feed(chunk);
    while (reader.next()) verifier.pushBytes(reader.lineBytes, reader.lineStart, reader.lineEnd);
  }
  if (reader.end()) verifier.pushBytes(reader.lineBytes, reader.lineStart, reader.lineEnd);
  return verifier.finish();
}

/** `{"index":` and `,"leaf":"`, around the index in a leaf line. */
const INDEX_OPEN = Buffer.from('{"index":', 'latin1');
const LEAF_OPEN = Buffer.from(',"leaf":"', 'latin1');
/** The most bytes a leaf can have: its base64 fills a line of maxLineBytes. */
const MAX_LEAF_BYTES = Math.ceil(EXPORT_LIMITS.maxLineBytes / 4) * 3;
/** Leaves shorter than this (records are a few hundred bytes) get a view of leafBuffer made once per size. */
const VIEW_CACHE_BYTES = 2048;

/** The state machine behind verifyExport, for callers that push lines themselves. Header first, then leaves and checkpoints. */
export class ExportVerifier {
  private readonly options: ExportVerifyOptions;
  private readonly range = new CompactRange();
  private line = 0;
  private header: ExportHeader | undefined;
  private noteVerifier: NoteVerifier | undefined;
  private earlier: Checkpoint | undefined;
  private lastCheckpointSize = -1;
  private checkpoints = 0;
  private earlierCosigned: Cosigned[] = [];
  /** Witness name -> the largest cosigned checkpoint so far. */
  private readonly cosigned = new Map<string, Cosigned>();
  /** capsule id + "\n" + nonce of every acceptance so far, with its leaf index. */
  private readonly accepted = new Map<string, number>();
  /** Where a leaf's base64 is decoded; a view of it is valid until the next line. */
  private readonly leafBuffer = Buffer.allocUnsafe(MAX_LEAF_BYTES);
  private readonly leafViews = new Array<Buffer | undefined>(VIEW_CACHE_BYTES).fill(undefined);
  private decoder: TextDecoder | undefined;

  constructor(options: ExportVerifyOptions) {
    this.options = options;
  }

  /** The next line, without its newline. */
  push(text: string): void {
    if (this.header !== undefined && this.readLeafText(text)) return;
    this.line += 1;
    this.pushCounted(text);
  }

  /**
   * The next line as bytes (bytes[start, end), without its newline): the same as push(the line decoded as
   * UTF-8), with the line cap and the UTF-8 check of splitLines.
   */
  pushBytes(bytes: Uint8Array, start = 0, end = bytes.length): void {
    if (end - start > EXPORT_LIMITS.maxLineBytes) {
      throw fail('LOG_EXPORT_LINE_TOO_LONG', { line: this.line + 1 }, `the line is longer than ${EXPORT_LIMITS.maxLineBytes} bytes.`, {
        limit: EXPORT_LIMITS.maxLineBytes,
      });
    }
    if (this.header !== undefined && this.readLeafBytes(bytes, start, end)) return;
    this.decoder ??= new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    const text = decodeLine(this.decoder, bytes.subarray(start, end), this.line + 1);
    this.line += 1;
    this.pushCounted(text);
  }

  private pushCounted(text: string): void {
    if (this.header === undefined) {
      this.readHeader(text);
      return;
    }
    const position = { line: this.line, index: this.range.size };
    // The cheap test first: a line read by readline has not been capped yet.
    if (text.length > EXPORT_LIMITS.maxLineBytes / 3 && Buffer.byteLength(text, 'utf8') > EXPORT_LIMITS.maxLineBytes) {
      throw fail('LOG_EXPORT_LINE_TOO_LONG', { line: this.line }, `the line is longer than ${EXPORT_LIMITS.maxLineBytes} bytes.`);
    }
    let value: unknown;
    try {
      // The strict parser (duplicate member names refused); most leaf lines never get here (readLeafBytes).
      value = parseJson(text);
    } catch {
      throw fail('LOG_EXPORT_INVALID', { line: this.line }, 'the line is not JSON.');
    }
    if (isObject(value) && 'leaf' in value) this.readLeaf(text, value, position);
    else if (isObject(value) && 'checkpoint' in value) this.readCheckpoint(text, value);
    else throw fail('LOG_EXPORT_INVALID', { line: this.line }, 'the line is neither a leaf nor a checkpoint.');
  }

  finish(): ExportReport {
    const header = this.header;
    if (header === undefined) throw fail('LOG_EXPORT_INVALID', { line: 1 }, 'the export is empty: it has no header.');
    const size = this.range.size;
    const end = { line: this.line, size };
    if (size < header.size) {
      throw fail('LOG_EXPORT_TRUNCATED', end, `the export ends after ${size} leaves; its header announces ${header.size}.`);
    }
    if (this.lastCheckpointSize !== size) {
      throw fail(
        'LOG_EXPORT_UNCHECKPOINTED',
        end,
        this.checkpoints === 0
          ? 'the export holds no signed checkpoint.'
          : `the last signed checkpoint covers ${this.lastCheckpointSize} of the ${size} leaves.`,
      );
    }
    return {
      origin: header.origin,
      runner: header.runner,
      size,
      root: this.range.root().toString('base64'),
      checkpoints: this.checkpoints,
      ...(this.earlier ? { earlier: { size: this.earlier.size, cosigned: this.earlierCosigned } } : {}),
      cosigned: [...this.cosigned.values()].sort((a, b) => (a.witness < b.witness ? -1 : 1)),
    };
  }

  // Step 1 and 2.
  private readHeader(text: string): void {
    const at = { line: 1 };
    if (Buffer.byteLength(text, 'utf8') > EXPORT_LIMITS.maxHeaderBytes) {
      throw fail('LOG_EXPORT_LINE_TOO_LONG', at, `the header is longer than ${EXPORT_LIMITS.maxHeaderBytes} bytes.`);
    }
    let value: unknown;
    try {
      value = parseJson(text);
    } catch {
      throw fail('LOG_EXPORT_INVALID', at, 'the header is not JSON.');
    }
    if (!isObject(value) || value.mediaType !== EXPORT_MEDIA_TYPE) {
      throw fail('LOG_EXPORT_INVALID', at, `the header does not name the media type ${EXPORT_MEDIA_TYPE}.`);
    }
    const { origin, runner, size } = value;
    if (
      typeof origin !== 'string' ||
      !isObject(runner) ||
      typeof runner.id !== 'string' ||
      typeof runner.keyid !== 'string' ||
      typeof size !== 'number' ||
      !Number.isSafeInteger(size) ||
      size < 0
    ) {
      throw fail('LOG_EXPORT_INVALID', at, 'the header needs an origin, a runner {id, keyid} and a non-negative integer size.');
    }
    const header: ExportHeader = { origin, runner: { id: runner.id, keyid: runner.keyid }, size };
    if (formatExportHeader(header) !== text) {
      throw fail('LOG_EXPORT_INVALID', at, 'the header is not in its canonical form (members, order, spacing).');
    }

    // The runner is who the trust document says: its key has the runner role, under this very name.
    const { trust } = this.options;
    const key = trust.keys.find((k) => k.keyid === header.runner.keyid && k.roles.includes('runner'));
    if (key === undefined || trust.nameOf(key.keyid) !== header.runner.id) {
      throw fail(
        'LOG_EXPORT_UNKNOWN_RUNNER',
        at,
        `the trust document does not enrol key ${header.runner.keyid.slice(0, 16)}… as runner ${header.runner.id}.`,
        {
          runner: header.runner,
        },
      );
    }
    let expectedOrigin: string;
    try {
      expectedOrigin = runnerOrigin(header.runner.id, header.runner.keyid);
    } catch (cause) {
      throw fail('LOG_EXPORT_INVALID', at, 'the runner id cannot name a log.', {}, cause);
    }
    if (header.origin !== expectedOrigin) {
      throw fail('LOG_EXPORT_INVALID', at, `the origin is "${header.origin}", not the runner's log "${expectedOrigin}".`);
    }
    this.header = header;
    // C2SP signed-note: the runner signs its checkpoints under the log's origin as the key name.
    this.noteVerifier = { name: expectedOrigin, publicKey: key.publicKey };

    if (this.options.earlier !== undefined) {
      let earlier: Checkpoint;
      try {
        earlier = verifyCheckpoint(this.options.earlier, [this.noteVerifier], expectedOrigin);
      } catch (cause) {
        if (!(cause instanceof LogError)) throw cause;
        throw new LogError(
          cause.code,
          `the earlier checkpoint: ${lowerFirst(cause.message)}`,
          { line: 1, earlier: true, sentence: cause.message, ...cause.details },
          { cause },
        );
      }
      if (earlier.size > header.size) {
        throw fail(
          'LOG_EARLIER_CHECKPOINT_BEYOND_EXPORT',
          { line: 1, size: earlier.size },
          `the earlier checkpoint covers ${earlier.size} leaves; the log now holds ${header.size}.`,
        );
      }
      this.earlier = earlier;
      this.earlierCosigned = this.cosignaturesOf(this.options.earlier, earlier.size, { line: 1, size: 0 });
      this.checkEarlier({ line: 1, size: 0 });
    }
  }

  // Step 3.
  private readLeaf(text: string, value: Record<string, unknown>, position: Position & { index: number }): void {
    const header = this.header!;
    const { index } = position;
    if (value.index !== index) {
      throw fail('LOG_EXPORT_INVALID', position, `the leaf is numbered ${JSON.stringify(value.index)}; leaf ${index} comes next.`);
    }
    if (index >= header.size) {
      throw fail('LOG_EXPORT_INVALID', position, `the export holds more leaves than the ${header.size} its header announces.`);
    }
    const encoded = value.leaf;
    if (typeof encoded !== 'string') throw fail('LOG_LEAF_INVALID', position, 'the leaf is not a base64 string.');
    // Strict: Buffer.from skips characters outside the alphabet and takes the URL-safe ones, so only the
    // round trip proves the text is the one standard padded encoding of these bytes (RFC 4648 section 4).
    const leaf = Buffer.from(encoded, 'base64');
    if (leaf.toString('base64') !== encoded) throw fail('LOG_LEAF_INVALID', position, 'the leaf is not canonical standard base64.');
    // The line as formatLeafLine writes it (same bytes, without encoding the leaf a second time).
    if (text !== `{"index":${index},"leaf":"${encoded}"}`) {
      throw fail('LOG_EXPORT_INVALID', position, 'the leaf line is not in its canonical form (members, order, spacing).');
    }
    this.appendLeaf(leaf);
  }

  /**
   * Step 3 for a line that is exactly `{"index":i,"leaf":"B"}`, i the next index and B canonical base64:
   * every check of readLeaf up to the base64 holds by construction, so it reads the leaf without parsing the
   * line as JSON. Returns false, having changed nothing, for any other line (readLeaf then says what is wrong).
   */
  private readLeafText(text: string): boolean {
    if (text.length > EXPORT_LIMITS.maxLineBytes) return false;
    const prefix = `{"index":${this.range.size},"leaf":"`;
    if (text.length < prefix.length + 2 || !text.startsWith(prefix) || !text.endsWith('"}')) return false;
    const leaf = this.decodeLeaf(text.slice(prefix.length, -2));
    if (leaf === undefined) return false;
    this.line += 1;
    this.appendLeaf(leaf);
    return true;
  }

  /** readLeafText on the bytes of a line (at most maxLineBytes), without making a string of it. */
  private readLeafBytes(line: Uint8Array, start: number, end: number): boolean {
    if (end - start < INDEX_OPEN.length + 1 + LEAF_OPEN.length + 2 || !startsWithAt(line, start, INDEX_OPEN)) return false;
    // The index: the decimal digits of the next index, as String(index) writes them.
    const expected = this.range.size;
    let p = start + INDEX_OPEN.length;
    let value = 0;
    const first = p;
    for (; p < end; p++) {
      const digit = line[p]! - 0x30;
      if (digit < 0 || digit > 9) break;
      value = value * 10 + digit;
    }
    const digits = p - first;
    if (digits === 0 || digits > 15 || (digits > 1 && line[first] === 0x30) || value !== expected) return false;
    if (!startsWithAt(line, p, LEAF_OPEN)) return false;
    p += LEAF_OPEN.length;
    if (p > end - 2 || line[end - 2] !== 0x22 || line[end - 1] !== 0x7d) return false;
    const length = decodeCanonicalBase64(line, p, end - 2, this.leafBuffer);
    if (length < 0) return false;
    this.line += 1;
    this.appendLeaf(this.leafView(length));
    return true;
  }

  /** leafBuffer's first `length` bytes; the views of the sizes records have are made once. */
  private leafView(length: number): Buffer {
    const views = this.leafViews;
    if (length >= views.length) return this.leafBuffer.subarray(0, length);
    return (views[length] ??= this.leafBuffer.subarray(0, length));
  }

  /**
   * The bytes `encoded` is the canonical standard base64 of (RFC 4648 section 4), decoded into leafBuffer,
   * or undefined. The same test as readLeaf's: decoding skips characters outside the alphabet and takes
   * the URL-safe ones, so only the round trip proves the text is the one encoding of these bytes.
   */
  private decodeLeaf(encoded: string): Buffer | undefined {
    const buffer = this.leafBuffer;
    if (encoded.length > Math.ceil(buffer.length / 3) * 4) return undefined;
    const length = buffer.write(encoded, 0, 'base64');
    if (buffer.toString('base64', 0, length) !== encoded) return undefined;
    return buffer.subarray(0, length);
  }

  /** The rest of step 3 (within the announced size, a canonical record at its index), and step 5. */
  private appendLeaf(leaf: Buffer): void {
    const index = this.range.size;
    const header = this.header!;
    if (index >= header.size) {
      throw fail('LOG_EXPORT_INVALID', { line: this.line, index }, `the export holds more leaves than the ${header.size} its header announces.`);
    }
    let kind: RecordKind;
    try {
      kind = verifyRecordLeaf(leaf, index);
    } catch (cause) {
      if (!(cause instanceof LogError)) throw cause;
      // The record's own sentence, placed: "line 7 (leaf 5): the record's seq is 6, not its index 5."
      throw fail(cause.code, { line: this.line, index }, cause.message, { ...cause.details }, cause);
    }
    if (kind === 'capsule.accepted') this.checkNotReplayed(leaf, index);
    this.range.append(hashLeaf(leaf));
    if (this.earlier !== undefined) this.checkEarlier({ line: this.line, index, size: this.range.size });
  }

  /**
   * Step 3 for an acceptance: its capsule id + nonce must not have been accepted before in this log. The
   * store refuses a replay; a log that shows one anyway means the store's replay table failed (damaged or
   * edited), and the capsule ran twice. Acceptances written before records carried the nonce are not counted.
   */
  private checkNotReplayed(leaf: Buffer, index: number): void {
    // The leaf was just proved a canonical capsule.accepted record (members sorted, none twice), so a plain
    // parse reads exactly the members that were checked.
    const { capsuleId, nonce } = JSON.parse(leaf.toString('utf8')) as RecordBodies['capsule.accepted'];
    if (nonce === undefined) return;
    const key = `${capsuleId}\n${nonce}`;
    const first = this.accepted.get(key);
    if (first !== undefined) {
      throw fail(
        'LOG_REPLAY_ACCEPTED',
        { line: this.line, index },
        `the capsule ${JSON.stringify(capsuleId)} is accepted again with the nonce leaf ${first} accepted.`,
        { capsuleId, firstIndex: first },
      );
    }
    this.accepted.set(key, index);
  }

  // Step 4.
  private readCheckpoint(text: string, value: Record<string, unknown>): void {
    const seen = this.range.size;
    const at = { line: this.line, size: seen };
    const note = value.checkpoint;
    if (typeof note !== 'string' || formatCheckpointLine(note) !== text) {
      throw fail('LOG_EXPORT_INVALID', at, 'the checkpoint line is not {"checkpoint": note} in its canonical form.');
    }
    let checkpoint: Checkpoint;
    try {
      checkpoint = verifyCheckpoint(note, [this.noteVerifier!], this.header!.origin);
    } catch (cause) {
      if (!(cause instanceof LogError)) throw cause;
      throw fail(cause.code, at, `the checkpoint: ${lowerFirst(cause.message)}`, { ...cause.details }, cause);
    }
    if (checkpoint.size > seen) {
      throw fail('LOG_CHECKPOINT_BEYOND_LEAVES', at, `the checkpoint covers ${checkpoint.size} leaves; only ${seen} come before it.`, {
        checkpointSize: checkpoint.size,
      });
    }
    if (checkpoint.size < seen || checkpoint.size <= this.lastCheckpointSize) {
      throw fail(
        'LOG_CHECKPOINT_MISPLACED',
        at,
        checkpoint.size < seen
          ? `the checkpoint of size ${checkpoint.size} comes after ${seen} leaves, not right after leaf ${checkpoint.size - 1}.`
          : `the checkpoint of size ${checkpoint.size} repeats the previous one.`,
        { checkpointSize: checkpoint.size },
      );
    }
    // RFC 9162 section 2.1.1: the root of the first `size` leaves, recomputed here, is what was signed.
    const root = this.range.root();
    if (!root.equals(checkpoint.rootHash)) {
      throw fail(
        'LOG_ROOT_MISMATCH',
        at,
        `the checkpoint of size ${checkpoint.size} signs root ${checkpoint.rootHash.toString('base64')}; the leaves give ${root.toString('base64')}.`,
      );
    }
    this.lastCheckpointSize = checkpoint.size;
    this.checkpoints += 1;
    for (const cosigned of this.cosignaturesOf(note, checkpoint.size, at)) this.cosigned.set(cosigned.witness, cosigned);
  }

  /**
   * The cosignatures on a runner-signed checkpoint note by witnesses of the trust document (role witness);
   * lines of other keys are ignored, as C2SP requires. One by a listed witness that does not verify fails the
   * export: a note carrying it is malformed (C2SP signed-note).
   */
  private cosignaturesOf(note: string, size: number, at: Position): Cosigned[] {
    const witnesses = witnessKeysOf(this.options.trust);
    if (witnesses.length === 0) return [];
    const block = note.slice(note.lastIndexOf('\n\n') + 2);
    try {
      return verifyCosignatures(note, block, witnesses).map(({ name, timestamp }) => ({
        witness: name,
        size,
        at: new Date(timestamp * 1000).toISOString().replace('.000Z', 'Z'),
      }));
    } catch (cause) {
      if (!(cause instanceof ProtocolError)) throw cause;
      throw fail('LOG_COSIGNATURE_INVALID', at, `the checkpoint of size ${size}: ${lowerFirst(cause.message)}`, {}, cause);
    }
  }

  // Step 5: the tree at the earlier checkpoint's size must be the one that was signed then.
  private checkEarlier(position: Position & { size: number }): void {
    const earlier = this.earlier;
    if (earlier === undefined || earlier.size !== position.size) return;
    const root = this.range.root();
    if (!root.equals(earlier.rootHash)) {
      throw fail(
        'LOG_EARLIER_CHECKPOINT_MISMATCH',
        position,
        `the first ${earlier.size} leaves give root ${root.toString('base64')}, not the earlier checkpoint's ${earlier.rootHash.toString('base64')}.`,
      );
    }
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Standard base64 (RFC 4648 section 4): the value of each alphabet character, -1 for any other byte (`=` too). */
const BASE64_VALUE = new Int8Array(256).fill(-1);
[...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'].forEach((ch, value) => (BASE64_VALUE[ch.charCodeAt(0)] = value));
/** The 12 bits of two characters (first << 8 | second), -1 unless both are alphabet characters; made on first use. */
let base64Pairs: Int16Array | undefined;
function base64PairValues(): Int16Array {
  if (base64Pairs === undefined) {
    base64Pairs = new Int16Array(65536).fill(-1);
    for (let x = 0; x < 256; x++) {
      for (let y = 0; y < 256; y++) {
        if (BASE64_VALUE[x]! >= 0 && BASE64_VALUE[y]! >= 0) base64Pairs[(x << 8) | y] = (BASE64_VALUE[x]! << 6) | BASE64_VALUE[y]!;
      }
    }
  }
  return base64Pairs;
}

/**
 * Decodes bytes[start, stop) into `out` if they are the canonical standard base64 of some bytes, the one
 * text Buffer.toString('base64') writes for them: whole quads of alphabet characters, the last one padded
 * with one or two `=` when it encodes two or one bytes, and zero in the bits the padding leaves unused. The
 * same test as readLeaf's round trip, on bytes. Returns the number of bytes decoded, or -1.
 */
function decodeCanonicalBase64(bytes: Uint8Array, start: number, stop: number, out: Uint8Array): number {
  const length = stop - start;
  if (length % 4 !== 0 || (length / 4) * 3 > out.length) return -1;
  if (length === 0) return 0;
  const pad = bytes[stop - 1] !== 0x3d ? 0 : bytes[stop - 2] === 0x3d ? 2 : 1;
  const whole = stop - (pad === 0 ? 0 : 4);
  const pairs = base64PairValues();
  let o = 0;
  for (let i = start; i < whole; i += 4) {
    const high = pairs[(bytes[i]! << 8) | bytes[i + 1]!]!;
    const low = pairs[(bytes[i + 2]! << 8) | bytes[i + 3]!]!;
    if ((high | low) < 0) return -1;
    const bits = (high << 12) | low;
    out[o] = bits >>> 16;
    out[o + 1] = (bits >>> 8) & 0xff;
    out[o + 2] = bits & 0xff;
    o += 3;
  }
  if (pad !== 0) {
    const a = BASE64_VALUE[bytes[whole]!]!;
    const b = BASE64_VALUE[bytes[whole + 1]!]!;
    if ((a | b) < 0) return -1;
    out[o++] = (a << 2) | (b >> 4);
    if (pad === 2) {
      if ((b & 0x0f) !== 0) return -1;
    } else {
      const c = BASE64_VALUE[bytes[whole + 2]!]!;
      if (c < 0 || (c & 0x03) !== 0) return -1;
      out[o++] = ((b & 0x0f) << 4) | (c >> 2);
    }
  }
  return o;
}

function startsWithAt(bytes: Uint8Array, at: number, word: Uint8Array): boolean {
  if (at + word.length > bytes.length) return false;
  for (let i = 0; i < word.length; i++) if (bytes[at + i] !== word[i]) return false;
  return true;
}

function lowerFirst(text: string): string {
  return text.length > 0 ? text[0]!.toLowerCase() + text.slice(1) : text;
}
