/**
 * Tampering with the runner's SQLite file is caught (issue 4): through the built CLI, on a real state folder
 * with runs made by `exec`, an auditor keeps the checkpoint `log checkpoint` printed (and bundles), then the
 * database is edited as an attacker would; `log export` + `log verify --checkpoint EARLIER` must fail with a
 * code and exit 1.
 *
 * Whoever holds the state folder holds the runner key, so `log export` (which signs a fresh checkpoint) can
 * always make a rewritten log agree with itself. The "thorough" cases rebuild the tree and drop the stored
 * checkpoints, so that only what the auditor kept (a checkpoint, a bundle) can tell; they show that it does.
 */
import { cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CompactRange } from '../../runner/log/merkle.js';
import { appendTreeBlob, MerkleTable } from '../../runner/store/merkle.js';
import { SqliteDatabase } from '../../runner/store/sqlite.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { makeWorld, type World } from '../helpers/world.js';

let world: World;
/** Bundles of the first three runs, in order (each carries a checkpoint of the log at its end). */
const bundles: string[] = [];
/** What the auditor kept: `log checkpoint` after the third run. */
let earlierPath: string;
let earlierSize: number;
let copies = 0;

function exec(stateDir: string, out?: string): void {
  const file = world.writeCapsule(world.capsule({ steps: [{ name: 'echo', run: ['/bin/echo', 'hello'] }] }));
  const result = runCli(['exec', file, '--state', stateDir, ...(out ? ['--out', out] : [])]);
  if (result.status !== 0) throw new Error(`exec failed (${result.status}): ${result.stderr}`);
}

/** A fresh copy of the pristine state folder, for one tampering. */
function copyState(): string {
  const dir = join(world.dir, `state-copy-${++copies}`);
  cpSync(world.stateDir, dir, { recursive: true });
  return dir;
}

