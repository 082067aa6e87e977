/**
 * The runner's one configuration type. Every default lives here, with its unit in its name or beside it, and
 * the configuration is merged once, in this order (later wins): defaults < the state folder's runner.json
 * (`stepUser`, and `settings`) < the operator's configuration file (TOML, runner/cli/config-file.ts reads it)
 * < the environment < command-line flags. The merge also says where every value came from (its origin), which
 * `config check` prints. This is the only module that reads `process.env`; everything else is handed the
 * values it needs.
 */
import { ConfigError, type ConfigErrorDetails } from './errors.js';

export type LogLevel = 'silent' | 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
const LOG_LEVELS: readonly LogLevel[] = ['silent', 'trace', 'debug', 'info', 'warn', 'error', 'fatal'];

export interface StepUser {
  uid: number;
  gid: number;
}

/**
 * One operator-granted resource. Exactly one member:
 * - `path`: a host file or folder, bound read-only;
 * - `socket`: a host unix socket (a database's, say), bound into the sandbox;
 * - `tcp`: a loopback or private `host:port`, reached through a forwarder the runner runs (a unix socket
 *   bound into the sandbox), so the step still has no network of its own.
 */
export type Resource = { path: string } | { socket: string } | { tcp: string };

/**
 * One change target: a folder on the host that remediate capsules may change (runner/remediate/), by name.
 * Changes are staged in a scratch copy first and applied only once approved; `healthCheck` is the
 * operator's own argv, run on the host after an apply (exit 0 = healthy), whose failure rolls it back.
 */
export interface ChangeTarget {
  /** An absolute folder, other than /. */
  path: string;
  /** argv, run without a shell (unless it names one), as the runner's user, in the target folder. */
  healthCheck?: string[];
  /** Seconds the health check may take before it is killed and counted a failure (default 60). */
  healthCheckTimeoutSeconds?: number;
  /** The most bytes of files the target may hold to be copied and digested (default 256 MiB). */
  maxBytes?: number;
  /** The most entries (files, folders, links) it may hold (default 100,000). */
  maxEntries?: number;
}

