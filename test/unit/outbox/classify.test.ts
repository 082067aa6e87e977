/** runner/outbox/classify.ts: every answer of the coordinator (or its absence) classified once, and the backoff. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ApiError } from '../../../runner/api/errors.js';
import {
  backoffDelayMs,
  classifyResponse,
  classifyTransportError,
  parseRetryAfter,
  type Expectation,
  type ResponseFacts,
} from '../../../runner/outbox/classify.js';
import { formatErrorBody, formatInboxAck, parseInboxAck } from '../../../runner/protocol/wire.js';

const NOW = Date.parse('2026-03-01T12:00:00Z');
const DIGEST = `sha256:${'a'.repeat(64)}`;
const inbox: Expectation<{ stored: string }> = { statuses: [200, 201], parse: (r) => parseInboxAck(r.body) };
const response = (status: number, body: string | Buffer = '', headers: ResponseFacts['headers'] = {}, overCap = false): ResponseFacts => ({
  status,
  headers,
  body: Buffer.isBuffer(body) ? body : Buffer.from(body),
  overCap,
});
const ack = (stored: 'created' | 'existing') => formatInboxAck({ digest: DIGEST, stored });
const errorBody = (code: string) => formatErrorBody({ code, message: 'The bundle does not verify.' });
const HTML = '<!doctype html><html><body><h1>Proxy error</h1></body></html>';

describe('classifyResponse', () => {
  it.each<[string, ResponseFacts, { kind: string; code?: string; status?: number }]>([
    ['201 with a valid ack is an ack', response(201, ack('created')), { kind: 'ok', status: 201 }],
    ['200 with a valid ack is an ack', response(200, ack('existing')), { kind: 'ok', status: 200 }],
    [
      '200 with an HTML page (a proxy) is retryable',
      response(200, HTML, { 'content-type': 'text/html' }),
      { kind: 'retry', code: 'API_UNEXPECTED_BODY' },
    ],
    ['201 with an empty body is retryable', response(201, ''), { kind: 'retry', code: 'API_UNEXPECTED_BODY' }],
    ['200 with a body over its cap is retryable', response(200, '', {}, true), { kind: 'retry', code: 'PROTOCOL_RESPONSE_TOO_LARGE' }],
    ['204 where an ack is expected is retryable', response(204), { kind: 'retry', code: 'API_UNEXPECTED_BODY' }],
    ['408 is retryable', response(408), { kind: 'retry', code: 'HTTP_408', status: 408 }],
    ['429 is retryable', response(429), { kind: 'retry', code: 'HTTP_429', status: 429 }],
    ['500 is retryable', response(500), { kind: 'retry', code: 'HTTP_500' }],
    ['502 with an HTML page is retryable', response(502, HTML), { kind: 'retry', code: 'HTTP_502', status: 502 }],
    [
      '503 with a JSON error keeps its code and is retryable',
      response(503, errorBody('COORDINATOR_BUSY')),
      { kind: 'retry', code: 'COORDINATOR_BUSY' },
    ],
    [
      'a redirect is not followed and is retryable',
      response(307, '', { location: 'https://elsewhere.example/' }),
      { kind: 'retry', code: 'HTTP_307' },
    ],
    [
      '422 with a JSON error is permanent with its code',
      response(422, errorBody('BUNDLE_SIGNATURE')),
      { kind: 'permanent', code: 'BUNDLE_SIGNATURE', status: 422 },
    ],
    // Not the coordinator's word (it answers every refusal with its JSON error body): retried (review-classify).
    ['400 without a body is retried as HTTP_400', response(400), { kind: 'retry', code: 'HTTP_400', status: 400 }],
    ['403 with an HTML page is retried as HTTP_403', response(403, HTML), { kind: 'retry', code: 'HTTP_403' }],
    ['404 with an error body over its cap is retried as HTTP_404', response(404, '', {}, true), { kind: 'retry', code: 'HTTP_404' }],
    [
      '409 where the endpoint does not answer 409 is permanent',
      response(409, errorBody('INBOX_CONFLICT')),
      { kind: 'permanent', code: 'INBOX_CONFLICT' },
    ],
    [
      'a 4xx whose error code is not a code is not the coordinator’s word: retried as HTTP_<status>',
      response(422, JSON.stringify({ code: 'lower case', message: 'x.' })),
      { kind: 'retry', code: 'HTTP_422' },
    ],
  ])('%s', (_what, facts, expected) => {
    expect(classifyResponse(facts, inbox, NOW)).toMatchObject(expected);
  });

  it('gives the parsed value with an ack', () => {
    expect(classifyResponse(response(201, ack('created')), inbox, NOW)).toEqual({
      kind: 'ok',
      status: 201,
      value: { digest: DIGEST, stored: 'created' },
    });
  });

  it('honours Retry-After in seconds and as an HTTP date on a retryable answer', () => {
    expect(classifyResponse(response(429, '', { 'retry-after': '120' }), inbox, NOW)).toMatchObject({ kind: 'retry', retryAfterMs: 120_000 });
    const date = new Date(NOW + 30_000).toUTCString();
    expect(classifyResponse(response(503, '', { 'retry-after': date }), inbox, NOW)).toMatchObject({ kind: 'retry', retryAfterMs: 30_000 });
  });
});

describe('classifyTransportError', () => {
  const withCode = (code: string, message = 'failed') => Object.assign(new Error(message), { code });
  it.each<[string, unknown, string]>([
    ['a refused connection', withCode('ECONNREFUSED'), 'API_NETWORK'],
    ['a connection closed before the answer', withCode('UND_ERR_SOCKET', 'other side closed'), 'API_NETWORK'],
    ['a reset wrapped by undici', Object.assign(new Error('fetch failed'), { cause: withCode('ECONNRESET') }), 'API_NETWORK'],
    ['a connect timeout', withCode('UND_ERR_CONNECT_TIMEOUT'), 'API_TIMEOUT'],
    ['a headers timeout', withCode('UND_ERR_HEADERS_TIMEOUT'), 'API_TIMEOUT'],
    ['an AbortSignal.timeout', new DOMException('The operation timed out.', 'TimeoutError'), 'API_TIMEOUT'],
    ['a certificate from an unknown CA', withCode('UNABLE_TO_VERIFY_LEAF_SIGNATURE'), 'API_TLS'],
    ['a self-signed certificate', withCode('DEPTH_ZERO_SELF_SIGNED_CERT'), 'API_TLS'],
    ['a name mismatch', withCode('ERR_TLS_CERT_ALTNAME_INVALID'), 'API_TLS'],
    ['a proxy that asks for credentials', withCode('UND_ERR_ABORTED', 'Proxy response (407) !== 200 when HTTP Tunneling'), 'API_PROXY_AUTH'],
    ['a proxy that refuses the tunnel', withCode('UND_ERR_ABORTED', 'Proxy response (502) !== 200 when HTTP Tunneling'), 'API_PROXY'],
    ['a body over its cap', new ApiError('PROTOCOL_RESPONSE_TOO_LARGE', 'too large'), 'PROTOCOL_RESPONSE_TOO_LARGE'],
    ['something unknown', 'a string', 'API_NETWORK'],
  ])('%s is retryable as %s', (_what, err, code) => {
    expect(classifyTransportError(err)).toEqual({ kind: 'retry', code });
  });
});

describe('parseRetryAfter', () => {
  it('reads delay-seconds, an IMF-fixdate, and a date in the past as 0', () => {
    expect(parseRetryAfter('0', NOW)).toBe(0);
    expect(parseRetryAfter(' 5 ', NOW)).toBe(5000);
    expect(parseRetryAfter('Sun, 01 Mar 2026 12:01:00 GMT', NOW)).toBe(60_000);
    expect(parseRetryAfter('Sun, 01 Mar 2026 11:00:00 GMT', NOW)).toBe(0);
  });

  it('ignores what is neither', () => {
    for (const value of [undefined, '', '-1', '1.5', 'soon', '2026-03-01T12:01:00Z', '99999999999'])
      expect(parseRetryAfter(value, NOW)).toBeUndefined();
  });
});

describe('backoffDelayMs (capped exponential, full jitter)', () => {
  const policy = (random: () => number) => ({ baseMs: 1000, capMs: 300_000, random });

  it('draws from [0, base * 2^(failures - 1)] up to the cap', () => {
    expect(
      backoffDelayMs(
        1,
        policy(() => 0.999999),
      ),
    ).toBe(999);
    expect(
      backoffDelayMs(
        3,
        policy(() => 0.5),
      ),
    ).toBe(2000);
    expect(
      backoffDelayMs(
        30,
        policy(() => 0.999999),
      ),
    ).toBe(299_999);
    expect(
      backoffDelayMs(
        1000,
        policy(() => 0),
      ),
    ).toBe(0);
  });

  it('waits at least the Retry-After, capped', () => {
    expect(
      backoffDelayMs(
        1,
        policy(() => 0),
        42_000,
      ),
    ).toBe(42_000);
    expect(
      backoffDelayMs(
        1,
        policy(() => 0),
        3_600_000,
      ),
    ).toBe(300_000);
  });

  it('property: the delay is always within [0, cap], whatever the failures, randomness and Retry-After', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -5, max: 10_000 }),
        fc.integer({ min: 1, max: 3_600_000 }),
        fc.integer({ min: 0, max: 86_400_000 }),
        fc.double({ min: -1, max: 2, noNaN: false }),
        fc.option(fc.integer({ min: -1000, max: 10 ** 12 }), { nil: undefined }),
        (failures, baseMs, extra, r, retryAfter) => {
          const capMs = baseMs + extra;
          const delay = backoffDelayMs(failures, { baseMs, capMs, random: () => r }, retryAfter);
          expect(Number.isInteger(delay)).toBe(true);
          expect(delay).toBeGreaterThanOrEqual(0);
          expect(delay).toBeLessThanOrEqual(capMs);
        },
      ),
    );
  });

  it('property: a Retry-After is respected (the delay is at least min(Retry-After, cap))', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 100 }),
        fc.double({ min: 0, max: 0.999999, noNaN: true }),
        fc.integer({ min: 0, max: 10 ** 9 }),
        (failures, r, retryAfter) => {
          const capMs = 300_000;
          const delay = backoffDelayMs(failures, { baseMs: 1000, capMs, random: () => r }, retryAfter);
          expect(delay).toBeGreaterThanOrEqual(Math.min(retryAfter, capMs));
        },
      ),
    );
  });

  it('property: without Retry-After the delay never exceeds base * 2^(failures - 1)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.double({ min: 0, max: 0.999999, noNaN: true }), (failures, r) => {
        expect(backoffDelayMs(failures, { baseMs: 1000, capMs: 300_000, random: () => r })).toBeLessThanOrEqual(1000 * 2 ** (failures - 1));
      }),
    );
  });
});
