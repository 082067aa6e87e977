/**
 * RFC 9421 request signatures on the coordinator link: the signature base matches the RFC's own Ed25519
 * example (Appendix B.2.6), signed requests verify, and every refusal rule answers with its code.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseDictionary, type InnerList } from 'structured-headers';
import { PrivateKey, PublicKey } from '../../../runner/core/ed25519.js';
import { CodedError } from '../../../runner/core/errors.js';
import {
  contentDigestOf,
  signatureBase,
  signRequest,
  verifyRequest,
  type IncomingRequest,
  type OutgoingRequest,
} from '../../../runner/protocol/http-signature.js';
import { makeProtocolTrust } from './trust-fixture.js';

// RFC 9421 Appendix B.1.4 test-key-ed25519 and the B.2.6 example.
const RFC_PRIVATE_KEY_PKCS8 = 'MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF';
const RFC_PUBLIC_KEY_SPKI = 'MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=';
const RFC_SIGNATURE_INPUT =
  'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"';
const RFC_SIGNATURE = 'wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==';
const RFC_BASE = [
  '"date": Tue, 20 Apr 2021 02:07:55 GMT',
  '"@method": POST',
  '"@path": /foo',
  '"@authority": example.com',
  '"content-type": application/json',
  '"content-length": 18',
  '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"',
].join('\n');

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (err) {
    if (err instanceof CodedError) return err.code;
    throw err;
  }
}

describe('RFC 9421 Appendix B.2.6 (ed25519)', () => {
  const input = parseDictionary(RFC_SIGNATURE_INPUT).get('sig-b26') as InnerList;
  const fields = { date: 'Tue, 20 Apr 2021 02:07:55 GMT', 'content-type': 'application/json', 'content-length': '18' };

  it('the signature base is byte for byte the one the RFC prints', () => {
    expect(signatureBase('POST', 'https://example.com/foo?param=Value&Pet=dog', fields, input).toString('utf8')).toBe(RFC_BASE);
  });

  it('the RFC test key signs that base to the RFC signature, and the signature verifies with its public key', () => {
    const keyObject = createPrivateKey({ key: Buffer.from(RFC_PRIVATE_KEY_PKCS8, 'base64'), format: 'der', type: 'pkcs8' });
    const key = PrivateKey.fromPem(keyObject.export({ format: 'pem', type: 'pkcs8' }).toString());
    expect(createPublicKey(keyObject).export({ format: 'der', type: 'spki' }).toString('base64')).toBe(RFC_PUBLIC_KEY_SPKI);
    const base = signatureBase('POST', 'https://example.com/foo?param=Value&Pet=dog', fields, input);
    expect(key.sign(base).toString('base64')).toBe(RFC_SIGNATURE);
    const publicKey = PublicKey.fromSpkiDer(Buffer.from(RFC_PUBLIC_KEY_SPKI, 'base64'));
    expect(publicKey.verify(base, Buffer.from(RFC_SIGNATURE, 'base64'))).toBe(true);
  });
});

describe('contentDigestOf', () => {
  it('is the RFC 9530 sha-256 digest (the RFC 9530 example body {"hello": "world"})', () => {
    expect(contentDigestOf(Buffer.from('{"hello": "world"}'))).toBe('sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:');
  });
});

describe('signRequest and verifyRequest', () => {
  const world = makeProtocolTrust();
  const now = new Date('2026-03-01T12:00:00Z');
  const url = 'https://coordinator.example:8443/v1/bundles/abc?x=1';
  const body = Buffer.from('{"some":"bundle"}');

  async function signed(
    req: OutgoingRequest,
    key = world.runner,
    opts: { ttlSeconds?: number; now?: Date; nonce?: string } = {},
  ): Promise<IncomingRequest> {
    const headers = await signRequest(req, key, { now: opts.now ?? now, ...opts });
    return { method: req.method, url: req.url, headers, ...(req.body ? { body: req.body } : {}) };
  }
  const verify = (req: IncomingRequest, at = now, extra: { maxFutureSeconds?: number; maxTtlSeconds?: number } = {}) =>
    verifyRequest(req, { trust: world.trust, now: at, ...extra });

  describe('when the request is as the runner signed it', () => {
    it('a PUT with a body verifies and names the runner key, its name, nonce and window', async () => {
      const req = await signed({ method: 'PUT', url, body });
      const verified = await verify(req);
      expect(verified).toMatchObject({
        keyid: world.runner.keyid,
        name: 'runner-a',
        created: now.getTime() / 1000,
        expires: now.getTime() / 1000 + 60,
      });
      expect(verified.nonce).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(req.headers['content-digest']).toBe(contentDigestOf(body));
      expect(req.headers['signature-input']).toMatch(
        /^sig=\("@method" "@target-uri" "content-digest"\);created=\d+;expires=\d+;nonce="[^"]+";keyid="[0-9a-f]{64}";alg="ed25519"$/,
      );
    });

    it('a GET without a body verifies and covers no content-digest', async () => {
      const req = await signed({ method: 'GET', url });
      expect(req.headers['content-digest']).toBeUndefined();
      expect((await verify(req)).name).toBe('runner-a');
    });

    it('two signatures get two different nonces', async () => {
      const a = await verify(await signed({ method: 'GET', url }));
      const b = await verify(await signed({ method: 'GET', url }));
      expect(a.nonce).not.toBe(b.nonce);
    });

    it('the target URI is compared in normal form (host case, default port)', async () => {
      const req = await signed({ method: 'GET', url: 'https://Coordinator.Example:443/v1/trust' });
      expect((await verify({ ...req, url: 'https://coordinator.example/v1/trust' })).name).toBe('runner-a');
    });

    it('still verifies 29 seconds into the future and up to its expiry second', async () => {
      expect(await codeOf(verify(await signed({ method: 'GET', url }, world.runner, { now: new Date(now.getTime() + 29_000) })))).toBeUndefined();
      expect(await codeOf(verify(await signed({ method: 'GET', url }), new Date(now.getTime() + 60_000)))).toBeUndefined();
    });
  });

  describe('tampering', () => {
    it('a request whose method was changed is refused with PROTOCOL_SIGNATURE_INVALID', async () => {
      const req = await signed({ method: 'PUT', url, body });
      expect(await codeOf(verify({ ...req, method: 'POST' }))).toBe('PROTOCOL_SIGNATURE_INVALID');
    });

    it('a request whose URL was changed (path or query) is refused with PROTOCOL_SIGNATURE_INVALID', async () => {
      const req = await signed({ method: 'PUT', url, body });
      expect(await codeOf(verify({ ...req, url: url.replace('abc', 'abd') }))).toBe('PROTOCOL_SIGNATURE_INVALID');
      expect(await codeOf(verify({ ...req, url: url.replace('x=1', 'x=2') }))).toBe('PROTOCOL_SIGNATURE_INVALID');
      expect(await codeOf(verify({ ...req, url: url.replace('coordinator.example', 'other.example') }))).toBe('PROTOCOL_SIGNATURE_INVALID');
    });

    it('a request whose body was changed is refused with PROTOCOL_DIGEST_MISMATCH', async () => {
      const req = await signed({ method: 'PUT', url, body });
      expect(await codeOf(verify({ ...req, body: Buffer.from('{"some":"other"}') }))).toBe('PROTOCOL_DIGEST_MISMATCH');
    });

    it('a request whose body and Content-Digest were both changed is refused with PROTOCOL_SIGNATURE_INVALID', async () => {
      const req = await signed({ method: 'PUT', url, body });
      const other = Buffer.from('{"some":"other"}');
      expect(await codeOf(verify({ ...req, body: other, headers: { ...req.headers, 'content-digest': contentDigestOf(other) } }))).toBe(
        'PROTOCOL_SIGNATURE_INVALID',
      );
    });

    it('a Content-Digest that is not one sha-256 digest is refused with PROTOCOL_DIGEST_MALFORMED', async () => {
      const req = await signed({ method: 'PUT', url, body });
      for (const value of [`sha-512=:${Buffer.alloc(64).toString('base64')}:`, `${contentDigestOf(body)}, sha-512=:AA==:`, 'sha-256=:AA==:']) {
        expect(await codeOf(verify({ ...req, headers: { ...req.headers, 'content-digest': value } }))).toBe('PROTOCOL_DIGEST_MALFORMED');
      }
    });

    it('a body without a Content-Digest is refused with PROTOCOL_COMPONENT_MISSING when unsigned, PROTOCOL_DIGEST_MISSING when covered', async () => {
      const get = await signed({ method: 'GET', url });
      expect(await codeOf(verify({ ...get, body }))).toBe('PROTOCOL_COMPONENT_MISSING');
      const put = await signed({ method: 'PUT', url, body });
      const { 'content-digest': _dropped, ...headers } = put.headers;
      expect(await codeOf(verify({ ...put, headers }))).toBe('PROTOCOL_DIGEST_MISSING');
    });

    it('a signature byte flipped is refused with PROTOCOL_SIGNATURE_INVALID', async () => {
      const req = await signed({ method: 'GET', url });
      const sig = String(req.headers.signature);
      const b64 = sig.slice('sig=:'.length, -1);
      const flipped = Buffer.from(b64, 'base64');
      flipped[10] = flipped[10]! ^ 1;
      expect(await codeOf(verify({ ...req, headers: { ...req.headers, signature: `sig=:${flipped.toString('base64')}:` } }))).toBe(
        'PROTOCOL_SIGNATURE_INVALID',
      );
    });
  });

  describe('the time window', () => {
    it('an expired signature is refused with PROTOCOL_EXPIRED', async () => {
      const req = await signed({ method: 'GET', url });
      expect(await codeOf(verify(req, new Date(now.getTime() + 61_000)))).toBe('PROTOCOL_EXPIRED');
    });

    it('a signature created more than 30 s in the future is refused with PROTOCOL_CREATED_FUTURE', async () => {
      const req = await signed({ method: 'GET', url }, world.runner, { now: new Date(now.getTime() + 31_000) });
      expect(await codeOf(verify(req))).toBe('PROTOCOL_CREATED_FUTURE');
    });

    it('a signature valid for more than 300 s is refused with PROTOCOL_TTL_TOO_LONG', async () => {
      expect(await codeOf(verify(await signed({ method: 'GET', url }, world.runner, { ttlSeconds: 300 })))).toBeUndefined();
      expect(await codeOf(verify(await signed({ method: 'GET', url }, world.runner, { ttlSeconds: 301 })))).toBe('PROTOCOL_TTL_TOO_LONG');
    });
  });

  describe('keys', () => {
    it('a request signed by a key the trust document does not list is refused with PROTOCOL_UNKNOWN_KEY', async () => {
      expect(await codeOf(verify(await signed({ method: 'GET', url }, world.outsider)))).toBe('PROTOCOL_UNKNOWN_KEY');
    });

    it('a request signed by a listed key without the runner role is refused with PROTOCOL_KEY_ROLE', async () => {
      for (const key of [world.root, world.signer, world.approver, world.witness]) {
        expect(await codeOf(verify(await signed({ method: 'GET', url }, key)))).toBe('PROTOCOL_KEY_ROLE');
      }
    });

    it("a request signed by one runner but naming another runner's keyid is refused with PROTOCOL_SIGNATURE_INVALID", async () => {
      const req = await signed({ method: 'GET', url }, world.otherRunner);
      const input = String(req.headers['signature-input']).replace(world.otherRunner.keyid, world.runner.keyid);
      expect(await codeOf(verify({ ...req, headers: { ...req.headers, 'signature-input': input } }))).toBe('PROTOCOL_SIGNATURE_INVALID');
    });
  });

  describe('signature parameters and components', () => {
    const withInput = async (edit: (input: string) => string) => {
      const req = await signed({ method: 'PUT', url, body });
      return { ...req, headers: { ...req.headers, 'signature-input': edit(String(req.headers['signature-input'])) } };
    };

    it('an alg other than ed25519 is refused with PROTOCOL_ALGORITHM', async () => {
      expect(await codeOf(verify(await withInput((s) => s.replace('alg="ed25519"', 'alg="rsa-pss-sha512"'))))).toBe('PROTOCOL_ALGORITHM');
      expect(await codeOf(verify(await withInput((s) => s.replace('alg="ed25519"', 'alg=ed25519'))))).toBe('PROTOCOL_ALGORITHM');
    });

    it('a missing created, expires, nonce, keyid or alg is refused with PROTOCOL_PARAMETER_MISSING', async () => {
      for (const param of ['created=\\d+', 'expires=\\d+', 'nonce="[^"]+"', 'keyid="[0-9a-f]+"', 'alg="ed25519"']) {
        const req = await withInput((s) => s.replace(new RegExp(`;${param}`), ''));
        expect(await codeOf(verify(req)), param).toBe('PROTOCOL_PARAMETER_MISSING');
      }
    });

    it('a parameter the link does not use is refused with PROTOCOL_SIGNATURE_MALFORMED', async () => {
      expect(await codeOf(verify(await withInput((s) => `${s};tag="x"`)))).toBe('PROTOCOL_SIGNATURE_MALFORMED');
    });

    it('a signature that does not cover @method, @target-uri or content-digest is refused with PROTOCOL_COMPONENT_MISSING', async () => {
      for (const component of ['"@method" ', '"@target-uri" ', ' "content-digest"']) {
        const req = await withInput((s) => s.replace(component, ''));
        expect(await codeOf(verify(req)), component).toBe('PROTOCOL_COMPONENT_MISSING');
      }
    });

    it('a component with parameters, or listed twice, is refused with PROTOCOL_SIGNATURE_MALFORMED', async () => {
      expect(await codeOf(verify(await withInput((s) => s.replace('"content-digest"', '"content-digest";sf'))))).toBe('PROTOCOL_SIGNATURE_MALFORMED');
      expect(await codeOf(verify(await withInput((s) => s.replace('"@method"', '"@method" "@method"'))))).toBe('PROTOCOL_SIGNATURE_MALFORMED');
    });
  });

  describe('malformed and duplicated headers', () => {
    it('a request with neither header is refused with PROTOCOL_SIGNATURE_MISSING', async () => {
      expect(await codeOf(verify({ method: 'GET', url, headers: {} }))).toBe('PROTOCOL_SIGNATURE_MISSING');
    });

    it('a request with only one of the two headers is refused with PROTOCOL_SIGNATURE_MALFORMED', async () => {
      const req = await signed({ method: 'GET', url });
      expect(await codeOf(verify({ ...req, headers: { signature: req.headers.signature } }))).toBe('PROTOCOL_SIGNATURE_MALFORMED');
      expect(await codeOf(verify({ ...req, headers: { 'signature-input': req.headers['signature-input'] } }))).toBe('PROTOCOL_SIGNATURE_MALFORMED');
    });

    it('a Signature-Input sent twice (as two fields, or two sig members in one) is refused with PROTOCOL_SIGNATURE_MALFORMED', async () => {
      const a = await signed({ method: 'GET', url });
      const b = await signed({ method: 'GET', url });
      const input = String(a.headers['signature-input']);
      const other = String(b.headers['signature-input']);
      expect(await codeOf(verify({ ...a, headers: { ...a.headers, 'signature-input': [input, other] } }))).toBe('PROTOCOL_SIGNATURE_MALFORMED');
      // Joined as Node joins a repeated field: a dictionary parser would keep the second `sig` only.
      expect(await codeOf(verify({ ...b, headers: { ...b.headers, 'signature-input': `${input}, ${other}` } }))).toBe('PROTOCOL_SIGNATURE_MALFORMED');
      expect(await codeOf(verify({ ...a, headers: { ...a.headers, 'Signature-Input': other } }))).toBe('PROTOCOL_SIGNATURE_MALFORMED');
    });

    it('a Content-Digest sent twice is refused with PROTOCOL_SIGNATURE_MALFORMED', async () => {
      const req = await signed({ method: 'PUT', url, body });
      const digest = String(req.headers['content-digest']);
      expect(await codeOf(verify({ ...req, headers: { ...req.headers, 'content-digest': [digest, digest] } }))).toBe('PROTOCOL_SIGNATURE_MALFORMED');
    });

    it('headers that are not canonical structured dictionaries are refused with PROTOCOL_SIGNATURE_MALFORMED', async () => {
      const req = await signed({ method: 'GET', url });
      const input = String(req.headers['signature-input']);
      for (const bad of [
        `${input} `,
        input.replace('sig=', 'other='),
        input.replace('sig=(', 'sig=('.concat('')).replace('(', '( '),
        'sig=("@method"',
        'garbage',
      ]) {
        expect(await codeOf(verify({ ...req, headers: { ...req.headers, 'signature-input': bad } })), bad).toBe('PROTOCOL_SIGNATURE_MALFORMED');
      }
      for (const bad of ['sig=:AAAA', 'sig="text"', `sig=:${Buffer.alloc(64).toString('base64')}:;x=1`]) {
        expect(await codeOf(verify({ ...req, headers: { ...req.headers, signature: bad } })), bad).toBe('PROTOCOL_SIGNATURE_MALFORMED');
      }
    });

    it('a nonce shorter than 16 bytes is refused with PROTOCOL_SIGNATURE_MALFORMED', async () => {
      const req = await signed({ method: 'GET', url });
      const input = String(req.headers['signature-input']).replace(/nonce="[^"]+"/, 'nonce="short"');
      expect(await codeOf(verify({ ...req, headers: { ...req.headers, 'signature-input': input } }))).toBe('PROTOCOL_SIGNATURE_MALFORMED');
    });
  });
});