export interface RunnerConfig {
  exec: {
    /** A step without its own `timeoutSeconds` gets this many seconds. */
    defaultStepTimeoutSeconds: number;
    /** Between SIGTERM and SIGKILL when a step times out, in milliseconds. */
    killGraceMs: number;
    /** Bytes of each of stdout and stderr kept per step (the rest is counted and digested, not kept). */
    outputCapBytes: number;
    /** Bytes a collected file may have; a larger one is recorded as too-large and not read. */
    collectMaxBytes: number;
    /** Keep each run's workspace after the run (debugging only: it holds the step's files). */
    keepWorkspace: boolean;
  };
  /** Per-step resource limits (prlimit). */
  limits: {
    /** CPU seconds; SIGXCPU at the limit, SIGKILL a grace later. */
    cpuSeconds: number;
    /** Data segment (RLIMIT_DATA) and private /tmp, in bytes. */
    memoryBytes: number;
    /** Open file descriptors. */
    openFiles: number;
    /** Tasks (processes and threads) of the step's uid; only enforced when that uid is not 0. */
    processes: number;
  };
  /** What a bwrap step sees of the host, and how its memory is bounded as a whole. */
  sandbox: {
    /** Host folders (or files) a step sees read-only, by absolute path; everything else of the host is absent. */
    systemFolders: readonly string[];
    /** Bytes of the step's private /tmp (tmpfs). */
    tmpBytes: number;
    /** Bytes of the step's private /dev/shm (tmpfs). */
    shmBytes: number;
    /** A cgroup folder (below /sys/fs/cgroup) to make step memory cgroups in; '' finds the runner's own. */
    memoryCgroup: string;
    /** Refuse to run steps when no memory cgroup can be made (instead of rlimits alone). */
    requireMemoryCgroup: boolean;
  };
  /** When the runner is root, steps run as this uid/gid (65534 is nobody/nogroup). */
  stepUser: StepUser;
  store: {
    /** How long a write waits for another process's lock on the database, in milliseconds. */
    busyTimeoutMs: number;
    /**
     * Free bytes the state folder's file system must have for a run to start (statfs, as an unprivileged
     * user sees it); below it the capsule is refused with RUN_DISK_RESERVE, a refusal the log has room for.
     */
    reserveBytes: number;
  };
  /** The coordinator link (runner/api, runner/outbox, runner/agent/daemon.ts): where, how to trust it, how patiently. */
  coordinator: {
    /**
     * The coordinator's base URL (`https://host[:port][/prefix]`); '' = no coordinator (the agent refuses to
     * start). Plain `http:` only to a loopback host (127.0.0.0/8, ::1, localhost).
     */
    url: string;
    /** A PEM file of the CA(s) the coordinator's certificate must chain to; '' = the system store. */
    caFile: string;
    /** A PEM file of the CA(s) an `https:` proxy's own certificate must chain to; '' = the system store. */
    proxyCaFile: string;
    /** The proxy for `https:` URLs (HTTPS_PROXY); user:password in it is sent as Proxy-Authorization. '' = none. */
    httpsProxy: string;
    /** The proxy for `http:` URLs (HTTP_PROXY); '' = none. */
    httpProxy: string;
    /** Hosts reached without the proxy (NO_PROXY: comma-separated names, `.suffix`, `host:port`, `*`). */
    noProxy: string;
    /** How long one long poll of the work feed waits for work, in seconds (the coordinator allows 0 to 60). */
    pollWaitSeconds: number;
    /** The most a request may take beyond a long poll's wait, in milliseconds (connect, headers and body). */
    requestTimeoutMs: number;
    /** How long a request signature stays valid (`expires - created`), in seconds. */
    signatureTtlSeconds: number;
    /** The first retry's backoff ceiling, in milliseconds; it doubles per failure up to backoffCapMs (full jitter). */
    backoffBaseMs: number;
    /** The longest backoff between two attempts, in milliseconds (a Retry-After beyond it is capped to it). */
    backoffCapMs: number;
    /** At SIGTERM, how long a running step may take to end on its own before it is aborted, in milliseconds. */
    stopGraceMs: number;
    /** At SIGTERM, how long the agent keeps shipping its outbox before it exits, in milliseconds. */
    flushMs: number;
  };
  /**
   * What steps may reach beyond their workspace: the operator's grants, by name. A capsule lists the names
   * it `needs`; exactly those are bound into its steps' sandbox, and a capsule needing any other is refused.
   * The evidence records the names, never the paths or addresses.
   */
  resources: Readonly<Record<string, Resource>>;
  /** Folders remediate capsules may change, by name (a capsule's `change.target`); none by default. */
  targets: Readonly<Record<string, ChangeTarget>>;
  /** The air-gapped transport (`agent --spool DIR`): capsules from DIR/in/, answers to DIR/out/. */
  spool: {
    /** An absolute folder; '' = no spool (the agent talks to the coordinator). */
    dir: string;
  };
  /** The operator log (JSON lines on stderr): pino level; silent by default. */
  logLevel: LogLevel;
  /** Print stack traces with errors (EDGE_RUNNER_DEBUG=1). */
  debug: boolean;
  /** Folders searched for bwrap, prlimit and setpriv after the system ones (from PATH). */
  toolSearchPath: readonly string[];
}

export const DEFAULT_CONFIG: Readonly<RunnerConfig> = deepFreeze({
  exec: {
    defaultStepTimeoutSeconds: 600, // seconds
    killGraceMs: 2000, // ms
    outputCapBytes: 8 * 1024 * 1024, // bytes per stream
    collectMaxBytes: 64 * 1024 * 1024, // bytes per collected file
    keepWorkspace: false,
  },
  limits: {
    cpuSeconds: 300, // seconds
    memoryBytes: 1024 * 1024 * 1024, // bytes (1 GiB)
    openFiles: 1024,
    processes: 256,
  },
  sandbox: {
    systemFolders: ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc'],
    tmpBytes: 256 * 1024 * 1024, // bytes (256 MiB)
    shmBytes: 64 * 1024 * 1024, // bytes (64 MiB)
    memoryCgroup: '',
    requireMemoryCgroup: false,
  },
  stepUser: { uid: 65534, gid: 65534 },
  store: {
    busyTimeoutMs: 5000, // ms
    reserveBytes: 128 * 1024 * 1024, // bytes (128 MiB)
  },
  coordinator: {
    url: '',
    caFile: '',
    proxyCaFile: '',
    httpsProxy: '',
    httpProxy: '',
    noProxy: '',
    pollWaitSeconds: 30, // seconds
    requestTimeoutMs: 30_000, // ms
    signatureTtlSeconds: 60, // seconds
    backoffBaseMs: 1000, // ms
    backoffCapMs: 300_000, // ms (5 minutes)
    stopGraceMs: 10_000, // ms
    flushMs: 5000, // ms
  },
  resources: {},
  targets: {},
  spool: { dir: '' },
  logLevel: 'silent',
  debug: false,
  toolSearchPath: [],
} satisfies RunnerConfig);

