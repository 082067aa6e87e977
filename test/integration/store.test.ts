import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { column, openRawDb, value, withRawDb } from '../helpers/raw-db.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SCHEMA_VERSION, Store, currentProcess } from '../../runner/store/store.js';
import { StoreError } from '../../runner/store/errors.js';
import { CompactRange, consistencyProof, hashLeaf, inclusionProof, nodeReaderFromLeafHashes, rootFromLeafHashes } from '../../runner/log/merkle.js';
import { codeOf } from '../helpers/codes.js';

const accepted = (capsuleId: string) => ({ capsuleId, capsuleKind: 'validate', manifestDigest: `sha256:${'0'.repeat(64)}`, signers: [] });
const started = (runId: string) => ({ runId, capsuleId: 'c', manifestDigest: `sha256:${'0'.repeat(64)}`, isolation: 'none' as const });

/** Schema 1 as the first runner wrote it (records, nonces, runs), in that runner's own SQL. */
const SCHEMA_1_SQL = `CREATE TABLE records_v1 (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, at TEXT NOT NULL, run_id TEXT, leaf BLOB NOT NULL);
  CREATE INDEX records_v1_run ON records_v1(run_id);
  CREATE TABLE seen_capsules_v1 (capsule_id TEXT NOT NULL, nonce TEXT NOT NULL, accepted_seq INTEGER NOT NULL, PRIMARY KEY (capsule_id, nonce)) WITHOUT ROWID;
  CREATE TABLE runs_v1 (run_id TEXT PRIMARY KEY, capsule_id TEXT NOT NULL, manifest_digest TEXT NOT NULL, status TEXT NOT NULL, verdict TEXT, started_at TEXT NOT NULL, ended_at TEXT, evidence_digest TEXT) WITHOUT ROWID;`;

/** What schemas 2 to 4 added: the tree in its own table, one row per complete subtree; checkpoints; run owners; no run index. */
const SCHEMA_4_SQL = `${SCHEMA_1_SQL}
  CREATE TABLE merkle_nodes_v1 (level INTEGER NOT NULL CHECK (level BETWEEN 0 AND 63), idx INTEGER NOT NULL CHECK (idx >= 0), hash BLOB NOT NULL CHECK (length(hash) = 32), PRIMARY KEY (level, idx)) WITHOUT ROWID;
  CREATE TABLE checkpoints_v1 (size INTEGER PRIMARY KEY, note TEXT NOT NULL, signed_at TEXT NOT NULL);
  ALTER TABLE runs_v1 ADD COLUMN owner_pid INTEGER;
  ALTER TABLE runs_v1 ADD COLUMN owner_start TEXT;
  DROP INDEX records_v1_run;`;

const oldLeaf = (seq: number): Buffer => Buffer.from(`{"kind":"capsule.rejected","seq":${seq},"v":1}`);

/** A database as a schema-4 runner left it: `count` records and every complete subtree of their leaves in merkle_nodes_v1. */
function writeSchema4(path: string, count: number): Buffer[] {
  const leaves = Array.from({ length: count }, (_, seq) => oldLeaf(seq));
  withRawDb(path, (raw) => {
    raw.exec(SCHEMA_4_SQL);
    const record = raw.prepare('INSERT INTO records_v1 (seq, kind, at, run_id, leaf) VALUES (?, ?, ?, ?, ?)');
    const node = raw.prepare('INSERT INTO merkle_nodes_v1 (level, idx, hash) VALUES (?, ?, ?)');
    const range = new CompactRange();
    leaves.forEach((leaf, seq) => {
      record.run(seq, 'capsule.rejected', '2025-01-01T00:00:00.000Z', seq % 3 === 0 ? `run-${seq}` : null, leaf);
      range.append(hashLeaf(leaf), (level, idx, hash) => node.run(level, idx, hash));
    });
    raw.exec('PRAGMA user_version = 4');
  });
  return leaves;
}

