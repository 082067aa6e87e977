import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRawDb, value } from '../helpers/raw-db.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  consistencyProof,
  hashLeaf,
  inclusionProof,
  nodeReaderFromLeafHashes,
  rootFromLeafHashes,
  verifyConsistency,
  verifyInclusion,
} from '../../runner/log/merkle.js';
import { MerkleTable, treeHashCount } from '../../runner/store/merkle.js';
import { SqliteDatabase } from '../../runner/store/sqlite.js';
import { codeOf } from '../helpers/codes.js';

const leafData = (i: number): Buffer => Buffer.from(`{"seq":${i},"kind":"test"}`);

describe('MerkleTable on a real SQLite file', () => {
  let dir: string;
  let path: string;
  let db: SqliteDatabase;
  let store: MerkleTable;

  const open = (): void => {
    db = SqliteDatabase.open(path, { busyTimeoutMs: 5000 });
    store = new MerkleTable(db);
    store.migrate();
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'merkle-store-'));
    path = join(dir, 'state.db');
    open();
  });

  afterEach(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('when leaves are appended one at a time', () => {
    it('serves, for every size up to 70, the same roots and proofs as the pure functions', () => {
      const leafHashes: Buffer[] = [];
      expect(store.size()).toBe(0);
      expect(store.root()).toEqual(rootFromLeafHashes([]));
      for (let i = 0; i < 70; i++) {
        expect(store.append(leafData(i))).toBe(i);
        leafHashes.push(hashLeaf(leafData(i)));
      }
      const pure = nodeReaderFromLeafHashes(leafHashes);
      for (let size = 1; size <= 70; size++) {
        const root = rootFromLeafHashes(leafHashes.slice(0, size));
        expect(store.root(size)).toEqual(root);
        for (let index = 0; index < size; index++) {
          const proof = store.inclusionProof(index, size);
          expect(proof).toEqual(inclusionProof(index, size, pure));
          verifyInclusion(index, size, store.leafHash(index), proof, root);
        }
        for (let size1 = 1; size1 <= size; size1++) {
          const proof = store.consistencyProof(size1, size);
          expect(proof).toEqual(consistencyProof(size1, size, pure));
          verifyConsistency(size1, size, proof, store.root(size1), root);
        }
      }
    });
  });

  describe('when leaves are appended in batches of uneven sizes', () => {
    it('builds the same tree as single appends and survives reopening the file', () => {
      const all = Array.from({ length: 1000 }, (_, i) => leafData(i));
      let next = 0;
      for (const batch of [1, 2, 5, 64, 100, 327, 1, 500]) {
        const slice = all.slice(next, Math.min(next + batch, all.length));
        const result = store.appendBatch(slice);
        expect(result).toEqual({ firstIndex: next, size: next + slice.length });
        next += slice.length;
      }
      db.close();
      open();
      expect(store.size()).toBe(1000);
      expect(store.root()).toEqual(rootFromLeafHashes(all.map(hashLeaf)));
      store.checkNodes();
      store.append(leafData(1000));
      expect(store.root()).toEqual(rootFromLeafHashes([...all, leafData(1000)].map(hashLeaf)));
    });
  });

  describe('when append runs inside the caller`s transaction and that transaction fails', () => {
    it('leaves no trace of the leaf', () => {
      store.appendBatch([leafData(0), leafData(1), leafData(2)]);
      const before = store.root();
      expect(() =>
        db.transaction(() => {
          store.append(leafData(3));
          throw new Error('the record could not be written');
        }),
      ).toThrow('the record could not be written');
      expect(store.size()).toBe(3);
      expect(store.root()).toEqual(before);
      store.checkNodes();
    });
  });

  describe('when append is told the index it must land at', () => {
    it('rejects a mismatch with STORE_TREE_INCONSISTENT', () => {
      store.append(leafData(0), 0);
      expect(codeOf(() => store.append(leafData(1), 5))).toBe('STORE_TREE_INCONSISTENT');
      expect(store.size()).toBe(1);
    });
  });

  describe('when a size beyond the tree is asked for', () => {
    it("rejects with STORE_TREE_RANGE (beyond the stored tree) or LOG_INDEX_OUT_OF_RANGE (outside the proof's tree)", () => {
      store.appendBatch([leafData(0), leafData(1)]);
      expect(codeOf(() => store.root(3))).toBe('STORE_TREE_RANGE');
      expect(codeOf(() => store.inclusionProof(0, 3))).toBe('STORE_TREE_RANGE');
      expect(codeOf(() => store.inclusionProof(2))).toBe('LOG_INDEX_OUT_OF_RANGE');
      expect(codeOf(() => store.consistencyProof(1, 3))).toBe('STORE_TREE_RANGE');
      expect(codeOf(() => store.leafHash(2))).toBe('STORE_TREE_RANGE');
    });
  });

  describe('when leaves are appended', () => {
    it('stores, in row n, the hashes of the leaf and of each subtree it completes, bottom-up', () => {
      store.appendBatch(Array.from({ length: 24 }, (_, i) => leafData(i)));
      const pure = nodeReaderFromLeafHashes(Array.from({ length: 24 }, (_, i) => hashLeaf(leafData(i))));
      const raw = openRawDb(path, { readOnly: true });
      try {
        for (let n = 0; n < 24; n++) {
          const tree = Buffer.from(value<Uint8Array>(raw, 'SELECT tree FROM merkle_v2 WHERE idx = ?', n)!);
          expect(tree.length).toBe(32 * treeHashCount(n));
          for (let level = 0; level < treeHashCount(n); level++) {
            // Node (level, k) lives in row (k + 1) * 2^level - 1.
            expect(tree.subarray(32 * level, 32 * level + 32)).toEqual(Buffer.from(pure(level, (n + 1) / 2 ** level - 1)));
          }
        }
      } finally {
        raw.close();
      }
      expect([0, 1, 2, 3, 7, 11, 15, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 52 - 1].map(treeHashCount)).toEqual([
        1, 2, 1, 3, 4, 3, 5, 32, 1, 33, 53,
      ]);
    });
  });

  describe('when an interior node is edited in the SQLite file', () => {
    it('is caught by proof verification against the earlier root, and by checkNodes', () => {
      store.appendBatch(Array.from({ length: 100 }, (_, i) => leafData(i)));
      const signedRoot = store.root(); // what a checkpoint signed before the tampering
      db.close();
      const raw = openRawDb(path);
      // Node (level 3, idx 2) is at byte 96 of row (2 + 1) * 8 - 1 = 23.
      const tree = Buffer.from(value<Uint8Array>(raw, 'SELECT tree FROM merkle_v2 WHERE idx = 23')!);
      Buffer.alloc(32, 7).copy(tree, 96);
      raw.prepare('UPDATE merkle_v2 SET tree = ? WHERE idx = 23').run(tree);
      raw.close();
      open();
      // Leaf 30 lies in (level 3, idx 3), whose sibling is the edited (3, 2).
      const proof = store.inclusionProof(30, 100);
      expect(codeOf(() => verifyInclusion(30, 100, store.leafHash(30), proof, signedRoot))).toBe('LOG_PROOF_INVALID');
      // The root itself is read from higher complete subtrees (64 + 32 + 4 leaves), which were not edited.
      expect(store.root()).toEqual(signedRoot);
      expect(codeOf(() => store.checkNodes())).toBe('STORE_TREE_INCONSISTENT');
    });
  });

  describe('when a leaf row is deleted from the SQLite file', () => {
    it('cannot serve a proof that needs it (STORE_TREE_INCONSISTENT), and checkNodes says so', () => {
      store.appendBatch(Array.from({ length: 16 }, (_, i) => leafData(i)));
      db.prepare('DELETE FROM merkle_v2 WHERE idx = 4').run();
      expect(codeOf(() => store.inclusionProof(5, 16))).toBe('STORE_TREE_INCONSISTENT');
      expect(codeOf(() => store.checkNodes())).toBe('STORE_TREE_INCONSISTENT');
    });
  });

  describe('when a row holds fewer or more hashes than its index completes', () => {
    it.each([
      ['cut short', (tree: Buffer) => tree.subarray(0, 64)],
      ['with one more', (tree: Buffer) => Buffer.concat([tree, Buffer.alloc(32, 1)])],
    ])('(%s) serves no node from it and fails checkNodes', (_name, edit) => {
      store.appendBatch(Array.from({ length: 16 }, (_, i) => leafData(i)));
      const raw = openRawDb(path);
      const tree = Buffer.from(value<Uint8Array>(raw, 'SELECT tree FROM merkle_v2 WHERE idx = 7')!);
      // The schema's CHECK refuses such a row; an attacker turns the check off first.
      raw.exec('PRAGMA ignore_check_constraints = ON');
      raw.prepare('UPDATE merkle_v2 SET tree = ? WHERE idx = 7').run(edit(tree));
      raw.close();
      // Row 7 holds the leaf 7 (level 0) and the subtrees (1, 3), (2, 1), (3, 0).
      expect(codeOf(() => store.leafHash(7))).toBe('STORE_TREE_INCONSISTENT');
      expect(codeOf(() => store.root(8))).toBe('STORE_TREE_INCONSISTENT');
      expect(codeOf(() => store.checkNodes())).toBe('STORE_TREE_INCONSISTENT');
    });

    it('cannot be written by the runner: the schema checks the blob length against the index', () => {
      store.appendBatch([leafData(0)]);
      expect(codeOf(() => db.transaction(() => db.prepare('INSERT INTO merkle_v2 (idx, tree) VALUES (1, ?)').run(Buffer.alloc(32))))).toBe(
        'STORE_WRITE_FAILED',
      );
      expect(codeOf(() => db.transaction(() => db.prepare('INSERT INTO merkle_v2 (idx, tree) VALUES (1, ?)').run(Buffer.alloc(64 + 1))))).toBe(
        'STORE_WRITE_FAILED',
      );
      db.transaction(() => db.prepare('INSERT INTO merkle_v2 (idx, tree) VALUES (1, ?)').run(Buffer.alloc(64)));
    });
  });

  describe('when the tree is asked for a layout it does not know', () => {
    it('refuses to build a table name from it', () => {
      expect(() => new MerkleTable(db, 'merkle_v2; DROP TABLE x' as never)).toThrow(TypeError);
      expect(() => new MerkleTable(db, 'toString' as never)).toThrow(TypeError);
    });
  });

  describe('when the log is truncated and re-appended with other leaves', () => {
    it('fails consistency with a root signed before the truncation', () => {
      store.appendBatch(Array.from({ length: 40 }, (_, i) => leafData(i)));
      const signedSize = 40;
      const signedRoot = store.root();
      // The attacker works on the file from another process (another connection).
      const raw = openRawDb(path);
      raw.exec('DELETE FROM merkle_v2');
      raw.close();
      store.appendBatch(Array.from({ length: 45 }, (_, i) => (i === 17 ? Buffer.from('rewritten history') : leafData(i))));
      store.checkNodes(); // internally consistent: only the earlier checkpoint reveals the rewrite
      const proof = store.consistencyProof(signedSize, 45);
      expect(codeOf(() => verifyConsistency(signedSize, 45, proof, signedRoot, store.root()))).toBe('LOG_CONSISTENCY_INVALID');
    });
  });

  describe('when another connection appends after this one did', () => {
    it('is seen by this connection: in a read snapshot, in its next write, and in its proofs', () => {
      store.appendBatch(Array.from({ length: 5 }, (_, i) => leafData(i))); // this connection now caches the right edge
      const other = SqliteDatabase.open(path, { busyTimeoutMs: 5000 });
      try {
        new MerkleTable(other).appendBatch(Array.from({ length: 4 }, (_, i) => leafData(5 + i)));
      } finally {
        other.close();
      }
      expect(db.snapshot(() => store.size())).toBe(9);
      expect(store.append(leafData(9))).toBe(9);
      expect(store.root()).toEqual(rootFromLeafHashes(Array.from({ length: 10 }, (_, i) => hashLeaf(leafData(i)))));
      store.checkNodes();
      expect(codeOf(() => db.snapshot(() => store.append(leafData(10))))).toBe('STORE_WRITE_FAILED');
    });
  });

  describe('when reading proofs at scale', () => {
    it('reads O(log n) rows per proof', () => {
      store.appendBatch(Array.from({ length: 5000 }, (_, i) => leafData(i)));
      let reads = 0;
      const counting = (level: number, index: number): Uint8Array => {
        reads += 1;
        return store.readNode(level, index);
      };
      for (const index of [0, 1, 2047, 4095, 4999]) {
        reads = 0;
        const proof = inclusionProof(index, 5000, counting);
        verifyInclusion(index, 5000, store.leafHash(index), proof, store.root());
        expect(reads).toBeLessThanOrEqual(2 * Math.ceil(Math.log2(5000)));
      }
    });
  });
});
