/**
 * The record vocabulary: every kind of record the runner appends to its log, the typed body of each, the
 * canonical leaf encoding and its parser. This module owns the format; the store (writing), the exporter
 * and `log verify`, the bundle check and the egress guard (reading) all import it. Adding a kind is one
 * edit here: RECORD_FIELDS below is checked against RecordBodies by the type checker.
 *
 * A leaf is the canonical JSON (runner/core/canonical-json.ts) of the body plus four fields only the log
 * sets: `v` (1), `seq` (the leaf index), `kind` and `at` (RFC 3339 UTC with milliseconds). Auditors can
 * recompute it with `jq -cS`. Pure: bytes in, values out.
 */
import { isUtf8 } from 'node:buffer';
import { toCanonicalJson } from '../core/canonical-json.js';
import type { IsolationUsed, LimitReason, StepStatus, StreamRecord, Verdict } from '../evidence/statement.js';
import { LogError } from './errors.js';

export const RECORD_VERSION = 1;

/** Why a run stopped before it finished (`run.aborted`): a reason code of the module that stopped it. */
export type AbortReason = string;

export interface RecordBodies {
  'capsule.accepted': { capsuleId: string; capsuleKind: string; manifestDigest: string; fileDigest?: string; signers: string[] };
  'capsule.rejected': { code: string; fileDigest?: string; fileSize?: number; capsuleId?: string; manifestDigest?: string };
  'run.started': { runId: string; capsuleId: string; manifestDigest: string; isolation: IsolationUsed };
  'step.finished': {
    runId: string;
    name: string;
    status: StepStatus;
    exitCode: number | null;
    signal: string | null;
    timedOut: boolean;
    durationMs: number;
    spawnFailure?: 'not-found' | 'permission-denied' | 'spawn-failed';
    limit?: LimitReason;
    stdout?: StreamRecord;
    stderr?: StreamRecord;
  };
  'run.finished': { runId: string; verdict: Verdict };
  'run.aborted': { runId: string; reason: AbortReason };
  'evidence.signed': { runId: string; evidenceDigest: string };
}

export type RecordKind = keyof RecordBodies;
export type RecordBody<K extends RecordKind = RecordKind> = RecordBodies[K];

type FieldSpec<B> = { readonly required: readonly (keyof B & string)[]; readonly optional: readonly (keyof B & string)[] };
type RequiredKeys<B> = { [F in keyof B]-?: object extends Pick<B, F> ? never : F }[keyof B];
type OptionalKeys<B> = Exclude<keyof B, RequiredKeys<B>>;
type AssertNever<T extends never> = T;

/** The members each kind's body has: required ones always, optional ones when they apply. Nothing else. */
export const RECORD_FIELDS = {
  'capsule.accepted': { required: ['capsuleId', 'capsuleKind', 'manifestDigest', 'signers'], optional: ['fileDigest'] },
  'capsule.rejected': { required: ['code'], optional: ['fileDigest', 'fileSize', 'capsuleId', 'manifestDigest'] },
  'run.started': { required: ['runId', 'capsuleId', 'manifestDigest', 'isolation'], optional: [] },
  'step.finished': {
    required: ['runId', 'name', 'status', 'exitCode', 'signal', 'timedOut', 'durationMs'],
    optional: ['spawnFailure', 'limit', 'stdout', 'stderr'],
  },
  'run.finished': { required: ['runId', 'verdict'], optional: [] },
  'run.aborted': { required: ['runId', 'reason'], optional: [] },
  'evidence.signed': { required: ['runId', 'evidenceDigest'], optional: [] },
} as const satisfies { readonly [K in RecordKind]: FieldSpec<RecordBodies[K]> };

// Every required member of every body is listed as required, every optional one as optional.
type _RequiredListed = AssertNever<
  { [K in RecordKind]: Exclude<RequiredKeys<RecordBodies[K]>, (typeof RECORD_FIELDS)[K]['required'][number]> }[RecordKind]
