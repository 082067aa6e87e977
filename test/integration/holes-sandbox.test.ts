/**
 * Issue 8, points 1, 2 and 15: what an outside review broke in the step sandbox, reproduced with real
 * sandboxed steps (planLaunch or the production launcher, spawned by the runner's own runStep) and, for what
 * the evidence says, through the real CLI (`exec`, then the bundle's evidence read back).
 *
 *   1. Host unix sockets were reachable: bwrap bound the whole host read-only, and a read-only bind does not
 *      stop connect(). Now only the configured system folders are shown, and a seccomp filter refuses
 *      unix sockets, so a listener in a listed folder is out of reach too.
 *   2. Memory outside RLIMIT_DATA: a memfd, /tmp and /dev/shm were each bounded by nothing or by the limit
 *      again. Now each step runs in its own memory cgroup when the runner can make one (here: root, with a
 *      cgroup it may create children in), and the tmpfs sizes are settings of their own.
 *  15. A step that printed "Cannot allocate memory" and exited 1 was recorded as memory-limit. Now a limit is
 *      recorded only when the runner saw it; the step's words are `limitInferred`.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sandboxLauncherSelector, type Launcher } from '../../runner/agent/launcher.js';
import { resolveConfig, type ConfigOverrides } from '../../runner/config/config.js';
import type { EvidencePredicate } from '../../runner/evidence/statement.js';
import { DEFAULT_STEP_LIMITS, grantWorkspaceToStep, planLaunch, probeIsolation, type LaunchPlan } from '../../runner/exec/sandbox.js';
import { runStep, type StepOutcome } from '../../runner/exec/step.js';
import { BlobStore } from '../../runner/state/blobs.js';
import { runCli } from '../helpers/cli.js';
import { makeWorld, type World } from '../helpers/world.js';

const bwrapUsable = probeIsolation().available === 'bwrap';
const isRoot = process.getuid?.() === 0;
const PYTHON = '/usr/bin/python3';
const pythonUsable = existsSync(PYTHON);
const MiB = 1024 * 1024;

/** A fake runner layout under /tmp, like the CLI's: <root>/state/runs/<id>/workspace. */
let root: string;
let stateDir: string;
let blobs: BlobStore;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'edge-runner-holes-sandbox-'));
  chmodSync(root, 0o755);
  stateDir = join(root, 'state');
  mkdirSync(stateDir, { mode: 0o755 });
  blobs = new BlobStore(join(root, 'blobs'));
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

interface Ran extends StepOutcome {
  out: string;
}

async function run(plan: LaunchPlan, timeoutMs = 20_000): Promise<Ran> {
  const outcome = await runStep({ plan, timeoutMs, killGraceMs: 500, outputCapBytes: 1 << 20, blobs, leaderIsStep: false });
  return { ...outcome, out: readFileSync(blobs.pathOf(outcome.stdout.digest), 'utf8') };
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
}

/** Tries every socket path it is given: "PATH exists|absent" and "PATH connected|refused ERRNO". */
const CONNECT_ALL = `
import os, socket, sys
for path in sys.argv[1:]:
    print(path, "exists" if os.path.exists(path) else "absent", flush=True)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(b"hello")
        print(path, "connected", flush=True)
    except OSError as e:
        print(path, "refused", e.errno, flush=True)
`;

