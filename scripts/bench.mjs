#!/usr/bin/env node
// `npm run bench`: every benchmark in scripts/bench/, each measuring against a reference taken in the same
// run (a bare spawn, `node -e 0`, raw hashing), printed as one table. Figures, not pass/fail: the goals are
// in the README beside the numbers. `node scripts/bench.mjs exec log` runs a subset; `--json` prints JSON.
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { requireNode24 } from './node-version.mjs';

requireNode24('bench');

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const files = readdirSync(join(root, 'scripts', 'bench'))
  .filter((f) => f.endsWith('.mjs'))
  .filter((f) => only.length === 0 || only.includes(f.replace(/\.mjs$/, '')))
  .sort();

const all = [];
for (const file of files) {
  const topic = file.replace(/\.mjs$/, '');
  process.stderr.write(`bench: ${topic} ...\n`);
  const started = Date.now();
  const { run } = await import(pathToFileURL(join(root, 'scripts', 'bench', file)).href);
  const rows = await run({ dist });
  for (const row of rows) all.push({ topic, ...row });
  process.stderr.write(`bench: ${topic} done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

if (process.argv.includes('--json')) {
  process.stdout.write(`${JSON.stringify(all, null, 2)}\n`);
} else {
  const fmt = (v) => (typeof v === 'number' ? (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en') : String(v)) : String(v ?? ''));
  const lines = all.map((r) => [
    r.topic,
    r.name,
    `${fmt(r.value)} ${r.unit ?? ''}`.trim(),
    r.ratio !== undefined ? `${r.ratio}x ${r.reference ?? ''}`.trim() : (r.reference ?? ''),
  ]);
  const widths = [0, 1, 2, 3].map((i) => Math.max(...lines.map((l) => l[i].length), 5));
  process.stdout.write(`\nedge-runner benchmarks (node ${process.version}, ${new Date().toISOString()})\n\n`);
  for (const l of lines) process.stdout.write(`  ${l.map((c, i) => c.padEnd(widths[i])).join('  ')}\n`);
}