/** What may be set in runner.json `settings` or by flags: any subset of the sections above. */
export interface ConfigOverrides {
  exec?: Partial<RunnerConfig['exec']>;
  limits?: Partial<RunnerConfig['limits']>;
  sandbox?: Partial<RunnerConfig['sandbox']>;
  stepUser?: StepUser;
  store?: Partial<RunnerConfig['store']>;
  coordinator?: Partial<RunnerConfig['coordinator']>;
  /** Merged by name: a later layer's entry replaces that name's entry. */
  resources?: Record<string, Resource>;
  /** Merged by name, as resources are. */
  targets?: Record<string, ChangeTarget>;
  spool?: Partial<RunnerConfig['spool']>;
  logLevel?: LogLevel;
  debug?: boolean;
}

/** Where a layer of settings came from, in merge order. */
export type ConfigSource = 'state' | 'file' | 'environment' | 'flags';

export interface ConfigSources {
  /** From the state folder's runner.json: its `stepUser` and `settings` members. */
  state?: ConfigOverrides;
  /** The operator's configuration file (`--config FILE` or EDGE_RUNNER_CONFIG): the same shape as `settings`. */
  file?: ConfigOverrides;
  /** The file's path, named in refusals and origins. */
  filePath?: string;
  /** The process environment; `readEnvironment()` gives the real one. */
  env?: Readonly<Record<string, string | undefined>>;
  flags?: ConfigOverrides;
  /** The command-line flag that set a setting (`coordinator.url` -> `--coordinator`), named in origins. */
  flagNames?: Readonly<Record<string, string>>;
}

/**
 * Where one effective value came from: the default, runner.json, the file (by path), an environment
 * variable (by name) or a flag (by name). Settings are named by their path (`exec.killGraceMs`,
 * `resources.NAME`, `stepUser`, `logLevel`).
 */
export interface ConfigOrigin {
  source: 'default' | ConfigSource;
  /** The file's path, the variable's name or the flag's; absent for defaults and runner.json. */
  where?: string;
}

/** The merged configuration and the origin of every setting in it. */
export interface ResolvedConfig {
  config: RunnerConfig;
  origins: Readonly<Record<string, ConfigOrigin>>;
}

/** The process environment, read once by the caller that builds the configuration (the CLI). */
export function readEnvironment(): Readonly<Record<string, string | undefined>> {
  return { ...process.env };
}

/** Merges defaults < state < file < environment < flags, checks every value, and returns a frozen configuration. */
export function resolveConfig(sources: ConfigSources = {}): RunnerConfig {
  return resolveConfigWithOrigins(sources).config;
}

/** resolveConfig, and where each effective value came from (`config check` prints both). */
export function resolveConfigWithOrigins(sources: ConfigSources = {}): ResolvedConfig {
  const environment = fromEnvironment(sources.env ?? {});
  const layers: { source: ConfigSource; overrides: ConfigOverrides; whereOf: (setting: string) => string | undefined }[] = [
    { source: 'state', overrides: sources.state ?? {}, whereOf: () => undefined },
    { source: 'file', overrides: sources.file ?? {}, whereOf: () => sources.filePath },
    { source: 'environment', overrides: environment.overrides, whereOf: (setting) => environment.variables[setting] },
    { source: 'flags', overrides: sources.flags ?? {}, whereOf: (setting) => sources.flagNames?.[setting] },
  ];
  const origins: Record<string, ConfigOrigin> = {};
  for (const setting of settingNames(DEFAULT_CONFIG)) origins[setting] = { source: 'default' };
  let config: RunnerConfig = structuredClone(DEFAULT_CONFIG) as RunnerConfig;
  for (const { source, overrides, whereOf } of layers) {
    checkLayer(overrides, source, source === 'file' ? sources.filePath : undefined);
    config = {
      ...config,
      exec: { ...config.exec, ...overrides.exec },
      limits: { ...config.limits, ...overrides.limits },
      sandbox: { ...config.sandbox, ...overrides.sandbox },
      store: { ...config.store, ...overrides.store },
      coordinator: { ...config.coordinator, ...overrides.coordinator },
      resources: { ...config.resources, ...overrides.resources },
      targets: { ...config.targets, ...overrides.targets },
      spool: { ...config.spool, ...overrides.spool },
      ...(overrides.stepUser ? { stepUser: { uid: overrides.stepUser.uid, gid: overrides.stepUser.gid } } : {}),
      ...(overrides.logLevel !== undefined ? { logLevel: overrides.logLevel } : {}),
      ...(overrides.debug !== undefined ? { debug: overrides.debug } : {}),
    };
    for (const setting of settingNames(overrides)) {
      const where = whereOf(setting);
      origins[setting] = where === undefined ? { source } : { source, where };
    }
  }
  const path = sources.env?.PATH;
  config.toolSearchPath = path ? path.split(':').filter((dir) => dir.startsWith('/')) : [];
  if (path) origins.toolSearchPath = { source: 'environment', where: 'PATH' };
  // The layer that last set a coordinator setting, named in a refusal of the merged values.
  const sourceOf = (name: keyof RunnerConfig['coordinator']): ConfigSource =>
    layers.findLast(({ overrides }) => overrides.coordinator?.[name] !== undefined)?.source ?? 'flags';
  verifyCoordinatorLink(config.coordinator, sourceOf);
  return { config: deepFreeze(config), origins: Object.freeze(origins) };
}