describe.runIf(bwrapUsable && pythonUsable)('attack 1: host unix sockets', () => {
  // Outside /run, /home, /root, /var/tmp and /tmp (the old layout showed it; the step's own /tmp would
  // cover it): /var/lib as root, else the project folder (which may itself lie under /tmp in a clone).
  const base = isRoot ? join('/var/lib', `edge-runner-holes-sandbox-${randomUUID()}`) : join(process.cwd(), 'tmp', `holes-sandbox-${randomUUID()}`);
  const outside = join(base, 'not-listed');
  const listed = join(base, 'listed');
  const outsideSocket = join(outside, 'listener.sock');
  const listedSocket = join(listed, 'listener.sock');
  const servers: Server[] = [];
  const accepted = new Map<string, number>();

  beforeAll(async () => {
    for (const dir of [base, outside, listed]) {
      mkdirSync(dir, { recursive: true });
      chmodSync(dir, 0o755);
    }
    for (const path of [outsideSocket, listedSocket]) {
      accepted.set(path, 0);
      const server = createServer((socket) => {
        accepted.set(path, (accepted.get(path) ?? 0) + 1);
        socket.destroy();
      });
      await listen(server, path);
      // Anyone may connect as far as file modes go: only the sandbox stands in the way.
      chmodSync(path, 0o777);
      servers.push(server);
    }
  });

  afterAll(async () => {
    await Promise.all(servers.map((server) => new Promise<void>((r) => server.close(() => r()))));
    rmSync(base, { recursive: true, force: true });
  });

  const plan = (mode: 'bwrap' | 'none') =>
    planLaunch(
      {
        argv: [PYTHON, '-c', CONNECT_ALL, outsideSocket, listedSocket],
        env: { PATH: '/usr/bin:/bin' },
        workspace: newWorkspace(),
        limits: { ...DEFAULT_STEP_LIMITS },
        mode,
        hide: [stateDir],
      },
      // The test's own folder is on the allowlist, beside the system folders: its socket file is visible.
      { systemFolders: ['/usr', '/bin', '/sbin', '/lib', '/lib64', '/etc', listed] },
    );

  it('(control) a step without isolation reaches both listeners', async () => {
    const ran = await run(plan('none'));
    expect(ran.out).toContain(`${outsideSocket} connected`);
    expect(ran.out).toContain(`${listedSocket} connected`);
    await expect.poll(() => accepted.get(outsideSocket)).toBe(1);
    await expect.poll(() => accepted.get(listedSocket)).toBe(1);
    accepted.set(outsideSocket, 0);
    accepted.set(listedSocket, 0);
  });

  it('attack 1: a step reaches neither a listener in a folder off the list nor one in a listed folder', async () => {
    const ran = await run(plan('bwrap'));
    expect(ran.exitCode, ran.stderrTail).toBe(0);
    // Off the list: the folder is not there at all.
    expect(ran.out).toContain(`${outsideSocket} absent`);
    // Listed: the socket file is visible, and the seccomp filter refuses the unix socket (EAFNOSUPPORT).
    expect(ran.out).toContain(`${listedSocket} exists`);
    expect(ran.out).toContain(`${listedSocket} refused 97`);
    expect(ran.out).not.toContain('connected');
    await new Promise((r) => setTimeout(r, 200));
    expect(accepted.get(outsideSocket)).toBe(0);
    expect(accepted.get(listedSocket)).toBe(0);
  });

  it('attack 1: io_uring is refused too; socketpair (an unnamed pair, reaching nothing) and TCP sockets still work inside', async () => {
    const script = `
import ctypes, errno, socket
try:
    socket.socketpair(); print("pair made")
except OSError as e: print("pair refused", e.errno)
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 8, params)
print("io_uring", "made" if fd >= 0 else "refused %d" % ctypes.get_errno())
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); print("inet made")
`;
    const ran = await run(
      planLaunch({
        argv: [PYTHON, '-c', script],
        env: { PATH: '/usr/bin:/bin' },
        workspace: newWorkspace(),
        limits: { ...DEFAULT_STEP_LIMITS },
        mode: 'bwrap',
      }),
    );
    expect(ran.out.split('\n')).toEqual(['pair made', 'io_uring refused 38', 'inet made', '']);
  });

  it('attack 1: a step sees only the listed system folders, its workspace and its own /dev, /proc, /tmp', async () => {
    const ran = await run(
      planLaunch({
        argv: ['/bin/sh', '-c', 'ls -a /; ls /work /home /root /run /var /srv /opt 2>&1 | head -n 20'],
        env: { PATH: '/usr/bin:/bin' },
        workspace: newWorkspace(),
        limits: { ...DEFAULT_STEP_LIMITS },
        mode: 'bwrap',
      }),
    );
    const top = ran.out.split('\n').filter((name) => /^[^/ ]+$/.test(name) && !name.startsWith('ls:'));
    const expected = ['/bin', '/dev', '/etc', '/lib', '/lib32', '/lib64', '/libx32', '/proc', '/sbin', '/tmp', '/usr']
      .filter((path) => path === '/dev' || path === '/proc' || path === '/tmp' || existsSync(path))
      .map((path) => path.slice(1));
    expect(top.filter((name) => name !== '.' && name !== '..').sort()).toEqual(expected.sort());
    for (const gone of ['/work', '/home', '/root', '/run', '/var', '/srv', '/opt']) expect(ran.out).toContain(`ls: cannot access '${gone}'`);
  });

  it('the root a step sees is read-only, and a hidden state folder inside a listed folder is still covered', async () => {
    const ran = await run(
      planLaunch(
        {
          argv: ['/bin/sh', '-c', `touch /planted 2>/dev/null && echo planted; ls ${listed}`],
          env: { PATH: '/usr/bin:/bin' },
          workspace: newWorkspace(),
          limits: { ...DEFAULT_STEP_LIMITS },
          mode: 'bwrap',
          hide: [listed],
        },
        { systemFolders: ['/usr', '/bin', '/lib', '/lib64', base] },
      ),
    );
    expect(ran.out).not.toContain('planted');
    expect(ran.out).not.toContain('listener.sock');
  });
});

