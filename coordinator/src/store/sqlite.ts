/**
 * The SQLite store (node:sqlite DatabaseSync): WAL, synchronous=FULL (an answered 201 is on disk), every
 * statement prepared once, every multi-row write in one BEGIN IMMEDIATE transaction. The schema uses plain
 * types only (TEXT, INTEGER, BLOB; BYTEA and BIGINT in PostgreSQL) and SQL both dialects read the same way:
 * `INSERT ... ON CONFLICT DO NOTHING`, `EXISTS`, `IN (SELECT ...)`. The one SQLite spelling is
 * `INTEGER PRIMARY KEY` for the capsule cursor and fork ids (an identity column in PostgreSQL).
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type { RunnerStatusReport, WorkItem } from '../../../runner/protocol/wire.js';
import { CoordinatorError } from '../errors.js';
import type {
  ApprovalEntry,
  ApprovalFilter,
  BundleEntry,
  BundleFilter,
  CoordinatorStore,
  HeldCheckpoint,
  NewApproval,
  NewBundle,
  NewCapsule,
  NewRejection,
  PublishedCapsule,
  RejectionEntry,
  RejectionFilter,
  RunnerEntry,
  StoredAnswer,
  StoredApproval,
  StoredProposal,
  WitnessWrite,
} from './store.js';
import { FORK_EVIDENCE_PER_LOG, MAX_APPROVALS_PER_PERSON, MAX_APPROVALS_PER_PROPOSAL } from './store.js';

/**
 * 2: approvals (issue 11) and bundles by evidence digest. A version 1 database is brought to 2 at open: the
 * schema below only adds tables and indexes (IF NOT EXISTS), so the upgrade is running it and the new number.
 */
