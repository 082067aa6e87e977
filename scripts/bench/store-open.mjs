// Opening the runner's store (runner/store/store.ts Store.open), which checks the whole file before a nonce
// is read from it (runner/store/integrity.ts: PRAGMA quick_check, and the replay table against the log), on
// a real SQLite file of 100,000 records (one in five an acceptance), against two references measured in the
// same run: `sha256sum` of the same file (reading every byte once, in another process) and a bare node:sqlite
// open of it with one query. Each figure is the best of five, the subject and its references interleaved.
//
//   node scripts/bench/store-open.mjs [dist] [records]     (dist defaults to ./dist; build with npm run build)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { pathToFileURL } from 'node:url';

const DEFAULT_RECORDS = 100_000;
const ROUNDS = 5;
const BATCH = 1_000;

const round = (value, digits = 2) => Number(value.toFixed(digits));
const ms = (fn) => {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
};

export async function run({ dist = 'dist', records = DEFAULT_RECORDS } = {}) {
  const { Store } = await import(pathToFileURL(resolve(dist, 'runner/store/store.js')).href);
  // Not the shared /tmp: a tmpfs would make the reads free and the ratio meaningless.
  const dir = mkdtempSync(join('/var/tmp', 'edge-runner-bench-open-'));
  try {
    const path = join(dir, 'runner.db');
    const store = Store.open(path, { create: true });
    const digest = `sha256:${'0'.repeat(64)}`;
    for (let done = 0; done < records; done += BATCH) {
      store.transaction(() => {
        for (let i = done; i < done + BATCH; i++) {
          if (i % 5 === 0) {
            store.acceptCapsule(`nonce-${i}`, { capsuleId: `capsule-${i}`, capsuleKind: 'validate', manifestDigest: digest, signers: ['k'] });
          } else {
            store.appendRecord('run.finished', { runId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, verdict: 'pass' });
          }
        }
      });
    }
    store.close();
    const bytes = statSync(path).size;
    const best = { open: Infinity, sha: Infinity, bare: Infinity };
    for (let round_ = 0; round_ < ROUNDS; round_++) {
      best.open = Math.min(
        best.open,
        ms(() => Store.open(path).close()),
      );
      best.sha = Math.min(
        best.sha,
        ms(() => {
          const result = spawnSync('sha256sum', [path]);
          if (result.status !== 0) throw new Error('sha256sum failed');
        }),
      );
      best.bare = Math.min(
        best.bare,
        ms(() => {
          const db = new DatabaseSync(path);
          db.prepare('SELECT COUNT(*) FROM seen_capsules_v1').get();
          db.close();
        }),
      );
    }
    const label = `${records.toLocaleString('en')} records, ${round(bytes / 2 ** 20, 1)} MiB`;
    return [
      {
        name: `Store.open with its integrity check, ${label}`,
        value: round(best.open, 1),
        unit: 'ms',
        reference: `of sha256sum of the file (${round(best.sha, 1)} ms)`,
        ratio: round(best.open / best.sha),
      },
      {
        name: `Store.open against a bare node:sqlite open + one query, ${label}`,
        value: round(best.open, 1),
        unit: 'ms',
        reference: `of the bare open (${round(best.bare, 1)} ms)`,
        ratio: round(best.open / best.bare),
      },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const rows = await run({ dist: process.argv[2] ?? 'dist', records: Number(process.argv[3] ?? DEFAULT_RECORDS) });
  for (const row of rows) process.stdout.write(`${JSON.stringify(row)}\n`);
}
