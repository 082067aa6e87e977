/**
 * The runner's Merkle log in SQLite: the only SQL that reads or writes the tree's hashes.
 *
 * The tree keeps the hash of every complete subtree (RFC 9162 section 2.1.1), each in the row of the leaf
 * that completes it. Row n (leaf n) holds a `tree` blob: the 32-byte hashes, bottom-up, of the leaf itself
 * (level 0, SHA-256(0x00 || leaf)) and of each subtree leaf n completes, 1 + (trailing one bits of n) in
 * all. So the node (level L, index k), which covers leaves [k * 2^L, (k + 1) * 2^L), is at byte 32 * L of
 * row (k + 1) * 2^L - 1. Appending a leaf is one row insert (atomic by construction, append-only on the
 * rowid); any root, inclusion proof or consistency proof is O(log n) point reads, computed by the pure
 * functions of runner/log/merkle.ts.
 *
 * For the runner the rows are the records themselves (records_v1: the record and its tree hashes are one
 * row, written by runner/store/store.ts with the blob this class computes). A standalone table of the same
 * shape (merkle_v2) serves tests, benchmarks and interop checks, which need a tree without records. Which
 * table a MerkleTable works on is one of the layouts below, chosen in code, never taken from input.
 *
 * This class never opens a database: it is given the store's handle. Statements are prepared once, on
 * first use after migration. The tree's right edge (popcount(size) hashes) is read once and then kept
 * across this connection's transactions; it is dropped when a transaction rolls back or another connection
 * has written (runner/store/sqlite.ts).
 */
import { StoreError } from './errors.js';
import { toBuffer, type SqliteDatabase, type Statement } from './sqlite.js';
import { CompactRange, HASH_BYTES, consistencyProof, hashChildren, hashLeaf, inclusionProof, rootFromNodes, type NodeReader } from '../log/merkle.js';

/**
 * The tree column of a table keyed by `key`: exactly the hashes its row must hold, 32 * (1 + trailing ones
 * of key) bytes. (key + 1) & -(key + 1) is 2^(trailing ones of key), so the blob length is fixed by the key.
 */
export function treeColumnSql(key: 'seq' | 'idx'): string {
  return `tree BLOB NOT NULL CHECK (length(tree) % ${HASH_BYTES} = 0 AND (1 << (length(tree) / ${HASH_BYTES} - 1)) = ((${key} + 1) & -(${key} + 1)))`;
}

/** Schema of the standalone tree (no records); the version is in the table name. Idempotent. */
export const MERKLE_SCHEMA_SQL = `CREATE TABLE IF NOT EXISTS merkle_v2 (
  idx INTEGER PRIMARY KEY CHECK (idx >= 0),
  ${treeColumnSql('idx')}
);`;

interface TreeLayout {
  /** The table whose rows are the leaves, one per key 0, 1, 2, ... */
  readonly table: string;
  /** Its INTEGER PRIMARY KEY: the leaf index. */
  readonly key: string;
  /** The blob of the hashes the leaf completes. */
  readonly tree: string;
  /** The leaf bytes, when the table keeps them (checkNodes then checks each leaf hash against its leaf). */
  readonly leaf?: string;
  /** Creates the table (standalone trees only: the records table is the store's migrations'). */
  readonly schema?: string;
}

/** The tables a MerkleTable can work on. Names in SQL come from here only. */
export const TREE_LAYOUTS = {
  /** The runner's log: the hashes live in each record's own row (runner/store/records.ts). */
  records: { table: 'records_v1', key: 'seq', tree: 'tree', leaf: 'leaf' },
  /** A tree without records (tests, benchmarks, interop): one row per leaf. */
  standalone: { table: 'merkle_v2', key: 'idx', tree: 'tree', schema: MERKLE_SCHEMA_SQL },
} as const satisfies Record<string, TreeLayout>;

export type TreeLayoutName = keyof typeof TREE_LAYOUTS;

/** 1 + the number of trailing one bits of `index`: how many hashes row `index` holds. */
export function treeHashCount(index: number): number {
  if (index < 0x7fffffff) return 32 - Math.clz32(~index & (index + 1));
  let count = 1;
  for (let n = index; n % 2 === 1; n = (n - 1) / 2) count += 1;
  return count;
}

/**
 * Appends the leaf `leafData` to `range` and returns the tree blob of its row: the leaf hash and the hash
 * of every subtree it completes, bottom-up. The one encoding of a row's hashes, for the store and for
 * whoever must rebuild rows (tests that play the attacker).
 */
