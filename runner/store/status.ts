/**
 * The store as `edge-runner status` reads it: a read-only connection (SQLite refuses every write on it, so
 * a status check can never change what the agent decided), no migration, no open-time checks (they read
 * the whole file: Store.open does them), and no lock taken: in WAL mode a reader never blocks the agent,
 * and the agent never blocks the reader. Every query is a b-tree descent or a range of the outbox's queued
 * or dead rows, never a walk over the log, so status answers in the same time on 1,000 records or 10
 * million: the log's size is its last record's index plus one, and the last error comes from a partial index
 * that holds error records only (`records_v1_errors`, schema 8), which a record of any other kind never
 * touches.
 */
import { existsSync, statSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { StoreError } from './errors.js';
import { headPathOf, readLogHead } from './head.js';
import { ScheduleTable, type ScheduleRow } from './schedules.js';
import { SqliteDatabase, type Statement } from './sqlite.js';

/** Record kinds that say something went wrong, each with a code member (`reason` for run.aborted). */
export const ERROR_RECORD_KINDS = ['capsule.rejected', 'run.aborted', 'workspace.not-removed', 'outbox.dead', 'trust.refused'] as const;

const ERROR_KINDS_SQL = ERROR_RECORD_KINDS.map((kind) => `'${kind}'`).join(', ');

/** Schema 8: the error records, by index; the predicate must stay the query's (SQLite uses it only then). */
export const RECORD_ERRORS_INDEX_SQL = `CREATE INDEX records_v1_errors ON records_v1(seq) WHERE kind IN (${ERROR_KINDS_SQL});`;

/** Reads of a database that changed under an immutable read, before status gives up (STORE_OPEN_FAILED). */
const IMMUTABLE_READ_ATTEMPTS = 8;

/** The schema the reader's queries need (schedules_v1 and records_v1_errors came with 8). */
const STATUS_SCHEMA_MIN = 8;

export interface StatusSnapshot {
  schemaVersion: number;
  /** Records in the log (the tree's size). */
  logSize: number;
  lastCheckpoint: { size: number; signedAt: string } | undefined;
  /** The largest size any witness cosigned, and the witnesses that cosigned it. */
  lastWitnessed: { size: number; witnesses: { name: string; timestamp: number; receivedAt: string }[] } | undefined;
  outbox: {
    queued: number;
    dead: number;
    /** `created_at` of the oldest queued row (RFC 3339), or undefined. */
    oldestQueuedAt: string | undefined;
    /** The code of the most recent failed attempt among queued rows (the next one due), if any. */
    lastAttemptCode: string | undefined;
    lastDead: { digest: string; code: string; createdAt: string } | undefined;
  };
  lastError: { seq: number; kind: string; at: string; code: string } | undefined;
  schedules: ScheduleRow[];
  /** Governed changes (changes_v1, schema 9): waiting for approvals, holding their target, or failed to roll back. */
  changes?: ChangesStatus;
  /**
   * The size of the log's high-water mark beside the database (runner/store/head.ts): the last checkpoint
   * the runner signed. A log smaller than it is an older copy of the database (Store.open refuses it).
   */
  headSize: number | undefined;
}

export interface ChangesStatus {
  /** Proposed and waiting for approvals. */
  pending: number;
  oldestPendingAt: string | undefined;
  /** Being applied, verified or rolled back (a process holds the target), oldest first; at most 16. */
  inProgress: { changeDigest: string; target: string; state: string; updatedAt: string }[];
  /** Restored to a digest other than the pre-state: an operator must look. At most 16, newest first. */
  rollbackFailed: { changeDigest: string; target: string; code: string; updatedAt: string }[];
}

/** The most changes of each list status shows. */
const STATUS_CHANGES_MAX = 16;

export class StatusReader {
  private readonly db: SqliteDatabase;
  private readonly statements: Record<
    'last' | 'checkpoint' | 'cosigned' | 'queued' | 'dead' | 'oldest' | 'attempt' | 'lastDead' | 'lastError',
    Statement
  >;
  private readonly schedules: ScheduleTable;
  private readonly changes: Record<'pending' | 'inProgress' | 'rollbackFailed', Statement> | undefined;
  readonly schemaVersion: number;

  private constructor(db: SqliteDatabase, schemaVersion: number) {
    this.db = db;
    this.schemaVersion = schemaVersion;
    this.statements = {
      last: db.prepare('SELECT seq FROM records_v1 ORDER BY seq DESC LIMIT 1'),
      checkpoint: db.prepare('SELECT size, signed_at AS signedAt FROM checkpoints_v1 ORDER BY size DESC LIMIT 1'),
      cosigned: db.prepare(
        'SELECT size, witness, timestamp, received_at AS receivedAt FROM cosignatures_v1 WHERE size = (SELECT MAX(size) FROM cosignatures_v1) ORDER BY witness',
      ),
      queued: db.prepare(`SELECT COUNT(*) AS n FROM outbox_v1 WHERE state = 'queued'`),
      dead: db.prepare(`SELECT COUNT(*) AS n FROM outbox_v1 WHERE state = 'dead'`),
      oldest: db.prepare(`SELECT MIN(created_at) AS at FROM outbox_v1 WHERE state = 'queued'`),
      attempt: db.prepare(
        `SELECT last_code AS code FROM outbox_v1 WHERE state = 'queued' AND last_code IS NOT NULL ORDER BY next_attempt_at, id LIMIT 1`,
      ),
      lastDead: db.prepare(`SELECT digest, last_code AS code, created_at AS createdAt FROM outbox_v1 WHERE state = 'dead' ORDER BY id DESC LIMIT 1`),
      lastError: db.prepare(
        `SELECT seq, kind, at, CAST(leaf AS TEXT) AS leaf FROM records_v1 WHERE kind IN (${ERROR_KINDS_SQL}) ORDER BY seq DESC LIMIT 1`,
      ),
    };
    this.schedules = new ScheduleTable(db);
    this.changes =
      schemaVersion < 9
        ? undefined
        : {
            pending: db.prepare(`SELECT COUNT(*) AS n, MIN(proposed_at) AS oldest FROM changes_v1 WHERE state = 'proposed'`),
            inProgress: db.prepare(
              `SELECT change_digest AS changeDigest, target, state, updated_at AS updatedAt FROM changes_v1
               WHERE state IN ('applying', 'applied', 'verifying', 'rolling-back') ORDER BY updated_at LIMIT ${STATUS_CHANGES_MAX}`,
            ),
            rollbackFailed: db.prepare(
              `SELECT change_digest AS changeDigest, target, coalesce(code, '') AS code, updated_at AS updatedAt FROM changes_v1
               WHERE state = 'rollback-failed' ORDER BY state_seq DESC LIMIT ${STATUS_CHANGES_MAX}`,
            ),
          };
  }

  private readChanges(): ChangesStatus | undefined {
    const c = this.changes;
    if (c === undefined) return undefined;
    const pending = c.pending.get() as { n: number; oldest: string | null };
    return {
      pending: Number(pending.n),
      oldestPendingAt: pending.oldest ?? undefined,
      inProgress: c.inProgress.all() as unknown as ChangesStatus['inProgress'],
      rollbackFailed: c.rollbackFailed.all() as unknown as ChangesStatus['rollbackFailed'],
    };
  }

  /**
   * Everything status shows, read-only. While any connection is open (a running agent keeps one), the WAL
   * file exists and a read-only connection reads through it, under SQLite's own locks. With no WAL file
   * nobody has the database open and the main file is complete: it is read as immutable (SQLite then makes
   * no -wal or -shm file, so status works on a read-only file system and leaves the folder as it found it; a
   * plain read-only connection would create both and leave them behind). Immutable promises SQLite that the
   * file does not change, which nothing can promise here: a command may open the database, write, checkpoint
   * and close (deleting its WAL) all while status reads, and what SQLite reads then is undefined (a torn
   * read, or a wrong answer). So the main file's identity, size and times are taken before and after, and
   * the read is done again, the way the WAL's presence then says, when either changed or a WAL appeared; an
   * error of an immutable read is believed only if nothing changed under it.
   */
  static readSnapshot(path: string, options: { busyTimeoutMs: number }): StatusSnapshot {
    for (let attempt = 1; ; attempt++) {
      const wal = existsSync(`${path}-wal`);
      const before = fileStamp(path);
      // The mark first: it is raised only once the log holds it, so a mark read before the snapshot is never
      // above the snapshot's log (read after, an agent's checkpoint in between would look like a rollback).
      const headSize = readLogHead(headPathOf(path))?.size;
      let snapshot: StatusSnapshot | undefined;
      let failure: unknown;
      try {
        const reader = StatusReader.open(path, { ...options, immutable: !wal });
        try {
          snapshot = { ...reader.read(), headSize };
        } finally {
          reader.close();
        }
      } catch (err) {
        failure = err;
      }
      const changed = !wal && (existsSync(`${path}-wal`) || fileStamp(path) !== before);
      if (!changed || attempt >= IMMUTABLE_READ_ATTEMPTS) {
        if (changed) {
          throw new StoreError('STORE_OPEN_FAILED', `The runner database at ${path} changed under each of ${attempt} reads.`, { path });
        }
        if (snapshot === undefined) throw failure;
        return snapshot;
      }
    }
  }

  /** Opens `path` read-only; a database this reader does not know (older: not migrated yet; newer) is refused. */
  static open(path: string, options: { busyTimeoutMs: number; immutable?: boolean }): StatusReader {
    let db: SqliteDatabase;
    try {
      if (!existsSync(path)) throw new Error('missing');
      const url = pathToFileURL(path);
      if (options.immutable) url.searchParams.set('immutable', '1');
      db = SqliteDatabase.open(options.immutable ? url : path, { busyTimeoutMs: options.busyTimeoutMs, readOnly: true });
    } catch (cause) {
      throw new StoreError('STORE_OPEN_FAILED', `The runner database at ${path} cannot be opened for reading.`, { path }, { cause });
    }
    try {
      const version = db.pragmaNumber('user_version');
      if (version < STATUS_SCHEMA_MIN) {
        throw new StoreError(
          'STORE_SCHEMA_VERSION',
          `The runner database has schema version ${version}; status reads ${STATUS_SCHEMA_MIN} or later (start the agent once: it migrates).`,
          { found: version, known: STATUS_SCHEMA_MIN },
        );
      }
      return new StatusReader(db, version);
    } catch (err) {
      db.close();
      if (err instanceof StoreError) throw err;
      throw new StoreError('STORE_OPEN_FAILED', `The runner database at ${path} cannot be read.`, { path }, { cause: err });
    }
  }

  /** Everything status shows, from one snapshot (the agent may commit between two reads otherwise). */
  read(): StatusSnapshot {
    return this.db.snapshot(() => {
      const s = this.statements;
      const last = s.last.get() as { seq: number } | undefined;
      const checkpoint = s.checkpoint.get() as { size: number; signedAt: string } | undefined;
      const cosigned = s.cosigned.all() as { size: number; witness: string; timestamp: number; receivedAt: string }[];
      const lastDead = s.lastDead.get() as { digest: string; code: string | null; createdAt: string } | undefined;
      const oldest = (s.oldest.get() as { at: string | null }).at;
      const attempt = s.attempt.get() as { code: string } | undefined;
      const error = s.lastError.get() as { seq: number; kind: string; at: string; leaf: string } | undefined;
      return {
        schemaVersion: this.schemaVersion,
        logSize: last === undefined ? 0 : Number(last.seq) + 1,
        lastCheckpoint: checkpoint && { size: Number(checkpoint.size), signedAt: checkpoint.signedAt },
        lastWitnessed:
          cosigned.length === 0
            ? undefined
            : {
                size: Number(cosigned[0]!.size),
                witnesses: cosigned.map((row) => ({ name: row.witness, timestamp: Number(row.timestamp), receivedAt: row.receivedAt })),
              },
        outbox: {
          queued: Number((s.queued.get() as { n: number }).n),
          dead: Number((s.dead.get() as { n: number }).n),
          oldestQueuedAt: oldest ?? undefined,
          lastAttemptCode: attempt?.code,
          lastDead: lastDead && { digest: lastDead.digest, code: lastDead.code ?? '', createdAt: lastDead.createdAt },
        },
        lastError: error && { seq: Number(error.seq), kind: error.kind, at: error.at, code: codeOfLeaf(error.leaf) },
        schedules: this.schedules.active(),
        ...(this.changes ? { changes: this.readChanges() } : {}),
        headSize: undefined,
      };
    });
  }

  close(): void {
    this.db.close();
  }
}

/** The code an error record carries (`reason` for run.aborted); the leaf is the runner's own JSON. */
function codeOfLeaf(leaf: string): string {
  try {
    const body = JSON.parse(leaf) as { code?: unknown; reason?: unknown };
    const code = body.code ?? body.reason;
    return typeof code === 'string' ? code : '';
  } catch {
    return '';
  }
}

/** What changes when anything writes the file or puts another in its place (nanosecond times). */
function fileStamp(path: string): string {
  const stats = statSync(path, { bigint: true, throwIfNoEntry: false });
  return stats === undefined ? 'missing' : `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}`;
}
