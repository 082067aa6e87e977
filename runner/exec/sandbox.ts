/**
 * Turns a step into the command line that runs it isolated and limited. The spawner (step.ts) launches the
 * returned LaunchPlan with `detached: true` and the stdio of `toSpawnStdio`, calls `startLaunch` right after
 * spawning and `endLaunch` once the step is over; this module only decides what to launch.
 *
 * mode 'bwrap' (bubblewrap), as root, the chain is
 *   bwrap [namespaces, mounts, seccomp] -- setpriv [drop to the step user] -- prlimit [limits] -- argv
 *   - bwrap runs privileged so it can mount over any path and bind a workspace below a 0700 state folder;
 *     it drops every capability except CAP_SETUID/CAP_SETGID, which setpriv uses once and then clears
 *     (bounding set emptied, no_new_privs set), so the step runs as an ordinary uid (65534 by default).
 *   - That real, unprivileged uid is what makes RLIMIT_NPROC bite: the kernel ignores it for uid 0, and a
 *     user namespace mapping the step to "nobody" inside would still be host root outside.
 * mode 'bwrap', as another user: bwrap creates a user namespace itself (unprivileged userns), no setpriv.
 * mode 'none': prlimit -- argv, with the spawn uid/gid dropping to the step user when the runner is root.
 *
 * What a bwrap step sees (the file system is built up, nothing of the host shows unless it is listed):
 *   - the configured system folders (`sandbox.systemFolders`: /usr, /bin, /sbin, /lib*, /etc by default),
 *     each read-only; a listed folder that is a symlink on the host (/bin -> usr/bin) is the same symlink;
 *     a listed folder that does not exist is left out. Nothing else of the host: not /home, /root, /run,
 *     /var, /srv, /opt, /tmp, nor any unix socket in them.
 *   - the workspace, read-write, at its own path; its parents are made as empty folders.
 *   - the granted resources the capsule needs (exec/resources.ts), each read-only below /resources: a path
 *     grant at /resources/<name>, a socket (or a tcp grant's forwarder socket) in /resources/<name>/; each
 *     bound from a descriptor the runner pinned (`--ro-bind-fd`), mounted ro,nosuid,nodev by bwrap.
 *   - a private /dev, /proc of its PID namespace, and tmpfs /tmp and /dev/shm of `sandbox.tmpBytes` and
 *     `sandbox.shmBytes`; the root itself is an empty tmpfs remounted read-only.
 *   - hidden paths (the runner's state folder, DEFAULT_HIDDEN_PATHS) matter only where they lie inside a
 *     listed folder: each is covered by an empty tmpfs of COVER_TMPFS_BYTES (root's, so read-only to a step
 *     of a root runner), a file by /dev/null.
 *   - a seccomp filter (seccomp.ts, which lists what it refuses): sockets only of AF_INET, AF_INET6 and
 *     AF_NETLINK, so a unix socket file inside a listed folder is still out of reach (a read-only bind does
 *     not stop connect()) and so is AF_VSOCK; no io_uring, no new namespaces (a user namespace would give
 *     the step capabilities inside it), no keyrings. The filter reaches bwrap on fd 3 (`--seccomp 3`).
 *
 * Memory, in one of two ways; which one applied is recorded in the evidence (`memoryBound`: cgroup-v2,
 * cgroup-v1, rlimit):
 *   'cgroup'  the step runs in its own memory cgroup (cgroup.ts) of memoryBytes: everything counts, over all
 *             its processes (heap, memfd, shared mappings, its /tmp and /dev/shm pages). bwrap waits on fd 4
 *             (`--block-fd 4`) until the runner has moved it and its first child into that cgroup, so no
 *             process of the step is ever born outside it. An OOM kill there is a known memory-limit.
 *   'rlimit'  no cgroup the runner may use: RLIMIT_DATA of memoryBytes per process (heap and private
 *             writable mappings) and the tmpfs sizes. Shared mappings and memfd pages are NOT bounded then,
 *             and neither is the sum over processes; `sandbox.requireMemoryCgroup` refuses to run instead.
 *             Not RLIMIT_AS: V8 reserves address space up front (node 24 needs about 2 GiB of it to start).
 *
 * The other limits are rlimits set by prlimit (util-linux) just before exec, inside the sandbox:
 *   cpuSeconds  -> RLIMIT_CPU soft N (SIGXCPU), hard N + CPU_KILL_GRACE_SECONDS (SIGKILL if SIGXCPU is ignored)
 *   openFiles   -> RLIMIT_NOFILE
 *   processes   -> RLIMIT_NPROC (counts tasks, threads included, of the step's real uid)
 *   core dumps  -> RLIMIT_CORE 0, so a crashing hog does not write a core into the workspace.
 */
import { spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants,
  lchownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import type { Writable } from 'node:stream';
import { DEFAULT_CONFIG, isSystemFolderPath } from '../config/config.js';
import { countOomKills, joinStepCgroup, removeStepCgroup, type StepCgroup } from './cgroup.js';
import { needsUnixSockets, RESOURCES_ROOT, type ResourceMount } from './resources.js';
import { SandboxError } from './sandbox-errors.js';
import { toSeccompFilterFor } from './seccomp.js';

/** What was actually used for a step; recorded in the evidence. */
export type IsolationMode = 'bwrap' | 'none';
/** What a capsule asks for. */
export type IsolationRequirement = 'required' | 'best-effort';
/** What bounded a step's memory as a whole; recorded in the evidence. */
export type MemoryBound = 'cgroup' | 'rlimit';

export interface StepLimits {
  cpuSeconds: number;
  memoryBytes: number;
  openFiles: number;
  /** Tasks (processes and threads) of the step's uid. Only enforced when that uid is not 0. */
  processes: number;
}

/** The configuration's defaults (runner/config/config.ts owns them, with their units). */
export const DEFAULT_STEP_LIMITS: Readonly<StepLimits> = DEFAULT_CONFIG.limits;

/** SIGXCPU at the soft CPU limit; SIGKILL this many CPU seconds later if the step ignores it. */
export const CPU_KILL_GRACE_SECONDS = 2;

/**
 * Host paths a step never sees, whatever the request says. With the system-folder allowlist they are
 * outside every default folder; they still matter when an operator lists a folder that holds one.
 */
export const DEFAULT_HIDDEN_PATHS: readonly string[] = Object.freeze(['/root', '/home', '/run', '/var/tmp']);

/** The host folders a bwrap step sees read-only, unless configured otherwise (config.ts owns the list). */
export const DEFAULT_SYSTEM_FOLDERS: readonly string[] = DEFAULT_CONFIG.sandbox.systemFolders;

/** An empty tmpfs that covers a hidden path holds nothing; this bounds what a step could write into one. */
export const COVER_TMPFS_BYTES = 64 * 1024;

/** The fds bwrap reads its seccomp program from and blocks on until it is in the step's cgroup. */
const SECCOMP_FD = 3;
const BLOCK_FD = 4;

export interface SandboxConfig {
  /** Defaults to the first `bwrap` on PATH, /usr/bin or /bin. */
  bwrapPath?: string;
  /** Defaults to the first `prlimit` found the same way. */
  prlimitPath?: string;
  /** Defaults to the first `setpriv` found the same way; used only when the runner is root. */
  setprivPath?: string;
  /** The step's uid and gid when the runner is root. Default 65534 (nobody / nogroup). */
  runAsUid?: number;
  runAsGid?: number;
  /** Always hidden in mode 'bwrap' (where a listed folder holds them). Default DEFAULT_HIDDEN_PATHS. */
  hiddenPaths?: readonly string[];
  /** Host folders a bwrap step sees, read-only. Default DEFAULT_SYSTEM_FOLDERS. */
  systemFolders?: readonly string[];
  /** Bytes of the step's private /tmp and /dev/shm. Defaults from the configuration. */
  tmpBytes?: number;
  shmBytes?: number;
  /** The runner's own uid; defaults to process.getuid(). Tests set it to plan for another user. */
  runnerUid?: number;
  /** Folders searched for the tools after the system ones (the configuration takes them from PATH). */
  searchPath?: readonly string[];
}

const PROBE_TIMEOUT_MS = 10_000;
const PROBE_REASON_MAX_CHARS = 300;

export interface IsolationProbe {
  available: IsolationMode;
  /** Why bwrap cannot be used, when it cannot. Host detail: for the local log, never for egress. */
  reason?: string;
}

export interface LaunchRequest {
  argv: string[];
  env: Record<string, string>;
  /** Absolute; the only writable directory, and the step's working directory. */
  workspace: string;
  limits: StepLimits;
  mode: IsolationMode;
  /**
   * Absolute host paths the step must not see, such as the runner's state folder (mode 'bwrap' only). A
   * directory inside a listed system folder is covered by an empty tmpfs, a file by /dev/null; one outside
   * every listed folder is not there to begin with. The workspace stays visible even when it lies below one.
   */
  hide?: string[];
  /**
   * The step's memory cgroup (mode 'bwrap' only), made by the caller with memoryBytes as its bound: the plan
   * then holds bwrap until startLaunch has moved it in, and RLIMIT_DATA is left to the cgroup.
   */
  cgroup?: StepCgroup;
  /**
   * Operator-granted resources to bind (mode 'bwrap' only; exec/resources.ts says where a step finds them):
   * each source read-only at its target below /resources. A socket or tcp grant also lets the step create
   * AF_UNIX sockets (SYSCALL_FILTER_UNIX), which it needs to connect to one.
   */
  resources?: readonly ResourceMount[];
}

export interface LaunchPlan {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  uid?: number;
  gid?: number;
  /** Bytes the child reads on fds 3, 4, ... (a pipe each, written and closed by startLaunch). */
  fdInputs?: Buffer[];
  /**
   * Open descriptors of the runner's handed to the child as they are, after the fd inputs and the hold
   * (bwrap's `--ro-bind-fd N`): the pinned sources of granted resources. Owned by the caller.
   */
  passFds?: number[];
  /** The cgroup startLaunch moves bwrap into before it lets it go on (fd 4); endLaunch reads and removes it. */
  cgroup?: StepCgroup;
}

// ---------------------------------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------------------------------

export function planLaunch(req: LaunchRequest, config: SandboxConfig = {}): LaunchPlan {
  verifyLaunchRequest(req);
  const prlimit = requireTool('prlimit', config.prlimitPath, config.searchPath);
  const runAs = stepIdentity(config);
  const workspace = realpathSync(req.workspace);

  switch (req.mode) {
    case 'none': {
      if (req.cgroup) throw invalid('A step without bwrap cannot be held until it is in its cgroup.');
      // Without a mount namespace nothing can be bound exactly: a grant would be the whole host, or nothing.
      if (req.resources?.length) throw invalid('Granted resources can only be bound into a bwrap sandbox.');
      const [file, ...args] = [prlimit, ...toPrlimitArgs(req.limits), '--', ...req.argv] as [string, ...string[]];
      return { file, args, env: { ...req.env }, cwd: workspace, ...(runAs ?? {}) };
    }
    case 'bwrap': {
      verifyWrapperEnv(req.env);
      for (const folder of config.systemFolders ?? []) {
        if (!isSystemFolderPath(folder)) throw invalid(`The system folder "${folder}" is not a plain absolute path other than /.`, { path: folder });
        if (req.resources?.length && (folder === RESOURCES_ROOT || folder.startsWith(RESOURCES_ROOT + '/'))) {
          throw invalid(`The system folder "${folder}" would cover the granted resources.`, { path: folder });
        }
      }
      const bwrap = requireTool('bwrap', config.bwrapPath, config.searchPath);
      const seccomp = toSeccompFilterFor(process.arch, { unix: needsUnixSockets(req.resources ?? []) });
      if (!seccomp) throw new SandboxError('EXEC_SANDBOX_TOOL_MISSING', `No seccomp filter is known for ${process.arch}.`, { tool: 'seccomp' });
      const dropPrivileges = runAs ? toSetprivArgv(requireTool('setpriv', config.setprivPath, config.searchPath), runAs) : [];
      const hide = [...(config.hiddenPaths ?? DEFAULT_HIDDEN_PATHS), ...(req.hide ?? [])];
      const bound = req.cgroup ? 'cgroup' : 'rlimit';
      const passFds = (req.resources ?? []).flatMap((mount) => (mount.fd !== undefined ? [mount.fd] : []));
      const args = [
        ...toBwrapArgs({
          workspace,
          hide,
          systemFolders: config.systemFolders ?? DEFAULT_SYSTEM_FOLDERS,
          tmpBytes: config.tmpBytes ?? DEFAULT_CONFIG.sandbox.tmpBytes,
          shmBytes: config.shmBytes ?? DEFAULT_CONFIG.sandbox.shmBytes,
          privileged: runAs !== undefined,
          held: req.cgroup !== undefined,
          resources: req.resources ?? [],
        }),
        '--',
        ...dropPrivileges,
        prlimit,
        ...toPrlimitArgs(req.limits, bound),
        '--',
        ...req.argv,
      ];
      // bwrap's binds are slaves of the host's mounts (systemd makes them shared): a file system the host
      // mounted below a granted folder during the run would reach the step with its own flags, writable.
      // A root runner starts bwrap through unshare(1) in a mount namespace of private mounts: nothing the
      // host mounts later comes in. (A runner that is not root cannot; exec/resources.ts says so.)
      const privateMounts =
        runAs && req.resources?.length ? [requireTool('unshare', undefined, config.searchPath), '--mount', '--propagation', 'private', '--'] : [];
      // The environment goes through spawn, not --setenv: argv is world-readable in /proc, environ is not.
      return {
        file: privateMounts[0] ?? bwrap,
        args: privateMounts.length > 0 ? [...privateMounts.slice(1), bwrap, ...args] : args,
        env: { ...req.env },
        cwd: workspace,
        fdInputs: [seccomp],
        ...(passFds.length > 0 ? { passFds } : {}),
        ...(req.cgroup ? { cgroup: req.cgroup } : {}),
      };
    }
  }
}

/**
 * `--cpu=soft:hard --data=N --nofile=N --nproc=N --core=0`, without the trailing `--`. Under a memory
 * cgroup RLIMIT_DATA is left out: the cgroup bounds the same memory and more, and its OOM kill is a fact
 * the runner reads, where a failed allocation is only what the step says.
 */
export function toPrlimitArgs(limits: StepLimits, memoryBound: MemoryBound = 'rlimit'): string[] {
  return [
    `--cpu=${limits.cpuSeconds}:${limits.cpuSeconds + CPU_KILL_GRACE_SECONDS}`,
    ...(memoryBound === 'rlimit' ? [`--data=${limits.memoryBytes}`] : []),
    `--nofile=${limits.openFiles}`,
    `--nproc=${limits.processes}`,
    '--core=0',
  ];
}

interface BwrapLayout {
  workspace: string;
  hide: readonly string[];
  systemFolders: readonly string[];
  tmpBytes: number;
  shmBytes: number;
  /** bwrap runs as root (no user namespace); capabilities for setpriv are kept. */
  privileged: boolean;
  /** bwrap waits on BLOCK_FD before it starts the step. */
  held: boolean;
  resources: readonly ResourceMount[];
}

function toBwrapArgs(layout: BwrapLayout): string[] {
  const args = [
    '--die-with-parent', // the sandbox dies with the runner
    // No --new-session: the step must stay in the process group the runner signals (SIGTERM on timeout);
    // the runner already spawns it detached (setsid) with stdin closed, so it has no terminal to inject into.
    '--unshare-net', // a fresh network namespace: loopback only, and down
    '--unshare-pid', // its own PID namespace: when its init dies, every process in it dies
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    '--hostname',
    'edge-runner-step',
  ];
  const visible: string[] = [];
  const made = new Set<string>();
  // bwrap would make a missing parent 0700 root: the step user could not get through it.
  const makeParents = (target: string, covered: readonly string[]) => {
    for (const parent of toMissingParents(target, visible, covered)) {
      if (made.has(parent)) continue;
      made.add(parent);
      args.push('--perms', '0755', '--dir', parent);
    }
  };
  for (const folder of layout.systemFolders) {
    const mount = toSystemFolderMount(folder);
    if (!mount) continue;
    makeParents(folder, []);
    args.push(...mount.args);
    if (mount.real) visible.push(mount.real);
  }
  args.push(
    '--dev',
    '/dev', // a private /dev (null, zero, random, tty, shm...)
    '--proc',
    '/proc', // the PID namespace's own /proc
    ...toTmpfs('/tmp', layout.tmpBytes, '1777'),
    ...toTmpfs('/dev/shm', layout.shmBytes, '1777'),
  );
  const covered = ['/tmp'];
  const isVisible = (path: string) => visible.some((root) => path === root || path.startsWith(root + sep));
  for (const path of layout.hide) {
    const hidden = toHiddenMount(path);
    if (!hidden) continue;
    if (hidden.path === layout.workspace || hidden.path.startsWith(layout.workspace + sep)) {
      // The workspace bind comes last and would cover it again.
      throw invalid(`"${path}" lies inside the workspace and cannot be hidden from the step.`, { path });
    }
    if (!isVisible(hidden.path)) continue; // not shown to begin with
    args.push(...hidden.args);
    if (hidden.directory) covered.push(hidden.path);
  }
  // Re-expose the workspace read-write, even below a tmpfs: make its missing parents traversable first.
  makeParents(layout.workspace, covered);
  args.push('--bind', layout.workspace, layout.workspace, '--chdir', layout.workspace);
  if (layout.resources.length > 0) {
    // On the root tmpfs, before it is made read-only: nothing of the host shows there but the grants.
    args.push('--perms', '0755', '--dir', RESOURCES_ROOT);
    // Pinned sources come after the seccomp program and the hold, in order (toSpawnStdio hands them over).
    let nextFd = (layout.held ? BLOCK_FD : SECCOMP_FD) + 1;
    for (const mount of layout.resources) {
      if (mount.folder) args.push('--perms', '0755', '--dir', mount.folder);
      if (mount.fd !== undefined) args.push('--ro-bind-fd', String(nextFd++), mount.target);
      else args.push('--ro-bind', mount.source, mount.target);
    }
  }
  // The root is bwrap's own tmpfs, which a step in a user namespace would own: it is made read-only.
  args.push('--remount-ro', '/');
  args.push('--seccomp', String(SECCOMP_FD));
  if (layout.held) args.push('--block-fd', String(BLOCK_FD));
  if (layout.privileged) args.push('--cap-add', 'CAP_SETUID', '--cap-add', 'CAP_SETGID');
  return args;
}

/**
 * The bwrap arguments that show one listed system folder: the same symlink for a symlink (its target is
 * shown only if it is listed too), a read-only bind for a folder or file, nothing for what is missing.
 */
function toSystemFolderMount(folder: string): { args: string[]; real?: string } | undefined {
  let stat;
  try {
    stat = lstatSync(folder);
  } catch {
    return undefined;
  }
  if (stat.isSymbolicLink()) return { args: ['--symlink', readlinkSync(folder), folder] };
  return { args: ['--ro-bind', folder, folder], real: folder };
}

function toTmpfs(path: string, bytes: number, perms: string): string[] {
  return ['--size', String(bytes), '--perms', perms, '--tmpfs', path];
}

function toHiddenMount(path: string): { path: string; directory: boolean; args: string[] } | undefined {
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    return undefined; // nothing there to hide
  }
  if (real === '/') throw invalid('The root directory cannot be hidden from a step.', { path });
  if (statSync(real).isDirectory()) return { path: real, directory: true, args: toTmpfs(real, COVER_TMPFS_BYTES, '0755') };
  return { path: real, directory: false, args: ['--ro-bind', '/dev/null', real] };
}

