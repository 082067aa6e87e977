/**
 * The tree's earlier layout and the migration out of it, kept for databases written by earlier runners.
 *
 * Schemas 2 to 4 kept the tree in its own table, merkle_nodes_v1 (one WITHOUT ROWID row per complete
 * subtree, keyed (level, idx)), beside records_v1. Schema 5 keeps each subtree's hash in the row of the
 * record that completes it (runner/store/merkle.ts). Both steps run inside the store's migration
 * transaction (runner/store/store.ts), so a step that throws leaves the database as it was.
 */
import { StoreError, type StoreErrorDetails } from './errors.js';
import { TreeRowChecker, treeColumnSql, treeHashCount } from './merkle.js';
import type { SqliteDatabase } from './sqlite.js';
import { CompactRange, HASH_BYTES, hashLeaf } from '../log/merkle.js';

/** Schema 2's tree table, as schemas 2 to 4 had it. */
export const MERKLE_NODES_V1_SQL = `CREATE TABLE IF NOT EXISTS merkle_nodes_v1 (
  level INTEGER NOT NULL CHECK (level BETWEEN 0 AND 63),
  idx INTEGER NOT NULL CHECK (idx >= 0),
  hash BLOB NOT NULL CHECK (length(hash) = ${HASH_BYTES}),
  PRIMARY KEY (level, idx)
) WITHOUT ROWID;`;

/**
 * Schema 2: the records written before the log existed become its first leaves, in order, in
 * merkle_nodes_v1 (which schema 5 then moves into the records' rows). Leaves are hashed here because no
 * tree existed before: there is nothing stored to copy.
 */
export function buildMerkleNodesV1(db: SqliteDatabase): void {
  const insert = db.prepare('INSERT INTO merkle_nodes_v1 (level, idx, hash) VALUES (?, ?, ?)');
  const range = new CompactRange();
  for (const row of db.prepare('SELECT leaf FROM records_v1 ORDER BY seq').iterate() as Iterable<{ leaf: Uint8Array }>) {
    range.append(hashLeaf(row.leaf), (level, idx, hash) => {
      insert.run(level, idx, hash);
    });
  }
}

/** Schema 5's records table: schema 1's columns and the tree hashes each record's leaf completes. */
const RECORDS_WITH_TREE_SQL = `CREATE TABLE records_v1_next (
  seq INTEGER PRIMARY KEY CHECK (seq >= 0),
  kind TEXT NOT NULL,
  at TEXT NOT NULL,
  run_id TEXT,
  leaf BLOB NOT NULL,
  ${treeColumnSql('seq')}
);`;

/**
 * Schema 5: records_v1 gains its `tree` column, filled with the hashes merkle_nodes_v1 holds, and
 * merkle_nodes_v1 is dropped. The hashes are copied, never recomputed from the leaves (recomputing would
 * launder a tampered tree into one that agrees with the records), and every row is checked as checkNodes
 * checks it (each leaf hash against its leaf, each parent against its children) as it is copied. Whatever
 * cannot be carried over exactly, or does not check, is refused with STORE_TREE_INCONSISTENT: records not
 * numbered 0, 1, 2 and on, a node a record needs missing or malformed, nodes no record completes (a tree
 * larger than the records, say after records were deleted), an edited node or leaf. The migration's
 * transaction then rolls back and the database stays at schema 4 as it was, for whoever looks into it: a
 * tree that does not check is not rewritten into the new layout.
 *
 * One pass, no point reads: row n takes node (L, (n + 1) / 2^L - 1) for each level L it completes, and for
 * each level those are 0, 1, 2, ... in order, so every level of merkle_nodes_v1 is read once, in order.
 */
export function moveTreeIntoRecords(db: SqliteDatabase): void {
  db.exec(RECORDS_WITH_TREE_SQL);
  const insert = db.prepare('INSERT INTO records_v1_next (seq, kind, at, run_id, leaf, tree) VALUES (?, ?, ?, ?, ?, ?)');
  const levels: Iterator<{ idx: number; hash: unknown }>[] = [];
  const nodesOf = (level: number): Iterator<{ idx: number; hash: unknown }> =>
    (levels[level] ??= db.prepare('SELECT idx, hash FROM merkle_nodes_v1 WHERE level = ? ORDER BY idx').iterate(level) as Iterator<{
      idx: number;
      hash: unknown;
    }>);
  const checker = new TreeRowChecker();
  type Row = { seq: number; kind: string; at: string; run_id: string | null; leaf: Uint8Array };
  let seq = 0;
  try {
    for (const record of db.prepare('SELECT seq, kind, at, run_id, leaf FROM records_v1 ORDER BY seq').iterate() as Iterable<Row>) {
      if (record.seq !== seq) throw notMigrated('the records are not numbered 0, 1, 2 and on', { index: seq, found: record.seq });
      const count = treeHashCount(seq);
      const tree = Buffer.alloc(count * HASH_BYTES);
      for (let level = 0; level < count; level++) {
        const index = (seq + 1) / 2 ** level - 1;
        const next = nodesOf(level).next();
        const found = next.done ? undefined : next.value;
        if (found === undefined || found.idx !== index || !(found.hash instanceof Uint8Array) || found.hash.length !== HASH_BYTES) {
          throw notMigrated('a node is missing or malformed', { level, index, found: found === undefined ? 'none' : `idx ${found.idx}` });
        }
        tree.set(found.hash, level * HASH_BYTES);
      }
      try {
        checker.next(seq, tree, record.leaf);
      } catch (err) {
        if (!(err instanceof StoreError) || err.code !== 'STORE_TREE_INCONSISTENT') throw err;
        const reason = err.message.replace(/^./, (c) => c.toLowerCase()).replace(/\.$/, '');
        throw notMigrated(reason, err.details as StoreErrorDetails['STORE_TREE_INCONSISTENT'], err);
      }
      insert.run(record.seq, record.kind, record.at, record.run_id, record.leaf, tree);
      seq += 1;
    }
    // Every level read to its end: a node left over is one that no record completes.
    levels.forEach((nodes, level) => {
      const next = nodes.next();
      if (!next.done) throw notMigrated('it holds nodes that no record completes', { level, index: next.value.idx });
    });
    const above = db.prepare('SELECT level, idx FROM merkle_nodes_v1 WHERE level >= ? LIMIT 1').get(levels.length) as
      { level: number; idx: number } | undefined;
    if (above !== undefined) throw notMigrated('it holds nodes that no record completes', { level: above.level, index: above.idx });
  } finally {
    for (const nodes of levels) nodes.return?.();
  }
  db.exec('DROP TABLE records_v1; ALTER TABLE records_v1_next RENAME TO records_v1; DROP TABLE merkle_nodes_v1;');
}

function notMigrated(reason: string, details: StoreErrorDetails['STORE_TREE_INCONSISTENT'], cause?: unknown): StoreError {
  return new StoreError(
    'STORE_TREE_INCONSISTENT',
    `The stored Merkle tree cannot be moved into the records (schema 5), so the database is left as it is: ${reason}.`,
    details,
    cause === undefined ? undefined : { cause },
  );
}
