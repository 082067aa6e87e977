#!/usr/bin/env node
// The product's main job, end to end, on embedded defaults and loopback only: keys for root, capsule signer,
// runner and the coordinator's witness; a signed trust document; a coordinator (SQLite, temporary folder) on
// 127.0.0.1; a runner state folder and its agent; the example capsules published through the operator API,
// run by the agent and their bundles arriving verified; the coordinator stopped for a moment while the
// outbox holds a bundle, then delivering it; the fleet view and the witnessed checkpoint; a bundle fetched
// from the coordinator and verified offline; a tampered capsule refused. Through the real CLIs.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { requireNode24 } from './node-version.mjs';

requireNode24('demo');
// Loaded after the runtime check: an older node has no node:sqlite, and must get the check's sentence.
const { DatabaseSync } = await import('node:sqlite');

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = process.env.EDGE_RUNNER_BIN ? [process.env.EDGE_RUNNER_BIN] : [process.execPath, join(root, 'dist', 'runner', 'main.js')];
const coordinatorEntry = [process.execPath, join(root, 'dist', 'coordinator', 'src', 'main.js')];
const work = process.env.EDGE_RUNNER_DEMO_DIR ?? mkdtempSync(join(tmpdir(), 'edge-runner-demo-'));
const verbose = process.argv.includes('--verbose');
// The runner never inherits the caller's environment into steps; the CLIs themselves get a small one too.
const env = { PATH: '/usr/bin:/bin', HOME: work };
const children = new Set();

function fail(message) {
  process.stderr.write(`demo: ${message}\n`);
  for (const child of children) child.kill('SIGKILL');
  process.exit(1);
}

function run([file, ...pre], args, { expect = [0] } = {}) {
  const result = spawnSync(file, [...pre, ...args], { cwd: work, env, encoding: 'utf8' });
  if (verbose) process.stderr.write(`$ ${args.join(' ')}\n${result.stdout}${result.stderr}`);
  if (!expect.includes(result.status))
    fail(`${args.join(' ')} exited ${result.status}, expected ${expect.join(' or ')}\n${result.stdout}${result.stderr}`);
  return result;
}
const cli = (args, options) => run(entry, args, options);
const coordinatorCli = (args, options) => run(coordinatorEntry, args, options);

/** A long-running child; `lines` collects its stdout and stderr lines. */
function start([file, ...pre], args, name, extraEnv = {}) {
  const child = spawn(file, [...pre, ...args], { cwd: work, env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const lines = [];
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      const parts = (rest + chunk).split('\n');
      rest = parts.pop();
      for (const line of parts) {
        lines.push(line);
        if (verbose) process.stderr.write(`[${name}] ${line}\n`);
      }
    });
  }
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => (children.delete(child), resolve({ code, signal }))));
  return { child, lines, exited };
}

/** Waits (bounded) until `check` returns a value. */
async function until(what, check, timeoutMs = 30_000, explain = () => '') {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) fail(`timed out waiting for ${what} ${explain()}`);
    await delay(100);
  }
}

const rows = [];
const t0 = Date.now();

// 1. Keys: root signs the trust document, the capsule signer signs capsules, the runner signs evidence and
// its log, the witness cosigns the runner's checkpoints.
const keys = {};
for (const [prefix, name] of [
  ['root', 'root-1'],
  ['signer', 'capsule-signer-1'],
  ['runner', 'runner-demo-1'],
  ['witness', 'witness.demo.local'],
  // Approvers: named people. The capsule signer holds an approver key too (as people do), which must never
  // count for a capsule they signed.
  ['alice', 'alice'],
  ['bob', 'bob'],
  ['signer-approver', 'capsule-signer-1'],
]) {
  const out = JSON.parse(cli(['keygen', '--out', prefix, '--name', name, '--json']).stdout);
  keys[prefix] = { ...out, name, pem: readFileSync(join(work, `${prefix}.pub`), 'utf8') };
}
rows.push(['keys', 'root, capsule signer, runner, witness and approver (alice, bob, the signer) key pairs (Ed25519, PEM)']);