// ---------------------------------------------------------------------------------------------------------

/** The production launcher, with the given settings as runner.json would give them. */
function launcherWith(state: ConfigOverrides): Launcher {
  const selected = sandboxLauncherSelector()('required', { stateDir, config: resolveConfig({ state }) });
  if ('unavailable' in selected) throw new Error(selected.unavailable);
  return selected;
}

/** Writes `mib` MiB in 1 MiB chunks to what `open` returns, printing the count after each, then "filled". */
const fill = (open: string, mib: number) => `
import os, sys
${open}
chunk = b"x" * (1 << 20)
for i in range(${mib}):
    os.write(fd, chunk)
    print(i + 1, flush=True)
print("filled", flush=True)
`;
const MEMFD = 'fd = os.memfd_create("hog")';
const fileIn = (path: string) => `fd = os.open(${JSON.stringify(path)}, os.O_CREAT | os.O_WRONLY, 0o600)`;

/** The last count the step printed before it was stopped. */
const lastCount = (ran: Ran) =>
  Math.max(
    0,
    ...ran.out
      .split('\n')
      .filter((line) => /^\d+$/.test(line))
      .map(Number),
  );

const LIMIT_MIB = 64;
/**
 * Whether this host gives a root runner a memory cgroup to make step cgroups in, judged from the kernel's
 * files alone (not from the code under test): its own folder in a v1 memory hierarchy, or a v2 folder whose
 * subtree_control lists memory. Where it does, the launcher must use it.
 */
function hostHasMemoryCgroup(): boolean {
  if (!isRoot) return false;
  const lines = readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  const v1 = lines.find((line) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(line));
  if (v1) return existsSync(join('/sys/fs/cgroup/memory', v1.slice(v1.indexOf(':/') + 1), 'memory.limit_in_bytes'));
  const v2 = lines.find((line) => line.startsWith('0::'));
  const control = v2 && join('/sys/fs/cgroup', v2.slice(3), 'cgroup.subtree_control');
  return Boolean(control && existsSync(control) && readFileSync(control, 'utf8').split(/\s+/).includes('memory'));
}
const cgroupHere = bwrapUsable && pythonUsable && hostHasMemoryCgroup();