/** checkOverrides, with a refusal of the file's values naming the file. */
function checkLayer(overrides: ConfigOverrides, source: ConfigSource, file: string | undefined): void {
  try {
    checkOverrides(overrides, source, file);
  } catch (err) {
    if (file === undefined || !(err instanceof ConfigError) || err.code !== 'CONFIG_INVALID') throw err;
    throw new ConfigError('CONFIG_INVALID', `In ${file}: ${err.message}`, err.details as ConfigErrorDetails['CONFIG_INVALID'], { cause: err });
  }
}

/** The settings a layer sets, by path: a section's members one by one, resources by name, the rest whole. */
function settingNames(overrides: ConfigOverrides | Readonly<RunnerConfig>): string[] {
  const names: string[] = [];
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    const sectioned = key !== 'stepUser' && typeof value === 'object' && value !== null && !Array.isArray(value);
    if (sectioned) for (const name of Object.keys(value)) names.push(`${key}.${name}`);
    else names.push(key);
  }
  return names;
}

/**
 * The merged coordinator settings, checked together: the backoff cap is not below its base, and plain HTTP
 * goes only to a loopback host (a request signature proves who sent it, but without TLS anyone on the way
 * reads the evidence's digests and can answer for the coordinator).
 */
function verifyCoordinatorLink(link: RunnerConfig['coordinator'], sourceOf: (name: keyof RunnerConfig['coordinator']) => ConfigSource): void {
  if (link.backoffCapMs < link.backoffBaseMs) {
    throw invalid(
      'coordinator.backoffCapMs',
      sourceOf('backoffCapMs'),
      `is ${link.backoffCapMs}, below coordinator.backoffBaseMs (${link.backoffBaseMs})`,
    );
  }
  if (link.url === '') return;
  const url = new URL(link.url);
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    throw new ConfigError(
      'CONFIG_COORDINATOR_PLAIN_HTTP',
      `The coordinator URL uses plain http to ${url.hostname}, which is not a loopback host; use https.`,
      { setting: 'coordinator.url', source: sourceOf('url'), host: url.hostname },
    );
  }
}

/** 127.0.0.0/8, ::1 and localhost (as WHATWG URL parsing spells them: IPv6 in brackets, IPv4 normalised). */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  if (host === 'localhost' || host === '[::1]' || host === '::1') return true;
  const quad = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  return quad !== null && quad.slice(1).every((part) => Number(part) <= 255) && quad[1] === '127';
}

/** A coordinator base URL: http(s), a host, no credentials, query or fragment; at most 2048 characters. */
function isCoordinatorUrl(value: unknown): boolean {
  if (value === '') return true;
  if (typeof value !== 'string' || value.length > 2048) return false;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  return (
    (url.protocol === 'https:' || url.protocol === 'http:') &&
    url.hostname !== '' &&
    url.username === '' &&
    url.password === '' &&
    url.search === '' &&
    url.hash === ''
  );
}

/** A proxy URL: http(s) with a host; user:password allowed (it is the proxy's authentication). */
function isProxyUrl(value: unknown): boolean {
  if (value === '') return true;
  if (typeof value !== 'string' || value.length > 2048) return false;
  try {
    const url = new URL(value);
    return (
      (url.protocol === 'http:' || url.protocol === 'https:') &&
      url.hostname !== '' &&
      (url.pathname === '/' || url.pathname === '') &&
      url.search === '' &&
      url.hash === ''
    );
  } catch {
    return false;
  }
}

