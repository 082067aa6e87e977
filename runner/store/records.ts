/**
 * `records_v1`: every record the runner appends, in order. A record's `leaf` column holds the exact bytes
 * that are leaf `seq` of the runner's Merkle log (runner/log/record.ts owns their encoding). Inside one
 * transaction the next sequence number is read once and then counted on (the write lock is held).
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

export const RECORDS_SCHEMA_SQL = `CREATE TABLE records_v1 (
  seq INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  at TEXT NOT NULL,
  run_id TEXT,
  leaf BLOB NOT NULL
);
CREATE INDEX records_v1_run ON records_v1(run_id);`;

export class RecordTable {
  private readonly statements: { nextSeq: Statement; insert: Statement; page: Statement; count: Statement };
  private nextSeqInTransaction: number | undefined;

  constructor(db: SqliteDatabase) {
    this.statements = {
      nextSeq: db.prepare('SELECT COALESCE(MAX(seq) + 1, 0) AS next FROM records_v1'),
      insert: db.prepare('INSERT INTO records_v1 (seq, kind, at, run_id, leaf) VALUES (?, ?, ?, ?, ?)'),
      page: db.prepare('SELECT seq, kind, at, leaf FROM records_v1 WHERE seq >= ? ORDER BY seq LIMIT ?'),
      count: db.prepare('SELECT COUNT(*) AS n FROM records_v1'),
    };
    db.onTransactionEnd(() => {
      this.nextSeqInTransaction = undefined;
    });
  }

  /** The sequence number the next record gets. Call inside the transaction that inserts it. */
  nextSeq(): number {
    this.nextSeqInTransaction ??= Number((this.statements.nextSeq.get() as { next: number }).next);
    return this.nextSeqInTransaction;
  }

  insert(record: StoredRecord, runId: string | undefined): void {
    this.statements.insert.run(record.seq, record.kind, record.at, runId ?? null, record.leaf);
    this.nextSeqInTransaction = record.seq + 1;
  }

  count(): number {
    return Number((this.statements.count.get() as { n: number }).n);
  }

  *from(fromSeq = 0, pageSize = 1000): Generator<StoredRecord> {
    for (let next = fromSeq; ; ) {
      const page = this.statements.page.all(next, pageSize) as { seq: number; kind: RecordKind; at: string; leaf: Uint8Array }[];
      for (const row of page) yield { seq: row.seq, kind: row.kind, at: row.at, leaf: toBuffer(row.leaf) };
      if (page.length < pageSize) return;
      next = page[page.length - 1]!.seq + 1;
    }
  }
}
