/**
 * `feed_cursor_v1`: how far the runner has read each coordinator's work feed. The agent moves it in the
 * transaction of the record that decides a capsule's fate (its acceptance or its rejection), so after any
 * crash a capsule has either been decided and is behind the cursor, or is not and is read again: never run
 * twice (its nonce is burnt in the same transaction) and never skipped.
 */
import type { SqliteDatabase, Statement } from './sqlite.js';

/** Schema 7. `coordinator` is the coordinator's URL origin as configured. */
export const FEED_CURSOR_SCHEMA_SQL = `CREATE TABLE feed_cursor_v1 (
  coordinator TEXT PRIMARY KEY,
  cursor INTEGER NOT NULL,
  updated_at TEXT NOT NULL
) WITHOUT ROWID;`;

export class FeedCursorTable {
  private readonly statements: { get: Statement; set: Statement };

  constructor(db: SqliteDatabase) {
    this.statements = {
      get: db.prepare('SELECT cursor FROM feed_cursor_v1 WHERE coordinator = ?'),
      set: db.prepare(
        'INSERT INTO feed_cursor_v1 (coordinator, cursor, updated_at) VALUES (?, ?, ?) ON CONFLICT (coordinator) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at',
      ),
    };
  }

  get(coordinator: string): number {
    const row = this.statements.get.get(coordinator) as { cursor: number } | undefined;
    return row === undefined ? 0 : Number(row.cursor);
  }

  set(coordinator: string, cursor: number, at: string): void {
    this.statements.set.run(coordinator, cursor, at);
  }
}
