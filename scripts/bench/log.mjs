// The Merkle log and the runner's record path, in real SQLite files (node:sqlite), each beside a reference
// measured in the same run:
//   - the tree alone (runner/store/merkle.ts MerkleTable over its standalone table, one row per leaf holding
//     the hashes that leaf completes): appends in batches against a bare insert of one 32-byte row per leaf,
//     proof generation and verification at 1,000,000 leaves, a full recompute of the root against raw
//     node:crypto SHA-256 of the same leaves, and one durable commit per leaf against the bare durable
//     commit below;
//   - the runner's full record path (runner/store/store.ts Store.appendRecord: canonical JSON leaf, its tree
//     hashes, and one row holding both, in one transaction): in batches against a bare insert of the same
//     leaf bytes into a one-table database batched the same way, and one durable commit per record against
//     a bare durable commit (BEGIN IMMEDIATE; INSERT one row of the same leaf bytes; COMMIT) with the same
//     pragmas. The references run their statements prepared, as the store does, so they pay no SQL parsing.
// The record subjects and their references run interleaved (a batch, or a quarter second, of each in turn),
// so they see the same machine load and the same disk.
//
//   node scripts/bench/log.mjs [dist] [leaves]     (dist defaults to ./dist; build with npm run build)
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { pathToFileURL } from 'node:url';

const DEFAULT_LEAVES = 1_000_000;
const BATCH_LEAVES = 10_000;
const DURABLE_SECONDS = 2;
const DURABLE_SLICE_SECONDS = 0.25;
const PROOFS = 2_000;
const RECORDS = 100_000;
const RECORD_GOAL = 100_000;
const DURABLE_GOAL = 0.9;

const round = (value, digits = 3) => Number(value.toFixed(digits));
const seconds = (startNs) => Number(process.hrtime.bigint() - startNs) / 1e9;
const count = (n) => Math.round(n).toLocaleString('en');

/** A record-sized leaf (about 200 bytes of canonical JSON), different for every index. */
function leafOf(i) {
  return Buffer.from(
    `{"at":"2025-01-01T00:00:00.000Z","kind":"step.finished","runId":"r-${i >>> 8}","seq":${i},` +
      `"step":{"durationMs":${i % 997},"exitCode":0,"name":"test","stdout":"sha256:${'0'.repeat(64)}"},"v":1}`,
  );
}

/** A bare reference database, opened as runner/store/sqlite.ts opens the runner's: WAL, every commit durable. */
function openDb(path) {
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = FULL');
  return db;
}

const transactionStatements = new WeakMap();

/** Runs `fn` in one IMMEDIATE transaction of a bare DatabaseSync (BEGIN and COMMIT prepared once, as the store's). */
function transaction(db, fn) {
  let statements = transactionStatements.get(db);
  if (statements === undefined) {
    statements = { begin: db.prepare('BEGIN IMMEDIATE'), commit: db.prepare('COMMIT') };
    transactionStatements.set(db, statements);
  }
  statements.begin.run();
  try {
    fn();
    statements.commit.run();
  } catch (err) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw err;
  }
}

/**
 * Interleaves `subjects` (each an op returning nothing) in slices of `slice` seconds until each has run for
 * `total` seconds; returns each one's operations per second.
 */
function interleavedRates(subjects, total, slice) {
  const done = subjects.map(() => ({ n: 0, s: 0 }));
  for (let round = 0; round < Math.ceil(total / slice); round++) {
    // ABBA order, so neither side always runs right after the other's checkpoints.
    const order = round % 2 === 0 ? subjects.map((_, i) => i) : subjects.map((_, i) => subjects.length - 1 - i);
    for (const i of order) {
      const t = process.hrtime.bigint();
      let n = 0;
      while (seconds(t) < slice) {
        subjects[i]();
        n++;
      }
      done[i].n += n;
      done[i].s += seconds(t);
    }
  }
  return done.map(({ n, s }) => n / s);
}

