/**
 * The runner database opened behind the store's back, with node:sqlite itself: for tests that tamper with
 * rows, lock the file or inject faults (triggers) the way an attacker or a failing disk would.
 */
import { DatabaseSync } from 'node:sqlite';

export function openRawDb(path: string, options: { readOnly?: boolean } = {}): DatabaseSync {
  return new DatabaseSync(path, { readOnly: options.readOnly ?? false });
}

export function withRawDb<T>(path: string, fn: (db: DatabaseSync) => T, options: { readOnly?: boolean } = {}): T {
  const db = openRawDb(path, options);
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

type Param = string | number | bigint | null | Uint8Array;

/** The first column of the first row (better-sqlite3's `pluck().get()`), or undefined without a row. */
export function value<T = unknown>(db: DatabaseSync, sql: string, ...params: Param[]): T | undefined {
  const row = db.prepare(sql).get(...params) as Record<string, unknown> | undefined;
  return row === undefined ? undefined : (Object.values(row)[0] as T);
}

/** The first column of every row (better-sqlite3's `pluck().all()`). */
export function column<T = unknown>(db: DatabaseSync, sql: string, ...params: Param[]): T[] {
  return (db.prepare(sql).all(...params) as Record<string, unknown>[]).map((row) => Object.values(row)[0] as T);
}