export function appendTreeBlob(range: CompactRange, leafData: Uint8Array): Buffer {
  const tree = Buffer.allocUnsafe(treeHashCount(range.size) * HASH_BYTES);
  range.append(hashLeaf(leafData), (level, _index, hash) => {
    hash.copy(tree, level * HASH_BYTES);
  });
  return tree;
}

interface Statements {
  insert: Statement | undefined;
  selectTree: Statement;
  selectSize: Statement;
  scan: Statement;
}

export interface AppendBatchResult {
  /** Index of the first leaf appended. */
  readonly firstIndex: number;
  /** Tree size after the batch. */
  readonly size: number;
}

export class MerkleTable {
  private readonly db: SqliteDatabase;
  private readonly layout: TreeLayout;
  private prepared: Statements | undefined;
  /** The right edge of the tree as this connection last wrote it; trusted only inside a write transaction. */
  private edge: CompactRange | undefined;

  /**
   * Reads one complete-subtree hash from the row that completes it. A missing row, or a row whose blob is
   * not exactly the hashes its index says it completes, is STORE_TREE_INCONSISTENT.
   */
  readonly readNode: NodeReader = (level, index) => {
    const row = (index + 1) * 2 ** level - 1;
    const found = this.statements.selectTree.get(row) as { tree: Uint8Array } | undefined;
    if (found === undefined || found.tree.length !== treeHashCount(row) * HASH_BYTES) {
      throw new StoreError('STORE_TREE_INCONSISTENT', 'The stored Merkle tree is missing a node or holds a malformed one.', {
        level,
        index,
        found: found === undefined ? 'none' : found.tree.length,
      });
    }
    return toBuffer(found.tree).subarray(level * HASH_BYTES, (level + 1) * HASH_BYTES);
  };

  /** A tree over `layout` (the standalone table by default; the Store passes 'records'). */
  constructor(db: SqliteDatabase, layout: TreeLayoutName = 'standalone') {
    const chosen: TreeLayout | undefined = Object.hasOwn(TREE_LAYOUTS, layout) ? TREE_LAYOUTS[layout] : undefined;
    if (chosen === undefined) throw new TypeError(`There is no tree layout named ${JSON.stringify(layout)}.`);
    this.db = db;
    this.layout = chosen;
    db.onInvalidate(() => {
      this.edge = undefined;
    });
  }

  /** Creates a standalone tree's table if it is missing (the records table is the store's migrations'). */
  migrate(): void {
    if (this.layout.schema !== undefined) this.db.exec(this.layout.schema);
    this.prepared = undefined;
  }

  private get statements(): Statements {
    if (this.prepared === undefined) {
      const { table, key, tree, leaf } = this.layout;
      const db = this.db;
      this.prepared = {
        // Only a standalone tree takes bare leaves; the records table takes a leaf with its record.
        insert: this.layout.schema === undefined ? undefined : db.prepare(`INSERT INTO ${table} (${key}, ${tree}) VALUES (?, ?)`),
        selectTree: db.prepare(`SELECT ${tree} AS tree FROM ${table} WHERE ${key} = ?`),
        // A seek on the rowid: O(log n).
        selectSize: db.prepare(`SELECT COALESCE(MAX(${key}) + 1, 0) AS size FROM ${table}`),
        scan: db.prepare(`SELECT ${key} AS idx, ${tree} AS tree${leaf === undefined ? '' : `, ${leaf} AS leaf`} FROM ${table} ORDER BY ${key}`),
      };
    }
    return this.prepared;
  }

  /** Number of leaves in the tree. */
  size(): number {
    // The cached edge is what the database holds only under the write lock (not in a read snapshot, which may
    // see another connection's later commits).
    if (this.edge !== undefined && this.db.inWriteTransaction) return this.edge.size;
    return Number((this.statements.selectSize.get() as { size: number }).size);
  }

  /** The index the next leaf gets, inside the write transaction that appends it. */
  nextIndex(): number {
    if (!this.db.inWriteTransaction) throw new StoreError('STORE_WRITE_FAILED', 'The next leaf index is known only inside a write transaction.', {});
    // The right edge is read once (popcount(size) reads); later appends, in this transaction or the next, reuse it.
    this.edge ??= CompactRange.fromNodes(this.size(), this.readNode);
    return this.edge.size;
  }

