/**
 * Runner identity on the coordinator link, without shared secrets: every runner request carries an RFC 9421
 * HTTP Message Signature made with the runner's own Ed25519 key, the one the trust document enrols under the
 * runner role, and every request body an RFC 9530 Content-Digest (sha-256) that the signature covers.
 *
 * The signature base (RFC 9421 section 2.5) is built by `http-message-signatures` (createSignatureBase,
 * formatSignatureBase), checked against the RFC's own Ed25519 example (Appendix B.2.6) in the tests. Its
 * signMessage/verifyMessage are not used: verifyMessage reads the wall clock (Date.now) rather than the
 * decision's one clock reading, accepts a request when any one of several signatures verifies, lets `alg`
 * be absent, and joins repeated header fields into one value; the refusal rules below need none of that.
 * Signature-Input and Signature are RFC 8941 dictionaries, parsed and serialised by `structured-headers`
 * (the library's own dependency) and accepted only in their canonical serialisation, so a header repeated
 * (two `sig` members, of which a dictionary parser keeps the last) or re-spelt is refused.
 *
 * What is accepted (docs/protocol.md, "Request signatures"), checked in this order:
 *   1. exactly one Signature-Input and one Signature field, each a canonical dictionary with the one member
 *      `sig` (PROTOCOL_SIGNATURE_MISSING, PROTOCOL_SIGNATURE_MALFORMED);
 *   2. parameters created, expires, nonce, keyid, alg and no others, alg "ed25519" (PROTOCOL_PARAMETER_MISSING,
 *      PROTOCOL_SIGNATURE_MALFORMED, PROTOCOL_ALGORITHM);
 *   3. covered components without parameters or repeats, among them "@method", "@target-uri", and
 *      "content-digest" whenever the request has a body or the field (PROTOCOL_COMPONENT_MISSING);
 *   4. keyid names a key of the trust document that holds the runner role (PROTOCOL_UNKNOWN_KEY, PROTOCOL_KEY_ROLE);
 *   5. created at most maxFutureSeconds ahead, expires not passed, expires - created at most maxTtlSeconds
 *      (PROTOCOL_CREATED_FUTURE, PROTOCOL_EXPIRED, PROTOCOL_TTL_TOO_LONG);
 *   6. Content-Digest is exactly one sha-256 digest (PROTOCOL_DIGEST_MISSING, PROTOCOL_DIGEST_MALFORMED);
 *   7. the Ed25519 signature over the signature base verifies, strictly (PROTOCOL_SIGNATURE_INVALID);
 *   8. the body is the one Content-Digest names (PROTOCOL_DIGEST_MISMATCH).
 * A server checks 1 to 7 on the headers (verifyRequestHeaders) before it reads the body, then 8
 * (checkContentDigest); verifyRequest does all eight on a request whose body is already read.
 * The caller (the coordinator) then checks that the path's runner id is the returned name
 * (PROTOCOL_RUNNER_MISMATCH) and that the nonce was never seen before its expiry (PROTOCOL_NONCE_REPLAYED).
 *
 * Pure: node:crypto for hashing and the default nonce, no I/O.
 */
import { randomBytes } from 'node:crypto';
import { httpbis } from 'http-message-signatures';
import {
  parseDictionary,
  serializeDictionary,
  serializeInnerList,
  type BareItem,
  type Dictionary,
  type InnerList,
  type Item,
} from 'structured-headers';
import { sha256 } from '../core/digest.js';
import type { PrivateKey } from '../core/ed25519.js';
import type { VerifiedTrust } from '../trust/trust.js';
import { ProtocolError } from './errors.js';

export interface OutgoingRequest {
  method: string;
  url: string;
  body?: Uint8Array;
}

export interface IncomingRequest {
  method: string;
  /** The absolute target URI as the coordinator reconstructs it (public URL + path and query). */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body?: Uint8Array;
}

export interface VerifiedRequest {
  keyid: string;
  /** The key's name in the trust document: the runner id. */
  name: string;
  nonce: string;
  /** Seconds since the epoch. */
  created: number;
  /** Seconds since the epoch. */
  expires: number;
}

