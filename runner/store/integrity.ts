/**
 * The checks a store passes each time it is opened, before a single nonce is read from it. The replay table
 * is the one thing between a capsule that already ran and a second run of it, so a store that cannot show
 * it is whole is refused rather than trusted:
 *   1. `PRAGMA quick_check`: every b-tree of the file is well formed (a page overwritten in place, a torn
 *      write, a disk returning other bytes). It reads the whole file: about 0.6 ms per 1,000 records here.
 *   2. `PRAGMA integrity_check(seen_capsules_v1)`: the replay table in full, key order included. The table is
 *      WITHOUT ROWID, so SQLite keeps it as an index b-tree, whose key order quick_check does not check: two
 *      cell pointers swapped in one of its interior pages leave every row in place and send lookups to the
 *      wrong child, so a nonce is not found and the capsule runs again (a second review did exactly that).
 *   3. the replay table agrees with the log: each seen_capsules_v1 row points at a capsule.accepted record
 *      of the same capsule id (and nonce, for records that carry one), there are exactly as many rows as
 *      such records, and no id + nonce is accepted twice in the log itself (log verify's rule, applied here so
 *      that a replay that got in stops the runner at once). quick_check cannot see a cell whose bytes were
 *      changed but whose page is still well formed: the table would then have forgotten a nonce.
 * Any failure is STORE_CORRUPT, with SQLite's first complaint or the count that differs in its details.
 */
import { StoreError, type StoreCorruptDetails } from './errors.js';
import type { SqliteDatabase } from './sqlite.js';

/** The most lines of quick_check's report kept in the error's details. */
const MAX_PROBLEMS = 5;

const MISMATCHED_NONCES_SQL = `SELECT COUNT(*) AS n
FROM seen_capsules_v1 s LEFT JOIN records_v1 r ON r.seq = s.accepted_seq
WHERE r.kind IS NOT 'capsule.accepted'
   OR json_extract(CAST(r.leaf AS TEXT), '$.capsuleId') IS NOT s.capsule_id
   OR coalesce(json_extract(CAST(r.leaf AS TEXT), '$.nonce'), s.nonce) IS NOT s.nonce`;

const COUNTS_SQL = `SELECT (SELECT COUNT(*) FROM seen_capsules_v1) AS rows,
  (SELECT COUNT(*) FROM records_v1 WHERE kind = 'capsule.accepted') AS accepted`;

/** Acceptances in the log that repeat an earlier id + nonce (those without a nonce predate it and are not counted). */
const REPEATED_ACCEPTANCES_SQL = `SELECT COUNT(*) - COUNT(DISTINCT pair) AS n FROM (
  SELECT json_extract(CAST(leaf AS TEXT), '$.capsuleId') || char(10) || json_extract(CAST(leaf AS TEXT), '$.nonce') AS pair
  FROM records_v1 WHERE kind = 'capsule.accepted' AND json_extract(CAST(leaf AS TEXT), '$.nonce') IS NOT NULL)`;

/**
 * 4. the outbox agrees with the log (schema 7 on): every record that answers for a capsule since the outbox
 *    came (evidence.signed, capsule.rejected, run.aborted) has exactly one row of its kind, and every row
 *    points at such a record (or at the schedule.ended of a schedule that never ran, answered only then). A row lost is an answer the coordinator never gets; a row without its record
 *    is an answer for something the log does not hold.
 */
const UNMATCHED_OUTBOX_SQL = `SELECT
  (SELECT COUNT(*) FROM records_v1 r
    WHERE r.seq >= (SELECT start_seq FROM outbox_start_v1)
      AND r.kind IN ('evidence.signed', 'capsule.rejected', 'run.aborted')
      AND NOT EXISTS (SELECT 1 FROM outbox_v1 o WHERE o.record_seq = r.seq
        AND o.kind = CASE r.kind WHEN 'evidence.signed' THEN 'bundle' ELSE 'rejection' END)) AS missing,
  (SELECT COUNT(*) FROM outbox_v1 o LEFT JOIN records_v1 r ON r.seq = o.record_seq
    WHERE r.kind IS NULL OR r.kind NOT IN ('evidence.signed', 'capsule.rejected', 'run.aborted', 'schedule.ended')) AS orphans`;