// 2. The trust document: who may sign capsules, which runners are real, who witnesses, what policy allows.
const expires = new Date(Date.now() + 90 * 86400_000).toISOString().replace(/\.\d+Z$/, 'Z');
const roleOf = {
  root: 'root',
  signer: 'capsule-signer',
  runner: 'runner',
  witness: 'witness',
  alice: 'approver',
  bob: 'approver',
  'signer-approver': 'approver',
};
const trust = {
  apiVersion: 'edge-runner.dev/trust/v1',
  version: 1,
  expires,
  keys: Object.fromEntries(Object.entries(keys).map(([p, k]) => [k.keyid, { publicKey: k.pem, name: k.name, roles: [roleOf[p]] }])),
  roles: {
    root: { threshold: 1 },
    'capsule-signer': { threshold: 1 },
    runner: { threshold: 1 },
    approver: { threshold: 2 },
    witness: { threshold: 1 },
  },
  policy: {
    allowedKinds: ['reproduce', 'validate', 'remediate'],
    // Governed remediation: which paths of a change target are which surface, what depends on what, and how
    // many named people a change to each needs. The ledger needs two of its owners, always a human.
    remediation: {
      surfaces: { ledger: ['config/ledger.conf', 'bin/interest-*.sh'], reporting: ['reports/**'], docs: ['docs/**', '*.md'] },
      dependsOn: { reporting: ['ledger'] },
      rules: { ledger: { approvals: 2, group: 'ledger-owners' }, docs: { approvals: 0 } },
      default: { approvals: 1 },
      groups: { 'ledger-owners': ['alice', 'bob', 'capsule-signer-1'] },
      noAutonomy: ['ledger'],
      autoApply: ['docs'],
    },
  },
};
writeFileSync(join(work, 'trust.json'), `${JSON.stringify(trust, null, 2)}\n`);
cli(['trust', 'sign', 'trust.json', '--key', 'root.key', '--out', 'trust.dsse.json']);
rows.push(['trust', `version 1 signed by root-1, expires ${expires.slice(0, 10)}`]);

// 3. The coordinator: its own state folder (SQLite), the same trust document, the witness key; loopback HTTP.
coordinatorCli(['init', '--state', 'coordinator', '--trust', 'trust.dsse.json', '--witness-key', 'witness.key']);
const token = readFileSync(join(work, 'coordinator', 'operator.token'), 'utf8').trim();
let coordinator = start(coordinatorEntry, ['serve', '--state', 'coordinator', '--listen', '127.0.0.1:0'], 'coordinator');
const listening = await until('the coordinator to listen', () => coordinator.lines.map(tryJson).find((l) => l?.listening)?.listening);
const base = listening.replace(/\/$/, '');
const port = new URL(base).port;
rows.push(['coordinator', `serving /v1 on ${base} (SQLite in ${join(work, 'coordinator')})`]);

// 4. The runner: its state folder, and its agent pointed at the coordinator (short backoff for the demo).
cli(['init', '--state', 'state', '--id', 'runner-demo-1', '--trust', 'trust.dsse.json', '--key', 'runner.key', '--label', 'demo']);
// The ledger service deployed on this host: the folder the reproduction reads (an operator's read-only grant)
// and remediation changes (an operator's change target, with the operator's own health check).
const service = join(work, 'ledger-service');
cpSync(join(root, 'scripts', 'demo', 'ledger-service'), service, { recursive: true });
writeFileSync(join(work, 'host-limits.conf'), 'max_posting_batch = 1000\n');
writeFileSync(
  join(work, 'agent.json'),
  JSON.stringify({
    coordinator: { backoffBaseMs: 250, backoffCapMs: 1000, pollWaitSeconds: 20 },
    resources: { 'ledger-service': { path: service } },
    targets: { 'ledger-service': { path: service, healthCheck: ['/bin/sh', join(service, 'bin', 'health.sh'), join(work, 'host-limits.conf')] } },
  }),
);
const agent = start(entry, ['agent', '--state', 'state', '--coordinator', base, '--config', 'agent.json'], 'agent', {
  EDGE_RUNNER_LOG_LEVEL: 'info',
});
rows.push(['agent', `runner-demo-1 long-polls ${base} (outbound only; every request signed, RFC 9421)`]);

