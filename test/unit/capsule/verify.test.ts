/**
 * Capsule acceptance (DESIGN.md, Capsule file): one describe per reason code, each provoked on an otherwise
 * valid capsule, checked with one fixed clock reading. verifyCapsule is pure, so these tests need no state.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signEnvelope, type Envelope } from '../../../runner/core/dsse.js';
import { sha256Hex } from '../../../runner/core/digest.js';
import type { PrivateKey } from '../../../runner/core/ed25519.js';
import { CapsuleError } from '../../../runner/capsule/errors.js';
import type { CapsuleFile } from '../../../runner/capsule/capsule-file.js';
import { CAPSULE_PAYLOAD_TYPE } from '../../../runner/capsule/manifest.js';
import type { ManifestTemplate } from '../../../runner/capsule/pack.js';
import { verifyCapsule, type AcceptedCapsule, type CapsuleVerifyOptions, DEFAULT_CLOCK_SKEW_MS } from '../../../runner/capsule/verify.js';
import { TRUST_PAYLOAD_TYPE } from '../../../runner/trust/trust.js';
import { makeWorld, type World } from '../../helpers/world.js';

/** The one clock reading every decision in this file is made at. */
const NOW = new Date('2030-06-01T12:00:00.000Z');
const at = (offsetMs: number) => new Date(NOW.getTime() + offsetMs).toISOString();
const FRESH = { issuedAt: at(-60_000), notBefore: at(-60_000), expiresAt: at(3_600_000) } as const;
const ACCEPTED = 'ACCEPTED';

let single: World; // capsule-signer threshold 1
let double: World; // capsule-signer threshold 2
let remediating: World; // threshold 1, policy allows remediate

beforeAll(() => {
  single = makeWorld({ init: false });
  double = makeWorld({ init: false, signerThreshold: 2 });
  remediating = makeWorld({ init: false, allowedKinds: ['reproduce', 'validate', 'remediate'] });
});

afterAll(() => {
  for (const world of [single, double, remediating]) world.cleanup();
});

function capsule(world: World, patch: Partial<ManifestTemplate> = {}, files: Record<string, string> = {}, keys?: PrivateKey[]): CapsuleFile {
  return world.capsule({ ...FRESH, ...patch }, files, keys);
}

const toBytes = (file: unknown): Buffer => Buffer.from(JSON.stringify(file));

function manifestOf(file: CapsuleFile): Record<string, unknown> {
  return JSON.parse(Buffer.from(file.envelope.payload, 'base64').toString('utf8')) as Record<string, unknown>;
}

/** Signs any manifest object, valid or not: the packer refuses to sign what a runner would refuse. */
function signed(manifest: unknown, keys: PrivateKey[], blobs: Record<string, string> = {}, payloadType = CAPSULE_PAYLOAD_TYPE): CapsuleFile {
  const payload = Buffer.from(JSON.stringify(manifest), 'utf8');
  return { mediaType: 'application/vnd.edge-runner.capsule-file.v1+json', envelope: signEnvelope(payloadType, payload, keys), blobs };
}

function withSignatures(file: CapsuleFile, signatures: Envelope['signatures']): CapsuleFile {
  return { ...file, envelope: { ...file.envelope, signatures } };
}

function firstSig(file: CapsuleFile): string {
  return file.envelope.signatures[0]!.sig;
}

function verify(world: World, bytes: Uint8Array, options: Partial<CapsuleVerifyOptions> = {}): AcceptedCapsule {
  return verifyCapsule(bytes, {
    trust: world.trust,
    runner: { id: world.runnerId, labels: ['test'] },
    now: NOW,
    hasSeen: () => false,
    ...options,
  });
}

/** The reason code of the rejection, or ACCEPTED. Anything that is not a CapsuleError is rethrown. */
function outcomeOf(world: World, file: object, options: Partial<CapsuleVerifyOptions> = {}): string {
  const bytes = file instanceof Uint8Array ? file : toBytes(file);
  try {
    verify(world, bytes, options);
    return ACCEPTED;
  } catch (err) {
    if (err instanceof CapsuleError) return err.code;
    throw err;
  }
}

