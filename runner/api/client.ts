/**
 * The runner's HTTP client for one coordinator (docs/protocol.md, `/v1`), on undici. Built once per agent,
 * like Buildkite's AgentWorker API client: one dispatcher (an Agent, or an EnvHttpProxyAgent when a proxy is
 * configured, with the configured CA for the coordinator and for an https proxy), one key, one clock.
 *
 * Every request is signed (RFC 9421, runner/protocol/http-signature.ts) with a fresh nonce; a body is a
 * Buffer given by the caller, so a retry sends the same bytes (and the same Content-Digest). Every response
 * body is read with its cap (runner/protocol/wire.ts CAPS), counted while it streams and never buffered past
 * the cap, then parsed strictly. Nothing here throws for what the coordinator or the network did: each method
 * answers with runner/outbox/classify.ts's Answer (ok, retry with a code, permanent with a code).
 */
import { readFileSync } from 'node:fs';
import { Agent, EnvHttpProxyAgent, type Dispatcher } from 'undici';
import type { RunnerConfig } from '../config/config.js';
import { sha256Hex } from '../core/digest.js';
import type { PrivateKey } from '../core/ed25519.js';
import { REJECTION_MEDIA_TYPE } from '../evidence/rejection.js';
import { signRequest } from '../protocol/http-signature.js';
import {
  approvalPath,
  CAPS,
  formatStatusReport,
  parseInboxAck,
  parseWorkFeed,
  trustPath,
  type InboxAck,
  type RunnerStatusReport,
  type WorkFeed,
} from '../protocol/wire.js';
import { parseTlogSize } from '../protocol/witness.js';
import { TRUST_MAX_BYTES } from '../trust/trust.js';
import { classifyResponse, classifyTransportError, type Answer, type Expectation, type ResponseFacts } from '../outbox/classify.js';
import { ApiError } from './errors.js';

export type CoordinatorSettings = RunnerConfig['coordinator'];

export interface CoordinatorClientOptions {
  settings: CoordinatorSettings;
  /** The runner id: its key's name in the trust document, and the `{id}` of the runner's paths. */
  runnerId: string;
  key: PrivateKey;
  clock?: () => Date;
  /** Tests only: a dispatcher of their own (the configured one is built otherwise). */
  dispatcher?: Dispatcher;
}

/** What add-checkpoint answers: the cosignature lines, or (409) the size the witness holds. */
export type WitnessReply = { kind: 'cosigned'; lines: string } | { kind: 'conflict'; size: number };

const BUNDLE_MEDIA_TYPE = 'application/vnd.edge-runner.bundle.v1+json';
const CAPSULE_MEDIA_TYPE = 'application/vnd.edge-runner.capsule-file.v1+json';
const DIGEST = /^sha256:[0-9a-f]{64}$/;

export class CoordinatorClient {
  /** The configured base URL, without a trailing slash; request URLs are this + `/v1/...`. */
  readonly baseUrl: string;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly settings: CoordinatorSettings;
  private readonly runnerId: string;
  private readonly key: PrivateKey;
  private readonly clock: () => Date;

  constructor(options: CoordinatorClientOptions) {
    const { settings } = options;
    if (settings.url === '') throw new TypeError('CoordinatorClient needs a coordinator URL');
    this.baseUrl = settings.url.replace(/\/+$/, '');
    this.settings = settings;
    this.runnerId = options.runnerId;
    this.key = options.key;
    this.clock = options.clock ?? (() => new Date());
    this.ownsDispatcher = options.dispatcher === undefined;
    this.dispatcher = options.dispatcher ?? dispatcherFor(settings);
  }

  /**
   * The work feed after `after`, waiting up to `waitSeconds` for work; `null` is 204 (no work came). With
   * `approvalsAfter`, approvals after that cursor for this runner's proposals come too (and end the wait).
   */
  work(after: number, waitSeconds: number, signal?: AbortSignal, approvalsAfter?: number): Promise<Answer<WorkFeed | null>> {
    const approvals = approvalsAfter === undefined ? '' : `&approvals=${approvalsAfter}`;
    const path = `/v1/runners/${encodeURIComponent(this.runnerId)}/work?after=${after}&wait=${waitSeconds}${approvals}`;
    return this.send('GET', path, {
      cap: CAPS.workFeedBytes,
      expect: { statuses: [200, 204], parse: (r) => (r.status === 204 ? null : parseWorkFeed(r.body)) },
      // The long poll's own wait, plus the usual bound for everything else.
      timeoutMs: waitSeconds * 1000 + this.settings.requestTimeoutMs,
      signal,
    });
  }

  /** The capsule file with this digest (`sha256:HEX`); bytes with another digest are not it (retried). */
  capsule(digest: string, signal?: AbortSignal): Promise<Answer<Buffer>> {
    const hex = hexOf(digest);
    return this.send('GET', `/v1/capsules/${hex}`, {
      cap: CAPS.capsuleBytes,
      accept: CAPSULE_MEDIA_TYPE,
      expect: {
        statuses: [200],
        parse: (r) => {
          if (sha256Hex(r.body) !== hex) throw new ApiError('API_UNEXPECTED_BODY', 'The capsule served does not have the digest it was asked for.');
          return r.body;
        },
      },
      signal,
    });
  }

