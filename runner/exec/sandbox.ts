/**
 * Turns a step into the command line that runs it isolated and limited. The spawner (step.ts) launches the
 * returned LaunchPlan with `detached: true`; this module only decides what to launch.
 *
 * mode 'bwrap' (bubblewrap), as root, the chain is
 *   bwrap [namespaces, mounts] -- setpriv [drop to the step user] -- prlimit [limits] -- argv
 *   - bwrap runs privileged so it can mount over any path and bind a workspace below a 0700 state folder;
 *     it drops every capability except CAP_SETUID/CAP_SETGID, which setpriv uses once and then clears
 *     (bounding set emptied, no_new_privs set), so the step runs as an ordinary uid (65534 by default).
 *   - That real, unprivileged uid is what makes RLIMIT_NPROC bite: the kernel ignores it for uid 0, and a
 *     user namespace mapping the step to "nobody" inside would still be host root outside.
 * mode 'bwrap', as another user: bwrap creates a user namespace itself (unprivileged userns), no setpriv.
 * mode 'none': prlimit -- argv, with the spawn uid/gid dropping to the step user when the runner is root.
 *
 * Limits are rlimits set by prlimit (util-linux) just before exec, inside the sandbox:
 *   cpuSeconds  -> RLIMIT_CPU soft N (SIGXCPU), hard N + CPU_KILL_GRACE_SECONDS (SIGKILL if SIGXCPU is ignored)
 *   memoryBytes -> RLIMIT_DATA (heap and private writable mappings). Not RLIMIT_AS: V8 reserves its code
 *                  range up front, so node does not even start under an address-space limit of 512 MiB.
 *                  The private /tmp and /dev/shm tmpfs are capped at memoryBytes each as well.
 *   openFiles   -> RLIMIT_NOFILE
 *   processes   -> RLIMIT_NPROC (counts tasks, threads included, of the step's real uid)
 *   core dumps  -> RLIMIT_CORE 0, so a crashing hog does not write a core into the workspace.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, lchownSync, lstatSync, mkdtempSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { DEFAULT_CONFIG } from '../config/config.js';
import { SandboxError } from './sandbox-errors.js';

/** What was actually used for a step; recorded in the evidence. */
export type IsolationMode = 'bwrap' | 'none';
/** What a capsule asks for. */
export type IsolationRequirement = 'required' | 'best-effort';

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
 * Host paths a step never sees, whatever the request says: other users' homes and runtime sockets (a
 * read-only bind does not stop connect() on a unix socket). Each is covered by an empty tmpfs.
 */
export const DEFAULT_HIDDEN_PATHS: readonly string[] = Object.freeze(['/root', '/home', '/run', '/var/tmp']);

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
  /** Always hidden in mode 'bwrap'. Default DEFAULT_HIDDEN_PATHS. */
  hiddenPaths?: readonly string[];
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
   * directory is covered by an empty tmpfs, a file by /dev/null. The workspace stays visible even when it
   * lies below one of them.
   */
  hide?: string[];
}

export interface LaunchPlan {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  uid?: number;
  gid?: number;
}

// ---------------------------------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------------------------------

export function planLaunch(req: LaunchRequest, config: SandboxConfig = {}): LaunchPlan {
  verifyLaunchRequest(req);
  const prlimit = requireTool('prlimit', config.prlimitPath, config.searchPath);
  const limited = [prlimit, ...toPrlimitArgs(req.limits), '--', ...req.argv];
  const runAs = stepIdentity(config);
  const workspace = realpathSync(req.workspace);

  switch (req.mode) {
    case 'none': {
      const [file, ...args] = limited as [string, ...string[]];
      return { file, args, env: { ...req.env }, cwd: workspace, ...(runAs ?? {}) };
    }
    case 'bwrap': {
      verifyWrapperEnv(req.env);
      const bwrap = requireTool('bwrap', config.bwrapPath, config.searchPath);
      const dropPrivileges = runAs ? toSetprivArgv(requireTool('setpriv', config.setprivPath, config.searchPath), runAs) : [];
      const hide = [...(config.hiddenPaths ?? DEFAULT_HIDDEN_PATHS), ...(req.hide ?? [])];
      const args = [
        ...toBwrapArgs({ workspace, hide, tmpfsBytes: req.limits.memoryBytes, privileged: runAs !== undefined }),
        '--',
        ...dropPrivileges,
        ...limited,
      ];
      // The environment goes through spawn, not --setenv: argv is world-readable in /proc, environ is not.
      return { file: bwrap, args, env: { ...req.env }, cwd: workspace };
    }
  }
}

/** `--cpu=soft:hard --data=N --nofile=N --nproc=N --core=0`, without the trailing `--`. */
export function toPrlimitArgs(limits: StepLimits): string[] {
  return [
    `--cpu=${limits.cpuSeconds}:${limits.cpuSeconds + CPU_KILL_GRACE_SECONDS}`,
    `--data=${limits.memoryBytes}`,
    `--nofile=${limits.openFiles}`,
    `--nproc=${limits.processes}`,
    '--core=0',
  ];
}

