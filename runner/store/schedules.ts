/**
 * `schedules_v1`: the recurring capsules the runner accepted (issue 10), one row per accepted manifest, and
 * how far each has fired. A row is written in the transaction of the capsule's acceptance record, its
 * `last_slot` in the transaction of the record that handles a slot (run.started with `scheduledFor`, or
 * schedule.missed), and its end in the transaction of schedule.ended: the table never says more than the
 * log. The capsule file itself is kept in the state's blob store by `file_digest`, to run again.
 */
import type { SqliteDatabase, Statement } from './sqlite.js';

/** Schema 8 (unreleased until issue 10 ships, so its DDL is still this one's to shape). */
export const SCHEDULES_SCHEMA_SQL = `CREATE TABLE schedules_v1 (
  manifest_digest TEXT PRIMARY KEY,
  capsule_id TEXT NOT NULL,
  accepted_seq INTEGER NOT NULL,
  accepted_at TEXT NOT NULL,
  issued_at TEXT NOT NULL,
  file_digest TEXT NOT NULL,
  cron TEXT NOT NULL,
  timezone TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  last_slot TEXT,
  ended_seq INTEGER,
  ended_reason TEXT
) WITHOUT ROWID;
CREATE INDEX schedules_v1_active ON schedules_v1 (capsule_id) WHERE ended_seq IS NULL;`;

/** An accepted recurring capsule. Times are RFC 3339 UTC strings, as the log writes them. */
export interface ScheduleRow {
  manifestDigest: string;
  capsuleId: string;
  acceptedSeq: number;
  acceptedAt: string;
  issuedAt: string;
  /** `sha256:HEX` of the capsule file as accepted (its bytes are in the blob store). */
  fileDigest: string;
  cron: string;
  /** IANA name (`UTC` when the manifest named none). */
  timezone: string;
  expiresAt: string;
  /** The latest slot handled (fired or recorded as missed); none yet: slots count from the acceptance. */
  lastSlot?: string;
  endedSeq?: number;
  endedReason?: string;
}

interface Row {
  manifest_digest: string;
  capsule_id: string;
  accepted_seq: number;
  accepted_at: string;
  issued_at: string;
  file_digest: string;
  cron: string;
  timezone: string;
  expires_at: string;
  last_slot: string | null;
  ended_seq: number | null;
  ended_reason: string | null;
}

const COLUMNS =
  'manifest_digest, capsule_id, accepted_seq, accepted_at, issued_at, file_digest, cron, timezone, expires_at, last_slot, ended_seq, ended_reason';

const toSchedule = (row: Row): ScheduleRow => ({
  manifestDigest: row.manifest_digest,
  capsuleId: row.capsule_id,
  acceptedSeq: Number(row.accepted_seq),
  acceptedAt: row.accepted_at,
  issuedAt: row.issued_at,
  fileDigest: row.file_digest,
  cron: row.cron,
  timezone: row.timezone,
  expiresAt: row.expires_at,
  ...(row.last_slot !== null ? { lastSlot: row.last_slot } : {}),
  ...(row.ended_seq !== null ? { endedSeq: Number(row.ended_seq) } : {}),
  ...(row.ended_reason !== null ? { endedReason: row.ended_reason } : {}),
});

export class ScheduleTable {
  private readonly statements: {
    insert: Statement;
    active: Statement;
    activeOf: Statement;
    get: Statement;
    setSlot: Statement;
    end: Statement;
    hasRun: Statement;
  };

  constructor(db: SqliteDatabase) {
    this.statements = {
      insert: db.prepare(
        'INSERT INTO schedules_v1 (manifest_digest, capsule_id, accepted_seq, accepted_at, issued_at, file_digest, cron, timezone, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      active: db.prepare(`SELECT ${COLUMNS} FROM schedules_v1 WHERE ended_seq IS NULL ORDER BY accepted_seq`),
      activeOf: db.prepare(`SELECT ${COLUMNS} FROM schedules_v1 WHERE ended_seq IS NULL AND capsule_id = ? ORDER BY accepted_seq`),
      get: db.prepare(`SELECT ${COLUMNS} FROM schedules_v1 WHERE manifest_digest = ?`),
      // A slot only moves forward: a clock that jumped back cannot make a handled slot due again.
      setSlot: db.prepare(
        'UPDATE schedules_v1 SET last_slot = ? WHERE manifest_digest = ? AND ended_seq IS NULL AND (last_slot IS NULL OR last_slot < ?)',
      ),
      end: db.prepare('UPDATE schedules_v1 SET ended_seq = ?, ended_reason = ? WHERE manifest_digest = ? AND ended_seq IS NULL'),
      // Rare (at a schedule's end), so a scan of runs_v1 is fine.
      hasRun: db.prepare('SELECT 1 AS one FROM runs_v1 WHERE manifest_digest = ? LIMIT 1'),
    };
  }

  insert(row: Omit<ScheduleRow, 'lastSlot' | 'endedSeq' | 'endedReason'>): void {
    const s = this.statements.insert;
    s.run(row.manifestDigest, row.capsuleId, row.acceptedSeq, row.acceptedAt, row.issuedAt, row.fileDigest, row.cron, row.timezone, row.expiresAt);
  }

  active(): ScheduleRow[] {
    return (this.statements.active.all() as unknown as Row[]).map(toSchedule);
  }

  activeOf(capsuleId: string): ScheduleRow[] {
    return (this.statements.activeOf.all(capsuleId) as unknown as Row[]).map(toSchedule);
  }

  get(manifestDigest: string): ScheduleRow | undefined {
    const row = this.statements.get.get(manifestDigest) as unknown as Row | undefined;
    return row && toSchedule(row);
  }

  /** False when the slot is not after the one recorded, or the schedule ended (nothing changed). */
  setSlot(manifestDigest: string, slot: string): boolean {
    return Number(this.statements.setSlot.run(slot, manifestDigest, slot).changes) === 1;
  }

  /** Whether any run of this manifest ever started (a schedule's firing, or an exec of the same capsule). */
  hasRun(manifestDigest: string): boolean {
    return this.statements.hasRun.get(manifestDigest) !== undefined;
  }

  /** False when it had ended already. */
  end(manifestDigest: string, endedSeq: number, reason: string): boolean {
    return Number(this.statements.end.run(endedSeq, reason, manifestDigest).changes) === 1;
  }
}
