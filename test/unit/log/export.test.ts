import { isUtf8 } from 'node:buffer';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { runnerOrigin, signCheckpoint } from '../../../runner/log/checkpoint.js';
import { LogError } from '../../../runner/log/errors.js';
import {
  EXPORT_LIMITS,
  EXPORT_MEDIA_TYPE,
  ExportVerifier,
  formatCheckpointLine,
  formatExportHeader,
  formatLeafLine,
  splitLines,
  verifyExport,
  verifyExportBytes,
  type ExportReport,
} from '../../../runner/log/export.js';
import { hashLeaf, rootFromLeafHashes } from '../../../runner/log/merkle.js';
import { encodeRecordLeaf, parseRecordLeaf, type RecordBodies } from '../../../runner/log/record.js';
import { verifyTrustDocument, type Role } from '../../../runner/trust/trust.js';
import { makeTrustBody, signTrust } from '../../helpers/world.js';

const RUNNER_ID = 'runner-unit-1';
const root = PrivateKey.generate();
const runnerKey = PrivateKey.generate();
const outsider = PrivateKey.generate();
const origin = runnerOrigin(RUNNER_ID, runnerKey.keyid);

function trustEnrolling(entries: { name: string; key: PrivateKey; roles: Role[] }[]) {
  const body = makeTrustBody([{ name: 'root-1', key: root, roles: ['root'] }, ...entries]);
  return verifyTrustDocument(signTrust(body, [root]));
}
const trust = trustEnrolling([{ name: RUNNER_ID, key: runnerKey, roles: ['runner'] }]);

const AT = '2025-01-01T00:00:00.000Z';

/** A record leaf as runner/store/store.ts writes it (runner/log/record.ts encodes it). */
function recordLeaf(seq: number, extra: Partial<RecordBodies['step.finished']> = {}): Buffer {
  const body: RecordBodies['step.finished'] = {
    runId: `run-${seq >> 2}`,
    name: 'test',
    status: 'succeeded',
    exitCode: 0,
    signal: null,
    timedOut: false,
    durationMs: 40 + seq,
    ...extra,
  };
  return encodeRecordLeaf('step.finished', body, seq, AT);
}

function checkpointNote(leaves: readonly Buffer[], size: number, key: PrivateKey = runnerKey, rootHash?: Buffer): string {
  const hash = rootHash ?? rootFromLeafHashes(leaves.slice(0, size).map(hashLeaf));
  return signCheckpoint({ origin, size, rootHash: hash, extensions: [] }, origin, key);
}

/** The lines of an honest export of `leaves`, with checkpoints at the given sizes (the last one is always N). */
function exportLines(leaves: readonly Buffer[], checkpointSizes: readonly number[] = []): string[] {
  const sizes = [...new Set([...checkpointSizes, leaves.length])].sort((a, b) => a - b);
  const lines = [formatExportHeader({ origin, runner: { id: RUNNER_ID, keyid: runnerKey.keyid }, size: leaves.length })];
  const emit = (size: number) => sizes.filter((s) => s === size).forEach((s) => lines.push(formatCheckpointLine(checkpointNote(leaves, s))));
  emit(0);
  leaves.forEach((leaf, index) => {
    lines.push(formatLeafLine(index, leaf));
    emit(index + 1);
  });
  return lines;
}

const leavesOf = (n: number) => Array.from({ length: n }, (_, i) => recordLeaf(i));

async function failureOf(lines: Iterable<string> | AsyncIterable<string>, earlier?: string, trustDocument = trust): Promise<LogError> {
  const options = { trust: trustDocument, ...(earlier !== undefined ? { earlier } : {}) };
  let failure: LogError | undefined;
  try {
    await verifyExport(lines, options);
  } catch (err) {
    if (!(err instanceof LogError)) throw err;
    failure = err;
  }
  if (failure === undefined) throw new Error('the export verified');
  // The same lines as bytes (what `log verify` reads) fail the same way (lines given as an array).
  if (Array.isArray(lines)) {
    const bytes = Buffer.from(lines.map((line) => `${line}\n`).join(''));
    expect(await outcomeOf(verifyExportBytes([bytes], options))).toEqual(outcome(failure));
  }
  return failure;
}

