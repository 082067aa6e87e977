/**
 * What an answer from the coordinator (or its absence) means for the sender: acknowledged, try again later,
 * or refused for good. One pure module, so the rule reads in one place and is tested over a table:
 *
 * - retry: every transport failure (refused, reset, closed before the answer, TLS, proxy, timeout), 408,
 *   429, every 5xx, and a 2xx whose body is not what the endpoint answers (a proxy's HTML page), or is
 *   larger than its cap;
 * - ok: an expected status with a body that parses;
 * - permanent: any other 4xx that carries the coordinator's JSON error body (it read the document and
 *   refused it), with that code. The outbox dead-letters those, once. A 401, 407 or 421 (the request's
 *   signature, a proxy's credentials, a misdirected request: not the document) and a 4xx without the
 *   coordinator's error body (something on the way answered) are retried instead.
 *
 * `Retry-After` (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) is read on every retryable answer and
 * honoured, capped, by the backoff below: capped exponential with full jitter (the AWS architecture blog's
 * "Exponential Backoff And Jitter": sleep = random(0, min(cap, base * 2^attempt))).
 */
import { isCodedError } from '../core/errors.js';
import { parseErrorBody } from '../protocol/wire.js';

/** A response as the client read it: the status, the headers it needs, and the body read up to its cap. */
export interface ResponseFacts {
  status: number;
  /** Lower-case names; the values as received. */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  body: Buffer;
  /** True when the body was larger than the cap it was read with (then `body` is what was read, or empty). */
  overCap?: boolean;
}

export type Answer<T> =
  | { kind: 'ok'; status: number; value: T }
  | { kind: 'retry'; code: string; status?: number; retryAfterMs?: number }
  | { kind: 'permanent'; code: string; status: number };

/** What one endpoint answers when it succeeds: its statuses, and how each body is read (throws if it is not that). */
export interface Expectation<T> {
  readonly statuses: readonly number[];
  parse(response: ResponseFacts): T;
}

/** A stable reason code: what the coordinator's error body may name, else HTTP_<status> stands for it. */
const CODE = /^[A-Z][A-Z0-9_]{0,63}$/;

export function classifyResponse<T>(response: ResponseFacts, expectation: Expectation<T>, nowMs: number): Answer<T> {
  const { status } = response;
  const retryAfterMs = parseRetryAfter(headerOf(response.headers, 'retry-after'), nowMs);
  const retry = (code: string): Answer<T> => ({ kind: 'retry', code, status, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });
  if (expectation.statuses.includes(status)) {
    if (response.overCap) return retry('PROTOCOL_RESPONSE_TOO_LARGE');
    try {
      return { kind: 'ok', status, value: expectation.parse(response) };
    } catch {
      // The coordinator answers its endpoints with their own bodies; anything else (an interception page,
      // a truncated answer) came from something on the way, which will not be there every time.
      return retry('API_UNEXPECTED_BODY');
    }
  }
  if (status === 408 || status === 429 || status >= 500 || status < 200) return retry(codeOf(response) ?? `HTTP_${status}`);
  if (status < 300) return retry('API_UNEXPECTED_BODY'); // a 2xx this endpoint never answers
  // 3xx: the coordinator does not redirect runners; a redirect came from something else and is not followed.
  if (status < 400) return retry(`HTTP_${status}`);
  // A refusal of the request rather than of what it carries: its signature (a clock out of step, a key the
  // coordinator's older trust document does not know yet), a proxy's credentials, a misdirected request. A
  // new attempt is a new request, which may well pass: retried, never a dead letter.
  if (REQUEST_REFUSALS.has(status)) return retry(codeOf(response) ?? `HTTP_${status}`);
  // The coordinator answers every refusal with its JSON error body: a 4xx without one (a proxy's or a load
  // balancer's page, an empty 404 from a wrong path) is not its word on the document, and retried like a
  // 2xx HTML page. Otherwise one bad hop for a minute would dead-letter the whole outbox.
  const code = codeOf(response);
  if (code === undefined) return retry(`HTTP_${status}`);
  return { kind: 'permanent', code, status };
}

/** 401 (the signature), 407 (a proxy's credentials), 421 (misdirected): about the request, not its body. */
const REQUEST_REFUSALS = new Set([401, 407, 421]);

/** The code of a JSON `{code, message}` error body, when the body is one (capped, strict). */
function codeOf(response: ResponseFacts): string | undefined {
  if (response.overCap || response.body.length === 0) return undefined;
  try {
    const { code } = parseErrorBody(response.body);
    return CODE.test(code) ? code : undefined;
  } catch {
    return undefined;
  }
}

function headerOf(headers: ResponseFacts['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * The client's failures before any answer: all retryable, each with its code. The client raises its own
 * (ApiError: API_TIMEOUT, PROTOCOL_RESPONSE_TOO_LARGE, ...); undici's and Node's are recognised by their
 * codes, looking through `cause` (undici wraps socket errors).
 */
export function classifyTransportError(err: unknown): Answer<never> {
  return { kind: 'retry', code: transportCodeOf(err) };
}

const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|HOSTNAME_MISMATCH$)/;
const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT', 'ABORT_ERR_TIMEOUT']);

export function transportCodeOf(err: unknown): string {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (isCodedError(e) && /^(API_|PROTOCOL_RESPONSE_TOO_LARGE$)/.test(e.code)) return e.code;
    const code = (e as { code?: unknown }).code;
    if (e.name === 'TimeoutError') return 'API_TIMEOUT';
    if (typeof code === 'string') {
      if (TIMEOUT_CODES.has(code)) return 'API_TIMEOUT';
      if (TLS_CODES.test(code)) return 'API_TLS';
      if (code.startsWith('UND_ERR_PRX')) return 'API_PROXY';
    }
    // undici's ProxyAgent says what the proxy answered to CONNECT only in its message.
    if (/Proxy Authentication Required|\(407\)/.test(e.message)) return 'API_PROXY_AUTH';
    if (/Proxy response \(\d{3}\)/.test(e.message)) return 'API_PROXY';
  }
  return 'API_NETWORK';
}

/**
 * Retry-After in milliseconds from `nowMs`: delay-seconds (1*DIGIT) or an IMF-fixdate (RFC 9110 §5.6.7; Date
 * parses the obsolete forms too). Undefined when absent or unreadable; a date in the past is 0.
 */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d{1,10}$/.test(text)) return Number(text) * 1000;
  if (text.length > 64 || !/^[A-Za-z]{3},? /.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isFinite(at) ? Math.max(0, at - nowMs) : undefined;
}

export interface BackoffPolicy {
  /** The first failure's ceiling, in milliseconds. */
  baseMs: number;
  /** The largest ceiling, and the most any delay (a Retry-After included) may be, in milliseconds. */
  capMs: number;
  /** A number in [0, 1); injected (tests pass a fixed or generated sequence). */
  random: () => number;
}

/**
 * The delay before retry number `failures` (1 for the first failure): full jitter over the capped
 * exponential ceiling, and never less than the server's Retry-After (itself capped: a coordinator cannot
 * park a runner for longer than the operator allows).
 */
export function backoffDelayMs(failures: number, policy: BackoffPolicy, retryAfterMs?: number): number {
  const exponent = Math.min(Math.max(failures - 1, 0), 52);
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** exponent);
  const r = policy.random();
  const jitter = Math.floor((Number.isFinite(r) ? Math.min(Math.max(r, 0), 1) : 0) * ceiling);
  const floor = retryAfterMs === undefined ? 0 : Math.min(Math.max(retryAfterMs, 0), policy.capMs);
  return Math.min(Math.max(jitter, floor), policy.capMs);
}
