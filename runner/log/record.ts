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
import { toPrintableExcerpt } from '../core/printable.js';
import type { IsolationUsed, StepRecord, Verdict } from '../evidence/statement.js';
import type { ScheduleCatchUp } from '../trust/trust.js';
import { LogError } from './errors.js';

export const RECORD_VERSION = 1;

/** Why a run stopped before it finished (`run.aborted`): a reason code of the module that stopped it. */
export type AbortReason = string;

export interface RecordBodies {
  /**
   * `nonce` is the manifest's, so that `log verify` can show an id + nonce accepted twice (a replay the
   * store failed to refuse). Records written before issue 8 lack it.
   */
  'capsule.accepted': { capsuleId: string; capsuleKind: string; manifestDigest: string; nonce?: string; fileDigest?: string; signers: string[] };
  'capsule.rejected': { code: string; fileDigest?: string; fileSize?: number; capsuleId?: string; manifestDigest?: string };
  /**
   * `scheduledFor` is the slot (RFC 3339) a recurring capsule's run fires for; `resources` the names of the
   * operator-granted resources bound into its steps (never their paths or addresses).
   */
  'run.started': { runId: string; capsuleId: string; manifestDigest: string; isolation: IsolationUsed; scheduledFor?: string; resources?: string[] };
  /** The step as the evidence records it (runner/evidence/statement.ts owns that shape), and its run. */
  'step.finished': { runId: string } & StepRecord;
  'run.finished': { runId: string; verdict: Verdict };
  'run.aborted': { runId: string; reason: AbortReason };
  'evidence.signed': { runId: string; evidenceDigest: string };
  /** A run's folder (its workspace, its inputs) could not be removed; the next open tries again. */
  'workspace.not-removed': { runId: string; code: string; errno?: string };
  /**
   * The coordinator acknowledged an answer (a bundle or a rejection, by the digest of its bytes): `status` is
   * what it said, stored now or already there. (Member names are shared between kinds where they can be:
   * scanRecordLeaf's fast path knows at most 62 names.)
   */
  'outbox.acked': { digest: string; status: 'created' | 'existing' };
  /** The coordinator refused an answer for good (a 4xx other than 408/429): kept as a dead letter with its code. */
  'outbox.dead': { digest: string; code: string };
  /** An answer written to the spool folder's out/ (air-gapped transport): the file is complete and renamed into place. */
  'outbox.spooled': { digest: string };
  /**
   * A recurring capsule's slots passed while the runner could not run them (it was down, or a run of the same
   * schedule was still going): how many, the first and the last (RFC 3339), and what the policy did about them.
   */
  'schedule.missed': { capsuleId: string; manifestDigest: string; count: number; first: string; last: string; catchUp: ScheduleCatchUp };
  /** A recurring capsule stopped firing: `expired`, `replaced` (a newer capsule with its id), or a reason code. */
  'schedule.ended': { capsuleId: string; manifestDigest: string; reason: string };
  /** The pinned trust document moved from one version to the next (`source`: `file` or `coordinator`). */
  'trust.updated': { fromVersion: number; toVersion: number; trustDigest: string; source: string };
  /** A trust document offered as an update was refused with its code; the pin did not move. */
  'trust.refused': { code: string; trustDigest: string; source: string; toVersion?: number };
  /**
   * Governed remediation (runner/remediate/). A remediate capsule's change was applied to a scratch copy of
   * the change target: the digests of the target before (`preState`) and of the copy after (`postState`), and
   * the change digest binding target, pre-state, change, policy and capsule. Before its staged validation runs.
   */
  'change.staged': { runId: string; changeDigest: string; target: string; preState: string; postState: string };
  /** The proposal's evidence is signed: its verdict (of the staged validation) and the approvals it `required`. */
  'change.proposed': { runId: string; changeDigest: string; evidenceDigest: string; verdict: Verdict; required: number };
  /** A signed approval (by the digest of its envelope's bytes) counts toward the change: who, and what they decided. */
  'approval.accepted': { changeDigest: string; digest: string; approver: string; decision: 'approve' | 'reject' };
  /** An approval was refused with its code (another change, expired, not an approver, the proposer...). */
  'approval.refused': { digest: string; code: string; changeDigest?: string; approver?: string };
  /**
   * The change is authorized and about to be written to the real target: the digests of the approvals it
   * relies on (none when the policy lets it apply on its own). The record's `at` is the decision time.
   */
  'change.applying': { changeDigest: string; approvals: string[] };
  /** Every file of the change is written; `targetDigest` is the real target's digest now (the post-state). */
  'change.applied': { changeDigest: string; targetDigest: string };
  /** The post-apply validation (its run) and the operator's health check start. */
  'change.verifying': { changeDigest: string; runId: string };
  /** The post-apply validation and the health check passed: the change stays. */
  'change.verified': { changeDigest: string; runId: string };
  /** Why the change is being undone (a failed validation or health check, an interrupted apply), before a file is restored. */
  'change.rolling-back': { changeDigest: string; code: string };
  /** The pre-state is restored and its digest checked equal to the pre-state digest. */
  'change.rolled-back': { changeDigest: string; code: string; targetDigest: string };
  /** The restored target's digest is not the pre-state digest: an operator must look (status alarms). */
  'change.rollback-failed': { changeDigest: string; code: string; targetDigest: string };
  /** The change will never be applied: stale target, changed policy, a veto, failed staged validation, expiry. */
  'change.refused': { changeDigest: string; code: string };
}

