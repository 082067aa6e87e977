/**
 * The runner's Merkle log in SQLite: the only SQL that touches the tree.
 *
 * One table holds the hash of every complete subtree (RFC 9162 section 2.1.1): level 0 rows are leaf
 * hashes, and the row (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level). Appending a leaf
 * writes its hash and the hashes of the subtrees it completes (amortised two rows, at most log2 n + 1);
 * any root, inclusion proof or consistency proof is O(log n) point reads, computed by the pure functions
 * of runner/log/merkle.ts. The leaf bytes themselves live with the records (runner/store/store.ts).
 *
 * This class never opens a database: it is given a better-sqlite3 handle, and `migrate()` is called by the
 * store's migration step. Statements are prepared once, on first use after migration.
 */
import type Database from 'better-sqlite3';
import { LogError } from '../log/errors.js';
import {
  CompactRange,
  HASH_BYTES,
  consistencyProof,
  hashChildren,
  hashLeaf,
  inclusionProof,
  rootFromNodes,
  type NodeReader,
} from '../log/merkle.js';

/** Schema of the tree; the version is in the table name. Idempotent. */
export const MERKLE_SCHEMA_SQL = `CREATE TABLE IF NOT EXISTS merkle_nodes_v1 (
  level INTEGER NOT NULL CHECK (level BETWEEN 0 AND 63),
  idx INTEGER NOT NULL CHECK (idx >= 0),
  hash BLOB NOT NULL CHECK (length(hash) = ${HASH_BYTES}),
  PRIMARY KEY (level, idx)
) WITHOUT ROWID;`;

interface Statements {
  insertNode: Database.Statement<[number, number, Buffer]>;
  selectNode: Database.Statement<[number, number], Buffer>;
  selectSize: Database.Statement<[], number>;
  selectLevel: Database.Statement<[number], { idx: number; hash: Buffer }>;
  selectMaxLevel: Database.Statement<[], number | null>;
}

export interface AppendBatchResult {
  /** Index of the first leaf appended. */
  readonly firstIndex: number;
  /** Tree size after the batch. */
  readonly size: number;
}

export class MerkleStore {
  private readonly db: Database.Database;
  private prepared: Statements | undefined;
  /** Reads one complete-subtree hash; a missing or malformed row is LOG_STORE_INCONSISTENT. */
  readonly readNode: NodeReader = (level, index) => {
    const hash = this.statements.selectNode.get(level, index);
    if (hash === undefined || hash.length !== HASH_BYTES) {
      throw new LogError('LOG_STORE_INCONSISTENT', undefined, { level, index, found: hash === undefined ? 'none' : hash.length });
    }
    return hash;
  };

  constructor(db: Database.Database) {
    this.db = db;
  }

  /** Creates the tree's table if it is missing. Called by the store's migration step. */
  migrate(): void {
    this.db.exec(MERKLE_SCHEMA_SQL);
  }

  private get statements(): Statements {
    if (this.prepared === undefined) {
      const db = this.db;
      this.prepared = {
        insertNode: db.prepare<[number, number, Buffer]>('INSERT INTO merkle_nodes_v1 (level, idx, hash) VALUES (?, ?, ?)'),
        selectNode: db.prepare<[number, number], Buffer>('SELECT hash FROM merkle_nodes_v1 WHERE level = ? AND idx = ?').pluck(),
        // An index seek on the primary key: O(log n).
        selectSize: db.prepare<[], number>('SELECT COALESCE(MAX(idx) + 1, 0) FROM merkle_nodes_v1 WHERE level = 0').pluck(),
        selectLevel: db.prepare<[number], { idx: number; hash: Buffer }>(
          'SELECT idx, hash FROM merkle_nodes_v1 WHERE level = ? ORDER BY idx',
        ),
        selectMaxLevel: db.prepare<[], number | null>('SELECT MAX(level) FROM merkle_nodes_v1').pluck(),
      };
    }
    return this.prepared;
  }

  /** Number of leaves in the tree. */
  size(): number {
    return this.statements.selectSize.get() ?? 0;
  }

