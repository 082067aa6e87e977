/**
 * Variants of issue 8's sandbox attacks that a second review found open after the first fixes (review
 * findings F1-F6), each through the production launcher and a real bwrap step, or the built CLI.
 */
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sandboxLauncherSelector, type Launcher } from '../../runner/agent/launcher.js';
import { resolveConfig, type ConfigOverrides } from '../../runner/config/config.js';
import { findMemoryCgroupParent } from '../../runner/exec/cgroup.js';
import { probeIsolation } from '../../runner/exec/sandbox.js';
import { runStep } from '../../runner/exec/step.js';
import { BlobStore } from '../../runner/state/blobs.js';
import { processStartTicks } from '../../runner/state/process.js';
import { runCli } from '../helpers/cli.js';
import { makeWorld, type World } from '../helpers/world.js';

const MiB = 1 << 20;
const PYTHON = '/usr/bin/python3';
const bwrapUsable = probeIsolation().available === 'bwrap';
const pythonUsable = existsSync(PYTHON);
const isRoot = process.getuid?.() === 0;
const found = isRoot ? findMemoryCgroupParent('') : { reason: 'not root' };
const cgroupParent = 'parent' in found ? found.parent : undefined;

let root: string;
let stateDir: string;
let blobs: BlobStore;
let world: World | undefined;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'edge-runner-review-sandbox-'));
  chmodSync(root, 0o755);
  stateDir = join(root, 'state');
  mkdirSync(stateDir, { mode: 0o755 });
  blobs = new BlobStore(join(root, 'blobs'));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  world?.cleanup();
});

function launcherWith(state: ConfigOverrides = {}): Launcher {
  const selected = sandboxLauncherSelector()('required', { stateDir, config: resolveConfig({ state }) });
  if ('unavailable' in selected) throw new Error(selected.unavailable);
  return selected;
}

function newWorkspace(launcher: Launcher): string {
  const workspace = join(stateDir, 'runs', randomUUID(), 'workspace');
  mkdirSync(workspace, { recursive: true, mode: 0o755 });
  launcher.prepare(workspace);
  return workspace;
}

async function runPython(launcher: Launcher, script: string): Promise<string> {
  const workspace = newWorkspace(launcher);
  const outcome = await runStep({
    plan: launcher.plan([PYTHON, '-c', script], { PATH: '/usr/bin:/bin' }, workspace),
    timeoutMs: 30_000,
    killGraceMs: 500,
    outputCapBytes: MiB,
    blobs,
    leaderIsStep: launcher.leaderIsStep,
  });
  return readFileSync(blobs.pathOf(outcome.stdout.digest), 'utf8');
}

/** Python that prints, for each attempt, "name ok" or "name errno N". */
const attempts = (lines: string) => `import os, socket, errno
def attempt(name, fn):
    try:
        fn(); print(name, "ok")
    except OSError as e:
        print(name, "errno", e.errno)
${lines}`;

describe.runIf(bwrapUsable && pythonUsable)('review F1: socket families other than inet, inet6 and netlink', () => {
  it('a bwrap step cannot create AF_VSOCK, AF_PACKET, AF_ALG or AF_UNIX sockets (EAFNOSUPPORT); TCP still works', async () => {
    const out = await runPython(
      launcherWith(),
      attempts(`attempt("vsock", lambda: socket.socket(40, socket.SOCK_STREAM))
attempt("packet", lambda: socket.socket(17, socket.SOCK_RAW))
attempt("alg", lambda: socket.socket(38, socket.SOCK_SEQPACKET))
attempt("unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
attempt("tcp", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))`),
    );
    expect(out).toBe('vsock errno 97\npacket errno 97\nalg errno 97\nunix errno 97\ntcp ok\n');
  });
});

describe.runIf(bwrapUsable && pythonUsable)('review round 2: netlink protocols, inet protocols, Linux AIO', () => {
  it("a bwrap step cannot listen to the host's device events (NETLINK_KOBJECT_UEVENT), open SCTP or use AIO; NETLINK_ROUTE and getaddrinfo work", async () => {
    const out = await runPython(
      launcherWith(),
      attempts(`attempt("uevent", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15))
attempt("sctp", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132))
attempt("seqpacket", lambda: socket.socket(socket.AF_INET, socket.SOCK_SEQPACKET, 0))
attempt("route", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
attempt("getaddrinfo", lambda: socket.getaddrinfo("localhost", 80))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
ctx = ctypes.c_ulong(0)
print("io_setup", 0 if libc.syscall(206, 1, ctypes.byref(ctx)) == 0 else ctypes.get_errno())`),
    );
    expect(out).toBe('uevent errno 93\nsctp errno 93\nseqpacket errno 93\nroute ok\ngetaddrinfo ok\nio_setup 38\n');
  });
});

const SYSTEM_NODE = '/usr/bin/node';

