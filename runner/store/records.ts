/**
 * `records_v1`: every record the runner appends, in order. A record's `leaf` column holds the exact bytes
 * that are leaf `seq` of the runner's Merkle log (runner/log/record.ts owns their encoding), and its `tree`
 * column the hashes of the log's subtrees that this leaf completes (runner/store/merkle.ts computes them,
 * reads them and checks them). A record and its place in the tree are one row, one insert.
 */
import type { RecordKind } from '../log/record.js';
import { toBuffer, type SqliteDatabase, type Statement } from './sqlite.js';

/** A record as stored: its place in the log, its kind and time, and the leaf bytes. */
export interface StoredRecord {
  seq: number;
  kind: RecordKind;
  at: string;
  leaf: Buffer;
}

/** Schema 1's records table; schema 5 adds the `tree` column (runner/store/tree-migrations.ts). */
export const RECORDS_SCHEMA_SQL = `CREATE TABLE records_v1 (
  seq INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  at TEXT NOT NULL,
  run_id TEXT,
  leaf BLOB NOT NULL
);
CREATE INDEX records_v1_run ON records_v1(run_id);`;

export class RecordTable {
  private readonly statements: { insert: Statement; page: Statement; count: Statement };

  /** Prepares against the current schema: construct after migration. */
  constructor(db: SqliteDatabase) {
    this.statements = {
      insert: db.prepare('INSERT INTO records_v1 (seq, kind, at, run_id, leaf, tree) VALUES (?, ?, ?, ?, ?, ?)'),
      page: db.prepare('SELECT seq, kind, at, leaf FROM records_v1 WHERE seq >= ? ORDER BY seq LIMIT ?'),
      count: db.prepare('SELECT COUNT(*) AS n FROM records_v1'),
    };
  }

  /** Inserts the record's row with its tree hashes (the blob MerkleTable.appendRow hands over). */
  insert(record: StoredRecord, runId: string | undefined, tree: Uint8Array): void {
    this.statements.insert.run(record.seq, record.kind, record.at, runId ?? null, record.leaf, tree);
  }

  count(): number {
    return Number((this.statements.count.get() as { n: number }).n);
  }

  *from(fromSeq = 0, pageSize = 1000): Generator<StoredRecord> {
    for (let next = fromSeq; ;) {
      const page = this.statements.page.all(next, pageSize) as { seq: number; kind: RecordKind; at: string; leaf: Uint8Array }[];
      for (const row of page) yield { seq: row.seq, kind: row.kind, at: row.at, leaf: toBuffer(row.leaf) };
      if (page.length < pageSize) return;
      next = page[page.length - 1]!.seq + 1;
    }
  }
}
