/**
 * The coordinator link end to end, real processes on 127.0.0.1: the reference coordinator
 * (dist/coordinator/src/main.js, `init` then `serve`) for a LinkWorld, the runner's `edge-runner agent`
 * (dist/runner/main.js), and a recording proxy between them (in front of the coordinator) that keeps
 * every request and every answer the coordinator gave, and injects faults: the answer read from the
 * coordinator and the agent's connection closed instead, or an answer of the proxy's own (a 502, an HTML
 * page) without the request reaching the coordinator.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { runCoordinatorCli, startCoordinator, type RunningCoordinator } from '../coordinator/helpers.js';
import { CLI_ENTRY } from './cli.js';
import type { LinkWorld } from './agent-link.js';

/** Every child process a link test started, killed by killAll (afterAll). */
const children = new Set<ChildProcess>();

export async function killAll(): Promise<void> {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
  }
  children.clear();
}

export interface LinkCoordinator {
  stateDir: string;
  /** The coordinator's base URL (what the agent is given). */
  url: string;
  running: RunningCoordinator;
  /** A request with the operator's bearer token; the whole body is read. */
  operator(path: string, init?: RequestInit): Promise<{ status: number; body: Buffer; json: () => any }>;
  /** Every operator answer's body this helper received, to scan. */
  operatorBodies: { path: string; body: Buffer }[];
}

/**
 * `init` (trust document, witness key, operator token made in the state folder), then optionally
 * `trust-update` to each of `updates`, then `serve` on a free loopback port.
 */
export async function startLinkCoordinator(
  world: LinkWorld,
  options: { trustFile?: string; updates?: string[]; name?: string; publicUrl?: string } = {},
): Promise<LinkCoordinator> {
  const stateDir = join(world.dir, options.name ?? 'coordinator');
  const witnessKey = join(world.dir, 'witness.key.pem');
  writeFileSync(witnessKey, world.witnessKey.toPem(), { mode: 0o600 });
  const init = runCoordinatorCli([
    'init',
    '--state',
    stateDir,
    '--trust',
    options.trustFile ?? join(world.dir, 'trust.dsse.json'),
    '--witness-key',
    witnessKey,
  ]);
  if (init.status !== 0) throw new Error(`coordinator init failed: ${init.stderr}`);
  for (const file of options.updates ?? []) {
    const update = runCoordinatorCli(['trust-update', '--state', stateDir, file]);
    if (update.status !== 0) throw new Error(`coordinator trust-update failed: ${update.stderr}`);
  }
  const running = await startCoordinator(stateDir, options.publicUrl ? ['--public-url', options.publicUrl] : []);
  children.add(running.proc);
  const token = readFileSync(join(stateDir, 'operator.token'), 'utf8').trim();
  const operatorBodies: { path: string; body: Buffer }[] = [];
  return {
    stateDir,
    url: running.url,
    running,
    operatorBodies,
    async operator(path, init = {}) {
      const answer = await fetch(`${running.url}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${token}`, ...(init.headers as Record<string, string> | undefined) },
        signal: AbortSignal.timeout(20_000),
      });
      const body = Buffer.from(await answer.arrayBuffer());
      operatorBodies.push({ path, body });
      return { status: answer.status, body, json: () => JSON.parse(body.toString('utf8')) };
    },
  };
}

export interface SpawnedAgent {
  child: ChildProcess;
  /** The agent's log (pino JSON lines on stderr), parsed as they come. */
  lines: Record<string, unknown>[];
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: string | null }>;
  /** SIGTERM and the exit (bounded: SIGKILL after 20 s). */
  stop(): Promise<{ code: number | null; signal: string | null }>;
}

/**
 * `edge-runner agent` on the world's state folder, quick backoff and short polls, with exactly `env`;
 * `config`: more members of its configuration file (change targets, say).
 */
export function spawnAgent(
  world: LinkWorld,
  coordinatorUrl: string,
  env: Record<string, string> = {},
  name = 'agent',
  config: Record<string, unknown> = {},
): SpawnedAgent {
  return spawnAgentWith(world, ['--coordinator', coordinatorUrl], env, name, config);
}

/** `edge-runner agent --spool DIR` (air-gapped, no coordinator) on the world's state folder, with exactly `env`. */
export function spawnSpoolAgent(
  world: LinkWorld,
  spoolDir: string,
  env: Record<string, string> = {},
  name = 'spool-agent',
  config: Record<string, unknown> = {},
): SpawnedAgent {
  return spawnAgentWith(world, ['--spool', spoolDir], env, name, config);
}

