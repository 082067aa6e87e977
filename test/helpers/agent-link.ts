/**
 * The agent's tests' world: a trust document with a runner key and a witness key, a state folder, and a
 * stand-in coordinator on 127.0.0.1 (node:http) that answers the `/v1` runner routes as docs/protocol.md
 * says, checks every request signature with the protocol module (nonces never twice), verifies what it is
 * given, and injects faults on demand: a status with a body, an HTML page, a connection closed before the
 * answer, or the request stored and then the connection closed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toCanonicalJson } from '../../runner/core/canonical-json.js';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { signApproval } from '../../runner/policy/approval.js';
import { verifyBundle } from '../../runner/evidence/bundle.js';
import { verifyRejection } from '../../runner/evidence/rejection.js';
import { runnerOrigin } from '../../runner/log/checkpoint.js';
import { verifyRequest } from '../../runner/protocol/http-signature.js';
import {
  formatErrorBody,
  formatInboxAck,
  formatWorkFeed,
  parseStatusReport,
  type ApprovalItem,
  type RunnerStatusReport,
} from '../../runner/protocol/wire.js';
import { decideAddCheckpoint, formatTlogSize, parseAddCheckpoint, signCosignature } from '../../runner/protocol/witness.js';
import { initState } from '../../runner/state/state.js';
import { Store } from '../../runner/store/store.js';
import { verifyTrustDocument, type TrustDocumentBody, type VerifiedTrust } from '../../runner/trust/trust.js';
import type { CapsuleFile } from '../../runner/capsule/capsule-file.js';
import { packCapsule, type ManifestTemplate } from '../../runner/capsule/pack.js';
import { baseTemplate, makeTrustBody, signTrust, type NamedKey } from './world.js';

export interface LinkWorld {
  dir: string;
  stateDir: string;
  runnerId: string;
  runnerKey: PrivateKey;
  /** The trust document's root key (to sign another version of it). */
  root: PrivateKey;
  signer: PrivateKey;
  witnessKey: PrivateKey;
  witnessName: string;
  trustBytes: Buffer;
  trust: VerifiedTrust;
  capsule(patch?: Partial<ManifestTemplate>): Buffer;
  cleanup(): void;
}