export type RecordKind = keyof RecordBodies;
export type RecordBody<K extends RecordKind = RecordKind> = RecordBodies[K];

type FieldSpec<B> = { readonly required: readonly (keyof B & string)[]; readonly optional: readonly (keyof B & string)[] };
type RequiredKeys<B> = { [F in keyof B]-?: object extends Pick<B, F> ? never : F }[keyof B];
type OptionalKeys<B> = Exclude<keyof B, RequiredKeys<B>>;
type AssertNever<T extends never> = T;

/** The members each kind's body has: required ones always, optional ones when they apply. Nothing else. */
export const RECORD_FIELDS = {
  'capsule.accepted': { required: ['capsuleId', 'capsuleKind', 'manifestDigest', 'signers'], optional: ['nonce', 'fileDigest'] },
  'capsule.rejected': { required: ['code'], optional: ['fileDigest', 'fileSize', 'capsuleId', 'manifestDigest'] },
  'run.started': { required: ['runId', 'capsuleId', 'manifestDigest', 'isolation'], optional: ['scheduledFor', 'resources'] },
  'step.finished': {
    required: ['runId', 'name', 'status', 'exitCode', 'signal', 'timedOut', 'durationMs'],
    optional: ['spawnFailure', 'limit', 'limitInferred', 'stdout', 'stderr'],
  },
  'run.finished': { required: ['runId', 'verdict'], optional: [] },
  'run.aborted': { required: ['runId', 'reason'], optional: [] },
  'evidence.signed': { required: ['runId', 'evidenceDigest'], optional: [] },
  'workspace.not-removed': { required: ['runId', 'code'], optional: ['errno'] },
  'outbox.acked': { required: ['digest', 'status'], optional: [] },
  'outbox.dead': { required: ['digest', 'code'], optional: [] },
  'outbox.spooled': { required: ['digest'], optional: [] },
  'schedule.missed': { required: ['capsuleId', 'manifestDigest', 'count', 'first', 'last', 'catchUp'], optional: [] },
  'schedule.ended': { required: ['capsuleId', 'manifestDigest', 'reason'], optional: [] },
  'trust.updated': { required: ['fromVersion', 'toVersion', 'trustDigest', 'source'], optional: [] },
  'trust.refused': { required: ['code', 'trustDigest', 'source'], optional: ['toVersion'] },
  'change.staged': { required: ['runId', 'changeDigest', 'target', 'preState', 'postState'], optional: [] },
  'change.proposed': { required: ['runId', 'changeDigest', 'evidenceDigest', 'verdict', 'required'], optional: [] },
  'approval.accepted': { required: ['changeDigest', 'digest', 'approver', 'decision'], optional: [] },
  'approval.refused': { required: ['digest', 'code'], optional: ['changeDigest', 'approver'] },
  'change.applying': { required: ['changeDigest', 'approvals'], optional: [] },
  'change.applied': { required: ['changeDigest', 'targetDigest'], optional: [] },
  'change.verifying': { required: ['changeDigest', 'runId'], optional: [] },
  'change.verified': { required: ['changeDigest', 'runId'], optional: [] },
  'change.rolling-back': { required: ['changeDigest', 'code'], optional: [] },
  'change.rolled-back': { required: ['changeDigest', 'code', 'targetDigest'], optional: [] },
  'change.rollback-failed': { required: ['changeDigest', 'code', 'targetDigest'], optional: [] },
  'change.refused': { required: ['changeDigest', 'code'], optional: [] },
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
  return Buffer.from(
    encodeKnownMembers(kind, body as Record<string, unknown>, seq, at) ?? toCanonicalJson({ ...body, v: RECORD_VERSION, seq, kind, at }),
    'utf8',
  );
}