/**
 * The ancestors of `target` that are not there in the sandbox, outermost first: those strictly inside a
 * covered (tmpfs) path, and those in bwrap's empty root that no listed folder provides.
 */
function toMissingParents(target: string, visible: readonly string[], covered: readonly string[]): string[] {
  const inside = (dir: string, root: string) => dir === root || dir.startsWith(root + sep);
  const parents: string[] = [];
  for (let dir = dirname(target); dir !== dirname(dir); dir = dirname(dir)) {
    const cover = covered.filter((root) => inside(dir, root)).sort((a, b) => b.length - a.length)[0];
    const shown = visible.filter((root) => inside(dir, root)).sort((a, b) => b.length - a.length)[0];
    // The innermost of a cover and a listed folder decides: a cover hides what its folder held.
    const innermost = [cover, shown].filter((root): root is string => root !== undefined).sort((a, b) => b.length - a.length)[0];
    if (innermost === undefined)
      parents.unshift(dir); // bwrap's empty root
    else if (innermost === cover && dir !== cover) parents.unshift(dir); // inside an empty tmpfs
  }
  return parents;
}

// ---------------------------------------------------------------------------------------------------------
// Spawning a plan (step.ts, the probe and the tests use these three)
// ---------------------------------------------------------------------------------------------------------

