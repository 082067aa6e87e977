/**
 * The record format (runner/log/record.ts): every kind encodes and parses back, every check of
 * parseRecordLeaf rejects with LOG_LEAF_INVALID and its sentence, and the fast recogniser behind it
 * (scanRecordLeaf) never accepts a leaf that the plain check (JSON.parse, the member checks, re-encoding and
 * comparing bytes: `referenceParse` below, the parser as it was before the fast path) rejects.
 */
import { toPrintableExcerpt } from '../../../runner/core/printable.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toCanonicalJson } from '../../../runner/core/canonical-json.js';
import { LogError } from '../../../runner/log/errors.js';
import {
  encodeRecordLeaf,
  parseRecordLeaf,
  RECORD_FIELDS,
  RECORD_KINDS,
  RESERVED_FIELDS,
  scanRecordLeaf,
  verifyRecordLeaf,
  type RecordBodies,
  type RecordKind,
} from '../../../runner/log/record.js';

const AT = '2025-06-30T12:34:56.789Z';
const DIGEST = `sha256:${'ab'.repeat(32)}`;
const RUN_ID = '0f0e0d0c-0b0a-4908-8706-050403020100';
const stream = { digest: DIGEST, size: 120, totalSize: 4096, truncated: true };

/** One body of every kind with only its required members, and one with every optional member too. */
const BODIES: { [K in RecordKind]: [RecordBodies[K], RecordBodies[K]] } = {
  'capsule.accepted': [
    { capsuleId: 'nightly-check', capsuleKind: 'validate', manifestDigest: DIGEST, signers: ['k1', 'k2'] },
    { capsuleId: 'nightly-check', capsuleKind: 'validate', manifestDigest: DIGEST, signers: [], nonce: 'n-0001', fileDigest: DIGEST },
  ],
  'capsule.rejected': [
    { code: 'CAPSULE_SIGNATURE_THRESHOLD' },
    { code: 'CAPSULE_TOO_LARGE', fileDigest: DIGEST, fileSize: 1_048_577, capsuleId: 'c', manifestDigest: DIGEST },
  ],
  'run.started': [
    { runId: RUN_ID, capsuleId: 'nightly-check', manifestDigest: DIGEST, isolation: 'bwrap' },
    { runId: RUN_ID, capsuleId: 'nightly-check', manifestDigest: DIGEST, isolation: 'none', scheduledFor: AT, resources: ['ledger-db', 'extract'] },
  ],
  'step.finished': [
    { runId: RUN_ID, name: 'unit tests', status: 'succeeded', exitCode: 0, signal: null, timedOut: false, durationMs: 1234 },
    {
      runId: RUN_ID,
      name: 'étape « lente » ✓',
      status: 'timed-out',
      exitCode: null,
      signal: 'SIGKILL',
      timedOut: true,
      durationMs: 60_000,
      spawnFailure: 'not-found',
      limit: 'timeout',
      stdout: stream,
      stderr: { ...stream, truncated: false },
    },
  ],
  'run.finished': [
    { runId: RUN_ID, verdict: 'pass' },
    { runId: RUN_ID, verdict: 'error' },
  ],
  'run.aborted': [
    { runId: RUN_ID, reason: 'EXEC_SANDBOX_UNAVAILABLE' },
    { runId: RUN_ID, reason: 'a reason with "quotes", a \\ and a\ttab' },
  ],
  'evidence.signed': [
    { runId: RUN_ID, evidenceDigest: DIGEST },
    { runId: RUN_ID, evidenceDigest: DIGEST },
  ],
  'workspace.not-removed': [
    { runId: RUN_ID, code: 'EXEC_WORKSPACE_NOT_REMOVED' },
    { runId: RUN_ID, code: 'EXEC_WORKSPACE_NOT_REMOVED', errno: 'EBUSY' },
  ],
  'outbox.acked': [
    { digest: DIGEST, status: 'created' },
    { digest: DIGEST, status: 'existing' },
  ],
  'outbox.dead': [
    { digest: DIGEST, code: 'BUNDLE_SIGNATURE' },
    { digest: DIGEST, code: 'HTTP_410' },
  ],
  'outbox.spooled': [{ digest: DIGEST }, { digest: DIGEST }],
  'schedule.missed': [
    { capsuleId: 'nightly-check', manifestDigest: DIGEST, count: 3, first: AT, last: AT, catchUp: 'skip' },
    { capsuleId: 'nightly-check', manifestDigest: DIGEST, count: 1, first: AT, last: AT, catchUp: 'latest-once' },
  ],
  'schedule.ended': [
    { capsuleId: 'nightly-check', manifestDigest: DIGEST, reason: 'expired' },
    { capsuleId: 'nightly-check', manifestDigest: DIGEST, reason: 'replaced' },
  ],
  'trust.updated': [
    { fromVersion: 1, toVersion: 2, trustDigest: DIGEST, source: 'file' },
    { fromVersion: 7, toVersion: 8, trustDigest: DIGEST, source: 'coordinator' },
  ],
  'trust.refused': [
    { code: 'TRUST_ROLLBACK', trustDigest: DIGEST, source: 'file' },
    { code: 'TRUST_VERSION_SKIP', trustDigest: DIGEST, source: 'coordinator', toVersion: 4 },
  ],
  'change.staged': [
    { runId: RUN_ID, changeDigest: DIGEST, target: 'ledger-config', preState: DIGEST, postState: DIGEST },
    { runId: RUN_ID, changeDigest: DIGEST, target: 'payments.deploy', preState: DIGEST, postState: DIGEST },
  ],
  'change.proposed': [
    { runId: RUN_ID, changeDigest: DIGEST, evidenceDigest: DIGEST, verdict: 'pass', required: 2 },
    { runId: RUN_ID, changeDigest: DIGEST, evidenceDigest: DIGEST, verdict: 'fail', required: 0 },
  ],
  'approval.accepted': [
    { changeDigest: DIGEST, digest: DIGEST, approver: 'alice', decision: 'approve' },
    { changeDigest: DIGEST, digest: DIGEST, approver: 'bob@bank.example', decision: 'reject' },
  ],
  'approval.refused': [
    { digest: DIGEST, code: 'APPROVAL_EXPIRED' },
    { digest: DIGEST, code: 'APPROVAL_SELF', changeDigest: DIGEST, approver: 'carol' },
  ],
  'change.applying': [
    { changeDigest: DIGEST, approvals: [] },
    { changeDigest: DIGEST, approvals: [DIGEST, DIGEST] },
  ],
  'change.applied': [
    { changeDigest: DIGEST, targetDigest: DIGEST },
    { changeDigest: DIGEST, targetDigest: DIGEST },
  ],
  'change.verifying': [
    { changeDigest: DIGEST, runId: RUN_ID },
    { changeDigest: DIGEST, runId: RUN_ID },
  ],
  'change.verified': [
    { changeDigest: DIGEST, runId: RUN_ID },
    { changeDigest: DIGEST, runId: RUN_ID },
  ],
  'change.rolling-back': [
    { changeDigest: DIGEST, code: 'CHANGE_HEALTH_CHECK_FAILED' },
    { changeDigest: DIGEST, code: 'CHANGE_INTERRUPTED' },
  ],
  'change.rolled-back': [
    { changeDigest: DIGEST, code: 'CHANGE_HEALTH_CHECK_FAILED', targetDigest: DIGEST },
    { changeDigest: DIGEST, code: 'CHANGE_VALIDATION_FAILED', targetDigest: DIGEST },
  ],
  'change.rollback-failed': [
    { changeDigest: DIGEST, code: 'CHANGE_ROLLBACK_MISMATCH', targetDigest: DIGEST },
    { changeDigest: DIGEST, code: 'CHANGE_ROLLBACK_MISMATCH', targetDigest: DIGEST },
  ],
  'change.refused': [
    { changeDigest: DIGEST, code: 'CHANGE_STALE' },
    { changeDigest: DIGEST, code: 'CHANGE_VETOED' },
  ],
};

