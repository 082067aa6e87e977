// Start time of the single binary: `edge-runner --version` against `node -e 0` of the same Node.js (the
// binary is a copy of the node that built it: this refuses to compare it with another version), measured
// side by side in one run (alternating, so both see the same machine state), median of each, and their
// ratio. Goal: the binary within 1.1x of `node -e 0`.
//
//   node scripts/bench/binary.mjs            prints the rows
//   import { run } from './binary.mjs'      rows for scripts/bench.mjs: { name, value, unit, reference?, ratio? }
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DEFAULTS = { runs: 40, warmup: 3 };

function timeOnceMs(file, args, env) {
  const start = process.hrtime.bigint();
  const res = spawnSync(file, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (res.status !== 0) throw new Error(`${file} ${args.join(' ')} exited ${res.status}: ${res.stderr}`);
  return ms;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const round = (n, digits = 2) => Number(n.toFixed(digits));

/** `dist`: the folder holding edge-runner (default: the repository's dist). */
export async function run({ dist = join(ROOT, 'dist'), runs = DEFAULTS.runs, warmup = DEFAULTS.warmup } = {}) {
  const binary = join(dist, 'edge-runner');
  if (!existsSync(binary)) {
    console.warn(`bench/binary: ${binary} is missing (npm run build:binary); skipped`);
    return [];
  }
  // The same clean environment for both; the runner's service starts it without NODE_OPTIONS too.
  const env = { PATH: '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };
  const version = spawnSync(binary, ['--version'], { env, encoding: 'utf8' });
  const madeOf = /^node (v\S+)$/m.exec(version.stdout ?? '')?.[1];
  if (madeOf !== process.version) {
    throw new Error(`${binary} is made of node ${madeOf ?? '?'}, this is ${process.version}: rebuild it, or run the bench with that node`);
  }
  const node = [];
  const sea = [];
  for (let i = 0; i < warmup + runs; i++) {
    const n = timeOnceMs(process.execPath, ['-e', '0'], env);
    const s = timeOnceMs(binary, ['--version'], env);
    if (i >= warmup) {
      node.push(n);
      sea.push(s);
    }
  }
  const nodeMs = median(node);
  const seaMs = median(sea);
  return [
    { name: `node -e 0 (${process.version}): start to exit (median)`, value: round(nodeMs), unit: 'ms' },
    {
      name: 'edge-runner --version: start to exit (median)',
      value: round(seaMs),
      unit: 'ms',
      reference: 'node -e 0',
      ratio: round(seaMs / nodeMs),
    },
    { name: 'edge-runner binary size', value: round(statSync(binary).size / 1024 / 1024, 1), unit: 'MiB' },
  ];
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const dist = process.argv[2] ? resolve(process.argv[2]) : undefined;
  for (const row of await run(dist ? { dist } : {})) {
    const ratio = row.ratio === undefined ? '' : `  ${row.ratio}x ${row.reference}`;
    console.log(`${row.name.padEnd(48)} ${String(row.value).padStart(8)} ${row.unit}${ratio}`);
  }
}