/** stdin closed, stdout and stderr piped, and a pipe for each of the plan's fd inputs and its hold. */
export function toSpawnStdio(plan: LaunchPlan): StdioOptions {
  const extra = (plan.fdInputs?.length ?? 0) + (plan.cgroup ? 1 : 0);
  return ['ignore', 'pipe', 'pipe', ...Array<'pipe'>(extra).fill('pipe'), ...(plan.passFds ?? [])];
}

/**
 * Right after spawning: writes the fd inputs (the seccomp program), moves bwrap and whatever it has forked
 * so far into the step's cgroup, and only then lets it go on. A process forked after its parent moved is
 * born inside, and bwrap forks nothing more until it is let go, so no process of the step starts outside.
 * Throws EXEC_SANDBOX_CGROUP if the move fails; the caller kills the (still held) process group.
 */
export function startLaunch(plan: LaunchPlan, child: ChildProcess): void {
  const fds = child.stdio.slice(SECCOMP_FD) as (Writable | null)[];
  // bwrap closes each fd once it has read it: a reset on our end is expected, not a failure of the runner.
  for (const fd of fds) fd?.on('error', () => {});
  (plan.fdInputs ?? []).forEach((bytes, i) => fds[i]?.end(bytes));
  if (!plan.cgroup) return;
  const hold = fds[(plan.fdInputs ?? []).length];
  if (child.pid === undefined || !hold) return; // it did not start; the spawner sees the error
  try {
    joinStepCgroup(plan.cgroup, child.pid);
    for (const pid of toDescendants(child.pid)) joinStepCgroup(plan.cgroup, pid);
  } catch (err) {
    throw new SandboxError('EXEC_SANDBOX_CGROUP', 'The step could not be moved into its memory cgroup.', { code: errnoOf(err) }, { cause: err });
  }
  hold.end('go');
}