/** The attacker's handle: the database file opened directly, with the runner's own tree code at hand. */
function withDb<T>(stateDir: string, fn: (db: SqliteDatabase) => T): T {
  const db = SqliteDatabase.open(join(stateDir, 'runner.db'), { busyTimeoutMs: 5000 });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

/**
 * `log export` then `log verify`, returning the verify result; or the export's, when the export itself
 * refuses (it runs the checks of `log verify` against the pinned trust as it writes, and writes no file
 * when they fail; only the auditor's earlier checkpoint is beyond what it can check).
 */
function exportAndVerify(stateDir: string, checkpoint?: string): CliResult {
  const out = join(stateDir, '..', `${stateDir.split('/').pop()}.log.jsonl`);
  const exported = runCli(['log', 'export', '--state', stateDir, '--out', out]);
  if (exported.status !== 0) {
    expect(existsSync(out), 'a refused export leaves no file').toBe(false);
    return exported;
  }
  return runCli(['log', 'verify', out, '--trust', world.trustPath, ...(checkpoint ? ['--checkpoint', checkpoint] : [])]);
}

/** The code of a failed `log verify` (its FAIL line), or of a refused `log export` (its error line). */
function failureCode(result: CliResult): string {
  expect(result.status, result.stdout + result.stderr).toBe(1);
  const match =
    /^FAIL (?:line \d+(?: \(leaf \d+\))?|earlier checkpoint): (LOG_[A-Z_]+): /.exec(result.stdout) ??
    /^edge-runner: (LOG_[A-Z_]+): The log does not verify, so no export was written: /m.exec(result.stderr);
  expect(match, result.stdout + result.stderr).not.toBeNull();
  return match![1]!;
}

const toRow = (row: unknown) => ({ seq: (row as { seq: number }).seq, leaf: Buffer.from((row as { leaf: Uint8Array }).leaf) });
const leaves = (db: SqliteDatabase) => db.prepare('SELECT seq, leaf FROM records_v1 ORDER BY seq').all().map(toRow);

/** Rewrites every record's tree hashes (records_v1.tree) from the leaves, with the runner's own tree code. */
function rewriteTree(db: SqliteDatabase): void {
  const range = new CompactRange();
  const update = db.prepare('UPDATE records_v1 SET tree = ? WHERE seq = ?');
  db.transaction(() => {
    for (const row of leaves(db)) update.run(appendTreeBlob(range, row.leaf), row.seq);
  });
}

/**
 * The log's high-water mark beside the database (runner/store/head.ts) refuses any of these rewrites at
 * open (STORE_ROLLED_BACK); a careful attacker, who holds the host, removes it too. Then only what was kept
 * elsewhere can tell, which is what these cases show.
 */
function dropHead(stateDir: string): void {
  rmSync(join(stateDir, 'runner.db.head'), { force: true });
  withDb(stateDir, (db) => db.exec('DELETE FROM log_head_v1')); // and the database's memory of having one
}

/** What a careful attacker does after changing records: rebuild every tree hash from the leaves, drop the checkpoints. */
function rebuildTree(db: SqliteDatabase): void {
  db.exec('DELETE FROM checkpoints_v1;');
  rewriteTree(db);
}

/** The runner's tree as the store keeps it, in the records' rows. */
const recordsTree = (db: SqliteDatabase) => new MerkleTable(db, 'records');

function leafOfKind(db: SqliteDatabase, kind: string, nth = 0): { seq: number; leaf: Buffer } {
  const rows = db.prepare('SELECT seq, leaf FROM records_v1 WHERE kind = ? ORDER BY seq').all(kind).map(toRow);
  return rows[nth]!;
}

beforeAll(() => {
  world = makeWorld();
  for (let i = 0; i < 3; i++) {
    const out = join(world.dir, `run-${i + 1}.bundle.json`);
    exec(world.stateDir, out);
    bundles.push(out);
  }
  const checkpoint = runCli(['log', 'checkpoint', '--state', world.stateDir]);
  expect(checkpoint.status, checkpoint.stderr).toBe(0);
  earlierPath = join(world.dir, 'earlier.checkpoint.txt');
  writeFileSync(earlierPath, checkpoint.stdout);
  earlierSize = Number(checkpoint.stdout.split('\n')[1]);
  exec(world.stateDir); // the log goes on after the auditor's checkpoint
}, 120_000);

afterAll(() => world.cleanup());

describe('log verify on a state folder nobody touched', () => {
  it('passes against the earlier checkpoint and against an old bundle', () => {
    const result = exportAndVerify(copyState(), earlierPath);
    expect(result.status, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(
      new RegExp(
        `^OK log of runner ${world.runnerId}: ${earlierSize + 5} leaves, root \\S+, \\d+ checkpoints verified, consistent with the earlier checkpoint at size ${earlierSize}\\n$`,
      ),
    );
    expect(exportAndVerify(copyState(), bundles[0]).status).toBe(0);
  });
});

describe('when a row of records_v1 has its leaf edited', () => {
  it('log verify fails with LOG_ROOT_MISMATCH (the stored checkpoints no longer match) and exit 1', () => {
    const dir = copyState();
    withDb(dir, (db) => {
      const finished = leafOfKind(db, 'run.finished');
      const edited = Buffer.from(finished.leaf.toString('utf8').replace('"verdict":"pass"', '"verdict":"fail"'));
      expect(edited.equals(finished.leaf)).toBe(false);
      db.prepare('UPDATE records_v1 SET leaf = ? WHERE seq = ?').run(edited, finished.seq);
    });
    expect(failureCode(exportAndVerify(dir, earlierPath))).toBe('LOG_ROOT_MISMATCH');
  });

  it('and the tree rebuilt and the checkpoints dropped, fails against the earlier checkpoint and the old bundle only', () => {
    const dir = copyState();
    withDb(dir, (db) => {
      const finished = leafOfKind(db, 'run.finished');
      db.prepare('UPDATE records_v1 SET leaf = ? WHERE seq = ?').run(
        Buffer.from(finished.leaf.toString('utf8').replace('"verdict":"pass"', '"verdict":"fail"')),
        finished.seq,
      );
      expect(() => recordsTree(db).checkNodes()).toThrow(expect.objectContaining({ code: 'STORE_TREE_INCONSISTENT' })); // the edit shows...
      rebuildTree(db);
      recordsTree(db).checkNodes(); // ...until the tree is rebuilt: the database is consistent again
    });
    const kept = runCli(['log', 'export', '--state', dir, '--out', join(dir, '..', 'kept-head.jsonl')]);
    expect(kept.stderr, 'with the high-water mark in place, the runner itself refuses the rewritten database').toMatch(
      /^edge-runner: STORE_ROLLED_BACK: /,
    );
    dropHead(dir);
    expect(exportAndVerify(dir).status, 'without an earlier checkpoint the rewritten log agrees with itself').toBe(0);
    expect(failureCode(exportAndVerify(dir, earlierPath))).toBe('LOG_EARLIER_CHECKPOINT_MISMATCH');
    expect(failureCode(exportAndVerify(dir, bundles[0]))).toBe('LOG_EARLIER_CHECKPOINT_MISMATCH');
  });
});

describe('when a row of records_v1 is deleted', () => {
  it('log verify fails with LOG_LEAF_INVALID at the leaf that took its place, and exit 1', () => {
    const dir = copyState();
    const seq = withDb(dir, (db) => {
      const { seq } = leafOfKind(db, 'step.finished');
      db.prepare('DELETE FROM records_v1 WHERE seq = ?').run(seq);
      return seq;
    });
    const result = exportAndVerify(dir, earlierPath);
    expect(failureCode(result)).toBe('LOG_LEAF_INVALID');
    // Refused by the export's own check: the place and the sentence are those `log verify` gives.
    expect(result.stderr).toContain(`(leaf ${seq}): the record's seq is ${seq + 1}, not its index ${seq}.`);
  });
});

describe('when two rows of records_v1 are reordered (their leaf blobs swapped)', () => {
  it('log verify fails with LOG_LEAF_INVALID and exit 1', () => {
    const dir = copyState();
    withDb(dir, (db) => {
      const a = leafOfKind(db, 'run.started', 0);
      const b = leafOfKind(db, 'run.started', 1);
      const update = db.prepare('UPDATE records_v1 SET leaf = ? WHERE seq = ?');
      db.transaction(() => {
        update.run(b.leaf, a.seq);
        update.run(a.leaf, b.seq);
      });
    });
    expect(failureCode(exportAndVerify(dir, earlierPath))).toBe('LOG_LEAF_INVALID');
  });
});

describe('when the log is truncated and re-appended, the database kept consistent', () => {
  let dir: string;
  beforeAll(() => {
    dir = copyState();
    const cut = earlierSize - 3; // inside the third run, before the auditor's checkpoint
    withDb(dir, (db) => {
      db.transaction(() => {
        db.prepare('DELETE FROM runs_v1 WHERE run_id IN (SELECT run_id FROM records_v1 WHERE seq >= ? AND run_id IS NOT NULL)').run(cut);
        db.prepare('DELETE FROM seen_capsules_v1 WHERE accepted_seq >= ?').run(cut);
        db.prepare('DELETE FROM records_v1 WHERE seq >= ?').run(cut);
        db.prepare('DELETE FROM checkpoints_v1 WHERE size >= ?').run(cut);
        // The careful attacker also drops what the outbox owed for the cut records (the store checks the two agree).
        db.prepare('DELETE FROM outbox_v1 WHERE record_seq >= ?').run(cut);
      });
      // The records' rows carry their tree hashes, so the rows left already are a consistent tree of `cut`
      // leaves; rewriting them from the leaves, as a careful attacker might, changes nothing.
      recordsTree(db).checkNodes();
      rewriteTree(db);
      recordsTree(db).checkNodes();
      expect(recordsTree(db).size()).toBe(cut);
    });
    dropHead(dir);
    exec(dir);
    exec(dir);
  }, 60_000);

  it('still agrees with itself and with checkpoints from before the cut', () => {
    expect(exportAndVerify(dir).status).toBe(0);
    expect(exportAndVerify(dir, bundles[0]).status).toBe(0);
  });

  it('log verify --checkpoint EARLIER fails with LOG_EARLIER_CHECKPOINT_MISMATCH at the leaf that reaches its size, and exit 1', () => {
    const result = exportAndVerify(dir, earlierPath);
    expect(failureCode(result)).toBe('LOG_EARLIER_CHECKPOINT_MISMATCH');
    expect(result.stdout).toContain(`(leaf ${earlierSize - 1})`);
  });

  it('a bundle made before the tampering no longer matches the log', () => {
    expect(failureCode(exportAndVerify(dir, bundles[2]))).toBe('LOG_EARLIER_CHECKPOINT_MISMATCH');
    // The bundle itself still verifies alone: it is the log that changed.
    expect(runCli(['verify', bundles[2]!, '--trust', world.trustPath]).status).toBe(0);
  });

  it('without the re-append, fails with LOG_EARLIER_CHECKPOINT_BEYOND_EXPORT', () => {
    const short = copyState();
    withDb(short, (db) => {
      db.prepare('DELETE FROM records_v1 WHERE seq >= ?').run(5);
      db.prepare('DELETE FROM checkpoints_v1 WHERE size > ?').run(5);
      // Careful: the replay table would show the missing acceptances (STORE_CORRUPT at open).
      db.prepare('DELETE FROM seen_capsules_v1 WHERE accepted_seq >= ?').run(5);
      // And the outbox would show rows for records that are gone.
      db.prepare('DELETE FROM outbox_v1 WHERE record_seq >= ?').run(5);
      rebuildTree(db);
    });
    dropHead(short);
    expect(failureCode(exportAndVerify(short, earlierPath))).toBe('LOG_EARLIER_CHECKPOINT_BEYOND_EXPORT');
  });
});

describe('log verify usage', () => {
  it('exits 2 when --checkpoint is JSON without log.checkpoint', () => {
    const notBundle = join(world.dir, 'not-a-bundle.json');
    writeFileSync(notBundle, '{"log":{}}');
    const tmp = mkdtempSync(join(world.dir, 'usage-'));
    const out = join(tmp, 'log.jsonl');
    expect(runCli(['log', 'export', '--state', copyState(), '--out', out]).status).toBe(0);
    const result = runCli(['log', 'verify', out, '--trust', world.trustPath, '--checkpoint', notBundle]);
    expect(result.status).toBe(2);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('prints a machine-readable result with --json', () => {
    const dir = copyState();
    const out = join(world.dir, 'json.log.jsonl');
    expect(runCli(['log', 'export', '--state', dir, '--out', out]).status).toBe(0);
    const result = runCli(['log', 'verify', out, '--trust', world.trustPath, '--checkpoint', earlierPath, '--json']);
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({
      ok: true,
      size: earlierSize + 5,
      earlier: { size: earlierSize },
      runner: { id: world.runnerId },
    });
  });
});
