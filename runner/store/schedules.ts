/**
 * `schedules_v1`: the recurring capsules the runner accepted (issue 10), one row per accepted manifest, and
 * how far each has fired. Owned by the schedule work; the DDL below is schema 8.
 */

/** Schema 8. */
export const SCHEDULES_SCHEMA_SQL = `CREATE TABLE schedules_v1 (
  manifest_digest TEXT PRIMARY KEY,
  capsule_id TEXT NOT NULL,
  accepted_seq INTEGER NOT NULL,
  cron TEXT NOT NULL,
  timezone TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  last_slot TEXT,
  ended_seq INTEGER
) WITHOUT ROWID;`;