/** The environment's settings, and the variable that set each (by setting path). */
function fromEnvironment(env: Readonly<Record<string, string | undefined>>): { overrides: ConfigOverrides; variables: Record<string, string> } {
  const out: ConfigOverrides = {};
  const variables: Record<string, string> = {};
  const given = (name: string): string | undefined => (env[name] !== undefined && env[name] !== '' ? env[name] : undefined);
  const level = given('EDGE_RUNNER_LOG_LEVEL');
  if (level !== undefined) {
    if (!(LOG_LEVELS as readonly string[]).includes(level))
      throw invalid('EDGE_RUNNER_LOG_LEVEL', 'environment', `is "${level}", not one of ${LOG_LEVELS.join(', ')}`);
    out.logLevel = level as LogLevel;
    variables.logLevel = 'EDGE_RUNNER_LOG_LEVEL';
  }
  const debug = given('EDGE_RUNNER_DEBUG');
  if (debug !== undefined) {
    out.debug = debug !== '0';
    variables.debug = 'EDGE_RUNNER_DEBUG';
  }
  const keep = given('EDGE_RUNNER_KEEP_WORKSPACE');
  if (keep !== undefined) {
    out.exec = { keepWorkspace: keep !== '0' };
    variables['exec.keepWorkspace'] = 'EDGE_RUNNER_KEEP_WORKSPACE';
  }
  const timeout = given('EDGE_RUNNER_STEP_TIMEOUT_SECONDS');
  if (timeout !== undefined) {
    out.exec = { ...out.exec, defaultStepTimeoutSeconds: toInteger(timeout, 'EDGE_RUNNER_STEP_TIMEOUT_SECONDS') };
    variables['exec.defaultStepTimeoutSeconds'] = 'EDGE_RUNNER_STEP_TIMEOUT_SECONDS';
  }
  const busy = given('EDGE_RUNNER_BUSY_TIMEOUT_MS');
  if (busy !== undefined) {
    out.store = { busyTimeoutMs: toInteger(busy, 'EDGE_RUNNER_BUSY_TIMEOUT_MS') };
    variables['store.busyTimeoutMs'] = 'EDGE_RUNNER_BUSY_TIMEOUT_MS';
  }
  const reserve = given('EDGE_RUNNER_RESERVE_BYTES');
  if (reserve !== undefined) {
    out.store = { ...out.store, reserveBytes: toInteger(reserve, 'EDGE_RUNNER_RESERVE_BYTES') };
    variables['store.reserveBytes'] = 'EDGE_RUNNER_RESERVE_BYTES';
  }
  const coordinator = coordinatorFromEnvironment(env);
  if (Object.keys(coordinator.values).length > 0) out.coordinator = coordinator.values;
  for (const [name, variable] of Object.entries(coordinator.variables)) variables[`coordinator.${name}`] = variable;
  return { overrides: out, variables };
}

/** The variable naming the operator's configuration file when no `--config` flag does. */
export const CONFIG_FILE_VARIABLE = 'EDGE_RUNNER_CONFIG';

/** The configuration file the environment names (EDGE_RUNNER_CONFIG), or undefined. */
export function configFileFromEnvironment(env: Readonly<Record<string, string | undefined>>): string | undefined {
  const path = env[CONFIG_FILE_VARIABLE];
  return path === undefined || path === '' ? undefined : path;
}

/**
 * The coordinator's URL and CA file (EDGE_RUNNER_COORDINATOR_URL, EDGE_RUNNER_CA_FILE), and the proxy
 * settings as curl and undici read them: the lower-case name first (https_proxy, http_proxy, no_proxy), then
 * the upper-case one. An empty value is the same as an absent one.
 */
