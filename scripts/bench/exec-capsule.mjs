// Per-step overhead of the whole `exec` path — record, plan, spawn, capture, record — over a bare spawn of
// /bin/true, with and without bwrap. A capsule of N /bin/true steps and one of a single step run side by
// side; (time(N) - time(1)) / (N - 1) is the cost of one more step, against a bare spawn's median measured
// in the same run.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const STEPS = 40;
const ROUNDS = 5;

const load = (dist, path) => import(pathToFileURL(resolve(dist, path)).href);

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function bareSpawn() {
  return new Promise((done, fail) => {
    const child = spawn('/bin/true', [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.on('error', fail);
    child.on('close', () => done());
  });
}

export async function run({ dist = 'dist' } = {}) {
  const { PrivateKey } = await load(dist, 'runner/core/ed25519.js');
  const { signEnvelope } = await load(dist, 'runner/core/dsse.js');
  const { packCapsule } = await load(dist, 'runner/capsule/pack.js');
  const { initState } = await load(dist, 'runner/state/state.js');
  const { withRunner } = await load(dist, 'runner/agent/runner.js');
  const { runCapsule } = await load(dist, 'runner/agent/run-capsule.js');
  const { Store } = await load(dist, 'runner/store/store.js');
  const { sandboxLauncherSelector } = await load(dist, 'runner/agent/launcher.js');
  const { probeIsolation } = await load(dist, 'runner/exec/sandbox.js');

  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-bench-exec-'));
  try {
    const root = PrivateKey.generate();
    const signer = PrivateKey.generate();
    const runner = PrivateKey.generate();
    const body = {
      apiVersion: 'edge-runner.dev/trust/v1',
      version: 1,
      expires: new Date(Date.now() + 86400_000).toISOString().replace(/\.\d+Z$/, 'Z'),
      keys: {
        [root.keyid]: { publicKey: root.publicKey.toPem(), name: 'root', roles: ['root'] },
        [signer.keyid]: { publicKey: signer.publicKey.toPem(), name: 'signer', roles: ['capsule-signer'] },
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
      labels: [],
      trustBytes,
      now: new Date(),
      key: runner,
      createDatabase: (path) => Store.open(path, { create: true }).close(),
    });

    const capsule = (steps, isolation) =>
      Buffer.from(
        JSON.stringify(
          packCapsule(
            {
              apiVersion: 'edge-runner.dev/capsule/v1',
              kind: 'validate',
              id: `bench-${randomBytes(4).toString('hex')}`,
              issuedAt: new Date(Date.now() - 1000).toISOString(),
              notBefore: new Date(Date.now() - 1000).toISOString(),
              expiresAt: new Date(Date.now() + 3600_000).toISOString(),
              nonce: randomBytes(16).toString('hex'),
              isolation,
              target: { runners: ['bench'] },
              steps: Array.from({ length: steps }, (_, i) => ({ name: `s${i}`, run: ['/bin/true'] })),
              inputs: [],
              collect: [],
            },
            new Map(),
            [signer],
          ),
        ),
      );

    const probe = probeIsolation();
    const modes = [['none', sandboxLauncherSelector({ bwrapPath: '/nonexistent/bwrap' })]];
    if (probe.available === 'bwrap') modes.push(['bwrap', sandboxLauncherSelector()]);

    const timeExec = async (bytes, selectLauncher) => {
      const t0 = process.hrtime.bigint();
      // As `edge-runner exec` does it: a runner context opened, one capsule, the context closed.
      const result = await withRunner(stateDir, { launcher: selectLauncher }, (ctx) => runCapsule(ctx, bytes));
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (result.kind !== 'completed' || result.verdict !== 'pass') throw new Error(`bench capsule ${result.kind} ${result.code ?? result.verdict}`);
      return ms;
    };

    const rows = [];
    const bare = [];
    const perStep = Object.fromEntries(modes.map(([m]) => [m, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < STEPS; i++) {
        const t0 = process.hrtime.bigint();
        await bareSpawn();
        bare.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      for (const [mode, select] of modes) {
        const one = await timeExec(capsule(1, 'best-effort'), select);
        const many = await timeExec(capsule(STEPS, 'best-effort'), select);
        perStep[mode].push((many - one) / (STEPS - 1));
      }
    }
    const bareMs = median(bare);
    rows.push({ name: 'bare spawn of /bin/true (reference)', value: Number(bareMs.toFixed(3)), unit: 'ms' });
    for (const [mode] of modes) {
      const stepMs = median(perStep[mode]);
      rows.push({
        name: `exec: one more /bin/true step, isolation ${mode}`,
        value: Number(stepMs.toFixed(3)),
        unit: 'ms',
        reference: 'bare spawn',
        ratio: Number((stepMs / bareMs).toFixed(2)),
      });
      rows.push({ name: `exec: per-step overhead over a bare spawn, isolation ${mode}`, value: Number((stepMs - bareMs).toFixed(3)), unit: 'ms' });
    }
    if (probe.available !== 'bwrap') rows.push({ name: `bwrap not measured: ${probe.reason ?? 'unavailable'}`, value: 0, unit: '-' });
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