export async function run({ dist = 'dist', leaves = DEFAULT_LEAVES, records = RECORDS } = {}) {
  const load = (path) => import(pathToFileURL(resolve(dist, path)).href);
  const merkle = await load('runner/log/merkle.js');
  const { encodeRecordLeaf } = await load('runner/log/record.js');
  const { SqliteDatabase } = await load('runner/store/sqlite.js');
  const { MerkleTable } = await load('runner/store/merkle.js');
  const { Store } = await load('runner/store/store.js');
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-bench-log-'));
  const rows = [];
  try {
    const data = Array.from({ length: leaves }, (_, i) => leafOf(i));

    // Reference 1: raw SHA-256 of every leaf, nothing else.
    let t = process.hrtime.bigint();
    for (const leaf of data) createHash('sha256').update(leaf).digest();
    const sha256PerSecond = leaves / seconds(t);

    // Reference 2: the same number of 32-byte rows inserted into a bare table, batched the same way.
    const refDb = openDb(join(dir, 'reference.db'));
    refDb.exec('CREATE TABLE t (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL)');
    const refInsert = refDb.prepare('INSERT INTO t (idx, hash) VALUES (?, ?)');
    const hash32 = randomBytes(32);
    t = process.hrtime.bigint();
    for (let start = 0; start < leaves; start += BATCH_LEAVES) {
      transaction(refDb, () => {
        for (let i = start; i < Math.min(start + BATCH_LEAVES, leaves); i++) refInsert.run(i, hash32);
      });
    }
    const bareInsertPerSecond = leaves / seconds(t);
    refDb.close();

    // Batched appends into the tree alone.
    const db = SqliteDatabase.open(join(dir, 'log.db'), { busyTimeoutMs: 5000 });
    const table = new MerkleTable(db);
    table.migrate();
    t = process.hrtime.bigint();
    for (let start = 0; start < leaves; start += BATCH_LEAVES) table.appendBatch(data.slice(start, start + BATCH_LEAVES));
    const batchPerSecond = leaves / seconds(t);
    rows.push({
      name: `tree append (MerkleTable), batches of ${count(BATCH_LEAVES)} (goal >= 50,000), ${count(leaves)} leaves`,
      value: Math.round(batchPerSecond),
      unit: 'leaves/s',
      ratio: round(batchPerSecond / bareInsertPerSecond, 2),
      reference: `of a bare SQLite insert of one 32-byte row per leaf (${count(bareInsertPerSecond)}/s)`,
    });

    // Proof generation and verification at full size.
    const size = table.size();
    const root = table.root();
    const indices = Array.from({ length: PROOFS }, (_, i) => Math.floor(((i + 0.5) * size) / PROOFS));
    t = process.hrtime.bigint();
    const proofs = indices.map((index) => table.inclusionProof(index, size));
    const proveMicros = (seconds(t) * 1e6) / PROOFS;
    const leafHashes = indices.map((index) => table.leafHash(index));
    t = process.hrtime.bigint();
    // verifyInclusion throws LOG_PROOF_INVALID unless the proof leads to the root.
    indices.forEach((index, i) => merkle.verifyInclusion(index, size, leafHashes[i], proofs[i], root));
    const verifyMicros = (seconds(t) * 1e6) / PROOFS;
    t = process.hrtime.bigint();
    for (let i = 0; i < 200; i++) table.consistencyProof(1 + Math.floor((i * (size - 1)) / 200), size);
    const consistencyMicros = (seconds(t) * 1e6) / 200;
    rows.push({ name: `inclusion proof from SQLite at ${count(size)} leaves`, value: round(proveMicros, 1), unit: 'µs/proof' });
    rows.push({ name: `inclusion proof verification at ${count(size)} leaves`, value: round(verifyMicros, 1), unit: 'µs/proof' });
    rows.push({ name: `consistency proof from SQLite at ${count(size)} leaves`, value: round(consistencyMicros, 1), unit: 'µs/proof' });

    // Pure recompute of the whole tree from the leaf bytes, as `log verify` does with an export.
    t = process.hrtime.bigint();
    const range = new merkle.CompactRange();
    for (const leaf of data) range.append(merkle.hashLeaf(leaf));
    range.root();
    const recomputeSeconds = seconds(t);
    const sha256Seconds = leaves / sha256PerSecond;
    rows.push({
      name: `recompute the root of ${count(leaves)} leaves (pure)`,
      value: round(recomputeSeconds, 2),
      unit: 's',
      ratio: round(recomputeSeconds / sha256Seconds, 2),
      reference: `of raw node:crypto SHA-256 of the same leaves (${round(sha256Seconds, 2)} s)`,
    });
    data.length = 0;

    // The runner's own path: Store.appendRecord writes the record row, which carries the leaf's tree hashes,
    // in one transaction. Batched (a burst of decisions), interleaved batch by batch with a bare insert of the
    // same leaf bytes into a one-table database.
    const runId = '00000000-0000-4000-8000-000000000000';
    const body = {
      runId,
      name: 'test',
      status: 'succeeded',
      exitCode: 0,
      signal: null,
      timedOut: false,
      durationMs: 12,
      stdout: { digest: `sha256:${'0'.repeat(64)}`, size: 10, totalSize: 10, truncated: false },
    };
    const at = new Date().toISOString();
    const recordLeaves = Array.from({ length: records }, (_, seq) => encodeRecordLeaf('step.finished', body, seq, at));
    const store = Store.open(join(dir, 'runner.db'), { create: true });
    const bare = openDb(join(dir, 'bare-records.db'));
    bare.exec('CREATE TABLE records (seq INTEGER PRIMARY KEY, leaf BLOB NOT NULL)');
    const bareInsert = bare.prepare('INSERT INTO records (seq, leaf) VALUES (?, ?)');
    let storeSeconds = 0;
    let bareSeconds = 0;
    for (let start = 0; start < records; start += BATCH_LEAVES) {
      const end = Math.min(start + BATCH_LEAVES, records);
      t = process.hrtime.bigint();
      transaction(bare, () => {
        for (let i = start; i < end; i++) bareInsert.run(i, recordLeaves[i]);
      });
      bareSeconds += seconds(t);
      t = process.hrtime.bigint();
      store.transaction(() => {
        for (let i = start; i < end; i++) store.appendRecord('step.finished', body, runId);
      });
      storeSeconds += seconds(t);
    }
    const recordBatchPerSecond = records / storeSeconds;
    const bareRecordPerSecond = records / bareSeconds;
    rows.push({
      name: `runner records (Store.appendRecord: one row, record + tree hashes), batches of ${count(BATCH_LEAVES)}, ${count(records)} records (goal >= ${count(RECORD_GOAL)})`,
      value: Math.round(recordBatchPerSecond),
      unit: 'records/s',
      ratio: round(recordBatchPerSecond / bareRecordPerSecond, 2),
      reference: `of a bare SQLite insert of the same ${recordLeaves[0].length}-byte leaves, same batches (${count(bareRecordPerSecond)}/s)`,
    });

    // One durable commit per record (what exec does per decision), and one per leaf into the tree alone,
    // against a bare durable commit of one row the size of a record, a quarter second of each in turn.
    let seq = records;
    const leaf = recordLeaves[0];
    let treeLeaf = size;
    const [bareDurable, storeDurable, treeDurable] = interleavedRates(
      [
        () => transaction(bare, () => bareInsert.run(seq++, leaf)),
        () => store.appendRecord('step.finished', body, runId),
        () => table.append(leafOf(treeLeaf++)),
      ],
      DURABLE_SECONDS,
      DURABLE_SLICE_SECONDS,
    );
    const bareDurableReference = `of a bare durable commit of one ${leaf.length}-byte row (${count(bareDurable)}/s)`;
    rows.push({
      name: `runner records, one durable commit each (synchronous=FULL, WAL; goal >= ${DURABLE_GOAL}x)`,
      value: Math.round(storeDurable),
      unit: 'records/s',
      ratio: round(storeDurable / bareDurable, 2),
      reference: bareDurableReference,
    });
    rows.push({
      name: 'tree append, one durable commit per leaf (synchronous=FULL, WAL)',
      value: Math.round(treeDurable),
      unit: 'leaves/s',
      ratio: round(treeDurable / bareDurable, 2),
      reference: bareDurableReference,
    });
    // Every record the benchmark wrote is a leaf, and every stored hash checks (throws STORE_TREE_INCONSISTENT).
    if (store.recordCount() !== store.merkle.size()) throw new Error('records and leaves disagree after the benchmark');
    store.merkle.checkNodes();
    store.close();
    bare.close();
    db.close();
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [dist, leaves] = process.argv.slice(2);
  const rows = await run({ dist: dist ?? 'dist', leaves: leaves ? Number(leaves) : DEFAULT_LEAVES });
  for (const row of rows) console.log(JSON.stringify(row));
}