export function verifyStoreIntegrity(db: SqliteDatabase, path: string): void {
  let problems: string[];
  try {
    problems = (db.prepare('PRAGMA quick_check').all() as { quick_check: string }[]).map((row) => String(row.quick_check));
  } catch (cause) {
    throw corrupt(path, `The runner database ${path} cannot be read through: it is damaged.`, { check: 'quick_check' }, cause);
  }
  if (problems.length !== 1 || problems[0] !== 'ok') {
    throw corrupt(
      path,
      `The runner database ${path} failed its integrity check; nothing is accepted (see the README, Operating it: a backup is refused as an older copy).`,
      {
        check: 'quick_check',
        problems: problems.slice(0, MAX_PROBLEMS),
      },
    );
  }
  let replayTable: string[];
  try {
    replayTable = (db.prepare('PRAGMA integrity_check(seen_capsules_v1)').all() as { integrity_check: string }[]).map((row) =>
      String(row.integrity_check),
    );
  } catch (cause) {
    throw corrupt(path, `The replay table of ${path} cannot be read through: it is damaged.`, { check: 'nonces' }, cause);
  }
  if (replayTable.length !== 1 || replayTable[0] !== 'ok') {
    throw corrupt(
      path,
      `The replay table of ${path} is damaged (its keys are out of order or broken); a capsule that already ran could run again, so nothing is accepted.`,
      { check: 'nonces', problems: replayTable.slice(0, MAX_PROBLEMS) },
    );
  }
  let mismatched: number;
  let repeated: number;
  let counts: { rows: number; accepted: number };
  try {
    mismatched = Number((db.prepare(MISMATCHED_NONCES_SQL).get() as { n: number }).n);
    repeated = Number((db.prepare(REPEATED_ACCEPTANCES_SQL).get() as { n: number }).n);
    counts = db.prepare(COUNTS_SQL).get() as { rows: number; accepted: number };
  } catch (cause) {
    // json_extract refuses a leaf that is not JSON: a record damaged in place.
    throw corrupt(path, `The runner database ${path} holds records that are not what the runner wrote.`, { check: 'nonces' }, cause);
  }
  if (mismatched > 0 || Number(counts.rows) !== Number(counts.accepted)) {
    throw corrupt(
      path,
      `The replay table of ${path} disagrees with the log (${counts.rows} nonces for ${counts.accepted} accepted capsules, ${mismatched} not matching their record); a capsule that already ran could run again, so nothing is accepted.`,
      { check: 'nonces', nonces: Number(counts.rows), accepted: Number(counts.accepted), mismatched },
    );
  }
  verifyOutbox(db, path);
  if (repeated > 0) {
    throw corrupt(
      path,
      `The log of ${path} accepts ${repeated} capsule id + nonce pair(s) a second time: a capsule already ran again, so nothing more is accepted until the store is investigated.`,
      { check: 'nonces', repeated },
    );
  }
}

function verifyOutbox(db: SqliteDatabase, path: string): void {
  if (db.pragmaNumber('user_version') < 7) return; // before the outbox; migrated next
  let found: { missing: number; orphans: number };
  try {
    found = db.prepare(UNMATCHED_OUTBOX_SQL).get() as { missing: number; orphans: number };
  } catch (cause) {
    throw corrupt(path, `The outbox of ${path} cannot be read through: it is damaged.`, { check: 'outbox' }, cause);
  }
  const missing = Number(found.missing);
  const orphans = Number(found.orphans);
  if (missing > 0 || orphans > 0) {
    throw corrupt(
      path,
      `The outbox of ${path} disagrees with the log (${missing} answer(s) missing, ${orphans} row(s) without their record); an answer would be lost or invented, so nothing is accepted.`,
      { check: 'outbox', missing, orphans },
    );
  }
}

function corrupt(path: string, message: string, details: Omit<StoreCorruptDetails, 'path'>, cause?: unknown): StoreError<'STORE_CORRUPT'> {
  return new StoreError('STORE_CORRUPT', message, { path, ...details }, cause === undefined ? undefined : { cause });
}
