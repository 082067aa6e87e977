/**
 * The step sandbox, with real child processes: each plan from planLaunch is spawned the way the runner
 * spawns it (detached, its own process group, SIGTERM then SIGKILL to the group on timeout).
 *
 * bwrap comes from scripts/system-deps.sh. Under CI a missing or unusable bwrap fails these tests; locally
 * the bwrap cases are skipped with a message.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  classifyLimitExit,
  DEFAULT_STEP_LIMITS,
  endLaunch,
  grantWorkspaceToStep,
  planLaunch,
  probeIsolation,
  selectIsolation,
  startLaunch,
  toSpawnStdio,
  type IsolationMode,
  type LaunchPlan,
  type StepEnd,
  type StepLimits,
  toSignalFromExitCode,
} from '../../runner/exec/sandbox.js';
import { SandboxError } from '../../runner/exec/sandbox-errors.js';

const probe = probeIsolation();
const bwrapUsable = probe.available === 'bwrap';
const bwrapRequired = Boolean(process.env.CI);
if (!bwrapUsable && !bwrapRequired) {
  console.warn(`sandbox tests: skipping the bwrap cases (${probe.reason ?? 'unknown'}); run scripts/system-deps.sh`);
}
const bwrapModes: IsolationMode[] = bwrapUsable || bwrapRequired ? ['bwrap'] : [];
/**
 * A node for the steps that need one (a memory hog, a CPU spinner). A bwrap step sees only the system folders
 * (/usr, /bin, /lib*, /etc...), so the runner's own node is only usable when it lives there; else the host's
 * node in /usr/bin will do: the step's program is not the runner's runtime.
 */
const VISIBLE_IN_SANDBOX = ['/usr/', '/bin/', '/sbin/', '/lib/', '/lib64/', '/etc/'];
const NODE = [process.execPath, '/usr/bin/node', '/usr/local/bin/node'].find(
  (path) => existsSync(path) && VISIBLE_IN_SANDBOX.some((shown) => realpathSync(path).startsWith(shown)),
);
const STDERR_TAIL_BYTES = 4096;
const OUTPUT_CAP_BYTES = 64 * 1024;

interface Finished extends StepEnd {
  stdout: string;
  stderr: string;
}

/** A fake runner layout: <root>/state/{secret, runs/<id>/workspace}, state readable by anyone on purpose. */
let root: string;
let stateDir: string;
let secretFile: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'edge-runner-sandbox-'));
  chmodSync(root, 0o755);
  stateDir = join(root, 'state');
  mkdirSync(stateDir, { mode: 0o755 });
  secretFile = join(stateDir, 'runner-key.pem');
  // World-readable, so that only the sandbox, not file permissions, keeps it from the step.
  writeFileSync(secretFile, 'SECRET-KEY-MATERIAL\n', { mode: 0o644 });
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

function newWorkspace(): string {
  const workspace = join(stateDir, 'runs', randomUUID(), 'workspace');
  mkdirSync(workspace, { recursive: true, mode: 0o755 });
  grantWorkspaceToStep(workspace);
  return workspace;
}

function planStep(mode: IsolationMode, argv: string[], limits: Partial<StepLimits> = {}): LaunchPlan {
  return planLaunch({
    argv,
    env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
    workspace: newWorkspace(),
    limits: { ...DEFAULT_STEP_LIMITS, ...limits },
    mode,
    hide: [stateDir],
  });
}

/** Spawns a plan like the runner does; every wait is bounded by timeoutMs plus a one-second kill grace. */
function runPlan(plan: LaunchPlan, timeoutMs = 10_000): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(plan.file, plan.args, {
      cwd: plan.cwd,
      env: plan.env,
      detached: true,
      stdio: toSpawnStdio(plan),
      ...(plan.uid !== undefined ? { uid: plan.uid } : {}),
      ...(plan.gid !== undefined ? { gid: plan.gid } : {}),
    });
    const out = { stdout: '', stderr: '' };
    const keep = (key: 'stdout' | 'stderr') => (chunk: Buffer) => {
      out[key] = (out[key] + chunk.toString('utf8')).slice(-OUTPUT_CAP_BYTES);
    };
    child.stdout!.on('data', keep('stdout'));
    child.stderr!.on('data', keep('stderr'));
    const signalGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        // the group is gone
      }
    };
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const termTimer = setTimeout(() => {
      timedOut = true;
      signalGroup('SIGTERM');
      killTimer = setTimeout(() => signalGroup('SIGKILL'), 1000);
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (exitCode, signal) => {
      clearTimeout(termTimer);
      clearTimeout(killTimer);
      signalGroup('SIGKILL');
      const { oomKills } = endLaunch(plan);
      resolve({
        exitCode,
        signal,
        timedOut,
        stderrTail: out.stderr.slice(-STDERR_TAIL_BYTES),
        ...out,
        ...(oomKills !== undefined ? { oomKills } : {}),
      });
    });
    startLaunch(plan, child);
  });
}

