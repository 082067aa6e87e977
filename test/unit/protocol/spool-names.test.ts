/** The spool folder's names (runner/protocol/spool.ts): what the runner and the coordinator read, and what they pass over. */
import { describe, expect, it } from 'vitest';
import {
  isSpoolCapsuleName,
  isSpoolCosignedName,
  parseSpoolOutName,
  toSpoolCapsuleName,
  toSpoolCheckpointName,
  toSpoolCosignedName,
  toSpoolDocumentName,
} from '../../../runner/protocol/spool.js';

const HEX = 'ab'.repeat(32);

describe('spool names', () => {
  it('reads only plain *.capsule.json names in in/: temporary, hidden and other names are passed over', () => {
    expect(isSpoolCapsuleName('nightly.capsule.json')).toBe(true);
    expect(isSpoolCapsuleName(toSpoolCapsuleName(`sha256:${HEX}`))).toBe(true);
    for (const name of [
      '.nightly.capsule.json',
      'nightly.capsule.json.part',
      'nightly.capsule.json.tmp',
      'nightly.json',
      'a/b.capsule.json',
      '-x.capsule.json',
      '',
    ]) {
      expect(isSpoolCapsuleName(name), name).toBe(false);
    }
  });

  it('names answers by the SHA-256 of their bytes, in the folder of their kind only', () => {
    expect(toSpoolDocumentName('bundle', `sha256:${HEX}`)).toBe(`${HEX}.bundle.json`);
    expect(parseSpoolOutName('bundles', `${HEX}.bundle.json`)).toEqual({ kind: 'bundle', digest: `sha256:${HEX}` });
    expect(parseSpoolOutName('rejections', `${HEX}.rejection.json`)).toEqual({ kind: 'rejection', digest: `sha256:${HEX}` });
    expect(parseSpoolOutName('rejections', `${HEX}.bundle.json`)).toEqual({ kind: 'foreign' });
    expect(parseSpoolOutName('bundles', `${HEX.toUpperCase()}.bundle.json`)).toEqual({ kind: 'foreign' });
    expect(parseSpoolOutName('bundles', `.${HEX}.bundle.json.tmp-1`)).toEqual({ kind: 'foreign' });
    expect(() => toSpoolDocumentName('bundle', 'sha256:xyz')).toThrow();
  });

  it('names checkpoints and cosigned checkpoints by tree size and root prefix', () => {
    const root = Buffer.from(HEX, 'hex');
    expect(toSpoolCheckpointName(42, root)).toBe('42-abababababababab.checkpoint');
    expect(parseSpoolOutName('checkpoints', '42-abababababababab.checkpoint')).toEqual({
      kind: 'checkpoint',
      size: 42,
      rootPrefix: 'abababababababab',
    });
    expect(parseSpoolOutName('checkpoints', '042-abababababababab.checkpoint')).toEqual({ kind: 'foreign' });
    expect(parseSpoolOutName('bundles', '42-abababababababab.checkpoint')).toEqual({ kind: 'foreign' });
    // A catch-up file: the same tree proved from an older size (below its own size only).
    expect(toSpoolCheckpointName(42, root, 7)).toBe('42-abababababababab.from-7.checkpoint');
    expect(parseSpoolOutName('checkpoints', '42-abababababababab.from-7.checkpoint')).toEqual({
      kind: 'checkpoint',
      size: 42,
      rootPrefix: 'abababababababab',
      from: 7,
    });
    for (const name of ['42-abababababababab.from-42.checkpoint', '42-abababababababab.from-07.checkpoint', '42-abababababababab.from-.checkpoint']) {
      expect(parseSpoolOutName('checkpoints', name), name).toEqual({ kind: 'foreign' });
    }
    expect(isSpoolCosignedName(toSpoolCosignedName(42, root))).toBe(true);
    expect(isSpoolCosignedName('42-abab.cosigned')).toBe(false);
  });
});