const leafOf = (text: string) => Buffer.from(text, 'utf8');
/** The leaf of a record of `kind` with the given members (log fields included), canonical. */
const canonicalLeaf = (members: Record<string, unknown>) => leafOf(toCanonicalJson(members));
const realMembers = (seq = 7): Record<string, unknown> => ({ ...BODIES['step.finished'][0], v: 1, seq, kind: 'step.finished', at: AT });

type Outcome = { ok: true; value: unknown } | { ok: false; code: string; message: string; details: Record<string, unknown> };

function outcomeOf(parse: () => unknown): Outcome {
  try {
    return { ok: true, value: parse() };
  } catch (err) {
    if (err instanceof LogError) return { ok: false, code: err.code, message: err.message, details: { ...err.details } };
    throw err;
  }
}

function rejectionOf(leaf: Uint8Array, expectedSeq?: number): LogError {
  try {
    parseRecordLeaf(leaf, expectedSeq);
  } catch (err) {
    if (err instanceof LogError) return err;
    throw err;
  }
  throw new Error('the leaf parsed');
}

/** parseRecordLeaf without its fast path: the slow checks alone, in the same order, with the same sentences. */
function referenceParse(leaf: Uint8Array, expectedSeq?: number): unknown {
  const fail = (sentence: string, details: Record<string, unknown> = {}) => new LogError('LOG_LEAF_INVALID', sentence, { sentence, ...details });
  const bytes = Buffer.from(leaf);
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw fail('the leaf is not JSON.');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw fail('the leaf is not a JSON object.');
  const record = value as Record<string, unknown>;
  if (expectedSeq !== undefined && record.seq !== expectedSeq) {
    throw fail(`the record's seq is ${JSON.stringify(record.seq)}, not its index ${expectedSeq}.`, { seq: record.seq });
  }
  if (!Number.isSafeInteger(record.seq) || (record.seq as number) < 0) throw fail("the record's seq is not a non-negative integer.");
  if (record.v !== 1) throw fail(`the record's version is ${JSON.stringify(record.v)}, not 1.`);
  if (typeof record.kind !== 'string' || !(RECORD_KINDS as string[]).includes(record.kind)) {
    throw fail(`the record's kind ${JSON.stringify(record.kind)} is not a known kind.`);
  }
  if (typeof record.at !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(record.at)) throw fail('the record has no time.');
  const kind = record.kind as RecordKind;
  const known = new Set<string>([...RESERVED_FIELDS, ...RECORD_FIELDS[kind].required, ...RECORD_FIELDS[kind].optional]);
  for (const field in record) if (!known.has(field)) throw fail(`a ${kind} record has no member "${toPrintableExcerpt(field)}".`, { field });
  for (const field of RECORD_FIELDS[kind].required) if (!(field in record)) throw fail(`the ${kind} record lacks "${field}".`, { field });
  let canonical: string;
  try {
    canonical = toCanonicalJson(record);
  } catch {
    throw fail('the record holds a number that is not a safe integer.');
  }
  if (!Buffer.from(canonical, 'utf8').equals(bytes)) throw fail('the leaf bytes are not the canonical encoding of the record.');
  const { v: _v, seq, kind: _kind, at, ...body } = record;
  return { v: 1, seq, kind, at, body };
}

