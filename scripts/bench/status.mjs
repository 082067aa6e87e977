// `edge-runner status` (runner/cli/status.ts) on a state folder whose log holds 1,000,000 records, against a
// bare `node -e 0` spawn measured in the same run (the floor of any command: a runtime starting). The store is
// built through the store's own API in a few large transactions (acceptances with their nonces, rejections
// with their outbox rows, most of them acknowledged, runs finished, a checkpoint and a cosignature every
// 10,000 records, a dead letter, queued answers and two schedules), so every table status reads is populated
// as a long-lived runner's would be. Figures: the whole command as a monitoring check runs it (spawned, with
// --json), with no agent running (the database read as immutable) and with one running (a connection held
// open: the WAL path), and the in-process read alone. Each is the median of ROUNDS, subject and reference
// interleaved; the single binary too when it is built. Goal: <= 100 ms per status.
//
//   node scripts/bench/status.mjs [dist] [records]     (dist defaults to ./dist; build with npm run build)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DatabaseSync } from 'node:sqlite';

const DEFAULT_RECORDS = 1_000_000;
const ROUNDS = 15;
const TIME = '/usr/bin/time';
const TRANSACTION_RECORDS = 100_000;
const CHECKPOINT_EVERY = 10_000;

const load = (dist, path) => import(pathToFileURL(resolve(dist, path)).href);
const round = (value, digits = 1) => Number(value.toFixed(digits));

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The wall time of one spawn, and its CPU time (user + system, from /usr/bin/time when present). */
function timedSpawn(args, file = process.execPath) {
  const timed = existsSync(TIME);
  const start = process.hrtime.bigint();
  const result = spawnSync(timed ? TIME : file, timed ? ['-f', 'cpu %U %S', file, ...args] : args, {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
  });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  const cpu = /cpu (\d+\.\d+) (\d+\.\d+)\s*$/.exec(result.stderr ?? '');
  return { ms, cpuMs: cpu ? (Number(cpu[1]) + Number(cpu[2])) * 1000 : undefined, result };
}

/** CPU-time figures (10 ms resolution of /usr/bin/time), each against `node -e 0`'s CPU time. */
function cpuRows(cpu) {
  if (cpu.bare.length === 0) return [];
  const reference = median(cpu.bare);
  const row = (name, values) =>
    values.length === 0
      ? []
      : [
          {
            name,
            value: round(median(values)),
            unit: 'ms CPU',
            ratio: round(median(values) / reference, 2),
            reference: `node -e 0 (${round(reference)} ms CPU)`,
          },
        ];
  return [
    ...row('status --json, agent stopped, CPU time, median', cpu.stopped),
    ...row('status --json, single binary, CPU time, median', cpu.binary),
  ];
}