describe.runIf(bwrapUsable)('review round 3: ordinary programs still work under the filter', () => {
  it.runIf(existsSync(SYSTEM_NODE))('node can start a child process in a step (libuv makes its stdio with socketpair)', async () => {
    const launcher = launcherWith();
    const workspace = newWorkspace(launcher);
    const argv = [SYSTEM_NODE, '-e', "process.stdout.write(require('child_process').execFileSync('/bin/echo', ['child ok']))"];
    const outcome = await runStep({
      plan: launcher.plan(argv, { PATH: '/usr/bin:/bin' }, workspace),
      timeoutMs: 30_000,
      killGraceMs: 500,
      outputCapBytes: MiB,
      blobs,
      leaderIsStep: launcher.leaderIsStep,
    });
    expect(readFileSync(blobs.pathOf(outcome.stdout.digest), 'utf8'), readFileSync(blobs.pathOf(outcome.stderr.digest), 'utf8')).toBe('child ok\n');
  });

  it.runIf(pythonUsable)('python asyncio runs in a step (its event loop makes a socketpair)', async () => {
    expect(await runPython(launcherWith(), 'import asyncio; asyncio.run(asyncio.sleep(0)); print("asyncio ok")')).toBe('asyncio ok\n');
  });
});

describe.runIf(bwrapUsable && pythonUsable)('review F2: a step making a user namespace (capabilities inside it, its own mounts)', () => {
  it('unshare(CLONE_NEWUSER), unshare(CLONE_NEWNS), setns and clone3 are refused; fork and threads work', async () => {
    // Through libc (python 3.11 has no os.unshare): each call prints its errno, 0 for success.
    const out = await runPython(
      launcherWith(),
      `import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(name, result):
    print(name, 0 if result == 0 else ctypes.get_errno())
call("unshare-user", libc.unshare(0x10000000))
call("unshare-mount", libc.unshare(0x00020000))
call("setns", libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0))
call("clone3", libc.syscall(435, 0, 0))
t = threading.Thread(target=lambda: None); t.start(); t.join(); print("thread ok")
pid = os.fork()
if pid == 0: os._exit(0)
print("fork ok", os.waitpid(pid, 0)[1])`,
    );
    expect(out).toBe('unshare-user 1\nunshare-mount 1\nsetns 1\nclone3 38\nthread ok\nfork ok 0\n');
  });

  it('the unshare tool itself fails inside a step, so no tmpfs past the bounds can be mounted', async () => {
    const launcher = launcherWith();
    const workspace = newWorkspace(launcher);
    const outcome = await runStep({
      plan: launcher.plan(['/usr/bin/unshare', '-Urm', '/bin/true'], { PATH: '/usr/bin:/bin' }, workspace),
      timeoutMs: 30_000,
      killGraceMs: 500,
      outputCapBytes: MiB,
      blobs,
      leaderIsStep: launcher.leaderIsStep,
    });
    expect(outcome.exitCode).not.toBe(0);
    expect(readFileSync(blobs.pathOf(outcome.stderr.digest), 'utf8')).toMatch(/Operation not permitted/);
  });
});

describe.runIf(bwrapUsable && cgroupParent !== undefined)('review F5, F6: step cgroups are never left behind', () => {
  it('F5: a step that cannot start (its output cannot be stored) takes its cgroup with it', async () => {
    const launcher = launcherWith();
    const workspace = newWorkspace(launcher);
    const plan = launcher.plan(['/bin/true'], { PATH: '/usr/bin:/bin' }, workspace);
    expect(plan.cgroup && existsSync(plan.cgroup.dir)).toBe(true);
    const gone = new BlobStore(join(root, `blobs-${randomUUID()}`));
    rmSync(gone.dir, { recursive: true });
    await expect(
      runStep({ plan, timeoutMs: 10_000, killGraceMs: 500, outputCapBytes: MiB, blobs: gone, leaderIsStep: launcher.leaderIsStep }),
    ).rejects.toThrow();
    expect(existsSync(plan.cgroup!.dir)).toBe(false);
  });

  it("F6: the step cgroup of a runner that died is removed by the next runner; a live runner's is kept", () => {
    const dead = spawnSync('/bin/sh', ['-c', 'echo $$; cat /proc/$$/stat'], { encoding: 'utf8' });
    const [pidLine, stat] = dead.stdout.split('\n');
    const ticks = stat!.slice(stat!.lastIndexOf(')') + 2).split(' ')[19];
    const deadCgroup = join(cgroupParent!.dir, `edge-runner-step-${pidLine}-${ticks}-${'ab'.repeat(8)}`);
    const liveCgroup = join(cgroupParent!.dir, `edge-runner-step-${process.pid}-${processStartTicks(process.pid)}-${'cd'.repeat(8)}`);
    mkdirSync(deadCgroup);
    mkdirSync(liveCgroup);
    try {
      const w = (world = makeWorld());
      const result = runCli(['exec', w.writeCapsule(w.capsule({ isolation: 'required' })), '--state', w.stateDir]);
      expect(result.status, result.stderr).toBe(0);
      expect(existsSync(deadCgroup)).toBe(false);
      expect(existsSync(liveCgroup)).toBe(true);
    } finally {
      for (const dir of [deadCgroup, liveCgroup]) if (existsSync(dir)) rmdirSync(dir); // a cgroup folder: rmdir only
    }
  });
});