>;
type _OptionalListed = AssertNever<
  { [K in RecordKind]: Exclude<OptionalKeys<RecordBodies[K]>, (typeof RECORD_FIELDS)[K]['optional'][number]> }[RecordKind]
>;

export const RECORD_KINDS = Object.keys(RECORD_FIELDS) as RecordKind[];

/** Members every leaf has, set by the log alone; a body may not carry them. */
export const RESERVED_FIELDS = ['v', 'seq', 'kind', 'at'] as const;

const KNOWN_FIELDS: ReadonlyMap<string, ReadonlySet<string>> = new Map(
  RECORD_KINDS.map((kind) => [kind, new Set<string>([...RESERVED_FIELDS, ...RECORD_FIELDS[kind].required, ...RECORD_FIELDS[kind].optional])]),
);

export function isRecordKind(value: unknown): value is RecordKind {
  return typeof value === 'string' && KNOWN_FIELDS.has(value);
}

/** A record as it is in the log: the four log fields and the typed body. */
export type LogRecord = { [K in RecordKind]: { v: 1; seq: number; kind: K; at: string; body: RecordBodies[K] } }[RecordKind];

const AT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** The leaf bytes of record `seq`: canonical JSON of the body and the log fields. */
export function encodeRecordLeaf<K extends RecordKind>(kind: K, body: RecordBodies[K], seq: number, at: string): Buffer {
  for (const reserved of RESERVED_FIELDS) {
    if (reserved in body) throw new LogError('LOG_LEAF_INVALID', `A record body may not set "${reserved}".`, { field: reserved });
  }
  return Buffer.from(toCanonicalJson({ ...body, v: RECORD_VERSION, seq, kind, at }), 'utf8');
}

/**
 * Parses one leaf back into a record and checks it is exactly what encodeRecordLeaf writes: JSON, an
 * object, `v` 1, a known kind with only its own members and all its required ones, an `at` timestamp, a
 * `seq` (equal to `expectedSeq` when given), and the leaf bytes the canonical encoding of it. Throws
 * LOG_LEAF_INVALID with a sentence that says which check failed.
 */
export function parseRecordLeaf(leaf: Uint8Array, expectedSeq?: number): LogRecord {
  const bytes = Buffer.from(leaf.buffer, leaf.byteOffset, leaf.byteLength);
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw invalid('the leaf is not JSON.');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('the leaf is not a JSON object.');
  const record = value as Record<string, unknown>;
  if (expectedSeq !== undefined && record.seq !== expectedSeq) {
    throw invalid(`the record's seq is ${JSON.stringify(record.seq)}, not its index ${expectedSeq}.`, { seq: record.seq });
  }
  if (!Number.isSafeInteger(record.seq) || (record.seq as number) < 0) throw invalid("the record's seq is not a non-negative integer.");
  if (record.v !== RECORD_VERSION) throw invalid(`the record's version is ${JSON.stringify(record.v)}, not ${RECORD_VERSION}.`);
  if (!isRecordKind(record.kind)) throw invalid(`the record's kind ${JSON.stringify(record.kind)} is not a known kind.`);
  if (typeof record.at !== 'string' || !AT.test(record.at)) throw invalid('the record has no time.');
  const kind = record.kind;
  const known = KNOWN_FIELDS.get(kind)!;
  for (const field in record) {
    if (!known.has(field)) throw invalid(`a ${kind} record has no member "${field}".`, { field });
  }
  for (const field of RECORD_FIELDS[kind].required) {
    if (!(field in record)) throw invalid(`the ${kind} record lacks "${field}".`, { field });
  }
  // The fast recogniser proves most leaves canonical without re-serialising them; when it cannot decide,
  // the leaf is re-encoded and compared byte for byte.
  if (scanRecordLeaf(bytes, expectedSeq) === undefined) {
    let canonical: string;
    try {
      canonical = toCanonicalJson(record);
    } catch {
      throw invalid('the record holds a number that is not a safe integer.');
    }
    if (Buffer.byteLength(canonical, 'utf8') !== bytes.length || !Buffer.from(canonical, 'utf8').equals(bytes)) {
      throw invalid('the leaf bytes are not the canonical encoding of the record.');
    }
  }
  const { v: _v, seq, kind: _kind, at, ...body } = record;
  return { v: RECORD_VERSION, seq: seq as number, kind, at, body } as LogRecord;
}

