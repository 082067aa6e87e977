/**
 * `changes_v1`: one row per remediation proposal (runner/remediate/), by change digest, and where its state
 * machine is. A row is written in the transaction of the `change.proposed` record, and every later state in
 * the transaction of the record that says it (change.applying, change.applied, ...): the table never says
 * more than the log. While a change is being applied, verified or rolled back its row names the process that
 * holds it; a unique index allows one such change per target, which is the lock on the target.
 */
import type { ProcessIdentity } from '../state/process.js';
import type { SqliteDatabase, Statement } from './sqlite.js';

/** Schema 9. */
export const CHANGES_SCHEMA_SQL = `CREATE TABLE changes_v1 (
  change_digest TEXT PRIMARY KEY,
  target TEXT NOT NULL,
  state TEXT NOT NULL,
  capsule_id TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  file_digest TEXT NOT NULL,
  proposal_run_id TEXT NOT NULL,
  proposal_evidence TEXT NOT NULL,
  proposed_seq INTEGER NOT NULL,
  proposed_at TEXT NOT NULL,
  accepted_at TEXT NOT NULL,
  pre_state TEXT NOT NULL,
  post_state TEXT NOT NULL,
  policy_digest TEXT NOT NULL,
  verdict TEXT NOT NULL,
  required INTEGER NOT NULL,
  details TEXT NOT NULL,
  state_seq INTEGER NOT NULL,
  updated_at TEXT NOT NULL,
  decided_at TEXT,
  approvals TEXT,
  code TEXT,
  verify_run_id TEXT,
  final_evidence TEXT,
  owner_pid INTEGER,
  owner_start TEXT
) WITHOUT ROWID;
CREATE UNIQUE INDEX changes_v1_active ON changes_v1 (target) WHERE state IN ('applying', 'applied', 'verifying', 'rolling-back');
CREATE INDEX changes_v1_open ON changes_v1 (state) WHERE state NOT IN ('verified', 'rolled-back', 'rollback-failed', 'refused');`;

/**
 * `proposed`: waiting for approvals. `applying` -> `applied` -> `verifying` -> `verified` is the way through;
 * `rolling-back` -> `rolled-back` (or `rollback-failed`, an alarm) the way back; `refused`: never applied.
 */
export type ChangeState =
  'proposed' | 'applying' | 'applied' | 'verifying' | 'verified' | 'rolling-back' | 'rolled-back' | 'rollback-failed' | 'refused';

/** States in which a process holds the target (the unique index): resumed at the next open when it died. */
export const ACTIVE_CHANGE_STATES: readonly ChangeState[] = ['applying', 'applied', 'verifying', 'rolling-back'];

export interface ChangeRow {
  changeDigest: string;
  target: string;
  state: ChangeState;
  capsuleId: string;
  manifestDigest: string;
  /** The capsule file, kept in the blob store by this digest: apply reads the change from it again. */
  fileDigest: string;
  proposalRunId: string;
  /** The proposal bundle's evidence digest (what approvals name as `proposal`). */
  proposalEvidence: string;
  proposedSeq: number;
  proposedAt: string;
  /** The capsule's acceptance time: it is verified again at this time when the change is applied. */
  acceptedAt: string;
  preState: string;
  postState: string;
  policyDigest: string;
  /** The staged validation's verdict. */
  verdict: string;
  /** The approvals the derived tier requires. */
  required: number;
  /** JSON of the proposal's RemediationEvidence (footprint, tier, reproductions): what the final bundle repeats. */
  details: string;
  /** The record that set the current state. */
  stateSeq: number;
  updatedAt: string;
  /** The change.applying (or change.refused) record's `at`: the time approvals were counted at. */
  decidedAt?: string;
  /** The approval digests change.applying relied on. */
  approvals?: string[];
  /** Why it was refused or rolled back. */
  code?: string;
  verifyRunId?: string;
  /** The final bundle's evidence digest. */
  finalEvidence?: string;
  owner?: ProcessIdentity;
}

