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
import { verifyRequest, type VerifiedRequest } from '../../runner/protocol/http-signature.js';
import type { App } from './app.js';
import { HttpError } from './errors.js';
import type { RouteContext } from './http.js';

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

/** The @target-uri the runner signed: the configured public URL, or scheme://Host, plus path and query. */
export function targetUri(app: App, ctx: RouteContext): string {
  if (app.publicUrl !== null) return `${app.publicUrl}${ctx.rawTarget}`;
  const host = ctx.req.headers.host;
  if (host === undefined || host.length === 0) throw new HttpError(400, 'PROTOCOL_SIGNATURE_MALFORMED', 'The request has no Host header.');
  const scheme = (ctx.req.socket as TLSSocket).encrypted ? 'https' : 'http';
  return `${scheme}://${host}${ctx.rawTarget}`;
}

export interface RunnerAuthOptions {
  body?: Buffer;
  /** The runner id named in the path, which must be the signing key's name. */
  pathRunner?: string;
}

export async function authenticateRunner(app: App, ctx: RouteContext, options: RunnerAuthOptions = {}): Promise<VerifiedRequest> {
  const now = app.clock();
  let verified: VerifiedRequest;
  try {
    verified = await verifyRequest(
      { method: ctx.req.method ?? '', url: targetUri(app, ctx), headers: ctx.req.headers, ...(options.body ? { body: options.body } : {}) },
      { trust: app.trust, now, maxFutureSeconds: app.signatures.maxFutureSeconds, maxTtlSeconds: app.signatures.maxTtlSeconds },
    );
  } catch (err) {
    if (err instanceof ProtocolError) throw new HttpError(statusOfProtocolError(err.code), err.code, err.message);
    throw err;
  }
  if (options.pathRunner !== undefined && options.pathRunner !== verified.name) {
    throw new HttpError(403, 'PROTOCOL_RUNNER_MISMATCH', PROTOCOL_ERROR_SENTENCES.PROTOCOL_RUNNER_MISMATCH);
  }
  // The nonce is spent only by a request that is otherwise valid, so nobody can burn another runner's nonces.
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
