/**
 * Operator-granted resources: what a step may reach besides its workspace and the system folders.
 *
 * THE STEP-FACING CONTRACT (capsule authors write against this; it does not change without a new version):
 *
 *   Every resource a capsule lists in `needs` appears inside the sandbox under `/resources/<name>`, where
 *   <name> is the resource's name exactly as the runner's configuration and the capsule's `needs` spell it.
 *   Nothing else is under /resources: a name the capsule did not list is not there, granted or not.
 *
 *   - `path` grant (a host file or folder): `/resources/<name>` IS that file or folder, read-only.
 *       e.g. `cat /resources/extract/accounts.csv`, `ls /resources/config-repo`
 *   - `socket` grant (a host unix socket): `/resources/<name>/` is a read-only folder holding that one
 *     socket under its host file name. For PostgreSQL (socket `.s.PGSQL.5432`) the folder is what libpq
 *     calls the host:
 *       e.g. `psql -h /resources/db -U app -d app -c 'select 1'`  (socket /resources/db/.s.PGSQL.5432)
 *   - `tcp` grant (a loopback or private host:port): `/resources/<name>/socket` is a unix socket; every
 *     connection to it is forwarded by the runner to host:port (raw bytes, both ways; nothing is read,
 *     rewritten or logged). The step has no network of its own: it speaks to the service only through it.
 *       e.g. `curl --unix-socket /resources/web/socket http://web/health`
 *
 *   Environment: for each needed resource the step also gets `EDGE_RUNNER_RESOURCE_<NAME>` where <NAME> is
 *   the name upper-cased with every character other than A-Z and 0-9 turned into `_` (`config-repo` ->
 *   `EDGE_RUNNER_RESOURCE_CONFIG_REPO`). Its value is the path to use inside the sandbox:
 *     path   -> /resources/<name>                 (the file or folder)
 *     socket -> /resources/<name>/<socket file>   (the socket itself; its folder is dirname of it)
 *     tcp    -> /resources/<name>/socket
 *   These variables are set by the runner and win over a step's own `env` of the same name. Two needed
 *   names that give the same variable (`a-b` and `a.b`) cannot be needed together.
 *
 *   Where it applies: only in a bwrap sandbox. A capsule with `needs` requires isolation whatever its
 *   `isolation` says: on a host (or launcher) without bwrap it is refused (CAPSULE_ISOLATION_UNAVAILABLE)
 *   before anything runs, because without a mount namespace a grant could not be bound exactly.
 *
 *   Refusal: a capsule that needs a name the configuration does not grant, or a grant that cannot be bound
 *   as configured (missing on the host, a socket that is not a socket, a path overlapping the runner's
 *   state folder or spool folder, a path grant holding the temporary folder the runner's forwarders
 *   listen in, a socket path too long for a unix address, a configured path that passes through a
 *   symlink neither root nor the runner owns, a socket with other hard links), is refused with
 *   CAPSULE_RESOURCE_UNGRANTED before anything runs: capsule.rejected and a signed rejection, no nonce
 *   burnt (it can come again once the operator grants it).
 *
 *   Evidence: run.started and the evidence predicate's `run.resources` carry the needed names only (sorted),
 *   never a path, a socket path or an address. (The step itself can read where a grant lies on the host:
 *   /proc/self/mountinfo shows a bind's source. The address of a tcp grant it cannot see.)
 *
 * What changes for the step's syscalls: a step with a socket or tcp grant may create AF_UNIX sockets (the
 * seccomp filter SYSCALL_FILTER_UNIX, otherwise the same as SYSCALL_FILTER); without such a grant it may
 * not. With AF_UNIX allowed, the sockets it can connect to are those its file system shows: its grants,
 * what it makes itself in its workspace and private /tmp, and any socket file inside a listed system
 * folder (the defaults /usr, /bin, /sbin, /lib*, /etc hold none on a Debian host; /run and /var are not
 * shown), and any socket file inside a granted folder (a path grant shows what it holds). Abstract unix
 * sockets belong to the network namespace, which is the step's own. Read-only does not stop a FIFO: a named
 * pipe inside a granted folder can be written to by the step (no mount flag refuses it), so whoever reads
 * it on the host gets what the step writes. Grant only folders that no one but the operator may write to
 * (nor place a FIFO or socket in). A file system the host mounts below a granted folder while a step runs
 * does not come in when the runner is root (bwrap starts through unshare(1) in a mount namespace of private
 * mounts); a runner that is not root cannot do that, and there, on a host whose mounts are shared
 * (systemd's default), such a mount shows inside with its own flags, writable if it is: make a granted
 * folder a private mount (`mount --bind D D && mount --make-private D`) or grant none that sees mounts come.
 *
 * When the runner checks: at acceptance (before the nonce is burnt, so a refused capsule can come again),
 * and again when the run starts; then every source is pinned for the run by an O_PATH descriptor and bwrap
 * binds from that descriptor (`--ro-bind-fd`), so a host path swapped after the check is not what a step
 * gets. A grant that fails at the run's start ends the run as run.aborted CAPSULE_RESOURCE_UNGRANTED.
 * Mounts are ro, nosuid, nodev (bwrap's binds): no setuid program or device node in a grant counts.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readlinkSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, sep } from 'node:path';
import type { Resource } from '../config/config.js';
import { ExecError } from './errors.js';

/** Where every granted resource appears inside the sandbox. */
export const RESOURCES_ROOT = '/resources';
/** The file name of a tcp grant's forwarder socket inside `/resources/<name>/`. */
export const FORWARDED_SOCKET_NAME = 'socket';
/** The environment variable prefix; the rest is the name in capitals (resourceEnvName). */
export const RESOURCE_ENV_PREFIX = 'EDGE_RUNNER_RESOURCE_';
/** sun_path holds 108 bytes with its NUL: a longer socket path cannot be connected to. */
export const UNIX_PATH_MAX_BYTES = 107;