export const SCHEMA_VERSION = 2;
const UPGRADABLE_FROM = '1';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS coordinator_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS capsules (
  seq INTEGER PRIMARY KEY,
  digest TEXT NOT NULL UNIQUE,
  size INTEGER NOT NULL,
  capsule_id TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  kind TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  published_at TEXT NOT NULL,
  bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS capsule_targets (
  capsule_seq INTEGER NOT NULL REFERENCES capsules (seq),
  target_kind TEXT NOT NULL CHECK (target_kind IN ('runner', 'label')),
  value TEXT NOT NULL,
  PRIMARY KEY (capsule_seq, target_kind, value)
);
CREATE INDEX IF NOT EXISTS capsule_targets_by_value ON capsule_targets (target_kind, value, capsule_seq);
CREATE TABLE IF NOT EXISTS bundles (
  digest TEXT PRIMARY KEY,
  runner TEXT NOT NULL,
  capsule_id TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  verdict TEXT NOT NULL,
  evidence_digest TEXT NOT NULL,
  log_index INTEGER NOT NULL,
  received_at TEXT NOT NULL,
  bytes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS bundles_by_received ON bundles (received_at, digest);
CREATE INDEX IF NOT EXISTS bundles_by_runner ON bundles (runner, received_at);
CREATE INDEX IF NOT EXISTS bundles_by_record ON bundles (runner, log_index);
CREATE INDEX IF NOT EXISTS bundles_by_evidence ON bundles (evidence_digest);
CREATE INDEX IF NOT EXISTS bundles_by_capsule ON bundles (runner, manifest_digest);
CREATE TABLE IF NOT EXISTS rejections (
  digest TEXT PRIMARY KEY,
  runner TEXT NOT NULL,
  stage TEXT NOT NULL,
  code TEXT NOT NULL,
  capsule_id TEXT,
  manifest_digest TEXT,
  file_digest TEXT,
  log_index INTEGER NOT NULL,
  received_at TEXT NOT NULL,
  bytes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS rejections_by_received ON rejections (received_at, digest);
CREATE INDEX IF NOT EXISTS rejections_by_record ON rejections (runner, log_index);
CREATE TABLE IF NOT EXISTS runners (
  id TEXT PRIMARY KEY,
  keyid TEXT NOT NULL,
  first_seen TEXT NOT NULL,
  last_seen TEXT NOT NULL,
  status_at TEXT,
  version TEXT,
  trust_version INTEGER,
  log_size INTEGER,
  witnessed_size INTEGER,
  outbox_depth INTEGER,
  oldest_queued_seconds INTEGER,
  dead_letters INTEGER,
  coordinator_trust_version INTEGER
);
CREATE TABLE IF NOT EXISTS runner_labels (
  runner TEXT NOT NULL,
  label TEXT NOT NULL,
  PRIMARY KEY (runner, label)
);
CREATE TABLE IF NOT EXISTS witness_state (
  origin TEXT PRIMARY KEY,
  runner TEXT NOT NULL,
  size INTEGER NOT NULL,
  root_hash BLOB NOT NULL,
  note TEXT NOT NULL,
  cosigned_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS forks (
  id INTEGER PRIMARY KEY,
  origin TEXT NOT NULL,
  runner TEXT NOT NULL,
  held_size INTEGER NOT NULL,
  held_root BLOB,
  held_note TEXT,
  submitted BLOB NOT NULL,
  reason TEXT NOT NULL,
  detected_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS forks_by_runner ON forks (runner);
CREATE TABLE IF NOT EXISTS request_nonces (
  keyid TEXT NOT NULL,
  nonce TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (keyid, nonce)
);
CREATE INDEX IF NOT EXISTS request_nonces_by_expiry ON request_nonces (expires_at);
CREATE TABLE IF NOT EXISTS approvals (
  seq INTEGER PRIMARY KEY,
  digest TEXT NOT NULL UNIQUE,
  proposal TEXT NOT NULL,
  runner TEXT NOT NULL,
  change_digest TEXT NOT NULL,
  target TEXT NOT NULL,
  approver TEXT NOT NULL,
  keyid TEXT NOT NULL,
  decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
  signed_at TEXT NOT NULL,
  not_after TEXT NOT NULL,
  received_at TEXT NOT NULL,
  size INTEGER NOT NULL,
  bytes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_by_runner ON approvals (runner, seq);
CREATE INDEX IF NOT EXISTS approvals_by_proposal ON approvals (proposal, seq);
`;

type Row = Record<string, unknown>;

const APPROVAL_COLUMNS = 'seq, digest, proposal, runner, change_digest, target, approver, decision, signed_at, not_after, received_at, size';

export class SqliteCoordinatorStore implements CoordinatorStore {
  private readonly db: DatabaseSync;
  private readonly s: Record<string, StatementSync>;

  private constructor(db: DatabaseSync) {
    this.db = db;
    const p = (sql: string) => db.prepare(sql);
    this.s = {
      capsuleByDigest: p('SELECT seq FROM capsules WHERE digest = ?'),
      insertCapsule: p(
        'INSERT INTO capsules (digest, size, capsule_id, manifest_digest, kind, expires_at, published_at, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      insertTarget: p('INSERT INTO capsule_targets (capsule_seq, target_kind, value) VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
      capsuleBytes: p('SELECT bytes FROM capsules WHERE digest = ?'),
      lastCursor: p('SELECT COALESCE(MAX(seq), 0) AS n FROM capsules'),
      workFor: p(`
        SELECT c.seq AS seq, c.digest AS digest, c.size AS size FROM capsules c
        WHERE c.seq > ? AND EXISTS (
          SELECT 1 FROM capsule_targets t WHERE t.capsule_seq = c.seq AND (
            (t.target_kind = 'runner' AND t.value = ?)
            OR (t.target_kind = 'label' AND t.value IN (SELECT label FROM runner_labels WHERE runner = ?))))
        ORDER BY c.seq LIMIT ?`),
      insertBundle: p(`
        INSERT INTO bundles (digest, runner, capsule_id, manifest_digest, verdict, evidence_digest, log_index, received_at, bytes)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING`),
      bundleRunner: p('SELECT runner FROM bundles WHERE digest = ?'),
      recordAnswered: p(`
        SELECT digest FROM bundles WHERE runner = ? AND log_index = ?
        UNION ALL SELECT digest FROM rejections WHERE runner = ? AND log_index = ? LIMIT 1`),
      forksOfLog: p('SELECT COUNT(*) AS n FROM forks WHERE origin = ?'),
      sameFork: p('SELECT 1 AS found FROM forks WHERE origin = ? AND submitted = ?'),
      bundleBytes: p('SELECT bytes FROM bundles WHERE digest = ?'),
      insertRejection: p(`
        INSERT INTO rejections (digest, runner, stage, code, capsule_id, manifest_digest, file_digest, log_index, received_at, bytes)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING`),
      rejectionRunner: p('SELECT runner FROM rejections WHERE digest = ?'),
      rejectionBytes: p('SELECT bytes FROM rejections WHERE digest = ?'),
      pruneNonces: p('DELETE FROM request_nonces WHERE expires_at < ?'),
      insertNonce: p('INSERT INTO request_nonces (keyid, nonce, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
      touchRunner: p(`
        INSERT INTO runners (id, keyid, first_seen, last_seen) VALUES (?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET keyid = excluded.keyid, last_seen = excluded.last_seen`),
      saveStatus: p(`
        UPDATE runners SET status_at = ?, version = ?, trust_version = ?, log_size = ?, witnessed_size = ?,
          outbox_depth = ?, oldest_queued_seconds = ?, dead_letters = ?, coordinator_trust_version = ? WHERE id = ?`),
      deleteLabels: p('DELETE FROM runner_labels WHERE runner = ?'),
      insertLabel: p('INSERT INTO runner_labels (runner, label) VALUES (?, ?) ON CONFLICT DO NOTHING'),
      labels: p('SELECT label FROM runner_labels WHERE runner = ? ORDER BY label'),
      allLabels: p('SELECT runner, label FROM runner_labels ORDER BY runner, label'),
      runners: p('SELECT * FROM runners ORDER BY id'),
      forkCounts: p('SELECT runner, COUNT(*) AS n FROM forks GROUP BY runner'),
      witnessedSizes: p('SELECT runner, MAX(size) AS size FROM witness_state GROUP BY runner'),
      held: p('SELECT origin, runner, size, root_hash, note, cosigned_at FROM witness_state WHERE origin = ?'),
      upsertHeld: p(`
        INSERT INTO witness_state (origin, runner, size, root_hash, note, cosigned_at) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root_hash = excluded.root_hash, note = excluded.note,
          cosigned_at = excluded.cosigned_at`),
      bundleByEvidence: p('SELECT runner, bytes FROM bundles WHERE evidence_digest = ? ORDER BY received_at LIMIT 1'),
      approvalByDigest: p('SELECT seq, runner, bytes FROM approvals WHERE digest = ?'),
      approvalsOfProposal: p('SELECT COUNT(*) AS n FROM approvals WHERE proposal = ?'),
      approvalsOfPerson: p('SELECT COUNT(*) AS n FROM approvals WHERE proposal = ? AND approver = ?'),
      bundlesOfCapsule: p('SELECT bytes FROM bundles WHERE runner = ? AND manifest_digest = ? ORDER BY received_at LIMIT ?'),
      insertApproval: p(`
        INSERT INTO approvals (digest, proposal, runner, change_digest, target, approver, keyid, decision, signed_at, not_after, received_at, size, bytes)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      lastApprovalCursor: p('SELECT COALESCE(MAX(seq), 0) AS n FROM approvals'),
      approvalsFor: p(`SELECT ${APPROVAL_COLUMNS} FROM approvals WHERE runner = ? AND seq > ? ORDER BY seq LIMIT ?`),
      insertFork: p(`
        INSERT INTO forks (origin, runner, held_size, held_root, held_note, submitted, reason, detected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
    };
  }

  /** Opens (and with `create`, makes) the database file. Refuses a file of another schema version. */
  static open(path: string, options: { create?: boolean } = {}): SqliteCoordinatorStore {
    const db = new DatabaseSync(path, { enableForeignKeyConstraints: true });
    try {
      db.exec('PRAGMA journal_mode = WAL');
      db.exec('PRAGMA synchronous = FULL');
      db.exec('PRAGMA busy_timeout = 5000');
      const hasMeta = db.prepare("SELECT 1 AS ok FROM sqlite_master WHERE type = 'table' AND name = 'coordinator_meta'").get();
      if (!hasMeta && !options.create) {
        throw new CoordinatorError('COORDINATOR_CONFIG', `${path} is not a coordinator database; run "init" first.`);
      }
      db.exec('BEGIN IMMEDIATE');
      try {
        // Another version is refused before anything is written: the schema below would otherwise put back
        // into a newer database the tables and indexes a later version dropped or renamed.
        const held = hasMeta ? (db.prepare("SELECT value FROM coordinator_meta WHERE name = 'schema_version'").get() as Row | undefined) : undefined;
        if (held !== undefined && held.value !== String(SCHEMA_VERSION) && held.value !== UPGRADABLE_FROM) {
          throw new CoordinatorError('COORDINATOR_CONFIG', `${path} has schema version ${String(held.value)}, not ${SCHEMA_VERSION}.`);
        }
        db.exec(SCHEMA);
        db.prepare('INSERT INTO coordinator_meta (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING').run('schema_version', String(SCHEMA_VERSION));
        db.prepare("UPDATE coordinator_meta SET value = ? WHERE name = 'schema_version' AND value = ?").run(String(SCHEMA_VERSION), UPGRADABLE_FROM);
        db.exec('COMMIT');
      } catch (err) {
        db.exec('ROLLBACK');
        throw err;
      }
      const version = db.prepare("SELECT value FROM coordinator_meta WHERE name = 'schema_version'").get() as Row | undefined;
      if (version?.value !== String(SCHEMA_VERSION)) {
        throw new CoordinatorError('COORDINATOR_CONFIG', `${path} has schema version ${String(version?.value)}, not ${SCHEMA_VERSION}.`);
      }
      return new SqliteCoordinatorStore(db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  private tx<T>(fn: () => T): T {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const value = fn();
      this.db.exec('COMMIT');
      return value;
    } catch (err) {
      // SQLite may have rolled back already (a full disk during COMMIT): the original error is the answer,
      // never a "no transaction is active" from the ROLLBACK.
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  async publishCapsule(c: NewCapsule): Promise<PublishedCapsule> {
    return this.tx(() => {
      const existing = this.s.capsuleByDigest!.get(c.digest) as Row | undefined;
      if (existing) return { cursor: Number(existing.seq), stored: 'existing' as const };
      const { lastInsertRowid } = this.s.insertCapsule!.run(
        c.digest,
        c.bytes.length,
        c.capsuleId,
        c.manifestDigest,
        c.kind,
        c.expiresAt,
        c.publishedAt,
        c.bytes,
      );
      const seq = Number(lastInsertRowid);
      for (const runner of c.targetRunners) this.s.insertTarget!.run(seq, 'runner', runner);
      for (const label of c.targetLabels) this.s.insertTarget!.run(seq, 'label', label);
      return { cursor: seq, stored: 'created' as const };
    });
  }

  async capsuleBytes(digest: string): Promise<Buffer | undefined> {
    return blob(this.s.capsuleBytes!.get(digest));
  }

  async lastCursor(): Promise<number> {
    return Number((this.s.lastCursor!.get() as Row).n);
  }

  async workFor(runner: string, after: number, limit: number): Promise<WorkItem[]> {
    return (this.s.workFor!.all(after, runner, runner, limit) as Row[]).map((row) => ({
      cursor: Number(row.seq),
      capsule: String(row.digest),
      size: Number(row.size),
    }));
  }

  async putBundle(b: NewBundle): Promise<StoredAnswer> {
    return this.tx(() => {
      if (this.s.bundleRunner!.get(b.digest) !== undefined) return 'existing';
      if (this.s.recordAnswered!.get(b.runner, b.logIndex, b.runner, b.logIndex) !== undefined) return 'conflict';
      const { changes } = this.s.insertBundle!.run(
        b.digest,
        b.runner,
        b.capsuleId,
        b.manifestDigest,
        b.verdict,
        b.evidenceDigest,
        b.logIndex,
        b.receivedAt,
        b.bytes,
      );
      return Number(changes) === 1 ? 'created' : 'existing';
    });
  }

  async bundleRunner(digest: string): Promise<string | undefined> {
    const row = this.s.bundleRunner!.get(digest) as Row | undefined;
    return row ? String(row.runner) : undefined;
  }

  async bundleBytes(digest: string): Promise<Buffer | undefined> {
    return blob(this.s.bundleBytes!.get(digest));
  }

  async listBundles(f: BundleFilter): Promise<BundleEntry[]> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (f.runner !== undefined) {
      where.push('runner = ?');
      params.push(f.runner);
    }
    if (f.capsule !== undefined) {
      where.push('(capsule_id = ? OR manifest_digest = ?)');
      params.push(f.capsule, f.capsule);
    }
    if (f.verdict !== undefined) {
      where.push('verdict = ?');
      params.push(f.verdict);
    }
    if (f.since !== undefined) {
      where.push('received_at >= ?');
      params.push(f.since);
    }
    const sql = `SELECT digest, runner, capsule_id, manifest_digest, verdict, received_at FROM bundles
      ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY received_at, digest LIMIT ?`;
    return (this.db.prepare(sql).all(...params, f.limit) as Row[]).map((row) => ({
      digest: String(row.digest),
      runner: String(row.runner),
      capsuleId: String(row.capsule_id),
      manifestDigest: String(row.manifest_digest),
      verdict: String(row.verdict),
      receivedAt: String(row.received_at),
    }));
  }

  async putRejection(r: NewRejection): Promise<StoredAnswer> {
    return this.tx(() => {
      if (this.s.rejectionRunner!.get(r.digest) !== undefined) return 'existing';
      if (this.s.recordAnswered!.get(r.runner, r.logIndex, r.runner, r.logIndex) !== undefined) return 'conflict';
      const { changes } = this.s.insertRejection!.run(
        r.digest,
        r.runner,
        r.stage,
        r.code,
        r.capsuleId,
        r.manifestDigest,
        r.fileDigest,
        r.logIndex,
        r.receivedAt,
        r.bytes,
      );
      return Number(changes) === 1 ? 'created' : 'existing';
    });
  }

  async rejectionRunner(digest: string): Promise<string | undefined> {
    const row = this.s.rejectionRunner!.get(digest) as Row | undefined;
    return row ? String(row.runner) : undefined;
  }

  async rejectionBytes(digest: string): Promise<Buffer | undefined> {
    return blob(this.s.rejectionBytes!.get(digest));
  }

  async listRejections(f: RejectionFilter): Promise<RejectionEntry[]> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (f.runner !== undefined) {
      where.push('runner = ?');
      params.push(f.runner);
    }
    if (f.capsule !== undefined) {
      where.push('(capsule_id = ? OR manifest_digest = ? OR file_digest = ?)');
      params.push(f.capsule, f.capsule, f.capsule);
    }
    const sql = `SELECT digest, runner, stage, code, capsule_id, manifest_digest, file_digest, received_at FROM rejections
      ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY received_at, digest LIMIT ?`;
    return (this.db.prepare(sql).all(...params, f.limit) as Row[]).map((row) => ({
      digest: String(row.digest),
      runner: String(row.runner),
      stage: String(row.stage),
      code: String(row.code),
      capsuleId: nullableText(row.capsule_id),
      manifestDigest: nullableText(row.manifest_digest),
      fileDigest: nullableText(row.file_digest),
      receivedAt: String(row.received_at),
    }));
  }

  async bundleByEvidence(evidenceDigest: string): Promise<StoredProposal | undefined> {
    const row = this.s.bundleByEvidence!.get(evidenceDigest) as Row | undefined;
    return row && { runner: String(row.runner), bytes: blob(row)! };
  }

  async bundlesOfCapsule(runner: string, manifestDigest: string, limit: number): Promise<Buffer[]> {
    return (this.s.bundlesOfCapsule!.all(runner, manifestDigest, limit) as Row[]).map((row) => blob(row)!);
  }

  async putApproval(a: NewApproval): Promise<StoredApproval> {
    return this.tx(() => {
      const existing = this.s.approvalByDigest!.get(a.digest) as Row | undefined;
      if (existing) return { stored: 'existing' as const, cursor: Number(existing.seq), runner: String(existing.runner) };
      if (Number((this.s.approvalsOfProposal!.get(a.proposal) as Row).n) >= MAX_APPROVALS_PER_PROPOSAL) return { stored: 'full' as const };
      if (Number((this.s.approvalsOfPerson!.get(a.proposal, a.approver) as Row).n) >= MAX_APPROVALS_PER_PERSON) {
        return { stored: 'person-full' as const };
      }
      const { lastInsertRowid } = this.s.insertApproval!.run(
        a.digest,
        a.proposal,
        a.runner,
        a.change,
        a.target,
        a.approver,
        a.keyid,
        a.decision,
        a.signedAt,
        a.notAfter,
        a.receivedAt,
        a.bytes.length,
        a.bytes,
      );
      return { stored: 'created' as const, cursor: Number(lastInsertRowid), runner: a.runner };
    });
  }

  async approval(digest: string): Promise<{ cursor: number; runner: string; bytes: Buffer } | undefined> {
    const row = this.s.approvalByDigest!.get(digest) as Row | undefined;
    return row && { cursor: Number(row.seq), runner: String(row.runner), bytes: blob(row)! };
  }

  async lastApprovalCursor(): Promise<number> {
    return Number((this.s.lastApprovalCursor!.get() as Row).n);
  }

  async approvalsFor(runner: string, after: number, limit: number): Promise<ApprovalEntry[]> {
    return (this.s.approvalsFor!.all(runner, after, limit) as Row[]).map(approvalEntry);
  }

  async listApprovals(f: ApprovalFilter): Promise<ApprovalEntry[]> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (f.proposal !== undefined) {
      where.push('proposal = ?');
      params.push(f.proposal);
    }
    if (f.runner !== undefined) {
      where.push('runner = ?');
      params.push(f.runner);
    }
    const sql = `SELECT ${APPROVAL_COLUMNS} FROM approvals ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq LIMIT ?`;
    return (this.db.prepare(sql).all(...params, f.limit) as Row[]).map(approvalEntry);
  }

  async admitRequest(r: { keyid: string; nonce: string; expiresAt: number; nowSeconds: number; runner: string; at: string }): Promise<boolean> {
    return this.tx(() => {
      this.s.pruneNonces!.run(r.nowSeconds);
      if (Number(this.s.insertNonce!.run(r.keyid, r.nonce, r.expiresAt).changes) !== 1) return false;
      this.s.touchRunner!.run(r.runner, r.keyid, r.at, r.at);
      return true;
    });
  }

  async saveStatus(id: string, keyid: string, r: RunnerStatusReport, at: string): Promise<void> {
    this.tx(() => {
      this.s.touchRunner!.run(id, keyid, at, at);
      this.s.saveStatus!.run(
        at,
        r.version,
        r.trustVersion,
        r.logSize,
        r.witnessedSize,
        r.outboxDepth,
        r.oldestQueuedSeconds,
        r.deadLetters,
        r.coordinatorTrustVersion ?? null,
        id,
      );
      this.s.deleteLabels!.run(id);
      for (const label of r.labels) this.s.insertLabel!.run(id, label);
    });
  }

  async runnerLabels(id: string): Promise<string[]> {
    return (this.s.labels!.all(id) as Row[]).map((row) => String(row.label));
  }

  async runners(): Promise<RunnerEntry[]> {
    const labels = new Map<string, string[]>();
    for (const row of this.s.allLabels!.all() as Row[]) {
      const list = labels.get(String(row.runner)) ?? [];
      list.push(String(row.label));
      labels.set(String(row.runner), list);
    }
    const forks = new Map((this.s.forkCounts!.all() as Row[]).map((row) => [String(row.runner), Number(row.n)]));
    return (this.s.runners!.all() as Row[]).map((row) => {
      const id = String(row.id);
      return {
        id,
        keyid: String(row.keyid),
        lastSeen: String(row.last_seen),
        status:
          row.status_at === null
            ? null
            : {
                reportedAt: String(row.status_at),
                version: String(row.version),
                labels: labels.get(id) ?? [],
                trustVersion: Number(row.trust_version),
                logSize: Number(row.log_size),
                witnessedSize: Number(row.witnessed_size),
                outboxDepth: Number(row.outbox_depth),
                oldestQueuedSeconds: Number(row.oldest_queued_seconds),
                deadLetters: Number(row.dead_letters),
                ...(row.coordinator_trust_version === null ? {} : { coordinatorTrustVersion: Number(row.coordinator_trust_version) }),
              },
        forks: forks.get(id) ?? 0,
      };
    });
  }

  async witnessedSizes(): Promise<Map<string, number>> {
    return new Map((this.s.witnessedSizes!.all() as Row[]).map((row) => [String(row.runner), Number(row.size)]));
  }

  async witness<T>(origin: string, runner: string, decide: (held: HeldCheckpoint | undefined) => { write: WitnessWrite; value: T }): Promise<T> {
    return this.tx(() => {
      const row = this.s.held!.get(origin) as Row | undefined;
      const held: HeldCheckpoint | undefined = row && {
        origin: String(row.origin),
        runner: String(row.runner),
        size: Number(row.size),
        rootHash: Buffer.from(row.root_hash as Uint8Array),
        note: String(row.note),
        cosignedAt: String(row.cosigned_at),
      };
      const { write, value } = decide(held);
      switch (write.kind) {
        case 'advance':
          this.s.upsertHeld!.run(origin, runner, write.size, write.rootHash, write.note, write.at);
          break;
        case 'fork':
          // Evidence of a fork is needed once, not once per request: the same submission is kept once, and a
          // log keeps at most FORK_EVIDENCE_PER_LOG of them, so a runner cannot fill the disk with forks.
          if (this.s.sameFork!.get(origin, write.submitted) !== undefined) break;
          if (Number((this.s.forksOfLog!.get(origin) as Row).n) >= FORK_EVIDENCE_PER_LOG) break;
          this.s.insertFork!.run(
            origin,
            runner,
            held?.size ?? 0,
            held?.rootHash ?? null,
            held?.note ?? null,
            write.submitted,
            write.reason,
            write.at,
          );
          break;
        case 'none':
          break;
      }
      return value;
    });
  }

  close(): void {
    if (this.db.isOpen) this.db.close();
  }
}

function approvalEntry(row: Row): ApprovalEntry {
  return {
    cursor: Number(row.seq),
    digest: String(row.digest),
    proposal: String(row.proposal),
    runner: String(row.runner),
    change: String(row.change_digest),
    target: String(row.target),
    approver: String(row.approver),
    decision: row.decision === 'reject' ? 'reject' : 'approve',
    signedAt: String(row.signed_at),
    notAfter: String(row.not_after),
    receivedAt: String(row.received_at),
    size: Number(row.size),
  };
}

function blob(row: unknown): Buffer | undefined {
  const bytes = (row as Row | undefined)?.bytes as Uint8Array | undefined;
  return bytes === undefined ? undefined : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function nullableText(value: unknown): string | null {
  return value === null || value === undefined ? null : String(value);
}
