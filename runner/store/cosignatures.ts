/**
 * `cosignatures_v1`: the C2SP cosignatures (cosignature/v1) witnesses returned for the runner's checkpoints,
 * verified against the trust document's witness keys before they are kept. One per checkpoint size and
 * witness name; `log verify` shows them and the size a witness last cosigned is where the next consistency
 * proof starts.
 */
import type { SqliteDatabase, Statement } from './sqlite.js';

export interface StoredCosignature {
  /** The checkpoint's tree size. */
  size: number;
  /** The witness's key name (its cosigner name in the trust document). */
  witness: string;
  /** The cosignature's own time, POSIX seconds. */
  timestamp: number;
  /** The note signature line, `— NAME BASE64` and a newline. */
  line: string;
  receivedAt: string;
}

/** Schema 7. */
export const COSIGNATURES_SCHEMA_SQL = `CREATE TABLE cosignatures_v1 (
  size INTEGER NOT NULL,
  witness TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  line TEXT NOT NULL,
  received_at TEXT NOT NULL,
  PRIMARY KEY (size, witness)
) WITHOUT ROWID;`;

const COLUMNS = 'size, witness, timestamp, line, received_at AS receivedAt';

export class CosignatureTable {
  private readonly statements: { insert: Statement; ofSize: Statement; all: Statement; witnessed: Statement };

  constructor(db: SqliteDatabase) {
    this.statements = {
      insert: db.prepare('INSERT OR IGNORE INTO cosignatures_v1 (size, witness, timestamp, line, received_at) VALUES (?, ?, ?, ?, ?)'),
      ofSize: db.prepare(`SELECT ${COLUMNS} FROM cosignatures_v1 WHERE size = ? ORDER BY witness`),
      all: db.prepare(`SELECT ${COLUMNS} FROM cosignatures_v1 ORDER BY size, witness`),
      witnessed: db.prepare('SELECT MAX(size) AS size FROM cosignatures_v1 WHERE witness = ?'),
    };
  }

  insert(cosignature: StoredCosignature): void {
    const { size, witness, timestamp, line, receivedAt } = cosignature;
    this.statements.insert.run(size, witness, timestamp, line, receivedAt);
  }

  list(size?: number): StoredCosignature[] {
    const rows = (size === undefined ? this.statements.all.all() : this.statements.ofSize.all(size)) as unknown as StoredCosignature[];
    return rows.map((row) => ({
      size: Number(row.size),
      witness: row.witness,
      timestamp: Number(row.timestamp),
      line: row.line,
      receivedAt: row.receivedAt,
    }));
  }

  /** The largest size `witness` cosigned, 0 when it never did. */
  witnessedSize(witness: string): number {
    const row = this.statements.witnessed.get(witness) as { size: number | null };
    return row.size === null ? 0 : Number(row.size);
  }
}