  /**
   * Appends one leaf (hashed as RFC 9162 MTH({d}) = SHA-256(0x00 || d)): computes the tree blob of its row
   * and hands it to `write`, which inserts the row. Returns the leaf's index. Runs inside the caller's
   * transaction, so the row commits or rolls back with everything else; called outside any transaction it
   * opens its own. With `expectedIndex`, refuses (STORE_TREE_INCONSISTENT) unless the leaf lands there.
   */
  appendRow(leafData: Uint8Array, write: (index: number, tree: Buffer) => void, expectedIndex?: number): number {
    if (!this.db.inTransaction) return this.db.transaction(() => this.appendRow(leafData, write, expectedIndex));
    const index = this.nextIndex(); // refuses inside a read snapshot
    if (expectedIndex !== undefined && expectedIndex !== index) {
      throw new StoreError('STORE_TREE_INCONSISTENT', 'The leaf would not land at the expected index.', { expectedIndex, index });
    }
    try {
      write(index, appendTreeBlob(this.edge!, leafData));
      return index;
    } catch (err) {
      // The cached edge has moved on without its row; the next append reads it again from what the database holds.
      this.edge = undefined;
      throw err;
    }
  }

  /** Appends one leaf to a standalone tree and returns its index (see appendRow). */
  append(leafData: Uint8Array, expectedIndex?: number): number {
    const insert = this.statements.insert;
    if (insert === undefined) {
      throw new StoreError('STORE_WRITE_FAILED', 'The records tree takes a leaf only with its record (Store.appendRecord).', {});
    }
    return this.appendRow(leafData, (index, tree) => insert.run(index, tree), expectedIndex);
  }

  /** Appends many leaves to a standalone tree in one transaction (the caller's, when there is one). */
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
   * Full scan (O(n), O(log n) memory), over one snapshot: every row checks as TreeRowChecker checks it.
   * Catches edited, deleted or inserted rows and hashes without a checkpoint. Throws STORE_TREE_INCONSISTENT
   * at the first fault.
   */
  checkNodes(): void {
    this.db.snapshot(() => {
      const checker = new TreeRowChecker();
      for (const row of this.statements.scan.iterate() as Iterable<{ idx: number; tree: Uint8Array; leaf?: Uint8Array }>) {
        checker.next(row.idx, toBuffer(row.tree), row.leaf);
      }
    });
  }
}

/**
 * Checks the rows of a tree, given in order: they are numbered 0, 1, 2, ... with no gap; each row's blob
 * holds exactly the hashes its index completes; each leaf hash is the hash of the row's leaf (when the
 * leaf is given); and each stored parent is the hash of its two stored children (the right one in the same
 * row, the left one in the row that completed it). Throws STORE_TREE_INCONSISTENT at the first fault.
 */
export class TreeRowChecker {
  /** The stored right edge of the rows seen so far: complete subtrees, largest (lowest level) first. */
  private readonly edge: Buffer[] = [];
  private index = 0;

  next(index: number, tree: Buffer, leaf?: Uint8Array): void {
    if (index !== this.index) {
      throw new StoreError('STORE_TREE_INCONSISTENT', 'A row of the tree is missing or out of place.', { index: this.index, found: index });
    }
    const count = treeHashCount(index);
    if (tree.length !== count * HASH_BYTES) {
      throw new StoreError('STORE_TREE_INCONSISTENT', 'A row of the tree does not hold the hashes its index completes.', {
        index,
        expected: count * HASH_BYTES,
        found: tree.length,
      });
    }
    const hashAt = (level: number): Buffer => tree.subarray(level * HASH_BYTES, (level + 1) * HASH_BYTES);
    if (leaf !== undefined && !hashLeaf(leaf).equals(hashAt(0))) {
      throw new StoreError('STORE_TREE_INCONSISTENT', 'A stored leaf hash is not the hash of its leaf.', { level: 0, index });
    }
    for (let level = 1; level < count; level++) {
      const left = this.edge.pop()!; // the row completes `count - 1` subtrees, so the edge holds their left halves
      if (!hashChildren(left, hashAt(level - 1)).equals(hashAt(level))) {
        throw new StoreError('STORE_TREE_INCONSISTENT', 'A stored node is not the hash of its children.', {
          level,
          index: (index + 1) / 2 ** level - 1,
        });
      }
    }
    this.edge.push(hashAt(count - 1));
    this.index += 1;
  }
}
