// The coordinator link (issue 9), each figure against a reference measured in the same run:
//   1. bundles shipped per second, outbox to ack: the real Shipper and CoordinatorClient (signed requests,
//      capped and checked acks, the outbox row settled with its record) draining a real runner store of
//      BUNDLES queued bundles to a no-op loopback inbox, against raw undici `request` PUTs of the same bytes
//      to that same inbox (goal >= 0.5x); and the same drain into a real coordinator process (which checks
//      the signature and nonce, verifies and stores every bundle), as a figure of its own;
//   2. coordinator ingest in-process, through the coordinator's own modules: the inbox route's steps (digest,
//      holder lookup, verifyBundle against the trust document, SqliteCoordinatorStore.putBundle with
//      synchronous=FULL on this disk) against verifyBundle alone on the same bundles (goal >= 0.7x);
//   3. publish-to-run-started over loopback: a real coordinator and a real `edge-runner agent`, a capsule
//      POSTed through the operator API, until the `at` of its run.started record in the runner's SQLite
//      (same host clock); median and p90 over PUBLISHES, each published while the agent idles in its long
//      poll (goal median <= 50 ms);
//   4. the agent's idle RSS (goal <= 80 MiB) against a bare `node -e "setInterval(()=>{},1000)"`;
//   5. the coordinator's RSS per idle long poll, POLLS signed `wait=60` polls, one per enrolled runner
//      (goal <= 50 KiB each).
// The bundles are real: BUNDLES capsules of one /bin/true step run in-process through runCapsule with a
// direct launcher (no sandbox; the steps' cost is not what is measured), each leaving its bundle queued in
// the runner store's outbox; every shipping round drains a fresh copy of that store (the witness submission
// that follows shipping in the agent is not part of it). Rates are the median of ROUNDS rounds, subject and
// reference back to back in each; ratios the median of the per-round ratios, their range beside them.
// Figures, not pass/fail; a goal not met is said in its row.
//
//   node scripts/bench.mjs link          (build first: npx tsc -p tsconfig.build.json)
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { pino } from 'pino';
import { request as undiciRequest } from 'undici';
import {
  anonymousOf,
  killAll,
  load,
  median,
  percentile,
  round,
  settledRss,
  signedTrust,
  sleep,
  startAgent,
  startBareNode,
  startCoordinator,
  startNoopInbox,
  until,
} from './link/fixture.mjs';

const BUNDLES = 300;
const ROUNDS = 5;
const PUBLISHES = 20;
const POLLS = 1000;
const MIB = 2 ** 20;
const BUNDLE_MEDIA_TYPE = 'application/vnd.edge-runner.bundle.v1+json';

/**
 * The subject against its reference round by round (each round measures both, back to back, so a slow
 * moment of the shared machine weighs on both): the median of the per-round ratios, and their range.
 */
function paired(subject, reference) {
  const ratios = subject.map((value, i) => value / reference[i]);
  return { ratio: round(median(ratios)), range: `rounds ${round(Math.min(...ratios))}-${round(Math.max(...ratios))}x` };
}

const goal = (met, text) => `goal ${text}: ${met ? 'met' : 'NOT MET'}`;
const perSecond = (count, ms) => (count * 1000) / ms;
const elapsedMs = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