export function makeLinkWorld(
  options: {
    runnerId?: string;
    labels?: string[];
    trustVersion?: number;
    /** More keys in the trust document (approvers, say). */
    extraKeys?: NamedKey[];
    /** The trust policy, over the default one (allowed kinds, a remediation section). */
    policy?: Partial<TrustDocumentBody['policy']>;
  } = {},
): LinkWorld {
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-agent-'));
  const root = PrivateKey.generate();
  const signer = PrivateKey.generate();
  const runnerKey = PrivateKey.generate();
  const witnessKey = PrivateKey.generate();
  const runnerId = options.runnerId ?? 'runner-agent-1';
  const witnessName = 'coordinator-witness';
  const body = makeTrustBody([
    { name: 'root-1', key: root, roles: ['root'] },
    { name: 'signer-1', key: signer, roles: ['capsule-signer'] },
    { name: runnerId, key: runnerKey, roles: ['runner'] },
    { name: witnessName, key: witnessKey, roles: ['witness' as never] },
    ...(options.extraKeys ?? []),
  ]);
  (body.roles as Record<string, { threshold: number }>).witness = { threshold: 1 };
  if (options.policy !== undefined) body.policy = { ...body.policy, ...options.policy };
  if (options.trustVersion !== undefined) body.version = options.trustVersion;
  const trustBytes = signTrust(body, [root]);
  writeFileSync(join(dir, 'trust.dsse.json'), trustBytes);
  const stateDir = join(dir, 'state');
  initState(stateDir, {
    id: runnerId,
    labels: options.labels ?? ['test'],
    trustBytes,
    now: new Date(),
    key: runnerKey,
    createDatabase: (path) => Store.open(path, { create: true }).close(),
  });
  return {
    dir,
    stateDir,
    runnerId,
    runnerKey,
    root,
    signer,
    witnessKey,
    witnessName,
    trustBytes,
    trust: verifyTrustDocument(trustBytes, { now: new Date() }),
    capsule(patch = {}) {
      const file: CapsuleFile = packCapsule(baseTemplate(patch), new Map(), [signer]);
      return Buffer.from(JSON.stringify(file));
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Two approver keys (the trust document's approver threshold is 2), for makeLinkWorld's extraKeys. */
export function approverKeys(): NamedKey[] {
  return [1, 2].map((n) => ({ name: `approver-${n}`, key: PrivateKey.generate(), roles: ['approver' as const] }));
}

/**
 * A genuine approval by `approver` naming `runner`, of a change and proposal made up here (so the runner
 * refuses it, APPROVAL_WRONG_CHANGE, and records that): the canonical envelope a coordinator serves, whose
 * SHA-256 is its approval digest.
 */
export function madeUpApproval(approver: NamedKey, runner: string): Buffer {
  const ref = () => `sha256:${randomBytes(32).toString('hex')}`;
  const signedAt = new Date(Date.now() - 60_000);
  const signed = signApproval(
    ref(),
    {
      proposal: ref(),
      runner,
      target: 'ledger',
      capsule: { id: 'fix-1', digest: ref() },
      approver: approver.name,
      decision: 'approve',
      signedAt: signedAt.toISOString(),
      notAfter: new Date(signedAt.getTime() + 3_600_000).toISOString(),
    },
    approver.key,
  );
  return Buffer.from(toCanonicalJson(signed.envelope), 'utf8');
}

export type Route = 'work' | 'capsule' | 'bundle' | 'rejection' | 'checkpoint' | 'status' | 'trust' | 'approval';

export type Fault =
  | { route: Route; kind: 'status'; status: number; body?: string; headers?: Record<string, string> }
  /** The connection is closed before any answer (the request is not acted on). */
  | { route: Route; kind: 'drop' }
  /** The request is acted on (stored), then the connection closes before the answer. */
  | { route: Route; kind: 'store-then-drop' }
  /** No answer at all, the connection left open (a coordinator or a proxy that hangs). */
  | { route: Route; kind: 'hang' };

export interface Exchange {
  route: Route;
  method: string;
  path: string;
  /** The query string as sent (`?after=0&wait=1`, or ''). */
  query: string;
  at: number;
  answered: number | 'dropped';
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

export class StandInCoordinator {
  readonly bundles = new Map<string, Buffer>();
  readonly rejections = new Map<string, Buffer>();
  /** Every PUT of a bundle or rejection that was stored, with what it answered (to count duplicates). */
  readonly stores: { route: Route; digest: string; stored: 'created' | 'existing' }[] = [];
  readonly statuses: RunnerStatusReport[] = [];
  readonly cosigned: { size: number }[] = [];
  readonly exchanges: Exchange[] = [];
  readonly faults: Fault[] = [];
  readonly signatureFailures: string[] = [];
  private readonly capsules = new Map<string, Buffer>();
  private readonly feed: { cursor: number; capsule: string; size: number }[] = [];
  /** Approvals offered to the runner (the feed's `approvals` member, when the runner asks), and their bytes. */
  private readonly approvalFeed: ApprovalItem[] = [];
  private readonly approvalBytes = new Map<string, Buffer>();
  /** Answer the `approvals` parameter 400 FEED_BAD_QUERY, as a coordinator older than approvals does. */
  refuseApprovalsParameter = false;
  private readonly nonces = new Set<string>();
  /** The checkpoint the witness holds for the runner (what it last cosigned). */
  held: { size: number; rootHash: Buffer } | undefined;
  private waiters: (() => void)[] = [];
  private server: Server | undefined;
  private port = 0;
  trustVersion: number;
  /** Cosign with this key instead of the witness key of the trust document (a coordinator misconfigured). */
  cosignWith: PrivateKey | undefined;

  constructor(
    private readonly world: LinkWorld,
    private readonly tls?: { key: Buffer; cert: Buffer },
  ) {
    this.trustVersion = world.trust.body.version;
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  /** Listens (on the same port as before, after a stop). */
  async start(): Promise<void> {
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.handle(req, res);
    const server = this.tls ? createTlsServer({ key: this.tls.key, cert: this.tls.cert }, handler) : createServer(handler);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const wake of this.waiters.splice(0)) wake();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Publishes a capsule file: it is served by digest and enters the feed. Returns its cursor. */
  publish(bytes: Buffer): { cursor: number; digest: string } {
    const hex = sha256(bytes);
    this.capsules.set(hex, bytes);
    const cursor = this.feed.length + 1;
    this.feed.push({ cursor, capsule: `sha256:${hex}`, size: bytes.length });
    for (const wake of this.waiters.splice(0)) wake();
    return { cursor, digest: `sha256:${hex}` };
  }

  /**
   * Offers an approval (any bytes: the runner judges them) for `proposal`: listed in the feed after the
   * runner's approvals cursor and served by its SHA-256, unless `served` is false (then 404).
   */
  offerApproval(bytes: Buffer, proposal: string, options: { served?: boolean } = {}): { cursor: number; digest: string } {
    const hex = sha256(bytes);
    if (options.served !== false) this.approvalBytes.set(hex, bytes);
    const cursor = this.approvalFeed.length + 1;
    this.approvalFeed.push({ cursor, approval: `sha256:${hex}`, proposal, size: bytes.length });
    for (const wake of this.waiters.splice(0)) wake();
    return { cursor, digest: `sha256:${hex}` };
  }

  count(route: Route): number {
    return this.exchanges.filter((e) => e.route === route).length;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const url = new URL(req.url ?? '/', this.url);
    const route = routeOf(req.method ?? '', url.pathname);
    const exchange: Exchange = {
      route: route ?? 'trust',
      method: req.method ?? '',
      path: url.pathname,
      query: url.search,
      at: Date.now(),
      answered: 0,
    };
    if (route) this.exchanges.push(exchange);
    const answer = (status: number, content?: string | Buffer, headers: Record<string, string> = {}) => {
      exchange.answered = status;
      res.writeHead(status, { ...(content !== undefined ? { 'content-type': 'application/json' } : {}), ...headers });
      res.end(content);
    };
    const fail = (status: number, code: string) => answer(status, formatErrorBody({ code, message: 'Refused by the stand-in coordinator.' }));
    if (!route) return fail(404, 'HTTP_NOT_FOUND');
    try {
      await verifyRequest(
        {
          method: req.method ?? '',
          url: `${this.url}${req.url}`,
          headers: req.headers,
          ...(body.length > 0 || req.method === 'PUT' || req.method === 'POST' ? { body } : {}),
        },
        { trust: this.world.trust, now: new Date() },
      ).then((verified) => {
        if (this.nonces.has(verified.nonce)) throw Object.assign(new Error('replayed'), { code: 'PROTOCOL_NONCE_REPLAYED' });
        this.nonces.add(verified.nonce);
      });
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'PROTOCOL_SIGNATURE_INVALID';
      this.signatureFailures.push(code);
      return fail(401, code);
    }
    const index = this.faults.findIndex((f) => f.route === route);
    const fault = index >= 0 ? this.faults.splice(index, 1)[0] : undefined;
    if (fault?.kind === 'drop') {
      exchange.answered = 'dropped';
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'hang') {
      exchange.answered = 'dropped';
      return;
    }
    if (fault?.kind === 'status') return answer(fault.status, fault.body ?? '', fault.headers ?? {});
    const dropAfter = fault?.kind === 'store-then-drop';
    const respond = (status: number, content?: string | Buffer, headers: Record<string, string> = {}) => {
      if (dropAfter) {
        exchange.answered = 'dropped';
        req.socket.destroy();
        return;
      }
      answer(status, content, headers);
    };

    switch (route) {
      case 'work': {
        const after = Number(url.searchParams.get('after') ?? '0');
        const wait = Math.min(Number(url.searchParams.get('wait') ?? '30'), 60);
        const asked = url.searchParams.get('approvals');
        if (asked !== null && this.refuseApprovalsParameter) return fail(400, 'FEED_BAD_QUERY');
        const approvalsAfter = asked === null ? undefined : Number(asked);
        if (approvalsAfter !== undefined && approvalsAfter > this.approvalFeed.length) return fail(409, 'FEED_APPROVALS_CURSOR_AHEAD');
        const approvals = () => (approvalsAfter === undefined ? [] : this.approvalFeed.filter((item) => item.cursor > approvalsAfter).slice(0, 100));
        const deadline = Date.now() + wait * 1000;
        while (this.feed.every((item) => item.cursor <= after) && approvals().length === 0 && Date.now() < deadline && this.server) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
            this.waiters.push(() => {
              clearTimeout(timer);
              resolve();
            });
          });
        }
        if (!this.server) return;
        const items = this.feed.filter((item) => item.cursor > after).slice(0, 100);
        const offered = approvals();
        if (items.length === 0 && offered.length === 0) return respond(204);
        return respond(
          200,
          formatWorkFeed({
            items,
            cursor: items.at(-1)?.cursor ?? after,
            trust: { version: this.trustVersion },
            ...(approvalsAfter !== undefined ? { approvals: offered } : {}),
          }),
        );
      }
      case 'approval': {
        const bytes = this.approvalBytes.get(url.pathname.split('/').pop()!);
        return bytes ? respond(200, bytes) : fail(404, 'INBOX_NOT_FOUND');
      }
      case 'capsule': {
        const bytes = this.capsules.get(url.pathname.split('/').pop()!);
        return bytes
          ? respond(200, bytes, { 'content-type': 'application/vnd.edge-runner.capsule-file.v1+json' })
          : fail(404, 'FEED_CAPSULE_UNKNOWN');
      }
      case 'bundle':
      case 'rejection': {
        const hex = url.pathname.split('/').pop()!;
        if (sha256(body) !== hex) return fail(422, 'INBOX_DIGEST_MISMATCH');
        try {
          if (route === 'bundle') verifyBundle(body, this.world.trust);
          else verifyRejection(body, this.world.trust);
        } catch (err) {
          return fail(422, (err as { code?: string }).code ?? 'INBOX_INVALID');
        }
        const shelf = route === 'bundle' ? this.bundles : this.rejections;
        const stored = shelf.has(hex) ? 'existing' : 'created';
        shelf.set(hex, body);
        this.stores.push({ route, digest: `sha256:${hex}`, stored });
        return respond(stored === 'created' ? 201 : 200, formatInboxAck({ digest: `sha256:${hex}`, stored }));
      }
      case 'checkpoint': {
        const { world } = this;
        const request = parseAddCheckpoint(body);
        const origin = runnerOrigin(world.runnerId, world.runnerKey.keyid);
        const decision = decideAddCheckpoint(request, this.held, [{ name: origin, publicKey: world.runnerKey.publicKey }]);
        switch (decision.kind) {
          case 'cosign':
            this.held = { size: decision.checkpoint.size, rootHash: decision.checkpoint.rootHash };
            this.cosigned.push({ size: decision.checkpoint.size });
            return respond(
              200,
              signCosignature(request.note, world.witnessName, this.cosignWith ?? world.witnessKey, Math.floor(Date.now() / 1000)),
              {
                'content-type': 'text/plain; charset=utf-8',
              },
            );
          case 'conflict':
            return respond(409, formatTlogSize(decision.size), { 'content-type': 'text/x.tlog.size' });
          case 'fork':
            return fail(422, decision.reason);
          case 'error':
            return fail(decision.status, decision.code);
        }
        return;
      }
      case 'status':
        this.statuses.push(parseStatusReport(body));
        return respond(204);
      case 'trust':
        return respond(200, this.world.trustBytes);
    }
  }
}

function routeOf(method: string, path: string): Route | undefined {
  if (method === 'GET' && /^\/v1\/runners\/[^/]+\/work$/.test(path)) return 'work';
  if (method === 'GET' && /^\/v1\/capsules\/[0-9a-f]{64}$/.test(path)) return 'capsule';
  if (method === 'PUT' && /^\/v1\/bundles\/[0-9a-f]{64}$/.test(path)) return 'bundle';
  if (method === 'PUT' && /^\/v1\/rejections\/[0-9a-f]{64}$/.test(path)) return 'rejection';
  if (method === 'POST' && /^\/v1\/runners\/[^/]+\/add-checkpoint$/.test(path)) return 'checkpoint';
  if (method === 'PUT' && /^\/v1\/runners\/[^/]+\/status$/.test(path)) return 'status';
  if (method === 'GET' && path === '/v1/trust') return 'trust';
  if (method === 'GET' && /^\/v1\/approvals\/[0-9a-f]{64}$/.test(path)) return 'approval';
  return undefined;
}

/**
 * A CA and a server certificate for 127.0.0.1 and localhost, made with openssl at run time (Ed25519 would
 * do for TLS 1.3, but a P-256 certificate is what most proxies and clients agree on).
 */
export function makeTlsMaterial(dir: string, name = 'coordinator'): { caFile: string; key: Buffer; cert: Buffer } {
  const at = (file: string) => join(dir, `${name}-${file}`);
  const run = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  run(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    at('ca.key'),
    '-out',
    at('ca.pem'),
    '-days',
    '2',
    '-subj',
    `/CN=${name} test CA`,
  );
  run(
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    at('server.key'),
    '-out',
    at('server.csr'),
    '-subj',
    '/CN=127.0.0.1',
  );
  writeFileSync(at('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n');
  run(
    'x509',
    '-req',
    '-in',
    at('server.csr'),
    '-CA',
    at('ca.pem'),
    '-CAkey',
    at('ca.key'),
    '-CAcreateserial',
    '-out',
    at('server.pem'),
    '-days',
    '2',
    '-extfile',
    at('ext.cnf'),
  );
  return { caFile: at('ca.pem'), key: readFileSync(at('server.key')), cert: readFileSync(at('server.pem')) };
}

/** Waits for `check` to hold, polling every 20 ms, for at most `timeoutMs`; throws with `what` otherwise. */
export async function waitFor(check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A free TCP port on 127.0.0.1 (bound and released: a test's own servers take it right after). */
export async function freePort(): Promise<number> {
  const { createServer: createNetServer } = await import('node:net');
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Debian's tinyproxy as a real CONNECT proxy on 127.0.0.1, optionally asking for Basic credentials. */
export class TinyProxy {
  private child: ChildProcess | undefined;
  readonly log: string[] = [];
  constructor(
    private readonly dir: string,
    readonly port: number,
    private readonly auth?: { user: string; password: string },
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const { spawn } = await import('node:child_process');
    const config = join(this.dir, `tinyproxy-${this.port}.conf`);
    writeFileSync(
      config,
      [
        `Port ${this.port}`,
        'Listen 127.0.0.1',
        'Timeout 60',
        'MaxClients 50',
        'Allow 127.0.0.1',
        'LogLevel Connect',
        'DisableViaHeader Yes',
        ...(this.auth ? [`BasicAuth ${this.auth.user} ${this.auth.password}`] : []),
        '',
      ].join('\n'),
    );
    const child = spawn('tinyproxy', ['-d', '-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout!.setEncoding('utf8').on('data', (t: string) => this.log.push(t));
    child.stderr!.setEncoding('utf8').on('data', (t: string) => this.log.push(t));
    // Ready when it accepts connections.
    const { connect } = await import('node:net');
    const deadline = Date.now() + 10_000;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const socket = connect(this.port, '127.0.0.1', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
      if (ok) return;
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`tinyproxy did not start: ${this.log.join('')}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }
}