/**
 * What a leaf line means, read the plain way (UTF-8, JSON.parse, each member, the base64 round trip, the
 * line as formatLeafLine writes it, parseRecordLeaf): the code and sentence of its failure, undefined if it
 * is a good leaf line for `index`, or 'not a leaf line' for a line this does not model (a checkpoint).
 */
function referenceLeafLine(
  bytes: Buffer,
  index: number,
  size: number,
): { code: string; sentence: string; leaf: boolean } | undefined | 'not a leaf line' {
  const failure = (code: string, sentence: string, leaf = true) => ({ code, sentence, leaf });
  if (!isUtf8(bytes)) return failure('LOG_EXPORT_INVALID', 'the line is not UTF-8.', false);
  const text = bytes.toString('utf8');
  let value: any;
  try {
    value = JSON.parse(text);
  } catch {
    return failure('LOG_EXPORT_INVALID', 'the line is not JSON.', false);
  }
  const isObject = typeof value === 'object' && value !== null && !Array.isArray(value);
  if (isObject && !('leaf' in value) && 'checkpoint' in value) return 'not a leaf line';
  if (!isObject || !('leaf' in value)) return failure('LOG_EXPORT_INVALID', 'the line is neither a leaf nor a checkpoint.', false);
  if (value.index !== index) return failure('LOG_EXPORT_INVALID', `the leaf is numbered ${JSON.stringify(value.index)}; leaf ${index} comes next.`);
  if (index >= size) return failure('LOG_EXPORT_INVALID', `the export holds more leaves than the ${size} its header announces.`);
  if (typeof value.leaf !== 'string') return failure('LOG_LEAF_INVALID', 'the leaf is not a base64 string.');
  const leaf = Buffer.from(value.leaf, 'base64');
  if (leaf.toString('base64') !== value.leaf) return failure('LOG_LEAF_INVALID', 'the leaf is not canonical standard base64.');
  if (text !== formatLeafLine(index, leaf))
    return failure('LOG_EXPORT_INVALID', 'the leaf line is not in its canonical form (members, order, spacing).');
  try {
    parseRecordLeaf(leaf, index);
  } catch (err) {
    if (err instanceof LogError) return failure(err.code, err.message);
    throw err;
  }
  return undefined;
}

type Outcome = { ok: true; report: ExportReport } | { ok: false; code: string; message: string; at: unknown[] };
// The code, the sentence and the place (the byte reader adds the cap to the details of an over-long line).
const outcome = (err: LogError): Outcome => ({
  ok: false,
  code: err.code,
  message: err.message,
  at: [err.details.line, err.details.index, err.details.size, err.details.earlier],
});
async function outcomeOf(verifying: Promise<ExportReport>): Promise<Outcome> {
  try {
    return { ok: true, report: await verifying };
  } catch (err) {
    if (err instanceof LogError) return outcome(err);
    throw err;
  }
}

const leafLineOf = (lines: string[], index: number) => lines.findIndex((l) => l.startsWith(`{"index":${index},`));

describe('log export format', () => {
  it('writes the header, leaf and checkpoint lines byte for byte as documented', () => {
    expect(formatExportHeader({ origin: 'o', runner: { id: 'r', keyid: 'k' }, size: 3 })).toBe(
      `{"mediaType":"${EXPORT_MEDIA_TYPE}","origin":"o","runner":{"id":"r","keyid":"k"},"size":3}`,
    );
    expect(formatLeafLine(7, Buffer.from('{"a":1}'))).toBe('{"index":7,"leaf":"eyJhIjoxfQ=="}');
    expect(formatCheckpointLine('o\n1\nAA==\n\n— o x\n')).toBe('{"checkpoint":"o\\n1\\nAA==\\n\\n— o x\\n"}');
  });

  it('refuses to write a leaf line no verifier would read', () => {
    const big = Buffer.alloc(EXPORT_LIMITS.maxLineBytes, 0x61);
    expect(() => formatLeafLine(0, big)).toThrow(expect.objectContaining({ code: 'LOG_EXPORT_LINE_TOO_LONG' }));
  });
});