/**
 * The checks of parseRecordLeaf without building the record, for verifiers that only need the verdict
 * (`log verify` reads a million leaves): the same leaves pass, and a leaf that fails throws the very
 * LogError parseRecordLeaf throws. Returns the record's kind.
 */
export function verifyRecordLeaf(leaf: Uint8Array, expectedSeq?: number): RecordKind {
  return scanRecordLeaf(leaf, expectedSeq) ?? parseRecordLeaf(leaf, expectedSeq).kind;
}

function invalid(sentence: string, details: Record<string, unknown> = {}): LogError {
  return new LogError('LOG_LEAF_INVALID', sentence, { sentence, ...details });
}

// ---------------------------------------------------------------------------------------------------------
// The fast recogniser

/**
 * Decides in one pass over the bytes, without building strings or objects, that a leaf is one
 * parseRecordLeaf accepts: it returns the kind only when every check of parseRecordLeaf would pass, and
 * undefined whenever it is not sure (then parseRecordLeaf decides, and says why it fails). It accepts a
 * subset of what toCanonicalJson (JSON.stringify of sorted keys) writes:
 *   - no whitespace; objects, arrays, `true`, `false`, `null`;
 *   - integers of at most 15 digits (safe), without a leading zero, never `-0`;
 *   - strings of raw characters other than `"`, `\` and controls (UTF-8, checked once for the leaf when a
 *     byte is not ASCII), and exactly the escapes JSON.stringify writes: `\"`, `\\`, `\b`, `\f`,
 *     `\n`, `\r`, `\t`, and `\u00xx` (lower-case) for the other controls;
 *   - keys of printable ASCII without `"` or `\`, strictly increasing (sorted, no duplicates), not
 *     starting with a digit (JSON.stringify writes array-index keys first, whatever the sort said) and never
 *     `__proto__` (an assignment that sortKeys would drop);
 *   - nesting at most MAX_FAST_DEPTH deep;
 * and at the top level the members of parseRecordLeaf: `v` 1, `seq` (= expectedSeq when given), a known
 * `kind` with exactly its own members, and an `at` timestamp. Anything else, even if canonical, returns
 * undefined. Exported for its tests.
 */
export function scanRecordLeaf(leaf: Uint8Array, expectedSeq?: number): RecordKind | undefined {
  const scan = new Scan(leaf);
  return scan.record(expectedSeq);
}

const MAX_FAST_DEPTH = 16;
const MAX_TOP_LEVEL_MEMBERS = 32;

// Byte classes inside a string.
const PLAIN = 0;
const QUOTE = 1;
const BACKSLASH = 2;
const CONTROL = 3;
const HIGH = 4;
const STRING_CLASS = new Uint8Array(256).map((_, c) => (c === 0x22 ? QUOTE : c === 0x5c ? BACKSLASH : c < 0x20 ? CONTROL : c >= 0x80 ? HIGH : PLAIN));
// The controls JSON.stringify writes as \u00xx (the others have a short escape).
const SHORT_ESCAPED_CONTROLS = new Set([0x08, 0x09, 0x0a, 0x0c, 0x0d]);
// What may follow a backslash, besides `u`: " \ b f n r t.
const SHORT_ESCAPES = new Set([0x22, 0x5c, 0x62, 0x66, 0x6e, 0x72, 0x74]);