/**
 * fetch, tried again when the connection it reused was closed under it (a keep-alive socket the server timed
 * out just as it was reused: undici's "other side closed"). Every request the demo makes is idempotent.
 */
async function request(url, init) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fetch(url, init);
    } catch (err) {
      if (attempt >= 3 || err?.cause?.code !== 'UND_ERR_SOCKET') throw err;
    }
  }
}

async function api(method, path, body) {
  const response = await request(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body } : {}),
  });
  const text = await response.text();
  return { status: response.status, text, json: tryJson(text) };
}
const bundlesAtCoordinator = async () => (await api('GET', '/v1/bundles?runner=runner-demo-1')).json?.items ?? [];

// 5. The example capsules, packed and signed, published through the operator API; the agent runs them.
const capsules = [
  { dir: join(root, 'capsules', 'validate-ledger'), name: 'validate-ledger', expectVerdict: 'pass', meaning: 'validation suite passed' },
  { dir: join(root, 'capsules', 'reproduce-rounding'), name: 'reproduce-rounding', expectVerdict: 'fail', meaning: 'defect reproduced, as intended' },
];
const published = Date.now();
for (const capsule of capsules) {
  cli(['capsule', 'pack', capsule.dir, '--key', 'signer.key', '--out', `${capsule.name}.capsule.json`]);
  const answer = await api('POST', '/v1/capsules', readFileSync(join(work, `${capsule.name}.capsule.json`)));
  if (answer.status !== 201) fail(`publishing ${capsule.name} answered ${answer.status} ${answer.text}`);
}
const arrived = await until('both bundles at the coordinator', async () => {
  const items = await bundlesAtCoordinator();
  return items.length >= 2 ? items : undefined;
});
for (const capsule of capsules) {
  const manifest = JSON.parse(readFileSync(join(capsule.dir, 'capsule.json'), 'utf8'));
  const item = arrived.find((i) => i.capsuleId === manifest.id);
  if (!item || item.verdict !== capsule.expectVerdict) fail(`${capsule.name}: expected verdict ${capsule.expectVerdict}, got ${item?.verdict}`);
  rows.push([capsule.name, `published, run by the agent, bundle verified and stored: verdict ${item.verdict.toUpperCase()} (${capsule.meaning})`]);
}
rows.push(['', `both bundles at the coordinator ${((Date.now() - published) / 1000).toFixed(1)} s after publishing`]);

// 6. The outbox: a slower capsule is published; while it runs, the coordinator stops. The bundle waits in
// the runner's outbox (same SQLite transaction as its evidence record), retried with backoff; the
// coordinator comes back on the same port and the bundle arrives, once.
const slow = join(work, 'nightly-reconcile');
mkdirSync(slow, { recursive: true });
writeFileSync(
  join(slow, 'capsule.json'),
  JSON.stringify({
    apiVersion: 'edge-runner.dev/capsule/v1',
    kind: 'validate',
    id: 'nightly-reconcile',
    isolation: 'required',
    target: { labels: ['demo'] },
    steps: [
      { name: 'warm-up', run: ['/bin/sleep', '1'] },
      { name: 'reconcile', run: ['/bin/sh', '-c', 'sleep 2; echo reconciled'] },
    ],
    inputs: [],
    collect: [],
  }),
);
cli(['capsule', 'pack', slow, '--key', 'signer.key', '--out', 'nightly-reconcile.capsule.json']);
const seenLines = agent.lines.length;
if ((await api('POST', '/v1/capsules', readFileSync(join(work, 'nightly-reconcile.capsule.json')))).status !== 201)
  fail('publishing nightly-reconcile failed');
