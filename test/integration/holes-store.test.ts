/**
 * Issue 8, point 13: a corrupted database must not re-admit replays, and the log must show a replay the
 * store failed to refuse. Through the built CLI on real state folders; the database file is edited as the
 * outside review did (bytes of the replay table's page overwritten in place), or through SQL.
 */
import { closeSync, copyFileSync, existsSync, openSync, readdirSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkpointNow } from '../../runner/agent/log.js';
import { formatCheckpointLine, formatExportHeader, formatLeafLine, verifyExport } from '../../runner/log/export.js';
import { exportLog } from '../../runner/cli/log-export.js';
import { originOf } from '../../runner/agent/log.js';
import { loadState } from '../../runner/state/state.js';
import { Store } from '../../runner/store/store.js';
import { SqliteDatabase } from '../../runner/store/sqlite.js';
import { runCli } from '../helpers/cli.js';
import { makeWorld, type World } from '../helpers/world.js';

let world: World | undefined;
afterEach(() => world?.cleanup());

const dbPath = (w: World) => join(w.stateDir, 'runner.db');

/** Runs the capsule file through `exec`; returns the CLI result. */
const exec = (w: World, file: string) => runCli(['exec', file, '--state', w.stateDir]);

/** Folds the WAL into the main file and returns the replay table's root page and the page size. */
function replayTablePage(path: string): { page: number; pageSize: number } {
  const db = SqliteDatabase.open(path, { busyTimeoutMs: 5000 });
  try {
    db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    const { rootpage } = db.prepare("SELECT rootpage FROM sqlite_schema WHERE name = 'seen_capsules_v1'").get() as { rootpage: number };
    return { page: rootpage, pageSize: db.pragmaNumber('page_size') };
  } finally {
    db.close();
  }
}

/** Overwrites bytes of page `page` (1-based) where `edit` says, in the file itself. */
function editPage(path: string, page: number, pageSize: number, edit: (bytes: Buffer) => void): void {
  const fd = openSync(path, 'r+');
  try {
    const bytes = Buffer.alloc(pageSize);
    readSync(fd, bytes, 0, pageSize, (page - 1) * pageSize);
    edit(bytes);
    writeSync(fd, bytes, 0, pageSize, (page - 1) * pageSize);
  } finally {
    closeSync(fd);
  }
}

/** The bundles the runner wrote: one per run that reached its evidence. */
const bundles = (w: World) => readdirSync(join(w.stateDir, 'evidence', 'bundles')).length;

/** Three capsules, run once each through `exec`. */
function threeRuns(w: World): { files: string[]; nonces: string[] } {
  const capsules = [0, 1, 2].map(() => w.capsule());
  const files = capsules.map((capsule) => w.writeCapsule(capsule));
  for (const file of files) expect(exec(w, file).status).toBe(0);
  expect(bundles(w)).toBe(3);
  const nonces = capsules.map((capsule) => JSON.parse(Buffer.from(capsule.envelope.payload, 'base64').toString('utf8')).nonce as string);
  return { files, nonces };
}