/**
 * Every member name any kind knows (the four log fields first), numbered for bit masks, and looked up by
 * length and first byte. Masks are 31-bit integers: a name numbered beyond that is never recognised, so
 * its records take the slow path.
 */
const MASK_BITS = 31;
const bit = (id: number): number => (id < MASK_BITS ? 1 << id : 0);
const FIELD_NAMES = [...new Set(RECORD_KINDS.flatMap((kind) => [...KNOWN_FIELDS.get(kind)!]))];
const FIELD_BYTES = FIELD_NAMES.map((name) => Buffer.from(name, 'latin1'));
const FIELD_BUCKETS = new Map<number, number[]>();
FIELD_BYTES.forEach((bytes, id) => {
  if (id >= MASK_BITS) return;
  const bucket = (bytes.length << 8) | bytes[0]!;
  FIELD_BUCKETS.set(bucket, [...(FIELD_BUCKETS.get(bucket) ?? []), id]);
});
const fieldId = (name: string): number => FIELD_NAMES.indexOf(name);
const ID_V = fieldId('v');
const ID_SEQ = fieldId('seq');
const ID_KIND = fieldId('kind');
const ID_AT = fieldId('at');
interface KindMasks {
  kind: RecordKind;
  bytes: Buffer;
  known: number;
  required: number;
  complete: boolean;
}
const KIND_MASKS: readonly KindMasks[] = RECORD_KINDS.map((kind) => ({
  kind,
  bytes: Buffer.from(kind, 'latin1'),
  known: [...KNOWN_FIELDS.get(kind)!].reduce((mask, name) => mask | bit(fieldId(name)), 0),
  required: [...RESERVED_FIELDS, ...RECORD_FIELDS[kind].required].reduce((mask, name) => mask | bit(fieldId(name)), 0),
  // A required member beyond the mask could never be seen: such a kind always takes the slow path.
  complete: [...RESERVED_FIELDS, ...RECORD_FIELDS[kind].required].every((name) => fieldId(name) < MASK_BITS),
}));
const PROTO = Buffer.from('__proto__', 'latin1');

/** One pass of the recogniser over one leaf. Every method returns false (or undefined) for "not sure". */
class Scan {
  private readonly b: Uint8Array;
  private readonly end: number;
  private p = 0;
  private high = false;

  constructor(bytes: Uint8Array) {
    this.b = bytes;
    this.end = bytes.length;
  }

  record(expectedSeq: number | undefined): RecordKind | undefined {
    const b = this.b;
    if (this.end < 2 || b[0] !== 0x7b) return undefined;
    this.p = 1;
    let seen = 0; // bit(id) of every member seen; each at most once, since keys strictly increase
    let count = 0;
    let previousStart = -1;
    let previousEnd = -1;
    let seq = -1;
    let kindAt = -1;
    let kindEnd = -1;
    if (b[this.p] === 0x7d) return undefined; // {} has no kind
    for (;;) {
      const keyStart = this.p + 1;
      if (!this.key(previousStart, previousEnd)) return undefined;
      const keyEnd = this.p - 2; // after `":`
      previousStart = keyStart;
      previousEnd = keyEnd;
      if (++count > MAX_TOP_LEVEL_MEMBERS) return undefined;
      const id = this.fieldOf(keyStart, keyEnd);
      if (id < 0) return undefined;
      const valueStart = this.p;
      if (!this.value(1)) return undefined;
      const valueEnd = this.p;
      seen |= bit(id);
      if (id === ID_SEQ) {
        seq = this.digits(valueStart, valueEnd);
        if (seq < 0) return undefined;
      } else if (id === ID_V) {
        if (valueEnd - valueStart !== 1 || b[valueStart] !== 0x31) return undefined;
      } else if (id === ID_KIND) {
        if (b[valueStart] !== 0x22) return undefined;
        kindAt = valueStart + 1;
        kindEnd = valueEnd - 1;
      } else if (id === ID_AT) {
        if (!this.timestamp(valueStart, valueEnd)) return undefined;
      }
      const c = b[this.p];
      if (c === 0x2c) {
        this.p += 1;
        continue;
      }
      if (c !== 0x7d || this.p + 1 !== this.end) return undefined;
      break;
    }
    if (expectedSeq !== undefined && seq !== expectedSeq) return undefined;
    if (kindAt < 0) return undefined;
    const masks = this.kindOf(kindAt, kindEnd);
    if (masks === undefined || !masks.complete) return undefined;
    // Only the kind's own members, and all its required ones (the four log fields among them).
    if ((seen & ~masks.known) !== 0 || (masks.required & ~seen) !== 0) return undefined;
    if (this.high && !isUtf8(this.b)) return undefined;
    return masks.kind;
  }

