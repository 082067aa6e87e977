import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LogError } from '../../../runner/log/errors.js';
import {
  CompactRange,
  EMPTY_ROOT,
  consistencyProof,
  hashChildren,
  hashLeaf,
  inclusionProof,
  nodeReaderFromLeafHashes,
  rootFromLeafHashes,
  rootFromNodes,
  subtreeRoot,
  verifyConsistency,
  verifyInclusion,
} from '../../../runner/log/merkle.js';

// Third-party vectors: transparency-dev/merkle testdata (see test/fixtures/merkle/SOURCE and LICENSE).
const VECTORS_DIR = fileURLToPath(new URL('../../fixtures/merkle/', import.meta.url));

interface InclusionVector {
  leafIdx: number;
  treeSize: number;
  root: string;
  leafHash: string;
  proof: string[] | null;
  desc: string;
  wantErr: boolean;
}

interface ConsistencyVector {
  size1: number;
  size2: number;
  root1: string;
  root2: string;
  proof: string[] | null;
  desc: string;
  wantErr: boolean;
}

function listJson(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) return listJson(path);
      return name.endsWith('.json') ? [path] : [];
    });
}

function load<T>(kind: 'inclusion' | 'consistency'): Array<{ file: string; vector: T }> {
  return listJson(join(VECTORS_DIR, kind)).map((path) => ({
    file: relative(VECTORS_DIR, path),
    vector: JSON.parse(readFileSync(path, 'utf8')) as T,
  }));
}

const b64 = (text: string): Buffer => Buffer.from(text, 'base64');
const proofOf = (proof: string[] | null): Buffer[] => (proof ?? []).map(b64);

function outcome(run: () => void): { ok: true } | { ok: false; code: string } {
  try {
    run();
    return { ok: true };
  } catch (err) {
    if (!(err instanceof LogError)) throw err;
    return { ok: false, code: err.code };
  }
}

const inclusionVectors = load<InclusionVector>('inclusion');
const consistencyVectors = load<ConsistencyVector>('consistency');

// The leaves of RFC 6962's reference tree, from which transparency-dev/merkle derived its happy paths.
const RFC_LEAVES = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map((hex) =>
  Buffer.from(hex, 'hex'),
);
const RFC_LEAF_HASHES = RFC_LEAVES.map(hashLeaf);
const RFC_READER = nodeReaderFromLeafHashes(RFC_LEAF_HASHES);

describe('transparency-dev/merkle vectors', () => {
  it('are all present (inclusion and consistency)', () => {
    expect(inclusionVectors.length + consistencyVectors.length).toBe(196);
  });

  describe('verifyInclusion', () => {
    describe.each(inclusionVectors)('$file', ({ vector }) => {
      const run = (): void => verifyInclusion(vector.leafIdx, vector.treeSize, b64(vector.leafHash), proofOf(vector.proof), b64(vector.root));
      if (vector.wantErr) {
        it(`rejects "${vector.desc}" with a LOG_ code`, () => {
          const result = outcome(run);
          expect(result.ok).toBe(false);
          if (!result.ok) expect(result.code).toMatch(/^LOG_(INDEX_OUT_OF_RANGE|SIZE_OUT_OF_RANGE|HASH_INVALID|PROOF_INVALID)$/);
        });
      } else {
        it(`accepts "${vector.desc}"`, () => {
          expect(outcome(run)).toEqual({ ok: true });
        });
      }
    });
  });

  describe('verifyConsistency', () => {
    describe.each(consistencyVectors)('$file', ({ vector }) => {
      const run = (): void => verifyConsistency(vector.size1, vector.size2, proofOf(vector.proof), b64(vector.root1), b64(vector.root2));
      if (vector.wantErr) {
        it(`rejects "${vector.desc}" with a LOG_ code`, () => {
          const result = outcome(run);
          expect(result.ok).toBe(false);
          if (!result.ok) expect(result.code).toMatch(/^LOG_(SIZE_OUT_OF_RANGE|CONSISTENCY_INVALID)$/);
        });
      } else {
        it(`accepts "${vector.desc}"`, () => {
          expect(outcome(run)).toEqual({ ok: true });
        });
      }
    });
  });

  describe('inclusionProof', () => {
    // The single-entry vectors use a one-leaf tree of "data" instead of the reference leaves.
    const happy = inclusionVectors.filter(({ file, vector }) => !vector.wantErr && !file.includes('single-entry'));
    it.each(happy)('reproduces the proof of $file from the RFC 6962 reference leaves', ({ vector }) => {
      expect(b64(vector.leafHash)).toEqual(RFC_LEAF_HASHES[vector.leafIdx]);
      const proof = inclusionProof(vector.leafIdx, vector.treeSize, RFC_READER);
      expect(proof).toEqual(proofOf(vector.proof));
      expect(rootFromNodes(vector.treeSize, RFC_READER)).toEqual(b64(vector.root));
    });
  });

  describe('consistencyProof', () => {
    const happy = consistencyVectors.filter(({ vector }) => !vector.wantErr && vector.size1 > 0 && vector.root1.length === 44);
    it.each(happy)('reproduces the proof of $file from the RFC 6962 reference leaves', ({ vector }) => {
      expect(consistencyProof(vector.size1, vector.size2, RFC_READER)).toEqual(proofOf(vector.proof));
      expect(rootFromNodes(vector.size1, RFC_READER)).toEqual(b64(vector.root1));
      expect(rootFromNodes(vector.size2, RFC_READER)).toEqual(b64(vector.root2));
    });
  });
});

