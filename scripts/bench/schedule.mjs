// Recurring capsules (issue 10): firing jitter, how late each slot's run starts. A real runner context on a
// real store (on disk), one recurring capsule accepted through runCapsule (`* * * * * *`: every second),
// the real Scheduler and RunLane on the real clock and timers, FIRINGS firings of one /bin/true step (a
// direct launcher, no sandbox: the step's cost is not what is measured; the run.started record comes before
// any sandbox is started anyway). Lateness of a firing = the `at` of its run.started record (the store's
// clock) minus its `scheduledFor` slot: the timer's wake-up, the look (planSchedule), reading the kept
// capsule file back and verifying it again, and the durable start transaction. Goal: p99 <= 1 s late.
// Reference, measured first in the same run: a bare setTimeout aimed at each of REFERENCE whole seconds,
// its lateness by Date.now() (what the host's timers and clock give any program).
//
//   node scripts/bench.mjs schedule          (build first: npx tsc -p tsconfig.build.json)
/* global AbortController */
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { load, median, percentile, round, signedTrust, sleep } from './link/fixture.mjs';

const FIRINGS = 100;
const REFERENCE = 20;

export async function run({ dist }) {
  const { PrivateKey } = await load(dist, 'runner/core/ed25519.js');
  const { packCapsule } = await load(dist, 'runner/capsule/pack.js');
  const { initState } = await load(dist, 'runner/state/state.js');
  const { Store } = await load(dist, 'runner/store/store.js');
  const { openRunner } = await load(dist, 'runner/agent/runner.js');
  const { runCapsule } = await load(dist, 'runner/agent/run-capsule.js');
  const { RunLane } = await load(dist, 'runner/agent/lane.js');
  const { Scheduler } = await load(dist, 'runner/schedule/scheduler.js');
  const { parseRecordLeaf } = await load(dist, 'runner/log/record.js');

  // Reference: setTimeout to each next whole second.
  const reference = [];
  for (let i = 0; i < REFERENCE; i++) {
    const target = Math.ceil((Date.now() + 1) / 1000) * 1000;
    await sleep(target - Date.now());
    reference.push(Date.now() - target);
  }

  const dir = mkdtempSync(join('/var/tmp', 'edge-runner-bench-schedule-'));
  let ctx;
  try {
    const keys = { root: PrivateKey.generate(), signer: PrivateKey.generate(), runner: PrivateKey.generate() };
    const trustBytes = await signedTrust(dist, [
      { name: 'root-1', key: keys.root, roles: ['root'] },
      { name: 'signer-1', key: keys.signer, roles: ['capsule-signer'] },
      { name: 'bench-runner', key: keys.runner, roles: ['runner'] },
    ]);
    const stateDir = join(dir, 'state');
    initState(stateDir, {
      id: 'bench-runner',
      labels: [],
      trustBytes,
      now: new Date(),
      key: keys.runner,
      createDatabase: (path) => Store.open(path, { create: true }).close(),
    });
    const direct = {
      isolation: 'none',
      leaderIsStep: true,
      prepare: () => {},
      plan: (argv, env, cwd) => ({ file: argv[0], args: argv.slice(1), env, cwd }),
    };
    ctx = openRunner(stateDir, { launcher: () => direct });
    const capsule = Buffer.from(
      JSON.stringify(
        packCapsule(
          {
            apiVersion: 'edge-runner.dev/capsule/v1',
            kind: 'validate',
            id: 'bench-every-second',
            issuedAt: new Date(Date.now() - 60_000).toISOString(),
            notBefore: new Date(Date.now() - 60_000).toISOString(),
            expiresAt: new Date(Date.now() + 3600_000).toISOString(),
            nonce: randomBytes(16).toString('hex'),
            isolation: 'best-effort',
            target: { runners: ['bench-runner'] },
            steps: [{ name: 'ok', run: ['/bin/true'] }],
            inputs: [],
            collect: [],
            schedule: { cron: '* * * * * *' },
          },
          new Map(),
          [keys.signer],
        ),
      ),
    );
    const accepted = await runCapsule(ctx, capsule);
    if (accepted.kind !== 'scheduled') throw new Error(`bench schedule: the capsule was ${accepted.kind} ${accepted.code ?? ''}`);

    const stopping = new AbortController();
    const outcomes = [];
    const scheduler = new Scheduler(ctx, {
      lane: new RunLane(),
      onFiring: (_row, outcome) => {
        outcomes.push(outcome.kind);
        if (outcomes.length >= FIRINGS) stopping.abort();
      },
    });
    const started = Date.now();
    await Promise.race([
      scheduler.run(stopping.signal, new AbortController().signal),
      sleep((FIRINGS + 30) * 1000).then(() => {
        stopping.abort();
        throw new Error(`bench schedule: ${outcomes.length} firings in ${FIRINGS + 30} s`);
      }),
    ]);
    const wallS = (Date.now() - started) / 1000;
    const late = [];
    let missed = 0;
    for (const stored of ctx.store.records()) {
      const record = parseRecordLeaf(stored.leaf, stored.seq);
      if (record.kind === 'run.started' && record.body.scheduledFor) late.push(Date.parse(record.at) - Date.parse(record.body.scheduledFor));
      if (record.kind === 'schedule.missed') missed += record.body.count;
    }
    const completed = outcomes.filter((kind) => kind === 'completed').length;
    const p99 = percentile(late, 99);
    return [
      {
        name: `bare setTimeout to the next whole second, lateness median (reference; ${REFERENCE} s)`,
        value: round(median(reference), 1),
        unit: 'ms',
      },
      { name: `bare setTimeout to the next whole second, lateness max (reference)`, value: round(Math.max(...reference), 1), unit: 'ms' },
      {
        name: `firing lateness, slot to run.started, median over ${late.length} firings (every second, one /bin/true step, no sandbox)`,
        value: round(median(late), 1),
        unit: 'ms',
      },
      {
        name: `firing lateness p99 (goal <= 1,000 ms${p99 <= 1000 ? ', met' : ', NOT met'})`,
        value: round(p99, 1),
        unit: 'ms',
      },
      { name: 'firing lateness max', value: round(Math.max(...late), 1), unit: 'ms' },
      { name: `firings completed / slots recorded missed in ${round(wallS, 1)} s`, value: `${completed} / ${missed}`, unit: '' },
    ];
  } finally {
    ctx?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