  /**
   * An approval of one of this runner's proposals (`sha256:HEX`, the approval digest: the SHA-256 of the
   * canonical envelope the coordinator serves); bytes with another digest are not it (retried).
   */
  approval(digest: string, signal?: AbortSignal): Promise<Answer<Buffer>> {
    const hex = hexOf(digest);
    return this.send('GET', approvalPath(digest), {
      cap: CAPS.approvalBytes,
      expect: {
        statuses: [200],
        parse: (r) => {
          if (sha256Hex(r.body) !== hex) throw new ApiError('API_UNEXPECTED_BODY', 'The approval served does not have the digest it was asked for.');
          return r.body;
        },
      },
      signal,
    });
  }

  putBundle(digest: string, bytes: Buffer, signal?: AbortSignal): Promise<Answer<InboxAck>> {
    return this.putAnswer('bundles', digest, bytes, BUNDLE_MEDIA_TYPE, signal);
  }

  putRejection(digest: string, bytes: Buffer, signal?: AbortSignal): Promise<Answer<InboxAck>> {
    return this.putAnswer('rejections', digest, bytes, REJECTION_MEDIA_TYPE, signal);
  }

  /** C2SP tlog-witness add-checkpoint: 200 with cosignature lines, or 409 with the size the witness holds. */
  addCheckpoint(body: Buffer, signal?: AbortSignal): Promise<Answer<WitnessReply>> {
    return this.send('POST', `/v1/runners/${encodeURIComponent(this.runnerId)}/add-checkpoint`, {
      body,
      contentType: 'text/plain; charset=utf-8',
      cap: CAPS.cosignatureResponseBytes,
      expect: {
        statuses: [200, 409],
        parse: (r): WitnessReply => {
          if (r.status === 409) {
            if (!mediaTypeIs(r.headers['content-type'], 'text/x.tlog.size'))
              throw new ApiError('API_UNEXPECTED_BODY', 'A 409 without text/x.tlog.size.');
            return { kind: 'conflict', size: parseTlogSize(r.body) };
          }
          if (!mediaTypeIs(r.headers['content-type'], 'text/plain')) throw new ApiError('API_UNEXPECTED_BODY', 'Cosignatures are not text/plain.');
          const lines = new TextDecoder('utf-8', { fatal: true }).decode(r.body);
          return { kind: 'cosigned', lines };
        },
      },
      signal,
    });
  }

  /** The runner's status report (numbers and enums; the caller guards it): 204. */
  status(report: RunnerStatusReport, signal?: AbortSignal): Promise<Answer<null>> {
    return this.send('PUT', `/v1/runners/${encodeURIComponent(this.runnerId)}/status`, {
      body: formatStatusReport(report),
      contentType: 'application/json',
      cap: CAPS.errorBodyBytes,
      expect: { statuses: [204, 200], parse: () => null },
      signal,
    });
  }

  /**
   * The coordinator's trust document, as bytes: the latest, or the one of `version` (the caller verifies it
   * under TUF's rule; a document that is not the version asked for is refused there, not here).
   */
  trust(version?: number, signal?: AbortSignal): Promise<Answer<Buffer>> {
    return this.send('GET', trustPath(version), { cap: TRUST_MAX_BYTES, expect: { statuses: [200], parse: (r) => r.body }, signal });
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close();
  }

  /** Closes at once, failing what is in flight (an agent that must exit). */
  async destroy(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.destroy();
  }

  private putAnswer(folder: 'bundles' | 'rejections', digest: string, bytes: Buffer, contentType: string, signal?: AbortSignal) {
    return this.send('PUT', `/v1/${folder}/${hexOf(digest)}`, {
      body: bytes,
      contentType,
      cap: CAPS.inboxAckBytes,
      expect: {
        statuses: [200, 201],
        parse: (r) => {
          const ack = parseInboxAck(r.body);
          // An ack for other bytes is no ack for these.
          if (ack.digest !== digest) throw new ApiError('API_UNEXPECTED_BODY', 'The acknowledgement names another digest.');
          if ((r.status === 201) !== (ack.stored === 'created'))
            throw new ApiError('API_UNEXPECTED_BODY', 'The acknowledgement contradicts its status.');
          return ack;
        },
      } satisfies Expectation<InboxAck>,
      signal,
    });
  }

