/**
 * The store's transaction layer (runner/store/sqlite.ts) on a real SQLite file: one IMMEDIATE transaction,
 * nested writes that join it, and no partial commit when SQLite itself gives up on a transaction.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SqliteDatabase } from '../../runner/store/sqlite.js';
import { codeOf } from '../helpers/codes.js';

let dir: string;
let db: SqliteDatabase;
const count = () => Number((db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n);

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'edge-runner-tx-'));
  db = SqliteDatabase.open(join(dir, 'tx.db'), { busyTimeoutMs: 1000 });
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)');
});
afterEach(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('SqliteDatabase.transaction', () => {
  describe('when the disk fills inside a nested write that a caller catches', () => {
    it('lets no later write in that transaction commit on its own, and commits nothing', () => {
      const insert = db.prepare('INSERT INTO t (data) VALUES (?)');
      insert.run(Buffer.alloc(16));
      const pages = db.pragmaNumber('page_count');
      // A full disk, as SQLite sees one: the file may not grow past its size now.
      db.exec(`PRAGMA max_page_count = ${pages + 1}`);
      const before = count();
      let full: unknown;
      let after: unknown;
      const outcome = codeOf(() =>
        db.transaction(() => {
          try {
            db.transaction(() => {
              for (let i = 0; i < 1000; i++) insert.run(Buffer.alloc(4096));
            });
          } catch (err) {
            full = err; // a careless caller goes on
          }
          try {
            db.transaction(() => insert.run(Buffer.alloc(16)));
          } catch (err) {
            after = err;
          }
        }),
      );
      expect(
        codeOf(() => {
          throw full;
        }),
      ).toBe('STORE_WRITE_FAILED');
      expect(
        codeOf(() => {
          throw after;
        }),
      ).toBe('STORE_WRITE_FAILED');
      expect(outcome).toBe('STORE_WRITE_FAILED');
      expect(count()).toBe(before);
    });
  });

  it('rolls the whole transaction back when a nested write failed, even if the caller caught it', () => {
    const insert = db.prepare('INSERT INTO t (id, data) VALUES (?, ?)');
    expect(
      codeOf(() =>
        db.transaction(() => {
          insert.run(1, Buffer.alloc(1));
          try {
            db.transaction(() => insert.run(1, Buffer.alloc(1))); // duplicate key
          } catch {
            // ignored by the caller
          }
        }),
      ),
    ).toBe('STORE_WRITE_FAILED');
    expect(count()).toBe(0);
  });

  it('refuses a write inside a read snapshot', () => {
    expect(codeOf(() => db.snapshot(() => db.transaction(() => db.prepare('INSERT INTO t (data) VALUES (x00)').run())))).toBe('STORE_WRITE_FAILED');
    expect(count()).toBe(0);
  });
});
