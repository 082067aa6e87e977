/**
 * `approvals_v1`: every approval the runner was given (by file, the coordinator or a spool), once per digest
 * (runner/policy/approval.ts: the digest of the envelope rebuilt from the one signature that verified, so
 * whitespace does not make two of one), with what was decided of it. Written in the transaction of its
 * `approval.accepted` or `approval.refused` record. The verified envelope is kept: a final bundle carries
 * the envelopes it relied on.
 */
import type { SqliteDatabase, Statement } from './sqlite.js';

/** Schema 9. */
export const APPROVALS_SCHEMA_SQL = `CREATE TABLE approvals_v1 (
  digest TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  code TEXT,
  change_digest TEXT,
  approver TEXT,
  keyid TEXT,
  decision TEXT,
  source TEXT NOT NULL,
  record_seq INTEGER NOT NULL,
  received_at TEXT NOT NULL,
  envelope TEXT
) WITHOUT ROWID;
CREATE INDEX approvals_v1_change ON approvals_v1 (change_digest) WHERE status = 'accepted';`;

export type ApprovalSource = 'file' | 'coordinator' | 'spool';

export interface ApprovalRow {
  digest: string;
  status: 'accepted' | 'refused';
  code?: string;
  changeDigest?: string;
  approver?: string;
  keyid?: string;
  decision?: 'approve' | 'reject';
  source: ApprovalSource;
  recordSeq: number;
  receivedAt: string;
  /** The verified envelope's canonical JSON (accepted ones; a refused one whose signature verified too). */
  envelope?: string;
}

interface Row {
  digest: string;
  status: 'accepted' | 'refused';
  code: string | null;
  change_digest: string | null;
  approver: string | null;
  keyid: string | null;
  decision: 'approve' | 'reject' | null;
  source: ApprovalSource;
  record_seq: number;
  received_at: string;
  envelope: string | null;
}

const COLUMNS = 'digest, status, code, change_digest, approver, keyid, decision, source, record_seq, received_at, envelope';

const toApproval = (row: Row): ApprovalRow => ({
  digest: row.digest,
  status: row.status,
  ...(row.code !== null ? { code: row.code } : {}),
  ...(row.change_digest !== null ? { changeDigest: row.change_digest } : {}),
  ...(row.approver !== null ? { approver: row.approver } : {}),
  ...(row.keyid !== null ? { keyid: row.keyid } : {}),
  ...(row.decision !== null ? { decision: row.decision } : {}),
  source: row.source,
  recordSeq: Number(row.record_seq),
  receivedAt: row.received_at,
  ...(row.envelope !== null ? { envelope: row.envelope } : {}),
});

export class ApprovalTable {
  private readonly statements: { insert: Statement; get: Statement; ofChange: Statement; replace: Statement };

  constructor(db: SqliteDatabase) {
    this.statements = {
      insert: db.prepare(`INSERT INTO approvals_v1 (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      // A refusal that time may undo (not yet valid) is decided again when the approval comes again.
      replace: db.prepare(`DELETE FROM approvals_v1 WHERE digest = ? AND status = 'refused'`),
      get: db.prepare(`SELECT ${COLUMNS} FROM approvals_v1 WHERE digest = ?`),
      ofChange: db.prepare(`SELECT ${COLUMNS} FROM approvals_v1 WHERE change_digest = ? AND status = 'accepted' ORDER BY record_seq`),
    };
  }

  /** Throws (a primary key conflict) when the digest is stored already: the deciding transaction rolls back. */
  insert(row: ApprovalRow): void {
    this.statements.insert.run(
      row.digest,
      row.status,
      row.code ?? null,
      row.changeDigest ?? null,
      row.approver ?? null,
      row.keyid ?? null,
      row.decision ?? null,
      row.source,
      row.recordSeq,
      row.receivedAt,
      row.envelope ?? null,
    );
  }

  /** Forgets a refusal so the approval can be decided again (its earlier approval.refused record stays in the log). */
  forgetRefusal(digest: string): void {
    this.statements.replace.run(digest);
  }

  get(digest: string): ApprovalRow | undefined {
    const row = this.statements.get.get(digest) as unknown as Row | undefined;
    return row && toApproval(row);
  }

  /** The accepted approvals of a change, in the order they came. */
  acceptedOf(changeDigest: string): ApprovalRow[] {
    return (this.statements.ofChange.all(changeDigest) as unknown as Row[]).map(toApproval);
  }
}