  private async send<T>(
    method: 'GET' | 'PUT' | 'POST',
    path: string,
    options: {
      body?: Buffer;
      contentType?: string;
      accept?: string;
      cap: number;
      expect: Expectation<T>;
      timeoutMs?: number;
      signal?: AbortSignal | undefined;
    },
  ): Promise<Answer<T>> {
    const url = `${this.baseUrl}${path}`;
    const timeoutMs = options.timeoutMs ?? this.settings.requestTimeoutMs;
    // One controller per request, aborted by the caller's signal or the timeout; both unhooked at the end.
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new ApiError('API_TIMEOUT', `The request took longer than ${timeoutMs} ms.`));
    }, timeoutMs);
    const onAbort = () => controller.abort(new ApiError('API_ABORTED', 'The request was aborted.'));
    if (options.signal?.aborted) onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const signal = controller.signal;
    let facts: ResponseFacts;
    try {
      const signed = await signRequest({ method, url, ...(options.body ? { body: options.body } : {}) }, this.key, {
        now: this.clock(),
        ttlSeconds: this.settings.signatureTtlSeconds,
      });
      const headers: Record<string, string> = { ...signed, accept: options.accept ?? 'application/json' };
      if (options.contentType) headers['content-type'] = options.contentType;
      const target = new URL(url);
      const response = await this.dispatcher.request({
        origin: target.origin,
        path: target.pathname + target.search,
        method,
        headers,
        ...(options.body ? { body: options.body } : {}),
        signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const ok = options.expect.statuses.includes(response.statusCode);
      const read = await readCapped(response.body, ok ? options.cap : CAPS.errorBodyBytes);
      facts = { status: response.statusCode, headers: response.headers, body: read.bytes, overCap: read.overCap };
    } catch (err) {
      if (options.signal?.aborted) return { kind: 'retry', code: 'API_ABORTED' };
      if (timedOut) return { kind: 'retry', code: 'API_TIMEOUT' };
      return classifyTransportError(err);
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
    }
    return classifyResponse(facts, options.expect, this.clock().getTime());
  }
}

/**
 * Reads a body up to `cap` bytes, counting as it streams; past the cap it stops, destroys the stream (the
 * connection goes with it) and says so. Never holds more than cap + one chunk.
 */
export async function readCapped(
  body: AsyncIterable<Uint8Array> & { destroy(err?: Error): unknown },
  cap: number,
): Promise<{ bytes: Buffer; overCap: boolean }> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.length;
    if (total > cap) {
      body.destroy();
      return { bytes: Buffer.alloc(0), overCap: true };
    }
    chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
  }
  return { bytes: Buffer.concat(chunks, total), overCap: false };
}

/**
 * The one dispatcher of a coordinator: TLS trusts the configured CA file (else the system store); with a
 * proxy, an EnvHttpProxyAgent given the configured proxies and NO_PROXY explicitly (so undici never reads
 * the environment itself), user:password in a proxy URL becoming Proxy-Authorization, `requestTls` the CA
 * for the coordinator through the tunnel (a TLS-inspecting proxy's CA is that CA), `proxyTls` the CA of an
 * https proxy.
 */
export function dispatcherFor(settings: CoordinatorSettings): Dispatcher {
  const ca = readCa(settings.caFile, 'coordinator.caFile');
  const proxyCa = readCa(settings.proxyCaFile, 'coordinator.proxyCaFile');
  const connect = { timeout: settings.requestTimeoutMs, ...(ca ? { ca } : {}) };
  const common = { connect, keepAliveTimeout: 30_000, headersTimeout: settings.requestTimeoutMs, bodyTimeout: settings.requestTimeoutMs };
  // A plain-http coordinator is a loopback one (the configuration refuses any other) and is reached
  // directly: a proxy is a hop off the host, which would read the requests in the clear and could answer
  // for the coordinator. The environment's http_proxy (common on managed hosts) must not open that hop.
  if (isPlainHttp(settings.url) || (settings.httpsProxy === '' && settings.httpProxy === '')) return new Agent(common);
  return new EnvHttpProxyAgent({
    ...common,
    httpProxy: settings.httpProxy,
    httpsProxy: settings.httpsProxy,
    noProxy: settings.noProxy,
    requestTls: { timeout: settings.requestTimeoutMs, ...(ca ? { ca } : {}) },
    proxyTls: { timeout: settings.requestTimeoutMs, ...(proxyCa ? { ca: proxyCa } : {}) },
  } as ConstructorParameters<typeof EnvHttpProxyAgent>[0]);
}

function isPlainHttp(url: string): boolean {
  try {
    return new URL(url).protocol === 'http:';
  } catch {
    return false;
  }
}

function readCa(path: string, setting: string): Buffer | undefined {
  if (path === '') return undefined;
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new ApiError('API_CA_FILE', `The CA file named by ${setting} cannot be read.`, { setting }, { cause });
  }
}

function hexOf(digest: string): string {
  if (!DIGEST.test(digest)) throw new TypeError(`not a sha256 digest: ${digest.slice(0, 80)}`);
  return digest.slice('sha256:'.length);
}

function mediaTypeIs(value: string | string[] | undefined, type: string): boolean {
  const text = Array.isArray(value) ? value[0] : value;
  return typeof text === 'string' && text.split(';')[0]!.trim().toLowerCase() === type;
}