await until('the slow capsule to start', () => agent.lines.slice(seenLines).some((l) => l.includes('"step":"warm-up"')));
coordinator.child.kill('SIGTERM');
await coordinator.exited;
const db = () => new DatabaseSync(join(work, 'state', 'runner.db'), { readOnly: true });
const queued = await until('the bundle to wait in the outbox', () => {
  const handle = db();
  try {
    const row = handle.prepare("SELECT COUNT(*) AS n, MAX(attempts) AS attempts FROM outbox_v1 WHERE state = 'queued' AND kind = 'bundle'").get();
    return row.n > 0 && row.attempts > 0 ? row : undefined;
  } finally {
    handle.close();
  }
});
rows.push([
  'outbox',
  `coordinator stopped: ${queued.n} bundle held in the runner's outbox, ${queued.attempts} attempt(s) so far, retried with backoff`,
]);
const down = Date.now();
await delay(1000);
coordinator = start(coordinatorEntry, ['serve', '--state', 'coordinator', '--listen', `127.0.0.1:${port}`], 'coordinator');
await until('the coordinator to listen again', () => coordinator.lines.some((l) => l.includes('"listening"')));
const all = await until('the held bundle to arrive', async () => {
  const items = await bundlesAtCoordinator();
  return items.length >= 3 ? items : undefined;
});
const digests = new Set(all.map((i) => i.digest));
rows.push([
  '',
  `coordinator back after ${((Date.now() - down) / 1000).toFixed(1)} s: the bundle arrived; ${all.length} bundles, ${digests.size} distinct (none twice)`,
]);

// 7. The tampered capsule: an altered ledger extract inside a signed capsule is refused at publication.
cli(['capsule', 'pack', join(root, 'capsules', 'validate-ledger'), '--key', 'signer.key', '--out', 'tampered.capsule.json']);
const tampered = JSON.parse(readFileSync(join(work, 'tampered.capsule.json'), 'utf8'));
const [blobKey] = Object.keys(tampered.blobs).filter((k) => Buffer.from(tampered.blobs[k], 'base64').toString().startsWith('account,'));
tampered.blobs[blobKey] = Buffer.from(Buffer.from(tampered.blobs[blobKey], 'base64').toString().replace('2500', '9500')).toString('base64');
writeFileSync(join(work, 'tampered.capsule.json'), JSON.stringify(tampered));
const refused = await api('POST', '/v1/capsules', readFileSync(join(work, 'tampered.capsule.json')));
if (refused.status !== 422) fail(`the tampered capsule was answered ${refused.status}`);
rows.push(['tampered', `refused at publication: ${refused.status} ${refused.json?.code}; the same file given to a runner is refused too`]);
const local = JSON.parse(cli(['exec', 'tampered.capsule.json', '--state', 'state', '--json'], { expect: [3] }).stdout);
rows.push(['', `edge-runner exec: ${local.code}, nothing executed (exit 3)`]);

// 8. Governed remediation: agents propose, humans authorize. The fix for the defect the reproduction showed
// is published, citing that reproduction's evidence; the agent stages it on a copy of the ledger service,
// validates it there, and proposes it. The tier (two ledger owners) is derived by the runner from the
// signed policy and the paths the diff touches. The capsule signer's own approval is refused by the runner;
// two owners' approvals are counted; the change is applied, verified, and the reproduction passes now.
const heldBundle = async (digest) => {
  const bytes = Buffer.from(
    await (await request(`${base}/v1/bundles/${digest.slice(7)}`, { headers: { authorization: `Bearer ${token}` } })).arrayBuffer(),
  );
  const bundle = JSON.parse(bytes.toString('utf8'));
  const payload = Buffer.from(bundle.evidence.payload, 'base64');
  return { bytes, statement: JSON.parse(payload.toString('utf8')), evidence: `sha256:${createHash('sha256').update(payload).digest('hex')}` };
};
const remediationBundle = (capsuleId, phases) =>
  until(
    `a ${phases.join(' or ')} bundle of ${capsuleId}`,
    async () => {
      for (const item of (await bundlesAtCoordinator()).filter((i) => i.capsuleId === capsuleId)) {
        const held = await heldBundle(item.digest);
        if (phases.includes(held.statement.predicate.remediation?.phase)) return held;
      }
      return undefined;
    },
    60_000,
  );
