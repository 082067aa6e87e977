/**
 * Local execution (issue 2, point 3) with real child processes, through a runner context and runCapsule: read-only inputs,
 * argv without a shell, an environment built from the allowlist, process-group timeouts, output caps,
 * stop-at-first-failure, and collection (digests, JUnit summaries, malformed, missing, symlink escapes).
 *
 * Most cases use the tests' direct launcher (the runner's own identity, host pids visible). The cases about
 * what a step may touch or see also run with the production launcher (`selectLauncher`: bwrap, and an
 * unprivileged user when the runner is root), because a root runner on the direct launcher ignores file modes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sandboxLauncherSelector, type LauncherSelector } from '../../runner/agent/launcher.js';
import type { CapsuleOutcome } from '../../runner/agent/run-capsule.js';
import type { RunnerConfig } from '../../runner/config/config.js';
import { execInState } from '../helpers/runner.js';
import type { ManifestTemplate } from '../../runner/capsule/pack.js';
import type { EvidencePredicate, StepRecord } from '../../runner/evidence/statement.js';
import { runCli } from '../helpers/cli.js';
import { makeWorld, type World } from '../helpers/world.js';

type Completed = Extract<CapsuleOutcome, { kind: 'completed' }>;

const selectLauncher = sandboxLauncherSelector();

const sha256Ref = (data: string | Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

let world: World;

beforeAll(() => {
  world = makeWorld();
});

afterAll(() => {
  world.cleanup();
});

interface RunOptions {
  files?: Record<string, string>;
  config?: Partial<RunnerConfig['exec']>;
  selectLauncher?: LauncherSelector;
}

async function run(patch: Partial<ManifestTemplate>, options: RunOptions = {}): Promise<Completed> {
  const capsule = world.capsule(patch, options.files ?? {});
  const result = await execInState(world.stateDir, Buffer.from(JSON.stringify(capsule)), {
    flags: { exec: { keepWorkspace: true, killGraceMs: 300, ...options.config } },
    ...(options.selectLauncher ? { launcher: options.selectLauncher } : {}),
  });
  if (result.kind === 'rejected') throw new Error(`the capsule was rejected: ${result.code}: ${result.message}`);
  if (result.kind !== 'completed') throw new Error(`the capsule was not run now: ${result.kind}`);
  return result;
}

const workspaceOf = (result: Completed) => join(world.stateDir, 'runs', result.runId, 'workspace');
const blobPath = (digest: string) => join(world.stateDir, 'evidence', 'blobs', digest.replace(':', '-'));
const blobOf = (digest: string) => readFileSync(blobPath(digest));

function predicateOf(result: Completed): EvidencePredicate {
  return (JSON.parse(Buffer.from(result.bundle.evidence.payload, 'base64').toString('utf8')) as { predicate: EvidencePredicate }).predicate;
}

function stepNamed(result: Completed, name: string): StepRecord {
  const step = result.steps.find((s) => s.name === name);
  if (!step) throw new Error(`no step ${name}`);
  return step;
}

function stdoutOf(step: StepRecord): string {
  if (!step.stdout) throw new Error(`step ${step.name} has no stdout record`);
  return blobOf(step.stdout.digest).toString('utf8');
}

/** Alive and not a zombie (PID 1 in a container may never reap the orphan). */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function waitUntilGone(pid: number, timeoutMs: number): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline;) {
    if (!isRunning(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return !isRunning(pid);
}

const launchers: Array<[string, LauncherSelector | undefined]> = [
  ['the production launcher', selectLauncher],
  ['the direct launcher', undefined],
];

describe('executing an accepted capsule', () => {
  describe('when a step tries to append to an input', () => {
    it('fails, and the input keeps its signed bytes and a read-only mode', async () => {
      const result = await run(
        { steps: [{ name: 'append', run: ['/bin/sh', '-c', 'echo tampered >> data/input.txt'] }] },
        { files: { 'data/input.txt': 'signed bytes\n' }, selectLauncher },
      );
      expect(stepNamed(result, 'append').status).toBe('failed');
      const input = join(workspaceOf(result), 'data', 'input.txt');
      expect(readFileSync(input, 'utf8')).toBe('signed bytes\n');
      expect(statSync(input).mode & 0o777).toBe(0o444);
    });

    it('writes inputs marked executable with mode 0555', async () => {
      const result = await run(
        { inputs: [{ path: 'bin/check.sh', executable: true }, { path: 'plain.txt' }], steps: [{ name: 'check', run: ['./bin/check.sh'] }] },
        { files: { 'bin/check.sh': '#!/bin/sh\necho checked\n', 'plain.txt': 'x' } },
      );
      expect(statSync(join(workspaceOf(result), 'bin', 'check.sh')).mode & 0o777).toBe(0o555);
      expect(statSync(join(workspaceOf(result), 'plain.txt')).mode & 0o777).toBe(0o444);
      expect(stdoutOf(stepNamed(result, 'check'))).toBe('checked\n');
    });
  });

  describe.each(launchers)('when argv holds shell syntax, with %s', (_name, launcher) => {
    it('passes it to the program literally and no shell interprets it', async () => {
      const result = await run(
        { steps: [{ name: 'echo', run: ['/bin/echo', '$HOME; touch x'] }] },
        { ...(launcher ? { selectLauncher: launcher } : {}) },
      );
      const step = stepNamed(result, 'echo');
      expect(step.status).toBe('succeeded');
      expect(stdoutOf(step)).toBe('$HOME; touch x\n');
      expect(existsSync(join(workspaceOf(result), 'x'))).toBe(false);
    });
  });

  describe.each(launchers)("when the runner's environment holds a secret, with %s", (_name, launcher) => {
    const secret = `canary-${randomBytes(16).toString('hex')}`;

    afterEach(() => {
      delete process.env.EDGE_TEST_SECRET;
    });

    it("gives the step only the allowlist and the capsule's own env", async () => {
      process.env.EDGE_TEST_SECRET = secret;
      const result = await run(
        { steps: [{ name: 'env', run: ['/usr/bin/env'], env: { CAPSULE_VAR: 'from-the-capsule' } }] },
        { ...(launcher ? { selectLauncher: launcher } : {}) },
      );
      const output = stdoutOf(stepNamed(result, 'env'));
      expect(output).not.toContain(secret);
      expect(output).not.toContain('EDGE_TEST_SECRET');
      expect(output).toContain('CAPSULE_VAR=from-the-capsule\n');
      const vars = new Map(
        output
          .split('\n')
          .filter((line) => line.length > 0)
          .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)] as const),
      );
      // bwrap's --chdir sets PWD; allowed only as the workspace path, a value the runner chose.
      if (vars.has('PWD')) {
        expect(vars.get('PWD')).toBe(workspaceOf(result));
        vars.delete('PWD');
      }
      expect([...vars.keys()].sort()).toEqual(['CAPSULE_VAR', 'EDGE_RUNNER_WORKSPACE', 'HOME', 'LANG', 'LC_ALL', 'PATH', 'TMPDIR', 'TZ']);
    });
  });

  describe('when the CLI runs with a secret in its environment', () => {
    it('keeps the secret from the step and from the bundle', () => {
      const secret = `canary-${randomBytes(16).toString('hex')}`;
      const file = world.writeCapsule(world.capsule({ steps: [{ name: 'env', run: ['/usr/bin/env'], env: { CAPSULE_VAR: 'from-the-capsule' } }] }));
      const out = join(world.dir, `env-${randomBytes(4).toString('hex')}.bundle.json`);
      const result = runCli(['exec', file, '--state', world.stateDir, '--out', out], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', EDGE_TEST_SECRET: secret },
      });
      expect(result.status, result.stderr).toBe(0);
      const bundleText = readFileSync(out, 'utf8');
      expect(bundleText).not.toContain(secret);
      const bundle = JSON.parse(bundleText) as { evidence: { payload: string } };
      const { predicate } = JSON.parse(Buffer.from(bundle.evidence.payload, 'base64').toString('utf8')) as { predicate: EvidencePredicate };
      const output = blobOf(predicate.steps[0]!.stdout!.digest).toString('utf8');
      expect(output).not.toContain(secret);
      expect(output).toContain('CAPSULE_VAR=from-the-capsule\n');
    });
  });

  describe('when a step outlives its timeout', () => {
    it('ends as timed-out and its whole process group is gone, background children included', async () => {
      const result = await run({ steps: [{ name: 'hang', run: ['/bin/sh', '-c', 'sleep 300 & echo $! > pid; sleep 300'], timeoutSeconds: 1 }] });
      const step = stepNamed(result, 'hang');
      expect(step.status).toBe('timed-out');
      expect(step.timedOut).toBe(true);
      expect(step.signal).toBe('SIGTERM');
      expect(step.durationMs).toBeLessThan(10_000);
      const pid = Number(readFileSync(join(workspaceOf(result), 'pid'), 'utf8').trim());
      expect(pid).toBeGreaterThan(1);
      expect(await waitUntilGone(pid, 3000)).toBe(true);
      expect(result.verdict).toBe('fail');
    });

    it('sends SIGKILL after the grace period to a group that ignores SIGTERM', async () => {
      const result = await run(
        { steps: [{ name: 'stubborn', run: ['/bin/sh', '-c', 'trap "" TERM; sleep 300 & echo $! > pid; sleep 300'], timeoutSeconds: 1 }] },
        { config: { killGraceMs: 500 } },
      );
      const step = stepNamed(result, 'stubborn');
      expect(step.status).toBe('timed-out');
      expect(step.signal).toBe('SIGKILL');
      expect(step.durationMs).toBeGreaterThanOrEqual(1450);
      const pid = Number(readFileSync(join(workspaceOf(result), 'pid'), 'utf8').trim());
      expect(await waitUntilGone(pid, 3000)).toBe(true);
    });
  });

  describe.each(launchers)('when a step that leaves a background child times out, with %s', (_name, launcher) => {
    it('leaves no process of the step running on the host', async () => {
      // A unique sleep length names the step's processes in the host's /proc, whatever pid namespace they had.
      const seconds = String(3000 + Math.floor(Math.random() * 6000));
      const result = await run(
        { steps: [{ name: 'hang', run: ['/bin/sh', '-c', `sleep ${seconds} & sleep ${seconds}`], timeoutSeconds: 1 }] },
        { ...(launcher ? { selectLauncher: launcher } : {}) },
      );
      expect(stepNamed(result, 'hang').status).toBe('timed-out');
      const survivors = (): number[] =>
        readdirSync('/proc')
          .filter((name) => /^\d+$/.test(name))
          .map(Number)
          .filter((pid) => {
            try {
              return readFileSync(`/proc/${pid}/cmdline`, 'utf8') === `sleep\0${seconds}\0` && isRunning(pid);
            } catch {
              return false;
            }
          });
      for (let i = 0; i < 60 && survivors().length > 0; i++) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(survivors()).toEqual([]);
    });
  });

  describe('when a step prints more than the output cap', () => {
    it('keeps cap bytes of stdout and records truncated, size and totalSize', async () => {
      const result = await run(
        { steps: [{ name: 'loud', run: ['/bin/sh', '-c', 'head -c 5000 /dev/zero | tr "\\000" a'] }] },
        { config: { outputCapBytes: 1000 } },
      );
      const { stdout } = stepNamed(result, 'loud');
      expect(stdout).toEqual({ digest: sha256Ref('a'.repeat(1000)), size: 1000, totalSize: 5000, truncated: true });
      expect(blobOf(stdout!.digest).length).toBe(1000);
    });

    it('caps stderr the same way', async () => {
      const result = await run(
        { steps: [{ name: 'loud', run: ['/bin/sh', '-c', 'head -c 3000 /dev/zero | tr "\\000" e >&2'] }] },
        { config: { outputCapBytes: 1000 } },
      );
      expect(stepNamed(result, 'loud').stderr).toMatchObject({ size: 1000, totalSize: 3000, truncated: true });
    });

    it('does not mark output of exactly the cap as truncated', async () => {
      const result = await run(
        { steps: [{ name: 'exact', run: ['/bin/sh', '-c', 'head -c 1000 /dev/zero | tr "\\000" a'] }] },
        { config: { outputCapBytes: 1000 } },
      );
      expect(stepNamed(result, 'exact').stdout).toMatchObject({ size: 1000, totalSize: 1000, truncated: false });
    });
  });

  describe('when a step fails', () => {
    it('skips the steps after it', async () => {
      const result = await run({
        steps: [
          { name: 'fails', run: ['/bin/false'] },
          { name: 'after', run: ['/bin/echo', 'after'] },
        ],
      });
      expect(result.steps.map((s) => [s.name, s.status])).toEqual([
        ['fails', 'failed'],
        ['after', 'skipped'],
      ]);
      expect(result.verdict).toBe('fail');
    });

    it('runs the next step when the failing step says continueOnFailure', async () => {
      const result = await run({
        steps: [
          { name: 'fails', run: ['/bin/false'], continueOnFailure: true },
          { name: 'after', run: ['/bin/echo', 'after'] },
        ],
      });
      expect(result.steps.map((s) => [s.name, s.status])).toEqual([
        ['fails', 'failed'],
        ['after', 'succeeded'],
      ]);
      expect(stdoutOf(stepNamed(result, 'after'))).toBe('after\n');
    });

    it('records a program that does not exist as spawn-failed, skips the rest, and gives verdict error', async () => {
      const result = await run({
        steps: [
          { name: 'missing', run: ['/nonexistent/program'] },
          { name: 'after', run: ['/bin/true'] },
        ],
      });
      expect(result.steps.map((s) => [s.name, s.status])).toEqual([
        ['missing', 'spawn-failed'],
        ['after', 'skipped'],
      ]);
      expect(result.verdict).toBe('error');
    });
  });

  describe('when files are collected', () => {
    it('digests a file into the evidence store and names it as a subject', async () => {
      const result = await run({
        steps: [{ name: 'write', run: ['/bin/sh', '-c', 'mkdir -p out && printf "collected bytes" > out/result.txt'] }],
        collect: [{ path: 'out/result.txt', as: 'file' }],
      });
      const [artifact] = predicateOf(result).artifacts;
      expect(artifact).toEqual({ path: 'out/result.txt', as: 'file', status: 'collected', digest: sha256Ref('collected bytes'), size: 15 });
      expect(blobOf(artifact!.digest!).toString()).toBe('collected bytes');
      const statement = JSON.parse(Buffer.from(result.bundle.evidence.payload, 'base64').toString('utf8')) as {
        subject: Array<{ name: string; digest: { sha256: string } }>;
      };
      expect(statement.subject).toContainEqual({ name: 'artifact/out/result.txt', digest: { sha256: artifact!.digest!.slice('sha256:'.length) } });
      expect(result.verdict).toBe('pass');
    });

    it('summarises a JUnit report to counts', async () => {
      const report = `<?xml version="1.0"?><testsuites><testsuite name="s">
        <testcase name="ok"/><testcase name="bad"><failure/></testcase><testcase name="broken"><error/></testcase><testcase name="later"><skipped/></testcase>
      </testsuite></testsuites>`;
      const result = await run(
        {
          steps: [{ name: 'suite', run: ['/bin/cp', 'report.xml', 'junit.xml'] }],
          collect: [{ path: 'junit.xml', as: 'junit' }],
        },
        { files: { 'report.xml': report } },
      );
      const [artifact] = predicateOf(result).artifacts;
      expect(artifact).toMatchObject({ status: 'collected', digest: sha256Ref(report) });
      expect(artifact!.summary).toEqual({ format: 'junit', status: 'parsed', tests: 4, failures: 1, errors: 1, skipped: 1 });
      expect(result.verdict).toBe('fail');
    });

    it('records a malformed JUnit report as malformed, with verdict error and no crash', async () => {
      const result = await run(
        { steps: [{ name: 'noop', run: ['/bin/true'] }], collect: [{ path: 'report.xml', as: 'junit' }] },
        { files: { 'report.xml': '<testsuite><testcase>' } },
      );
      const [artifact] = predicateOf(result).artifacts;
      expect(artifact).toMatchObject({ status: 'collected', summary: { format: 'junit', status: 'malformed' } });
      expect(result.verdict).toBe('error');
    });

    it('records a file no step wrote as missing, with verdict error', async () => {
      const result = await run({ steps: [{ name: 'noop', run: ['/bin/true'] }], collect: [{ path: 'never/written.txt', as: 'file' }] });
      expect(predicateOf(result).artifacts).toEqual([{ path: 'never/written.txt', as: 'file', status: 'missing' }]);
      expect(result.verdict).toBe('error');
    });

    it('records a path through a directory symlink a step made as escaped', async () => {
      const result = await run({
        steps: [{ name: 'link', run: ['/bin/ln', '-s', '/etc', 'collected'] }],
        collect: [{ path: 'collected/hostname', as: 'file' }],
      });
      expect(predicateOf(result).artifacts).toEqual([{ path: 'collected/hostname', as: 'file', status: 'escaped' }]);
      expect(result.verdict).toBe('error');
    });

    it('never reads the file behind a symlink: no blob of its bytes appears', async () => {
      const outside = join(world.dir, `outside-${randomBytes(4).toString('hex')}`);
      mkdirSync(outside);
      const secret = `outside-secret-${randomBytes(16).toString('hex')}`;
      writeFileSync(join(outside, 'secret.txt'), secret);
      const blobsBefore = new Set(readdirSync(join(world.stateDir, 'evidence', 'blobs')));
      const result = await run({
        steps: [{ name: 'link', run: ['/bin/sh', '-c', `ln -s ${outside} dir && ln -s ${outside}/secret.txt file`] }],
        collect: [
          { path: 'dir/secret.txt', as: 'file' },
          { path: 'file', as: 'file' },
        ],
      });
      expect(predicateOf(result).artifacts.map((a) => a.status)).toEqual(['escaped', 'escaped']);
      expect(existsSync(blobPath(sha256Ref(secret)))).toBe(false);
      const added = readdirSync(join(world.stateDir, 'evidence', 'blobs')).filter((name) => !blobsBefore.has(name));
      for (const name of added) expect(readFileSync(join(world.stateDir, 'evidence', 'blobs', name), 'utf8')).not.toContain(secret);
    });
  });
});