/** parseRecordLeaf, verifyRecordLeaf and scanRecordLeaf agree with referenceParse on `leaf`. */
function expectAgreement(leaf: Uint8Array, expectedSeq?: number): Outcome {
  const reference = outcomeOf(() => referenceParse(leaf, expectedSeq));
  expect(outcomeOf(() => parseRecordLeaf(leaf, expectedSeq))).toEqual(reference);
  const verified = outcomeOf(() => verifyRecordLeaf(leaf, expectedSeq));
  if (reference.ok) expect(verified).toEqual({ ok: true, value: (reference.value as { kind: string }).kind });
  else expect(verified).toEqual(reference);
  const fast = scanRecordLeaf(leaf, expectedSeq);
  if (fast !== undefined) expect(reference).toMatchObject({ ok: true, value: { kind: fast } });
  return reference;
}

/** JSON with every object's keys in code-unit order, however JSON.stringify would order them. */
function naivelySorted(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(naivelySorted).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const object = value as Record<string, unknown>;
    return `{${Object.keys(object)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${naivelySorted(object[key])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

describe('record kinds', () => {
  it('lists every kind of RECORD_FIELDS, whose required and optional members never name a log field', () => {
    expect(RECORD_KINDS).toEqual(Object.keys(RECORD_FIELDS));
    expect(RECORD_KINDS).toEqual(Object.keys(BODIES));
    for (const kind of RECORD_KINDS) {
      const { required, optional } = RECORD_FIELDS[kind];
      for (const field of [...required, ...optional]) expect(RESERVED_FIELDS).not.toContain(field);
    }
  });
});

describe('encodeRecordLeaf and parseRecordLeaf', () => {
  describe.each(RECORD_KINDS)('for a %s record', (kind) => {
    it.each([0, 1])('parses back the body it encoded (variant %i), and the fast path takes it', (variant) => {
      const body = BODIES[kind][variant]!;
      const leaf = encodeRecordLeaf(kind, body as never, 41, AT);
      expect(leaf.toString('utf8')).toBe(toCanonicalJson({ ...body, v: 1, seq: 41, kind, at: AT }));
      expect(parseRecordLeaf(leaf, 41)).toEqual({ v: 1, seq: 41, kind, at: AT, body });
      expect(parseRecordLeaf(leaf)).toEqual({ v: 1, seq: 41, kind, at: AT, body });
      expect(verifyRecordLeaf(leaf, 41)).toBe(kind);
      expect(scanRecordLeaf(leaf, 41)).toBe(kind);
    });
  });

  it('encodes a leaf whose seq is 0 and one whose seq is the largest safe integer', () => {
    for (const seq of [0, Number.MAX_SAFE_INTEGER]) {
      const leaf = encodeRecordLeaf('run.finished', { runId: RUN_ID, verdict: 'fail' }, seq, AT);
      expect(parseRecordLeaf(leaf, seq).seq).toBe(seq);
    }
  });

  describe('when a body sets a log field', () => {
    it.each(RESERVED_FIELDS)('refuses to encode "%s" with LOG_LEAF_INVALID', (field) => {
      const body = { ...BODIES['run.finished'][0], [field]: 1 };
      expect(() => encodeRecordLeaf('run.finished', body, 1, AT)).toThrow(expect.objectContaining({ code: 'LOG_LEAF_INVALID', details: { field } }));
    });
  });
});

describe('parseRecordLeaf', () => {
  const real = canonicalLeaf(realMembers());
  const without = (field: string) => {
    const members = realMembers();
    delete members[field];
    return canonicalLeaf(members);
  };
  const cases: [string, Buffer, number | undefined, RegExp, Record<string, unknown>?][] = [
    ['not JSON', leafOf('step.finished 7'), 7, /^the leaf is not JSON\.$/],
    ['JSON with a trailing comma', leafOf(real.toString().replace(/}$/, ',}')), 7, /^the leaf is not JSON\.$/],
    ['an array', leafOf('[1,2]'), 7, /^the leaf is not a JSON object\.$/],
    ['a string', leafOf('"step.finished"'), 7, /^the leaf is not a JSON object\.$/],
    ['null', leafOf('null'), 7, /^the leaf is not a JSON object\.$/],
    ['another seq than its index', canonicalLeaf(realMembers(8)), 7, /^the record's seq is 8, not its index 7\.$/, { seq: 8 }],
    ['no seq', without('seq'), 7, /^the record's seq is undefined, not its index 7\.$/],
    ['a seq that is a string', canonicalLeaf({ ...realMembers(), seq: '7' }), undefined, /^the record's seq is not a non-negative integer\.$/],
    ['a negative seq', canonicalLeaf({ ...realMembers(), seq: -1 }), undefined, /^the record's seq is not a non-negative integer\.$/],
    ['another version', canonicalLeaf({ ...realMembers(), v: 2 }), 7, /^the record's version is 2, not 1\.$/],
    ['no version', without('v'), 7, /^the record's version is undefined, not 1\.$/],
    ['an unknown kind', canonicalLeaf({ ...realMembers(), kind: 'validate' }), 7, /^the record's kind "validate" is not a known kind\.$/],
    ['no kind', without('kind'), 7, /^the record's kind undefined is not a known kind\.$/],
    ['no time', without('at'), 7, /^the record has no time\.$/],
    ['a time without milliseconds', canonicalLeaf({ ...realMembers(), at: '2025-06-30T12:34:56Z' }), 7, /^the record has no time\.$/],
    [
      'a member of another kind',
      canonicalLeaf({ ...realMembers(), verdict: 'pass' }),
      7,
      /^a step\.finished record has no member "verdict"\.$/,
      { field: 'verdict' },
    ],
    ['an unknown member', canonicalLeaf({ ...realMembers(), note: 'x' }), 7, /^a step\.finished record has no member "note"\.$/, { field: 'note' }],
    ['a __proto__ member', leafOf(real.toString().replace('{', '{"__proto__":{},')), 7, /^a step\.finished record has no member "__proto__"\.$/],
    ['a required member missing', without('durationMs'), 7, /^the step\.finished record lacks "durationMs"\.$/, { field: 'durationMs' }],
    [
      'a fraction',
      leafOf(real.toString().replace('"durationMs":1234', '"durationMs":12.5')),
      7,
      /^the record holds a number that is not a safe integer\.$/,
    ],
    [
      'an exponent',
      leafOf(real.toString().replace('"durationMs":1234', '"durationMs":1e300')),
      7,
      /^the record holds a number that is not a safe integer\.$/,
    ],
    ['keys out of order', leafOf(JSON.stringify(realMembers())), 7, /^the leaf bytes are not the canonical encoding of the record\.$/],
    ['whitespace', leafOf(real.toString().replace(',"kind"', ', "kind"')), 7, /canonical encoding/],
    ['a trailing newline', leafOf(`${real.toString()}\n`), 7, /canonical encoding/],
    ['a duplicated member', leafOf(real.toString().replace('"name":"unit tests"', '"name":"x","name":"unit tests"')), 7, /canonical encoding/],
    ['an exponent written for an integer', leafOf(real.toString().replace('"durationMs":1234', '"durationMs":1.234e3')), 7, /canonical encoding/],
    ['a leading zero... written as -0', leafOf(real.toString().replace('"exitCode":0', '"exitCode":-0')), 7, /canonical encoding/],
    ['an escape JSON.stringify does not write', leafOf(real.toString().replace('unit tests', 'unit\\u0020tests')), 7, /canonical encoding/],
    ['an upper-case escape', leafOf(real.toString().replace('unit tests', 'unit\\u001Ftests')), 7, /canonical encoding/],
    ['an escaped slash', leafOf(real.toString().replace('unit tests', 'unit\\/tests')), 7, /canonical encoding/],
    [
      'a control escaped as \\u00xx where JSON.stringify writes \\n',
      leafOf(real.toString().replace('unit tests', 'unit\\u000atests')),
      7,
      /canonical encoding/,
    ],
    ['a duplicated nested member', leafOf(real.toString().replace('"timedOut"', '"stdout":{"a":1,"a":1},"timedOut"')), 7, /canonical encoding/],
    ['an array closed with a brace', leafOf(real.toString().replace('"timedOut"', '"stdout":[1,2},"timedOut"')), 7, /^the leaf is not JSON\.$/],
    ['a byte that is not UTF-8', Buffer.concat([real.subarray(0, 20), Buffer.from([0xc3]), real.subarray(20)]), 7, /./],
    ['a byte-order mark', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), real]), 7, /^the leaf is not JSON\.$/],
  ];
  it.each(cases)('rejects a leaf with %s with LOG_LEAF_INVALID and the sentence of that check', (_what, leaf, seq, sentence, details) => {
    const err = rejectionOf(leaf, seq);
    expect(err.code).toBe('LOG_LEAF_INVALID');
    expect(err.message).toMatch(sentence);
    expect(err.details.sentence).toBe(err.message);
    if (details) expect(err.details).toMatchObject(details);
    expectAgreement(leaf, seq);
    expect(scanRecordLeaf(leaf, seq)).toBeUndefined();
  });

  it('takes canonical JSON the fast path leaves to the slow one: escapes of lone surrogates', () => {
    const body = { runId: RUN_ID, reason: 'x\ud800y' };
    const leaf = encodeRecordLeaf('run.aborted', body, 3, AT);
    expect(leaf.toString()).toContain('\\ud800');
    expect(scanRecordLeaf(leaf, 3)).toBeUndefined();
    expect(parseRecordLeaf(leaf, 3).body).toEqual(body);
    expect(verifyRecordLeaf(leaf, 3)).toBe('run.aborted');
  });

  // Keys whose place in the output depends on how the writer orders keys beyond the sort (JSON.stringify
  // puts array-index keys first) or treats __proto__: the fast path never decides them, and the answer is
  // whatever toCanonicalJson writes.
  it.each([
    ['array-index keys', '{"10":1,"9":2}'],
    ['array-index keys in numeric order', '{"9":2,"10":1}'],
    ['an array-index key after a key that sorts first', '{"!":1,"1":2}'],
    ['an array-index key first', '{"1":2,"!":1}'],
    ['a __proto__ member holding an object', '{"__proto__":{"a":1}}'],
    ['a __proto__ member holding a number', '{"__proto__":1}'],
  ])('leaves a nested object with %s to the plain check', (_what, nested) => {
    const leaf = leafOf(real.toString().replace('"timedOut"', `"stdout":${nested},"timedOut"`));
    expect(scanRecordLeaf(leaf, 7)).toBeUndefined();
    const outcome = expectAgreement(leaf, 7);
    const rewritten = toCanonicalJson(JSON.parse(leaf.toString()));
    expect(outcome.ok).toBe(rewritten === leaf.toString());
  });
});

describe('the fast path of parseRecordLeaf (scanRecordLeaf)', () => {
  // Strings the JSON writer escapes or keeps raw: quotes, backslashes, controls, DEL, non-ASCII, U+2028,
  // astral characters and lone surrogates.
  const text = fc.oneof(
    fc.string({
      unit: fc.constantFrom(
        'a',
        'Z',
        ' ',
        '"',
        '\\',
        '/',
        '\b',
        '\t',
        '\n',
        '\f',
        '\r',
        '\u0000',
        '\u001f',
        '\u007f',
        'é',
        '\u2028',
        '😀',
        '\ud800',
        '\udfff',
      ),
    }),
    fc.string({ unit: 'binary' }),
  );
  const key = fc.oneof(text, fc.constantFrom('__proto__', '0', '1', '10', '2', '', '-1', 'a', 'A', 'é', 'digest', 'size'));
  const json = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      text,
      fc.integer({ min: -1_000_000, max: 1_000_000 }),
      fc.constantFrom(0, -0, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 1e15, 999_999_999_999_999, 1.5, true, false, null),
      fc.array(tie('value'), { maxLength: 4 }),
      fc.dictionary(key, tie('value'), { maxKeys: 4 }),
    ),
  })).value;

  const rarely = <T>(arbitrary: fc.Arbitrary<T>) => fc.oneof({ arbitrary: fc.constant(null), weight: 6 }, { arbitrary, weight: 1 });
  const memberNames = [...new Set(RECORD_KINDS.flatMap((k) => [...RECORD_FIELDS[k].required, ...RECORD_FIELDS[k].optional])), 'x'];
  /**
   * A record of a random kind with random values: its required members and some optional ones, and now and
   * then a member too many (its kind's or not) or one missing.
   */
  const members = fc
    .record({
      kind: fc.constantFrom(...RECORD_KINDS),
      values: fc.array(json, { minLength: 16, maxLength: 16 }),
      optional: fc.array(fc.boolean(), { minLength: 16, maxLength: 16 }),
      extra: rarely(fc.tuple(fc.constantFrom(...memberNames, ...RESERVED_FIELDS), json)),
      drop: rarely(fc.constantFrom(...memberNames, ...RESERVED_FIELDS)),
      seq: fc.oneof({ arbitrary: fc.nat({ max: 20 }), weight: 6 }, { arbitrary: json, weight: 1 }),
    })
    .map(({ kind, values, optional, extra, drop, seq }) => {
      const { required, optional: optionalFields } = RECORD_FIELDS[kind];
      const value: Record<string, unknown> = { v: 1, seq, kind, at: AT };
      required.forEach((field, i) => (value[field] = values[i]));
      optionalFields.forEach((field, i) => {
        if (optional[i]) value[field] = values[8 + i];
      });
      if (extra) value[extra[0]] = extra[1];
      if (drop) delete value[drop];
      return value;
    });

  const writers: ((value: Record<string, unknown>) => string)[] = [
    (value) => {
      try {
        return toCanonicalJson(value);
      } catch {
        return JSON.stringify(value);
      }
    },
    (value) => JSON.stringify(value),
    (value) => JSON.stringify(value, null, 1),
    // Keys sorted by code units at every level, written in that order: what a recogniser that forgot how
    // JSON.stringify orders array-index keys, or that sortKeys drops __proto__, would take for canonical.
    naivelySorted,
  ];

  it('agrees with the plain check on random records written canonically or not', () => {
    fc.assert(
      fc.property(members, fc.nat({ max: writers.length - 1 }), fc.constantFrom('its own', 'another', 'none'), (value, writer, expected) => {
        const seq = expected === 'none' ? undefined : expected === 'its own' && typeof value.seq === 'number' ? value.seq : 21;
        expectAgreement(leafOf(writers[writer]!(value)), seq);
      }),
      { numRuns: 3000 },
    );
  });

  it('agrees with the plain check on real records with bytes changed, inserted or removed', () => {
    const leaves = RECORD_KINDS.flatMap((kind) => BODIES[kind].map((body) => encodeRecordLeaf(kind, body as never, 12, AT)));
    const bytes = fc.oneof(fc.constantFrom(...[...'{}[]",:\\/0123456789-.eEtfnu x'].map((c) => c.charCodeAt(0))), fc.integer({ min: 0, max: 255 }));
    const edit = fc.tuple(fc.constantFrom('set', 'insert', 'delete'), fc.nat(), bytes);
    fc.assert(
      fc.property(fc.nat({ max: leaves.length - 1 }), fc.array(edit, { minLength: 1, maxLength: 3 }), fc.boolean(), (which, edits, withSeq) => {
        const leaf = [...leaves[which]!];
        for (const [op, at, byte] of edits) {
          const position = at % (leaf.length + 1);
          if (op === 'set' && position < leaf.length) leaf[position] = byte;
          else if (op === 'insert') leaf.splice(position, 0, byte);
          else leaf.splice(position, 1);
        }
        expectAgreement(Buffer.from(leaf), withSeq ? 12 : undefined);
      }),
      { numRuns: 5000 },
    );
  });

  it('takes records with non-ASCII text, escapes and nested values', () => {
    const body = { ...BODIES['step.finished'][1], name: 'quote " backslash \\ tab \t control \u0001 DEL \u007f é 😀 \u2028' };
    const leaf = encodeRecordLeaf('step.finished', body, 5, AT);
    expect(scanRecordLeaf(leaf, 5)).toBe('step.finished');
    expect(scanRecordLeaf(leaf, 6)).toBeUndefined();
    expect(parseRecordLeaf(leaf, 5).body).toEqual(body);
  });
});

describe("encodeRecordLeaf, written in each kind's precomputed member order", () => {
  const stream = { digest: `sha256:${'a'.repeat(64)}`, size: 3, totalSize: 3, truncated: false };
  const bodies: Array<[string, Record<string, unknown>]> = [
    [
      'step.finished',
      {
        runId: 'r',
        name: 'é "q"',
        status: 'failed',
        exitCode: null,
        signal: 'SIGKILL',
        timedOut: true,
        durationMs: 5,
        limit: 'timeout',
        stdout: stream,
      },
    ],
    ['step.finished', { runId: 'r', name: 'n', status: 'succeeded', exitCode: 0, signal: null, timedOut: false, durationMs: 0, stderr: undefined }],
    ['capsule.rejected', { code: 'CAPSULE_EXPIRED', fileSize: 12 }],
    ['capsule.accepted', { capsuleId: 'c', capsuleKind: 'validate', manifestDigest: 'sha256:x', signers: ['k1', 'k2'] }],
  ];

  it.each(bodies)('gives the bytes toCanonicalJson gives for a %s record', (kind, body) => {
    const leaf = encodeRecordLeaf(kind as never, body as never, 9, '2026-12-01T00:00:00.000Z');
    expect(leaf.toString('utf8')).toBe(toCanonicalJson({ ...body, v: 1, seq: 9, kind, at: '2026-12-01T00:00:00.000Z' }));
  });

  it('falls back to the general encoder, with the same bytes, for a body with a member its kind does not have', () => {
    const body = { runId: 'r', verdict: 'pass', extra: { b: 1, a: 2 } };
    const leaf = encodeRecordLeaf('run.finished', body as never, 1, '2026-12-01T00:00:00.000Z');
    expect(leaf.toString('utf8')).toBe(toCanonicalJson({ ...body, v: 1, seq: 1, kind: 'run.finished', at: '2026-12-01T00:00:00.000Z' }));
  });

  it('agrees with toCanonicalJson on arbitrary step bodies', () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.option(fc.integer({ min: 0, max: 255 }), { nil: null }),
        fc.nat(),
        fc.boolean(),
        (name, exitCode, durationMs, timedOut) => {
          const body = { runId: 'r', name, status: 'failed', exitCode, signal: null, timedOut, durationMs };
          const leaf = encodeRecordLeaf('step.finished', body as never, 3, '2026-12-01T00:00:00.000Z');
          expect(leaf.toString('utf8')).toBe(toCanonicalJson({ ...body, v: 1, seq: 3, kind: 'step.finished', at: '2026-12-01T00:00:00.000Z' }));
        },
      ),
      { numRuns: 500 },
    );
  });
});
