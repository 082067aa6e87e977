/**
 * `outbox_v1`: what the runner owes the coordinator, one row per record that answers for a capsule (a
 * bundle for `evidence.signed`, a rejection for `capsule.rejected` and `run.aborted`). A row is written in the
 * transaction of its record, by the store itself, so there is no such record without its row and no row
 * without its record. A bundle's row carries the bundle's bytes from the start; a rejection's row starts
 * empty and gets its document the first time the shipper sends it (runner/agent/answers.ts), and from then
 * on every retry sends those same bytes.
 *
 * A row is `queued` until the coordinator acknowledges it (`acked`) or refuses it for good (`dead`, with the
 * code). Nothing is ever deleted here: a dead letter stays visible in `status` until an operator acts.
 */
import { toBuffer, type SqliteDatabase, type Statement } from './sqlite.js';

export type OutboxKind = 'bundle' | 'rejection';
export type OutboxState = 'queued' | 'acked' | 'dead';

export interface OutboxRow {
  id: number;
  kind: OutboxKind;
  /** The record the row answers for (its leaf index in the log). */
  recordSeq: number;
  runId: string | null;
  /** `sha256:HEX` of `body`; null until the body exists. */
  digest: string | null;
  body: Buffer | null;
  state: OutboxState;
  attempts: number;
  /** When the shipper may try next, in milliseconds since the epoch. */
  nextAttemptAt: number;
  createdAt: string;
  /** The code of the last failed attempt, or of the refusal that dead-lettered the row. */
  lastCode: string | null;
}

export interface OutboxStats {
  queued: number;
  dead: number;
  acked: number;
  /** `created_at` of the oldest queued row, in milliseconds; null when nothing is queued. */
  oldestQueuedAt: number | null;
}

/**
 * Schema 7. `start_seq` is the log size when the outbox came: records before it predate the coordinator link
 * and are not shipped (the bundles of those runs are in the state folder's bundles/).
 */
export const OUTBOX_SCHEMA_SQL = `CREATE TABLE outbox_v1 (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('bundle', 'rejection')),
  record_seq INTEGER NOT NULL UNIQUE,
  run_id TEXT,
  digest TEXT,
  body BLOB,
  state TEXT NOT NULL CHECK (state IN ('queued', 'acked', 'dead')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  last_code TEXT,
  CHECK ((digest IS NULL) = (body IS NULL)),
  CHECK (kind = 'rejection' OR body IS NOT NULL)
);
CREATE INDEX outbox_v1_due ON outbox_v1(state, next_attempt_at, id);
CREATE TABLE outbox_start_v1 (start_seq INTEGER NOT NULL);
INSERT INTO outbox_start_v1 (start_seq) SELECT COUNT(*) FROM records_v1;`;

interface Row {
  id: number;
  kind: OutboxKind;
  record_seq: number;
  run_id: string | null;
  digest: string | null;
  body: Uint8Array | null;
  state: OutboxState;
  attempts: number;
  next_attempt_at: number;
  created_at: string;
  last_code: string | null;
}

const toRow = (row: Row): OutboxRow => ({
  id: Number(row.id),
  kind: row.kind,
  recordSeq: Number(row.record_seq),
  runId: row.run_id,
  digest: row.digest,
  body: row.body === null ? null : toBuffer(row.body),
  state: row.state,
  attempts: Number(row.attempts),
  nextAttemptAt: Number(row.next_attempt_at),
  createdAt: row.created_at,
  lastCode: row.last_code,
});

const COLUMNS = 'id, kind, record_seq, run_id, digest, body, state, attempts, next_attempt_at, created_at, last_code';

export class OutboxTable {
  private readonly statements: {
    insert: Statement;
    next: Statement;
    get: Statement;
    nextDue: Statement;
    setBody: Statement;
    retry: Statement;
    settle: Statement;
    stats: Statement;
    oldest: Statement;
    startSeq: Statement;
  };

  constructor(db: SqliteDatabase) {
    this.statements = {
      insert: db.prepare(
        `INSERT INTO outbox_v1 (kind, record_seq, run_id, digest, body, state, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)`,
      ),
      next: db.prepare(`SELECT ${COLUMNS} FROM outbox_v1 WHERE state = 'queued' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT 1`),
      get: db.prepare(`SELECT ${COLUMNS} FROM outbox_v1 WHERE id = ?`),
      nextDue: db.prepare(`SELECT MIN(next_attempt_at) AS at FROM outbox_v1 WHERE state = 'queued'`),
      setBody: db.prepare(`UPDATE outbox_v1 SET digest = ?, body = ? WHERE id = ? AND body IS NULL AND state = 'queued'`),
      retry: db.prepare(`UPDATE outbox_v1 SET attempts = attempts + 1, next_attempt_at = ?, last_code = ? WHERE id = ? AND state = 'queued'`),
      settle: db.prepare(
        `UPDATE outbox_v1 SET state = ?, attempts = attempts + 1, last_code = ? WHERE id = ? AND state = 'queued' AND body IS NOT NULL`,
      ),
      stats: db.prepare(`SELECT state, COUNT(*) AS n FROM outbox_v1 GROUP BY state`),
      oldest: db.prepare(`SELECT MIN(created_at) AS at FROM outbox_v1 WHERE state = 'queued'`),
      startSeq: db.prepare('SELECT start_seq AS seq FROM outbox_start_v1'),
    };
  }

  insert(kind: OutboxKind, recordSeq: number, runId: string | undefined, content: { digest: string; body: Buffer } | undefined, at: string): void {
    this.statements.insert.run(kind, recordSeq, runId ?? null, content?.digest ?? null, content?.body ?? null, Date.parse(at), at);
  }

  next(nowMs: number): OutboxRow | undefined {
    const row = this.statements.next.get(nowMs) as unknown as Row | undefined;
    return row && toRow(row);
  }

  get(id: number): OutboxRow | undefined {
    const row = this.statements.get.get(id) as unknown as Row | undefined;
    return row && toRow(row);
  }

  nextDueAt(): number | undefined {
    const row = this.statements.nextDue.get() as { at: number | null };
    return row.at === null ? undefined : Number(row.at);
  }

  setBody(id: number, digest: string, body: Buffer): boolean {
    return Number(this.statements.setBody.run(digest, body, id).changes) === 1;
  }

  retry(id: number, nextAttemptAtMs: number, code: string): boolean {
    return Number(this.statements.retry.run(nextAttemptAtMs, code, id).changes) === 1;
  }

  /** Moves a queued row with a body to `acked` or `dead`; false when it was not queued (already settled). */
  settle(id: number, state: 'acked' | 'dead', code: string | null): boolean {
    return Number(this.statements.settle.run(state, code, id).changes) === 1;
  }

  stats(): OutboxStats {
    const counts = { queued: 0, dead: 0, acked: 0 };
    for (const row of this.statements.stats.all() as { state: OutboxState; n: number }[]) counts[row.state] = Number(row.n);
    const oldest = (this.statements.oldest.get() as { at: string | null }).at;
    return { ...counts, oldestQueuedAt: oldest === null ? null : Date.parse(oldest) };
  }

  /** The first record the outbox answers for (records before it predate the link). */
  startSeq(): number {
    return Number((this.statements.startSeq.get() as { seq: number }).seq);
  }
}