  /** A key at p (`"name":`), greater than the previous key of its object; p ends after the colon. */
  private key(previousStart: number, previousEnd: number): boolean {
    const b = this.b;
    if (b[this.p] !== 0x22) return false;
    const start = this.p + 1;
    let q = start;
    if (q < this.end && b[q]! >= 0x30 && b[q]! <= 0x39) return false;
    for (; q < this.end; q++) {
      const c = b[q]!;
      if (c === 0x22) break;
      if (c < 0x20 || c > 0x7e || c === 0x5c) return false;
    }
    if (q + 1 >= this.end || b[q + 1] !== 0x3a) return false;
    if (q - start === PROTO.length && equalAt(b, start, PROTO)) return false;
    if (previousStart >= 0 && compareRanges(b, previousStart, previousEnd, start, q) >= 0) return false;
    this.p = q + 2;
    return true;
  }

  private value(depth: number): boolean {
    const b = this.b;
    const c = b[this.p];
    if (c === 0x22) return this.string();
    if (c === 0x7b) return depth < MAX_FAST_DEPTH && this.object(depth + 1);
    if (c === 0x5b) return depth < MAX_FAST_DEPTH && this.array(depth + 1);
    if (c === 0x74) return this.literal(TRUE);
    if (c === 0x66) return this.literal(FALSE);
    if (c === 0x6e) return this.literal(NULL);
    return this.number();
  }

  private object(depth: number): boolean {
    const b = this.b;
    this.p += 1;
    if (b[this.p] === 0x7d) {
      this.p += 1;
      return true;
    }
    let previousStart = -1;
    let previousEnd = -1;
    for (;;) {
      const keyStart = this.p + 1;
      if (!this.key(previousStart, previousEnd)) return false;
      previousStart = keyStart;
      previousEnd = this.p - 2;
      if (!this.value(depth)) return false;
      const c = b[this.p];
      this.p += 1;
      if (c === 0x2c) continue;
      return c === 0x7d;
    }
  }

  private array(depth: number): boolean {
    const b = this.b;
    this.p += 1;
    if (b[this.p] === 0x5d) {
      this.p += 1;
      return true;
    }
    for (;;) {
      if (!this.value(depth)) return false;
      const c = b[this.p];
      this.p += 1;
      if (c === 0x2c) continue;
      return c === 0x5d;
    }
  }

  private string(): boolean {
    const b = this.b;
    const end = this.end;
    let q = this.p + 1;
    while (q < end) {
      const k = STRING_CLASS[b[q]!]!;
      if (k === PLAIN) {
        q += 1;
      } else if (k === QUOTE) {
        this.p = q + 1;
        return true;
      } else if (k === HIGH) {
        this.high = true;
        q += 1;
      } else if (k === BACKSLASH) {
        const e = b[q + 1];
        if (e === undefined) return false;
        if (SHORT_ESCAPES.has(e)) {
          q += 2;
        } else {
          // \u00xx, lower-case hex, for a control without a short escape: what JSON.stringify writes.
          if (e !== 0x75 || b[q + 2] !== 0x30 || b[q + 3] !== 0x30) return false;
          const hi = b[q + 4];
          const lo = hexDigit(b[q + 5]);
          if ((hi !== 0x30 && hi !== 0x31) || lo < 0) return false;
          if (SHORT_ESCAPED_CONTROLS.has((hi - 0x30) * 16 + lo)) return false;
          q += 6;
        }
      } else {
        return false; // a raw control: not JSON
      }
    }
    return false;
  }

