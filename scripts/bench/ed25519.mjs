// Ed25519: node:crypto (OpenSSL, one KeyObject per key, as the runner does) against tweetnacl (the second
// implementation, through the same strict wrapper), over the same signatures in the same run; and the
// runner's engine (runner/core/ed25519.ts: PrivateKey.sign, PublicKey.verify) against the `openssl` command
// line tool's own loop (`openssl speed -seconds 3 ed25519`, single-threaded, 20-byte messages), measured in
// the same run on the same 20-byte message. Our figure is taken half before and half after `openssl speed`,
// so drift in the machine's load during the run shows up on both sides of the ratio.
//
//   node scripts/bench/ed25519.mjs [dist]     (dist defaults to ./dist; build with npm run build)
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const SECONDS = 1.5;
const OPENSSL_SECONDS = 3;
/** `openssl speed` signs and verifies 20 bytes (apps/speed.c, EdDSA_sign_loop). */
const OPENSSL_MESSAGE_BYTES = 20;

const round = (value, digits = 2) => Number(value.toFixed(digits));

/** Operations per second of `op` (which returns false on failure) over `seconds`, in blocks of 100. */
function rate(op, seconds) {
  let n = 0;
  const start = process.hrtime.bigint();
  while (Number(process.hrtime.bigint() - start) < seconds * 1e9) {
    for (let i = 0; i < 100; i++) if (!op()) throw new Error('Ed25519 operation failed');
    n += 100;
  }
  return n / (Number(process.hrtime.bigint() - start) / 1e9);
}

/**
 * Runs `openssl speed -seconds N ed25519` and reads sign/s and verify/s from its table line
 * ` 253 bits EdDSA (Ed25519)   0.0001s   0.0002s  15057.1   5643.4`. Returns { error } when it cannot.
 */
export function opensslSpeedEd25519(seconds = OPENSSL_SECONDS) {
  const result = spawnSync('openssl', ['speed', '-seconds', String(seconds), 'ed25519'], { encoding: 'utf8', timeout: (seconds * 2 + 30) * 1000 });
  if (result.error) return { error: `openssl speed could not run (${result.error.code ?? result.error.message})` };
  if (result.status !== 0) return { error: `openssl speed exited with ${result.status ?? result.signal}: ${result.stderr.trim().split('\n').pop()}` };
  const line = result.stdout.split('\n').find((l) => /EdDSA\s*\(Ed25519\)/.test(l));
  const match = line?.match(/\(Ed25519\)\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)\s+([\d.]+)\s*$/);
  if (!match) return { error: `openssl speed printed no Ed25519 sign/s and verify/s line:\n${result.stdout}` };
  return { sign: Number(match[1]), verify: Number(match[2]), version: opensslVersion() };
}

/** `OpenSSL 3.0.19` of the openssl on PATH, or 'openssl'. */
export function opensslVersion() {
  const out = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  return out.stdout?.match(/^(OpenSSL|LibreSSL)\s+\S+/)?.[0] ?? 'openssl';
}

export async function run({ dist = 'dist' } = {}) {
  const { PrivateKey, verifyWithTweetnacl } = await import(pathToFileURL(resolve(dist, 'runner/core/ed25519.js')).href);
  const key = PrivateKey.generate();
  const rows = [];

  // node:crypto against tweetnacl, 512-byte message.
  const message = Buffer.alloc(512, 7);
  const signature = key.sign(message);
  const nacl = rate(() => verifyWithTweetnacl(key.publicKey.raw, message, signature), SECONDS);
  const node = rate(() => key.publicKey.verify(message, signature), SECONDS);
  rows.push(
    { name: 'Ed25519 verify, tweetnacl (strict wrapper), 512-byte message', value: Math.round(nacl), unit: 'verifies/s' },
    {
      name: 'Ed25519 verify, node:crypto KeyObject, 512-byte message',
      value: Math.round(node),
      unit: 'verifies/s',
      reference: 'tweetnacl',
      ratio: Number((node / nacl).toFixed(1)),
    },
  );

  // The runner's engine against `openssl speed`, on the message size openssl speed uses.
  const short = Buffer.alloc(OPENSSL_MESSAGE_BYTES, 0x5a);
  const shortSignature = key.sign(short);
  const sign = () => key.sign(short).length === 64;
  const verify = () => key.publicKey.verify(short, shortSignature);
  const half = SECONDS / 2;
  rate(sign, 0.2); // warm-up
  const before = { sign: rate(sign, half), verify: rate(verify, half) };
  const openssl = opensslSpeedEd25519();
  const after = { verify: rate(verify, half), sign: rate(sign, half) };
  const ours = { sign: (before.sign + after.sign) / 2, verify: (before.verify + after.verify) / 2 };
  const bytes = `${OPENSSL_MESSAGE_BYTES}-byte message`;
  const engine = `node:crypto, OpenSSL ${process.versions.openssl} in node`;
  for (const op of ['sign', 'verify']) {
    const row = {
      name: `Ed25519 ${op}, runner engine (${engine}), ${bytes}`,
      value: Math.round(ours[op]),
      unit: `${op === 'sign' ? 'signs' : 'verifies'}/s`,
    };
    if (openssl.error) row.reference = openssl.error;
    else {
      row.ratio = round(ours[op] / openssl[op]);
      row.reference = `of \`openssl speed -seconds ${OPENSSL_SECONDS} ed25519\` (${openssl.version}, ${Math.round(openssl[op]).toLocaleString('en')} ${op}/s)`;
    }
    rows.push(row);
  }
  return rows;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const rows = await run({ dist: process.argv[2] ?? 'dist' });
  for (const row of rows) console.log(JSON.stringify(row));
}
