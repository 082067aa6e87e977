#!/usr/bin/env node
// The product's main job, end to end, on embedded defaults: keys for root, coordinator and runner; a signed
// trust document; a runner state folder (SQLite inside); the example capsules packed, run and verified
// offline; and a tampered capsule refused. Everything happens in a temporary folder through the real CLI.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireNode24 } from './node-version.mjs';

requireNode24('demo');

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = process.env.EDGE_RUNNER_BIN ? [process.env.EDGE_RUNNER_BIN] : [process.execPath, join(root, 'dist', 'runner', 'main.js')];
const work = process.env.EDGE_RUNNER_DEMO_DIR ?? mkdtempSync(join(tmpdir(), 'edge-runner-demo-'));
const verbose = process.argv.includes('--verbose');
// The runner never inherits the caller's environment into steps; the CLI itself gets a small one too.
const env = { PATH: '/usr/bin:/bin', HOME: work };

function cli(args, { expect = [0] } = {}) {
  const [file, ...pre] = entry;
  const result = spawnSync(file, [...pre, ...args], { cwd: work, env, encoding: 'utf8' });
  if (verbose) process.stderr.write(`$ edge-runner ${args.join(' ')}\n${result.stdout}${result.stderr}`);
  if (!expect.includes(result.status)) {
    process.stderr.write(
      `demo: edge-runner ${args.join(' ')} exited ${result.status}, expected ${expect.join(' or ')}\n${result.stdout}${result.stderr}`,
    );
    process.exit(1);
  }
  return result;
}

const rows = [];
const t0 = Date.now();

// 1. Keys: a root key signs the trust document, the coordinator signs capsules, the runner signs evidence.
const keys = {};
for (const [prefix, name] of [
  ['root', 'root-1'],
  ['coordinator', 'coordinator'],
  ['runner', 'runner-demo-1'],
]) {
  const out = JSON.parse(cli(['keygen', '--out', prefix, '--name', name, '--json']).stdout);
  keys[prefix] = { ...out, pem: readFileSync(join(work, `${prefix}.pub`), 'utf8') };
}
rows.push(['keys', 'root, coordinator and runner key pairs (Ed25519, PEM)']);

// 2. The trust document: who may sign capsules, which runners are real, what the policy allows.
const expires = new Date(Date.now() + 90 * 86400_000).toISOString().replace(/\.\d+Z$/, 'Z');
const trust = {
  apiVersion: 'edge-runner.dev/trust/v1',
  version: 1,
  expires,
  keys: {
    [keys.root.keyid]: { publicKey: keys.root.pem, name: 'root-1', roles: ['root'] },
    [keys.coordinator.keyid]: { publicKey: keys.coordinator.pem, name: 'coordinator', roles: ['capsule-signer'] },
    [keys.runner.keyid]: { publicKey: keys.runner.pem, name: 'runner-demo-1', roles: ['runner'] },
  },
  roles: { root: { threshold: 1 }, 'capsule-signer': { threshold: 1 }, runner: { threshold: 1 }, approver: { threshold: 2 } },
  policy: { allowedKinds: ['reproduce', 'validate'] },
};
writeFileSync(join(work, 'trust.json'), `${JSON.stringify(trust, null, 2)}\n`);
cli(['trust', 'sign', 'trust.json', '--key', 'root.key', '--out', 'trust.dsse.json']);
rows.push(['trust', `version 1 signed by root-1, expires ${expires.slice(0, 10)}`]);

// 3. The runner's state folder: its key, SQLite database and the pinned trust document.
cli(['init', '--state', 'state', '--id', 'runner-demo-1', '--trust', 'trust.dsse.json', '--key', 'runner.key', '--label', 'demo']);
rows.push(['runner', `runner-demo-1 initialised in ${join(work, 'state')}`]);

// 4. The coordinator packs and signs the example capsules; the runner verifies, runs and signs evidence.
const capsules = [
  { dir: 'validate-ledger', expectVerdict: 'pass', meaning: 'validation suite passed' },
  { dir: 'reproduce-rounding', expectVerdict: 'fail', meaning: 'defect reproduced (its check fails, as intended)' },
];
const bundles = [];
for (const capsule of capsules) {
  const file = `${capsule.dir}.capsule.json`;
  cli(['capsule', 'pack', join(root, 'capsules', capsule.dir), '--key', 'coordinator.key', '--out', file]);
  const bundle = `${capsule.dir}.bundle.json`;
  const result = JSON.parse(cli(['exec', file, '--state', 'state', '--out', bundle, '--json'], { expect: [0, 1] }).stdout);
  if (result.verdict !== capsule.expectVerdict) {
    process.stderr.write(`demo: ${capsule.dir} gave verdict ${result.verdict}, expected ${capsule.expectVerdict}\n`);
    process.exit(1);
  }
  bundles.push(bundle);
  rows.push([
    capsule.dir,
    `verdict ${result.verdict.toUpperCase()}: ${capsule.meaning}; isolation ${result.isolation}; ${result.steps.length} step(s)`,
  ]);
}

// 5. An auditor verifies the bundles offline with nothing but the trust document.
const verified = JSON.parse(cli(['verify', ...bundles, '--trust', 'trust.dsse.json', '--json']).stdout);
rows.push(['verify', `${verified.filter((r) => r.ok).length}/${verified.length} bundles verify offline against the trust document`]);

// 6. The runner's log: every decision above is a leaf of a Merkle tree. The auditor exports it and checks
// it against the checkpoint carried by the first bundle: nothing removed, rewritten or reordered since.
cli(['log', 'export', '--state', 'state', '--out', 'runner-log.jsonl']);
const audit = JSON.parse(cli(['log', 'verify', 'runner-log.jsonl', '--trust', 'trust.dsse.json', '--checkpoint', bundles[0], '--json']).stdout);
rows.push(['log', `${audit.size} records, ${audit.checkpoints} signed checkpoints verify; consistent with ${bundles[0]}'s checkpoint`]);

// 7. Someone alters the ledger extract inside a signed capsule: the runner refuses it and runs nothing.
cli(['capsule', 'pack', join(root, 'capsules', 'validate-ledger'), '--key', 'coordinator.key', '--out', 'tampered.capsule.json']);
const tampered = JSON.parse(readFileSync(join(work, 'tampered.capsule.json'), 'utf8'));
const [blobKey] = Object.keys(tampered.blobs).filter((k) => Buffer.from(tampered.blobs[k], 'base64').toString().startsWith('account,'));
tampered.blobs[blobKey] = Buffer.from(Buffer.from(tampered.blobs[blobKey], 'base64').toString().replace('2500', '9500')).toString('base64');
writeFileSync(join(work, 'tampered.capsule.json'), JSON.stringify(tampered));
const refused = cli(['exec', 'tampered.capsule.json', '--state', 'state', '--json'], { expect: [3] });
rows.push(['tampered', `refused with ${JSON.parse(refused.stdout).code}, nothing executed (exit 3)`]);

const width = Math.max(...rows.map(([k]) => k.length));
process.stdout.write(`\nedge-runner demo (${((Date.now() - t0) / 1000).toFixed(1)} s) in ${work}\n\n`);
for (const [k, v] of rows) process.stdout.write(`  ${k.padEnd(width)}  ${v}\n`);
process.stdout.write(`\nbundles: ${bundles.map((b) => join(work, b)).join(', ')}\nrun with --verbose to see every command.\n`);