function coordinatorFromEnvironment(env: Readonly<Record<string, string | undefined>>): {
  values: Partial<RunnerConfig['coordinator']>;
  variables: Record<string, string>;
} {
  const values: Partial<Mutable<RunnerConfig['coordinator']>> = {};
  const variables: Record<string, string> = {};
  const settings: [keyof RunnerConfig['coordinator'], string[]][] = [
    ['url', ['EDGE_RUNNER_COORDINATOR_URL']],
    ['caFile', ['EDGE_RUNNER_CA_FILE']],
    ['proxyCaFile', ['EDGE_RUNNER_PROXY_CA_FILE']],
    ['httpsProxy', ['https_proxy', 'HTTPS_PROXY']],
    ['httpProxy', ['http_proxy', 'HTTP_PROXY']],
    ['noProxy', ['no_proxy', 'NO_PROXY']],
  ];
  for (const [name, candidates] of settings) {
    const variable = candidates.find((candidate) => env[candidate] !== undefined && env[candidate] !== '');
    if (variable === undefined) continue;
    (values as Record<string, string>)[name] = env[variable]!;
    variables[name] = variable;
  }
  return { values, variables };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function toInteger(text: string, setting: string): number {
  if (!/^\d{1,12}$/.test(text)) throw invalid(setting, 'environment', `is "${text}", not a whole number`);
  return Number(text);
}

/** Upper bounds, in each setting's unit: Node timers hold at most 2^31-1 ms, and a day is the longest step. */
const MAXIMUM: Record<string, Readonly<Record<string, number>>> = {
  exec: { defaultStepTimeoutSeconds: 86_400, killGraceMs: 60_000, outputCapBytes: 2 ** 40, collectMaxBytes: 2 ** 40 },
  limits: { cpuSeconds: 86_400, memoryBytes: 2 ** 50, openFiles: 1_048_576, processes: 4_194_304 },
  sandbox: { tmpBytes: 2 ** 40, shmBytes: 2 ** 40 },
  store: { busyTimeoutMs: 600_000, reserveBytes: 2 ** 50 },
  coordinator: {
    pollWaitSeconds: 60,
    requestTimeoutMs: 600_000,
    signatureTtlSeconds: 300,
    backoffBaseMs: 3_600_000,
    backoffCapMs: 86_400_000,
    stopGraceMs: 600_000,
    flushMs: 600_000,
  },
};

const POSITIVE: Record<string, readonly string[]> = {
  exec: ['defaultStepTimeoutSeconds', 'outputCapBytes', 'collectMaxBytes'],
  limits: ['cpuSeconds', 'memoryBytes', 'openFiles', 'processes'],
  sandbox: ['tmpBytes', 'shmBytes'],
};
const NON_NEGATIVE: Record<string, readonly string[]> = {
  exec: ['killGraceMs'],
  store: ['busyTimeoutMs'],
  coordinator: ['pollWaitSeconds', 'stopGraceMs', 'flushMs'],
};
const SECTIONS = ['exec', 'limits', 'sandbox', 'stepUser', 'store', 'coordinator', 'resources', 'targets', 'spool', 'logLevel', 'debug'];
type TextCheck = { check: (value: unknown) => boolean; why: string };
/** A file named by absolute path, or '' for none. */
const FILE_SETTING: TextCheck = {
  check: (value) => value === '' || (typeof value === 'string' && value.length <= 4096 && value.startsWith('/') && !value.includes('\0')),
  why: 'must be "" or an absolute path',
};
const PROXY_SETTING: TextCheck = { check: isProxyUrl, why: 'must be "" or an http or https proxy URL (user:password@ allowed, no path)' };
/** The coordinator's settings that are not numbers, each with its own check. */
const COORDINATOR_TEXT: Record<string, TextCheck> = {
  url: { check: isCoordinatorUrl, why: 'must be "" or an https (or loopback http) URL without credentials, query or fragment' },
  caFile: FILE_SETTING,
  proxyCaFile: FILE_SETTING,
  httpsProxy: PROXY_SETTING,
  httpProxy: PROXY_SETTING,
  noProxy: {
    check: (value) => typeof value === 'string' && value.length <= 4096 && /^[\x21-\x7e ,]*$/.test(value),
    why: 'must be a comma-separated list of host names of printable ASCII',
  },
};
/** The sandbox's settings that are not numbers or booleans, each with its own check. */
const SANDBOX_TEXT: Record<string, TextCheck> = {
  systemFolders: {
    check: (value) => Array.isArray(value) && value.length <= 32 && value.every((path) => typeof path === 'string' && isSystemFolderPath(path)),
    why: 'must be a list of at most 32 absolute paths (plain names, not /)',
  },
  memoryCgroup: {
    check: (value) =>
      value === '' ||
      (typeof value === 'string' && value.length <= 1024 && /^\/sys\/fs\/cgroup(?:\/(?!\.{1,2}(?:\/|$))[A-Za-z0-9._@:+-]{1,255}){1,32}$/.test(value)),
    why: 'must be "" or a folder below /sys/fs/cgroup',
  },
};

/**
 * A system folder a step may see: absolute, not the root, plain components (no ".", "..", or characters
 * beyond [A-Za-z0-9._+-]), at most 8 deep. Such a name is safe to record in the evidence.
 */
export function isSystemFolderPath(path: string): boolean {
  return /^(?:\/(?!\.{1,2}(?:\/|$))[A-Za-z0-9._+-]{1,64}){1,8}$/.test(path);
}

function checkOverrides(overrides: ConfigOverrides, source: ConfigSource, file?: string): void {
  for (const key of Object.keys(overrides)) if (!SECTIONS.includes(key)) throw unknown(key, source, file);
  checkResources(overrides.resources, source);
  checkTargets(overrides.targets, source, file);
  if (overrides.spool !== undefined) {
    const spool = overrides.spool as unknown;
    if (typeof spool !== 'object' || spool === null || Array.isArray(spool)) throw invalid('spool', source, 'is not an object of settings');
    for (const [name, value] of Object.entries(spool)) {
      if (name !== 'dir') throw unknown(`spool.${name}`, source, file);
      if (!FILE_SETTING.check(value)) throw invalid('spool.dir', source, FILE_SETTING.why);
    }
  }
  for (const section of ['exec', 'limits', 'sandbox', 'store', 'coordinator'] as const) {
    const raw = overrides[section] as unknown;
    if (raw !== undefined && (typeof raw !== 'object' || raw === null || Array.isArray(raw)))
      throw invalid(section, source, 'is not an object of settings');
    const values = (raw ?? {}) as Record<string, unknown>;
    const known = Object.keys(DEFAULT_CONFIG[section]);
    for (const [name, value] of Object.entries(values)) {
      const setting = `${section}.${name}`;
      if (!known.includes(name)) throw unknown(setting, source, file);
      const text = section === 'sandbox' ? SANDBOX_TEXT[name] : section === 'coordinator' ? COORDINATOR_TEXT[name] : undefined;
      if (text) {
        if (!text.check(value)) throw invalid(setting, source, text.why);
        continue;
      }
      if (typeof DEFAULT_CONFIG[section][name as never] === 'boolean') {
        if (typeof value !== 'boolean') throw invalid(setting, source, 'is not true or false');
        continue;
      }
      const min = POSITIVE[section]?.includes(name) ? 1 : NON_NEGATIVE[section]?.includes(name) ? 0 : 1;
      const max = MAXIMUM[section]?.[name] ?? Number.MAX_SAFE_INTEGER;
      if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max) {
        throw invalid(setting, source, `is not a whole number from ${min} to ${max}`);
      }
    }
  }
  if (overrides.stepUser !== undefined) {
    const user = overrides.stepUser as unknown;
    const plain = typeof user === 'object' && user !== null && !Array.isArray(user) && Object.keys(user).sort().join() === 'gid,uid';
    if (!plain || !isStepId((user as StepUser).uid) || !isStepId((user as StepUser).gid)) {
      throw invalid('stepUser', source, 'must be {"uid", "gid"}, each an ordinary id (not 0)');
    }
  }
  if (overrides.logLevel !== undefined && !LOG_LEVELS.includes(overrides.logLevel)) throw invalid('logLevel', source, 'is not a log level');
  if (overrides.debug !== undefined && typeof overrides.debug !== 'boolean') throw invalid('debug', source, 'is not true or false');
}