  /**
   * Appends one leaf (its bytes are hashed as RFC 9162 MTH({d}) = SHA-256(0x00 || d)) and returns its
   * index. Runs inside the caller's transaction, so the leaf and the record that carries it commit or roll
   * back together; called outside any transaction it wraps its own writes in one, so that they stay
   * atomic. With `expectedIndex`, refuses (LOG_APPEND_FAILED) unless the leaf lands at that index.
   */
  append(leafData: Uint8Array, expectedIndex?: number): number {
    const write = (): number => {
      const index = this.size();
      if (expectedIndex !== undefined && expectedIndex !== index) {
        throw new LogError('LOG_APPEND_FAILED', 'The leaf would not land at the expected index.', { expectedIndex, index });
      }
      // Write the leaf, then each subtree it completes: while the node is a right child, its left sibling
      // is stored and the parent becomes complete.
      let hash = hashLeaf(leafData);
      let level = 0;
      let idx = index;
      this.statements.insertNode.run(level, idx, hash);
      while (idx % 2 === 1) {
        hash = hashChildren(this.readNode(level, idx - 1), hash);
        level += 1;
        idx = (idx - 1) / 2;
        this.statements.insertNode.run(level, idx, hash);
      }
      return index;
    };
    return this.guardAppend(() => (this.db.inTransaction ? write() : this.db.transaction(write).immediate()));
  }

  /**
   * Appends many leaves in one transaction of its own (a savepoint when the caller already holds one).
   * The right edge of the tree is read once (popcount(size) reads); then every row is a plain insert.
   */
  appendBatch(leaves: Iterable<Uint8Array>): AppendBatchResult {
    const write = (): AppendBatchResult => {
      const firstIndex = this.size();
      const range = CompactRange.fromNodes(firstIndex, this.readNode);
      const insert = this.statements.insertNode;
      for (const leaf of leaves) {
        range.append(hashLeaf(leaf), (level, idx, hash) => {
          insert.run(level, idx, hash);
        });
      }
      return { firstIndex, size: range.size };
    };
    return this.guardAppend(() => this.db.transaction(write).immediate());
  }

  private guardAppend<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof LogError) throw err;
      throw new LogError('LOG_APPEND_FAILED', undefined, {}, { cause: err });
    }
  }

  /** The stored hash of leaf `index`. */
  leafHash(index: number): Buffer {
    const size = this.size();
    if (!Number.isSafeInteger(index) || index < 0 || index >= size) {
      throw new LogError('LOG_INDEX_OUT_OF_RANGE', undefined, { index, size });
    }
    return Buffer.from(this.readNode(0, index));
  }

  /** RFC 9162 root of the first `size` leaves (default: all), from popcount(size) stored subtrees. */
  root(size?: number): Buffer {
    return rootFromNodes(this.checkSize(size), this.readNode);
  }

  /** RFC 9162 section 2.1.3.1 inclusion proof of leaf `index` in the tree of `size` leaves (default: all). */
  inclusionProof(index: number, size?: number): Buffer[] {
    return inclusionProof(index, this.checkSize(size), this.readNode);
  }

  /** RFC 9162 section 2.1.4.1 consistency proof from `size1` to `size2` leaves (default: all). */
  consistencyProof(size1: number, size2?: number): Buffer[] {
    return consistencyProof(size1, this.checkSize(size2), this.readNode);
  }

  private checkSize(size: number | undefined): number {
    const current = this.size();
    if (size === undefined) return current;
    if (!Number.isSafeInteger(size) || size < 0 || size > current) {
      throw new LogError('LOG_SIZE_OUT_OF_RANGE', 'The tree does not have that many leaves yet.', { size, current });
    }
    return size;
  }

  /**
   * Full scan (O(n)): every stored interior node equals the hash of its two children, every complete
   * subtree is present, and nothing lies beyond the tree. Catches edited, deleted or inserted node rows
   * without a checkpoint; leaf hashes against leaf bytes are the record store's check.
   * Throws LOG_STORE_INCONSISTENT at the first fault.
   */
  checkNodes(): void {
    const size = this.size();
    const maxLevel = this.statements.selectMaxLevel.get() ?? 0;
    let width = size; // number of complete nodes at the current level
    let below: Buffer[] | undefined;
    for (let level = 0; level <= Math.max(maxLevel, 0); level++) {
      const rows = this.statements.selectLevel.all(level);
      if (rows.length !== width) {
        throw new LogError('LOG_STORE_INCONSISTENT', 'A level of the tree has missing or extra nodes.', {
          level,
          expected: width,
          found: rows.length,
        });
      }
      const hashes: Buffer[] = [];
      rows.forEach(({ idx, hash }, position) => {
        if (idx !== position || hash.length !== HASH_BYTES) {
          throw new LogError('LOG_STORE_INCONSISTENT', undefined, { level, index: position, found: idx });
        }
        if (below !== undefined && !hashChildren(below[2 * idx]!, below[2 * idx + 1]!).equals(hash)) {
          throw new LogError('LOG_STORE_INCONSISTENT', 'A stored node is not the hash of its children.', { level, index: idx });
        }
        hashes.push(hash);
      });
      below = hashes;
      width = Math.floor(width / 2);
    }
  }
}
