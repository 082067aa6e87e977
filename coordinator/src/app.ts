/**
 * The coordinator's composition root: one App (trust, witness key, store, waiting polls, clock, logger) built
 * once, and the HTTP(S) server around the router. Timeouts are set on purpose:
 *   - headersTimeout 15 s: a client that dribbles its headers (slowloris) is cut early;
 *   - requestTimeout 300 s: the whole request, body included, must arrive within it (an 8 MiB bundle over a
 *     slow link fits; a stalled upload does not hold its socket for ever). A long poll is a GET whose request
 *     is complete at once, so its wait is not bounded by this but by `wait` (at most 60 s);
 *   - keepAliveTimeout 5 s between requests on one connection;
 *   - headers at most 16 KiB (Node's default, named here so it stays so).
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { PrivateKey } from '../../runner/core/ed25519.js';
import type { VerifiedTrust } from '../../runner/trust/trust.js';
import { HttpError } from './errors.js';
import { WaitingPolls } from './feed.js';
import { awaitingContinue, BodyReads, refuseBody, sendError, type Router } from './http.js';
import { buildRouter } from './routes.js';
import type { CoordinatorStore } from './store/store.js';

export const MAX_HEADER_BYTES = 16 * 1024;
/**
 * Request bodies held at once, over all runners (8 full bundles), and body reads open per runner: only
 * requests whose signature verified read a body at all, and these bounds keep enrolled runners (or one
 * hostile one) from making the coordinator buffer more.
 */
export const BODY_READ_LIMITS = { maxBytes: 64 * 1024 * 1024, maxPerRunner: 4 } as const;

export interface App {
  trust: VerifiedTrust;
  trustBytes: Buffer;
  /** Every trust version the coordinator has pinned, served by `GET /v1/trust/{version}`. */
  trustVersions: ReadonlyMap<number, Buffer>;
  witness: { name: string; key: PrivateKey };
  store: CoordinatorStore;
  operatorTokenHashes: readonly Buffer[];
  /** scheme://host[:port] that runners sign as @target-uri, or null for scheme://Host of each request. */
  publicUrl: string | null;
  /** The port the server listens on (set by startServer), which a Host header must name without a public URL. */
  port: number | null;
  signatures: { maxFutureSeconds: number; maxTtlSeconds: number };
  clock: () => Date;
  polls: WaitingPolls;
  bodyReads: BodyReads;
  log: (event: string, fields?: Record<string, unknown>) => void;
  stopping: boolean;
}

export interface AppOptions {
  trust: VerifiedTrust;
  trustBytes: Buffer;
  /** Absent: the pinned version only. */
  trustVersions?: ReadonlyMap<number, Buffer>;
  witness: { name: string; key: PrivateKey };
  store: CoordinatorStore;
  operatorTokenHashes: readonly Buffer[];
  publicUrl?: string | null;
  signatures?: { maxFutureSeconds: number; maxTtlSeconds: number };
  clock?: () => Date;
  log?: App['log'];
  bodyReads?: { maxBytes: number; maxPerRunner: number };
}

export function createApp(options: AppOptions): App {
  return {
    trust: options.trust,
    trustBytes: options.trustBytes,
    trustVersions: options.trustVersions ?? new Map([[options.trust.body.version, options.trustBytes]]),
    witness: options.witness,
    store: options.store,
    operatorTokenHashes: options.operatorTokenHashes,
    publicUrl: options.publicUrl ?? null,
    port: null,
    signatures: options.signatures ?? { maxFutureSeconds: 30, maxTtlSeconds: 300 },
    clock: options.clock ?? (() => new Date()),
    polls: new WaitingPolls(),
    bodyReads: new BodyReads(
      options.bodyReads?.maxBytes ?? BODY_READ_LIMITS.maxBytes,
      options.bodyReads?.maxPerRunner ?? BODY_READ_LIMITS.maxPerRunner,
    ),
    log: options.log ?? (() => {}),
    stopping: false,
  };
}

export interface ServerOptions {
  host: string;
  port: number;
  tls?: { cert: Buffer; key: Buffer };
  timeouts?: { headersSeconds: number; requestSeconds: number; keepAliveSeconds: number };
}

export interface RunningServer {
  server: Server;
  /** http(s)://host:port actually bound (port 0 becomes the real port). */
  url: string;
  /** Stops accepting, ends waiting polls with 204, lets requests in flight finish (at most graceMs), then resolves. */
  stop(graceMs?: number): Promise<void>;
}

export function handleRequest(app: App, router: Router) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    void (async () => {
      try {
        if (app.stopping) throw new HttpError(503, 'PROTOCOL_SHUTTING_DOWN', 'The coordinator is shutting down.', { 'retry-after': '5' });
        const rawTarget = req.url ?? '';
        if (!rawTarget.startsWith('/')) throw new HttpError(404, 'PROTOCOL_NOT_FOUND', 'There is no such resource.');
        const q = rawTarget.indexOf('?');
        const path = q < 0 ? rawTarget : rawTarget.slice(0, q);
        const query = new URLSearchParams(q < 0 ? '' : rawTarget.slice(q + 1));
        const { handler, params } = router.resolve(req.method ?? '', path);
        if (req.method === 'GET') refuseBody(req);
        await handler({ req, res, params, query, rawTarget });
      } catch (err) {
        sendError(res, err, (internal) => app.log('request.failed', { error: internal instanceof Error ? internal.message : String(internal) }));
      }
    })();
  };
}

export async function startServer(app: App, options: ServerOptions): Promise<RunningServer> {
  const timeouts = options.timeouts ?? { headersSeconds: 15, requestSeconds: 300, keepAliveSeconds: 5 };
  const common = {
    headersTimeout: timeouts.headersSeconds * 1000,
    requestTimeout: timeouts.requestSeconds * 1000,
    keepAliveTimeout: timeouts.keepAliveSeconds * 1000,
    maxHeaderSize: MAX_HEADER_BYTES,
    // How often Node checks the two timeouts above (its default, 30 s, would let a slow client stay twice as long).
    connectionsCheckingInterval: 1000,
  };
  const handler = handleRequest(app, buildRouter(app));
  const server: Server = options.tls
    ? createHttpsServer({ ...common, cert: options.tls.cert, key: options.tls.key, minVersion: 'TLSv1.2' }, handler)
    : createHttpServer(common, handler);
  // Expect: 100-continue: Node would answer 100 at once; the route decides instead, when it reads the body.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    awaitingContinue.set(req, () => res.writeContinue());
    handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  app.port = address.port;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${options.tls ? 'https' : 'http'}://${host}:${address.port}`;
  let stopped: Promise<void> | undefined;
  return {
    server,
    url,
    stop(graceMs = 10_000) {
      stopped ??= new Promise<void>((resolve) => {
        app.stopping = true;
        const force = setTimeout(() => server.closeAllConnections(), graceMs);
        // Keep-alive sockets become idle only after their last answer (the 204s below) is written.
        const idle = setInterval(() => server.closeIdleConnections(), 50);
        server.close(() => {
          clearTimeout(force);
          clearInterval(idle);
          resolve();
        });
        app.polls.endAll();
        server.closeIdleConnections();
      });
      return stopped;
    },
  };
}