const toUrlSafe = (text: string) => text.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

describe('verifyCapsule', () => {
  describe('when the capsule is well formed, fresh, addressed to this runner and signed by a capsule signer', () => {
    it('accepts it and returns the verified manifest bytes and their digest', () => {
      const file = capsule(single, {}, { 'data/input.txt': 'hello' });
      const accepted = verify(single, toBytes(file));
      expect(accepted.manifestBytes.equals(Buffer.from(file.envelope.payload, 'base64'))).toBe(true);
      expect(accepted.manifestDigest).toBe(`sha256:${sha256Hex(accepted.manifestBytes)}`);
      expect(accepted.signers).toEqual([single.signers[0]!.keyid]);
      expect(accepted.inputs.get('data/input.txt')?.toString()).toBe('hello');
    });

    it('accepts it when a threshold of two distinct capsule signers signed', () => {
      const accepted = verify(double, toBytes(capsule(double)));
      expect(accepted.signers).toEqual([double.signers[0]!.keyid, double.signers[1]!.keyid].sort());
    });
  });

  describe('when the capsule file is over the size cap', () => {
    it('accepts a file of exactly maxBytes bytes', () => {
      const bytes = toBytes(capsule(single));
      expect(outcomeOf(single, bytes, { maxBytes: bytes.length })).toBe(ACCEPTED);
    });

    it('rejects a file one byte over maxBytes with CAPSULE_TOO_LARGE', () => {
      const bytes = toBytes(capsule(single));
      expect(outcomeOf(single, bytes, { maxBytes: bytes.length - 1 })).toBe('CAPSULE_TOO_LARGE');
    });
  });

  describe('when the capsule file is not a capsule', () => {
    it('rejects bytes that are not JSON with CAPSULE_UNPARSEABLE', () => {
      expect(outcomeOf(single, Buffer.from('this is not { json'))).toBe('CAPSULE_UNPARSEABLE');
    });

    it('rejects a file with the wrong mediaType with CAPSULE_UNPARSEABLE', () => {
      expect(outcomeOf(single, { ...capsule(single), mediaType: 'application/json' })).toBe('CAPSULE_UNPARSEABLE');
    });

    it('rejects a file with an extra top-level member with CAPSULE_UNPARSEABLE', () => {
      expect(outcomeOf(single, { ...capsule(single), comment: 'hi' })).toBe('CAPSULE_UNPARSEABLE');
    });

    it('rejects an envelope with an extra member with CAPSULE_UNPARSEABLE', () => {
      const file = capsule(single);
      expect(outcomeOf(single, { ...file, envelope: { ...file.envelope, extra: true } })).toBe('CAPSULE_UNPARSEABLE');
    });
  });

  describe('when no signature verifies with a trusted key', () => {
    it('rejects a capsule signed by an outsider key with CAPSULE_SIGNATURE_INVALID', () => {
      expect(outcomeOf(single, capsule(single, {}, {}, [single.outsider]))).toBe('CAPSULE_SIGNATURE_INVALID');
    });

    it('rejects a capsule whose outsider signature claims a capsule signer keyid with CAPSULE_SIGNATURE_INVALID', () => {
      const file = capsule(single, {}, {}, [single.outsider]);
      const relabelled = withSignatures(file, [{ keyid: single.signers[0]!.keyid, sig: firstSig(file) }]);
      expect(outcomeOf(single, relabelled)).toBe('CAPSULE_SIGNATURE_INVALID');
    });

    it('rejects a capsule whose payload was changed after signing with CAPSULE_SIGNATURE_INVALID', () => {
      const file = capsule(single);
      const tampered = { ...manifestOf(file), steps: [{ name: 'evil', run: ['/bin/sh', '-c', 'id'] }] };
      const payload = Buffer.from(JSON.stringify(tampered)).toString('base64');
      expect(outcomeOf(single, { ...file, envelope: { ...file.envelope, payload } })).toBe('CAPSULE_SIGNATURE_INVALID');
    });
  });

  describe('when the capsule-signer threshold is two and one signer signed', () => {
    it('rejects it with CAPSULE_SIGNATURE_THRESHOLD', () => {
      expect(outcomeOf(double, capsule(double, {}, {}, [double.signers[0]!]))).toBe('CAPSULE_SIGNATURE_THRESHOLD');
    });

    it('rejects it with CAPSULE_SIGNATURE_THRESHOLD when the second signature is an outsider', () => {
      expect(outcomeOf(double, capsule(double, {}, {}, [double.signers[0]!, double.outsider]))).toBe('CAPSULE_SIGNATURE_THRESHOLD');
    });
  });

  describe('when one signature is repeated to fake a threshold of two', () => {
    it('rejects the same signature listed twice with CAPSULE_SIGNATURE_DUPLICATE', () => {
      const file = capsule(double, {}, {}, [double.signers[0]!]);
      const signature = file.envelope.signatures[0]!;
      expect(outcomeOf(double, withSignatures(file, [signature, signature]))).toBe('CAPSULE_SIGNATURE_DUPLICATE');
    });

    it('rejects a capsule signed twice by the same key with CAPSULE_SIGNATURE_DUPLICATE', () => {
      const signer = double.signers[0]!;
      expect(outcomeOf(double, capsule(double, {}, {}, [signer, signer]))).toBe('CAPSULE_SIGNATURE_DUPLICATE');
    });

    it('rejects the same signature re-encoded as URL-safe base64 without a keyid with CAPSULE_SIGNATURE_DUPLICATE', () => {
      const file = capsule(double, {}, {}, [double.signers[0]!]);
      const signature = file.envelope.signatures[0]!;
      const again = { sig: toUrlSafe(signature.sig) };
      expect(outcomeOf(double, withSignatures(file, [signature, again]))).toBe('CAPSULE_SIGNATURE_DUPLICATE');
    });
  });

  describe('when the only valid signature comes from a key without the capsule-signer role', () => {
    it('rejects a capsule signed by the root key with CAPSULE_SIGNER_ROLE', () => {
      expect(outcomeOf(single, capsule(single, {}, {}, [single.root]))).toBe('CAPSULE_SIGNER_ROLE');
    });

    it('rejects a capsule signed by the runner key with CAPSULE_SIGNER_ROLE', () => {
      expect(outcomeOf(single, capsule(single, {}, {}, [single.runnerKey]))).toBe('CAPSULE_SIGNER_ROLE');
    });
  });

  describe('when the payloadType is swapped', () => {
    it('rejects a manifest re-signed as a trust document with CAPSULE_PAYLOAD_TYPE', () => {
      const file = capsule(single);
      const swapped = signed(manifestOf(file), [single.signers[0]!], file.blobs, TRUST_PAYLOAD_TYPE);
      expect(outcomeOf(single, swapped)).toBe('CAPSULE_PAYLOAD_TYPE');
    });

    it("rejects the runner's own trust envelope presented as a capsule with CAPSULE_PAYLOAD_TYPE", () => {
      const trustEnvelope = JSON.parse(single.trustBytes.toString('utf8')) as Envelope;
      expect(outcomeOf(single, { ...capsule(single), envelope: trustEnvelope })).toBe('CAPSULE_PAYLOAD_TYPE');
    });
  });

  describe('when a keyid points at another trusted key', () => {
    it("rejects a second signer's signature relabelled with the first signer's keyid with CAPSULE_KEYID_MISMATCH", () => {
      const [first, second] = double.signers as [PrivateKey, PrivateKey];
      const file = capsule(double, {}, {}, [first, second]);
      const [sig1, sig2] = file.envelope.signatures as [Envelope['signatures'][number], Envelope['signatures'][number]];
      expect(sig2.keyid).toBe(second.keyid);
      expect(outcomeOf(double, withSignatures(file, [sig1, { keyid: first.keyid, sig: sig2.sig }]))).toBe('CAPSULE_KEYID_MISMATCH');
    });

    it("rejects one signer's signature copied under the other signer's keyid with CAPSULE_KEYID_MISMATCH", () => {
      const [first, second] = double.signers as [PrivateKey, PrivateKey];
      const file = capsule(double, {}, {}, [first]);
      const sig = firstSig(file);
      expect(
        outcomeOf(
          double,
          withSignatures(file, [
            { keyid: first.keyid, sig },
            { keyid: second.keyid, sig },
          ]),
        ),
      ).toBe('CAPSULE_KEYID_MISMATCH');
    });
  });

  describe('when base64 is invalid', () => {
    it('rejects a payload holding a "*" with CAPSULE_BASE64_INVALID', () => {
      const file = capsule(single);
      const payload = `${file.envelope.payload.slice(0, 8)}*${file.envelope.payload.slice(9)}`;
      expect(outcomeOf(single, { ...file, envelope: { ...file.envelope, payload } })).toBe('CAPSULE_BASE64_INVALID');
    });

    it('rejects a payload broken by a line feed with CAPSULE_BASE64_INVALID', () => {
      const file = capsule(single);
      const payload = `${file.envelope.payload.slice(0, 76)}\n${file.envelope.payload.slice(76)}`;
      expect(outcomeOf(single, { ...file, envelope: { ...file.envelope, payload } })).toBe('CAPSULE_BASE64_INVALID');
    });

    it('rejects a signature with characters outside both alphabets with CAPSULE_BASE64_INVALID', () => {
      const file = capsule(single);
      const signature = file.envelope.signatures[0]!;
      const sig = `${signature.sig.slice(0, 10)}!.${signature.sig.slice(12)}`;
      expect(outcomeOf(single, withSignatures(file, [{ ...signature, sig }]))).toBe('CAPSULE_BASE64_INVALID');
    });

    it('rejects an input blob that is not base64 with CAPSULE_BASE64_INVALID', () => {
      const file = capsule(single, {}, { 'input.txt': 'hello' });
      const [ref] = Object.keys(file.blobs) as [string];
      expect(outcomeOf(single, { ...file, blobs: { [ref]: 'aGVs*G8=' } })).toBe('CAPSULE_BASE64_INVALID');
    });
  });

  describe('when the manifest violates its schema', () => {
    const cases: Array<[string, (m: Record<string, unknown>) => unknown]> = [
      ['a required field is missing', ({ nonce: _nonce, ...rest }) => rest],
      ['it has a field the schema does not know', (m) => ({ ...m, priority: 'high' })],
      ['its kind is not a known kind', (m) => ({ ...m, kind: 'destroy' })],
      [
        'two steps share a name',
        (m) => ({
          ...m,
          steps: [
            { name: 'same', run: ['/bin/true'] },
            { name: 'same', run: ['/bin/false'] },
          ],
        }),
      ],
      ['a step has no argv', (m) => ({ ...m, steps: [{ name: 'empty', run: [] }] })],
      ['the payload is not JSON at all', () => undefined],
    ];
    it.each(cases)('rejects it with CAPSULE_SCHEMA when %s', (_what, change) => {
      const file = capsule(single);
      const manifest = change(manifestOf(file));
      const bad =
        manifest === undefined
          ? { ...file, envelope: signEnvelope(CAPSULE_PAYLOAD_TYPE, Buffer.from('not json'), [single.signers[0]!]) }
          : signed(manifest, [single.signers[0]!], file.blobs);
      expect(outcomeOf(single, bad)).toBe('CAPSULE_SCHEMA');
    });
  });

  describe('when the capsule is not yet valid', () => {
    it('rejects it with CAPSULE_NOT_YET_VALID one second beyond the clock-skew allowance before notBefore', () => {
      expect(outcomeOf(single, capsule(single, { notBefore: at(DEFAULT_CLOCK_SKEW_MS + 1000) }))).toBe('CAPSULE_NOT_YET_VALID');
    });

    it('accepts it when the runner clock is behind by less than the clock-skew allowance', () => {
      expect(outcomeOf(single, capsule(single, { notBefore: at(DEFAULT_CLOCK_SKEW_MS - 1000) }))).toBe(ACCEPTED);
    });

    it('accepts it at exactly notBefore', () => {
      expect(outcomeOf(single, capsule(single, { notBefore: at(0) }))).toBe(ACCEPTED);
    });
  });

  describe('when the capsule has expired', () => {
    it('rejects it with CAPSULE_EXPIRED at exactly expiresAt', () => {
      expect(outcomeOf(single, capsule(single, { expiresAt: at(0) }))).toBe('CAPSULE_EXPIRED');
    });

    it('accepts it one millisecond before expiresAt', () => {
      expect(outcomeOf(single, capsule(single, { expiresAt: at(1) }))).toBe(ACCEPTED);
    });
  });

  describe('when the capsule is addressed to another runner', () => {
    it('rejects another runner id with CAPSULE_TARGET', () => {
      expect(outcomeOf(single, capsule(single, { target: { runners: ['runner-elsewhere'] } }))).toBe('CAPSULE_TARGET');
    });

    it('rejects a label this runner does not carry with CAPSULE_TARGET', () => {
      expect(outcomeOf(single, capsule(single, { target: { labels: ['production'] } }))).toBe('CAPSULE_TARGET');
    });

    it("accepts this runner's own id", () => {
      expect(outcomeOf(single, capsule(single, { target: { runners: [single.runnerId] } }))).toBe(ACCEPTED);
    });
  });

  describe('when the id and nonce were accepted before', () => {
    it('rejects it with CAPSULE_REPLAY, having asked about exactly that id and nonce', () => {
      const file = capsule(single);
      const manifest = manifestOf(file);
      const asked: Array<[string, string]> = [];
      const hasSeen = (id: string, nonce: string) => {
        asked.push([id, nonce]);
        return true;
      };
      expect(outcomeOf(single, file, { hasSeen })).toBe('CAPSULE_REPLAY');
      expect(asked).toEqual([[manifest.id, manifest.nonce]]);
    });
  });

  describe('when an input blob is missing', () => {
    it('rejects it with CAPSULE_INPUT_MISSING', () => {
      const file = capsule(single, {}, { 'input.txt': 'hello' });
      expect(outcomeOf(single, { ...file, blobs: {} })).toBe('CAPSULE_INPUT_MISSING');
    });
  });

  describe('when an input blob does not match its signed digest', () => {
    it('rejects other bytes under the same digest key with CAPSULE_INPUT_DIGEST', () => {
      const file = capsule(single, {}, { 'input.txt': 'hello' });
      const [ref] = Object.keys(file.blobs) as [string];
      expect(outcomeOf(single, { ...file, blobs: { [ref]: Buffer.from('jello').toString('base64') } })).toBe('CAPSULE_INPUT_DIGEST');
    });

    it("rejects a signed size that differs from the blob's with CAPSULE_INPUT_DIGEST", () => {
      const file = capsule(single, {}, { 'input.txt': 'hello' });
      const manifest = manifestOf(file) as { inputs: Array<{ size: number }> };
      const resized = { ...manifest, inputs: manifest.inputs.map((input) => ({ ...input, size: input.size + 1 })) };
      expect(outcomeOf(single, signed(resized, [single.signers[0]!], file.blobs))).toBe('CAPSULE_INPUT_DIGEST');
    });
  });

  describe('when a path would leave the workspace', () => {
    const escapes = ['../x', '/etc/passwd', 'a/../../b', './a', 'a//b'];

    it.each(escapes)('rejects the input path %j with CAPSULE_PATH_ESCAPE', (path) => {
      const data = Buffer.from('payload');
      const sha256 = sha256Hex(data);
      const manifest = { ...manifestOf(capsule(single)), inputs: [{ path, sha256, size: data.length }] };
      const file = signed(manifest, [single.signers[0]!], { [`sha256:${sha256}`]: data.toString('base64') });
      expect(outcomeOf(single, file)).toBe('CAPSULE_PATH_ESCAPE');
    });

    it.each(escapes)('rejects the collect path %j with CAPSULE_PATH_ESCAPE', (path) => {
      const manifest = { ...manifestOf(capsule(single)), collect: [{ path, as: 'file' }] };
      expect(outcomeOf(single, signed(manifest, [single.signers[0]!]))).toBe('CAPSULE_PATH_ESCAPE');
    });

    it('accepts a nested relative path', () => {
      expect(outcomeOf(single, capsule(single, { collect: [{ path: 'out/report.xml', as: 'junit' }] }, { 'a/b/c.txt': 'x' }))).toBe(ACCEPTED);
    });
  });

  describe('when the capsule is a remediation', () => {
    const remediation = { kind: 'remediate' as const, change: { target: 'payments-db', patch: 'fix.patch' } };

    it('rejects it with CAPSULE_POLICY when the trust policy does not allow the kind', () => {
      expect(outcomeOf(single, capsule(single, remediation, { 'fix.patch': '--- a\n+++ b\n' }))).toBe('CAPSULE_POLICY');
    });

    it('rejects it with CAPSULE_POLICY even when the policy allows the kind, since approvals are not checked yet', () => {
      expect(outcomeOf(remediating, capsule(remediating, remediation, { 'fix.patch': '--- a\n+++ b\n' }))).toBe('CAPSULE_POLICY');
    });

    it('accepts a validate capsule under the same policy', () => {
      expect(outcomeOf(remediating, capsule(remediating))).toBe(ACCEPTED);
    });
  });

  describe('acceptance order', () => {
    it('reports the signature before freshness: an expired capsule signed by an outsider is CAPSULE_SIGNATURE_INVALID', () => {
      expect(outcomeOf(single, capsule(single, { expiresAt: at(-1000) }, {}, [single.outsider]))).toBe('CAPSULE_SIGNATURE_INVALID');
    });

    it('reports the size cap before parsing: an oversized non-JSON file is CAPSULE_TOO_LARGE', () => {
      expect(outcomeOf(single, Buffer.from('x'.repeat(100)), { maxBytes: 99 })).toBe('CAPSULE_TOO_LARGE');
    });

    it('reports the signature before the schema: an unsigned-by-us schema violation is CAPSULE_SIGNATURE_INVALID', () => {
      const bad = signed({ ...manifestOf(capsule(single)), extra: 1 }, [single.outsider]);
      expect(outcomeOf(single, bad)).toBe('CAPSULE_SIGNATURE_INVALID');
    });

    it('reports the schema before freshness: an expired capsule with an unknown field is CAPSULE_SCHEMA', () => {
      const bad = signed({ ...manifestOf(capsule(single, { expiresAt: at(-1000) })), extra: 1 }, [single.signers[0]!]);
      expect(outcomeOf(single, bad)).toBe('CAPSULE_SCHEMA');
    });

    it('reports freshness before the target: an expired capsule for another runner is CAPSULE_EXPIRED', () => {
      expect(outcomeOf(single, capsule(single, { expiresAt: at(-1000), target: { runners: ['elsewhere'] } }))).toBe('CAPSULE_EXPIRED');
    });

    it('reports the target before replay: a seen capsule for another runner is CAPSULE_TARGET', () => {
      expect(outcomeOf(single, capsule(single, { target: { runners: ['elsewhere'] } }), { hasSeen: () => true })).toBe('CAPSULE_TARGET');
    });

    it('reports replay before input digests: a seen capsule with a wrong blob is CAPSULE_REPLAY', () => {
      const file = capsule(single, {}, { 'input.txt': 'hello' });
      const [ref] = Object.keys(file.blobs) as [string];
      const bad = { ...file, blobs: { [ref]: Buffer.from('other').toString('base64') } };
      expect(outcomeOf(single, bad, { hasSeen: () => true })).toBe('CAPSULE_REPLAY');
    });

    it('reports input digests before policy: a remediation with a wrong blob is CAPSULE_INPUT_DIGEST', () => {
      const file = capsule(single, { kind: 'remediate', change: { target: 'db', patch: 'fix.patch' } }, { 'fix.patch': 'patch' });
      const [ref] = Object.keys(file.blobs) as [string];
      expect(outcomeOf(single, { ...file, blobs: { [ref]: Buffer.from('other').toString('base64') } })).toBe('CAPSULE_INPUT_DIGEST');
    });

    it('does not consult the replay store for a capsule whose signature fails', () => {
      let asked = 0;
      const hasSeen = () => {
        asked++;
        return false;
      };
      expect(outcomeOf(single, capsule(single, {}, {}, [single.outsider]), { hasSeen })).toBe('CAPSULE_SIGNATURE_INVALID');
      expect(asked).toBe(0);
    });
  });

  describe("when a signature's keyid is only a hint", () => {
    it('accepts a signature with no keyid when the key is trusted', () => {
      const file = capsule(single);
      const accepted = verify(single, toBytes(withSignatures(file, [{ sig: firstSig(file) }])));
      expect(accepted.signers).toEqual([single.signers[0]!.keyid]);
    });

    it('accepts a signature with an unknown keyid when the key is trusted', () => {
      const file = capsule(single);
      const accepted = verify(single, toBytes(withSignatures(file, [{ keyid: 'ab'.repeat(32), sig: firstSig(file) }])));
      expect(accepted.signers).toEqual([single.signers[0]!.keyid]);
    });

    it('counts two hint-less signatures from two distinct signers toward a threshold of two', () => {
      const file = capsule(double);
      const bare = file.envelope.signatures.map(({ sig }) => ({ sig }));
      expect(verify(double, toBytes(withSignatures(file, bare))).signers).toHaveLength(2);
    });
  });

  describe('when base64 comes in either alphabet', () => {
    /**
     * A capsule whose payload and signature both hold '+' or '/', so the URL-safe form differs. Three '?' in a
     * row put 0x3F at the last byte of some 3-byte group, which encodes as '/'; the signature is random.
     */
    function capsuleWithBothAlphabets(): CapsuleFile {
      for (let attempt = 0; attempt < 64; attempt++) {
        const file = capsule(single, { description: `why??? attempt ${attempt}` });
        if (/[+/]/.test(file.envelope.payload) && /[+/]/.test(firstSig(file))) return file;
      }
      throw new Error('no capsule with "+" or "/" in both payload and signature after 64 attempts');
    }

    const encodings: Array<[string, (text: string) => string]> = [
      ['standard, padded', (text) => text],
      ['standard, unpadded', (text) => text.replace(/=+$/, '')],
      ['URL-safe, unpadded', toUrlSafe],
      ['URL-safe, padded', (text) => text.replace(/\+/g, '-').replace(/\//g, '_')],
    ];

    it.each(encodings)('accepts payload and signature encoded as %s, with the same manifest digest', (_name, encode) => {
      const file = capsuleWithBothAlphabets();
      const reference = verify(single, toBytes(file));
      const recoded: CapsuleFile = {
        ...file,
        envelope: {
          ...file.envelope,
          payload: encode(file.envelope.payload),
          signatures: file.envelope.signatures.map((s) => ({ ...s, sig: encode(s.sig) })),
        },
      };
      const accepted = verify(single, toBytes(recoded));
      expect(accepted.manifestDigest).toBe(reference.manifestDigest);
    });
  });

  describe('when a valid capsule file suffers a random single-byte mutation', () => {
    it('is rejected with a CapsuleError, or accepted with the very same manifest bytes; never anything else', () => {
      const file = capsule(single, { collect: [{ path: 'out/result.xml', as: 'junit' }] }, { 'input.txt': 'some input bytes' });
      const original = toBytes(file);
      const reference = verify(single, original);
      fc.assert(
        fc.property(fc.nat({ max: original.length - 1 }), fc.integer({ min: 0, max: 255 }), (position, value) => {
          const mutated = Buffer.from(original);
          mutated[position] = value;
          let accepted: AcceptedCapsule;
          try {
            accepted = verify(single, mutated);
          } catch (err) {
            expect(err).toBeInstanceOf(CapsuleError);
            return;
          }
          expect(accepted.manifestBytes.equals(reference.manifestBytes)).toBe(true);
          expect(accepted.manifestDigest).toBe(reference.manifestDigest);
        }),
        { numRuns: 600 },
      );
    });
  });
});