describe.runIf(bwrapUsable && pythonUsable)('attack 2: memory outside RLIMIT_DATA', () => {
  it.runIf(cgroupHere)('attack 2: a step that fills a memfd of 4x its memory limit is stopped at the limit (cgroup OOM kill)', async () => {
    const launcher = launcherWith({ limits: { memoryBytes: LIMIT_MIB * MiB } });
    const workspace = newWorkspace();
    const ran = await run(launcher.plan([PYTHON, '-c', fill(MEMFD, 4 * LIMIT_MIB)], { PATH: '/usr/bin:/bin' }, workspace));
    expect(ran.out).not.toContain('filled');
    expect(lastCount(ran)).toBeLessThanOrEqual(LIMIT_MIB);
    expect(launcher.sandbox?.memoryBound).toMatch(/^cgroup-v[12]$/);
    expect(ran.oomKills).toBeGreaterThan(0);
  });

  it.runIf(cgroupHere)('attack 2: /tmp, /dev/shm and a memfd together stay within one memory limit', async () => {
    // Each part alone is below the limit (and below each tmpfs size): only a total bound stops the sum.
    const launcher = launcherWith({ limits: { memoryBytes: LIMIT_MIB * MiB } });
    const part = Math.floor(LIMIT_MIB * 0.6);
    const script = `
import os
chunk = b"x" * (1 << 20)
total = 0
for name, fd in (("tmp", os.open("/tmp/a", os.O_CREAT | os.O_WRONLY)), ("shm", os.open("/dev/shm/a", os.O_CREAT | os.O_WRONLY)), ("memfd", os.memfd_create("m"))):
    for i in range(${part}):
        os.write(fd, chunk)
        total += 1
        print(total, flush=True)
print("filled", flush=True)
`;
    const ran = await run(launcher.plan([PYTHON, '-c', script], { PATH: '/usr/bin:/bin' }, newWorkspace()));
    expect(ran.out).not.toContain('filled');
    expect(lastCount(ran)).toBeLessThanOrEqual(LIMIT_MIB);
    expect(lastCount(ran)).toBeGreaterThan(part); // it got past the first part: the sum is what stopped it
  });

  it.runIf(cgroupHere)('attack 2: a shared anonymous mapping beyond the limit is stopped too', async () => {
    const launcher = launcherWith({ limits: { memoryBytes: LIMIT_MIB * MiB } });
    const script = `
import mmap
m = mmap.mmap(-1, ${4 * LIMIT_MIB} << 20)
for i in range(${4 * LIMIT_MIB}):
    for j in range(0, 1 << 20, 4096):
        m[(i << 20) + j] = 1
    print(i + 1, flush=True)
print("filled", flush=True)
`;
    const ran = await run(launcher.plan([PYTHON, '-c', script], { PATH: '/usr/bin:/bin' }, newWorkspace()));
    expect(ran.out).not.toContain('filled');
    expect(lastCount(ran)).toBeLessThanOrEqual(LIMIT_MIB);
  });

  it('attack 2: writes to /tmp and /dev/shm stop at their own tmpfs sizes (ENOSPC), with or without a cgroup', async () => {
    const launcher = launcherWith({ sandbox: { tmpBytes: 16 * MiB, shmBytes: 8 * MiB } });
    for (const [path, mib] of [
      ['/tmp/big', 16],
      ['/dev/shm/big', 8],
    ] as const) {
      const ran = await run(launcher.plan([PYTHON, '-c', fill(fileIn(path), 64)], { PATH: '/usr/bin:/bin' }, newWorkspace()));
      expect(ran.out).not.toContain('filled');
      expect(lastCount(ran)).toBeLessThanOrEqual(mib);
      expect(ran.stderrTail).toContain('No space left on device');
    }
  });

  it.runIf(cgroupHere)('attack 2: the hold on bwrap is released only once it is in its cgroup: every step process is inside', async () => {
    const launcher = launcherWith({});
    expect(launcher.sandbox?.memoryBound).toMatch(/^cgroup-v[12]$/);
    const plan = launcher.plan(
      ['/bin/sh', '-c', 'cat /proc/self/cgroup; sleep 0.1 & cat /proc/$!/cgroup'],
      { PATH: '/usr/bin:/bin' },
      newWorkspace(),
    );
    const ran = await run(plan);
    expect(ran.exitCode, ran.stderrTail).toBe(0);
    // bwrap made its cgroup namespace before it was moved: the step sees the path of its step cgroup.
    const stepCgroup = plan.cgroup!.dir.slice(plan.cgroup!.dir.lastIndexOf('/'));
    const lines = ran.out.split('\n').filter((line) => (plan.cgroup!.version === 1 ? /^\d+:memory:/ : /^0::/).test(line));
    expect(lines).toHaveLength(2); // the shell and its child
    for (const line of lines) expect(line.endsWith(stepCgroup), line).toBe(true);
  });
});