/** After the step has ended: how often the kernel OOM-killed in its cgroup, and the cgroup removed. */
export function endLaunch(plan: LaunchPlan): { oomKills?: number } {
  if (!plan.cgroup) return {};
  let oomKills: number | undefined;
  try {
    oomKills = countOomKills(plan.cgroup);
  } catch {
    oomKills = undefined; // unreadable: nothing known, nothing claimed
  }
  try {
    removeStepCgroup(plan.cgroup);
  } catch {
    // Its processes were killed with the group; an empty folder left behind holds no memory of its own.
  }
  return oomKills === undefined ? {} : { oomKills };
}

/** Every process below `pid`, found through /proc (parent pid in /proc/N/stat). */
function toDescendants(pid: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const found: number[] = [];
  const pending = [pid];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    for (const [child, parent] of parents) {
      if (parent === next) {
        found.push(child);
        pending.push(child);
      }
    }
  }
  return found;
}

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? 'unknown';
}

function toSetprivArgv(setpriv: string, id: { uid: number; gid: number }): string[] {
  return [setpriv, `--reuid=${id.uid}`, `--regid=${id.gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--'];
}

/** The uid/gid a step runs as, or undefined when the runner is not root and steps keep its identity. */
function stepIdentity(config: SandboxConfig): { uid: number; gid: number } | undefined {
  const runnerUid = config.runnerUid ?? process.getuid?.();
  if (runnerUid !== 0) return undefined;
  return { uid: config.runAsUid ?? DEFAULT_CONFIG.stepUser.uid, gid: config.runAsGid ?? DEFAULT_CONFIG.stepUser.gid };
}

function verifyLaunchRequest(req: LaunchRequest): void {
  if (req.argv.length === 0 || req.argv.some((arg) => arg.length === 0 || arg.includes('\0'))) {
    throw invalid('A step needs a non-empty argv without empty or NUL-bearing arguments.');
  }
  for (const path of [req.workspace, ...(req.hide ?? [])]) {
    if (!isAbsolute(path) || path.includes('\0')) throw invalid(`"${path}" is not an absolute path.`, { path });
  }
  verifyResourceMounts(req.resources ?? []);
  for (const [name, value] of Object.entries(req.limits) as [keyof StepLimits, number][]) {
    if (!Number.isSafeInteger(value) || value <= 0) throw invalid(`The step limit ${name} must be a positive integer.`, { name, value });
  }
}

/**
 * glibc's list of variables it ignores for setuid programs (elf/dl-support, "unsecure envvars"): they load
 * code or read files chosen by the caller. In mode 'bwrap' the environment reaches bwrap and setpriv, which
 * run outside the sandbox or with privileges, so a step may not set them.
 */
const LOADER_ENV =
  /^(LD_.*|GCONV_PATH|GETCONF_DIR|GLIBC_TUNABLES|HOSTALIASES|LOCALDOMAIN|LOCPATH|MALLOC_TRACE|NIS_PATH|NLSPATH|RESOLV_HOST_CONF|RES_OPTIONS|TZDIR)$/;

/** True for a variable that would steer the dynamic loader of the sandbox's own wrappers. */
export function isLoaderEnvName(name: string): boolean {
  return LOADER_ENV.test(name);
}

function verifyWrapperEnv(env: Record<string, string>): void {
  for (const name of Object.keys(env)) {
    if (LOADER_ENV.test(name)) {
      throw new SandboxError('EXEC_SANDBOX_ENV_UNSAFE', `A sandboxed step may not set ${name}: it would act on the sandbox's own wrappers.`, {
        name,
      });
    }
  }
}

