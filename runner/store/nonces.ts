/** `seen_capsules_v1`: every capsule id + nonce ever accepted (replay protection), with its acceptance record. */
import type { SqliteDatabase, Statement } from './sqlite.js';

export const NONCES_SCHEMA_SQL = `CREATE TABLE seen_capsules_v1 (
  capsule_id TEXT NOT NULL,
  nonce TEXT NOT NULL,
  accepted_seq INTEGER NOT NULL,
  PRIMARY KEY (capsule_id, nonce)
) WITHOUT ROWID;`;

export class NonceTable {
  private readonly statements: { insert: Statement; has: Statement };

  constructor(db: SqliteDatabase) {
    this.statements = {
      insert: db.prepare('INSERT INTO seen_capsules_v1 (capsule_id, nonce, accepted_seq) VALUES (?, ?, ?)'),
      has: db.prepare('SELECT 1 AS one FROM seen_capsules_v1 WHERE capsule_id = ? AND nonce = ?'),
    };
  }

  has(capsuleId: string, nonce: string): boolean {
    return this.statements.has.get(capsuleId, nonce) !== undefined;
  }

  burn(capsuleId: string, nonce: string, acceptedSeq: number): void {
    this.statements.insert.run(capsuleId, nonce, acceptedSeq);
  }
}