function spawnAgentWith(
  world: LinkWorld,
  args: string[],
  env: Record<string, string>,
  name: string,
  more: Record<string, unknown> = {},
): SpawnedAgent {
  const config = join(world.dir, `${name}.json`);
  writeFileSync(
    config,
    JSON.stringify({ coordinator: { pollWaitSeconds: 1, backoffBaseMs: 50, backoffCapMs: 400, flushMs: 3000, requestTimeoutMs: 5000 }, ...more }),
  );
  const child = spawn(process.execPath, [CLI_ENTRY, 'agent', '--state', world.stateDir, '--config', config, ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: world.dir, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  const lines: Record<string, unknown>[] = [];
  let text = '';
  let pending = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    text += chunk;
    pending += chunk;
    const parts = pending.split('\n');
    pending = parts.pop()!;
    for (const line of parts) {
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ unparsed: line });
      }
    }
  });
  const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    lines,
    stderr: () => text,
    exit,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exit;
        clearTimeout(timer);
      }
      return exit;
    },
  };
}

/** What the proxy did with one request. */
export interface ProxiedExchange {
  method: string;
  path: string;
  requestBody: Buffer;
  /** The coordinator's status, or the proxy's own when it answered for it (undefined: no answer came). */
  status: number | undefined;
  responseHeaders: IncomingHttpHeaders;
  responseBody: Buffer;
  /**
   * forwarded: the coordinator's answer went to the agent; dropped: the coordinator answered, the proxy
   * closed the agent's connection instead; proxy: the proxy answered itself, the coordinator never saw it;
   * failed: the coordinator could not be reached or the agent went away first.
   */
  action: 'forwarded' | 'dropped' | 'proxy' | 'failed';
  at: number;
}

export type ProxyAction =
  { kind: 'forward' } | { kind: 'drop-answer' } | { kind: 'answer'; status: number; headers?: Record<string, string>; body?: string };

/** Decides what happens to a request: the first rule that returns an action wins; none: forward. */
export type ProxyRule = (request: { method: string; path: string; body: Buffer }) => ProxyAction | undefined;

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

/**
 * An HTTP proxy on 127.0.0.1, in front of the coordinator (the agent is given the proxy's URL, and the
 * coordinator `--public-url` names it, as behind a load balancer, so the signed @target-uri holds), or as a
 * forward proxy (an absolute request line). The agent reaches a plain-http loopback coordinator directly
 * whatever HTTP_PROXY says, so the tests use the first. Each request is read whole, forwarded on a fresh
 * connection, its answer read whole and kept.
 */
export class RecordingProxy {
  readonly exchanges: ProxiedExchange[] = [];
  /** CONNECT requests (refused: this proxy forwards plain HTTP only). */
  readonly connects: string[] = [];
  readonly rules: ProxyRule[] = [];
  /** Where a request with a path (not an absolute URL) goes: the coordinator this proxy stands in front of. */
  target: string | undefined;
  private server: Server | undefined;
  private readonly inFlight = new Set<ClientRequest>();