/**
 * Every mount below /resources, at a target of its own one level down (`/resources/<name>`, or a socket in
 * `/resources/<name>/`), from an absolute host path: a request cannot bind over the workspace or a system
 * folder, nor shadow another grant.
 */
function verifyResourceMounts(mounts: readonly ResourceMount[]): void {
  const seen = new Set<string>();
  const plain = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
  for (const mount of mounts) {
    const rel = mount.target.startsWith(RESOURCES_ROOT + '/') ? mount.target.slice(RESOURCES_ROOT.length + 1).split('/') : [];
    const ok =
      isAbsolute(mount.source) &&
      (mount.fd === undefined || (Number.isSafeInteger(mount.fd) && mount.fd >= 0)) &&
      !mount.source.includes('\0') &&
      (mount.kind === 'path'
        ? rel.length === 1 && plain.test(rel[0]!) && mount.folder === undefined
        : rel.length === 2 && plain.test(rel[0]!) && isFileName(rel[1]!) && mount.folder === `${RESOURCES_ROOT}/${rel[0]}`);
    if (!ok || seen.has(rel[0] ?? '')) throw invalid(`The resource mount at "${mount.target}" is not one the sandbox binds.`, { path: mount.target });
    seen.add(rel[0]!);
  }
}

function isFileName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('\0');
}

function invalid(message: string, details: Record<string, unknown> = {}): SandboxError {
  return new SandboxError('EXEC_SANDBOX_REQUEST_INVALID', message, details);
}

// ---------------------------------------------------------------------------------------------------------
// Tools, probe, workspace ownership
// ---------------------------------------------------------------------------------------------------------

const TOOL_DIRS = ['/usr/bin', '/bin', '/usr/sbin', '/sbin'];

/** The absolute path of an executable, from the configured path or PATH and the system directories. */
export function findTool(name: string, configured?: string, searchPath: readonly string[] = []): string | undefined {
  // System directories first: a root runner must not pick up a bwrap from a writable directory on PATH.
  const dirs = [...TOOL_DIRS, ...searchPath].filter(isAbsolute);
  const candidates = configured !== undefined ? [configured] : dirs.map((dir) => join(dir, name));
  return candidates.find((candidate) => {
    try {
      accessSync(candidate, constants.X_OK);
      return statSync(candidate).isFile();
    } catch {
      return false;
    }
  });
}