const RESOURCE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MAX_RESOURCES = 64;

/** Each grant: a plain name (as a capsule's `needs` spells it) and exactly one of path, socket or tcp. */
function checkResources(resources: unknown, source: ConfigSource): void {
  if (resources === undefined) return;
  if (typeof resources !== 'object' || resources === null || Array.isArray(resources))
    throw invalid('resources', source, 'is not a table of resources');
  const entries = Object.entries(resources);
  if (entries.length > MAX_RESOURCES) throw invalid('resources', source, `names more than ${MAX_RESOURCES} resources`);
  for (const [name, grant] of entries) {
    const setting = `resources.${name}`;
    if (!RESOURCE_NAME.test(name)) throw invalid(setting, source, 'is not a plain name (letters, digits, . _ -)');
    const members = typeof grant === 'object' && grant !== null && !Array.isArray(grant) ? Object.keys(grant) : [];
    if (members.length !== 1 || !['path', 'socket', 'tcp'].includes(members[0]!)) {
      throw invalid(setting, source, 'must have exactly one of path, socket or tcp');
    }
    const kind = members[0]!;
    const value = (grant as Record<string, unknown>)[kind];
    if (kind === 'tcp') {
      if (!isGrantableAddress(value)) throw invalid(`${setting}.tcp`, source, 'must be a loopback or private host:port');
    } else if (!(typeof value === 'string' && value !== '/' && FILE_SETTING.check(value) && value !== '')) {
      throw invalid(`${setting}.${kind}`, source, 'must be an absolute path other than /');
    }
  }
}

const MAX_TARGETS = 64;
const TARGET_MEMBERS = ['path', 'healthCheck', 'healthCheckTimeoutSeconds', 'maxBytes', 'maxEntries'];