describe('verifyExport', () => {
  describe('when the export is as the runner wrote it', () => {
    it('recomputes the root of every leaf and verifies every checkpoint', async () => {
      const leaves = leavesOf(37);
      const report: ExportReport = await verifyExport(exportLines(leaves, [0, 1, 5, 16, 20]), { trust });
      expect(report).toEqual({
        origin,
        runner: { id: RUNNER_ID, keyid: runnerKey.keyid },
        size: 37,
        root: rootFromLeafHashes(leaves.map(hashLeaf)).toString('base64'),
        checkpoints: 6,
        cosigned: [],
      });
    });

    it('verifies an empty log with its size-0 checkpoint', async () => {
      expect((await verifyExport(exportLines([]), { trust })).size).toBe(0);
    });

    it('reports consistency with an earlier checkpoint at any size up to the export', async () => {
      const leaves = leavesOf(23);
      for (const size of [0, 1, 7, 8, 22, 23]) {
        const report = await verifyExport(exportLines(leaves, [10]), { trust, earlier: checkpointNote(leaves, size) });
        expect(report.earlier).toEqual({ size, cosigned: [] });
      }
    });

    it('verifies whatever way the bytes are cut into chunks', async () => {
      const text = Buffer.from(`${exportLines(leavesOf(9), [4]).join('\n')}\n`);
      await fc.assert(
        fc.asyncProperty(fc.array(fc.integer({ min: 0, max: text.length }), { maxLength: 12 }), async (cuts) => {
          const points = [0, ...[...cuts].sort((a, b) => a - b), text.length];
          const chunks = points.slice(1).map((end, i) => text.subarray(points[i], end));
          expect((await verifyExport(splitLines(chunks), { trust })).size).toBe(9);
          expect((await verifyExportBytes(chunks, { trust })).size).toBe(9);
        }),
        { numRuns: 50 },
      );
    });
  });

  describe('when any byte of a leaf line is changed', () => {
    it('rejects it, and the byte reader (verifyExportBytes) fails exactly as the line reader (verifyExport)', async () => {
      const leaves = leavesOf(6);
      const lines = exportLines(leaves, [3]);
      const interesting = [...'{}[]",:\\/+=-_ \t0123456789AZaz'].map((c) => c.charCodeAt(0));
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: leaves.length - 1 }),
          fc.nat(),
          fc.oneof(fc.constantFrom(...interesting), fc.integer({ min: 0, max: 255 })),
          fc.boolean(),
          async (index, at, byte, chunked) => {
            const row = leafLineOf(lines, index);
            const line = Buffer.from(lines[row]!);
            const position = at % line.length;
            fc.pre(line[position] !== byte && byte !== 0x0a);
            line[position] = byte;
            const bytes = Buffer.concat(lines.flatMap((l, i) => [i === row ? line : Buffer.from(l, 'utf8'), Buffer.from('\n')]));
            const chunks = chunked ? Array.from({ length: Math.ceil(bytes.length / 97) }, (_, k) => bytes.subarray(k * 97, (k + 1) * 97)) : [bytes];
            const byLines = await outcomeOf(verifyExport(splitLines(chunks), { trust }));
            expect(byLines.ok).toBe(false);
            expect(await outcomeOf(verifyExportBytes(chunks, { trust }))).toEqual(byLines);
            // And as the plain reading of the line says: its own failure at its line, or a later one.
            const expected = referenceLeafLine(line, index, leaves.length);
            if (expected === 'not a leaf line') return;
            if (expected === undefined) expect(byLines).not.toMatchObject({ at: [row + 1] });
            else
              expect(byLines).toMatchObject({
                code: expected.code,
                message: `line ${row + 1}${expected.leaf ? ` (leaf ${index})` : ''}: ${expected.sentence}`,
              });
          },
        ),
        { numRuns: 600 },
      );
    });
  });

  describe("when the padding of a leaf's base64 is changed", () => {
    it('reads it as the line reader does: only the canonical encoding passes', async () => {
      // Leaves of every length modulo 3, so that the last quad carries no padding, one `=` or two.
      const leaves = [recordLeaf(0), recordLeaf(1, { name: 'te' }), recordLeaf(2, { name: 'tes' })];
      expect(new Set(leaves.map((leaf) => leaf.length % 3)).size).toBe(3);
      const lines = exportLines(leaves);
      const alphabet = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_'];
      await fc.assert(
        fc.asyncProperty(
          fc.nat({ max: 2 }),
          fc.array(fc.tuple(fc.nat({ max: 3 }), fc.constantFrom(...alphabet)), { minLength: 1, maxLength: 3 }),
          async (index, edits) => {
            const row = leafLineOf(lines, index);
            const chars = [...lines[row]!];
            for (const [back, ch] of edits) chars[chars.length - 3 - back] = ch; // the last four base64 characters
            const edited = [...lines];
            edited[row] = chars.join('');
            const byLines = await outcomeOf(verifyExport(edited, { trust }));
            expect(await outcomeOf(verifyExportBytes([Buffer.from(`${edited.join('\n')}\n`)], { trust }))).toEqual(byLines);
            if (edited[row] !== lines[row]) expect(byLines.ok).toBe(false);
          },
        ),
        { numRuns: 600 },
      );
    });
  });

  describe('when the header is malformed', () => {
    it.each([
      ['not JSON', () => 'not json'],
      ['another media type', (h: string) => h.replace(EXPORT_MEDIA_TYPE, 'application/json')],
      ['a re-ordered member list', (h: string) => JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(h)).reverse()))],
      ['another origin', (h: string) => h.replace(origin, `${origin}x`)],
      ['a negative size', (h: string) => h.replace(/"size":\d+/, '"size":-1')],
    ])('rejects a header with %s with LOG_EXPORT_INVALID at line 1', async (_what, edit) => {
      const lines = exportLines(leavesOf(3));
      lines[0] = edit(lines[0]!);
      const err = await failureOf(lines);
      expect(err.code).toBe('LOG_EXPORT_INVALID');
      expect(err.details.line).toBe(1);
    });

    it('rejects an empty export with LOG_EXPORT_INVALID', async () => {
      expect((await failureOf([])).code).toBe('LOG_EXPORT_INVALID');
    });
  });

  describe('when the header names a runner the trust document does not enrol', () => {
    it('rejects an unknown key, a key without the runner role, and a key enrolled under another name with LOG_EXPORT_UNKNOWN_RUNNER', async () => {
      const lines = exportLines(leavesOf(2));
      const strangers = [
        trustEnrolling([{ name: 'someone', key: outsider, roles: ['runner'] }]),
        trustEnrolling([{ name: RUNNER_ID, key: runnerKey, roles: ['capsule-signer'] }]),
        trustEnrolling([{ name: 'runner-unit-2', key: runnerKey, roles: ['runner'] }]),
      ];
      for (const other of strangers) expect((await failureOf(lines, undefined, other)).code).toBe('LOG_EXPORT_UNKNOWN_RUNNER');
    });
  });

  describe('when a leaf was edited', () => {
    it('rejects with LOG_ROOT_MISMATCH at the first checkpoint after it', async () => {
      const leaves = leavesOf(12);
      const lines = exportLines(leaves, [4, 8]);
      const at = leafLineOf(lines, 5);
      lines[at] = formatLeafLine(5, recordLeaf(5, { exitCode: 1 }));
      const err = await failureOf(lines);
      expect(err.code).toBe('LOG_ROOT_MISMATCH');
      expect(err.details).toMatchObject({ line: leafLineOf(lines, 7) + 2, size: 8 });
    });
  });

  describe('when a leaf was removed', () => {
    it('rejects the gap in the numbering with LOG_EXPORT_INVALID, naming the line and leaf', async () => {
      const lines = exportLines(leavesOf(10), [5]);
      lines.splice(leafLineOf(lines, 3), 1);
      const err = await failureOf(lines);
      expect(err.code).toBe('LOG_EXPORT_INVALID');
      expect(err.details).toMatchObject({ line: leafLineOf(lines, 4) + 1, index: 3 });
      expect(err.message).toMatch(/^line 5 \(leaf 3\): /);
    });

    it('rejects the leaf that took its index with LOG_LEAF_INVALID when the lines were renumbered', async () => {
      const leaves = leavesOf(10);
      const lines = exportLines([...leaves.slice(0, 3), ...leaves.slice(4)]);
      const err = await failureOf(lines);
      expect(err.code).toBe('LOG_LEAF_INVALID');
      expect(err.details).toMatchObject({ index: 3, seq: 4 });
    });
  });

  describe('when two leaves were swapped', () => {
    it('rejects with LOG_LEAF_INVALID (their seq is not their index)', async () => {
      const leaves = leavesOf(8);
      const swapped = [...leaves];
      [swapped[2], swapped[6]] = [swapped[6]!, swapped[2]!];
      const err = await failureOf(exportLines(swapped));
      expect(err.code).toBe('LOG_LEAF_INVALID');
      expect(err.details.index).toBe(2);
    });

    it('rejects with LOG_ROOT_MISMATCH when their seq were rewritten to match and the old checkpoints kept', async () => {
      const leaves = leavesOf(8);
      const lines = exportLines(leaves, [4]);
      // Swap the bodies of leaves 1 and 2 but keep seq = index: the bytes change, the signatures cannot follow.
      lines[leafLineOf(lines, 1)] = formatLeafLine(1, recordLeaf(1, { runId: 'run-0x' }));
      lines[leafLineOf(lines, 2)] = formatLeafLine(2, recordLeaf(2, { runId: 'run-0y' }));
      expect((await failureOf(lines)).code).toBe('LOG_ROOT_MISMATCH');
    });
  });

  describe('when a leaf is not the canonical record at its index', () => {
    const urlSafeLeaf = recordLeaf(1, { name: '\u00ff\u00fe\u00fb?>' }).toString('base64url');
    it('(the URL-safe case really differs from standard base64)', () => {
      expect(urlSafeLeaf).toMatch(/[-_]/);
    });
    // Each case is the real record of leaf 1 with one thing changed, and names the check that catches it.
    const real = recordLeaf(1).toString('utf8');
    const edited = (from: string | RegExp, to: string) => {
      const text = real.replace(from, to);
      if (text === real) throw new Error(`the fixture edit ${String(from)} changed nothing`);
      return Buffer.from(text);
    };
    const cases: [string, Buffer | string, RegExp][] = [
      [
        'keys out of order',
        Buffer.from(JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(real)).reverse()))),
        /not the canonical encoding/,
      ],
      ['whitespace', edited(',"kind"', ', "kind"'), /not the canonical encoding/],
      [
        'an escaped character JSON.stringify writes raw',
        Buffer.from(recordLeaf(1, { name: '\u00e9' }).toString('utf8').replace('\u00e9', '\\u00e9')),
        /not the canonical encoding/,
      ],
      ['an escape JSON.stringify does not write', edited('"name":"test"', '"name":"te\\/st"'), /not the canonical encoding/],
      [
        'invalid UTF-8',
        Buffer.from(recordLeaf(1, { name: '\u00e9' }).toString('latin1').replace('\u00c3\u00a9', '\u00ff'), 'latin1'),
        /not the canonical encoding/,
      ],
      ['a fraction', edited(/"durationMs":\d+/, '"durationMs":1.5'), /not a safe integer/],
      ['an integer beyond 2^53', edited(/"durationMs":\d+/, '"durationMs":9007199254740993'), /not a safe integer/],
      ['minus zero', edited(/"exitCode":0/, '"exitCode":-0'), /not the canonical encoding/],
      ['an unknown kind', edited('"kind":"step.finished"', '"kind":"validate"'), /kind "validate" is not a known kind/],
      ['another version', edited('"v":1', '"v":2'), /version is 2, not 1/],
      ['no time', edited(`"at":"${AT}",`, ''), /no time/],
      ['a time that is not RFC 3339 UTC', edited(AT, '2025-01-01T00:00:00Z'), /no time/],
      ['a member its kind does not have', edited('"exitCode"', '"evidenceDigest":"x","exitCode"'), /has no member "evidenceDigest"/],
      ['a required member missing', edited('"name":"test",', ''), /lacks "name"/],
      ['a duplicated member', edited('"name":"test"', '"name":"test","name":"test"'), /not the canonical encoding/],
      ['not JSON', Buffer.from('run.started 1'), /not JSON/],
      ['an array', Buffer.from('[1]'), /not a JSON object/],
      ['non-canonical base64', '{"index":1,"leaf":"eyJhIjoxfR=="}', /not canonical standard base64/],
      ['URL-safe base64', `{"index":1,"leaf":"${urlSafeLeaf}"}`, /not canonical standard base64/],
    ];
    it.each(cases)('rejects a leaf with %s with LOG_LEAF_INVALID', async (_what, leaf, sentence) => {
      const lines = exportLines(leavesOf(3));
      lines[leafLineOf(lines, 1)] = typeof leaf === 'string' ? leaf : formatLeafLine(1, leaf);
      const err = await failureOf(lines);
      expect(err.code).toBe('LOG_LEAF_INVALID');
      expect(err.details).toMatchObject({ line: 3, index: 1 });
      expect(err.details.sentence).toMatch(sentence);
      expect(err.message).toMatch(/^line 3 \(leaf 1\): /);
    });

    it.each([
      ['an index with a leading zero', '{"index":01,"leaf":"e30="}', 'the line is not JSON.'],
      ['an index written as a fraction', '{"index":1.0,"leaf":"e30="}', 'the leaf line is not in its canonical form (members, order, spacing).'],
      ['the quote of an empty leaf missing', '{"index":1,"leaf":"}', 'the line is not JSON.'],
      ['an empty leaf', '{"index":1,"leaf":""}', 'the leaf is not JSON.'],
    ])('rejects a leaf line with %s as the plain reading of it does', async (_what, line, sentence) => {
      const lines = exportLines(leavesOf(3));
      lines[leafLineOf(lines, 1)] = line;
      const err = await failureOf(lines);
      expect(err.details).toMatchObject({ line: 3, sentence });
    });

    it('rejects a leaf line with an extra member or spacing with LOG_EXPORT_INVALID', async () => {
      for (const edit of [(l: string) => l.replace('}', ',"x":1}'), (l: string) => l.replace(',', ', ')]) {
        const lines = exportLines(leavesOf(3));
        lines[2] = edit(lines[2]!);
        expect((await failureOf(lines)).code).toBe('LOG_EXPORT_INVALID');
      }
    });
  });

  describe('when a checkpoint does not verify', () => {
    it('rejects a note with one changed byte with LOG_CHECKPOINT_BAD_SIGNATURE', async () => {
      const leaves = leavesOf(6);
      const lines = exportLines(leaves, [3]);
      const at = lines.findIndex((l) => l.startsWith('{"checkpoint"'));
      const note = checkpointNote(leaves, 3).replace('\n3\n', '\n4\n');
      lines[at] = formatCheckpointLine(note);
      const err = await failureOf(lines);
      expect(err.code).toBe('LOG_CHECKPOINT_BAD_SIGNATURE');
      expect(err.details).toMatchObject({ line: at + 1, size: 3 });
    });

    it('rejects a checkpoint signed by another key with LOG_CHECKPOINT_UNKNOWN_SIGNER', async () => {
      const leaves = leavesOf(6);
      const lines = exportLines(leaves, [3]);
      lines[lines.findIndex((l) => l.startsWith('{"checkpoint"'))] = formatCheckpointLine(checkpointNote(leaves, 3, outsider));
      expect((await failureOf(lines)).code).toBe('LOG_CHECKPOINT_UNKNOWN_SIGNER');
    });

    it('rejects a signed checkpoint whose root is not the recomputed root with LOG_ROOT_MISMATCH', async () => {
      const leaves = leavesOf(6);
      const lines = exportLines(leaves, [3]);
      const at = lines.findIndex((l) => l.startsWith('{"checkpoint"'));
      lines[at] = formatCheckpointLine(checkpointNote(leaves, 3, runnerKey, hashLeaf(Buffer.from('another tree'))));
      const err = await failureOf(lines);
      expect(err.code).toBe('LOG_ROOT_MISMATCH');
      expect(err.message).toMatch(new RegExp(`^line ${at + 1}: `));
    });
  });

  describe('when a checkpoint is not where its size puts it', () => {
    it('rejects one that comes before its last leaf with LOG_CHECKPOINT_BEYOND_LEAVES', async () => {
      const lines = exportLines(leavesOf(6), [4]);
      const at = lines.findIndex((l) => l.startsWith('{"checkpoint"'));
      const [checkpoint] = lines.splice(at, 1);
      lines.splice(at - 1, 0, checkpoint!);
      const err = await failureOf(lines);
      expect(err.code).toBe('LOG_CHECKPOINT_BEYOND_LEAVES');
      expect(err.details).toMatchObject({ line: at, size: 3, checkpointSize: 4 });
    });

    it('rejects one that comes after later leaves, or a repeated one, with LOG_CHECKPOINT_MISPLACED', async () => {
      const lines = exportLines(leavesOf(6), [4]);
      const at = lines.findIndex((l) => l.startsWith('{"checkpoint"'));
      const later = [...lines];
      later.splice(at + 2, 0, ...later.splice(at, 1));
      expect((await failureOf(later)).code).toBe('LOG_CHECKPOINT_MISPLACED');
      const repeated = [...lines];
      repeated.splice(at, 0, lines[at]!);
      expect((await failureOf(repeated)).code).toBe('LOG_CHECKPOINT_MISPLACED');
    });
  });

  describe('when the export is cut short or over-long', () => {
    it('rejects an export that ends before the size its header announces with LOG_EXPORT_TRUNCATED', async () => {
      const lines = exportLines(leavesOf(10), [5]);
      const err = await failureOf(lines.slice(0, leafLineOf(lines, 7)));
      expect(err.code).toBe('LOG_EXPORT_TRUNCATED');
      expect(err.details.size).toBe(7);
    });

    it('rejects an export whose last leaves no checkpoint covers with LOG_EXPORT_UNCHECKPOINTED', async () => {
      const lines = exportLines(leavesOf(10), [5]);
      expect((await failureOf(lines.slice(0, -1))).code).toBe('LOG_EXPORT_UNCHECKPOINTED');
    });

    it('rejects a leaf beyond the size its header announces with LOG_EXPORT_INVALID', async () => {
      const lines = exportLines(leavesOf(4));
      lines[0] = lines[0]!.replace('"size":4', '"size":3');
      const err = await failureOf(lines);
      expect(err.code).toBe('LOG_EXPORT_INVALID');
      expect(err.details.index).toBe(3);
    });
  });

  describe('when an earlier checkpoint is given', () => {
    it('rejects a log of another history at that size with LOG_EARLIER_CHECKPOINT_MISMATCH, at the leaf that reaches it', async () => {
      const leaves = leavesOf(12);
      const rewritten = leaves.map((leaf, i) => (i === 2 ? recordLeaf(2, { exitCode: 9 }) : leaf));
      const lines = exportLines(rewritten, [8]); // freshly re-signed: every checkpoint of the rewritten log verifies
      const err = await failureOf(lines, checkpointNote(leaves, 6));
      expect(err.code).toBe('LOG_EARLIER_CHECKPOINT_MISMATCH');
      expect(err.details).toMatchObject({ line: leafLineOf(lines, 5) + 1, index: 5, size: 6 });
    });

    it('rejects a log truncated and re-appended past that size with LOG_EARLIER_CHECKPOINT_MISMATCH', async () => {
      const leaves = leavesOf(10);
      const reappended = [...leaves.slice(0, 7), ...Array.from({ length: 6 }, (_, k) => recordLeaf(7 + k, { runId: 'again' }))];
      expect((await failureOf(exportLines(reappended, [11]), checkpointNote(leaves, 10))).code).toBe('LOG_EARLIER_CHECKPOINT_MISMATCH');
    });

    it('rejects a log smaller than the earlier checkpoint with LOG_EARLIER_CHECKPOINT_BEYOND_EXPORT', async () => {
      const leaves = leavesOf(10);
      const err = await failureOf(exportLines(leaves.slice(0, 8)), checkpointNote(leaves, 10));
      expect(err.code).toBe('LOG_EARLIER_CHECKPOINT_BEYOND_EXPORT');
      expect(err.details).toMatchObject({ line: 1, size: 10 });
    });

    it('rejects an earlier checkpoint that does not verify with the checkpoint code, marked as the earlier one', async () => {
      const leaves = leavesOf(5);
      const forged = checkpointNote(leaves, 3).replace('\n3\n', '\n2\n');
      const err = await failureOf(exportLines(leaves), forged);
      expect(err.code).toBe('LOG_CHECKPOINT_BAD_SIGNATURE');
      expect(err.details.earlier).toBe(true);
      expect((await failureOf(exportLines(leaves), checkpointNote(leaves, 3, outsider))).code).toBe('LOG_CHECKPOINT_UNKNOWN_SIGNER');
      expect((await failureOf(exportLines(leaves), 'not a note')).code).toBe('LOG_NOTE_MALFORMED');
    });
  });

  describe('when a line is longer than the cap', () => {
    const padded = (bytes: number) => `{"checkpoint":"${'x'.repeat(bytes - 17)}"}`;

    it('reads a line of exactly maxLineBytes and rejects one byte more with LOG_EXPORT_LINE_TOO_LONG', async () => {
      const atLimit = padded(EXPORT_LIMITS.maxLineBytes);
      expect(Buffer.byteLength(atLimit)).toBe(EXPORT_LIMITS.maxLineBytes);
      const lines = exportLines(leavesOf(2));
      expect((await failureOf([lines[0]!, atLimit])).code).toBe('LOG_NOTE_TOO_LARGE');
      const err = await failureOf([lines[0]!, padded(EXPORT_LIMITS.maxLineBytes + 1)]);
      expect(err.code).toBe('LOG_EXPORT_LINE_TOO_LONG');
      expect(err.details.line).toBe(2);
    });

    it('stops reading a byte stream at the first line over the cap, before its end', async () => {
      const header = Buffer.from(`${exportLines([])[0]}\n`);
      let chunksRead = 0;
      function* endless() {
        yield header;
        for (let i = 0; i < 1000; i++) {
          chunksRead += 1;
          yield Buffer.alloc(16_384, 0x61);
        }
      }
      const err = await failureOf(splitLines(endless()));
      expect(err.code).toBe('LOG_EXPORT_LINE_TOO_LONG');
      expect(err.details.line).toBe(2);
      expect(chunksRead).toBeLessThanOrEqual(Math.ceil(EXPORT_LIMITS.maxLineBytes / 16_384) + 1);
      chunksRead = 0;
      const direct = await outcomeOf(verifyExportBytes(endless(), { trust }));
      expect(direct).toMatchObject({ code: 'LOG_EXPORT_LINE_TOO_LONG', at: [2, undefined, undefined, undefined] });
      expect(chunksRead).toBeLessThanOrEqual(Math.ceil(EXPORT_LIMITS.maxLineBytes / 16_384) + 1);
    });

    it('refuses a line of more than maxLineBytes pushed as bytes, before reading it', () => {
      const verifier = new ExportVerifier({ trust });
      verifier.pushBytes(Buffer.from(exportLines([])[0]!));
      const line = Buffer.from(padded(EXPORT_LIMITS.maxLineBytes + 1));
      expect(() => verifier.pushBytes(line)).toThrow(
        expect.objectContaining({ code: 'LOG_EXPORT_LINE_TOO_LONG', details: expect.objectContaining({ line: 2 }) }),
      );
      expect(() => verifier.pushBytes(Buffer.from(padded(EXPORT_LIMITS.maxLineBytes)))).toThrow(
        expect.objectContaining({ code: 'LOG_NOTE_TOO_LARGE' }),
      );
    });

    it('rejects a header over maxHeaderBytes with LOG_EXPORT_LINE_TOO_LONG', async () => {
      const header = formatExportHeader({ origin, runner: { id: RUNNER_ID, keyid: runnerKey.keyid }, size: 0 }).replace(
        `"origin":"${origin}"`,
        `"origin":"${'o'.repeat(EXPORT_LIMITS.maxHeaderBytes)}"`,
      );
      expect((await failureOf([header])).code).toBe('LOG_EXPORT_LINE_TOO_LONG');
    });
  });
});