/** Processes whose command line carries the marker, found by scanning /proc. */
function processesMarked(marker: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(marker)) pids.push(Number(name));
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

async function waitUntilNoneMarked(marker: string, withinMs: number): Promise<number[]> {
  const deadline = Date.now() + withinMs;
  let left = processesMarked(marker);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    left = processesMarked(marker);
  }
  return left;
}

/** The event loop still turns promptly and the runner can still start a process. */
async function expectRunnerHealthy(): Promise<void> {
  const before = Date.now();
  await new Promise((r) => setImmediate(r));
  expect(Date.now() - before).toBeLessThan(500);
  expect(spawnSync('/bin/true').status).toBe(0);
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : 0);
    });
  });
}

describe('probeIsolation', () => {
  it.runIf(bwrapRequired)('finds bwrap usable on CI, where scripts/system-deps.sh installed it', () => {
    expect(probe).toEqual({ available: 'bwrap' });
  });

  it('answers from its cache the second time', () => {
    expect(probeIsolation()).toBe(probe);
  });
});

describe('selectIsolation', () => {
  const missing = { available: 'none' as const, reason: 'bwrap is not installed' };

  it('uses bwrap whenever the probe found it usable', () => {
    expect(selectIsolation('required', { available: 'bwrap' })).toBe('bwrap');
    expect(selectIsolation('best-effort', { available: 'bwrap' })).toBe('bwrap');
  });

  it('runs a best-effort capsule without isolation when bwrap is unusable', () => {
    expect(selectIsolation('best-effort', missing)).toBe('none');
  });

  it('refuses a capsule that requires isolation with EXEC_ISOLATION_UNAVAILABLE', () => {
    expect(() => selectIsolation('required', missing)).toThrow(expect.objectContaining({ code: 'EXEC_ISOLATION_UNAVAILABLE' }));
  });
});