/** Each change target: a plain name, an absolute folder other than /, and its optional health check and caps. */
function checkTargets(targets: unknown, source: ConfigSource, file: string | undefined): void {
  if (targets === undefined) return;
  if (typeof targets !== 'object' || targets === null || Array.isArray(targets)) throw invalid('targets', source, 'is not a table of change targets');
  const entries = Object.entries(targets);
  if (entries.length > MAX_TARGETS) throw invalid('targets', source, `names more than ${MAX_TARGETS} change targets`);
  for (const [name, target] of entries) {
    const setting = `targets.${name}`;
    if (!RESOURCE_NAME.test(name)) throw invalid(setting, source, 'is not a plain name (letters, digits, . _ -)');
    if (typeof target !== 'object' || target === null || Array.isArray(target)) throw invalid(setting, source, 'is not a table');
    for (const member of Object.keys(target)) if (!TARGET_MEMBERS.includes(member)) throw unknown(`${setting}.${member}`, source, file);
    const { path, healthCheck, healthCheckTimeoutSeconds, maxBytes, maxEntries } = target as Record<string, unknown>;
    if (!(typeof path === 'string' && path !== '' && path !== '/' && FILE_SETTING.check(path))) {
      throw invalid(`${setting}.path`, source, 'must be an absolute folder other than /');
    }
    if (healthCheck !== undefined) {
      const argv = Array.isArray(healthCheck) ? (healthCheck as unknown[]) : [];
      const plain =
        argv.length >= 1 &&
        argv.length <= 64 &&
        argv.every((arg) => typeof arg === 'string' && arg !== '' && arg.length <= 4096 && !arg.includes('\0'));
      if (!plain || !(argv[0] as string).startsWith('/')) {
        throw invalid(`${setting}.healthCheck`, source, 'must be an argv list whose first item is an absolute path');
      }
    }
    const bounded: Array<[string, unknown, number]> = [
      ['healthCheckTimeoutSeconds', healthCheckTimeoutSeconds, 86_400],
      ['maxBytes', maxBytes, 2 ** 40],
      ['maxEntries', maxEntries, 10_000_000],
    ];
    for (const [member, value, max] of bounded) {
      if (value !== undefined && !(Number.isSafeInteger(value) && (value as number) >= 1 && (value as number) <= max)) {
        throw invalid(`${setting}.${member}`, source, `is not a whole number from 1 to ${max}`);
      }
    }
  }
}

/**
 * `host:port` with an IPv4 literal in 127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16, `[::1]`, a
 * ULA `[fdxx:...]`, or `localhost`: a grant names a service inside the operator's boundary, not the internet.
 */
export function isGrantableAddress(value: unknown): boolean {
  if (typeof value !== 'string' || value.length > 300) return false;
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(value);
  if (!match) return false;
  const port = Number(match[2]);
  if (port < 1 || port > 65535) return false;
  const host = match[1]!.toLowerCase();
  if (host === 'localhost' || host === '[::1]') return true;
  if (/^\[f[cd][0-9a-f]{2}:[0-9a-f:]*\]$/.test(host)) return true;
  const quad = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (!quad) return false;
  const [a, b] = quad.slice(1).map(Number) as [number, number];
  if (!quad.slice(1).every((part) => Number(part) <= 255)) return false;
  return a === 127 || a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
}

/** A step identity must be an ordinary id: never 0 (root), within the 32-bit id space. */
export function isStepId(id: unknown): id is number {
  return Number.isSafeInteger(id) && (id as number) > 0 && (id as number) < 2 ** 32 - 1;
}

/** An unknown key, named as given: a misspelt setting must not silently leave its default in force. */
function unknown(setting: string, source: ConfigSource, file: string | undefined): ConfigError {
  const where =
    source === 'file' && file !== undefined
      ? `The configuration file ${file} sets ${setting}`
      : source === 'state'
        ? `runner.json sets ${setting}`
        : source === 'file'
          ? `The configuration file sets ${setting}`
          : `A flag sets ${setting}`;
  return new ConfigError('CONFIG_UNKNOWN_SETTING', `${where}, which is not a setting.`, { setting, source });
}

function invalid(setting: string, source: ConfigSource, why: string): ConfigError {
  const where =
    source === 'environment'
      ? setting
      : source === 'state'
        ? `runner.json ${setting}`
        : source === 'file'
          ? `the configuration file's ${setting}`
          : `the flag for ${setting}`;
  return new ConfigError('CONFIG_INVALID', `The setting ${where} ${why}.`, { setting, source });
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