describe('attack 13: a corrupted replay table does not let capsules that already ran run again', () => {
  it('nonce bytes overwritten in place (the page still well formed): every exec is refused with STORE_CORRUPT, nothing runs', () => {
    const w = (world = makeWorld());
    const { files, nonces } = threeRuns(w);
    const { page, pageSize } = replayTablePage(dbPath(w));
    editPage(dbPath(w), page, pageSize, (bytes) => {
      for (const nonce of nonces) {
        const at = bytes.indexOf(nonce, 0, 'latin1');
        expect(at, 'the nonce is on the replay table page').toBeGreaterThan(0);
        bytes.write(
          nonce.replace(/^./, (c) => (c === '0' ? '1' : '0')),
          at,
          'latin1',
        ); // same length, other nonce
      }
    });
    for (const file of files) {
      const result = exec(w, file);
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr).toMatch(/^edge-runner: STORE_CORRUPT: The replay table of .* disagrees with the log/);
    }
    expect(bundles(w), 'nothing ran again').toBe(3);
  });

  it("the page's header overwritten: every exec is refused with STORE_CORRUPT (quick_check), nothing runs", () => {
    const w = (world = makeWorld());
    const { files } = threeRuns(w);
    const { page, pageSize } = replayTablePage(dbPath(w));
    // The b-tree page header and cell pointer array: what a crude overwrite of "part of the page" hits.
    editPage(dbPath(w), page, pageSize, (bytes) => bytes.fill(0x41, 0, 64));
    for (const file of files) {
      const result = exec(w, file);
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr).toMatch(/^edge-runner: STORE_CORRUPT: /);
    }
    expect(bundles(w)).toBe(3);
  });

  it('review variant: two cell pointers swapped in an interior page of the replay table (quick_check passes): refused, nothing runs', () => {
    const w = (world = makeWorld());
    // Enough acceptances that the replay table's root is an interior page of its (index) b-tree.
    const store = Store.open(dbPath(w));
    for (let i = 0; i < 150; i++) {
      store.acceptCapsule(`n-${i}-${'x'.repeat(60)}`, {
        capsuleId: `filler-${String(i).padStart(4, '0')}-${'y'.repeat(60)}`,
        capsuleKind: 'validate',
        manifestDigest: `sha256:${'a'.repeat(64)}`,
        signers: ['k'],
      });
    }
    store.close();
    const { files } = threeRuns(w);
    const { page, pageSize } = replayTablePage(dbPath(w));
    editPage(dbPath(w), page, pageSize, (bytes) => {
      const header = page === 1 ? 100 : 0;
      expect(bytes[header], 'an interior index page').toBe(0x02);
      const first = bytes.readUInt16BE(header + 12);
      bytes.writeUInt16BE(bytes.readUInt16BE(header + 14), header + 12);
      bytes.writeUInt16BE(first, header + 14);
    });
    const quick = SqliteDatabase.open(dbPath(w), { busyTimeoutMs: 5000 });
    expect(quick.prepare('PRAGMA quick_check').all()).toEqual([{ quick_check: 'ok' }]); // what the first fix relied on
    quick.close();
    for (const file of files) {
      const result = exec(w, file);
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr).toMatch(/^edge-runner: STORE_CORRUPT: The replay table of .* is damaged/);
    }
    expect(bundles(w), 'nothing ran again').toBe(3);
  });

  it('review variant: a log that already accepts an id + nonce twice stops the runner at open (STORE_CORRUPT)', () => {
    const w = (world = makeWorld());
    const { store } = logWithReplay(w);
    store.close();
    // A replay table that agrees with the log row for row, as one whose index let the duplicate in would:
    // rebuilt without its primary key, so that both acceptances have their row.
    const raw = SqliteDatabase.open(dbPath(w), { busyTimeoutMs: 5000 });
    raw.exec(`DROP TABLE seen_capsules_v1;
      CREATE TABLE seen_capsules_v1 (capsule_id TEXT NOT NULL, nonce TEXT NOT NULL, accepted_seq INTEGER NOT NULL);
      INSERT INTO seen_capsules_v1 VALUES ('nightly', 'nonce-1', 0), ('nightly', 'nonce-1', 2);`);
    raw.close();
    const result = exec(w, w.writeCapsule(w.capsule()));
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/^edge-runner: STORE_CORRUPT: The log of .* accepts 1 capsule id \+ nonce pair\(s\) a second time/);
  });

  it('a replay-table row deleted through SQL: refused (fewer nonces than accepted capsules)', () => {
    const w = (world = makeWorld());
    const { files } = threeRuns(w);
    const db = SqliteDatabase.open(dbPath(w), { busyTimeoutMs: 5000 });
    db.exec('DELETE FROM seen_capsules_v1');
    db.close();
    const result = exec(w, files[0]!);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('(0 nonces for 3 accepted capsules, 0 not matching their record)');
    expect(bundles(w)).toBe(3);
  });

  it('an untouched store opens and runs the next capsule (the check passes on a healthy file)', () => {
    const w = (world = makeWorld());
    threeRuns(w);
    expect(exec(w, w.writeCapsule(w.capsule())).status).toBe(0);
    expect(bundles(w)).toBe(4);
  });
});

/**
 * One capsule run, a backup of the database taken (folded into one file), a later capsule run (and its
 * replay refused), then the backup put back as an operator would: the database file only. Returns the
 * later capsule's file.
 */
function putBackOlderCopy(w: World): string {
  expect(exec(w, w.writeCapsule(w.capsule())).status).toBe(0);
  replayTablePage(dbPath(w));
  const backup = `${dbPath(w)}.backup`;
  copyFileSync(dbPath(w), backup);
  const later = w.writeCapsule(w.capsule());
  expect(exec(w, later).status).toBe(0);
  expect(exec(w, later).stderr).toMatch(/CAPSULE_REPLAY/);
  for (const suffix of ['-wal', '-shm']) rmSync(`${dbPath(w)}${suffix}`, { force: true });
  copyFileSync(backup, dbPath(w));
  rmSync(backup);
  return later;
}

