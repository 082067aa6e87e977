// `log verify` at 1,000,000 leaves: an export of real record leaves (encoded by runner/log/record.ts, about
// 250 bytes each) with a signed checkpoint every 100,000 leaves, under a trust document that enrols the
// (fresh) runner key, all made in-process with the dist modules and written to a temporary folder. Timed:
// verifyExport over the file read with node:readline, the same over splitLines (lines capped while reading),
// verifyExportBytes over the file's chunks (what `edge-runner log verify` runs), and the CLI itself (the best
// of two runs), each beside `sha256sum` of the same file in the same run (the best of three: before and after).
//
//   node scripts/bench/log-verify.mjs [dist] [leaves]     (dist defaults to ./dist; build with npm run build)
import { spawnSync } from 'node:child_process';
import { closeSync, createReadStream, mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const DEFAULT_LEAVES = 1_000_000;
const CHECKPOINT_EVERY = 100_000;
const RUNNER_ID = 'bench-runner-1';

const round = (value, digits = 2) => Number(value.toFixed(digits));
const seconds = (startNs) => Number(process.hrtime.bigint() - startNs) / 1e9;

async function load(dist, path) {
  return import(pathToFileURL(resolve(dist, path)).href);
}

/**
 * The leaf of record `i`: runs of eight records as the runner writes them (capsule.accepted, run.started,
 * four step.finished, run.finished, evidence.signed), encoded by runner/log/record.ts, about 250 bytes on
 * average, every one different.
 */
function leafOf(encodeRecordLeaf, i) {
  const run = i >>> 3;
  const runId = `00000000-0000-4000-8000-${run.toString(16).padStart(12, '0')}`;
  const digest = `sha256:${(run % 65536).toString(16).padStart(64, '0')}`;
  const at = '2025-01-01T00:00:00.000Z';
  switch (i % 8) {
    case 0: {
      const nonce = run.toString(16).padStart(32, '0');
      const body = { capsuleId: 'nightly-check', capsuleKind: 'validate', manifestDigest: digest, nonce, signers: ['k1'] };
      return encodeRecordLeaf('capsule.accepted', body, i, at);
    }
    case 1:
      return encodeRecordLeaf('run.started', { runId, capsuleId: 'nightly-check', manifestDigest: digest, isolation: 'bwrap' }, i, at);
    case 6:
      return encodeRecordLeaf('run.finished', { runId, verdict: 'pass' }, i, at);
    case 7:
      return encodeRecordLeaf('evidence.signed', { runId, evidenceDigest: digest }, i, at);
    default: {
      // Two steps with their stdout recorded, two without.
      const stdout = i % 8 < 4 ? { stdout: { digest, size: i % 4096, totalSize: i % 4096, truncated: false } } : {};
      const body = { runId, name: `step ${i % 8}`, status: 'succeeded', exitCode: 0, signal: null, timedOut: false, durationMs: i % 997, ...stdout };
      return encodeRecordLeaf('step.finished', body, i, at);
    }
  }
}

export async function run({ dist = 'dist', leaves = DEFAULT_LEAVES } = {}) {
  const { PrivateKey } = await load(dist, 'runner/core/ed25519.js');
  const { signEnvelope } = await load(dist, 'runner/core/dsse.js');
  const { encodeRecordLeaf } = await load(dist, 'runner/log/record.js');
  const { TRUST_PAYLOAD_TYPE, verifyTrustDocument } = await load(dist, 'runner/trust/trust.js');
  const { runnerOrigin, signCheckpoint } = await load(dist, 'runner/log/checkpoint.js');
  const { CompactRange, hashLeaf } = await load(dist, 'runner/log/merkle.js');
  const exp = await load(dist, 'runner/log/export.js');

  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-bench-log-verify-'));
  try {
    // A trust document enrolling a fresh runner key.
    const root = PrivateKey.generate();
    const runnerKey = PrivateKey.generate();
    const body = {
      apiVersion: 'edge-runner.dev/trust/v1',
      version: 1,
      expires: new Date(Date.now() + 86400_000).toISOString().replace(/\.\d+Z$/, 'Z'),
      keys: {
        [root.keyid]: { publicKey: root.publicKey.toPem(), name: 'root-1', roles: ['root'] },
        [runnerKey.keyid]: { publicKey: runnerKey.publicKey.toPem(), name: RUNNER_ID, roles: ['runner'] },
      },
      roles: { root: { threshold: 1 }, 'capsule-signer': { threshold: 1 }, runner: { threshold: 1 }, approver: { threshold: 2 } },
      policy: { allowedKinds: ['validate'] },
    };
    const trustBytes = Buffer.from(JSON.stringify(signEnvelope(TRUST_PAYLOAD_TYPE, Buffer.from(JSON.stringify(body)), [root])));
    const trustPath = join(dir, 'trust.dsse.json');
    writeFileSync(trustPath, trustBytes);
    const trust = verifyTrustDocument(trustBytes);

    // The export, streamed to disk as `log export` writes it.
    const origin = runnerOrigin(RUNNER_ID, runnerKey.keyid);
    const file = join(dir, 'log.jsonl');
    const fd = openSync(file, 'w');
    let pending = [];
    const flush = () => {
      writeSync(fd, pending.join(''));
      pending = [];
    };
    const range = new CompactRange();
    let leafBytes = 0;
    pending.push(`${exp.formatExportHeader({ origin, runner: { id: RUNNER_ID, keyid: runnerKey.keyid }, size: leaves })}\n`);
    for (let i = 0; i < leaves; i++) {
      const leaf = leafOf(encodeRecordLeaf, i);
      leafBytes += leaf.length;
      range.append(hashLeaf(leaf));
      pending.push(`${exp.formatLeafLine(i, leaf)}\n`);
      if (range.size % CHECKPOINT_EVERY === 0 || range.size === leaves) {
        const note = signCheckpoint({ origin, size: range.size, rootHash: range.root(), extensions: [] }, origin, runnerKey);
        pending.push(`${exp.formatCheckpointLine(note)}\n`);
      }
      if (pending.length >= 4096) flush();
    }
    flush();
    closeSync(fd);
    const fileBytes = statSync(file).size;
    const expectedRoot = range.root().toString('base64');

    // Reference: sha256sum of the same file (read cold or warm alike: the file was just written).
    const sha256sum = () => {
      const t = process.hrtime.bigint();
      const res = spawnSync('sha256sum', [file], { stdio: ['ignore', 'ignore', 'pipe'] });
      if (res.status !== 0) throw new Error(`sha256sum exited ${res.status}: ${res.stderr}`);
      return seconds(t);
    };
    let referenceSeconds = Math.min(sha256sum(), sha256sum());

    const check = (report) => {
      if (report.size !== leaves || report.root !== expectedRoot) throw new Error('verifyExport returned another tree');
      return report;
    };

    let t = process.hrtime.bigint();
    const readline = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
    const report = check(await exp.verifyExport(readline, { trust }));
    const readlineSeconds = seconds(t);

    t = process.hrtime.bigint();
    check(await exp.verifyExport(exp.splitLines(createReadStream(file)), { trust }));
    const splitSeconds = seconds(t);

    // The byte reader, where the dist has it (a build from before it was added has not).
    let bytesSeconds;
    if (typeof exp.verifyExportBytes === 'function') {
      t = process.hrtime.bigint();
      check(await exp.verifyExportBytes(createReadStream(file, { highWaterMark: 1 << 20 }), { trust }));
      bytesSeconds = seconds(t);
    }

    const cliRun = () => {
      const started = process.hrtime.bigint();
      const cli = spawnSync(process.execPath, [resolve(dist, 'runner/main.js'), 'log', 'verify', file, '--trust', trustPath], {
        encoding: 'utf8',
        env: { PATH: '/usr/bin:/bin' },
      });
      const elapsed = seconds(started);
      if (cli.status !== 0 || !cli.stdout.startsWith(`OK log of runner ${RUNNER_ID}: ${leaves} leaves, root ${expectedRoot},`)) {
        throw new Error(`edge-runner log verify exited ${cli.status}: ${cli.stdout}${cli.stderr}`);
      }
      return elapsed;
    };
    const cliSeconds = Math.min(cliRun(), cliRun());
    referenceSeconds = Math.min(referenceSeconds, sha256sum());

    const n = leaves.toLocaleString('en');
    const reference = `of sha256sum of the same file (${round(referenceSeconds, 3)} s)`;
    const timed = (name, value) => ({ name, value: round(value), unit: 's', reference, ratio: round(value / referenceSeconds, 1) });
    return [
      {
        name: `log export file, ${n} leaves (~${Math.round(leafBytes / leaves)} B each) + ${report.checkpoints} checkpoints`,
        value: round(fileBytes / 1e6, 1),
        unit: 'MB',
      },
      timed(`verifyExport, ${n} leaves, lines from node:readline`, readlineSeconds),
      timed(`verifyExport, ${n} leaves, lines from splitLines (capped)`, splitSeconds),
      ...(bytesSeconds !== undefined ? [timed(`verifyExportBytes, ${n} leaves, 1 MiB chunks`, bytesSeconds)] : []),
      timed(`edge-runner log verify (whole process), ${n} leaves`, cliSeconds),
      { name: 'log verify throughput (whole process)', value: Math.round(leaves / cliSeconds), unit: 'leaves/s' },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [dist, leaves] = process.argv.slice(2);
  const rows = await run({ dist: dist ?? 'dist', leaves: leaves ? Number(leaves) : DEFAULT_LEAVES });
  for (const row of rows) console.log(JSON.stringify(row));
}