/** Per kind, every member a leaf may have, in canonical order, with its `"name":` prefix. */
const CANONICAL_MEMBERS: ReadonlyMap<RecordKind, readonly { name: string; prefix: string }[]> = new Map(
  RECORD_KINDS.map((kind) => [
    kind,
    [...RESERVED_FIELDS, ...RECORD_FIELDS[kind].required, ...RECORD_FIELDS[kind].optional]
      .sort()
      .map((name) => ({ name, prefix: `${JSON.stringify(name)}:` })),
  ]),
);

/**
 * The canonical JSON of a record whose members are all known for its kind, written in the kind's
 * precomputed member order: the same bytes as toCanonicalJson, without copying and sorting the record for
 * every decision. Undefined (a body with members its kind does not have) leaves it to toCanonicalJson.
 */
function encodeKnownMembers(kind: RecordKind, body: Record<string, unknown>, seq: number, at: string): string | undefined {
  const members = CANONICAL_MEMBERS.get(kind);
  if (members === undefined) return undefined;
  let out = '{';
  let bodyMembers = 0;
  for (const { name, prefix } of members) {
    let value: unknown;
    switch (name) {
      case 'v':
        value = RECORD_VERSION;
        break;
      case 'seq':
        value = seq;
        break;
      case 'kind':
        value = kind;
        break;
      case 'at':
        value = at;
        break;
      default:
        if (!Object.hasOwn(body, name)) continue;
        bodyMembers += 1;
        value = body[name];
    }
    if (value === undefined) continue;
    out += `${out.length > 1 ? ',' : ''}${prefix}${toCanonicalJson(value)}`;
  }
  return bodyMembers === Object.keys(body).length ? `${out}}` : undefined;
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
    // JSON.parse (last duplicate wins) is safe here and faster than runner/core/json.ts: a leaf must be
    // byte-equal to the canonical encoding of what was parsed, and a leaf with a repeated member name never
    // is (the fast scan needs strictly increasing names; the re-encoding below writes each name once).
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
    if (!known.has(field)) throw invalid(`a ${kind} record has no member "${toPrintableExcerpt(field)}".`, { field });
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
 * subset of what toCanonicalJson writes (keys sorted by code units, strings and numbers as JSON.stringify
 * writes them):
 *   - no whitespace; objects, arrays, `true`, `false`, `null`;
 *   - integers of at most 15 digits (so safe), without a leading zero, never `-0`;
 *   - strings of raw characters other than `"`, `\` and controls (UTF-8, checked once for the whole leaf
 *     when a byte is not ASCII), and exactly the escapes JSON.stringify writes: `\"`, `\\`, `\b`, `\f`,
 *     `\n`, `\r`, `\t`, and `\u00xx` (lower-case hex) for the other controls;
 *   - keys of printable ASCII without `"` or `\`, strictly increasing (sorted, no duplicates), neither
 *     starting with a digit nor `__proto__`: where those go depends on the writer (JSON.stringify puts
 *     array-index keys first; copying into a plain object drops `__proto__`), so the recogniser leaves them
 *     to the re-encoding, whatever toCanonicalJson does with them;
 *   - nesting at most MAX_FAST_DEPTH deep;
 * and at the top level the members of parseRecordLeaf: `v` 1, `seq` (= expectedSeq when given), a known
 * `kind` with exactly its own members, all its required ones, and an `at` timestamp. Anything else, even
 * canonical, returns undefined. Exported for its tests.
 */
export function scanRecordLeaf(leaf: Uint8Array, expectedSeq?: number): RecordKind | undefined {
  b = leaf;
  end = leaf.length;
  p = 0;
  high = false;
  try {
    return scanRecord(expectedSeq);
  } finally {
    b = EMPTY;
  }
}

const MAX_FAST_DEPTH = 16;

// The scan state: one leaf at a time (the scan is synchronous and calls nothing that could re-enter).
const EMPTY = new Uint8Array(0);
let b: Uint8Array = EMPTY;
let end = 0;
let p = 0;
let high = false;

// Byte classes inside a string.
const PLAIN = 0;
const QUOTE = 1;
const BACKSLASH = 2;
const HIGH = 3;
const CONTROL = 4;
const STRING_CLASS = new Uint8Array(256).map((_, c) => (c === 0x22 ? QUOTE : c === 0x5c ? BACKSLASH : c < 0x20 ? CONTROL : c >= 0x80 ? HIGH : PLAIN));
/** Bytes a key may hold: printable ASCII but `"` and `\`. */
const KEY_BYTE = new Uint8Array(256).map((_, c) => (c >= 0x20 && c <= 0x7e && c !== 0x22 && c !== 0x5c ? 1 : 0));
/** After a backslash: 1 for the short escapes JSON.stringify writes (" \ b f n r t), 2 for `u`. */
const ESCAPE = new Uint8Array(256).map((_, c) => ('"\\bfnrt'.includes(String.fromCharCode(c)) ? 1 : c === 0x75 ? 2 : 0));
/** The controls JSON.stringify writes as \u00xx: every one below 0x20 without a short escape. */
const U_ESCAPED = new Uint8Array(32).map((_, c) => ([0x08, 0x09, 0x0a, 0x0c, 0x0d].includes(c) ? 0 : 1));

/**
 * Every member name any kind knows, numbered in code-unit order (so that keys increase exactly when their
 * numbers do) for bit masks, and found by length and first byte. Masks are pairs of 31-bit integers (ids
 * 0-30 in the low one, 31-61 in the high one): a name numbered beyond that is not recognised, and its
 * records take the slow path (the tests of every kind would show it).
 */
const WORD_BITS = 31;
const MASK_BITS = 2 * WORD_BITS;
const FIELD_NAMES = [...new Set(RECORD_KINDS.flatMap((kind) => [...KNOWN_FIELDS.get(kind)!]))].sort();
const FIELD_BYTES = FIELD_NAMES.map((name) => Buffer.from(name, 'latin1'));
const MAX_FIELD_LENGTH = 31;
const PROTO = Buffer.from('__proto__', 'latin1');
/**
 * The names by length and first byte: FIELD_FIRST[length * 128 + first byte] is the first id of that
 * length and first byte (-1 for none), FIELD_NEXT[id] the next one (-1 at the end).
 */
const FIELD_FIRST = new Int16Array((MAX_FIELD_LENGTH + 1) * 128).fill(-1);
const FIELD_NEXT = new Int16Array(FIELD_NAMES.length).fill(-1);
FIELD_BYTES.forEach((bytes, id) => {
  // Names whose place depends on the writer (array indices, __proto__: see scanRecordLeaf) are never recognised.
  const arrayIndexLike = bytes[0]! >= 0x30 && bytes[0]! <= 0x39;
  if (id >= MASK_BITS || bytes.length === 0 || bytes.length > MAX_FIELD_LENGTH || arrayIndexLike || bytes.equals(PROTO)) return;
  if (bytes[0]! > 0x7f) return;
  const slot = bytes.length * 128 + bytes[0]!;
  FIELD_NEXT[id] = FIELD_FIRST[slot]!;
  FIELD_FIRST[slot] = id;
});
const fieldId = (name: string): number => FIELD_NAMES.indexOf(name);
const lowBit = (id: number): number => (id >= 0 && id < WORD_BITS ? 1 << id : 0);
const highBit = (id: number): number => (id >= WORD_BITS && id < MASK_BITS ? 1 << (id - WORD_BITS) : 0);
const ID_V = fieldId('v');
const ID_SEQ = fieldId('seq');
const ID_KIND = fieldId('kind');
const ID_AT = fieldId('at');
interface KindMasks {
  readonly kind: RecordKind;
  readonly bytes: Buffer;
  readonly knownLow: number;
  readonly knownHigh: number;
  readonly requiredLow: number;
  readonly requiredHigh: number;
  /** Whether every required member (log fields included) is numbered within the masks. */
  readonly complete: boolean;
}
const KIND_MASKS: readonly KindMasks[] = RECORD_KINDS.map((kind) => {
  const required = [...RESERVED_FIELDS, ...RECORD_FIELDS[kind].required];
  return {
    kind,
    bytes: Buffer.from(kind, 'latin1'),
    knownLow: [...KNOWN_FIELDS.get(kind)!].reduce((mask, name) => mask | lowBit(fieldId(name)), 0),
    knownHigh: [...KNOWN_FIELDS.get(kind)!].reduce((mask, name) => mask | highBit(fieldId(name)), 0),
    requiredLow: required.reduce((mask, name) => mask | lowBit(fieldId(name)), 0),
    requiredHigh: required.reduce((mask, name) => mask | highBit(fieldId(name)), 0),
    complete: required.every((name) => fieldId(name) < MASK_BITS),
  };
});
const TRUE = Buffer.from('true', 'latin1');
const FALSE = Buffer.from('false', 'latin1');
const NULL = Buffer.from('null', 'latin1');
/** The shape of `at` (RFC 3339 UTC with milliseconds): 0 stands for a digit. */
const AT_SHAPE = Uint8Array.from('0000-00-00T00:00:00.000Z', (ch) => (ch === '0' ? 0 : ch.charCodeAt(0)));

/** The top-level object; p ends at the end of the leaf. */
function scanRecord(expectedSeq: number | undefined): RecordKind | undefined {
  if (end < 2 || b[0] !== 0x7b || b[1] === 0x7d) return undefined;
  p = 1;
  let seenLow = 0; // lowBit(id) of every member seen
  let seenHigh = 0; // highBit(id) of every member seen
  let previous = -1; // the id of the previous key: ids increase as keys do
  let seq = -1;
  let kindStart = -1;
  let kindEnd = -1;
  for (;;) {
    // A member name: one of FIELD_NAMES, after the previous one.
    if (b[p] !== 0x22) return undefined;
    const keyStart = p + 1;
    const close = indexOfQuote(keyStart, keyStart + MAX_FIELD_LENGTH + 1);
    if (close < 0 || b[close + 1] !== 0x3a) return undefined;
    const id = fieldAt(keyStart, close);
    if (id <= previous) return undefined;
    previous = id;
    if (id < WORD_BITS) seenLow |= 1 << id;
    else seenHigh |= 1 << (id - WORD_BITS);
    p = close + 2;
    const valueStart = p;
    if (!scanValue(1)) return undefined;
    if (id === ID_SEQ) {
      seq = digitsAt(valueStart, p);
      if (seq < 0) return undefined;
    } else if (id === ID_V) {
      if (p - valueStart !== 1 || b[valueStart] !== 0x31) return undefined;
    } else if (id === ID_KIND) {
      if (b[valueStart] !== 0x22) return undefined;
      kindStart = valueStart + 1;
      kindEnd = p - 1;
    } else if (id === ID_AT) {
      if (!isTimestampAt(valueStart, p)) return undefined;
    }
    const c = b[p];
    if (c === 0x2c) {
      p += 1;
      continue;
    }
    if (c !== 0x7d || p + 1 !== end) return undefined;
    break;
  }
  if (expectedSeq !== undefined && seq !== expectedSeq) return undefined;
  if (kindStart < 0) return undefined;
  const masks = kindAt(kindStart, kindEnd);
  if (masks === undefined || !masks.complete) return undefined;
  // Only the kind's own members, and all its required ones (the four log fields among them).
  if ((seenLow & ~masks.knownLow) !== 0 || (seenHigh & ~masks.knownHigh) !== 0) return undefined;
  if ((masks.requiredLow & ~seenLow) !== 0 || (masks.requiredHigh & ~seenHigh) !== 0) return undefined;
  if (high && !isUtf8(b)) return undefined;
  return masks.kind;
}

/** The first `"` in [from, limit) (limit capped at the end), or -1. */
function indexOfQuote(from: number, limit: number): number {
  const bytes = b;
  const stop = limit < end ? limit : end;
  for (let q = from; q < stop; q++) if (bytes[q] === 0x22) return q;
  return -1;
}

function scanValue(depth: number): boolean {
  const c = b[p];
  if (c === 0x22) return scanString();
  if (c === 0x7b) return depth < MAX_FAST_DEPTH && scanObject(depth + 1);
  if (c === 0x5b) return depth < MAX_FAST_DEPTH && scanArray(depth + 1);
  if (c === 0x74) return scanWord(TRUE);
  if (c === 0x66) return scanWord(FALSE);
  if (c === 0x6e) return scanWord(NULL);
  return scanNumber();
}

/** A nested object: keys strictly increasing, checked byte by byte. */
function scanObject(depth: number): boolean {
  const bytes = b;
  const stop = end;
  const keyBytes = KEY_BYTE;
  p += 1;
  if (bytes[p] === 0x7d) {
    p += 1;
    return true;
  }
  let previousStart = -1;
  let previousEnd = -1;
  for (;;) {
    if (bytes[p] !== 0x22) return false;
    const start = p + 1;
    let q = start;
    const first = bytes[q];
    if (first !== undefined && first >= 0x30 && first <= 0x39) return false; // an array index, or like one
    while (q < stop && keyBytes[bytes[q]!] === 1) q += 1;
    if (q + 1 >= stop || bytes[q] !== 0x22 || bytes[q + 1] !== 0x3a) return false;
    if (q - start === PROTO.length && equalAt(start, PROTO)) return false;
    if (previousStart >= 0 && compareRanges(previousStart, previousEnd, start, q) >= 0) return false;
    previousStart = start;
    previousEnd = q;
    p = q + 2;
    if (!scanValue(depth)) return false;
    const c = bytes[p];
    p += 1;
    if (c === 0x2c) continue;
    return c === 0x7d;
  }
}

function scanArray(depth: number): boolean {
  p += 1;
  if (b[p] === 0x5d) {
    p += 1;
    return true;
  }
  for (;;) {
    if (!scanValue(depth)) return false;
    const c = b[p];
    p += 1;
    if (c === 0x2c) continue;
    return c === 0x5d;
  }
}

function scanString(): boolean {
  const bytes = b;
  const stop = end;
  const classes = STRING_CLASS;
  let q = p + 1;
  while (q < stop) {
    const k = classes[bytes[q]!]!;
    if (k === PLAIN) {
      q += 1;
    } else if (k === QUOTE) {
      p = q + 1;
      return true;
    } else if (k === HIGH) {
      high = true;
      q += 1;
    } else if (k === BACKSLASH) {
      const e = ESCAPE[bytes[q + 1] ?? 0]!;
      if (e === 1) {
        q += 2;
      } else if (e === 2 && bytes[q + 2] === 0x30 && bytes[q + 3] === 0x30) {
        // \u00xx, lower-case hex, for a control without a short escape: what JSON.stringify writes.
        const hi = bytes[q + 4];
        const lo = hexDigit(bytes[q + 5]);
        if ((hi !== 0x30 && hi !== 0x31) || lo < 0 || U_ESCAPED[(hi - 0x30) * 16 + lo] !== 1) return false;
        q += 6;
      } else {
        return false;
      }
    } else {
      return false; // a raw control: not JSON
    }
  }
  return false;
}

function scanNumber(): boolean {
  const bytes = b;
  const stop = end;
  let q = p;
  if (bytes[q] === 0x2d) q += 1;
  const first = q;
  const c = bytes[q];
  if (c === 0x30) {
    if (first !== p) return false; // -0: JSON.stringify writes 0
    q += 1;
  } else {
    if (c === undefined || c < 0x31 || c > 0x39) return false;
    while (q < stop && bytes[q]! >= 0x30 && bytes[q]! <= 0x39) q += 1;
    if (q - first > 15) return false;
  }
  const next = bytes[q];
  if (next !== undefined && ((next >= 0x30 && next <= 0x39) || next === 0x2e || next === 0x65 || next === 0x45)) return false;
  p = q;
  return true;
}

function scanWord(word: Uint8Array): boolean {
  if (p + word.length > end || !equalAt(p, word)) return false;
  p += word.length;
  return true;
}

/** The id of the member name in [start, close), or -1 when it is not one of FIELD_NAMES. */
function fieldAt(start: number, close: number): number {
  const length = close - start;
  const first = b[start]!;
  if (length === 0 || length > MAX_FIELD_LENGTH || first > 0x7f) return -1;
  for (let id = FIELD_FIRST[length * 128 + first]!; id >= 0; id = FIELD_NEXT[id]!) if (equalAt(start, FIELD_BYTES[id]!)) return id;
  return -1;
}

/** The value of the token in [start, stop) if it is a non-negative integer (scanValue checked its form), or -1. */
function digitsAt(start: number, stop: number): number {
  const bytes = b;
  if (stop <= start) return -1;
  let n = 0;
  for (let q = start; q < stop; q++) {
    const d = bytes[q]! - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** `"YYYY-MM-DDTHH:MM:SS.mmmZ"` in [start, stop), quotes included: the AT pattern. */
function isTimestampAt(start: number, stop: number): boolean {
  const bytes = b;
  const shape = AT_SHAPE;
  if (stop - start !== shape.length + 2) return false;
  for (let i = 0; i < shape.length; i++) {
    const c = bytes[start + 1 + i]!;
    const want = shape[i]!;
    if (want === 0 ? c < 0x30 || c > 0x39 : c !== want) return false;
  }
  return true;
}

function kindAt(start: number, stop: number): KindMasks | undefined {
  for (const masks of KIND_MASKS) {
    if (masks.bytes.length === stop - start && equalAt(start, masks.bytes)) return masks;
  }
  return undefined;
}

function equalAt(at: number, word: Uint8Array): boolean {
  const bytes = b;
  for (let i = 0; i < word.length; i++) if (bytes[at + i] !== word[i]) return false;
  return true;
}

function compareRanges(aStart: number, aEnd: number, bStart: number, bEnd: number): number {
  const bytes = b;
  const n = Math.min(aEnd - aStart, bEnd - bStart);
  for (let i = 0; i < n; i++) {
    const d = bytes[aStart + i]! - bytes[bStart + i]!;
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
