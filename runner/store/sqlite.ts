/**
 * The one door to SQLite: Node's built-in `node:sqlite` (DatabaseSync), no native addon. Opens a database
 * the way the runner needs it (WAL, every commit durable, a busy timeout), runs IMMEDIATE transactions
 * (savepoints when nested), and turns every SQLite failure inside one into STORE_WRITE_FAILED.
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

/** A transaction's hooks: per-transaction caches register here and are dropped when it ends. */
type EndListener = () => void;

export class SqliteDatabase {
  private readonly db: DatabaseSync;
  private depth = 0;
  private readonly savepointStatements: { begin: Statement; release: Statement; rollback: Statement }[] = [];
  private readonly endListeners = new Set<EndListener>();

  private constructor(db: DatabaseSync) {
    this.db = db;
  }

  static open(path: string, options: OpenOptions): SqliteDatabase {
    const db = new DatabaseSync(path, { readOnly: options.readOnly ?? false, timeout: Math.max(0, Math.trunc(options.busyTimeoutMs)) });
    try {
      if (!options.readOnly) db.exec('PRAGMA journal_mode = WAL');
      // Records are evidence: each commit is durable before the decision it records takes effect.
      db.exec('PRAGMA synchronous = FULL');
      db.exec('PRAGMA foreign_keys = ON');
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

  /** Called once when the outermost transaction commits or rolls back (and when a savepoint rolls back). */
  onTransactionEnd(listener: EndListener): void {
    this.endListeners.add(listener);
  }

  /**
   * Runs `fn` in one IMMEDIATE transaction (the write lock is taken first, so what `fn` reads cannot change
   * under it), or in a savepoint when a transaction is already open. `fn` is synchronous: nothing awaits
   * while the lock is held. Any failure rolls back; a SQLite failure (a lock not obtained, a full disk, a
   * refused row) becomes STORE_WRITE_FAILED with the SQLite error as its cause; the caller's own errors
   * pass through unchanged.
   */
  transaction<T>(fn: () => T): T {
    if (this.depth > 0) return this.savepoint(fn);
    try {
      this.db.exec('BEGIN IMMEDIATE');
    } catch (cause) {
      throw writeFailed(cause);
    }
    this.depth = 1;
    try {
      const result = fn();
      this.db.exec('COMMIT');
      return result;
    } catch (err) {
      if (this.db.isTransaction) {
        try {
          this.db.exec('ROLLBACK');
        } catch {
          // The connection is failing; closing it discards the transaction.
        }
      }
      throw isSqliteError(err) ? writeFailed(err) : err;
    } finally {
      this.depth = 0;
      this.ended();
    }
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
      this.db.exec('COMMIT');
      return result;
    } catch (err) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw err;
    } finally {
      this.depth = 0;
      this.ended();
    }
  }

  private savepoint<T>(fn: () => T): T {
    // One name per nesting depth, each statement prepared once: a batch of appends pays no parsing.
    const depth = this.depth;
    let sp = this.savepointStatements[depth];
    if (sp === undefined) {
      const name = `sp${depth}`;
      sp = { begin: this.db.prepare(`SAVEPOINT ${name}`), release: this.db.prepare(`RELEASE ${name}`), rollback: this.db.prepare(`ROLLBACK TO ${name}`) };
      this.savepointStatements[depth] = sp;
    }
    sp.begin.run();
    this.depth += 1;
    try {
      const result = fn();
      sp.release.run();
      return result;
    } catch (err) {
      sp.rollback.run();
      sp.release.run();
      this.ended();
      throw err;
    } finally {
      this.depth -= 1;
    }
  }

  private ended(): void {
    for (const listener of this.endListeners) listener();
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
  throw new StoreError('STORE_CORRUPT', 'A stored value is not the blob the schema says it is.');
}
