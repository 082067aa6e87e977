/**
 * The air-gapped spool's tables (schema 8; unreleased until issue 10 ships, so its DDL is still this work's
 * to shape):
 *   - `spool_inbox_v1`: the capsule files of a spool folder (DIR/in/) the runner has decided, by the SHA-256
 *     of their bytes, written in the transaction of the record that decides each (as the feed cursor is), so
 *     a file is decided once whatever happens to it on disk (copied twice, under another name, left there).
 *   - `spool_checkpoints_v1`: the checkpoints written to DIR/out/checkpoints/, by size, so the next one
 *     carries a consistency proof from the last one written (the importing witness checks the chain).
 */
import type { SqliteDatabase, Statement } from './sqlite.js';

export const SPOOL_INBOX_SCHEMA_SQL = `CREATE TABLE spool_inbox_v1 (
  file_digest TEXT PRIMARY KEY,
  decided_seq INTEGER NOT NULL,
  decided_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE spool_checkpoints_v1 (
  size INTEGER PRIMARY KEY,
  file_name TEXT NOT NULL,
  written_at TEXT NOT NULL
);`;

export class SpoolTable {
  private readonly statements: { decided: Statement; decide: Statement; lastCheckpoint: Statement; addCheckpoint: Statement };

  constructor(db: SqliteDatabase) {
    this.statements = {
      decided: db.prepare('SELECT decided_seq AS seq FROM spool_inbox_v1 WHERE file_digest = ?'),
      decide: db.prepare('INSERT INTO spool_inbox_v1 (file_digest, decided_seq, decided_at) VALUES (?, ?, ?)'),
      lastCheckpoint: db.prepare('SELECT MAX(size) AS size FROM spool_checkpoints_v1'),
      addCheckpoint: db.prepare('INSERT INTO spool_checkpoints_v1 (size, file_name, written_at) VALUES (?, ?, ?) ON CONFLICT (size) DO NOTHING'),
    };
  }

  /** The record that decided the file with this digest, if one did. */
  decidedSeq(fileDigest: string): number | undefined {
    const row = this.statements.decided.get(fileDigest) as { seq: number } | undefined;
    return row === undefined ? undefined : Number(row.seq);
  }

  /** Throws (a primary key conflict) when the file was decided already: the deciding transaction rolls back. */
  decide(fileDigest: string, seq: number, at: string): void {
    this.statements.decide.run(fileDigest, seq, at);
  }

  /** The size of the last checkpoint written to the spool, 0 when none. */
  lastCheckpointSize(): number {
    const row = this.statements.lastCheckpoint.get() as { size: number | null };
    return row.size === null ? 0 : Number(row.size);
  }

  addCheckpoint(size: number, fileName: string, at: string): void {
    this.statements.addCheckpoint.run(size, fileName, at);
  }
}
