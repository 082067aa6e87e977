import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toCanonicalJson } from '../../../runner/core/canonical-json.js';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { runnerOrigin, signCheckpoint } from '../../../runner/log/checkpoint.js';
import { LogError } from '../../../runner/log/errors.js';
import {
  EXPORT_LIMITS,
  EXPORT_MEDIA_TYPE,
  formatCheckpointLine,
  formatExportHeader,
  formatLeafLine,
  splitLines,
  verifyExport,
  type ExportReport,
} from '../../../runner/log/export.js';
import { hashLeaf, rootFromLeafHashes } from '../../../runner/log/merkle.js';
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

/** A record leaf as runner/store/store.ts writes it. */
function recordLeaf(seq: number, extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(toCanonicalJson({ v: 1, seq, kind: 'step.finished', at: '2025-01-01T00:00:00.000Z', runId: `run-${seq >> 2}`, exitCode: 0, ...extra }));
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
  try {
    await verifyExport(lines, { trust: trustDocument, ...(earlier !== undefined ? { earlier } : {}) });
  } catch (err) {
    if (err instanceof LogError) return err;
    throw err;
  }
  throw new Error('the export verified');
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
      });
    });

    it('verifies an empty log with its size-0 checkpoint', async () => {
      expect((await verifyExport(exportLines([]), { trust })).size).toBe(0);
    });

    it('reports consistency with an earlier checkpoint at any size up to the export', async () => {
      const leaves = leavesOf(23);
      for (const size of [0, 1, 7, 8, 22, 23]) {
        const report = await verifyExport(exportLines(leaves, [10]), { trust, earlier: checkpointNote(leaves, size) });
        expect(report.earlier).toEqual({ size });
      }
    });

    it('verifies whatever way the bytes are cut into chunks', async () => {
      const text = Buffer.from(`${exportLines(leavesOf(9), [4]).join('\n')}\n`);
      await fc.assert(
        fc.asyncProperty(fc.array(fc.integer({ min: 0, max: text.length }), { maxLength: 12 }), async (cuts) => {
          const points = [0, ...[...cuts].sort((a, b) => a - b), text.length];
          const chunks = points.slice(1).map((end, i) => text.subarray(points[i], end));
          expect((await verifyExport(splitLines(chunks), { trust })).size).toBe(9);
        }),
        { numRuns: 50 },
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
    const urlSafeLeaf = recordLeaf(1, { note: '\u00ff\u00fe\u00fb?>' }).toString('base64url');
    it('(the URL-safe case really differs from standard base64)', () => {
      expect(urlSafeLeaf).toMatch(/[-_]/);
    });
    const cases: [string, Buffer | string][] = [
      ['keys out of order', Buffer.from('{"v":1,"seq":1,"kind":"run.started","at":"t"}')],
      ['whitespace', Buffer.from('{"at":"t", "kind":"run.started","seq":1,"v":1}')],
      ['an escaped character JSON.stringify writes raw', Buffer.from('{"at":"t","kind":"run.started","note":"\\u00e9","seq":1,"v":1}')],
      ['invalid UTF-8', Buffer.concat([Buffer.from('{"at":"t","kind":"run.started","note":"'), Buffer.from([0xff]), Buffer.from('","seq":1,"v":1}')])],
      ['a fraction', Buffer.from('{"at":"t","kind":"run.started","n":1.5,"seq":1,"v":1}')],
      ['an unknown kind', Buffer.from('{"at":"t","kind":"validate","seq":1,"v":1}')],
      ['another version', Buffer.from('{"at":"t","kind":"run.started","seq":1,"v":2}')],
      ['no time', Buffer.from('{"kind":"run.started","seq":1,"v":1}')],
      ['not JSON', Buffer.from('run.started 1')],
      ['an array', Buffer.from('[1]')],
      ['non-canonical base64', '{"index":1,"leaf":"eyJhIjoxfR=="}'],
      ['URL-safe base64', `{"index":1,"leaf":"${urlSafeLeaf}"}`],
    ];
    it.each(cases)('rejects a leaf with %s with LOG_LEAF_INVALID', async (_what, leaf) => {
      const lines = exportLines(leavesOf(3));
      lines[leafLineOf(lines, 1)] = typeof leaf === 'string' ? leaf : formatLeafLine(1, leaf);
      const err = await failureOf(lines);
      expect(err.code).toBe('LOG_LEAF_INVALID');
      expect(err.details).toMatchObject({ line: 3, index: 1 });
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