const treeOf = () => readFileSync(join(service, 'config', 'ledger.conf'), 'utf8');
const reproduction = await heldBundle(arrived.find((i) => i.capsuleId === 'reproduce-interest-rounding').digest);
async function propose(name, extra = {}) {
  const dir = join(work, name);
  cpSync(join(root, 'capsules', name), dir, { recursive: true });
  const manifest = JSON.parse(readFileSync(join(dir, 'capsule.json'), 'utf8'));
  manifest.change = { ...manifest.change, ...extra };
  writeFileSync(join(dir, 'capsule.json'), JSON.stringify(manifest));
  cli(['capsule', 'pack', dir, '--key', 'signer.key', '--out', `${name}.capsule.json`]);
  const answer = await api('POST', '/v1/capsules', readFileSync(join(work, `${name}.capsule.json`)));
  if (answer.status !== 201) fail(`publishing ${name} answered ${answer.status} ${answer.text}`);
  const proposal = await remediationBundle(manifest.id, ['proposed']);
  writeFileSync(join(work, `${name}.proposal.bundle.json`), proposal.bytes);
  return { id: manifest.id, proposal, remediation: proposal.statement.predicate.remediation };
}
async function upload(file) {
  const envelope = readFileSync(join(work, file));
  const digest = createHash('sha256')
    .update(canonicalJson(JSON.parse(envelope.toString('utf8'))))
    .digest('hex');
  const answer = await api('PUT', `/v1/approvals/${digest}`, envelope);
  if (answer.status !== 201 && answer.status !== 200) fail(`uploading ${file} answered ${answer.status} ${answer.text}`);
  return `sha256:${digest}`;
}
const approve = (name, who) =>
  cli([
    'approve',
    `${name}.proposal.bundle.json`,
    '--key',
    `${who}.key`,
    '--trust',
    'trust.dsse.json',
    '--not-after',
    '2h',
    '--yes',
    '--out',
    `${name}.${who}.approval.json`,
  ]);
const recordsOf = (kind) => {
  const handle = db();
  try {
    return handle
      .prepare('SELECT CAST(leaf AS TEXT) AS leaf FROM records_v1 WHERE kind = ? ORDER BY seq')
      .all(kind)
      .map((row) => JSON.parse(row.leaf));
  } finally {
    handle.close();
  }
};