/** The one signature label the link uses. */
export const SIGNATURE_LABEL = 'sig';
export const SIGNATURE_ALG = 'ed25519';
/** Defaults, in seconds: a signature's life when signing, and what a verifier tolerates. */
export const SIGNATURE_DEFAULTS = {
  ttlSeconds: 60,
  maxFutureSeconds: 30,
  maxTtlSeconds: 300,
} as const;

const REQUIRED_PARAMETERS = ['created', 'expires', 'nonce', 'keyid', 'alg'] as const;
/** Derived components whose value is a function of method and target URI alone (RFC 9421 section 2.2). */
const DERIVED_COMPONENTS = new Set(['@method', '@target-uri', '@authority', '@scheme', '@path', '@query']);
const FIELD_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;
/** 16 random bytes or more, base64url without padding; a nonce store keys on it. */
const NONCE = /^[A-Za-z0-9_-]{22,128}$/;
const KEYID = /^[0-9a-f]{64}$/;
const CONTENT_DIGEST = /^sha-256=:([A-Za-z0-9+/]{43}=):$/;
const NONCE_BYTES = 16;

/** RFC 9530 Content-Digest of a body, sha-256 only: `sha-256=:BASE64:`. */
export function contentDigestOf(body: Uint8Array): string {
  return `sha-256=:${sha256(body).toString('base64')}:`;
}

/**
 * The headers that sign a request (RFC 9421 section 3.1): `content-digest` when it has a body,
 * `signature-input` and `signature`. The caller sends exactly these values and exactly `body`.
 */
export async function signRequest(
  req: OutgoingRequest,
  key: PrivateKey,
  opts: { now: Date; ttlSeconds?: number; nonce?: string },
): Promise<Record<string, string>> {
  const created = Math.floor(opts.now.getTime() / 1000);
  const ttl = opts.ttlSeconds ?? SIGNATURE_DEFAULTS.ttlSeconds;
  if (!Number.isSafeInteger(created) || !Number.isSafeInteger(ttl) || ttl <= 0) {
    throw new ProtocolError('PROTOCOL_SIGNATURE_MALFORMED', 'The signing time or lifetime is not a positive whole number of seconds.');
  }
  const nonce = opts.nonce ?? randomBytes(NONCE_BYTES).toString('base64url');
  if (!NONCE.test(nonce)) throw new ProtocolError('PROTOCOL_SIGNATURE_MALFORMED', 'The nonce is not 16 or more bytes in base64url.');
  const headers: Record<string, string> = {};
  const components = ['@method', '@target-uri'];
  if (req.body !== undefined) {
    headers['content-digest'] = contentDigestOf(req.body);
    components.push('content-digest');
  }
  const input: InnerList = [
    components.map((name): Item => [name, new Map()]),
    new Map<string, BareItem>([
      ['created', created],
      ['expires', created + ttl],
      ['nonce', nonce],
      ['keyid', key.keyid],
      ['alg', SIGNATURE_ALG],
    ]),
  ];
  const base = signatureBase(req.method, toTargetUri(req.url), headers, input);
  const signature = key.sign(base);
  headers['signature-input'] = serializeDictionary(new Map([[SIGNATURE_LABEL, input]]));
  headers['signature'] = serializeDictionary(new Map([[SIGNATURE_LABEL, [toArrayBuffer(signature), new Map()]]]));
  return headers;
}

/** Verifies a runner request under the rules in this module's comment; throws ProtocolError. */
export async function verifyRequest(
  req: IncomingRequest,
  opts: { trust: VerifiedTrust; now: Date; maxFutureSeconds?: number; maxTtlSeconds?: number },
): Promise<VerifiedRequest> {
  const body = req.body ?? new Uint8Array(0);
  const verified = await verifyRequestHeaders({ method: req.method, url: req.url, headers: req.headers, hasBody: body.length > 0 }, opts);
  checkContentDigest(verified.contentDigest, body);
  return { keyid: verified.keyid, name: verified.name, nonce: verified.nonce, created: verified.created, expires: verified.expires };
}

