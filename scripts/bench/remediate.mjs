// A change target's digest and scratch copy (runner/remediate/tree.ts readTree, copyTree): what a proposal
// costs before its steps run, and what apply pays again under its lock. On a real folder of 10,000 files
// (4 KiB each, 41 MB, 100 folders) in /var/tmp, against references measured in the same run: `find | xargs
// sha256sum` over the same files (every byte hashed once, in other processes) and `cp -a` of the folder.
// Each figure is the best of three, subject and reference interleaved.
//
//   node scripts/bench/remediate.mjs [dist]     (dist defaults to ./dist; build with npm run build)
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const FOLDERS = 100;
const FILES_PER_FOLDER = 100;
const FILE_BYTES = 4096;
const ROUNDS = 3;

const round = (value, digits = 2) => Number(value.toFixed(digits));
const ms = (fn) => {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
};
const sh = (script, cwd) => {
  const result = spawnSync('/bin/sh', ['-c', script], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  if (result.status !== 0) throw new Error(`${script}: ${result.stderr}`);
};

export async function run({ dist = 'dist' } = {}) {
  const { readTree, copyTree } = await import(pathToFileURL(resolve(dist, 'runner/remediate/tree.js')).href);
  // Not the shared /tmp: a tmpfs would make the reads free and the ratio meaningless.
  const dir = mkdtempSync(join('/var/tmp', 'edge-runner-bench-tree-'));
  try {
    const target = join(dir, 'target');
    for (let f = 0; f < FOLDERS; f++) {
      mkdirSync(join(target, `folder-${f}`), { recursive: true });
      for (let i = 0; i < FILES_PER_FOLDER; i++) writeFileSync(join(target, `folder-${f}`, `file-${i}.conf`), randomBytes(FILE_BYTES));
    }
    const caps = { maxBytes: 2 ** 30, maxEntries: 1_000_000 };
    const best = { read: Infinity, hash: Infinity, copy: Infinity, cp: Infinity };
    for (let r = 0; r < ROUNDS; r++) {
      best.read = Math.min(
        best.read,
        ms(() => readTree(target, caps)),
      );
      best.hash = Math.min(
        best.hash,
        ms(() => sh('find . -type f -print0 | xargs -0 sha256sum > /dev/null', target)),
      );
      const copy = join(dir, `copy-${r}`);
      best.copy = Math.min(
        best.copy,
        ms(() => copyTree(target, copy, caps)),
      );
      const cp = join(dir, `cp-${r}`);
      best.cp = Math.min(
        best.cp,
        ms(() => sh(`cp -a target ${cp}`, dir)),
      );
      rmSync(copy, { recursive: true, force: true });
      rmSync(cp, { recursive: true, force: true });
    }
    const label = `${(FOLDERS * FILES_PER_FOLDER).toLocaleString('en')} files, ${Math.round((FOLDERS * FILES_PER_FOLDER * FILE_BYTES) / 1e6)} MB`;
    return [
      {
        name: `readTree (the tree digest), ${label}`,
        value: round(best.read, 1),
        unit: 'ms',
        ratio: round(best.read / best.hash),
        reference: `find | xargs sha256sum ${round(best.hash, 1)} ms`,
      },
      {
        name: `copyTree (the staged copy, digested as copied), ${label}`,
        value: round(best.copy, 1),
        unit: 'ms',
        ratio: round(best.copy / best.cp),
        reference: `cp -a ${round(best.cp, 1)} ms`,
      },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const rows = await run({ dist: process.argv[2] ?? 'dist' });
  process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
}
