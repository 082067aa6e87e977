/**
 * The runner's Merkle log in SQLite: the only SQL that touches the tree.
 *
 * One table holds the hash of every complete subtree (RFC 9162 section 2.1.1): level 0 rows are leaf
 * hashes, and the row (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level). Appending a leaf
 * writes its hash and the hashes of the subtrees it completes (amortised two rows, at most log2 n + 1);
 * any root, inclusion proof or consistency proof is O(log n) point reads, computed by the pure functions
 * of runner/log/merkle.ts. The leaf bytes themselves live with the records (runner/store/store.ts).
 *
 * This class never opens a database: it is given the store's handle, and `migrate()` is called by the
 * store's migration step. Statements are prepared once, on first use after migration. Inside one
 * transaction the tree's size and right edge are read once and then kept (the write lock is held, so they
 * cannot change underneath); the cache is dropped when the transaction ends, committed or not.
 */
import { StoreError } from './errors.js';
import { toBuffer, type SqliteDatabase, type Statement } from './sqlite.js';
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
  insertNode: Statement;
  selectNode: Statement;
  selectSize: Statement;
  selectLevel: Statement;
  selectMaxLevel: Statement;
}

export interface AppendBatchResult {
  /** Index of the first leaf appended. */
  readonly firstIndex: number;
  /** Tree size after the batch. */
  readonly size: number;
}

export class MerkleTable {
  private readonly db: SqliteDatabase;
  private prepared: Statements | undefined;
  /** The right edge of the tree while a transaction holds the write lock; dropped when it ends. */
  private edge: CompactRange | undefined;
  /** Reads one complete-subtree hash; a missing or malformed row is STORE_TREE_INCONSISTENT. */
  readonly readNode: NodeReader = (level, index) => {
    const row = this.statements.selectNode.get(level, index) as { hash: Uint8Array } | undefined;
    if (row === undefined || row.hash.length !== HASH_BYTES) {
      throw new StoreError('STORE_TREE_INCONSISTENT', 'The stored Merkle tree is missing a node or holds a malformed one.', {
        level,
        index,
        found: row === undefined ? 'none' : row.hash.length,
      });
    }
    return toBuffer(row.hash);
  };

  constructor(db: SqliteDatabase) {
    this.db = db;
    db.onTransactionEnd(() => {
      this.edge = undefined;
    });
  }

  /** Creates the tree's table if it is missing. Called by the store's migration step. */
  migrate(): void {
    this.db.exec(MERKLE_SCHEMA_SQL);
    this.prepared = undefined;
  }

  private get statements(): Statements {
    if (this.prepared === undefined) {
      const db = this.db;
      this.prepared = {
        insertNode: db.prepare('INSERT INTO merkle_nodes_v1 (level, idx, hash) VALUES (?, ?, ?)'),
        selectNode: db.prepare('SELECT hash FROM merkle_nodes_v1 WHERE level = ? AND idx = ?'),
        // An index seek on the primary key: O(log n).
        selectSize: db.prepare('SELECT COALESCE(MAX(idx) + 1, 0) AS size FROM merkle_nodes_v1 WHERE level = 0'),
        selectLevel: db.prepare('SELECT idx, hash FROM merkle_nodes_v1 WHERE level = ? ORDER BY idx'),
        selectMaxLevel: db.prepare('SELECT MAX(level) AS level FROM merkle_nodes_v1'),
      };
    }
    return this.prepared;
  }

  /** Number of leaves in the tree. */
  size(): number {
    if (this.edge !== undefined) return this.edge.size;
    return Number((this.statements.selectSize.get() as { size: number }).size);
  }

  /**
   * Appends one leaf (its bytes are hashed as RFC 9162 MTH({d}) = SHA-256(0x00 || d)) and returns its
   * index. Runs inside the caller's transaction, so the leaf and the record that carries it commit or roll
   * back together; called outside any transaction it opens its own. With `expectedIndex`, refuses
   * (STORE_TREE_INCONSISTENT) unless the leaf lands at that index.
   */
  append(leafData: Uint8Array, expectedIndex?: number): number {
    // Inside the caller's transaction the caller's savepoint or rollback undoes a partial append; alone, the
    // append is its own transaction.
    if (!this.db.inTransaction) return this.db.transaction(() => this.append(leafData, expectedIndex));
    try {
      // The right edge is read once per transaction (popcount(size) reads); later appends reuse it.
      this.edge ??= CompactRange.fromNodes(this.size(), this.readNode);
      const index = this.edge.size;
      if (expectedIndex !== undefined && expectedIndex !== index) {
        throw new StoreError('STORE_TREE_INCONSISTENT', 'The leaf would not land at the expected index.', { expectedIndex, index });
      }
      const insert = this.statements.insertNode;
      this.edge.append(hashLeaf(leafData), (level, idx, hash) => {
        insert.run(level, idx, hash);
      });
      return index;
    } catch (err) {
      // The cached edge may be half-updated; the next append reads it again from what the database holds.
      this.edge = undefined;
      throw err;
    }
  }

  /** Appends many leaves in one transaction of its own (a savepoint when the caller already holds one). */
  appendBatch(leaves: Iterable<Uint8Array>): AppendBatchResult {
    return this.db.transaction(() => {
      const firstIndex = this.size();
      for (const leaf of leaves) this.append(leaf);
      return { firstIndex, size: this.size() };
    });
  }

  /** The stored hash of leaf `index`. */
  leafHash(index: number): Buffer {
    const size = this.size();
    if (!Number.isSafeInteger(index) || index < 0 || index >= size) {
      throw new StoreError('STORE_TREE_RANGE', 'The leaf index is not inside the stored tree.', { index, size });
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
      throw new StoreError('STORE_TREE_RANGE', 'The stored tree does not have that many leaves yet.', { size, current });
    }
    return size;
  }

  /**
   * Full scan (O(n)): every stored interior node equals the hash of its two children, every complete
   * subtree is present, and nothing lies beyond the tree. Catches edited, deleted or inserted node rows
   * without a checkpoint; leaf hashes against leaf bytes are the record store's check.
   * Throws STORE_TREE_INCONSISTENT at the first fault.
   */
  checkNodes(): void {
    const size = this.size();
    const maxLevel = Number((this.statements.selectMaxLevel.get() as { level: number | null }).level ?? 0);
    let width = size; // number of complete nodes at the current level
    let below: Buffer[] | undefined;
    for (let level = 0; level <= Math.max(maxLevel, 0); level++) {
      const rows = (this.statements.selectLevel.all(level) as { idx: number; hash: Uint8Array }[]).map((r) => ({ idx: r.idx, hash: toBuffer(r.hash) }));
      if (rows.length !== width) {
        throw new StoreError('STORE_TREE_INCONSISTENT', 'A level of the tree has missing or extra nodes.', {
          level,
          expected: width,
          found: rows.length,
        });
      }
      const hashes: Buffer[] = [];
      rows.forEach(({ idx, hash }, position) => {
        if (idx !== position || hash.length !== HASH_BYTES) {
          throw new StoreError('STORE_TREE_INCONSISTENT', 'A level of the tree has a node out of place.', { level, index: position, found: idx });
        }
        if (below !== undefined && !hashChildren(below[2 * idx]!, below[2 * idx + 1]!).equals(hash)) {
          throw new StoreError('STORE_TREE_INCONSISTENT', 'A stored node is not the hash of its children.', { level, index: idx });
        }
        hashes.push(hash);
      });
      below = hashes;
      width = Math.floor(width / 2);
    }
  }
}