export interface IncomingRequestHeaders {
  method: string;
  /** The absolute target URI as the coordinator reconstructs it (public URL + path and query). */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  /** The request carries a body (Content-Length over 0, or Transfer-Encoding), not read yet. */
  hasBody: boolean;
}

/**
 * Steps 1 to 7 on the headers alone, before a byte of the body is read: the signature covers the
 * Content-Digest header, so once it verifies the request is known to come from an enrolled runner and the
 * body it promises is pinned by that digest. The caller then reads the body (under its cap) and calls
 * checkContentDigest with `contentDigest`. This is how a server keeps unauthenticated clients from making it
 * hold a body: nothing is read for a request whose headers do not verify.
 */
export async function verifyRequestHeaders(
  req: IncomingRequestHeaders,
  opts: { trust: VerifiedTrust; now: Date; maxFutureSeconds?: number; maxTtlSeconds?: number },
): Promise<VerifiedRequest & { contentDigest: string | undefined }> {
  // 1. The two fields, once each, canonical, one member `sig`.
  const inputField = singleField(req.headers, 'signature-input');
  const signatureField = singleField(req.headers, 'signature');
  if (inputField === undefined && signatureField === undefined) throw new ProtocolError('PROTOCOL_SIGNATURE_MISSING');
  if (inputField === undefined || signatureField === undefined) {
    throw malformed('The request carries only one of the Signature and Signature-Input headers.');
  }
  const input = soleMember(parseCanonicalDictionary(inputField, 'Signature-Input'), 'Signature-Input');
  const signatureItem = soleMember(parseCanonicalDictionary(signatureField, 'Signature'), 'Signature');
  if (!isInnerList(input)) throw malformed('The Signature-Input member is not a list of components.');
  if (isInnerList(signatureItem) || !(signatureItem[0] instanceof ArrayBuffer) || signatureItem[1].size > 0) {
    throw malformed('The Signature member is not a byte sequence.');
  }
  const signature = Buffer.from(signatureItem[0]);

  // 2. Parameters.
  const params = checkParameters(input[1]);

  // 3. Covered components.
  const digestField = singleField(req.headers, 'content-digest');
  const covered = checkComponents(input[0]);
  for (const required of ['@method', '@target-uri', ...(req.hasBody || digestField !== undefined ? ['content-digest'] : [])]) {
    if (!covered.has(required)) {
      throw new ProtocolError('PROTOCOL_COMPONENT_MISSING', `The request signature does not cover "${required}".`, { component: required });
    }
  }

  // 4. The key: listed, and a runner's.
  const key = opts.trust.keys.find((candidate) => candidate.keyid === params.keyid);
  if (key === undefined) throw new ProtocolError('PROTOCOL_UNKNOWN_KEY', undefined, { keyid: params.keyid });
  if (!key.roles.includes('runner')) throw new ProtocolError('PROTOCOL_KEY_ROLE', undefined, { keyid: params.keyid });
  const name = opts.trust.nameOf(key.keyid);
  if (name === undefined) throw new ProtocolError('PROTOCOL_UNKNOWN_KEY', undefined, { keyid: params.keyid });

  // 5. The time window, against one clock reading.
  const now = Math.floor(opts.now.getTime() / 1000);
  const maxFuture = opts.maxFutureSeconds ?? SIGNATURE_DEFAULTS.maxFutureSeconds;
  const maxTtl = opts.maxTtlSeconds ?? SIGNATURE_DEFAULTS.maxTtlSeconds;
  if (params.created > now + maxFuture) {
    throw new ProtocolError('PROTOCOL_CREATED_FUTURE', `The request signature was created more than ${maxFuture} seconds in the future.`, {
      created: params.created,
      now,
    });
  }
  if (params.expires <= params.created) throw malformed('The request signature expires before it was created.');
  if (now > params.expires) throw new ProtocolError('PROTOCOL_EXPIRED', undefined, { expires: params.expires, now });
  if (params.expires - params.created > maxTtl) {
    throw new ProtocolError('PROTOCOL_TTL_TOO_LONG', `The request signature is valid for more than ${maxTtl} seconds.`, {
      ttl: params.expires - params.created,
    });
  }

  // 6. RFC 9530: a body is named by exactly one sha-256 digest (compared with the body by checkContentDigest).
  if (req.hasBody && digestField === undefined) throw new ProtocolError('PROTOCOL_DIGEST_MISSING');
  if (digestField !== undefined && !CONTENT_DIGEST.test(digestField)) throw new ProtocolError('PROTOCOL_DIGEST_MALFORMED');

  // 7. The signature over the base (RFC 9421 section 3.2), strict Ed25519.
  const fields: Record<string, string> = {};
  for (const component of covered) {
    if (component.startsWith('@')) continue;
    const value = singleField(req.headers, component);
    if (value === undefined) {
      throw new ProtocolError('PROTOCOL_COMPONENT_MISSING', `The request signature covers "${component}", which the request lacks.`, { component });
    }
    fields[component] = value;
  }
  let base: Buffer;
  try {
    base = signatureBase(req.method, toTargetUri(req.url), fields, input);
  } catch (cause) {
    if (cause instanceof ProtocolError) throw cause;
    throw new ProtocolError('PROTOCOL_SIGNATURE_INVALID', 'The signature base of the request cannot be built.', {}, { cause });
  }
  if (!key.publicKey.verify(base, signature)) throw new ProtocolError('PROTOCOL_SIGNATURE_INVALID', undefined, { keyid: key.keyid });
  return { keyid: key.keyid, name, nonce: params.nonce, created: params.created, expires: params.expires, contentDigest: digestField };
}