describe('review round 2: an older copy of the database put back (a restore from a backup)', () => {
  it('is refused with STORE_ROLLED_BACK: the capsules accepted since do not run again, and no forked checkpoint is signed', () => {
    const w = (world = makeWorld());
    const later = putBackOlderCopy(w);
    const replayed = exec(w, later);
    expect(replayed.status, replayed.stderr).toBe(2);
    expect(replayed.stderr).toMatch(
      /^edge-runner: STORE_ROLLED_BACK: The runner database holds \d+ records, fewer than the \d+ of the last checkpoint it signed/,
    );
    expect(bundles(w), 'the later capsule ran once').toBe(2);
    const checkpoint = runCli(['log', 'checkpoint', '--state', w.stateDir]);
    expect(checkpoint.status).toBe(2);
    expect(checkpoint.stdout).toBe('');
  });
});

describe('review round 3: an older copy put back and its mark removed', () => {
  it('is refused too (STORE_ROLLED_BACK): the database remembers that it wrote a mark', () => {
    const w = (world = makeWorld());
    const later = putBackOlderCopy(w);
    rmSync(`${dbPath(w)}.head`);
    const replayed = exec(w, later);
    expect(replayed.status, replayed.stderr).toBe(2);
    expect(replayed.stderr).toMatch(/^edge-runner: STORE_ROLLED_BACK: The log's high-water mark .* is missing, though this database wrote one/);
    expect(bundles(w), 'the later capsule ran once').toBe(2);
  });

  it('a store that never had a mark (made before it existed) adopts one from its latest checkpoint, and is held to it', () => {
    const w = (world = makeWorld());
    expect(exec(w, w.writeCapsule(w.capsule())).status).toBe(0);
    const raw = SqliteDatabase.open(dbPath(w), { busyTimeoutMs: 5000 });
    raw.exec('DELETE FROM log_head_v1');
    raw.close();
    rmSync(`${dbPath(w)}.head`);
    expect(exec(w, w.writeCapsule(w.capsule())).status).toBe(0);
    expect(existsSync(`${dbPath(w)}.head`)).toBe(true);
  });
});

/**
 * A log that holds a replay: what a store whose replay table was emptied while it was open (so no open-time
 * check ran) writes. The records are the runner's own, signed by its own checkpoints.
 */
function logWithReplay(w: World): { store: Store; identity: { runnerId: string; key: World['runnerKey'] } } {
  const store = Store.open(dbPath(w));
  const body = { capsuleId: 'nightly', capsuleKind: 'validate', manifestDigest: `sha256:${'a'.repeat(64)}`, signers: ['k'] };
  store.acceptCapsule('nonce-1', body);
  store.appendRecord('capsule.rejected', { code: 'CAPSULE_EXPIRED' });
  const raw = SqliteDatabase.open(dbPath(w), { busyTimeoutMs: 5000 });
  raw.exec('DELETE FROM seen_capsules_v1');
  raw.close();
  store.acceptCapsule('nonce-1', body);
  return { store, identity: { runnerId: w.runnerId, key: w.runnerKey } };
}

describe('attack 13: the log shows an id + nonce accepted twice', () => {
  it('log export refuses to write it (LOG_REPLAY_ACCEPTED), leaving no file', () => {
    const w = (world = makeWorld());
    const { store, identity } = logWithReplay(w);
    const out = join(w.dir, 'replay.log.jsonl');
    try {
      expect(() => exportLog(store, identity, out, loadState(w.stateDir, new Date()).trust)).toThrow(
        expect.objectContaining({ code: 'LOG_REPLAY_ACCEPTED' }),
      );
    } finally {
      store.close();
    }
    expect(existsSync(out)).toBe(false);
  });

  it('log verify of such an export (written without the check) fails with LOG_REPLAY_ACCEPTED at the second acceptance, exit 1', async () => {
    const w = (world = makeWorld());
    const { store, identity } = logWithReplay(w);
    const checkpoint = checkpointNow(store, identity);
    const lines = [formatExportHeader({ origin: originOf(identity), runner: { id: w.runnerId, keyid: w.runnerKey.keyid }, size: checkpoint.size })];
    let index = 0;
    for (const record of store.records(0)) lines.push(formatLeafLine(index++, record.leaf));
    lines.push(formatCheckpointLine(checkpoint.note));
    store.close();
    await expect(verifyExport(lines, { trust: w.trust })).rejects.toMatchObject({
      code: 'LOG_REPLAY_ACCEPTED',
      details: { index: 2, firstIndex: 0 },
    });
    const file = join(w.dir, 'replay.log.jsonl');
    writeFileSync(file, `${lines.join('\n')}\n`);
    const result = runCli(['log', 'verify', file, '--trust', w.trustPath]);
    expect(result.status).toBe(1);
    expect(result.stdout).toBe(
      'FAIL line 4 (leaf 2): LOG_REPLAY_ACCEPTED: the capsule "nightly" is accepted again with the nonce leaf 0 accepted.\n',
    );
  });
});
