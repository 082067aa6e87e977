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
  let canonical: string;
  try {
    canonical = toCanonicalJson(record);
  } catch {
    throw invalid('the record holds a number that is not a safe integer.');
  }
  if (Buffer.byteLength(canonical, 'utf8') !== bytes.length || !Buffer.from(canonical, 'utf8').equals(bytes)) {
    throw invalid('the leaf bytes are not the canonical encoding of the record.');
  }
  const { v: _v, seq, kind: _kind, at, ...body } = record;
  return { v: RECORD_VERSION, seq: seq as number, kind, at, body } as LogRecord;
}

function invalid(sentence: string, details: Record<string, unknown> = {}): LogError {
  return new LogError('LOG_LEAF_INVALID', sentence, { sentence, ...details });
}