/**
 * The body is the one the signed Content-Digest names (PROTOCOL_DIGEST_MISSING when a body came without
 * one, PROTOCOL_DIGEST_MISMATCH when it is another). `contentDigest` is what verifyRequestHeaders returned.
 */
export function checkContentDigest(contentDigest: string | undefined, body: Uint8Array): void {
  if (contentDigest === undefined) {
    if (body.length > 0) throw new ProtocolError('PROTOCOL_DIGEST_MISSING');
    return;
  }
  if (contentDigest !== contentDigestOf(body)) throw new ProtocolError('PROTOCOL_DIGEST_MISMATCH');
}

/**
 * The signature base, RFC 9421 section 2.5: one line per covered component, from http-message-signatures,
 * then `"@signature-params": ` and the serialised inner list of the signature's components and parameters.
 */
export function signatureBase(method: string, targetUri: string, fields: Record<string, string>, input: InnerList): Buffer {
  const lines = httpbis.createSignatureBase({ fields: input[0].map(([name]) => String(name)) }, { method, url: targetUri, headers: fields });
  lines.push(['"@signature-params"', [serializeInnerList(input)]]);
  return Buffer.from(httpbis.formatSignatureBase(lines), 'utf8');
}

/**
 * The target URI both sides sign: the absolute URL in WHATWG form (lowercase scheme and host, no default
 * port), so that a runner configured with `https://Coord:443/` and a coordinator whose public URL is
 * `https://coord` agree. A relative or unparseable URL is refused.
 */
export function toTargetUri(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new ProtocolError('PROTOCOL_SIGNATURE_MALFORMED', 'The request target is not an absolute URL.', {}, { cause });
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new ProtocolError('PROTOCOL_SIGNATURE_MALFORMED', 'The request target is not an http or https URL.');
  }
  if (parsed.username !== '' || parsed.password !== '' || parsed.hash !== '') {
    throw new ProtocolError('PROTOCOL_SIGNATURE_MALFORMED', 'The request target carries credentials or a fragment.');
  }
  return parsed.href;
}

interface SignatureParameters {
  created: number;
  expires: number;
  nonce: string;
  keyid: string;
  alg: string;
}