  get url(): string {
    return `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}`;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        let target: URL;
        try {
          // A forward proxy's absolute request line, or (in front of the coordinator) a path.
          target = /^https?:/.test(req.url ?? '') ? new URL(req.url!) : new URL(req.url ?? '/', this.target);
        } catch {
          res.writeHead(400).end();
          return;
        }
        const method = req.method ?? 'GET';
        const path = target.pathname + target.search;
        const exchange: ProxiedExchange = {
          method,
          path,
          requestBody: body,
          status: undefined,
          responseHeaders: {},
          responseBody: Buffer.alloc(0),
          action: 'failed',
          at: Date.now(),
        };
        this.exchanges.push(exchange);
        let action: ProxyAction = { kind: 'forward' };
        for (const rule of this.rules) {
          const decided = rule({ method, path, body });
          if (decided) {
            action = decided;
            break;
          }
        }
        if (action.kind === 'answer') {
          exchange.action = 'proxy';
          exchange.status = action.status;
          exchange.responseBody = Buffer.from(action.body ?? '');
          res.writeHead(action.status, { 'content-length': String(exchange.responseBody.length), ...(action.headers ?? {}) });
          res.end(exchange.responseBody);
          return;
        }
        const headers: Record<string, string | string[]> = {};
        for (const [name, value] of Object.entries(req.headers)) {
          if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
        }
        headers['content-length'] = String(body.length);
        const forward = httpRequest({ host: target.hostname, port: target.port, method, path, headers, agent: false }, (answer) => {
          const parts: Buffer[] = [];
          answer.on('data', (chunk: Buffer) => parts.push(chunk));
          answer.on('end', () => {
            this.inFlight.delete(forward);
            exchange.status = answer.statusCode;
            exchange.responseHeaders = answer.headers;
            exchange.responseBody = Buffer.concat(parts);
            if (action.kind === 'drop-answer') {
              exchange.action = 'dropped';
              req.socket.destroy();
              return;
            }
            exchange.action = 'forwarded';
            const out: Record<string, string | string[]> = {};
            for (const [name, value] of Object.entries(answer.headers)) {
              if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
            }
            out['content-length'] = String(exchange.responseBody.length);
            res.writeHead(answer.statusCode ?? 502, out);
            res.end(exchange.responseBody);
          });
          answer.on('error', () => req.socket.destroy());
        });
        this.inFlight.add(forward);
        forward.on('error', () => {
          this.inFlight.delete(forward);
          req.socket.destroy();
        });
        // The agent gave up (a long poll it stopped): so does the proxy.
        res.on('close', () => {
          if (!res.writableFinished) forward.destroy();
        });
        forward.end(body);
      });
    });
    server.on('connect', (req, socket) => {
      this.connects.push(req.url ?? '');
      socket.end('HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const forward of this.inFlight) forward.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The exchanges for one method and path prefix, in order. */
  to(method: string, pathPrefix: string): ProxiedExchange[] {
    return this.exchanges.filter((e) => e.method === method && e.path.startsWith(pathPrefix));
  }
}

/** A rule acting on the first `times` requests with this method and path prefix, then never again. */
export function firstRequests(method: string, pathPrefix: string, times: number, action: ProxyAction): ProxyRule {
  let left = times;
  return (request) => {
    if (left <= 0 || request.method !== method || !request.path.startsWith(pathPrefix)) return undefined;
    left -= 1;
    return action;
  };
}

/**
 * The forms a secret can take in bytes that carry it: itself, hex (both cases), URL-encoded, JSON-escaped,
 * and base64 and base64url at each of the three alignments it can have inside a longer encoded text (only
 * the characters that depend on the secret alone, so a match at any offset is found).
 */
export function canaryForms(secret: string): string[] {
  const bytes = Buffer.from(secret, 'utf8');
  const forms = new Set([
    secret,
    bytes.toString('hex'),
    bytes.toString('hex').toUpperCase(),
    encodeURIComponent(secret),
    JSON.stringify(secret).slice(1, -1),
  ]);
  for (let shift = 0; shift < 3; shift++) {
    const b64 = Buffer.concat([Buffer.alloc(shift, 0x20), bytes]).toString('base64');
    const start = Math.ceil((shift * 4) / 3) + 1;
    const inner = b64.slice(start, start + Math.floor((bytes.length * 4) / 3) - 4);
    forms.add(inner);
    forms.add(inner.replace(/\+/g, '-').replace(/\//g, '_'));
  }
  return [...forms].filter((form) => form.length >= 12);
}

/** The first form of `secrets` found in `bytes`, or undefined. */
export function findCanary(bytes: Buffer, secrets: readonly string[]): string | undefined {
  for (const secret of secrets) {
    for (const form of canaryForms(secret)) if (bytes.includes(Buffer.from(form, 'utf8'))) return form;
  }
  return undefined;
}

/** Every regular file under `dir`, recursively, with its bytes. */
export function filesUnder(dir: string): { path: string; bytes: Buffer }[] {
  const out: { path: string; bytes: Buffer }[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const info = statSync(path);
    if (info.isDirectory()) out.push(...filesUnder(path));
    else if (info.isFile()) out.push({ path, bytes: readFileSync(path) });
  }
  return out;
}

/** Waits for an async `check` to hold, polling every 50 ms, for at most `timeoutMs`; throws with `what`. */
export async function waitForAsync(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * A recording proxy and, behind it, the real coordinator whose public URL is the proxy's: the agent is
 * pointed at `proxy.url` and every exchange passes the proxy.
 */
export async function startProxiedCoordinator(
  world: LinkWorld,
  options: { trustFile?: string; updates?: string[] } = {},
): Promise<{ proxy: RecordingProxy; coordinator: LinkCoordinator }> {
  const proxy = new RecordingProxy();
  await proxy.start();
  const coordinator = await startLinkCoordinator(world, { ...options, publicUrl: proxy.url });
  proxy.target = coordinator.url;
  return { proxy, coordinator };
}
