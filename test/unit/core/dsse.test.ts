import { describe, expect, it } from 'vitest';
import { parseBase64 } from '../../../runner/core/base64.js';
import { DsseError, pae, parseEnvelope, signEnvelope, verifyEnvelope } from '../../../runner/core/dsse.js';
import { PrivateKey } from '../../../runner/core/ed25519.js';

describe('pae', () => {
  it('matches the DSSE spec example byte for byte', () => {
    // protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    expect(pae('http://example.com/HelloWorld', Buffer.from('hello world')).toString()).toBe(
      'DSSEv1 29 http://example.com/HelloWorld 11 hello world',
    );
  });

  it('counts bytes, not characters', () => {
    expect(pae('t', Buffer.from('é')).toString('latin1')).toContain(' 2 ');
  });
});

describe('parseBase64', () => {
  it('accepts standard and URL-safe, padded or not', () => {
    const bytes = Buffer.from([0xfb, 0xff, 0xfe, 0x01]);
    for (const text of ['+//+AQ==', '+//+AQ', '-__-AQ==', '-__-AQ']) expect(parseBase64(text)).toEqual(bytes);
  });

  it.each(['a*bc', 'ab cd', 'abc=d', 'a', 'ab=c', 'YQ===', 'YR=='])('rejects %j', (text) => {
    expect(() => parseBase64(text)).toThrow(/not valid base64/);
  });
});

describe('verifyEnvelope', () => {
  const a = PrivateKey.generate();
  const b = PrivateKey.generate();
  const keys = [
    { keyid: a.keyid, publicKey: a.publicKey, roles: ['signer'] },
    { keyid: b.keyid, publicKey: b.publicKey, roles: ['signer'] },
  ];
  const verify = (env: ReturnType<typeof signEnvelope>, threshold = 2) => verifyEnvelope(env, { payloadType: 't', keys, role: 'signer', threshold });
  const codeOf = (fn: () => unknown) => {
    try {
      fn();
      return 'NO_ERROR';
    } catch (err) {
      if (err instanceof DsseError) return err.code;
      throw err;
    }
  };

  it('returns the verified payload and distinct signers', () => {
    const result = verify(signEnvelope('t', Buffer.from('x'), [a, b]));
    expect(result.payload.toString()).toBe('x');
    expect(result.signers).toEqual([a.keyid, b.keyid].sort());
  });

  it('counts a key once however many times it signs', () => {
    expect(codeOf(() => verify(signEnvelope('t', Buffer.from('x'), [a, a])))).toBe('DSSE_SIGNATURE_DUPLICATE');
  });

  it('treats the keyid as a hint: a missing keyid still verifies', () => {
    const env = signEnvelope('t', Buffer.from('x'), [a]);
    expect(verify({ ...env, signatures: [{ sig: env.signatures[0]!.sig }] }, 1).signers).toEqual([a.keyid]);
  });

  it('refuses an envelope with unknown members', () => {
    expect(() => parseEnvelope({ payloadType: 't', payload: '', signatures: [{ sig: '' }], extra: 1 })).toThrow(DsseError);
  });
});
