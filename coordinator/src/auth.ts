/**
 * Who is asking. Runners sign every request (RFC 9421, checked by runner/protocol/http-signature.ts against
 * the coordinator's trust document); the coordinator adds what only it can check: the runner id in the path
 * is the signing key's name, and a nonce is accepted once (kept until its signature expires). Operators send
 * a bearer token, compared by SHA-256 with every configured hash in constant time.
 */
import { timingSafeEqual } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { sha256 } from '../../runner/core/digest.js';
import { ProtocolError, PROTOCOL_ERROR_SENTENCES, type ProtocolErrorCode } from '../../runner/protocol/errors.js';
import { checkContentDigest, verifyRequestHeaders, type VerifiedRequest } from '../../runner/protocol/http-signature.js';
import type { App } from './app.js';
import { HttpError } from './errors.js';
import { bodyReservation, readBody, refuseOversized, type RouteContext } from './http.js';

/** HTTP status per signature refusal: 401 (who are you?), 403 (known, but not allowed this), 400 (malformed body digest). */
const SIGNATURE_STATUS: Partial<Record<ProtocolErrorCode, number>> = {
  PROTOCOL_KEY_ROLE: 403,
  PROTOCOL_RUNNER_MISMATCH: 403,
  PROTOCOL_DIGEST_MISSING: 400,
  PROTOCOL_DIGEST_MALFORMED: 400,
  PROTOCOL_DIGEST_MISMATCH: 400,
};

export function statusOfProtocolError(code: ProtocolErrorCode): number {
  return SIGNATURE_STATUS[code] ?? 401;
}

/** Host names that mean this machine, for a coordinator without a public URL (it serves loopback only). */
const LOOPBACK_HOST = /^(?:localhost|127(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}|\[::1\])$/i;

/**
 * The @target-uri the runner signed: the configured public URL, or scheme://Host, plus path and query.
 * Without a public URL the Host header is the client's word, so it is taken only when it names this
 * coordinator: a loopback host and the port it listens on (serve refuses a non-loopback address without a
 * public URL). Otherwise a request signed for another coordinator that trusts the same runner key could be
 * replayed here with that coordinator's Host (421 PROTOCOL_MISDIRECTED).
 */
export function targetUri(app: App, ctx: RouteContext): string {
  if (app.publicUrl !== null) return `${app.publicUrl}${ctx.rawTarget}`;
  const host = ctx.req.headers.host;
  if (host === undefined || host.length === 0) throw new HttpError(400, 'PROTOCOL_SIGNATURE_MALFORMED', 'The request has no Host header.');
  const scheme = (ctx.req.socket as TLSSocket).encrypted ? 'https' : 'http';
  const match = /^(\[::1\]|[^:[\]]+)(?::([0-9]{1,5}))?$/.exec(host);
  const port = match?.[2] !== undefined ? Number(match[2]) : scheme === 'https' ? 443 : 80;
  if (!match || !LOOPBACK_HOST.test(match[1]!) || (app.port !== null && port !== app.port)) {
    throw new HttpError(421, 'PROTOCOL_MISDIRECTED', 'The Host header does not name this coordinator.');
  }
  return `${scheme}://${host}${ctx.rawTarget}`;
}

export interface RunnerAuthOptions {
  /** The runner id named in the path, which must be the signing key's name. */
  pathRunner?: string;
}

/** A signed request without a body (GET): headers checked, nonce spent. */
export async function authenticateRunner(app: App, ctx: RouteContext, options: RunnerAuthOptions = {}): Promise<VerifiedRequest> {
  const verified = await admitSigned(app, ctx, false, options);
  return toVerifiedRequest(verified);
}

/**
 * A signed request with a body, in this order, so that nothing is read for a request that is not an
 * enrolled runner's: a Content-Length over `cap` is refused (413); the signature is checked on the headers
 * (it covers Content-Digest) and the nonce spent; the read reserves its share of the body budget (503 when
 * it is spent, or when this runner has too many reads open); then the body is read under its cap and must be
 * the one the signed digest names (400 PROTOCOL_DIGEST_MISMATCH).
 */
