// Per-step launch overhead: a bare child_process.spawn of /bin/true against the same command launched
// through planLaunch (isolation none, and bwrap when it works here). The subjects run interleaved, one
// iteration of each in turn, so they see the same machine load; medians are reported.
//
//   node scripts/bench/exec.mjs [dist] [iterations]     (dist defaults to ./dist; build with npm run build)
//
// To measure something else (the full exec path, say), add a subject to `subjects`: a name and an async
// `launch()` that resolves once the step has ended. The first subject is the reference for the ratios.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const DEFAULT_ITERATIONS = 200;
const WARMUP_ITERATIONS = 10;

/** Resolves when the process has exited; rejects on a spawn error or a non-zero exit. */
function launch(file, args, options = {}, started = () => {}) {
  return new Promise((done, fail) => {
    const child = spawn(file, args, { stdio: 'ignore', ...options });
    started(child);
    child.on('error', fail);
    child.on('exit', (code, signal) => (code === 0 ? done() : fail(new Error(`${file} ended with ${code ?? signal}`))));
  });
}

function launchPlan(sandbox, plan) {
  const stdio = sandbox.toSpawnStdio(plan).map((entry, fd) => (fd > 0 && fd < 3 ? 'ignore' : entry));
  return launch(
    plan.file,
    plan.args,
    {
      cwd: plan.cwd,
      env: plan.env,
      stdio, // the sandbox's own fds (the seccomp program) as the runner gives them
      detached: true, // as the runner spawns steps: own process group
      ...(plan.uid !== undefined ? { uid: plan.uid } : {}),
      ...(plan.gid !== undefined ? { gid: plan.gid } : {}),
    },
    (child) => sandbox.startLaunch(plan, child),
  );
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

const round = (value, digits = 3) => Number(value.toFixed(digits));

export async function run({ dist = 'dist', iterations = DEFAULT_ITERATIONS } = {}) {
  const sandbox = await import(pathToFileURL(resolve(dist, 'runner/exec/sandbox.js')).href);
  const root = mkdtempSync(join(tmpdir(), 'edge-runner-bench-'));
  try {
    const workspace = join(root, 'workspace');
    mkdirSync(workspace);
    sandbox.grantWorkspaceToStep(workspace);
    const request = (mode) => ({
      argv: ['/bin/true'],
      env: { PATH: '/usr/bin:/bin' },
      workspace,
      limits: { ...sandbox.DEFAULT_STEP_LIMITS },
      mode,
      hide: [root],
    });

    const probe = sandbox.probeIsolation();
    const subjects = [
      { name: 'bare spawn /bin/true', launch: () => launch('/bin/true', []) },
      { name: 'planLaunch none /bin/true', launch: () => launchPlan(sandbox, sandbox.planLaunch(request('none'))) },
    ];
    if (probe.available === 'bwrap') {
      subjects.push({ name: 'planLaunch bwrap /bin/true', launch: () => launchPlan(sandbox, sandbox.planLaunch(request('bwrap'))) });
    }

    const samples = subjects.map(() => []);
    for (let i = 0; i < WARMUP_ITERATIONS + iterations; i++) {
      for (const [index, subject] of subjects.entries()) {
        const started = process.hrtime.bigint();
        await subject.launch();
        if (i >= WARMUP_ITERATIONS) samples[index].push(Number(process.hrtime.bigint() - started) / 1e6);
      }
    }

    const reference = median(samples[0]);
    const rows = [];
    for (const [index, subject] of subjects.entries()) {
      const value = median(samples[index]);
      rows.push({ name: `${subject.name}, median`, value: round(value), unit: 'ms' });
      if (index === 0) continue;
      rows.push({
        name: `${subject.name}, overhead over bare spawn`,
        value: round(value - reference),
        unit: 'ms',
        reference: subjects[0].name,
        ratio: round(value / reference, 2),
      });
    }
    if (probe.available !== 'bwrap') rows.push({ name: `bwrap not measured: ${probe.reason ?? 'unavailable'}`, value: 0, unit: 'n/a' });
    return rows;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [dist, iterations] = process.argv.slice(2);
  run({ dist: dist ?? 'dist', iterations: iterations ? Number(iterations) : DEFAULT_ITERATIONS }).then(
    (rows) => console.table(rows),
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