export type ResourceKind = 'path' | 'socket' | 'tcp';

/**
 * One needed grant, resolved on the host. `source` is the host path bwrap binds (the real path of a path
 * or socket grant; for a tcp grant the forwarder's socket, known once the run starts it); `target` is where
 * it shows inside the sandbox. Host detail: for the launch only, never for a record or the evidence.
 */
export interface ResolvedGrant {
  name: string;
  kind: ResourceKind;
  source?: string;
  target: string;
  /** The folder made for a socket or tcp grant (`/resources/<name>`); a path grant is bound there itself. */
  folder?: string;
  envName: string;
  /** A tcp grant's upstream, as `net.connect` takes it (brackets of an IPv6 literal removed). */
  upstream?: { host: string; port: number };
}

/** A grant bound into one step's sandbox: what sandbox.ts needs, every path known. */
export interface ResourceMount {
  kind: ResourceKind;
  source: string;
  target: string;
  folder?: string;
  /**
   * An O_PATH descriptor of the source, opened and checked once per run (openResourceMounts): bwrap binds
   * what it points to (`--ro-bind-fd`), so a path swapped on the host after the check (a socket replaced by
   * a symlink to /, say) is not what the step gets.
   */
  fd?: number;
}

export interface GrantOptions {
  /** More folders of the runner's own that no grant may show or lie in: the spool folder (`spool.dir`). */
  keep?: readonly string[];
  /** Where the run's forwarders are made (startForwarders' `parent`); the system's temporary folder by default. */
  forwardersParent?: string;
}

export type GrantResolution = { grants: ResolvedGrant[] } | { refused: { name: string; why: string } };