describe.runIf(bwrapUsable)('when no memory cgroup can be made', () => {
  const nowhere = { memoryCgroup: '/sys/fs/cgroup/edge-runner-test-does-not-exist' };

  it('falls back to RLIMIT_DATA and says so (memoryBound rlimit), holding nothing back', () => {
    const launcher = launcherWith({ sandbox: nowhere });
    expect(launcher.sandbox).toEqual(expect.objectContaining({ memoryBound: 'rlimit', syscallFilter: 'edge-runner/v4' }));
    const plan = launcher.plan(['/bin/true'], { PATH: '/usr/bin:/bin' }, newWorkspace());
    expect(plan.cgroup).toBeUndefined();
    expect(plan.args).toContain(`--data=${DEFAULT_STEP_LIMITS.memoryBytes}`);
    expect(plan.args).not.toContain('--block-fd');
  });

  it('runs nothing when the configuration requires a memory cgroup (sandbox.requireMemoryCgroup)', () => {
    const selected = sandboxLauncherSelector()('required', {
      stateDir,
      config: resolveConfig({ state: { sandbox: { ...nowhere, requireMemoryCgroup: true } } }),
    });
    expect(selected).toEqual({ unavailable: expect.stringContaining('memory cgroup') });
  });
});

// ---------------------------------------------------------------------------------------------------------

describe.runIf(bwrapUsable)('what the evidence says about limits (through the CLI)', () => {
  let world: World;

  beforeAll(() => {
    world = makeWorld();
    const path = join(world.stateDir, 'runner.json');
    writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), settings: { limits: { memoryBytes: LIMIT_MIB * MiB } } }));
  });

  afterAll(() => world.cleanup());

  function execEvidence(steps: { name: string; run: string[] }[]): EvidencePredicate {
    const capsule = world.capsule({ steps, isolation: 'required' });
    const out = join(world.dir, `${randomUUID()}.bundle.json`);
    const result = runCli(['exec', world.writeCapsule(capsule), '--state', world.stateDir, '--out', out, '--json']);
    expect(result.status === 0 || result.status === 1, result.stderr).toBe(true);
    const bundle = JSON.parse(readFileSync(out, 'utf8')) as { evidence: { payload: string } };
    return (JSON.parse(Buffer.from(bundle.evidence.payload, 'base64').toString('utf8')) as { predicate: EvidencePredicate }).predicate;
  }

  it('attack 15: a step that prints "Cannot allocate memory" and exits 1 is not recorded as memory-limit, only as a guess', () => {
    const predicate = execEvidence([{ name: 'says-enomem', run: ['/bin/sh', '-c', 'echo "Cannot allocate memory" >&2; exit 1'] }]);
    const step = predicate.steps[0]!;
    expect(step.status).toBe('failed');
    expect(step.exitCode).toBe(1);
    expect(step.limit).toBeUndefined();
    expect(step.limitInferred).toBe('memory-limit');
  });

  it('attack 15: a step that exits 152 (128 + SIGXCPU, as bwrap reports that death) is a guessed cpu-limit, not a known one', () => {
    const predicate = execEvidence([{ name: 'exits-152', run: ['/bin/sh', '-c', 'exit 152'] }]);
    expect(predicate.steps[0]!.limit).toBeUndefined();
    expect(predicate.steps[0]!.limitInferred).toBe('cpu-limit');
  });

  it('attack 1 and 2: the evidence names the system folders by name, the socket filter and the memory bound that applied', () => {
    const predicate = execEvidence([{ name: 'ok', run: ['/bin/true'] }]);
    expect(predicate.run.isolation).toBe('bwrap');
    expect(predicate.run.sandbox).toEqual({
      systemFolders: ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc'],
      memoryBound: cgroupHere ? expect.stringMatching(/^cgroup-v[12]$/) : 'rlimit',
      syscallFilter: 'edge-runner/v4',
    });
  });

  it.runIf(cgroupHere)('attack 2: a memfd hog through the CLI is recorded as a known memory-limit (the cgroup OOM kill)', () => {
    const predicate = execEvidence([{ name: 'memfd-hog', run: [PYTHON, '-c', fill(MEMFD, 4 * LIMIT_MIB)] }]);
    expect(predicate.steps[0]!.status).toBe('failed');
    expect(predicate.steps[0]!.limit).toBe('memory-limit');
    expect(predicate.run.sandbox?.memoryBound).toMatch(/^cgroup-v[12]$/);
  });
});