function requireTool(name: string, configured: string | undefined, searchPath: readonly string[] | undefined): string {
  const found = findTool(name, configured, searchPath);
  if (!found) throw new SandboxError('EXEC_SANDBOX_TOOL_MISSING', `${name} is not installed (scripts/system-deps.sh installs it).`, { tool: name });
  return found;
}

const probeCache = new Map<string, IsolationProbe>();

/**
 * Whether steps can run under bwrap here, found by running `/bin/true` once through the very plan a step
 * would get (bwrap can be installed and still fail: user namespaces disabled, no mount rights in a
 * container). Cached per configuration for the life of the process.
 */
export function probeIsolation(config: SandboxConfig = {}): IsolationProbe {
  const key = JSON.stringify(config);
  const cached = probeCache.get(key);
  if (cached) return cached;
  const probe = runProbe(config);
  probeCache.set(key, probe);
  return probe;
}

function runProbe(config: SandboxConfig): IsolationProbe {
  if (!findTool('bwrap', config.bwrapPath, config.searchPath)) return { available: 'none', reason: 'bwrap is not installed' };
  const root = mkdtempSync(join(tmpdir(), 'edge-runner-probe-'));
  const fds: number[] = [];
  try {
    const workspace = join(root, 'workspace');
    mkdirSync(workspace);
    grantWorkspaceToStep(workspace, config);
    const plan = planLaunch(
      { argv: ['/bin/true'], env: { PATH: '/usr/bin:/bin' }, workspace, limits: { ...DEFAULT_STEP_LIMITS }, mode: 'bwrap' },
      config,
    );
    // spawnSync cannot feed a pipe: the fd inputs (the seccomp program) come from files instead.
    (plan.fdInputs ?? []).forEach((bytes, i) => {
      const path = join(root, `fd-${i}`);
      writeFileSync(path, bytes, { mode: 0o600 });
      fds.push(openSync(path, 'r'));
    });
    const result = spawnSync(plan.file, plan.args, {
      cwd: plan.cwd,
      env: plan.env,
      stdio: ['ignore', 'ignore', 'pipe', ...fds],
      timeout: PROBE_TIMEOUT_MS,
    });
    if (result.error) return { available: 'none', reason: `bwrap could not be started: ${result.error.message}` };
    if (result.status === 0) return { available: 'bwrap' };
    const said = result.stderr.toString('utf8').trim().slice(0, PROBE_REASON_MAX_CHARS);
    return { available: 'none', reason: `bwrap ${result.signal ? `died of ${result.signal}` : `exited ${result.status}`}${said ? `: ${said}` : ''}` };
  } catch (err) {
    return { available: 'none', reason: err instanceof Error ? err.message : String(err) };
  } finally {
    for (const fd of fds) closeSync(fd);
    rmSync(root, { recursive: true, force: true });
  }
}

/**
 * The isolation a capsule gets: bwrap when it works here; 'none' for a best-effort capsule when it does not;
 * EXEC_ISOLATION_UNAVAILABLE for a capsule that requires it.
 */
export function selectIsolation(requirement: IsolationRequirement, probe: IsolationProbe): IsolationMode {
  if (probe.available === 'bwrap') return 'bwrap';
  switch (requirement) {
    case 'best-effort':
      return 'none';
    case 'required':
      throw new SandboxError('EXEC_ISOLATION_UNAVAILABLE', 'This host cannot isolate steps with bwrap.', { reason: probe.reason ?? 'unknown' });
  }
}

/**
 * Makes the workspace writable for the step user when the runner is root: every directory in it (the
 * workspace included) is handed to that user; files keep their owner, so read-only inputs stay read-only
 * (the step may still replace them, being the directory's owner). A no-op for a non-root runner. Symlinks
 * are never followed. Returns the identity the step runs as, if it differs from the runner's.
 */
export function grantWorkspaceToStep(workspace: string, config: SandboxConfig = {}): { uid: number; gid: number } | undefined {
  const id = stepIdentity(config);
  if (!id) return undefined;
  const root = resolve(workspace);
  if (!lstatSync(root).isDirectory()) throw invalid(`The workspace "${root}" is not a directory.`, { path: root });
  const pending = [root];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    lchownSync(dir, id.uid, id.gid);
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) pending.push(join(dir, entry.name));
    }
  }
  return id;
}

// ---------------------------------------------------------------------------------------------------------
// Why a step ended
// ---------------------------------------------------------------------------------------------------------