describe('planLaunch', () => {
  it('wraps the argv in prlimit with every limit, in both modes', () => {
    const plan = planStep('none', ['/bin/echo', 'hi'], { cpuSeconds: 7, memoryBytes: 1 << 28, openFiles: 64, processes: 32 });
    expect(plan.file).toMatch(/\/prlimit$/);
    expect(plan.args).toEqual(['--cpu=7:9', `--data=${1 << 28}`, '--nofile=64', '--nproc=32', '--core=0', '--', '/bin/echo', 'hi']);
  });

  it('in mode bwrap unshares the network, PID, IPC and UTS namespaces and dies with its parent', () => {
    const plan = planStep('bwrap', ['/bin/true']);
    for (const flag of ['--unshare-net', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--die-with-parent']) {
      expect(plan.args).toContain(flag);
    }
    // Not --new-session: the step stays in the process group the runner signals on timeout.
    expect(plan.args).not.toContain('--new-session');
  });

  it('when the runner is root, drops the step to uid and gid 65534 by default', () => {
    const asRoot = { runnerUid: 0 };
    const workspace = newWorkspace();
    const request = { argv: ['/bin/true'], env: {}, workspace, limits: DEFAULT_STEP_LIMITS, hide: [] };
    expect(planLaunch({ ...request, mode: 'none' }, asRoot)).toMatchObject({ uid: 65534, gid: 65534 });
    expect(planLaunch({ ...request, mode: 'bwrap' }, asRoot).args).toEqual(
      expect.arrayContaining(['--reuid=65534', '--regid=65534', '--no-new-privs']),
    );
    expect(planLaunch({ ...request, mode: 'none' }, { runnerUid: 1000 }).uid).toBeUndefined();
  });

  it('refuses a sandboxed step that sets LD_PRELOAD with EXEC_SANDBOX_ENV_UNSAFE', () => {
    const request = {
      argv: ['/bin/true'],
      env: { LD_PRELOAD: '/x.so' },
      workspace: newWorkspace(),
      limits: DEFAULT_STEP_LIMITS,
      mode: 'bwrap' as const,
    };
    expect(() => planLaunch(request)).toThrow(SandboxError);
    expect(() => planLaunch(request)).toThrow(expect.objectContaining({ code: 'EXEC_SANDBOX_ENV_UNSAFE' }));
  });

  it('refuses an empty argv, a relative workspace and a limit that is not a positive integer', () => {
    const base = { argv: ['/bin/true'], env: {}, workspace: newWorkspace(), limits: DEFAULT_STEP_LIMITS, mode: 'none' as const };
    const invalid = expect.objectContaining({ code: 'EXEC_SANDBOX_REQUEST_INVALID' });
    expect(() => planLaunch({ ...base, argv: [] })).toThrow(invalid);
    expect(() => planLaunch({ ...base, workspace: 'relative/ws' })).toThrow(invalid);
    expect(() => planLaunch({ ...base, limits: { ...DEFAULT_STEP_LIMITS, processes: 0 } })).toThrow(invalid);
  });

  it('refuses to hide a path inside the workspace, which the workspace bind would expose again', () => {
    const workspace = newWorkspace();
    const request = { argv: ['/bin/true'], env: {}, workspace, limits: DEFAULT_STEP_LIMITS, mode: 'bwrap' as const, hide: [workspace] };
    expect(() => planLaunch(request)).toThrow(expect.objectContaining({ code: 'EXEC_SANDBOX_REQUEST_INVALID' }));
  });
});

describe.each(bwrapModes)('a step in mode %s', (mode) => {
  it('runs in its workspace, can write there, and sees a private, writable /tmp', async () => {
    const plan = planStep(mode, ['/bin/sh', '-c', 'pwd && echo made > out.txt && echo t > /tmp/t && cat /tmp/t && id -u']);
    const end = await runPlan(plan);
    expect(end.stderr).toBe('');
    expect(end.exitCode).toBe(0);
    expect(end.stdout.split('\n')).toEqual([plan.cwd, 't', process.getuid?.() === 0 ? '65534' : String(process.getuid?.()), '']);
    expect(readFileSync(join(plan.cwd, 'out.txt'), 'utf8')).toBe('made\n');
  });

  describe('when a server listens on 127.0.0.1 outside the sandbox', () => {
    let server: Server;
    let port: number;
    let connections = 0;

    beforeAll(async () => {
      server = createServer((socket) => {
        connections++;
        socket.destroy();
      });
      port = await listen(server);
    });

    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    it('cannot open a TCP connection to it', async () => {
      const end = await runPlan(planStep(mode, ['/usr/bin/env', 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port} && echo connected`]));
      expect(end.stdout).not.toContain('connected');
      expect(end.exitCode).not.toBe(0);
      expect(connections).toBe(0);
    });

    it('(control) while the same step without isolation does connect', async () => {
      const end = await runPlan(planStep('none', ['/usr/bin/env', 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port} && echo connected`]));
      expect(end.stdout).toBe('connected\n');
      await expect.poll(() => connections).toBe(1);
      connections = 0;
    });
  });

  it('cannot write outside its workspace, even where file permissions would allow it', async () => {
    const outside = join(process.cwd(), 'tmp', `sandbox-outside-${randomUUID()}`);
    mkdirSync(outside, { recursive: true, mode: 0o777 });
    chmodSync(outside, 0o777);
    try {
      const plan = planStep(mode, [
        '/bin/sh',
        '-c',
        `echo x > ${outside}/escape; echo x > ${stateDir}/escape; echo x > /etc/escape; echo x > ../escape; echo done`,
      ]);
      const end = await runPlan(plan);
      expect(end.stdout).toBe('done\n');
      expect(end.stderr).toMatch(/Read-only file system/);
      for (const path of [join(outside, 'escape'), join(stateDir, 'escape'), '/etc/escape', join(plan.cwd, '..', 'escape')]) {
        expect(existsSync(path), path).toBe(false);
      }
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it('cannot read a secret file under the runner state folder, though the file is world-readable', async () => {
    const end = await runPlan(planStep(mode, ['/bin/sh', '-c', `cat ${secretFile}; ls ${stateDir}`]));
    expect(end.stdout).not.toContain('SECRET-KEY-MATERIAL');
    expect(end.stdout).not.toContain('runner-key.pem');
    expect(end.stderr).toContain('No such file or directory');
  });
});

describe.each(['none', ...bwrapModes] as IsolationMode[])('resource limits in mode %s', (mode) => {
  it('stop a fork bomb (fork fails with EAGAIN until the timer ends it), and leave the runner healthy', async () => {
    // A bounded bomb: a binary tree of depth 10 (2,047 shells) against a limit of 48 tasks.
    const marker = `bomb-${randomUUID()}`;
    const bomb = `b() { [ "$1" -lt 10 ] && { b $(( $1 + 1 )) & b $(( $1 + 1 )) & wait; }; }; b 0; true ${marker}`;
    const end = await runPlan(planStep(mode, ['/bin/bash', '-c', bomb, marker], { processes: 48 }), 5000);
    expect(end.stderr).toMatch(/fork: (retry: )?Resource temporarily unavailable/);
    // bash retries a failed fork with a backoff: the runner's timer is what ends it, and that is known.
    expect(classifyLimitExit(end)).toEqual(
      end.timedOut ? { reason: 'timeout', basis: 'timer', known: true } : { reason: 'process-limit', basis: 'stderr', known: false },
    );
    expect(await waitUntilNoneMarked(marker, 3000)).toEqual([]);
    await expectRunnerHealthy();
  });

  it.runIf(NODE !== undefined)('stop a memory hog with reason memory-limit, and leave the runner healthy', async () => {
    const hog = 'const held = []; for (let i = 0; i < 64; i++) held.push(Buffer.alloc(64 << 20, 1)); console.log("survived")';
    const end = await runPlan(planStep(mode, [NODE!, '-e', hog], { memoryBytes: 256 << 20 }));
    expect(end.stdout).not.toContain('survived');
    expect(classifyLimitExit(end)).toEqual({ reason: 'memory-limit', basis: 'stderr', known: false });
    await expectRunnerHealthy();
  });

  it.runIf(NODE !== undefined)('stop a CPU spinner with SIGXCPU, reason cpu-limit', async () => {
    const end = await runPlan(planStep(mode, [NODE!, '-e', 'for (;;) {}'], { cpuSeconds: 1 }));
    // bwrap reports its child's death by a signal as exit code 128 + the signal number.
    expect(end.signal ?? toSignalFromExitCode(end.exitCode)).toBe('SIGXCPU');
    // A guess either way: the runner sees a signal (or bwrap's 152), not the CPU time the step used.
    expect(classifyLimitExit(end)).toEqual(
      mode === 'bwrap' ? { reason: 'cpu-limit', basis: 'exit-code', known: false } : { reason: 'cpu-limit', basis: 'signal', known: false },
    );
    expect(end.timedOut).toBe(false);
  });
});

describe.each(['none', ...bwrapModes] as IsolationMode[])('when a step in mode %s times out', (mode) => {
  it('its child processes do not outlive it', async () => {
    const marker = `child-${randomUUID()}`;
    const script = `(exec -a ${marker} sleep 30) & (exec -a ${marker} sleep 30) & echo started; wait`;
    const end = await runPlan(planStep(mode, ['/bin/bash', '-c', script]), 1500);
    expect(end.stdout).toBe('started\n');
    expect(end.timedOut).toBe(true);
    expect(classifyLimitExit(end)).toEqual({ reason: 'timeout', basis: 'timer', known: true });
    expect(await waitUntilNoneMarked(marker, 3000)).toEqual([]);
  });
});

describe.each(bwrapModes)('when a step in mode %s escapes its process group with setsid and times out', (mode) => {
  it('the PID namespace still takes the escaped process with it', async () => {
    const marker = `escaped-${randomUUID()}`;
    const script = `setsid bash -c 'exec -a ${marker} sleep 30' & echo started; wait`;
    const end = await runPlan(planStep(mode, ['/bin/bash', '-c', script]), 1500);
    expect(end.timedOut).toBe(true);
    expect(await waitUntilNoneMarked(marker, 3000)).toEqual([]);
  });
});

describe('classifyLimitExit', () => {
  const ended = (end: Partial<StepEnd>): StepEnd => ({ exitCode: 1, signal: null, timedOut: false, ...end });

  it('says none for a step that succeeded, whatever it printed', () => {
    expect(classifyLimitExit(ended({ exitCode: 0, stderrTail: 'Cannot allocate memory' }))).toEqual({ reason: 'none', basis: 'none', known: true });
  });

  it("review F4: SIGXCPU is a guess, since a step can send it to itself; the runner's timer wins over it", () => {
    expect(classifyLimitExit(ended({ exitCode: null, signal: 'SIGXCPU' }))).toEqual({ reason: 'cpu-limit', basis: 'signal', known: false });
    expect(classifyLimitExit(ended({ exitCode: null, signal: 'SIGXCPU', timedOut: true }))).toEqual({
      reason: 'timeout',
      basis: 'timer',
      known: true,
    });
  });

  it('review round 2: an OOM kill the step provokes does not hide the timeout the runner enforced', () => {
    expect(classifyLimitExit(ended({ exitCode: null, signal: 'SIGKILL', timedOut: true, oomKills: 1 }))).toEqual({
      reason: 'timeout',
      basis: 'timer',
      known: true,
    });
    expect(classifyLimitExit(ended({ exitCode: 137, oomKills: 1 }))).toEqual({ reason: 'memory-limit', basis: 'cgroup', known: true });
  });

  it('reads fork failures, allocation failures and EMFILE from stderr, as a guess (never known)', () => {
    expect(classifyLimitExit(ended({ stderrTail: 'Cannot allocate memory' }))).toEqual({ reason: 'memory-limit', basis: 'stderr', known: false });
    expect(classifyLimitExit(ended({ stderrTail: 'bash: fork: retry: Resource temporarily unavailable' })).reason).toBe('process-limit');
    expect(
      classifyLimitExit(ended({ signal: 'SIGABRT', stderrTail: "terminate called after throwing an instance of 'std::bad_alloc'" })).reason,
    ).toBe('memory-limit');
    expect(classifyLimitExit(ended({ stderrTail: 'MemoryError' })).reason).toBe('memory-limit');
    expect(classifyLimitExit(ended({ stderrTail: 'Error: EMFILE: too many open files' })).reason).toBe('open-files-limit');
  });

  it('says timeout when the timer ended a step, whatever its stderr says', () => {
    expect(classifyLimitExit(ended({ exitCode: null, signal: 'SIGTERM', timedOut: true, stderrTail: 'MemoryError' }))).toEqual({
      reason: 'timeout',
      basis: 'timer',
      known: true,
    });
  });

  it('knows memory-limit from an OOM kill in the step cgroup, and only for a step that failed', () => {
    expect(classifyLimitExit(ended({ exitCode: null, signal: 'SIGKILL', oomKills: 1 }))).toEqual({
      reason: 'memory-limit',
      basis: 'cgroup',
      known: true,
    });
    expect(classifyLimitExit(ended({ exitCode: 137, oomKills: 2 }))).toEqual({ reason: 'memory-limit', basis: 'cgroup', known: true });
    expect(classifyLimitExit(ended({ exitCode: 0, oomKills: 1 })).reason).toBe('none');
    expect(classifyLimitExit(ended({ exitCode: 1, oomKills: 0, stderrTail: 'MemoryError' })).known).toBe(false);
  });

  it('reads an exit code of 128 + SIGXCPU, as bwrap reports it, as a guessed cpu-limit', () => {
    expect(classifyLimitExit(ended({ exitCode: 152 }))).toEqual({ reason: 'cpu-limit', basis: 'exit-code', known: false });
  });

  it('does not pretend to know why a SIGKILL or SIGSEGV came', () => {
    expect(classifyLimitExit(ended({ exitCode: null, signal: 'SIGKILL' }))).toEqual({ reason: 'signal', basis: 'signal', known: true });
    expect(classifyLimitExit(ended({ exitCode: null, signal: 'SIGSEGV' }))).toEqual({ reason: 'signal', basis: 'signal', known: true });
    expect(classifyLimitExit(ended({ exitCode: 137 }))).toEqual({ reason: 'signal', basis: 'exit-code', known: false });
  });
});