const before = treeOf();
const fix = await propose('remediate-rounding', { reproductions: [reproduction.evidence] });
const tier = fix.remediation.tier;
rows.push([
  'propose',
  `${fix.id}: staged on a copy, validated there (${fix.proposal.statement.predicate.run.verdict.toUpperCase()}), the real target untouched (${treeOf() === before ? 'unchanged' : 'CHANGED'})`,
]);
rows.push([
  '',
  `footprint ${fix.remediation.footprint.files.map((f) => `${f.action} ${f.path} +${f.linesAdded}/-${f.linesRemoved}`).join(', ')}; surfaces ${fix.remediation.footprint.surfaces.join(', ')}, dependents ${fix.remediation.footprint.dependents.join(', ') || 'none'}`,
]);
rows.push([
  '',
  `derived tier: ${tier.approvals} approvers (${tier.requirements.map((r) => `${r.approvals} of ${r.group ?? 'any approver'}`).join(', ')}); the capsule declared ${tier.declared?.approvals} (${tier.declared?.comparison}); it cites reproduction ${reproduction.evidence.slice(0, 19)}…`,
]);
// The capsule signer tries to approve their own change. `edge-runner approve` refuses to sign it; signed
// anyway with the library, as a hostile signer's own tool would, the coordinator carries it and the runner
// refuses it.
const selfRefused = cli(
  [
    'approve',
    'remediate-rounding.proposal.bundle.json',
    '--key',
    'signer-approver.key',
    '--trust',
    'trust.dsse.json',
    '--yes',
    '--out',
    'self.approval.json',
  ],
  { expect: [1, 2, 3] },
);
const { signApproval, formatApproval } = await import(join(root, 'dist', 'runner', 'policy', 'approval.js'));
const { PrivateKey } = await import(join(root, 'dist', 'runner', 'core', 'ed25519.js'));
const signedAt = new Date();
const self = signApproval(
  fix.remediation.change,
  {
    proposal: fix.proposal.evidence,
    runner: 'runner-demo-1',
    target: fix.remediation.target,
    capsule: { id: fix.id, digest: fix.proposal.statement.predicate.capsule.digest },
    approver: 'capsule-signer-1',
    decision: 'approve',
    signedAt: signedAt.toISOString().replace(/\.\d+Z$/, 'Z'),
    notAfter: new Date(signedAt.getTime() + 3600_000).toISOString().replace(/\.\d+Z$/, 'Z'),
  },
  PrivateKey.fromPem(readFileSync(join(work, 'signer-approver.key'), 'utf8')),
);
writeFileSync(join(work, 'self.approval.json'), formatApproval(self.envelope));
await upload('self.approval.json');
const selfCode = await until(
  "the runner to refuse the signer's approval",
  () => recordsOf('approval.refused').find((r) => r.digest === self.digest)?.code,
);
rows.push([
  'approve',
  `capsule-signer-1 (the capsule's signer): approve refuses to sign (${firstCode(selfRefused)}); signed anyway and uploaded, the runner refuses it: ${selfCode}`,
]);
approve('remediate-rounding', 'alice');
approve('remediate-rounding', 'bob');
await upload('remediate-rounding.alice.approval.json');
await upload('remediate-rounding.bob.approval.json');
const applied = await remediationBundle(fix.id, ['applied', 'rolled-back', 'refused']);
const outcome = applied.statement.predicate.remediation;
if (outcome.phase !== 'applied') fail(`the rounding fix ended ${outcome.phase} ${outcome.outcome?.code ?? ''}`);
writeFileSync(join(work, 'remediate-rounding.final.bundle.json'), applied.bytes);
const finalCheck = JSON.parse(cli(['verify', 'remediate-rounding.final.bundle.json', '--trust', 'trust.dsse.json', '--json']).stdout)[0];
rows.push([
  '',
  `alice and bob approve; uploaded to the coordinator, delivered by the work feed: counted ${outcome.approvals.counted.map((c) => c.approver).join(', ')}`,
]);
rows.push([
  'apply',
  `applied (target digest = post-state: ${outcome.outcome.targetDigest === outcome.postState}), health check exit ${outcome.outcome.healthCheck?.exitCode}, reproduction run again: ${(outcome.outcome.reproductions ?? []).map((r) => r.verdict.toUpperCase()).join(', ') || 'none'}; config now says "${/interest_arithmetic = (\w+)/.exec(treeOf())?.[1]}"`,
]);
rows.push(['', `final bundle verifies offline with its approvals: ${finalCheck.ok ? 'OK' : `FAILED ${finalCheck.code}`}`]);

// A second change whose staged validation passes but which this host's health check refuses: applied on
// two approvals, found unhealthy, rolled back to a digest-checked pre-state.
const batch = await propose('remediate-posting-batch');
approve('remediate-posting-batch', 'alice');
approve('remediate-posting-batch', 'bob');
await upload('remediate-posting-batch.alice.approval.json');
await upload('remediate-posting-batch.bob.approval.json');
const undone = await remediationBundle(batch.id, ['applied', 'rolled-back', 'refused']);
const undoneOutcome = undone.statement.predicate.remediation;
if (undoneOutcome.phase !== 'rolled-back') fail(`the posting batch change ended ${undoneOutcome.phase}`);
writeFileSync(join(work, 'remediate-posting-batch.final.bundle.json'), undone.bytes);
const undoneCheck = JSON.parse(cli(['verify', 'remediate-posting-batch.final.bundle.json', '--trust', 'trust.dsse.json', '--json']).stdout)[0];
rows.push([
  'rollback',
  `${batch.id}: staged validation ${batch.proposal.statement.predicate.run.verdict.toUpperCase()}, approved by 2, applied; health check exit ${undoneOutcome.outcome.healthCheck?.exitCode}: ${undoneOutcome.outcome.code}`,
]);
rows.push([
  '',
  `rolled back: target digest = pre-state ${undoneOutcome.outcome.targetDigest === undoneOutcome.preState}, posting_batch ${/posting_batch = (\d+)/.exec(treeOf())?.[1]}; final bundle verifies offline: ${undoneCheck.ok ? 'OK' : `FAILED ${undoneCheck.code}`}`,
]);

