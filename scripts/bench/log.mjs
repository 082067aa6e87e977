// The Merkle log: appends into a real SQLite file (in batches, and one durable commit per leaf), proof
// generation and verification at 1,000,000 leaves, and a full recompute of a 1,000,000-leaf tree, each
// beside a reference measured in the same run (raw node:crypto SHA-256 of the same leaves, a bare SQLite
// insert of the same rows).
//
//   node scripts/bench/log.mjs [dist] [leaves]     (dist defaults to ./dist; build with npm run build)
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';

const DEFAULT_LEAVES = 1_000_000;
const BATCH_LEAVES = 10_000;
const DURABLE_SECONDS = 2;
const PROOFS = 2_000;

const round = (value, digits = 3) => Number(value.toFixed(digits));
const seconds = (startNs) => Number(process.hrtime.bigint() - startNs) / 1e9;

/** A record-sized leaf (about 200 bytes of canonical JSON), different for every index. */
function leafOf(i) {
  return Buffer.from(
    `{"at":"2025-01-01T00:00:00.000Z","kind":"step.finished","runId":"r-${i >>> 8}","seq":${i},` +
      `"step":{"durationMs":${i % 997},"exitCode":0,"name":"test","stdout":"sha256:${'0'.repeat(64)}"},"v":1}`,
  );
}

function openDb(path) {
  const db = new Database(path);
  // As runner/store/store.ts opens it: WAL, and every commit durable before the decision takes effect.
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  return db;
}

export async function run({ dist = 'dist', leaves = DEFAULT_LEAVES } = {}) {
  const merkle = await import(pathToFileURL(resolve(dist, 'runner/log/merkle.js')).href);
  const { MerkleStore } = await import(pathToFileURL(resolve(dist, 'runner/store/merkle-store.js')).href);
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
      refDb.transaction(() => {
        for (let i = start; i < Math.min(start + BATCH_LEAVES, leaves); i++) refInsert.run(i, hash32);
      })();
    }
    const bareInsertPerSecond = leaves / seconds(t);
    refDb.close();

    // Batched appends into the real store.
    const db = openDb(join(dir, 'log.db'));
    const store = new MerkleStore(db);
    store.migrate();
    t = process.hrtime.bigint();
    for (let start = 0; start < leaves; start += BATCH_LEAVES) store.appendBatch(data.slice(start, start + BATCH_LEAVES));
    const batchPerSecond = leaves / seconds(t);
    rows.push({
      name: `append, batches of ${BATCH_LEAVES.toLocaleString('en')} (goal >= 50,000), ${leaves.toLocaleString('en')} leaves`,
      value: Math.round(batchPerSecond),
      unit: 'leaves/s',
      ratio: round(batchPerSecond / bareInsertPerSecond, 2),
      reference: `of a bare SQLite insert of one 32-byte row per leaf (${Math.round(bareInsertPerSecond).toLocaleString('en')}/s)`,
    });

    // Proof generation and verification at full size.
    const size = store.size();
    const root = store.root();
    const indices = Array.from({ length: PROOFS }, (_, i) => Math.floor(((i + 0.5) * size) / PROOFS));
    t = process.hrtime.bigint();
    const proofs = indices.map((index) => store.inclusionProof(index, size));
    const proveMicros = (seconds(t) * 1e6) / PROOFS;
    const leafHashes = indices.map((index) => store.leafHash(index));
    t = process.hrtime.bigint();
    indices.forEach((index, i) => merkle.verifyInclusion(index, size, leafHashes[i], proofs[i], root));
    const verifyMicros = (seconds(t) * 1e6) / PROOFS;
    t = process.hrtime.bigint();
    for (let i = 0; i < 200; i++) store.consistencyProof(1 + Math.floor((i * (size - 1)) / 200), size);
    const consistencyMicros = (seconds(t) * 1e6) / 200;
    rows.push({ name: `inclusion proof from SQLite at ${size.toLocaleString('en')} leaves`, value: round(proveMicros, 1), unit: 'µs/proof' });
    rows.push({ name: `inclusion proof verification at ${size.toLocaleString('en')} leaves`, value: round(verifyMicros, 1), unit: 'µs/proof' });
    rows.push({ name: `consistency proof from SQLite at ${size.toLocaleString('en')} leaves`, value: round(consistencyMicros, 1), unit: 'µs/proof' });

    // One durable commit per leaf (synchronous = FULL, WAL): what "no record, no run" costs per decision.
    let durable = 0;
    t = process.hrtime.bigint();
    while (seconds(t) < DURABLE_SECONDS) {
      store.append(leafOf(size + durable));
      durable += 1;
    }
    const durablePerSecond = durable / seconds(t);
    db.close();
    rows.push({ name: 'append, one durable commit per leaf (synchronous=FULL, WAL)', value: Math.round(durablePerSecond), unit: 'leaves/s' });

    // Pure recompute of the whole tree from the leaf bytes, as `log verify` does with an export.
    t = process.hrtime.bigint();
    const range = new merkle.CompactRange();
    for (const leaf of data) range.append(merkle.hashLeaf(leaf));
    range.root();
    const recomputeSeconds = seconds(t);
    const sha256Seconds = leaves / sha256PerSecond;
    rows.push({
      name: `recompute the root of ${leaves.toLocaleString('en')} leaves (pure)`,
      value: round(recomputeSeconds, 2),
      unit: 's',
      ratio: round(recomputeSeconds / sha256Seconds, 2),
      reference: `of raw node:crypto SHA-256 of the same leaves (${round(sha256Seconds, 2)} s)`,
    });
    // The runner's own path: Store.appendRecord writes the record row and appends its leaf in one
    // transaction. Batched (as a burst of decisions would be), and one durable commit per record (as exec does).
    const { Store } = await import(pathToFileURL(resolve(dist, 'runner/store/store.js')).href);
    const records = Store.open(join(dir, 'runner.db'), { create: true });
    const RECORDS = 200_000;
    const body = { runId: '00000000-0000-4000-8000-000000000000', name: 'test', exitCode: 0, stdout: { digest: `sha256:${'0'.repeat(64)}` } };
    t = process.hrtime.bigint();
    for (let start = 0; start < RECORDS; start += BATCH_LEAVES) {
      records.transaction(() => {
        for (let i = 0; i < BATCH_LEAVES; i++) records.appendRecord('step.finished', body, body.runId);
      });
    }
    const recordBatchPerSecond = RECORDS / seconds(t);
    rows.push({
      name: `runner records (row + leaf), batches of ${BATCH_LEAVES.toLocaleString('en')}, ${RECORDS.toLocaleString('en')} records`,
      value: Math.round(recordBatchPerSecond),
      unit: 'records/s',
      ratio: round(recordBatchPerSecond / bareInsertPerSecond, 2),
      reference: 'of the bare SQLite insert above',
    });
    t = process.hrtime.bigint();
    let durableRecords = 0;
    while (seconds(t) < DURABLE_SECONDS) {
      records.appendRecord('step.finished', body, body.runId);
      durableRecords++;
    }
    rows.push({ name: 'runner records (row + leaf), one durable commit each', value: Math.round(durableRecords / seconds(t)), unit: 'records/s' });
    records.close();
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