interface BwrapLayout {
  workspace: string;
  hide: readonly string[];
  tmpfsBytes: number;
  /** bwrap runs as root (no user namespace); capabilities for setpriv are kept. */
  privileged: boolean;
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
    '--ro-bind',
    '/',
    '/', // the host file system, read-only
    '--dev',
    '/dev', // a private /dev (null, zero, random, tty, shm...)
    '--proc',
    '/proc', // the PID namespace's own /proc
    ...toTmpfs('/tmp', layout.tmpfsBytes, '1777'),
    ...toTmpfs('/dev/shm', layout.tmpfsBytes, '1777'),
  ];
  const covered = ['/tmp'];
  for (const path of layout.hide) {
    const hidden = toHiddenMount(path, layout.tmpfsBytes);
    if (!hidden) continue;
    if (hidden.path === layout.workspace || hidden.path.startsWith(layout.workspace + sep)) {
      // The workspace bind comes last and would cover it again.
      throw invalid(`"${path}" lies inside the workspace and cannot be hidden from the step.`, { path });
    }
    args.push(...hidden.args);
    if (hidden.directory) covered.push(hidden.path);
  }
  // Re-expose the workspace read-write, even below a tmpfs: make its missing parents traversable first.
  for (const parent of parentsBelowCover(layout.workspace, covered)) args.push('--perms', '0755', '--dir', parent);
  args.push('--bind', layout.workspace, layout.workspace, '--chdir', layout.workspace);
  if (layout.privileged) args.push('--cap-add', 'CAP_SETUID', '--cap-add', 'CAP_SETGID');
  return args;
}

function toTmpfs(path: string, bytes: number, perms: string): string[] {
  return ['--size', String(bytes), '--perms', perms, '--tmpfs', path];
}

function toHiddenMount(path: string, tmpfsBytes: number): { path: string; directory: boolean; args: string[] } | undefined {
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    return undefined; // nothing there to hide
  }
  if (real === '/') throw invalid('The root directory cannot be hidden from a step.', { path });
  if (statSync(real).isDirectory()) return { path: real, directory: true, args: toTmpfs(real, tmpfsBytes, '0755') };
  return { path: real, directory: false, args: ['--ro-bind', '/dev/null', real] };
}

/** The ancestors of `target` that lie strictly inside a covered (tmpfs) path, outermost first. */
function parentsBelowCover(target: string, covered: readonly string[]): string[] {
  const parents: string[] = [];
  for (let dir = dirname(target); dir !== dirname(dir); dir = dirname(dir)) {
    if (covered.some((root) => dir.startsWith(root + sep))) parents.unshift(dir);
  }
  return parents;
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
  const workspace = mkdtempSync(join(tmpdir(), 'edge-runner-probe-'));
  try {
    grantWorkspaceToStep(workspace, config);
    const plan = planLaunch(
      { argv: ['/bin/true'], env: { PATH: '/usr/bin:/bin' }, workspace, limits: { ...DEFAULT_STEP_LIMITS }, mode: 'bwrap' },
      config,
    );
    const result = spawnSync(plan.file, plan.args, { cwd: plan.cwd, env: plan.env, stdio: ['ignore', 'ignore', 'pipe'], timeout: PROBE_TIMEOUT_MS });
    if (result.error) return { available: 'none', reason: `bwrap could not be started: ${result.error.message}` };
    if (result.status === 0) return { available: 'bwrap' };
    const said = result.stderr.toString('utf8').trim().slice(0, PROBE_REASON_MAX_CHARS);
    return { available: 'none', reason: `bwrap ${result.signal ? `died of ${result.signal}` : `exited ${result.status}`}${said ? `: ${said}` : ''}` };
  } catch (err) {
    return { available: 'none', reason: err instanceof Error ? err.message : String(err) };
  } finally {
    rmSync(workspace, { recursive: true, force: true });
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
 * Why a step that failed ended, as far as can be known from outside:
 *   'cpu-limit'        it died of SIGXCPU (RLIMIT_CPU soft limit), or exited 152 (128 + SIGXCPU) under bwrap
 *   'process-limit'    its stderr shows fork/clone failing with EAGAIN (RLIMIT_NPROC)
 *   'memory-limit'     its stderr shows an allocation failure (RLIMIT_DATA)
 *   'open-files-limit' its stderr shows EMFILE (RLIMIT_NOFILE)
 *   'timeout'          the runner's timer ended it, and nothing above was seen
 *   'signal'           it died of another signal: SIGKILL may be the hard CPU limit or the kernel OOM
 *                      killer, SIGSEGV/SIGABRT may be an allocation failure; these cannot be told apart
 *   'none'             it ended by itself, or no limit explains the failure
 */
export type LimitReason = 'cpu-limit' | 'process-limit' | 'memory-limit' | 'open-files-limit' | 'timeout' | 'signal' | 'none';

/**
 * What the reason rests on: the signal the process died of; an exit code above 128, which bwrap (and any
 * shell) reports for a child that died of signal code-128 — a program may exit with such a code itself;
 * the step's own words on stderr (a guess); or the runner's timer.
 */
export type LimitBasis = 'signal' | 'exit-code' | 'stderr' | 'timer' | 'none';

export interface LimitClassification {
  reason: LimitReason;
  basis: LimitBasis;
}

export interface StepEnd {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** The last few KiB of stderr, decoded; used for pattern matching only, never recorded. */
  stderrTail?: string;
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
  const reported = toSignalFromExitCode(end.exitCode);
  if (end.signal === 'SIGXCPU') return { reason: 'cpu-limit', basis: 'signal' };
  if (end.signal === null && reported === 'SIGXCPU') return { reason: 'cpu-limit', basis: 'exit-code' };
  const failed = end.timedOut || end.signal !== null || end.exitCode !== 0;
  if (!failed) return { reason: 'none', basis: 'none' };
  const tail = end.stderrTail ?? '';
  for (const { reason, pattern } of STDERR_PATTERNS) {
    if (pattern.test(tail)) return { reason, basis: 'stderr' };
  }
  if (end.timedOut) return { reason: 'timeout', basis: 'timer' };
  if (end.signal !== null) return { reason: 'signal', basis: 'signal' };
  if (reported !== null) return { reason: 'signal', basis: 'exit-code' };
  return { reason: 'none', basis: 'none' };
}