interface Row {
  change_digest: string;
  target: string;
  state: ChangeState;
  capsule_id: string;
  manifest_digest: string;
  file_digest: string;
  proposal_run_id: string;
  proposal_evidence: string;
  proposed_seq: number;
  proposed_at: string;
  accepted_at: string;
  pre_state: string;
  post_state: string;
  policy_digest: string;
  verdict: string;
  required: number;
  details: string;
  state_seq: number;
  updated_at: string;
  decided_at: string | null;
  approvals: string | null;
  code: string | null;
  verify_run_id: string | null;
  final_evidence: string | null;
  owner_pid: number | null;
  owner_start: string | null;
}

const COLUMNS =
  'change_digest, target, state, capsule_id, manifest_digest, file_digest, proposal_run_id, proposal_evidence, proposed_seq, proposed_at, accepted_at, pre_state, post_state, policy_digest, verdict, required, details, state_seq, updated_at, decided_at, approvals, code, verify_run_id, final_evidence, owner_pid, owner_start';

const toChange = (row: Row): ChangeRow => ({
  changeDigest: row.change_digest,
  target: row.target,
  state: row.state,
  capsuleId: row.capsule_id,
  manifestDigest: row.manifest_digest,
  fileDigest: row.file_digest,
  proposalRunId: row.proposal_run_id,
  proposalEvidence: row.proposal_evidence,
  proposedSeq: Number(row.proposed_seq),
  proposedAt: row.proposed_at,
  acceptedAt: row.accepted_at,
  preState: row.pre_state,
  postState: row.post_state,
  policyDigest: row.policy_digest,
  verdict: row.verdict,
  required: Number(row.required),
  details: row.details,
  stateSeq: Number(row.state_seq),
  updatedAt: row.updated_at,
  ...(row.decided_at !== null ? { decidedAt: row.decided_at } : {}),
  ...(row.approvals !== null ? { approvals: JSON.parse(row.approvals) as string[] } : {}),
  ...(row.code !== null ? { code: row.code } : {}),
  ...(row.verify_run_id !== null ? { verifyRunId: row.verify_run_id } : {}),
  ...(row.final_evidence !== null ? { finalEvidence: row.final_evidence } : {}),
  ...(row.owner_pid !== null && row.owner_start !== null ? { owner: { pid: Number(row.owner_pid), start: row.owner_start } } : {}),
});

/** A new proposal: everything but what later states set. */
export type NewChange = Omit<
  ChangeRow,
  'proposedSeq' | 'proposedAt' | 'state' | 'stateSeq' | 'updatedAt' | 'decidedAt' | 'approvals' | 'code' | 'verifyRunId' | 'finalEvidence' | 'owner'
>;

/** What a state change may set besides the state (undefined leaves a column as it is). */
export interface ChangeUpdate {
  decidedAt?: string;
  approvals?: string[];
  code?: string;
  verifyRunId?: string;
  finalEvidence?: string;
  /** null: the change no longer holds its target (a final state). */
  owner?: ProcessIdentity | null;
}

export class ChangeTable {
  private readonly statements: {
    insert: Statement;
    get: Statement;
    update: Statement;
    list: Statement;
    open: Statement;
    activeOn: Statement;
    evidenceRun: Statement;
    acceptedFile: Statement;
  };

