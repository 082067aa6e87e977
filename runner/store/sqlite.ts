/**
 * The one door to SQLite: Node's built-in `node:sqlite` (DatabaseSync), no native addon. Opens a database
 * the way the runner needs it (WAL, every commit durable, a busy timeout), runs IMMEDIATE transactions
 * (nested calls join the open one), and turns every SQLite failure inside one into STORE_WRITE_FAILED.
 *
 * Only runner/store/ imports this file (the linter enforces it); nothing outside the store sees a handle.
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { StoreError } from './errors.js';

export type SqlValue = SQLInputValue;
export type Statement = StatementSync;

export interface OpenOptions {
  /** How long a write waits for another process's lock before failing, in milliseconds. */
  busyTimeoutMs: number;
  /** Open read-only (exports and audits of a live runner). */
  readOnly?: boolean;
}

/** Caches over what the database holds register here; they are dropped whenever they may be stale. */
type InvalidateListener = () => void;

export class SqliteDatabase {
  private readonly db: DatabaseSync;
  private depth = 0;
  /** Whether the open transaction (if any) is a write transaction, which holds the write lock. */
  private writing = false;
  /** Set when a nested unit of work failed: the outermost transaction then rolls back, whatever its caller did. */
  private nestedFailure: unknown;
  private readonly invalidateListeners = new Set<InvalidateListener>();
  /** Work that may only happen once the open transaction is committed (afterCommit); dropped on rollback. */
  private afterCommitWork: (() => void)[] = [];
  /** Transaction control and the data version, prepared once: a durable commit per record parses no SQL. */
  private readonly statements: { begin: Statement; commit: Statement; dataVersion: Statement };
  private seenDataVersion: number | undefined;

  private constructor(db: DatabaseSync) {
    this.db = db;
    const dataVersion = db.prepare('PRAGMA data_version');
    dataVersion.setReturnArrays(true);
    this.statements = { begin: db.prepare('BEGIN IMMEDIATE'), commit: db.prepare('COMMIT'), dataVersion };
  }