const tables = (raw: DatabaseSync): string[] => column<string>(raw, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name");

describe('the runner store (a real SQLite file)', () => {
  let dir: string;
  let path: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-runner-store-'));
    path = join(dir, 'runner.db');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("makes every record a leaf: the tree root is the root of the records' leaf bytes, in seq order", () => {
    const store = Store.open(path, { create: true });
    const leaves = [0, 1, 2, 3, 4].map((i) => store.appendRecord('capsule.rejected', { code: 'CAPSULE_EXPIRED', fileSize: i }).leaf);
    expect(store.merkle.size()).toBe(5);
    expect(store.merkle.root().equals(rootFromLeafHashes(leaves.map(hashLeaf)))).toBe(true);
    expect(JSON.parse(leaves[3]!.toString())).toMatchObject({ v: 1, seq: 3, kind: 'capsule.rejected', fileSize: 3 });
    store.close();
  });

  it('burns an id+nonce once: a second acceptance is STORE_REPLAY and writes no record', () => {
    const store = Store.open(path, { create: true });
    store.acceptCapsule('n', accepted('c'));
    expect(() => store.acceptCapsule('n', accepted('c'))).toThrow(StoreError);
    expect(store.recordCount()).toBe(1);
    store.close();
    // ... and across a reopen (a restart).
    const again = Store.open(path, { create: true });
    expect(again.hasSeen('c', 'n')).toBe(true);
    again.close();
  });

  describe('when a runner restarts', () => {
    it('aborts, with a record, a run whose runner process is gone', () => {
      const store = Store.open(path, { create: true });
      store.startRun(started('dead-run'), { pid: 2 ** 22 + 7, start: '1' });
      expect(store.abortInterruptedRuns()).toEqual(['dead-run']);
      expect(store.run('dead-run')?.status).toBe('aborted');
      const last = [...store.records()].at(-1)!;
      expect(JSON.parse(last.leaf.toString())).toMatchObject({ kind: 'run.aborted', runId: 'dead-run', reason: 'RUN_RUNNER_RESTARTED' });
      store.close();
    });

    it('leaves alone a run whose runner is still alive (a concurrent exec)', () => {
      const store = Store.open(path, { create: true });
      store.startRun(started('live-run'), currentProcess());
      expect(store.abortInterruptedRuns()).toEqual([]);
      expect(store.run('live-run')?.status).toBe('running');
      store.close();
    });

    it('does not take a reused pid for the runner that started the run', () => {
      const store = Store.open(path, { create: true });
      store.startRun(started('reused'), { pid: process.pid, start: 'not-this-start' });
      expect(store.abortInterruptedRuns()).toEqual(['reused']);
      store.close();
    });
  });

  it("keeps a record and its place in the tree in one row: the tree has the records' seqs, and checkNodes checks each leaf hash", () => {
    const store = Store.open(path, { create: true });
    for (let i = 0; i < 9; i++) store.appendRecord('capsule.rejected', { code: 'CAPSULE_EXPIRED', fileSize: i });
    store.merkle.checkNodes();
    store.close();
    withRawDb(path, (raw) => {
      expect(tables(raw)).not.toContain('merkle_nodes_v1');
      expect(value(raw, 'SELECT length(tree) FROM records_v1 WHERE seq = 7')).toBe(4 * 32); // 7 = 0b111 completes three subtrees
      // An edited leaf no longer matches the leaf hash stored beside it.
      raw.prepare("UPDATE records_v1 SET leaf = CAST(replace(CAST(leaf AS TEXT), 'EXPIRED', 'INVALID') AS BLOB) WHERE seq = 4").run();
    });
    const again = Store.open(path);
    expect(codeOf(() => again.merkle.checkNodes())).toBe('STORE_TREE_INCONSISTENT');
    again.close();
  });

  describe('when the record row cannot be written (and with it the leaf)', () => {
    it('writes no record, no nonce and no leaf (one transaction), and says STORE_WRITE_FAILED', () => {
      Store.open(path, { create: true }).close();
      const raw = openRawDb(path);
      raw.exec("CREATE TRIGGER refuse BEFORE INSERT ON records_v1 BEGIN SELECT RAISE(ABORT, 'injected'); END");
      raw.close();
      const store = Store.open(path, { create: true });
      expect(() => store.acceptCapsule('n', accepted('c'))).toThrow(expect.objectContaining({ code: 'STORE_WRITE_FAILED' }));
      expect(store.recordCount()).toBe(0);
      expect(store.merkle.size()).toBe(0);
      expect(store.hasSeen('c', 'n')).toBe(false);
      store.close();
    });
  });

  describe('when the database was written by a runner without the log (schema 1)', () => {
    it('turns its records into the first leaves when it migrates, their hashes in their own rows', () => {
      const raw = openRawDb(path);
      raw.exec(SCHEMA_1_SQL);
      const old = [Buffer.from('{"kind":"a","seq":0,"v":1}'), Buffer.from('{"kind":"b","seq":1,"v":1}')];
      old.forEach((leaf, seq) => raw.prepare('INSERT INTO records_v1 (seq, kind, at, leaf) VALUES (?, ?, ?, ?)').run(seq, 'x', 't', leaf));
      raw.exec('PRAGMA user_version = 1');
      raw.close();
      const store = Store.open(path, { create: true });
      expect(store.merkle.size()).toBe(2);
      expect(store.merkle.root().equals(rootFromLeafHashes(old.map(hashLeaf)))).toBe(true);
      store.merkle.checkNodes();
      store.appendRecord('capsule.rejected', { code: 'CAPSULE_EXPIRED' });
      expect(store.merkle.size()).toBe(3);
      store.merkle.checkNodes();
      store.close();
      withRawDb(path, (db) => {
        expect(value(db, 'PRAGMA user_version')).toBe(SCHEMA_VERSION);
        expect(tables(db)).not.toContain('merkle_nodes_v1');
      });
    });
  });

  describe('when the database was written with the tree in its own table (schema 4, merkle_nodes_v1)', () => {
    it('moves the stored hashes into the records: the same root and proofs, merkle_nodes_v1 gone, and the log goes on', () => {
      const leaves = writeSchema4(path, 37);
      const pure = nodeReaderFromLeafHashes(leaves.map(hashLeaf));
      const store = Store.open(path);
      expect(store.merkle.size()).toBe(37);
      for (let size = 1; size <= 37; size++) {
        expect(store.merkle.root(size)).toEqual(rootFromLeafHashes(leaves.slice(0, size).map(hashLeaf)));
        for (const index of [0, Math.floor(size / 2), size - 1])
          expect(store.merkle.inclusionProof(index, size)).toEqual(inclusionProof(index, size, pure));
        expect(store.merkle.consistencyProof(size, 37)).toEqual(consistencyProof(size, 37, pure));
      }
      store.merkle.checkNodes();
      // The records kept what they had.
      expect([...store.records()].map((r) => r.leaf)).toEqual(leaves);
      const next = store.appendRecord('capsule.rejected', { code: 'CAPSULE_EXPIRED' });
      expect(next.seq).toBe(37);
      expect(store.merkle.root()).toEqual(rootFromLeafHashes([...leaves, next.leaf].map(hashLeaf)));
      store.close();
      withRawDb(path, (db) => {
        expect(value(db, 'PRAGMA user_version')).toBe(SCHEMA_VERSION);
        expect(tables(db)).toEqual([
          'approvals_v1',
          'changes_v1',
          'checkpoints_v1',
          'cosignatures_v1',
          'feed_cursor_v1',
          'log_head_v1',
          'outbox_start_v1',
          'outbox_v1',
          'records_v1',
          'runs_v1',
          'schedules_v1',
          'seen_capsules_v1',
          'spool_checkpoints_v1',
          'spool_inbox_v1',
        ]);
        expect(column(db, 'SELECT run_id FROM records_v1 WHERE run_id IS NOT NULL ORDER BY seq')).toEqual(
          Array.from({ length: 13 }, (_, i) => `run-${3 * i}`),
        );
      });
    });

    // Refusing, with the code that names the fault, leaves the file at schema 4 exactly as it was: a tree that
    // does not check is neither rewritten into the new layout nor recomputed from the leaves (which would make
    // an edited record agree with its tree). STORE_TREE_INCONSISTENT rather than STORE_OPEN_FAILED: the file
    // opens; what it holds is wrong, and the details say where.
    it.each([
      ['a node row is missing', 'DELETE FROM merkle_nodes_v1 WHERE level = 2 AND idx = 3'],
      ['an interior node was edited', `UPDATE merkle_nodes_v1 SET hash = x'${'07'.repeat(32)}' WHERE level = 1 AND idx = 5`],
      ['a leaf hash was edited', `UPDATE merkle_nodes_v1 SET hash = x'${'07'.repeat(32)}' WHERE level = 0 AND idx = 20`],
      ['a record was edited', "UPDATE records_v1 SET leaf = CAST(replace(CAST(leaf AS TEXT), 'rejected', 'accepted') AS BLOB) WHERE seq = 9"],
      ['a record was deleted', 'DELETE FROM records_v1 WHERE seq = 36'],
      ['a record in the middle was deleted', 'DELETE FROM records_v1 WHERE seq = 12'],
      ['a node no record completes was added', `INSERT INTO merkle_nodes_v1 (level, idx, hash) VALUES (0, 37, x'${'07'.repeat(32)}')`],
    ])('refuses to migrate when %s (STORE_TREE_INCONSISTENT), and leaves the database at schema 4', (_what, tamper) => {
      writeSchema4(path, 37);
      withRawDb(path, (raw) => raw.exec(tamper));
      const before = withRawDb(path, (raw) => ({ tables: tables(raw), nodes: value(raw, 'SELECT COUNT(*) FROM merkle_nodes_v1') }));
      expect(codeOf(() => Store.open(path))).toBe('STORE_TREE_INCONSISTENT');
      withRawDb(path, (raw) => {
        expect(value(raw, 'PRAGMA user_version')).toBe(4);
        expect({ tables: tables(raw), nodes: value(raw, 'SELECT COUNT(*) FROM merkle_nodes_v1') }).toEqual(before);
      });
    });
  });
});
