import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRawDb } from '../helpers/raw-db.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Store, currentProcess } from '../../runner/store/store.js';
import { StoreError } from '../../runner/store/errors.js';
import { hashLeaf, rootFromLeafHashes } from '../../runner/log/merkle.js';

const accepted = (capsuleId: string) => ({ capsuleId, capsuleKind: 'validate', manifestDigest: `sha256:${'0'.repeat(64)}`, signers: [] });
const started = (runId: string) => ({ runId, capsuleId: 'c', manifestDigest: `sha256:${'0'.repeat(64)}`, isolation: 'none' as const });

describe('the runner store (a real SQLite file)', () => {
  let dir: string;
  let path: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-runner-store-'));
    path = join(dir, 'runner.db');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('makes every record a leaf: the tree root is the root of the records\' leaf bytes, in seq order', () => {
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
      expect(JSON.parse(last.leaf.toString())).toMatchObject({ kind: 'run.aborted', runId: 'dead-run', reason: 'runner-restarted' });
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

  describe('when the leaf cannot be appended', () => {
    it('writes no record either (one transaction), and says STORE_WRITE_FAILED', () => {
      Store.open(path, { create: true }).close();
      const raw = openRawDb(path);
      raw.exec("CREATE TRIGGER refuse BEFORE INSERT ON merkle_nodes_v1 BEGIN SELECT RAISE(ABORT, 'injected'); END");
      raw.close();
      const store = Store.open(path, { create: true });
      expect(() => store.acceptCapsule('n', accepted('c'))).toThrow(expect.objectContaining({ code: 'STORE_WRITE_FAILED' }));
      expect(store.recordCount()).toBe(0);
      expect(store.hasSeen('c', 'n')).toBe(false);
      store.close();
    });
  });

  describe('when the database was written by a runner without the log (schema 1)', () => {
    it('turns its records into the first leaves when it migrates', () => {
      const raw = openRawDb(path);
      raw.exec(`CREATE TABLE records_v1 (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, at TEXT NOT NULL, run_id TEXT, leaf BLOB NOT NULL);
        CREATE INDEX records_v1_run ON records_v1(run_id);
        CREATE TABLE seen_capsules_v1 (capsule_id TEXT NOT NULL, nonce TEXT NOT NULL, accepted_seq INTEGER NOT NULL, PRIMARY KEY (capsule_id, nonce)) WITHOUT ROWID;
        CREATE TABLE runs_v1 (run_id TEXT PRIMARY KEY, capsule_id TEXT NOT NULL, manifest_digest TEXT NOT NULL, status TEXT NOT NULL, verdict TEXT, started_at TEXT NOT NULL, ended_at TEXT, evidence_digest TEXT) WITHOUT ROWID;`);
      const old = [Buffer.from('{"kind":"a","seq":0,"v":1}'), Buffer.from('{"kind":"b","seq":1,"v":1}')];
      old.forEach((leaf, seq) => raw.prepare('INSERT INTO records_v1 (seq, kind, at, leaf) VALUES (?, ?, ?, ?)').run(seq, 'x', 't', leaf));
      raw.exec('PRAGMA user_version = 1');
      raw.close();
      const store = Store.open(path, { create: true });
      expect(store.merkle.size()).toBe(2);
      expect(store.merkle.root().equals(rootFromLeafHashes(old.map(hashLeaf)))).toBe(true);
      store.appendRecord('capsule.rejected', { code: 'CAPSULE_EXPIRED' });
      expect(store.merkle.size()).toBe(3);
      store.close();
    });
  });
});