  /** `path` may be a `file:` URL, for SQLite's URI parameters (`immutable=1`: runner/store/status.ts). */
  static open(path: string | URL, options: OpenOptions): SqliteDatabase {
    const db = new DatabaseSync(path, { readOnly: options.readOnly ?? false, timeout: Math.max(0, Math.trunc(options.busyTimeoutMs)) });
    try {
      if (!options.readOnly) db.exec('PRAGMA journal_mode = WAL');
      // Records are evidence: each commit is durable before the decision it records takes effect.
      db.exec('PRAGMA synchronous = FULL');
      db.exec('PRAGMA foreign_keys = ON');
      // Statement journals stay in memory rather than in a temporary file (of /var/tmp, a shared folder).
      db.exec('PRAGMA temp_store = MEMORY');
      return new SqliteDatabase(db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  prepare(sql: string): Statement {
    return this.db.prepare(sql);
  }

  exec(sql: string): void {
    this.db.exec(sql);
  }

  /** An integer PRAGMA's value (user_version, page_count, ...). */
  pragmaNumber(name: string): number {
    const row = this.db.prepare(`PRAGMA ${name}`).get() as Record<string, unknown> | undefined;
    return Number(row === undefined ? 0 : Object.values(row)[0]);
  }

  get inTransaction(): boolean {
    return this.depth > 0;
  }

  /** Inside transaction(): the write lock is held, and what this connection wrote last is what the database holds. */
  get inWriteTransaction(): boolean {
    return this.depth > 0 && this.writing;
  }

  /**
   * Registers a cache's reset. Caches (the tree's right edge, the next record number) are kept across this
   * connection's own transactions and dropped when a transaction rolls back or when another connection has
   * committed since (SQLite's `PRAGMA data_version`, read once per transaction, says so).
   */
  onInvalidate(listener: InvalidateListener): void {
    this.invalidateListeners.add(listener);
  }

  /**
   * Runs `fn` in one IMMEDIATE transaction: the write lock is taken first, so what `fn` reads cannot change
   * under it. Called inside a transaction, `fn` joins it: no savepoint (a savepoint per record costs a
   * statement journal), but a failure inside marks the whole transaction, which then rolls back even if a
   * caller caught the error. `fn` is synchronous: nothing awaits while the lock is held. A SQLite failure
   * (a lock not obtained, a full disk, a refused row) becomes STORE_WRITE_FAILED with the SQLite error as
   * its cause; the caller's own errors pass through unchanged.
   */
  transaction<T>(fn: () => T): T {
    if (this.depth > 0 && !this.writing) {
      throw new StoreError('STORE_WRITE_FAILED', 'A write cannot join a read snapshot; nothing was written.', {});
    }
    if (this.depth > 0) return this.nested(fn);
    try {
      this.statements.begin.run();
    } catch (cause) {
      throw writeFailed(cause);
    }
    this.depth = 1;
    this.writing = true;
    this.nestedFailure = undefined;
    this.afterCommitWork = [];
    let result: T;
    try {
      this.checkDataVersion();
      result = fn();
      if (this.nestedFailure !== undefined) {
        throw new StoreError(
          'STORE_WRITE_FAILED',
          'A write inside this transaction failed, so none of it is kept.',
          {},
          { cause: this.nestedFailure },
        );
      }
      // SQLite ends a transaction by itself on some failures (SQLITE_FULL, IOERR, NOMEM): had it done so,
      // what ran since would have been committed statement by statement, not as this transaction.
      if (!this.db.isTransaction)
        throw new StoreError('STORE_WRITE_FAILED', 'SQLite ended the transaction after a failure; it is not committed.', {});
      this.statements.commit.run();
    } catch (err) {
      this.afterCommitWork = [];
      if (this.db.isTransaction) {
        try {
          this.db.exec('ROLLBACK');
        } catch {
          // The connection is failing; closing it discards the transaction.
        }
      }
      this.invalidate();
      throw isSqliteError(err) ? writeFailed(err) : err;
    } finally {
      this.depth = 0;
      this.writing = false;
      this.nestedFailure = undefined;
    }
    const work = this.afterCommitWork;
    this.afterCommitWork = [];
    for (const item of work) item();
    return result;
  }

  /**
   * Runs `fn` once the current write transaction has committed (at once outside of one); never if it rolls
   * back. For effects outside the database that must not run ahead of it: a file that says what the
   * database holds must never say more than a crash before COMMIT would leave.
   */
  afterCommit(fn: () => void): void {
    if (this.depth === 0) fn();
    else this.afterCommitWork.push(fn);
  }

  private nested<T>(fn: () => T): T {
    // After a failure inside this transaction (which SQLite may already have rolled back on its own: then
    // every further statement would autocommit), no more work joins it.
    if (this.nestedFailure !== undefined || !this.db.isTransaction) {
      this.nestedFailure ??= new StoreError('STORE_WRITE_FAILED', 'SQLite ended the transaction after a failure.', {});
      throw new StoreError(
        'STORE_WRITE_FAILED',
        'A write inside this transaction already failed, so nothing more joins it.',
        {},
        { cause: this.nestedFailure },
      );
    }
    this.depth += 1;
    try {
      return fn();
    } catch (err) {
      this.nestedFailure ??= err;
      throw isSqliteError(err) ? writeFailed(err) : err;
    } finally {
      this.depth -= 1;
    }
  }

  /** Another connection committed since this one last looked: every cache may be stale. */
  private checkDataVersion(): void {
    const version = Number((this.statements.dataVersion.get() as unknown as [number])[0]);
    if (version !== this.seenDataVersion) {
      this.invalidate();
      this.seenDataVersion = version;
    }
  }

  private invalidate(): void {
    for (const listener of this.invalidateListeners) listener();
  }

  /**
   * Runs `fn` in one read transaction (BEGIN DEFERRED): every read inside sees the same WAL snapshot, while
   * writers go on. For exports that must be consistent with themselves.
   */
  snapshot<T>(fn: () => T): T {
    if (this.depth > 0) return fn();
    this.db.exec('BEGIN DEFERRED');
    this.depth = 1;
    try {
      const result = fn();
      this.statements.commit.run();
      return result;
    } catch (err) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw err;
    } finally {
      this.depth = 0;
    }
  }

  close(): void {
    if (this.db.isOpen) this.db.close();
  }
}

/** node:sqlite's errors: code ERR_SQLITE_ERROR, with SQLite's own errcode and errstr. */
export function isSqliteError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'ERR_SQLITE_ERROR';
}

function writeFailed(cause: unknown): StoreError {
  return new StoreError('STORE_WRITE_FAILED', 'The runner database cannot be written, so the runner will not act.', {}, { cause });
}

/** A BLOB column as a Buffer (node:sqlite returns Uint8Array). */
export function toBuffer(value: unknown): Buffer {
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new StoreError('STORE_CORRUPT', 'A stored value is not the blob the schema says it is.', { check: 'value' });
}