export async function run({ dist = 'dist', records = DEFAULT_RECORDS } = {}) {
  const { PrivateKey } = await load(dist, 'runner/core/ed25519.js');
  const { signEnvelope } = await load(dist, 'runner/core/dsse.js');
  const { initState } = await load(dist, 'runner/state/state.js');
  const { Store } = await load(dist, 'runner/store/store.js');
  const { readStatus } = await load(dist, 'runner/cli/status.js');
  const cli = resolve(dist, 'runner/main.js');

  // Not the shared /tmp: a tmpfs would make the reads free.
  const dir = mkdtempSync(join('/var/tmp', 'edge-runner-bench-status-'));
  try {
    const root = PrivateKey.generate();
    const runner = PrivateKey.generate();
    const body = {
      apiVersion: 'edge-runner.dev/trust/v1',
      version: 1,
      expires: new Date(Date.now() + 365 * 86400_000).toISOString().replace(/\.\d+Z$/, 'Z'),
      keys: {
        [root.keyid]: { publicKey: root.publicKey.toPem(), name: 'root', roles: ['root'] },
        [runner.keyid]: { publicKey: runner.publicKey.toPem(), name: 'bench', roles: ['runner'] },
      },
      roles: { root: { threshold: 1 }, 'capsule-signer': { threshold: 1 }, runner: { threshold: 1 }, approver: { threshold: 1 } },
      policy: { allowedKinds: ['validate'] },
    };
    const trustBytes = Buffer.from(
      JSON.stringify(signEnvelope('application/vnd.edge-runner.trust.v1+json', Buffer.from(JSON.stringify(body)), [root])),
    );
    const stateDir = join(dir, 'state');
    initState(stateDir, {
      id: 'bench',
      labels: ['bench'],
      trustBytes,
      now: new Date(),
      key: runner,
      createDatabase: (path) => Store.open(path, { create: true }).close(),
    });
    const database = join(stateDir, 'runner.db');

    const buildStarted = process.hrtime.bigint();
    const store = Store.open(database);
    const digest = `sha256:${'0'.repeat(64)}`;
    const runId = (i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
    let seq = 0;
    while (seq < records) {
      store.transaction(() => {
        const end = Math.min(records, seq + TRANSACTION_RECORDS);
        for (; seq < end; seq++) {
          if (seq % 10 === 0) {
            store.acceptCapsule(`nonce-${seq}`, { capsuleId: `capsule-${seq}`, capsuleKind: 'validate', manifestDigest: digest, signers: ['k'] });
          } else if (seq % 100 === 5) {
            store.appendRecord('capsule.rejected', { code: 'CAPSULE_EXPIRED' });
          } else if ((seq + 1) % CHECKPOINT_EVERY === 0) {
            store.appendRecord('run.finished', { runId: runId(seq), verdict: 'pass' });
            store.saveCheckpoint(seq + 1, `bench checkpoint ${seq + 1}\n`);
            store.saveCosignature({
              size: seq + 1,
              witness: 'witness.bench',
              timestamp: Math.floor(Date.now() / 1000),
              line: '— witness.bench AAAA\n',
            });
          } else {
            store.appendRecord('run.finished', { runId: runId(seq), verdict: 'pass' });
          }
        }
      });
    }
    // Most answers were taken by the coordinator; the last few are still queued, one was refused for good.
    store.transaction(() => {
      const bodyBytes = Buffer.from('{}');
      let n = 0;
      for (let row = store.outboxNext(Number.MAX_SAFE_INTEGER); row !== undefined; row = store.outboxNext(Number.MAX_SAFE_INTEGER)) {
        if (n++ >= records / 100 - 20) break;
        store.outboxSetBody(row.id, `sha256:${String(row.id).padStart(64, '0')}`, bodyBytes);
        if (n === 1) store.outboxDead(row.id, 'PROTOCOL_BUNDLE_INVALID');
        else store.outboxAck(row.id, 'created');
      }
      for (const [id, cron] of [
        ['nightly', '0 3 * * *'],
        ['hourly', '0 * * * *'],
      ]) {
        const record = store.appendRecord('run.finished', { runId: runId(records + 1), verdict: 'pass' });
        store.addSchedule({
          manifestDigest: `sha256:${id.padStart(64, '0')}`,
          capsuleId: id,
          acceptedSeq: record.seq,
          acceptedAt: new Date().toISOString(),
          issuedAt: new Date().toISOString(),
          fileDigest: digest,
          cron,
          timezone: 'Europe/London',
          expiresAt: new Date(Date.now() + 30 * 86400_000).toISOString(),
        });
      }
    });
    store.close();
    const buildSeconds = Number(process.hrtime.bigint() - buildStarted) / 1e9;

    const args = [cli, 'status', '--state', stateDir, '--json'];
    const check = timedSpawn(args).result;
    const report = JSON.parse(check.stdout || '{}');
    if (report.log?.size < records) throw new Error(`status read ${report.log?.size} records, not ${records}: ${check.stderr}`);

    // The single binary, when built (npm run build:binary): what an operator installs.
    const binary = resolve(dist, 'edge-runner');
    const hasBinary = existsSync(binary);
    const binaryArgs = ['status', '--state', stateDir, '--json'];
    if (hasBinary && JSON.parse(timedSpawn(binaryArgs, binary).result.stdout || '{}').log?.size < records)
      throw new Error('the binary status read too few records');
    const binaryTimes = [];
    const bare = [];
    const stopped = [];
    const running = [];
    // CPU time (user + system) too: on a loaded machine it moves far less than wall time.
    const cpu = { bare: [], stopped: [], binary: [] };
    const note = (list, timing) => {
      if (timing.cpuMs !== undefined) list.push(timing.cpuMs);
      return timing.ms;
    };
    const inProcess = [];
    // An agent's connection, held open: the WAL file exists and status reads through it.
    const agent = () => {
      const db = new DatabaseSync(database);
      db.prepare('SELECT COUNT(*) FROM checkpoints_v1').get();
      return db;
    };
    for (let i = 0; i < ROUNDS; i++) {
      bare.push(note(cpu.bare, timedSpawn(['-e', '0'])));
      stopped.push(note(cpu.stopped, timedSpawn(args)));
      if (hasBinary) binaryTimes.push(note(cpu.binary, timedSpawn(binaryArgs, binary)));
      const db = agent();
      running.push(timedSpawn(args).ms);
      const start = process.hrtime.bigint();
      await readStatus(stateDir, { now: new Date() });
      inProcess.push(Number(process.hrtime.bigint() - start) / 1e6);
      db.close();
    }
    const reference = median(bare);
    const row = (name, values) => ({
      name,
      value: round(median(values)),
      unit: 'ms',
      ratio: round(median(values) / reference, 2),
      reference: `node -e 0 (${round(reference)} ms)`,
    });
    return [
      {
        name: `store of ${records.toLocaleString('en')} records built (store API, ${TRANSACTION_RECORDS.toLocaleString('en')} per transaction)`,
        value: round(buildSeconds),
        unit: 's',
      },
      row('status --json, agent stopped (immutable read), median', stopped),
      row('status --json, agent running (WAL read), median', running),
      row('status read in process (state, config, store), median', inProcess),
      ...(hasBinary ? [row('status --json, single binary, agent stopped, median', binaryTimes)] : []),
      ...cpuRows(cpu),
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const rows = await run({ dist: process.argv[2] ?? 'dist', records: Number(process.argv[3] ?? DEFAULT_RECORDS) });
  for (const row of rows) process.stdout.write(`${JSON.stringify(row)}\n`);
}
