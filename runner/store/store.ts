/**
 * The only module that opens SQLite. Every decision the runner makes is a row of `records_v1`, appended in
 * the same transaction as the state change it describes and before that decision takes effect ("no record,
 * no run"). A record's `leaf` column holds the exact bytes that become a leaf of the runner's Merkle log:
 * canonical JSON an auditor can recompute from the export.
 */
import { existsSync, readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { toCanonicalJson } from '../core/canonical-json.js';
import { loadSeaNativeBinding } from '../sea/addon.js';
import { StoreError } from './errors.js';
import { MERKLE_SCHEMA_SQL, MerkleStore } from './merkle-store.js';

export const SCHEMA_VERSION = 3;

export type RecordKind =
  | 'capsule.accepted'
  | 'capsule.rejected'
  | 'run.started'
  | 'step.finished'
  | 'run.finished'
  | 'run.aborted'
  | 'evidence.signed';

export interface RecordBody {
  [field: string]: unknown;
}

export interface StoredRecord {
  seq: number;
  kind: RecordKind;
  at: string;
  leaf: Buffer;
}

export interface StoreOptions {
  /** better-sqlite3's compiled addon, when it does not come from node_modules (single binary). */
  nativeBinding?: unknown;
  /** How long a write waits for another process's lock before failing. */
  busyTimeoutMs?: number;
  /** Create the database when it is missing (init only). A missing database is otherwise an error: a
   * silently recreated one would forget every nonce and restart the log at leaf 0. */
  create?: boolean;
  /** Clock for record timestamps; injected by tests. */
  now?: () => Date;
}

/** Fields every leaf has, set by the store alone. */
const RESERVED_FIELDS = ['v', 'seq', 'kind', 'at'] as const;

export type RunStatus = 'running' | 'finished' | 'aborted';

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE records_v1 (
     seq INTEGER PRIMARY KEY,
     kind TEXT NOT NULL,
     at TEXT NOT NULL,
     run_id TEXT,
     leaf BLOB NOT NULL
   );
   CREATE INDEX records_v1_run ON records_v1(run_id);
   CREATE TABLE seen_capsules_v1 (
     capsule_id TEXT NOT NULL,
     nonce TEXT NOT NULL,
     accepted_seq INTEGER NOT NULL,
     PRIMARY KEY (capsule_id, nonce)
   ) WITHOUT ROWID;
   CREATE TABLE runs_v1 (
     run_id TEXT PRIMARY KEY,
     capsule_id TEXT NOT NULL,
     manifest_digest TEXT NOT NULL,
     status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'aborted')),
     verdict TEXT,
     started_at TEXT NOT NULL,
     ended_at TEXT,
     evidence_digest TEXT
   ) WITHOUT ROWID;`,
  // 2: the Merkle log over records_v1 (leaf i = records_v1.leaf of seq i) and its signed checkpoints.
  `${MERKLE_SCHEMA_SQL};
   CREATE TABLE checkpoints_v1 (
     size INTEGER PRIMARY KEY,
     note TEXT NOT NULL,
     signed_at TEXT NOT NULL
   );`,
  // 3: which process owns a running run, so a restart aborts only runs whose runner is gone.
  `ALTER TABLE runs_v1 ADD COLUMN owner_pid INTEGER;
   ALTER TABLE runs_v1 ADD COLUMN owner_start TEXT;`,
];

/** A process, named so that a reused pid is not mistaken for the runner that started a run. */
export interface ProcessIdentity {
  pid: number;
  /** The process's start time as the kernel reports it (/proc/PID/stat field 22). */
  start: string;
}

export interface StoredCheckpoint {
  size: number;
  note: string;
  signedAt: string;
}

export class Store {
  readonly db: Database.Database;
  /** The RFC 6962 tree whose leaves are the records, appended in each record's own transaction. */
  readonly merkle: MerkleStore;
  private readonly now: () => Date;
  private readonly statements;

  private constructor(db: Database.Database, options: StoreOptions) {
    this.db = db;
    this.merkle = new MerkleStore(db);
    this.now = options.now ?? (() => new Date());
    this.statements = {
      nextSeq: db.prepare<[], { next: number }>('SELECT COALESCE(MAX(seq) + 1, 0) AS next FROM records_v1'),
      insertRecord: db.prepare('INSERT INTO records_v1 (seq, kind, at, run_id, leaf) VALUES (?, ?, ?, ?, ?)'),
      insertSeen: db.prepare('INSERT INTO seen_capsules_v1 (capsule_id, nonce, accepted_seq) VALUES (?, ?, ?)'),
      hasSeen: db.prepare<[string, string], { one: number }>('SELECT 1 AS one FROM seen_capsules_v1 WHERE capsule_id = ? AND nonce = ?'),
      insertRun: db.prepare(
        "INSERT INTO runs_v1 (run_id, capsule_id, manifest_digest, status, started_at, owner_pid, owner_start) VALUES (?, ?, ?, 'running', ?, ?, ?)",
      ),
      finishRun: db.prepare("UPDATE runs_v1 SET status = ?, verdict = ?, ended_at = ? WHERE run_id = ? AND status = 'running'"),
      setEvidence: db.prepare('UPDATE runs_v1 SET evidence_digest = ? WHERE run_id = ?'),
      runningRuns: db.prepare<[], { run_id: string; owner_pid: number | null; owner_start: string | null }>(
        "SELECT run_id, owner_pid, owner_start FROM runs_v1 WHERE status = 'running'",
      ),
      records: db.prepare<[number, number], { seq: number; kind: RecordKind; at: string; leaf: Buffer }>(
        'SELECT seq, kind, at, leaf FROM records_v1 WHERE seq >= ? ORDER BY seq LIMIT ?',
      ),
      run: db.prepare<[string], { run_id: string; status: RunStatus; verdict: string | null }>(
        'SELECT run_id, status, verdict FROM runs_v1 WHERE run_id = ?',
      ),
      recordCount: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM records_v1'),
      insertCheckpoint: db.prepare('INSERT OR IGNORE INTO checkpoints_v1 (size, note, signed_at) VALUES (?, ?, ?)'),
      latestCheckpoint: db.prepare<[], { size: number; note: string; signed_at: string }>(
        'SELECT size, note, signed_at FROM checkpoints_v1 ORDER BY size DESC LIMIT 1',
      ),
      checkpoints: db.prepare<[], { size: number; note: string; signed_at: string }>('SELECT size, note, signed_at FROM checkpoints_v1 ORDER BY size'),
    };
  }

  static open(path: string, options: StoreOptions = {}): Store {
    if (!options.create && !existsSync(path)) {
      throw new StoreError('STORE_OPEN_FAILED', `The runner database ${path} is missing; it is never recreated silently (that would forget every nonce and restart the log).`, { path });
    }
    let db: Database.Database;
    // Inside the single binary the addon comes from the binary itself (runner/sea/addon.ts).
    const nativeBinding = options.nativeBinding ?? loadSeaNativeBinding();
    try {
      db = new Database(path, { fileMustExist: !options.create, ...(nativeBinding ? { nativeBinding: nativeBinding as string } : {}) });
      db.pragma(`busy_timeout = ${Math.max(0, Math.trunc(options.busyTimeoutMs ?? 5000))}`);
      db.pragma('journal_mode = WAL');
      // Records are evidence: each commit is durable before the decision it records takes effect.
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
    } catch (cause) {
      throw new StoreError('STORE_OPEN_FAILED', `The runner database at ${path} cannot be opened.`, { path }, { cause });
    }
    if (!options.create && (db.pragma('user_version', { simple: true }) as number) === 0) {
      db.close();
      // An empty file where the database was (truncated, or replaced): migrating it would be recreating it.
      throw new StoreError('STORE_OPEN_FAILED', `The runner database ${path} is empty; it is never recreated silently (that would forget every nonce and restart the log).`, { path });
    }
    migrate(db);
    return new Store(db, options);
  }

  close(): void {
    this.db.close();
  }

  /** Runs `fn` in one IMMEDIATE transaction; any SQLite failure becomes STORE_WRITE_FAILED. */
  transaction<T>(fn: () => T): T {
    try {
      return this.db.transaction(fn).immediate();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      throw new StoreError('STORE_WRITE_FAILED', 'The runner database cannot be written, so the runner will not act.', {}, { cause: err });
    }
  }

  /** Appends one record (inside the caller's transaction when there is one). */
  appendRecord(kind: RecordKind, body: RecordBody, runId?: string): StoredRecord {
    const write = (): StoredRecord => {
      const seq = this.statements.nextSeq.get()!.next;
      const at = this.now().toISOString();
      for (const reserved of RESERVED_FIELDS) {
        if (reserved in body) throw new StoreError('STORE_WRITE_FAILED', `A record body may not set "${reserved}".`, { field: reserved });
      }
      const leaf = Buffer.from(toCanonicalJson({ ...body, v: 1, seq, kind, at }), 'utf8');
      this.statements.insertRecord.run(seq, kind, at, runId ?? null, leaf);
      // The same transaction appends the leaf: if the tree cannot take it, the record is not written either.
      this.merkle.append(leaf, seq);
      return { seq, kind, at, leaf };
    };
    return this.db.inTransaction ? write() : this.transaction(write);
  }

  hasSeen(capsuleId: string, nonce: string): boolean {
    return this.statements.hasSeen.get(capsuleId, nonce) !== undefined;
  }

  /** Records the acceptance and burns the id+nonce in one transaction; a concurrent duplicate loses. */
  acceptCapsule(capsuleId: string, nonce: string, body: RecordBody): StoredRecord {
    return this.transaction(() => {
      if (this.hasSeen(capsuleId, nonce)) {
        throw new StoreError('STORE_REPLAY', `The capsule ${capsuleId} with this nonce was already accepted.`);
      }
      const record = this.appendRecord('capsule.accepted', body);
      this.statements.insertSeen.run(capsuleId, nonce, record.seq);
      return record;
    });
  }

  startRun(runId: string, capsuleId: string, manifestDigest: string, body: RecordBody, owner: ProcessIdentity | undefined = currentProcess()): StoredRecord {
    return this.transaction(() => {
      const record = this.appendRecord('run.started', body, runId);
      this.statements.insertRun.run(runId, capsuleId, manifestDigest, record.at, owner?.pid ?? null, owner?.start ?? null);
      return record;
    });
  }

  finishRun(runId: string, status: Exclude<RunStatus, 'running'>, verdict: string | null, body: RecordBody): StoredRecord {
    return this.transaction(() => {
      const record = this.appendRecord(status === 'finished' ? 'run.finished' : 'run.aborted', body, runId);
      // Only a run still running can end, once; anything else rolls the record back.
      if (this.statements.finishRun.run(status, verdict, record.at, runId).changes !== 1) {
        throw new StoreError('STORE_WRITE_FAILED', `The run ${runId} is not running, so it cannot end again.`, { runId });
      }
      return record;
    });
  }

  recordEvidence(runId: string, evidenceDigest: string, body: RecordBody): StoredRecord {
    return this.transaction(() => {
      const record = this.appendRecord('evidence.signed', body, runId);
      this.statements.setEvidence.run(evidenceDigest, runId);
      return record;
    });
  }

  /**
   * Runs left 'running' by a runner process that no longer exists (SIGKILL, power loss) are closed as
   * aborted, with a record. A run whose runner is still alive (a concurrent exec) is left alone.
   */
  abortInterruptedRuns(isAlive: (owner: ProcessIdentity) => boolean = isProcessAlive): string[] {
    // One IMMEDIATE transaction: two commands starting together after a crash cannot both end a run.
    return this.transaction(() => {
      const interrupted = this.statements.runningRuns
        .all()
        .filter((run) => run.owner_pid === null || run.owner_start === null || !isAlive({ pid: run.owner_pid, start: run.owner_start }));
      for (const { run_id } of interrupted) {
        this.finishRun(run_id, 'aborted', null, { runId: run_id, reason: 'runner-restarted' });
      }
      return interrupted.map((run) => run.run_id);
    });
  }


  run(runId: string): { run_id: string; status: RunStatus; verdict: string | null } | undefined {
    return this.statements.run.get(runId);
  }

  /** Number of records, which is the size of the Merkle tree. */
  recordCount(): number {
    return this.statements.recordCount.get()!.n;
  }

  /** Keeps a signed checkpoint (one per tree size; the first one signed for a size stays). */
  saveCheckpoint(size: number, note: string): void {
    this.transaction(() => this.statements.insertCheckpoint.run(size, note, this.now().toISOString()));
  }

  latestCheckpoint(): StoredCheckpoint | undefined {
    const row = this.statements.latestCheckpoint.get();
    return row && { size: row.size, note: row.note, signedAt: row.signed_at };
  }

  checkpoints(): StoredCheckpoint[] {
    return this.statements.checkpoints.all().map((row) => ({ size: row.size, note: row.note, signedAt: row.signed_at }));
  }

  *records(fromSeq = 0, pageSize = 1000): Generator<StoredRecord> {
    for (let next = fromSeq; ; ) {
      const page = this.statements.records.all(next, pageSize);
      yield* page;
      if (page.length < pageSize) return;
      next = page[page.length - 1]!.seq + 1;
    }
  }
}

/** This process, as ProcessIdentity; undefined where /proc is not readable. */
export function currentProcess(): ProcessIdentity | undefined {
  const start = processStart(process.pid);
  return start === undefined ? undefined : { pid: process.pid, start };
}

export function isProcessAlive(owner: ProcessIdentity): boolean {
  return processStart(owner.pid) === owner.start;
}

let bootId: string | undefined;

/** The process's start time, qualified by the boot it belongs to (a pid and start time recur across boots). */
function processStart(pid: number): string | undefined {
  try {
    bootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may hold spaces and parentheses: count fields after the last ')'. starttime is field 22.
    return `${bootId}:${stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]}`;
  } catch {
    return undefined;
  }
}

function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new StoreError('STORE_SCHEMA_VERSION', `The runner database has schema version ${current}, newer than this runner knows (${MIGRATIONS.length}).`);
  }
  for (let version = current; version < MIGRATIONS.length; version++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[version]!);
      if (version === 1) {
        // Records written before the log existed become its first leaves, in order.
        const leaves = db.prepare<[], Buffer>('SELECT leaf FROM records_v1 ORDER BY seq').pluck().all();
        new MerkleStore(db).appendBatch(leaves);
      }
      db.pragma(`user_version = ${version + 1}`);
    }).immediate();
  }
}