  constructor(db: SqliteDatabase) {
    this.statements = {
      insert: db.prepare(
        `INSERT INTO changes_v1 (change_digest, target, state, capsule_id, manifest_digest, file_digest, proposal_run_id, proposal_evidence,
          proposed_seq, proposed_at, accepted_at, pre_state, post_state, policy_digest, verdict, required, details, state_seq, updated_at)
         VALUES (?, ?, 'proposed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      get: db.prepare(`SELECT ${COLUMNS} FROM changes_v1 WHERE change_digest = ?`),
      update: db.prepare(
        `UPDATE changes_v1 SET state = ?, state_seq = ?, updated_at = ?,
          decided_at = coalesce(?, decided_at), approvals = coalesce(?, approvals), code = coalesce(?, code),
          verify_run_id = coalesce(?, verify_run_id), final_evidence = coalesce(?, final_evidence),
          owner_pid = CASE WHEN ? THEN ? ELSE owner_pid END, owner_start = CASE WHEN ? THEN ? ELSE owner_start END
         WHERE change_digest = ? AND state = ?`,
      ),
      list: db.prepare(`SELECT ${COLUMNS} FROM changes_v1 ORDER BY proposed_seq`),
      open: db.prepare(
        `SELECT ${COLUMNS} FROM changes_v1 WHERE state NOT IN ('verified', 'rolled-back', 'rollback-failed', 'refused') ORDER BY proposed_seq`,
      ),
      acceptedFile: db.prepare(
        `SELECT json_extract(CAST(leaf AS TEXT), '$.fileDigest') AS file FROM records_v1
         WHERE kind = 'capsule.accepted' AND json_extract(CAST(leaf AS TEXT), '$.manifestDigest') = ? ORDER BY seq LIMIT 1`,
      ),
      activeOn: db.prepare(`SELECT ${COLUMNS} FROM changes_v1 WHERE target = ? AND state IN ('applying', 'applied', 'verifying', 'rolling-back')`),
      evidenceRun: db.prepare('SELECT run_id, capsule_id, manifest_digest, verdict, started_at FROM runs_v1 WHERE evidence_digest = ?'),
    };
  }

  insert(change: NewChange, seq: number, at: string): void {
    const c = change;
    this.statements.insert.run(
      c.changeDigest,
      c.target,
      c.capsuleId,
      c.manifestDigest,
      c.fileDigest,
      c.proposalRunId,
      c.proposalEvidence,
      seq,
      at,
      c.acceptedAt,
      c.preState,
      c.postState,
      c.policyDigest,
      c.verdict,
      c.required,
      c.details,
      seq,
      at,
    );
  }

  get(changeDigest: string): ChangeRow | undefined {
    const row = this.statements.get.get(changeDigest) as unknown as Row | undefined;
    return row && toChange(row);
  }

  /** Moves a change from `from` to `to`; false when it was not in `from` (then nothing changed). */
  move(changeDigest: string, from: ChangeState, to: ChangeState, seq: number, at: string, update: ChangeUpdate): boolean {
    const owner = update.owner;
    const setOwner = owner !== undefined ? 1 : 0;
    const result = this.statements.update.run(
      to,
      seq,
      at,
      update.decidedAt ?? null,
      update.approvals === undefined ? null : JSON.stringify(update.approvals),
      update.code ?? null,
      update.verifyRunId ?? null,
      update.finalEvidence ?? null,
      setOwner,
      owner?.pid ?? null,
      setOwner,
      owner?.start ?? null,
      changeDigest,
      from,
    );
    return Number(result.changes) === 1;
  }

  list(): ChangeRow[] {
    return (this.statements.list.all() as unknown as Row[]).map(toChange);
  }

  /** The file digest the capsule with this manifest digest was accepted with (its capsule.accepted record), if any. */
  acceptedFileOf(manifestDigest: string): string | undefined {
    const row = this.statements.acceptedFile.get(manifestDigest) as { file: string | null } | undefined;
    return row?.file ?? undefined;
  }

  /** Changes waiting for approvals or holding their target, oldest proposal first. */
  open(): ChangeRow[] {
    return (this.statements.open.all() as unknown as Row[]).map(toChange);
  }

  /** The change holding `target`, if one does. */
  activeOn(target: string): ChangeRow | undefined {
    const row = this.statements.activeOn.get(target) as unknown as Row | undefined;
    return row && toChange(row);
  }

  /** The run whose evidence has this digest (a cited reproduction), if this runner signed it. */
  runOfEvidence(
    evidenceDigest: string,
  ): { runId: string; capsuleId: string; manifestDigest: string; verdict: string | null; startedAt: string } | undefined {
    const row = this.statements.evidenceRun.get(evidenceDigest) as
      { run_id: string; capsule_id: string; manifest_digest: string; verdict: string | null; started_at: string } | undefined;
    return (
      row && { runId: row.run_id, capsuleId: row.capsule_id, manifestDigest: row.manifest_digest, verdict: row.verdict, startedAt: row.started_at }
    );
  }
}
