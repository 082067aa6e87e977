/** `checkpoints_v1`: the signed checkpoints of the runner's log, one per tree size (the first one signed stays). */
import type { SqliteDatabase, Statement } from './sqlite.js';

export interface StoredCheckpoint {
  size: number;
  /** The C2SP signed note. */
  note: string;
  signedAt: string;
}

export const CHECKPOINTS_SCHEMA_SQL = `CREATE TABLE checkpoints_v1 (
  size INTEGER PRIMARY KEY,
  note TEXT NOT NULL,
  signed_at TEXT NOT NULL
);`;

export class CheckpointTable {
  private readonly statements: { insert: Statement; latest: Statement; all: Statement };

  constructor(db: SqliteDatabase) {
    this.statements = {
      insert: db.prepare('INSERT OR IGNORE INTO checkpoints_v1 (size, note, signed_at) VALUES (?, ?, ?)'),
      latest: db.prepare('SELECT size, note, signed_at AS signedAt FROM checkpoints_v1 ORDER BY size DESC LIMIT 1'),
      all: db.prepare('SELECT size, note, signed_at AS signedAt FROM checkpoints_v1 ORDER BY size'),
    };
  }

  insert(checkpoint: StoredCheckpoint): void {
    this.statements.insert.run(checkpoint.size, checkpoint.note, checkpoint.signedAt);
  }

  latest(): StoredCheckpoint | undefined {
    const row = this.statements.latest.get() as unknown as StoredCheckpoint | undefined;
    return row && { size: row.size, note: row.note, signedAt: row.signedAt };
  }

  all(): StoredCheckpoint[] {
    return (this.statements.all.all() as unknown as StoredCheckpoint[]).map((row) => ({ size: row.size, note: row.note, signedAt: row.signedAt }));
  }
}