  private number(): boolean {
    const b = this.b;
    let q = this.p;
    if (b[q] === 0x2d) q += 1;
    const first = q;
    const c = b[q];
    if (c === undefined || c < 0x31 || c > 0x39) {
      // 0 alone (not -0), or not a number.
      if (c !== 0x30 || first !== this.p) return false;
      this.p = q + 1;
      return !isDigitOrFraction(b[this.p]);
    }
    while (q < this.end && b[q]! >= 0x30 && b[q]! <= 0x39) q += 1;
    if (q - first > 15 || isDigitOrFraction(b[q])) return false;
    this.p = q;
    return true;
  }

  private literal(word: Buffer): boolean {
    if (this.p + word.length > this.end || !equalAt(this.b, this.p, word)) return false;
    this.p += word.length;
    return true;
  }

  /** The value of the token in [start, end) if it is a non-negative integer (already checked to be a number if it starts like one), or -1. */
  private digits(start: number, end: number): number {
    const b = this.b;
    if (end <= start) return -1;
    let n = 0;
    for (let q = start; q < end; q++) {
      const d = b[q]! - 0x30;
      if (d < 0 || d > 9) return -1;
      n = n * 10 + d;
    }
    return n;
  }

  /** `"YYYY-MM-DDTHH:MM:SS.mmmZ"` in [start, end), quotes included: the AT pattern. */
  private timestamp(start: number, end: number): boolean {
    const b = this.b;
    if (end - start !== 26) return false;
    for (let i = 0; i < 24; i++) {
      const c = b[start + 1 + i]!;
      const want = AT_SHAPE[i]!;
      if (want === 0 ? c < 0x30 || c > 0x39 : c !== want) return false;
    }
    return true;
  }

  private fieldOf(start: number, end: number): number {
    const length = end - start;
    if (length === 0) return -1;
    const bucket = FIELD_BUCKETS.get((length << 8) | this.b[start]!);
    if (bucket === undefined) return -1;
    for (const id of bucket) if (equalAt(this.b, start, FIELD_BYTES[id]!)) return id;
    return -1;
  }

  private kindOf(start: number, end: number): KindMasks | undefined {
    for (const masks of KIND_MASKS) {
      if (masks.bytes.length === end - start && equalAt(this.b, start, masks.bytes)) return masks;
    }
    return undefined;
  }
}

const TRUE = Buffer.from('true', 'latin1');
const FALSE = Buffer.from('false', 'latin1');
const NULL = Buffer.from('null', 'latin1');
// 0 stands for a digit.
const AT_SHAPE = Uint8Array.from('0000-00-00T00:00:00.000Z', (ch) => (ch === '0' ? 0 : ch.charCodeAt(0)));

function equalAt(b: Uint8Array, at: number, word: Uint8Array): boolean {
  for (let i = 0; i < word.length; i++) if (b[at + i] !== word[i]) return false;
  return true;
}

function compareRanges(b: Uint8Array, aStart: number, aEnd: number, bStart: number, bEnd: number): number {
  const n = Math.min(aEnd - aStart, bEnd - bStart);
  for (let i = 0; i < n; i++) {
    const d = b[aStart + i]! - b[bStart + i]!;
    if (d !== 0) return d;
  }
  return aEnd - aStart - (bEnd - bStart);
}

function hexDigit(c: number | undefined): number {
  if (c === undefined) return -1;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

function isDigitOrFraction(c: number | undefined): boolean {
  return c !== undefined && ((c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x65 || c === 0x45);
}
