/**
 * A throwaway PostgreSQL cluster for tests: initdb into a fresh temp folder, started with pg_ctl, listening
 * on its unix socket only (no tcp: `listen_addresses=''`), the socket in that same folder. Debian's server
 * binaries (/usr/lib/postgresql/<major>/bin, scripts/test-deps.sh installs them) refuse to run as root, so
 * a root test process runs them as the unprivileged `postgres` user (the package makes it; else `nobody`)
 * through setpriv. Every wait is bounded. `postgresUnavailable()` says why a test must be skipped.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

const START_TIMEOUT_SECONDS = 30;

export interface PostgresCluster {
  /** The folder holding the socket (what libpq calls the host). */
  socketDir: string;
  /** The socket file itself (`.s.PGSQL.<port>`). */
  socketPath: string;
  port: number;
  /** The superuser and its database (trust authentication on the socket). */
  user: string;
  database: string;
  /** Runs SQL through psql on the socket, as the test process; returns stdout (unaligned, tuples only). */
  sql(query: string): string;
  stop(): void;
}

function binDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const majors = readdirSync(root)
    .filter((major) => existsSync(join(root, major, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return majors[0] === undefined ? undefined : join(root, majors[0], 'bin');
}

function psqlPath(): string | undefined {
  return ['/usr/bin/psql', join(binDir() ?? '/nonexistent', 'psql')].find((path) => existsSync(path));
}

/** The unprivileged identity the server runs as when the tests are root. */
function serverUser(): { name: string; uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  for (const name of ['postgres', 'nobody']) {
    const found = spawnSync('id', ['-u', name], { encoding: 'utf8' });
    if (found.status !== 0) continue;
    const gid = spawnSync('id', ['-g', name], { encoding: 'utf8' });
    return { name, uid: Number(found.stdout.trim()), gid: Number(gid.stdout.trim()) };
  }
  return undefined;
}

/** Why no cluster can be started here, or undefined when one can. */
export function postgresUnavailable(): string | undefined {
  if (!binDir()) return 'PostgreSQL server binaries are not installed (scripts/test-deps.sh installs postgresql)';
  if (!psqlPath()) return 'psql is not installed (scripts/test-deps.sh installs postgresql-client)';
  if (process.getuid?.() === 0 && !serverUser()) return 'running as root and no unprivileged user to run PostgreSQL as';
  if (process.getuid?.() === 0 && !existsSync('/usr/bin/setpriv')) return 'setpriv (util-linux) is missing';
  return undefined;
}

/** Starts a cluster in a fresh folder below `parent` (default: the system temp folder); call stop() after. */
export function startPostgres(parent: string = tmpdir()): PostgresCluster {
  const why = postgresUnavailable();
  if (why) throw new Error(why);
  const bin = binDir()!;
  const psql = psqlPath()!;
  const as = serverUser();
  // Short: the socket path must fit a unix address (108 bytes) with `.s.PGSQL.NNNNN`.
  const dir = mkdtempSync(join(parent, 'pg-'));
  const data = join(dir, 'data');
  const user = as?.name ?? userInfo().username;
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const asServer = (file: string, args: string[]): [string, string[]] =>
    as ? ['/usr/bin/setpriv', [`--reuid=${as.uid}`, `--regid=${as.gid}`, '--clear-groups', '--', file, ...args]] : [file, args];
  const run = (file: string, args: string[], timeoutSeconds: number) => {
    const [cmd, argv] = asServer(file, args);
    execFileSync(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutSeconds * 1000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } });
  };
  if (as) chownSync(dir, as.uid, as.gid);
  chmodSync(dir, 0o755); // the socket's folder: the client (root here, or a sandboxed step) must get through it
  try {
    run(join(bin, 'initdb'), ['-D', data, '-U', user, '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'], 60);
    run(
      join(bin, 'pg_ctl'),
      [
        '-D',
        data,
        '-l',
        join(data, 'server.log'),
        '-w',
        '-t',
        String(START_TIMEOUT_SECONDS),
        '-o',
        `-c listen_addresses='' -c unix_socket_directories='${dir}' -c unix_socket_permissions=0777 -p ${port} -c fsync=off`,
        'start',
      ],
      START_TIMEOUT_SECONDS + 10,
    );
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const socketPath = join(dir, `.s.PGSQL.${port}`);
  let stopped = false;
  return {
    socketDir: dir,
    socketPath,
    port,
    user,
    database: 'postgres',
    sql(query) {
      return execFileSync(
        psql,
        ['-h', dir, '-p', String(port), '-U', user, '-d', 'postgres', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', query],
        {
          encoding: 'utf8',
          timeout: 30_000,
          env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
        },
      );
    },
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        run(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', '-t', '20', 'stop'], 30);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
