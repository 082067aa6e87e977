/**
 * `spool_inbox_v1`: the capsule files of an air-gapped spool folder (DIR/in/) the runner has decided, by the
 * SHA-256 of their bytes, written in the transaction of the record that decides each (as the feed cursor
 * is), so a file is decided once whatever happens to it on disk. Owned by the spool work; schema 8.
 */

/** Schema 8. */
export const SPOOL_INBOX_SCHEMA_SQL = `CREATE TABLE spool_inbox_v1 (
  file_digest TEXT PRIMARY KEY,
  decided_seq INTEGER NOT NULL,
  decided_at TEXT NOT NULL
) WITHOUT ROWID;`;