describe('hashLeaf and hashChildren', () => {
  it('prefix leaves with 0x00 and nodes with 0x01 (RFC 9162 section 2.1.1)', () => {
    expect(hashLeaf(Buffer.alloc(0)).toString('hex')).toBe('6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d');
    expect(hashChildren(RFC_LEAF_HASHES[0]!, RFC_LEAF_HASHES[1]!).toString('hex')).toBe(
      'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
    );
  });
});

describe('rootFromLeafHashes', () => {
  it('gives SHA-256 of nothing for the empty tree', () => {
    expect(rootFromLeafHashes([])).toEqual(EMPTY_ROOT);
    expect(EMPTY_ROOT.toString('hex')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  it('gives the RFC 6962 reference root for every prefix of the reference leaves', () => {
    const expected = [
      '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
      'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
      'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
      '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
      '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
      'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
      '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
    ];
    expected.forEach((hex, i) => {
      expect(rootFromLeafHashes(RFC_LEAF_HASHES.slice(0, i + 1)).toString('hex')).toBe(hex);
      expect(rootFromNodes(i + 1, RFC_READER).toString('hex')).toBe(hex);
    });
  });

  describe('when a leaf hash is not 32 bytes', () => {
    it('rejects with LOG_HASH_INVALID', () => {
      expect(outcome(() => rootFromLeafHashes([Buffer.alloc(31)]))).toEqual({ ok: false, code: 'LOG_HASH_INVALID' });
    });
  });
});

describe('CompactRange', () => {
  describe('fromNodes', () => {
    it('resumes a stored tree so that further appends give the same roots as one pass', () => {
      const leafHashes = Array.from({ length: 77 }, (_, i) => hashLeaf(Buffer.from(`leaf ${i}`)));
      const read = nodeReaderFromLeafHashes(leafHashes);
      for (const size of [0, 1, 2, 3, 31, 32, 33, 50]) {
        const range = CompactRange.fromNodes(size, read);
        expect(range.size).toBe(size);
        for (const leafHash of leafHashes.slice(size)) range.append(leafHash);
        expect(range.root()).toEqual(rootFromLeafHashes(leafHashes));
      }
    });
  });

  describe('append', () => {
    it('reports the leaf and every subtree it completes, bottom-up', () => {
      const range = new CompactRange();
      const seen: string[] = [];
      for (const leafHash of RFC_LEAF_HASHES.slice(0, 4)) range.append(leafHash, (level, index) => seen.push(`${level}:${index}`));
      expect(seen).toEqual(['0:0', '0:1', '1:0', '0:2', '0:3', '1:1', '2:0']);
    });
  });
});

describe('subtreeRoot', () => {
  describe('when the range is not aligned to complete subtrees', () => {
    it('rejects with LOG_SIZE_OUT_OF_RANGE', () => {
      expect(outcome(() => subtreeRoot(1, 4, RFC_READER))).toEqual({ ok: false, code: 'LOG_SIZE_OUT_OF_RANGE' });
    });
  });
});

describe('inclusionProof', () => {
  describe('when the index is not below the size', () => {
    it('rejects with LOG_INDEX_OUT_OF_RANGE', () => {
      expect(outcome(() => inclusionProof(8, 8, RFC_READER))).toEqual({ ok: false, code: 'LOG_INDEX_OUT_OF_RANGE' });
      expect(outcome(() => inclusionProof(-1, 8, RFC_READER))).toEqual({ ok: false, code: 'LOG_INDEX_OUT_OF_RANGE' });
    });
  });

  describe('when the size is not a safe integer', () => {
    it('rejects with LOG_SIZE_OUT_OF_RANGE', () => {
      expect(outcome(() => inclusionProof(0, 2 ** 64, RFC_READER))).toEqual({ ok: false, code: 'LOG_SIZE_OUT_OF_RANGE' });
      expect(outcome(() => inclusionProof(0, 1.5, RFC_READER))).toEqual({ ok: false, code: 'LOG_SIZE_OUT_OF_RANGE' });
    });
  });

  describe('when the reader lacks a node', () => {
    it('passes on the reader error (LOG_STORE_INCONSISTENT)', () => {
      expect(outcome(() => inclusionProof(0, 9, RFC_READER))).toEqual({ ok: false, code: 'LOG_STORE_INCONSISTENT' });
    });
  });
});

describe('consistencyProof', () => {
  describe('when size1 is zero or above size2', () => {
    it('rejects with LOG_SIZE_OUT_OF_RANGE', () => {
      expect(outcome(() => consistencyProof(0, 8, RFC_READER))).toEqual({ ok: false, code: 'LOG_SIZE_OUT_OF_RANGE' });
      expect(outcome(() => consistencyProof(5, 4, RFC_READER))).toEqual({ ok: false, code: 'LOG_SIZE_OUT_OF_RANGE' });
    });
  });

  describe('when the sizes are equal', () => {
    it('is empty', () => {
      expect(consistencyProof(5, 5, RFC_READER)).toEqual([]);
    });
  });
});

describe('verifyInclusion', () => {
  const root = rootFromNodes(8, RFC_READER);
  const proof = inclusionProof(5, 8, RFC_READER);

  describe('when the proof has an extra element', () => {
    it('rejects with LOG_PROOF_INVALID', () => {
      expect(outcome(() => verifyInclusion(5, 8, RFC_LEAF_HASHES[5]!, [...proof, root], root))).toEqual({
        ok: false,
        code: 'LOG_PROOF_INVALID',
      });
    });
  });

  describe('when a proof element is not 32 bytes', () => {
    it('rejects with LOG_PROOF_INVALID', () => {
      const short = [...proof];
      short[1] = short[1]!.subarray(1);
      expect(outcome(() => verifyInclusion(5, 8, RFC_LEAF_HASHES[5]!, short, root))).toEqual({ ok: false, code: 'LOG_PROOF_INVALID' });
    });
  });

  describe('when the leaf hash is not 32 bytes', () => {
    it('rejects with LOG_HASH_INVALID', () => {
      expect(outcome(() => verifyInclusion(5, 8, Buffer.from('WrongLeaf'), proof, root))).toEqual({ ok: false, code: 'LOG_HASH_INVALID' });
    });
  });

  describe('when the index is beyond the size', () => {
    it('rejects with LOG_INDEX_OUT_OF_RANGE', () => {
      expect(outcome(() => verifyInclusion(8, 8, RFC_LEAF_HASHES[5]!, proof, root))).toEqual({ ok: false, code: 'LOG_INDEX_OUT_OF_RANGE' });
    });
  });
});

describe('verifyConsistency', () => {
  describe('when the later tree is smaller', () => {
    it('rejects with LOG_SIZE_OUT_OF_RANGE', () => {
      expect(outcome(() => verifyConsistency(3, 2, [], EMPTY_ROOT, EMPTY_ROOT))).toEqual({ ok: false, code: 'LOG_SIZE_OUT_OF_RANGE' });
    });
  });

  describe('when the earlier root was rewritten', () => {
    it('rejects with LOG_CONSISTENCY_INVALID', () => {
      const proof = consistencyProof(6, 8, RFC_READER);
      const forged = rootFromLeafHashes([...RFC_LEAF_HASHES.slice(0, 5), hashLeaf(Buffer.from('rewritten'))]);
      expect(outcome(() => verifyConsistency(6, 8, proof, forged, rootFromNodes(8, RFC_READER)))).toEqual({
        ok: false,
        code: 'LOG_CONSISTENCY_INVALID',
      });
    });
  });
});