/** `config-repo` -> `EDGE_RUNNER_RESOURCE_CONFIG_REPO`. */
export function resourceEnvName(name: string): string {
  return RESOURCE_ENV_PREFIX + name.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

/**
 * The grants a capsule's `needs` names, each checked on the host, in name order; or the first name that
 * cannot be granted and why (one plain sentence fragment, for the local log and the CLI: it may name the
 * resource, never its path). `stateDir` is the runner's state folder: no grant may show it or lie in it.
 */
export function resolveGrants(
  needs: readonly string[],
  resources: Readonly<Record<string, Resource>>,
  stateDir: string,
  options: GrantOptions = {},
): GrantResolution {
  const grants: ResolvedGrant[] = [];
  const envNames = new Map<string, string>();
  const state = realOrAsIs(stateDir);
  const spool = (options.keep ?? []).map(realOrAsIs);
  // Where startForwarders makes each run's folder: a grant holding it would show other runs' forwarders
  // (a runner that is not root runs its steps as itself, so its 0700 folders are open to them).
  const forwarders = realOrAsIs(options.forwardersParent ?? tmpdir());
  for (const name of [...new Set(needs)].sort()) {
    const refuse = (why: string): GrantResolution => ({ refused: { name, why } });
    // Own members only: `constructor` or `toString` is a valid resource name and must not find Object's.
    const grant = Object.hasOwn(resources, name) ? resources[name] : undefined;
    if (grant === undefined) return refuse("is not granted by this runner's configuration");
    const envName = resourceEnvName(name);
    const clash = envNames.get(envName);
    if (clash !== undefined) return refuse(`gives the same variable ${envName} as "${clash}", which the capsule needs too`);
    envNames.set(envName, name);
    const folder = `${RESOURCES_ROOT}/${name}`;
    if ('tcp' in grant) {
      const target = `${folder}/${FORWARDED_SOCKET_NAME}`;
      if (Buffer.byteLength(target) > UNIX_PATH_MAX_BYTES) return refuse('has a name too long for a unix socket path inside the sandbox');
      grants.push({ name, kind: 'tcp', target, folder, envName, upstream: toUpstream(grant.tcp) });
      continue;
    }
    const configured = 'path' in grant ? grant.path : grant.socket;
    const resolved = resolveOwnedPath(configured);
    if ('refused' in resolved) return refuse(resolved.refused);
    const real = resolved.real;
    if (overlaps(real, state)) return refuse("would show the runner's state folder");
    if (spool.some((kept) => overlaps(real, kept))) return refuse("would show the runner's spool folder");
    if ('path' in grant && within(forwarders, real)) return refuse("would show the folder the runner's forwarders listen in");
    let stat;
    try {
      stat = lstatSync(real);
    } catch {
      return refuse('is not there on this host'); // gone since it was resolved
    }
    if ('path' in grant) {
      if (!stat.isDirectory() && !stat.isFile()) return refuse('is neither a file nor a folder');
      grants.push({ name, kind: 'path', source: real, target: folder, envName });
      continue;
    }
    if (!stat.isSocket()) return refuse('is not a unix socket');
    // A second name of another socket (linked in where fs.protected_hardlinks is off) is that other service.
    if (stat.nlink !== 1) return refuse('is a unix socket with other hard links');
    const target = `${folder}/${basename(real)}`;
    if (Buffer.byteLength(target) > UNIX_PATH_MAX_BYTES) return refuse('has a name too long for a unix socket path inside the sandbox');
    grants.push({ name, kind: 'socket', source: real, target, folder, envName });
  }
  return { grants };
}

/** Symlinks followed while resolving one configured path before it is refused as a loop. */
const MAX_SYMLINKS = 40;

/**
 * A configured path resolved as realpath(3) does, except that each symlink on the way is followed only
 * when root or the runner owns it. Whoever may write a folder on the way (a service's own socket folder,
 * like /run/postgresql; a shared data folder) could otherwise put a symlink there at check time and turn
 * the grant into any file, folder or socket the runner can reach: another service's socket, or a folder
 * below one the step could not enter. A symlink of someone else's is refused, whatever it points to.
 */
function resolveOwnedPath(configured: string): { real: string } | { refused: string } {
  const trusted = new Set([0, process.getuid?.() ?? 0]);
  const parts: string[] = [];
  const pending = configured.split('/');
  let followed = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      parts.pop(); // every part so far is a real folder: its parent is the real parent
      continue;
    }
    const path = `/${[...parts, part].join('/')}`;
    let stat;
    try {
      stat = lstatSync(path);
    } catch {
      return { refused: 'is not there on this host' };
    }
    if (!stat.isSymbolicLink()) {
      if (pending.some((rest) => rest !== '' && rest !== '.') && !stat.isDirectory()) return { refused: 'is not there on this host' };
      parts.push(part);
      continue;
    }
    if (!trusted.has(stat.uid)) return { refused: 'passes through a symlink that neither root nor the runner owns' };
    if ((followed += 1) > MAX_SYMLINKS) return { refused: 'is not there on this host (too many symlinks)' };
    let target: string;
    try {
      target = readlinkSync(path);
    } catch {
      return { refused: 'is not there on this host' };
    }
    if (target.startsWith('/')) parts.length = 0;
    pending.unshift(...target.split('/'));
  }
  return { real: `/${parts.join('/')}` };
}

