/**
 * The runner's forwarders for tcp grants (exec/resources.ts): for each, a unix socket in a private folder of
 * the runner's, bound into the step's sandbox, and every connection accepted there joined to a new tcp
 * connection to the granted host:port. Raw bytes both ways, half-closes passed on, nothing read or kept.
 * The step's own network namespace stays empty: this is the only way out, and it leads to one address.
 *
 * Bounds: at most MAX_CONNECTIONS open connections per grant (more are refused by the kernel's accept
 * backlog and then closed); everything is closed when the run ends (`close`), whatever the step left open.
 */
import { chmodSync, chownSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UNIX_PATH_MAX_BYTES } from './resources.js';

/** Open connections per forwarded grant; a step holding more waits or fails, the runner does not grow. */
export const MAX_CONNECTIONS = 32;
/** Milliseconds a connection to the upstream may take before the step's side is closed. */
export const CONNECT_TIMEOUT_MS = 10_000;

export interface ForwardTarget {
  name: string;
  host: string;
  port: number;
}

export interface Forwarders {
  /** Resource name -> the host path of its unix socket (what bwrap binds). */
  sockets: ReadonlyMap<string, string>;
  /** Connections accepted so far, per name (for tests and the local log). */
  accepted: ReadonlyMap<string, number>;
  /** Stops listening, ends every connection, removes the folder. Never throws. */
  close(): Promise<void>;
}

export interface ForwardOptions {
  /** The step's identity when the runner is root: the socket is handed to it (0600), nobody else's. */
  owner?: { uid: number; gid: number };
  /** Where the private folder goes; defaults to the system's temporary folder (short: sun_path is 108). */
  parent?: string;
}

/** Starts one forwarder per target and resolves once all of them listen. */
export async function startForwarders(targets: readonly ForwardTarget[], options: ForwardOptions = {}): Promise<Forwarders> {
  const sockets = new Map<string, string>();
  const accepted = new Map<string, number>();
  const servers: Server[] = [];
  const open = new Set<Socket>();
  // 0700 and the runner's: no other local user can reach a forwarder, whatever the socket's own mode.
  const parent = options.parent ?? tmpdir();
  // In a folder someone else owns, or others may write without the sticky bit, they could rename the
  // runner's folder away while it listens and put one of theirs there, whose `0.sock` is a symlink: chown
  // and chmod (root's) follow it.
  const parentStat = statSync(parent);
  const ownerOk = parentStat.uid === 0 || parentStat.uid === process.getuid?.();
  if (!ownerOk || (parentStat.mode & 0o022 && !(parentStat.mode & 0o1000))) {
    throw new Error(
      `The forwarders' folder ${parent} is another user's, or may be written by others and is not sticky; set TMPDIR to a folder of the runner's.`,
    );
  }
  const dir = mkdtempSync(join(parent, 'edge-runner-fwd-'));
  const close = async (): Promise<void> => {
    for (const socket of open) socket.destroy();
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const [index, target] of targets.entries()) {
      const path = join(dir, `${index}.sock`);
      if (Buffer.byteLength(path) > UNIX_PATH_MAX_BYTES) throw new Error(`The forwarder folder ${dir} is too deep for a unix socket path.`);
      accepted.set(target.name, 0);
      const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
        accepted.set(target.name, (accepted.get(target.name) ?? 0) + 1);
        relay(client, target, open);
      });
      server.maxConnections = MAX_CONNECTIONS;
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      });
      server.on('error', () => {}); // a failed accept must not take the runner down
      if (options.owner) chownSync(path, options.owner.uid, options.owner.gid);
      chmodSync(path, 0o600);
      sockets.set(target.name, path);
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { sockets, accepted, close };
}

/** Joins one accepted client to a new connection to the target; either side failing ends both. */
function relay(client: Socket, target: ForwardTarget, open: Set<Socket>): void {
  const upstream = createConnection({ host: target.host, port: target.port, allowHalfOpen: true });
  open.add(client);
  open.add(upstream);
  const end = () => {
    client.destroy();
    upstream.destroy();
    open.delete(client);
    open.delete(upstream);
  };
  const timer = setTimeout(end, CONNECT_TIMEOUT_MS);
  upstream.once('connect', () => {
    clearTimeout(timer);
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  });
  for (const socket of [client, upstream]) {
    socket.on('error', end);
    socket.on('close', () => {
      clearTimeout(timer);
      // The other side may still be flushing what it got: it ends when its own writes are done.
      const other = socket === client ? upstream : client;
      if (!other.writableEnded) other.end();
      open.delete(socket);
      if (other.destroyed) open.delete(other);
    });
  }
}