function checkParameters(params: Map<string, BareItem>): SignatureParameters {
  for (const name of params.keys()) {
    if (!(REQUIRED_PARAMETERS as readonly string[]).includes(name)) {
      throw malformed(`The request signature has a parameter "${name.slice(0, 32)}" the link does not use.`);
    }
  }
  for (const name of REQUIRED_PARAMETERS) {
    if (!params.has(name)) throw new ProtocolError('PROTOCOL_PARAMETER_MISSING', `The request signature lacks "${name}".`, { parameter: name });
  }
  const alg = params.get('alg');
  if (alg !== SIGNATURE_ALG) throw new ProtocolError('PROTOCOL_ALGORITHM', undefined, { alg: String(alg).slice(0, 32) });
  const created = params.get('created');
  const expires = params.get('expires');
  const nonce = params.get('nonce');
  const keyid = params.get('keyid');
  if (!isSeconds(created) || !isSeconds(expires)) throw malformed('The created and expires parameters are not whole seconds.');
  if (typeof nonce !== 'string' || !NONCE.test(nonce)) throw malformed('The nonce parameter is not 16 or more bytes in base64url.');
  if (typeof keyid !== 'string' || !KEYID.test(keyid)) throw malformed('The keyid parameter is not a hex SHA-256 keyid.');
  return { created, expires, nonce, keyid, alg };
}

function isSeconds(value: BareItem | undefined): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** The covered component names, each once, none with parameters, each one the link knows how to read. */
function checkComponents(items: Item[]): Set<string> {
  const names = new Set<string>();
  for (const [name, params] of items) {
    if (typeof name !== 'string') throw malformed('A covered component is not a string.');
    if (params.size > 0) throw malformed(`The covered component "${name.slice(0, 64)}" has parameters; the link uses none.`);
    if (names.has(name)) throw malformed(`The covered component "${name.slice(0, 64)}" is listed twice.`);
    if (name.startsWith('@') ? !DERIVED_COMPONENTS.has(name) : !FIELD_NAME.test(name) || name === 'signature' || name === 'signature-input') {
      throw malformed(`The covered component "${name.slice(0, 64)}" is not one the link accepts.`);
    }
    names.add(name);
  }
  return names;
}

/**
 * The value of a header field that must occur at most once: undefined when absent; a field sent twice
 * (an array, or two keys that differ only in case) is refused.
 */
function singleField(headers: IncomingRequest['headers'], name: string): string | undefined {
  const values: string[] = [];
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== name || value === undefined) continue;
    if (Array.isArray(value)) values.push(...value);
    else values.push(value);
  }
  if (values.length > 1) throw malformed(`The ${name} header is sent more than once.`);
  return values[0];
}

function parseCanonicalDictionary(value: string, what: string): Dictionary {
  let dictionary: Dictionary;
  try {
    dictionary = parseDictionary(value);
  } catch (cause) {
    throw new ProtocolError('PROTOCOL_SIGNATURE_MALFORMED', `The ${what} header is not a structured dictionary.`, {}, { cause });
  }
  // A repeated member (a parser keeps the last one) or any other spelling does not serialise back to itself.
  let canonical: string;
  try {
    canonical = serializeDictionary(dictionary);
  } catch (cause) {
    throw new ProtocolError('PROTOCOL_SIGNATURE_MALFORMED', `The ${what} header cannot be serialised.`, {}, { cause });
  }
  if (canonical !== value) throw malformed(`The ${what} header is not in canonical form (a repeated member, or other spacing).`);
  return dictionary;
}

function soleMember(dictionary: Dictionary, what: string): Item | InnerList {
  if (dictionary.size !== 1 || !dictionary.has(SIGNATURE_LABEL)) {
    throw malformed(`The ${what} header does not hold exactly one signature labelled "${SIGNATURE_LABEL}".`);
  }
  return dictionary.get(SIGNATURE_LABEL)!;
}

function isInnerList(member: Item | InnerList): member is InnerList {
  return Array.isArray(member[0]);
}

function toArrayBuffer(bytes: Buffer): ArrayBuffer {
  const copy = new ArrayBuffer(bytes.length);
  new Uint8Array(copy).set(bytes);
  return copy;
}

function malformed(message: string): ProtocolError {
  return new ProtocolError('PROTOCOL_SIGNATURE_MALFORMED', message);
}
