// SHA-256 throughput of the runner's digest path (runner/core/digest.ts `sha256Hex`: createHash, update,
// digest, hex) and of the one-shot `crypto.hash('sha256', buf)` (hex), on 64 B, 1 KiB and 16 MiB buffers,
// each against `openssl speed -seconds 3 -bytes N sha256` (single-threaded EVP_Digest over the same size)
// run in the same process tree. Our figures are taken half before and half after each `openssl speed`, so
// drift in the machine's load during the run shows up on both sides of the ratio. MB is 10^6 bytes, as
// openssl's "1000s of bytes per second".
//
//   node scripts/bench/sha256.mjs [dist]     (dist defaults to ./dist; build with npm run build)
import { spawnSync } from 'node:child_process';
import { hash, randomFillSync } from 'node:crypto';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { opensslVersion } from './ed25519.mjs';

const SIZES = [
  { bytes: 64, label: '64 B' },
  { bytes: 1024, label: '1 KiB' },
  { bytes: 16 * 1024 * 1024, label: '16 MiB' },
];
/** Our time per subject and size, split in two halves around openssl. */
const SECONDS = 1.2;
const OPENSSL_SECONDS = 3;

const round = (value, digits = 2) => Number(value.toFixed(digits));

/** Bytes per second of `op(buf)` over `seconds`; checks it in blocks so the clock is read rarely. */
function throughput(op, buf, seconds) {
  const block = Math.max(1, Math.floor((1 << 20) / buf.length)); // about 1 MiB between clock reads
  let n = 0;
  let sink = 0;
  const start = process.hrtime.bigint();
  while (Number(process.hrtime.bigint() - start) < seconds * 1e9) {
    for (let i = 0; i < block; i++) sink += op(buf).length;
    n += block;
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  if (sink !== n * 64) throw new Error('SHA-256 hex digest of unexpected length');
  return (n * buf.length) / elapsed;
}

/** `openssl speed -seconds N -bytes B sha256`: bytes per second, from its "sha256  1508254.77k" line. */
function opensslSpeedSha256(bytes, seconds = OPENSSL_SECONDS) {
  const result = spawnSync('openssl', ['speed', '-seconds', String(seconds), '-bytes', String(bytes), 'sha256'], {
    encoding: 'utf8',
    timeout: (seconds + 30) * 1000,
  });
  if (result.error) return { error: `openssl speed could not run (${result.error.code ?? result.error.message})` };
  if (result.status !== 0) return { error: `openssl speed exited with ${result.status ?? result.signal}: ${result.stderr.trim().split('\n').pop()}` };
  // "The 'numbers' are in 1000s of bytes per second processed." then "type  64 bytes" and "sha256  279552.58k".
  const match = result.stdout.match(/^sha256\s+([\d.]+)(k?)\s*$/m);
  if (!match) return { error: `openssl speed printed no sha256 figure:\n${result.stdout}` };
  return { bytesPerSecond: Number(match[1]) * (match[2] === 'k' ? 1000 : 1) };
}

export async function run({ dist = 'dist' } = {}) {
  const { sha256Hex } = await import(pathToFileURL(resolve(dist, 'runner/core/digest.js')).href);
  const subjects = [
    { name: 'runner sha256Hex (runner/core/digest.ts)', op: (buf) => sha256Hex(buf) },
    { name: "crypto.hash('sha256', buf) one-shot, hex", op: (buf) => hash('sha256', buf) },
  ];
  const version = opensslVersion();
  const rows = [];
  for (const { bytes, label } of SIZES) {
    const buf = randomFillSync(Buffer.alloc(bytes));
    for (const s of subjects) throughput(s.op, buf, 0.1); // warm-up
    const before = subjects.map((s) => throughput(s.op, buf, SECONDS / 2));
    const openssl = opensslSpeedSha256(bytes);
    // The second half in reverse order (ABBA), so neither subject always runs next to openssl.
    const after = subjects
      .toReversed()
      .map((s) => throughput(s.op, buf, SECONDS / 2))
      .toReversed();
    subjects.forEach((s, i) => {
      const bps = (before[i] + after[i]) / 2;
      const row = { name: `SHA-256 ${label}, ${s.name}`, value: round(bps / 1e6, bps >= 1e9 ? 0 : 1), unit: 'MB/s' };
      if (openssl.error) row.reference = openssl.error;
      else {
        row.ratio = round(bps / openssl.bytesPerSecond);
        row.reference = `of \`openssl speed -bytes ${bytes} sha256\` (${version}, ${round(openssl.bytesPerSecond / 1e6, 1)} MB/s)`;
      }
      rows.push(row);
    });
  }
  return rows;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const rows = await run({ dist: process.argv[2] ?? 'dist' });
  for (const row of rows) console.log(JSON.stringify(row));
}