export async function authenticateRunnerBody(
  app: App,
  ctx: RouteContext,
  options: RunnerAuthOptions & { cap: number },
): Promise<{ who: VerifiedRequest; body: Buffer }> {
  refuseOversized(ctx.req, options.cap);
  const verified = await admitSigned(app, ctx, true, options);
  const release = app.bodyReads.tryAcquire(verified.name, bodyReservation(ctx.req, options.cap));
  if (release === undefined) {
    throw new HttpError(503, 'PROTOCOL_BUSY', 'The coordinator is reading as many bodies as it allows at once; try again shortly.', {
      'retry-after': '1',
      connection: 'close',
    });
  }
  let body: Buffer;
  try {
    body = await readBody(ctx.req, options.cap);
  } finally {
    release();
  }
  try {
    checkContentDigest(verified.contentDigest, body);
  } catch (err) {
    if (err instanceof ProtocolError) throw new HttpError(statusOfProtocolError(err.code), err.code, err.message);
    throw err;
  }
  return { who: toVerifiedRequest(verified), body };
}

async function admitSigned(
  app: App,
  ctx: RouteContext,
  hasBody: boolean,
  options: RunnerAuthOptions,
): Promise<VerifiedRequest & { contentDigest: string | undefined }> {
  const now = app.clock();
  refuseExpiredTrust(app, now);
  let verified: VerifiedRequest & { contentDigest: string | undefined };
  try {
    verified = await verifyRequestHeaders(
      { method: ctx.req.method ?? '', url: targetUri(app, ctx), headers: ctx.req.headers, hasBody },
      { trust: app.trust, now, maxFutureSeconds: app.signatures.maxFutureSeconds, maxTtlSeconds: app.signatures.maxTtlSeconds },
    );
  } catch (err) {
    if (err instanceof ProtocolError) throw new HttpError(statusOfProtocolError(err.code), err.code, err.message);
    throw err;
  }
  if (options.pathRunner !== undefined && options.pathRunner !== verified.name) {
    throw new HttpError(403, 'PROTOCOL_RUNNER_MISMATCH', PROTOCOL_ERROR_SENTENCES.PROTOCOL_RUNNER_MISMATCH);
  }
  // The nonce is spent only by a request whose signature verified, so nobody can burn another runner's
  // nonces; it is spent before the body is read, so one signed request makes the coordinator read one body.
  const fresh = await app.store.admitRequest({
    keyid: verified.keyid,
    nonce: verified.nonce,
    expiresAt: verified.expires,
    nowSeconds: Math.floor(now.getTime() / 1000),
    runner: verified.name,
    at: now.toISOString(),
  });
  if (!fresh) throw new HttpError(401, 'PROTOCOL_NONCE_REPLAYED', PROTOCOL_ERROR_SENTENCES.PROTOCOL_NONCE_REPLAYED);
  return verified;
}

function toVerifiedRequest(v: VerifiedRequest): VerifiedRequest {
  return { keyid: v.keyid, name: v.name, nonce: v.nonce, created: v.created, expires: v.expires };
}

/**
 * The trust document is checked at start, and its expiry at every request that is judged by it: a document
 * that expired while the coordinator ran verifies nothing more (503 with Retry-After, so runners keep their
 * evidence queued until an operator pins the next version and restarts the coordinator).
 */
export function refuseExpiredTrust(app: App, now: Date): void {
  if (Date.parse(app.trust.body.expires) <= now.getTime()) {
    throw new HttpError(503, 'COORDINATOR_TRUST_EXPIRED', `The coordinator's trust document expired at ${app.trust.body.expires}.`, {
      'retry-after': '300',
    });
  }
}

const BEARER = /^Bearer ([\x21-\x7e]{1,512})$/;

export function hasBearer(ctx: RouteContext): boolean {
  return ctx.req.headers.authorization !== undefined;
}

/** Refuses (401) unless the request carries a bearer token whose SHA-256 is a configured operator token's. */
export function authenticateOperator(app: App, ctx: RouteContext): void {
  const header = ctx.req.headers.authorization;
  const match = header === undefined ? null : BEARER.exec(header);
  const refuse = () =>
    new HttpError(401, 'OPERATOR_UNAUTHORIZED', 'This endpoint needs an operator bearer token.', {
      'www-authenticate': 'Bearer realm="edge-runner-coordinator"',
    });
  if (!match) throw refuse();
  const presented = sha256(Buffer.from(match[1]!, 'utf8'));
  // Every hash is compared, whatever matched first: the time taken says nothing about which one or how close.
  let ok = false;
  for (const hash of app.operatorTokenHashes) ok = timingSafeEqual(presented, hash) || ok;
  if (!ok) throw refuse();
}
