/** `runs_v1`: one row per run, its state (running, finished, aborted), verdict, evidence, and owner process. */
import type { ProcessIdentity } from '../state/process.js';
import type { SqliteDatabase, Statement } from './sqlite.js';

export type RunStatus = 'running' | 'finished' | 'aborted';

export type { ProcessIdentity };

export interface RunRow {
  runId: string;
  capsuleId: string;
  manifestDigest: string;
  status: RunStatus;
  verdict: string | null;
  startedAt: string;
  endedAt: string | null;
  evidenceDigest: string | null;
  owner: ProcessIdentity | null;
}

export const RUNS_SCHEMA_SQL = `CREATE TABLE runs_v1 (
  run_id TEXT PRIMARY KEY,
  capsule_id TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'aborted')),
  verdict TEXT,
  started_at TEXT NOT NULL,
  ended_at TEXT,
  evidence_digest TEXT
) WITHOUT ROWID;`;

/** Schema 3: which process owns a running run, so a restart aborts only runs whose runner is gone. */
export const RUNS_OWNER_SQL = `ALTER TABLE runs_v1 ADD COLUMN owner_pid INTEGER;
ALTER TABLE runs_v1 ADD COLUMN owner_start TEXT;`;

interface Row {
  run_id: string;
  capsule_id: string;
  manifest_digest: string;
  status: RunStatus;
  verdict: string | null;
  started_at: string;
  ended_at: string | null;
  evidence_digest: string | null;
  owner_pid: number | null;
  owner_start: string | null;
}

const toRun = (row: Row): RunRow => ({
  runId: row.run_id,
  capsuleId: row.capsule_id,
  manifestDigest: row.manifest_digest,
  status: row.status,
  verdict: row.verdict,
  startedAt: row.started_at,
  endedAt: row.ended_at,
  evidenceDigest: row.evidence_digest,
  owner: row.owner_pid === null || row.owner_start === null ? null : { pid: row.owner_pid, start: row.owner_start },
});

export class RunTable {
  private readonly statements: { insert: Statement; finish: Statement; setEvidence: Statement; running: Statement; get: Statement };

  constructor(db: SqliteDatabase) {
    const columns = 'run_id, capsule_id, manifest_digest, status, verdict, started_at, ended_at, evidence_digest, owner_pid, owner_start';
    this.statements = {
      insert: db.prepare(
        "INSERT INTO runs_v1 (run_id, capsule_id, manifest_digest, status, started_at, owner_pid, owner_start) VALUES (?, ?, ?, 'running', ?, ?, ?)",
      ),
      finish: db.prepare("UPDATE runs_v1 SET status = ?, verdict = ?, ended_at = ? WHERE run_id = ? AND status = 'running'"),
      setEvidence: db.prepare('UPDATE runs_v1 SET evidence_digest = ? WHERE run_id = ?'),
      running: db.prepare(`SELECT ${columns} FROM runs_v1 WHERE status = 'running' ORDER BY started_at, run_id`),
      get: db.prepare(`SELECT ${columns} FROM runs_v1 WHERE run_id = ?`),
    };
  }

  insert(run: { runId: string; capsuleId: string; manifestDigest: string; startedAt: string; owner: ProcessIdentity | undefined }): void {
    this.statements.insert.run(run.runId, run.capsuleId, run.manifestDigest, run.startedAt, run.owner?.pid ?? null, run.owner?.start ?? null);
  }

  /** Ends a running run; false when it was not running (then nothing changed). */
  finish(runId: string, status: Exclude<RunStatus, 'running'>, verdict: string | null, endedAt: string): boolean {
    return Number(this.statements.finish.run(status, verdict, endedAt, runId).changes) === 1;
  }

  setEvidence(runId: string, evidenceDigest: string): void {
    this.statements.setEvidence.run(evidenceDigest, runId);
  }

  running(): RunRow[] {
    return (this.statements.running.all() as unknown as Row[]).map(toRun);
  }

  get(runId: string): RunRow | undefined {
    const row = this.statements.get.get(runId) as unknown as Row | undefined;
    return row && toRun(row);
  }
}