/** The variables a step gets for its grants (the contract above). */
export function toResourceEnv(grants: readonly ResolvedGrant[]): Record<string, string> {
  return Object.fromEntries(grants.map((grant) => [grant.envName, grant.target]));
}

/** The mounts of grants whose sources are known (a tcp grant's once its forwarder listens). */
export function toResourceMounts(grants: readonly ResolvedGrant[], forwarded: ReadonlyMap<string, string> = new Map()): ResourceMount[] {
  return grants.map((grant) => {
    const source = grant.kind === 'tcp' ? forwarded.get(grant.name) : grant.source;
    if (source === undefined) throw new Error(`The forwarder of "${grant.name}" is not running.`); // a bug of the caller
    return { kind: grant.kind, source, target: grant.target, ...(grant.folder && grant.kind !== 'path' ? { folder: grant.folder } : {}) };
  });
}

/** Linux's O_PATH (Node does not export it): a descriptor that names a file without opening its contents. libuv adds O_CLOEXEC. */
const O_PATH = 0o10000000;

/**
 * The run's mounts, each source pinned by an O_PATH descriptor: opened without following a last symlink,
 * then checked to be still what was resolved (the kind the grant names, at the very path: the descriptor's
 * /proc/self/fd link). `close` releases the descriptors once the run's steps are over. Throws
 * EXEC_RESOURCE_CHANGED naming the resource (never its path) when a source is gone or changed since.
 */
export function openResourceMounts(
  grants: readonly ResolvedGrant[],
  forwarded: ReadonlyMap<string, string> = new Map(),
): { mounts: ResourceMount[]; close: () => void } {
  const fds: number[] = [];
  const close = () => {
    for (const fd of fds.splice(0)) closeSync(fd);
  };
  try {
    const mounts = toResourceMounts(grants, forwarded).map((mount, i) => {
      const name = grants[i]!.name;
      const changed = () =>
        new ExecError('EXEC_RESOURCE_CHANGED', `The resource "${name}" changed on the host after it was checked; the run does not bind it.`, {
          name,
        });
      let fd: number;
      try {
        fd = openSync(mount.source, O_PATH | constants.O_NOFOLLOW);
      } catch {
        throw changed(); // gone since it was resolved
      }
      fds.push(fd);
      const stat = fstatSync(fd);
      const kindOk = mount.kind === 'path' ? stat.isDirectory() || stat.isFile() : stat.isSocket() && stat.nlink === 1;
      if (!kindOk || readlinkSync(`/proc/self/fd/${fd}`) !== mount.source) throw changed();
      return { ...mount, fd };
    });
    return { mounts, close };
  } catch (err) {
    close();
    throw err;
  }
}

/** True when a step given these grants needs socket(AF_UNIX) (SYSCALL_FILTER_UNIX). */
export function needsUnixSockets(kinds: readonly { kind: ResourceKind }[]): boolean {
  return kinds.some((grant) => grant.kind !== 'path');
}

function toUpstream(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon);
  return { host: host.startsWith('[') ? host.slice(1, -1) : host, port: Number(address.slice(colon + 1)) };
}

function within(inner: string, outer: string): boolean {
  return inner === outer || inner.startsWith(outer === sep ? outer : outer + sep);
}

function overlaps(a: string, b: string): boolean {
  return within(a, b) || within(b, a);
}

function realOrAsIs(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}