/**
 * Why a step that failed ended, and whether the runner knows it or only guesses:
 *   'cpu-limit'        guessed, always: it died of SIGXCPU (RLIMIT_CPU's soft limit), which a step can also
 *                      send itself at any moment (a review did, after sleeping long enough for any bound on
 *                      wall time), and the runner has no measure of the CPU time it used; or it exited 152
 *                      (128 + SIGXCPU) under bwrap, which is how bwrap reports that death, and also what a
 *                      step that calls exit(152) looks like
 *   'memory-limit'     known: the kernel OOM-killed a process in the step's memory cgroup (its oom_kill count);
 *                      guessed: its stderr shows an allocation failure (RLIMIT_DATA gives ENOMEM, which only
 *                      the step can report)
 *   'process-limit'    guessed: its stderr shows fork/clone failing with EAGAIN (RLIMIT_NPROC)
 *   'open-files-limit' guessed: its stderr shows EMFILE (RLIMIT_NOFILE)
 *   'timeout'          known: the runner's timer ended it
 *   'signal'           it died of another signal: SIGKILL may be the hard CPU limit or an OOM kill outside a
 *                      cgroup, SIGSEGV/SIGABRT may be an allocation failure; these cannot be told apart
 *   'none'             it ended by itself, or nothing points at a limit
 * Words on stderr are the step's own: a step can print "Cannot allocate memory" and exit 1. They are never
 * a known limit; the evidence records them as `limitInferred`, apart from `limit`.
 */
export type LimitReason = 'cpu-limit' | 'process-limit' | 'memory-limit' | 'open-files-limit' | 'timeout' | 'signal' | 'none';

/**
 * What the reason rests on. Known: the signal the process died of, as the runner saw it; the step
 * cgroup's OOM kill count; the runner's timer. Guessed: an exit code above 128, which bwrap (and any shell)
 * reports for a child that died of signal code-128, and which a program may also choose itself; the step's
 * own words on stderr.
 */
export type LimitBasis = 'signal' | 'cgroup' | 'timer' | 'exit-code' | 'stderr' | 'none';

export interface LimitClassification {
  reason: LimitReason;
  basis: LimitBasis;
  /** True when the basis is a fact the runner observed (signal, cgroup, timer), false for a guess. */
  known: boolean;
}

export interface StepEnd {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** The last few KiB of stderr, decoded; used for pattern matching only, never recorded. */
  stderrTail?: string;
  /** OOM kills the kernel counted in the step's memory cgroup; undefined without one. */
  oomKills?: number;
}

const STDERR_PATTERNS: readonly { reason: LimitReason; pattern: RegExp }[] = [
  { reason: 'process-limit', pattern: /Resource temporarily unavailable|\bEAGAIN\b|Cannot fork|can't fork/i },
  {
    reason: 'memory-limit',
    pattern:
      /Cannot allocate memory|\bENOMEM\b|out of memory|allocation failed|bad_alloc|MemoryError|\bx(?:re)?alloc\b|Fatal process OOM|memory exhausted/i,
  },
  { reason: 'open-files-limit', pattern: /Too many open files|\bEMFILE\b/i },
];

const SIGNAL_EXIT_BASE = 128;

/** The signal an exit code above 128 stands for, as bwrap reports a sandboxed child's death. */
export function toSignalFromExitCode(exitCode: number | null): NodeJS.Signals | null {
  if (exitCode === null || exitCode <= SIGNAL_EXIT_BASE) return null;
  const number = exitCode - SIGNAL_EXIT_BASE;
  const found = Object.entries(osConstants.signals).find(([, value]) => value === number);
  return found ? (found[0] as NodeJS.Signals) : null;
}

export function classifyLimitExit(end: StepEnd): LimitClassification {
  const known = (reason: LimitReason, basis: LimitBasis): LimitClassification => ({ reason, basis, known: true });
  const guessed = (reason: LimitReason, basis: LimitBasis): LimitClassification => ({ reason, basis, known: false });
  const reported = toSignalFromExitCode(end.exitCode);
  const failed = end.timedOut || end.signal !== null || end.exitCode !== 0;
  if (!failed) return known('none', 'none');
  // The runner's own timer first: an OOM kill the step provokes in a child must not hide the limit the
  // runner enforced (a review did that).
  if (end.timedOut) return known('timeout', 'timer');
  if ((end.oomKills ?? 0) > 0) return known('memory-limit', 'cgroup');
  if (end.signal === 'SIGXCPU') return guessed('cpu-limit', 'signal');
  if (end.signal === null && reported === 'SIGXCPU') return guessed('cpu-limit', 'exit-code');
  const tail = end.stderrTail ?? '';
  for (const { reason, pattern } of STDERR_PATTERNS) {
    if (pattern.test(tail)) return guessed(reason, 'stderr');
  }
  if (end.signal !== null) return known('signal', 'signal');
  if (reported !== null) return guessed('signal', 'exit-code');
  return known('none', 'none');
}