export async function run({ dist = 'dist' } = {}) {
  const { PrivateKey } = await load(dist, 'runner/core/ed25519.js');
  const { sha256Hex } = await load(dist, 'runner/core/digest.js');
  const { packCapsule } = await load(dist, 'runner/capsule/pack.js');
  const { initState } = await load(dist, 'runner/state/state.js');
  const { withRunner } = await load(dist, 'runner/agent/runner.js');
  const { runCapsule } = await load(dist, 'runner/agent/run-capsule.js');
  const { Store } = await load(dist, 'runner/store/store.js');
  const { verifyTrustDocument } = await load(dist, 'runner/trust/trust.js');
  const { verifyBundle } = await load(dist, 'runner/evidence/bundle.js');
  const { resolveConfig } = await load(dist, 'runner/config/config.js');
  const { CoordinatorClient } = await load(dist, 'runner/api/client.js');
  const { Shipper, realSleep } = await load(dist, 'runner/outbox/shipper.js');
  const { formatInboxAck } = await load(dist, 'runner/protocol/wire.js');
  const { signRequest } = await load(dist, 'runner/protocol/http-signature.js');
  const { SqliteCoordinatorStore } = await load(dist, 'coordinator/src/store/sqlite.js');

  // On disk, not a tmpfs: the runner's and the coordinator's SQLite fsync as they would in service.
  const dir = mkdtempSync(join('/var/tmp', 'edge-runner-bench-link-'));
  const cleanups = [];
  try {
    const keys = {
      root: PrivateKey.generate(),
      signer: PrivateKey.generate(),
      shipper: PrivateKey.generate(),
      agent: PrivateKey.generate(),
      witness: PrivateKey.generate(),
    };
    const trustBytes = await signedTrust(dist, [
      { name: 'root-1', key: keys.root, roles: ['root'] },
      { name: 'signer-1', key: keys.signer, roles: ['capsule-signer'] },
      { name: 'bench-shipper', key: keys.shipper, roles: ['runner'] },
      { name: 'bench-agent', key: keys.agent, roles: ['runner'] },
      { name: 'witness.bench.local', key: keys.witness, roles: ['witness'] },
    ]);
    const trust = verifyTrustDocument(trustBytes, { now: new Date() });
    const capsule = (runner, id) =>
      Buffer.from(
        JSON.stringify(
          packCapsule(
            {
              apiVersion: 'edge-runner.dev/capsule/v1',
              kind: 'validate',
              id,
              issuedAt: new Date(Date.now() - 60_000).toISOString(),
              notBefore: new Date(Date.now() - 60_000).toISOString(),
              expiresAt: new Date(Date.now() + 3600_000).toISOString(),
              nonce: randomBytes(16).toString('hex'),
              isolation: 'best-effort',
              target: { runners: [runner] },
              steps: [{ name: 'ok', run: ['/bin/true'] }],
              inputs: [],
              collect: [],
            },
            new Map(),
            [keys.signer],
          ),
        ),
      );
    const newState = (name, id, key) => {
      const stateDir = join(dir, name);
      initState(stateDir, { id, labels: [], trustBytes, now: new Date(), key, createDatabase: (path) => Store.open(path, { create: true }).close() });
      return stateDir;
    };

    // 0. Real, distinct bundles, queued in a real runner store's outbox.
    const shipperState = newState('shipper-state', 'bench-shipper', keys.shipper);
    const direct = {
      isolation: 'none',
      leaderIsStep: true,
      prepare: () => {},
      plan: (argv, env, cwd) => ({ file: argv[0], args: argv.slice(1), env, cwd }),
    };
    const made = process.hrtime.bigint();
    await withRunner(shipperState, { launcher: () => direct }, async (ctx) => {
      for (let i = 0; i < BUNDLES; i++) {
        const outcome = await runCapsule(ctx, capsule('bench-shipper', `bench-ship-${i}`));
        if (outcome.kind !== 'completed') throw new Error(`bench link: capsule ${i} ${outcome.kind} ${outcome.code ?? ''}`);
      }
    });
    const makeMs = elapsedMs(made);
    const runnerDb = join(shipperState, 'runner.db');
    const bundles = (() => {
      const db = new DatabaseSync(runnerDb, { readOnly: true });
      try {
        return db
          .prepare("SELECT digest, body FROM outbox_v1 WHERE kind = 'bundle' AND state = 'queued' ORDER BY id")
          .all()
          .map((r) => ({ digest: r.digest, hex: r.digest.slice('sha256:'.length), bytes: Buffer.from(r.body) }));
      } finally {
        db.close();
      }
    })();
    if (bundles.length !== BUNDLES) throw new Error(`bench link: ${bundles.length} bundles queued, expected ${BUNDLES}`);
    const meanKiB = bundles.reduce((n, b) => n + b.bytes.length, 0) / bundles.length / 1024;
    /** A fresh copy of the runner store with every bundle still queued. */
    let copies = 0;
    const storeCopy = () => {
      const copyDir = join(dir, `outbox-copy-${copies++}`);
      mkdirSync(copyDir);
      // The database and what goes with it (its WAL, and the log's high-water mark file runner.db.head).
      for (const name of readdirSync(shipperState)) if (name.startsWith('runner.db')) copyFileSync(join(shipperState, name), join(copyDir, name));
      return Store.open(join(copyDir, 'runner.db'));
    };

    // 1. Shipping: raw undici PUTs, the shipper to the no-op inbox, the shipper to a real coordinator.
    const noop = await startNoopInbox(formatInboxAck);
    cleanups.push(() => noop.close());
    // The agent's own logger (pino, info, synchronous), written to /dev/null instead of stderr.
    const logger = pino({ name: 'edge-runner', level: 'info', base: { pid: process.pid } }, pino.destination({ dest: '/dev/null', sync: true }));
    const ship = async (url) => {
      const store = storeCopy();
      const settings = resolveConfig({ env: {}, flags: { coordinator: { url } } }).coordinator;
      const client = new CoordinatorClient({ settings, runnerId: 'bench-shipper', key: keys.shipper });
      const shipper = new Shipper({
        store,
        client,
        buildRejection: () => {
          throw new Error('bench link: no rejections are queued');
        },
        backoff: { baseMs: settings.backoffBaseMs, capMs: settings.backoffCapMs, random: Math.random },
        now: Date.now,
        sleep: realSleep,
        logger: logger.child({ part: 'shipper' }),
      });
      try {
        const t0 = process.hrtime.bigint();
        await shipper.pass();
        const ms = elapsedMs(t0);
        const stats = store.outboxStats();
        if (stats.queued !== 0) throw new Error(`bench link: the shipper left ${stats.queued} bundles queued (${JSON.stringify(stats)})`);
        return perSecond(BUNDLES, ms);
      } finally {
        await client.close();
        store.close();
      }
    };
    const raw = async () => {
      const t0 = process.hrtime.bigint();
      for (const b of bundles) {
        const { statusCode, body } = await undiciRequest(`${noop.url}/v1/bundles/${b.hex}`, {
          method: 'PUT',
          body: b.bytes,
          headers: { 'content-type': BUNDLE_MEDIA_TYPE },
        });
        await body.arrayBuffer();
        if (statusCode !== 201) throw new Error(`bench link: the no-op inbox answered ${statusCode}`);
      }
      return perSecond(BUNDLES, elapsedMs(t0));
    };
    const rates = { raw: [], noop: [], real: [] };
    for (let r = 0; r < ROUNDS; r++) {
      rates.raw.push(await raw());
      rates.noop.push(await ship(noop.url));
      // A fresh coordinator each round: every bundle is new to it (a bundle it holds is answered without
      // being verified again, which is not what is measured).
      const coordinator = await startCoordinator(dist, join(dir, `coordinator-ship-${r}`), {
        trustBytes,
        witnessKey: keys.witness,
      });
      try {
        rates.real.push(await ship(coordinator.url));
        const held = await coordinator.operator('GET', '/v1/bundles?runner=bench-shipper&limit=1000');
        if (held.json?.items?.length !== BUNDLES)
          throw new Error(`bench link: the coordinator holds ${held.json?.items?.length} bundles, expected ${BUNDLES}`);
      } finally {
        await coordinator.stop();
      }
    }
    const rawRate = median(rates.raw);
    const noopRate = median(rates.noop);
    const realRate = median(rates.real);
    const shipPaired = paired(rates.noop, rates.raw);
    const realPaired = paired(rates.real, rates.raw);
    const sample = `${BUNDLES} bundles of ${round(meanKiB, 1)} KiB, median of ${ROUNDS} interleaved rounds`;
    const rows = [
      {
        name: `bundles made for the link: runCapsule, one /bin/true step, no sandboxing (${BUNDLES})`,
        value: round(makeMs / BUNDLES, 1),
        unit: 'ms/bundle',
      },
      { name: `raw undici PUT to a no-op loopback inbox (reference; ${sample})`, value: round(rawRate, 0), unit: 'bundles/s' },
      {
        name: `shipped outbox to ack, Shipper + CoordinatorClient to the no-op inbox (${sample})`,
        value: round(noopRate, 0),
        unit: 'bundles/s',
        ratio: shipPaired.ratio,
        reference: `raw undici PUT (${shipPaired.range}); ${goal(shipPaired.ratio >= 0.5, '>= 0.5x')}`,
      },
      {
        name: `shipped outbox to ack, to a real coordinator (HTTP, signature + nonce, verify, store; ${sample})`,
        value: round(realRate, 0),
        unit: 'bundles/s',
        ratio: realPaired.ratio,
        reference: `raw undici PUT (${realPaired.range}; no goal)`,
      },
    ];

    // 2. Ingest in-process through the coordinator's modules, against verifyBundle alone.
    const verifyOnly = () => {
      const t0 = process.hrtime.bigint();
      for (const b of bundles) verifyBundle(b.bytes, trust);
      return perSecond(BUNDLES, elapsedMs(t0));
    };
    let ingestDbs = 0;
    const ingest = async () => {
      const store = SqliteCoordinatorStore.open(join(dir, `ingest-${ingestDbs++}.db`), { create: true });
      try {
        const t0 = process.hrtime.bigint();
        // As routes.ts putBundle does it, without the HTTP and the request signature.
        for (const b of bundles) {
          const digest = `sha256:${sha256Hex(b.bytes)}`;
          if (digest !== b.digest) throw new Error('bench link: a bundle does not have its digest');
          if ((await store.bundleRunner(digest)) !== undefined) throw new Error('bench link: a bundle is already stored');
          const verified = verifyBundle(b.bytes, trust);
          const stored = await store.putBundle({
            digest,
            bytes: b.bytes,
            runner: verified.runnerName,
            capsuleId: verified.manifest.id,
            manifestDigest: verified.statement.predicate.capsule.digest,
            verdict: verified.statement.predicate.run.verdict,
            evidenceDigest: verified.evidenceDigest,
            logIndex: verified.log.index,
            receivedAt: new Date().toISOString(),
          });
          if (stored !== 'created') throw new Error(`bench link: ingest stored ${stored}`);
        }
        return perSecond(BUNDLES, elapsedMs(t0));
      } finally {
        store.close();
      }
    };
    const verifyRates = [];
    const ingestRates = [];
    for (let r = 0; r < ROUNDS; r++) {
      verifyRates.push(verifyOnly());
      ingestRates.push(await ingest());
    }
    const verifyRate = median(verifyRates);
    const ingestRate = median(ingestRates);
    const ingestPaired = paired(ingestRates, verifyRates);
    rows.push(
      { name: `verifyBundle alone, in-process (reference; ${sample})`, value: round(verifyRate, 0), unit: 'bundles/s' },
      {
        name: `coordinator ingest in-process: digest + verifyBundle + SQLite putBundle (${sample})`,
        value: round(ingestRate, 0),
        unit: 'bundles/s',
        ratio: ingestPaired.ratio,
        reference: `verifyBundle alone (${ingestPaired.range}); ${goal(ingestPaired.ratio >= 0.7, '>= 0.7x')}`,
      },
    );

    // 3 and 4. A real coordinator and a real agent.
    const agentState = newState('agent-state', 'bench-agent', keys.agent);
    const coordinator = await startCoordinator(dist, join(dir, 'coordinator-agent'), {
      trustBytes,
      witnessKey: keys.witness,
    });
    cleanups.push(() => coordinator.stop());
    const configFile = join(dir, 'agent.json');
    writeFileSync(configFile, JSON.stringify({ coordinator: { pollWaitSeconds: 30 } }));
    const agent = startAgent(dist, { stateDir: agentState, configFile, url: coordinator.url, home: dir });
    cleanups.push(() => agent.stop());
    const bare = startBareNode();
    cleanups.push(() => bare.stop());
    const fleetEntry = async () => (await coordinator.operator('GET', '/v1/runners')).json?.runners?.find((r) => r.id === 'bench-agent');
    await until('the agent to report its status', async () => (await fleetEntry())?.statusAt, 30_000, 100).catch((err) => {
      throw new Error(`${err.message}: ${agent.stderrTail()}`);
    });
    // Its status is in; the long poll follows at once. Both processes are read after the same settling time.
    await sleep(2000);
    const agentIdle = await settledRss(agent.pid);
    const bareRss = await settledRss(bare.pid);
    const agentAnon = anonymousOf(agent.pid);
    const bareAnon = anonymousOf(bare.pid);

    const db = new DatabaseSync(join(agentState, 'runner.db'), { readOnly: true });
    cleanups.push(() => db.close());
    const startedOf = db.prepare(
      "SELECT r.at, r.leaf FROM records_v1 r JOIN runs_v1 u ON u.run_id = r.run_id WHERE r.kind = 'run.started' AND u.capsule_id = ?",
    );
    const settledOf = db.prepare(
      "SELECT (SELECT COUNT(*) FROM outbox_v1 WHERE state = 'queued') AS queued, (SELECT COUNT(*) FROM runs_v1 WHERE status = 'running') AS running",
    );
    const latencies = [];
    const isolations = new Set();
    for (let i = 0; i <= PUBLISHES; i++) {
      const id = `bench-latency-${i}`;
      const bytes = capsule('bench-agent', id);
      const t0 = Date.now();
      const published = await coordinator.operator('POST', '/v1/capsules', bytes);
      if (published.status !== 201) throw new Error(`bench link: publishing answered ${published.status} ${published.text}`);
      const started = await until(`run.started of ${id}`, () => startedOf.get(id), 30_000, 5).catch((err) => {
        throw new Error(`${err.message}: ${agent.stderrTail()}`);
      });
      // The first publish is a warm-up: the sandbox is probed (bwrap tried) when the first capsule is run.
      if (i > 0) latencies.push(Date.parse(started.at) - t0);
      isolations.add(JSON.parse(Buffer.from(started.leaf).toString('utf8')).isolation);
      // Idle again: the run ended and its bundle was acked; then time for the witness, the status report
      // and the next long poll to be sent (all loopback, well under this).
      await until(`${id} to be run and shipped`, () => {
        const s = settledOf.get();
        return s.queued === 0 && s.running === 0;
      });
      await sleep(1000);
    }
    const agentAfter = await settledRss(agent.pid);
    const latencyMedian = median(latencies);
    const latencyP90 = percentile(latencies, 90);
    const isolation = [...isolations].join(', ');
    rows.push(
      {
        name: `publish to run.started, median over ${PUBLISHES} publishes (agent idle in its long poll; isolation ${isolation}; loopback)`,
        value: latencyMedian,
        unit: 'ms',
        reference: goal(latencyMedian <= 50, 'median <= 50 ms'),
      },
      { name: `publish to run.started, p90 over ${PUBLISHES} publishes`, value: latencyP90, unit: 'ms' },
      { name: 'bare node -e "setInterval(()=>{},1000)" RSS (reference)', value: round(bareRss / MIB, 1), unit: 'MiB' },
      {
        name: 'agent idle RSS: started, status reported, in its long poll, no capsule run yet',
        value: round(agentIdle / MIB, 1),
        unit: 'MiB',
        ratio: round(agentIdle / bareRss),
        reference: `bare node; ${goal(agentIdle <= 80 * MIB, '<= 80 MiB')}`,
      },
      {
        name: 'agent idle, its anonymous memory only (smaps_rollup; VmRSS less the shared node binary and library pages)',
        value: round(agentAnon / MIB, 1),
        unit: 'MiB',
        ratio: round(agentAnon / bareAnon),
        reference: `bare node's (${round(bareAnon / MIB, 1)} MiB; no goal)`,
      },
      {
        name: `agent idle RSS after ${PUBLISHES + 1} runs`,
        value: round(agentAfter / MIB, 1),
        unit: 'MiB',
        ratio: round(agentAfter / bareRss),
        reference: `bare node; ${goal(agentAfter <= 80 * MIB, '<= 80 MiB')}`,
      },
    );
    await agent.stop();
    await bare.stop();
    await coordinator.stop();

    // 5. The coordinator's memory per idle long poll: POLLS runners enrolled, one signed wait=60 poll each.
    const sims = Array.from({ length: POLLS }, (_, i) => ({ id: `sim-${String(i + 1).padStart(4, '0')}`, key: PrivateKey.generate() }));
    const bigTrust = await signedTrust(dist, [
      { name: 'root-1', key: keys.root, roles: ['root'] },
      { name: 'witness.bench.local', key: keys.witness, roles: ['witness'] },
      ...sims.map(({ id, key }) => ({ name: id, key, roles: ['runner'] })),
    ]);
    const fleet = await startCoordinator(dist, join(dir, 'coordinator-polls'), {
      trustBytes: bigTrust,
      witnessKey: keys.witness,
    });
    cleanups.push(() => fleet.stop());
    const pollUrl = (id, wait) => `${fleet.url}/v1/runners/${id}/work?after=0&wait=${wait}`;
    const httpAgent = new HttpAgent({ keepAlive: false, maxSockets: Infinity });
    cleanups.push(() => httpAgent.destroy());
    const signedGet = async (sim, wait, onAnswer, onError) => {
      const url = pollUrl(sim.id, wait);
      const headers = await signRequest({ method: 'GET', url }, sim.key, { now: new Date() });
      const req = httpRequest(url, { headers, agent: httpAgent }, (res) => {
        onAnswer(res.statusCode);
        res.resume();
      });
      req.on('error', onError);
      req.end();
      return req;
    };
    const answerOf = (sim, wait) => new Promise((resolve, reject) => signedGet(sim, wait, resolve, reject));
    // A warm coordinator: the signature check and the SQLite statements a poll takes have run.
    for (let i = 0; i < 20; i++) if ((await answerOf(sims[i], 0)) !== 204) throw new Error('bench link: a warm-up poll was not answered 204');
    await sleep(500);
    const before = await settledRss(fleet.pid);
    const answered = [];
    let failed = 0;
    const requests = [];
    for (const sim of sims)
      requests.push(
        await signedGet(
          sim,
          60,
          (status) => answered.push(status),
          () => (failed += 1),
        ),
      );
    cleanups.push(() => requests.forEach((req) => req.on('error', () => {}).destroy()));
    // A last, immediate poll on a connection opened after all of them: once it is answered, the
    // coordinator has read the ones before it too (it takes connections in order). Then RSS settles.
    if ((await answerOf(sims[0], 0)) !== 204) throw new Error('bench link: the probe poll was not answered 204');
    await sleep(1000);
    const during = await settledRss(fleet.pid);
    const perPoll = (during - before) / POLLS;
    const allWaiting = answered.length === 0 && failed === 0;
    rows.push({
      name: `coordinator RSS per idle long poll, ${POLLS} runners enrolled, one wait=60 poll each (RSS ${round(before / MIB, 1)} -> ${round(during / MIB, 1)} MiB)`,
      value: round(perPoll / 1024, 1),
      unit: 'KiB',
      reference: allWaiting
        ? goal(perPoll <= 50 * 1024, '<= 50 KiB')
        : `INVALID: ${answered.length} polls answered (${[...new Set(answered)].join(', ')}), ${failed} failed before the reading`,
    });
    return rows;
  } finally {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch {
        // cleaning up what is left: the next cleanup still runs
      }
    }
    await killAll();
    rmSync(dir, { recursive: true, force: true });
  }
}
