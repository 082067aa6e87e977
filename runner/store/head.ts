/**
 * The log's high-water mark, outside the database: `runner.db.head` beside it holds the size and root of
 * the latest checkpoint the runner signed, rewritten (atomically) after each one. Everything the open-time
 * checks look at is inside one file, so a whole older copy of the database (restored from a backup, or put
 * back by hand) passes them all: its replay table has simply never seen the capsules accepted since, which
 * would run again, and the runner would sign a checkpoint that contradicts one it signed before (a forked
 * log). At open, the database's tree must reach the mark with the same root there (STORE_ROLLED_BACK).
 *
 * The database remembers that it has a mark (`log_head_v1`, the size it last wrote), so a missing file is
 * refused rather than rebuilt from the database in hand (the last review put back an old copy and deleted
 * the mark); only a store that never had one (made before the mark existed) adopts one from its latest
 * checkpoint. The mark is written under the store's write lock, in the transaction that keeps the
 * checkpoint, so two runners never move it backwards.
 *
 * What it does not stop: someone who puts back the mark too (a restore of the whole state folder). Only a
 * checkpoint kept off the host (a bundle, an auditor, the coordinator's witness) shows that.
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseJson } from '../core/json.js';
import { writeFileAtomic } from '../state/files.js';
import { StoreError } from './errors.js';
import type { SqliteDatabase } from './sqlite.js';

/** Schema 6: the size of the mark this database last wrote (one row, once it has written one). */
export const LOG_HEAD_SQL = `CREATE TABLE log_head_v1 (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  size INTEGER NOT NULL
);`;

/** The size of the mark this database says it wrote last, or undefined if it never wrote one. */
export function recordedHeadSize(db: SqliteDatabase): number | undefined {
  const row = db.prepare('SELECT size FROM log_head_v1 WHERE id = 1').get() as { size: number } | undefined;
  return row === undefined ? undefined : Number(row.size);
}

export function recordHeadSize(db: SqliteDatabase, size: number): void {
  db.prepare('INSERT INTO log_head_v1 (id, size) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET size = excluded.size').run(size);
}

export interface LogHead {
  size: number;
  /** The root hash at `size`, base64. */
  root: string;
}

const HEAD_MAX_BYTES = 1024;
const ROOT = /^[A-Za-z0-9+/]{43}=$/;

export function headPathOf(databasePath: string): string {
  return `${databasePath}.head`;
}

/** The mark, or undefined when there is none yet (a store from before it existed, or a fresh one). */
export function readLogHead(path: string): LogHead | undefined {
  if (!existsSync(path)) return undefined;
  let value: unknown;
  try {
    value = parseJson(readFileSync(path), { maxBytes: HEAD_MAX_BYTES });
  } catch (cause) {
    throw new StoreError('STORE_ROLLED_BACK', `The log's high-water mark ${path} is unreadable; nothing is accepted.`, { path }, { cause });
  }
  const head = value as Partial<LogHead> | null;
  if (
    typeof head !== 'object' ||
    head === null ||
    !Number.isSafeInteger(head.size) ||
    (head.size as number) < 0 ||
    typeof head.root !== 'string' ||
    !ROOT.test(head.root)
  ) {
    throw new StoreError('STORE_ROLLED_BACK', `The log's high-water mark ${path} is not {size, root}; nothing is accepted.`, { path });
  }
  return { size: head.size as number, root: head.root };
}

export function writeLogHead(path: string, head: LogHead): void {
  writeFileAtomic(path, `${JSON.stringify({ size: head.size, root: head.root })}\n`, { mode: 0o600 });
}

export function missingHead(path: string, recorded: number): StoreError<'STORE_ROLLED_BACK'> {
  return new StoreError(
    'STORE_ROLLED_BACK',
    `The log's high-water mark ${path} is missing, though this database wrote one (size ${recorded}): it may be an older copy put back with its mark removed; nothing is accepted.`,
    { path, headSize: recorded },
  );
}

/** Refuses a tree that does not reach the mark, or that reaches it with another root. */
export function verifyLogHead(path: string, head: LogHead, treeSize: number, rootAt: (size: number) => Buffer): void {
  if (treeSize < head.size) {
    throw new StoreError(
      'STORE_ROLLED_BACK',
      `The runner database holds ${treeSize} records, fewer than the ${head.size} of the last checkpoint it signed: it is an older copy (restored or put back), and capsules accepted since would run again; nothing is accepted.`,
      { path, size: treeSize, headSize: head.size },
    );
  }
  if (rootAt(head.size).toString('base64') !== head.root) {
    throw new StoreError(
      'STORE_ROLLED_BACK',
      `The runner database's log differs, at size ${head.size}, from the last checkpoint it signed: it is not the database that signed it; nothing is accepted.`,
      { path, size: treeSize, headSize: head.size },
    );
  }
}