// 9. The fleet view and the witness: the coordinator cosigned the runner's checkpoints (C2SP tlog-witness).
let lastSeen;
const fleet = await until(
  'the witness to catch up',
  async () => {
    lastSeen = (await api('GET', '/v1/runners')).json?.runners?.find((r) => r.id === 'runner-demo-1');
    return lastSeen?.witnessedSize > 0 ? lastSeen : undefined;
  },
  30_000,
  () => JSON.stringify(lastSeen),
);
const reportedAgo = ((Date.now() - Date.parse(fleet.statusAt)) / 1000).toFixed(0);
rows.push([
  'fleet',
  `runner-demo-1: version ${fleet.version}, witnessed at size ${fleet.witnessedSize}, forks ${fleet.forks}; reported ${reportedAgo} s ago: log ${fleet.logSize}, outbox ${fleet.outboxDepth}, dead letters ${fleet.deadLetters}`,
]);

// 10. The agent stops on SIGTERM (exit 0); an auditor exports the log and checks it and its cosignatures.
agent.child.kill('SIGTERM');
const stopped = await agent.exited;
if (stopped.code !== 0) fail(`the agent exited ${stopped.code} ${stopped.signal}`);
cli(['log', 'export', '--state', 'state', '--out', 'runner-log.jsonl']);
const audit = JSON.parse(cli(['log', 'verify', 'runner-log.jsonl', '--trust', 'trust.dsse.json', '--json']).stdout);
const witnessed = audit.cosigned.map((c) => `${c.witness} at size ${c.size}`).join(', ') || 'none';
rows.push(['log', `${audit.size} records, ${audit.checkpoints} signed checkpoints verify; cosigned by ${witnessed}`]);

// 11. An auditor takes a bundle from the coordinator and verifies it offline, with the trust document only.
const first = all[0];
const bytes = Buffer.from(
  await (await request(`${base}/v1/bundles/${first.digest.slice(7)}`, { headers: { authorization: `Bearer ${token}` } })).arrayBuffer(),
);
if (`sha256:${createHash('sha256').update(bytes).digest('hex')}` !== first.digest) fail('the bundle served is not the one listed');
writeFileSync(join(work, 'from-coordinator.bundle.json'), bytes);
const verified = JSON.parse(cli(['verify', 'from-coordinator.bundle.json', '--trust', 'trust.dsse.json', '--json']).stdout);
rows.push([
  'verify',
  `a bundle fetched from the coordinator verifies offline: ${verified.every((r) => r.ok) ? 'OK' : 'FAILED'} (${first.capsuleId})`,
]);

coordinator.child.kill('SIGTERM');
const coordinatorStopped = await coordinator.exited;
if (coordinatorStopped.code !== 0) fail(`the coordinator exited ${coordinatorStopped.code} ${coordinatorStopped.signal}`);

const width = Math.max(...rows.map(([k]) => k.length));
process.stdout.write(`\nedge-runner demo (${((Date.now() - t0) / 1000).toFixed(1)} s) in ${work}\n\n`);
for (const [k, v] of rows) process.stdout.write(`  ${k.padEnd(width)}  ${v}\n`);
process.stdout.write(`\nrun with --verbose to see every command and the agent's and coordinator's logs.\n`);

/** The reason code a failed command printed (`edge-runner: CODE: ...`). */
function firstCode(result) {
  return /\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b/.exec(`${result.stderr}${result.stdout}`)?.[1] ?? `exit ${result.status}`;
}

/** JSON with members sorted and no whitespace: the canonical form approvals are digested in. */
function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object')
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`)
      .join(',')}}`;
  return JSON.stringify(value);
}

function tryJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
