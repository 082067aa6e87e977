import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import {
  NOTE_LIMITS,
  formatCheckpoint,
  parseCheckpoint,
  parseVerifierKey,
  runnerOrigin,
  signCheckpoint,
  signNote,
  toNoteKeyHash,
  toVerifierKey,
  verifyCheckpoint,
  verifyNote,
  type Checkpoint,
} from '../../../runner/log/checkpoint.js';
import { hashLeaf } from '../../../runner/log/merkle.js';
import { codeOf } from '../../helpers/codes.js';

// Known keys and notes from golang.org/x/mod/sumdb (test/fixtures/note/SOURCE).
const go = JSON.parse(readFileSync(new URL('../../fixtures/note/golang-x-mod-note.json', import.meta.url), 'utf8')) as {
  peterVerifierKey: string;
  peterSignerKey: string;
  enochVerifierKey: string;
  text: string;
  peterSig: string;
  enochSig: string;
  signedByPeter: string;
  badVerifierKeys: string[];
  malformedNotes: string[];
  malformedNoteInvalidUtf8Hex: string;
  badSignatureNote: string;
  tlogTree: { text: string; size: number; rootIsHashLeafOf: string };
};

/** A PrivateKey from a sumdb signer key `PRIVATE+KEY+name+hash+base64(0x01 || seed)`. */
function privateKeyFromSignerKey(signerKey: string): PrivateKey {
  const seed = Buffer.from(signerKey.split('+').slice(4).join('+'), 'base64').subarray(1);
  const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
  return PrivateKey.fromPem(`-----BEGIN PRIVATE KEY-----\n${der.toString('base64')}\n-----END PRIVATE KEY-----\n`);
}

const peterKey = privateKeyFromSignerKey(go.peterSignerKey);
const peter = parseVerifierKey(go.peterVerifierKey);
const enoch = parseVerifierKey(go.enochVerifierKey);

const runnerKey = PrivateKey.generate();
const origin = runnerOrigin('runner-01', runnerKey.keyid);
const runnerVerifier = { name: origin, publicKey: runnerKey.publicKey };
const checkpoint: Checkpoint = { origin, size: 42, rootHash: hashLeaf(Buffer.from('root')), extensions: [] };

describe('toVerifierKey', () => {
  it('reproduces the sumdb verifier key of the PeterNeumann test key', () => {
    expect(toVerifierKey('PeterNeumann', peterKey.publicKey)).toBe(go.peterVerifierKey);
    expect(toNoteKeyHash('PeterNeumann', peterKey.publicKey)).toBe(0xc74f20a3);
  });

  describe('when the name has a space or a plus sign', () => {
    it('rejects with LOG_NAME_INVALID', () => {
      expect(codeOf(() => toVerifierKey('Peter Neumann', peterKey.publicKey))).toBe('LOG_NAME_INVALID');
      expect(codeOf(() => toVerifierKey('Peter+Neumann', peterKey.publicKey))).toBe('LOG_NAME_INVALID');
      expect(codeOf(() => toVerifierKey('', peterKey.publicKey))).toBe('LOG_NAME_INVALID');
    });
  });
});

describe('parseVerifierKey', () => {
  it('round-trips a runner key', () => {
    const parsed = parseVerifierKey(toVerifierKey(origin, runnerKey.publicKey));
    expect(parsed.name).toBe(origin);
    expect(parsed.publicKey.raw).toEqual(runnerKey.publicKey.raw);
  });

  describe('when the base64 key itself holds a plus sign', () => {
    it('still splits name, hash and key at the first two plus signs', () => {
      let key = PrivateKey.generate();
      while (toVerifierKey('k', key.publicKey).split('+').length <= 3) key = PrivateKey.generate();
      expect(parseVerifierKey(toVerifierKey('k', key.publicKey)).publicKey.raw).toEqual(key.publicKey.raw);
    });
  });

  describe('when the key is one of sumdb`s bad keys (wrong length, unknown algorithm)', () => {
    it.each(go.badVerifierKeys)('rejects %s with LOG_VERIFIER_KEY_INVALID', (key) => {
      expect(codeOf(() => parseVerifierKey(key))).toBe('LOG_VERIFIER_KEY_INVALID');
    });
  });

  describe('when any substring or any one-character change of a good key is given', () => {
    it('rejects every one with LOG_VERIFIER_KEY_INVALID (as note.NewVerifier does)', () => {
      const key = go.peterVerifierKey;
      const mangled: string[] = [];
      for (let i = 0; i <= key.length; i++) {
        for (let j = i + 1; j <= key.length; j++) if (i !== 0 || j !== key.length) mangled.push(key.slice(i, j));
      }
      for (let i = 0; i < key.length; i++) mangled.push(key.slice(0, i) + String.fromCharCode(key.charCodeAt(i) + 1) + key.slice(i + 1));
      for (const bad of mangled) expect([bad, codeOf(() => parseVerifierKey(bad))]).toEqual([bad, 'LOG_VERIFIER_KEY_INVALID']);
    });
  });
});

describe('signNote', () => {
  it('reproduces the sumdb signed note of the PeterNeumann test key byte for byte', () => {
    expect(signNote(go.text, 'PeterNeumann', peterKey)).toBe(go.signedByPeter);
  });

  describe('when the text does not end with a newline', () => {
    it('rejects with LOG_NOTE_MALFORMED', () => {
      expect(codeOf(() => signNote('no newline', 'PeterNeumann', peterKey))).toBe('LOG_NOTE_MALFORMED');
    });
  });

  describe('when the name is not a valid key name', () => {
    it('rejects with LOG_NAME_INVALID', () => {
      expect(codeOf(() => signNote(go.text, 'Peter Neumann', peterKey))).toBe('LOG_NAME_INVALID');
    });
  });
});

describe('verifyNote', () => {
  it('accepts the sumdb note signed by a known key and returns its text', () => {
    const note = verifyNote(go.signedByPeter, [peter]);
    expect(note.text).toBe(go.text);
    expect(note.signatures).toEqual([{ name: 'PeterNeumann', keyHash: 0xc74f20a3 }]);
  });

  describe('when one signature is by a known key and one by an unknown key', () => {
    it('accepts, and lists the unknown one as unverified', () => {
      const note = verifyNote(`${go.text}\n${go.peterSig}${go.enochSig}`, [peter]);
      expect(note.signatures.map((s) => s.name)).toEqual(['PeterNeumann']);
      expect(note.unverified).toEqual([{ name: 'EnochRoot', keyHash: 0xaf0cfe78 }]);
    });
  });

  describe('when both signers are known', () => {
    it('verifies both', () => {
      expect(verifyNote(`${go.text}\n${go.peterSig}${go.enochSig}`, [peter, enoch]).signatures).toHaveLength(2);
    });
  });

  describe('when a signature is repeated', () => {
    it('counts it once', () => {
      expect(verifyNote(`${go.text}\n${go.peterSig}${go.peterSig}`, [peter]).signatures).toHaveLength(1);
    });
  });

  describe('when no signature is by a known key', () => {
    it('rejects with LOG_CHECKPOINT_UNKNOWN_SIGNER', () => {
      expect(codeOf(() => verifyNote(go.signedByPeter, [enoch]))).toBe('LOG_CHECKPOINT_UNKNOWN_SIGNER');
      expect(codeOf(() => verifyNote(go.signedByPeter, []))).toBe('LOG_CHECKPOINT_UNKNOWN_SIGNER');
    });
  });

  describe('when a known key has the same name but another key hash', () => {
    it('rejects with LOG_CHECKPOINT_UNKNOWN_SIGNER', () => {
      const impostor = { name: 'PeterNeumann', publicKey: enoch.publicKey };
      expect(codeOf(() => verifyNote(go.signedByPeter, [impostor]))).toBe('LOG_CHECKPOINT_UNKNOWN_SIGNER');
    });
  });

  describe('when the signature of a known key does not verify', () => {
    it('rejects with LOG_CHECKPOINT_BAD_SIGNATURE (sumdb`s invalid-signature note)', () => {
      expect(codeOf(() => verifyNote(go.badSignatureNote, [peter]))).toBe('LOG_CHECKPOINT_BAD_SIGNATURE');
    });

    it('rejects with LOG_CHECKPOINT_BAD_SIGNATURE when the text was changed after signing', () => {
      const changed = go.signedByPeter.replace('cryptography', 'cryptograph!');
      expect(codeOf(() => verifyNote(changed, [peter]))).toBe('LOG_CHECKPOINT_BAD_SIGNATURE');
    });

    it('rejects with LOG_CHECKPOINT_BAD_SIGNATURE even when another known key signed correctly', () => {
      const forged = go.enochSig.replace(/.{8}=\n$/, 'AAAAAAAA=\n');
      expect(codeOf(() => verifyNote(`${go.text}\n${go.peterSig}${forged}`, [peter, enoch]))).toBe('LOG_CHECKPOINT_BAD_SIGNATURE');
    });
  });

  describe('when the note is one of sumdb`s malformed notes', () => {
    it.each(go.malformedNotes.map((note, i) => ({ i, note })))('rejects #$i with LOG_NOTE_MALFORMED', ({ note }) => {
      expect(codeOf(() => verifyNote(note, [peter]))).toBe('LOG_NOTE_MALFORMED');
    });

    it('rejects invalid UTF-8 with LOG_NOTE_MALFORMED', () => {
      expect(codeOf(() => verifyNote(Buffer.from(go.malformedNoteInvalidUtf8Hex, 'hex'), [peter]))).toBe('LOG_NOTE_MALFORMED');
    });
  });

  describe('when the note has more than 100 signature lines', () => {
    it('rejects with LOG_NOTE_MALFORMED', () => {
      const note = `${go.text}\n${go.peterSig.repeat(NOTE_LIMITS.maxSignatures + 1)}`;
      expect(codeOf(() => verifyNote(note, [peter]))).toBe('LOG_NOTE_MALFORMED');
      expect(verifyNote(`${go.text}\n${go.peterSig.repeat(NOTE_LIMITS.maxSignatures)}`, [peter]).signatures).toHaveLength(1);
    });
  });

  describe('when the signature uses URL-safe or unpadded base64', () => {
    it('rejects with LOG_NOTE_MALFORMED', () => {
      const unpadded = go.signedByPeter.replace(/=\n$/, '\n');
      expect(codeOf(() => verifyNote(unpadded, [peter]))).toBe('LOG_NOTE_MALFORMED');
      const urlSafe = go.signedByPeter.replace('x08go/ZJ', 'x08go_ZJ');
      expect(codeOf(() => verifyNote(urlSafe, [peter]))).toBe('LOG_NOTE_MALFORMED');
    });
  });

  describe('when the signature line uses a hyphen instead of the em dash', () => {
    it('rejects with LOG_NOTE_MALFORMED', () => {
      expect(codeOf(() => verifyNote(go.signedByPeter.replace('\u2014', '-'), [peter]))).toBe('LOG_NOTE_MALFORMED');
    });
  });

  describe('when the note is larger than NOTE_LIMITS.maxNoteBytes', () => {
    it('rejects with LOG_NOTE_TOO_LARGE, and accepts a note exactly at the limit', () => {
      const sigLine = `\n${go.peterSig}`;
      const filler = (bytes: number): string => `${'x'.repeat(bytes - 1)}\n`;
      const atLimit = filler(NOTE_LIMITS.maxNoteBytes - Buffer.byteLength(sigLine));
      // Signed by the runner so that the signature over the filler text is genuine.
      const signedAtLimit = signNote(atLimit, 'PeterNeumann', peterKey);
      expect(Buffer.byteLength(signedAtLimit)).toBe(NOTE_LIMITS.maxNoteBytes);
      expect(verifyNote(signedAtLimit, [peter]).text).toBe(atLimit);
      const overLimit = signNote(`x${atLimit}`, 'PeterNeumann', peterKey);
      expect(codeOf(() => verifyNote(overLimit, [peter]))).toBe('LOG_NOTE_TOO_LARGE');
    });
  });
});

describe('formatCheckpoint and parseCheckpoint', () => {
  it('round-trip a checkpoint with extension lines', () => {
    const withExtensions = { ...checkpoint, extensions: ['— not a signature, an extension', 'second'] };
    expect(parseCheckpoint(formatCheckpoint(withExtensions))).toEqual(withExtensions);
  });

  it('read and write the tlog tree note of golang.org/x/mod/sumdb/tlog', () => {
    const parsed = parseCheckpoint(go.tlogTree.text);
    expect(parsed).toEqual({
      origin: 'go.sum database tree',
      size: go.tlogTree.size,
      rootHash: hashLeaf(Buffer.from(go.tlogTree.rootIsHashLeafOf)),
      extensions: [],
    });
    expect(formatCheckpoint(parsed)).toBe(go.tlogTree.text);
  });

  describe('when the text is not a checkpoint', () => {
    const root = checkpoint.rootHash.toString('base64');
    it.each([
      ['no final newline', `${origin}\n42\n${root}`],
      ['two lines', `${origin}\n42\n`],
      ['an empty origin', `\n42\n${root}\n`],
      ['a size with a leading zero', `${origin}\n042\n${root}\n`],
      ['a negative size', `${origin}\n-1\n${root}\n`],
      ['a hexadecimal size', `${origin}\n0x2a\n${root}\n`],
      ['a size above 2^53', `${origin}\n9007199254740993\n${root}\n`],
      ['a root of 31 bytes', `${origin}\n42\n${Buffer.alloc(31).toString('base64')}\n`],
      ['an unpadded root', `${origin}\n42\n${root.replace(/=+$/, '')}\n`],
      ['an empty extension line', `${origin}\n42\n${root}\n\n`],
      ['a tab in the origin', `a\tb\n42\n${root}\n`],
    ])('rejects %s with LOG_CHECKPOINT_MALFORMED', (_what, text) => {
      expect(codeOf(() => parseCheckpoint(text))).toBe('LOG_CHECKPOINT_MALFORMED');
    });
  });

  describe('when asked to format a root that is not 32 bytes', () => {
    it('rejects with LOG_CHECKPOINT_MALFORMED', () => {
      expect(codeOf(() => formatCheckpoint({ ...checkpoint, rootHash: Buffer.alloc(31) }))).toBe('LOG_CHECKPOINT_MALFORMED');
    });
  });
});

describe('runnerOrigin', () => {
  it('names the runner and its key, and is a valid note key name', () => {
    expect(origin).toBe(`edge-runner.local/runner-01/${runnerKey.keyid.slice(0, 16)}`);
    expect(() => toVerifierKey(origin, runnerKey.publicKey)).not.toThrow();
  });

  describe('when the runner id holds a space, a plus sign or a slash', () => {
    it.each(['runner 01', 'runner+01', 'runner/01', ''])('rejects "%s" with LOG_NAME_INVALID', (runnerId) => {
      expect(codeOf(() => runnerOrigin(runnerId, runnerKey.keyid))).toBe('LOG_NAME_INVALID');
    });
  });
});

describe('verifyCheckpoint', () => {
  const signed = signCheckpoint(checkpoint, origin, runnerKey);

  it('accepts a checkpoint signed by the runner and returns its fields', () => {
    const verified = verifyCheckpoint(signed, [runnerVerifier], origin);
    expect(verified.size).toBe(42);
    expect(verified.rootHash).toEqual(checkpoint.rootHash);
  });

  describe('when the checkpoint is signed by an unknown key', () => {
    it('rejects with LOG_CHECKPOINT_UNKNOWN_SIGNER', () => {
      const other = PrivateKey.generate();
      const signedByOther = signCheckpoint(checkpoint, origin, other);
      expect(codeOf(() => verifyCheckpoint(signedByOther, [runnerVerifier], origin))).toBe('LOG_CHECKPOINT_UNKNOWN_SIGNER');
    });
  });

  describe('when the size was changed after signing', () => {
    it('rejects with LOG_CHECKPOINT_BAD_SIGNATURE', () => {
      expect(codeOf(() => verifyCheckpoint(signed.replace('\n42\n', '\n43\n'), [runnerVerifier]))).toBe('LOG_CHECKPOINT_BAD_SIGNATURE');
    });
  });

  describe('when the note is not well formed', () => {
    it('rejects with LOG_NOTE_MALFORMED', () => {
      expect(codeOf(() => verifyCheckpoint(signed.replace('\n\n', '\n'), [runnerVerifier]))).toBe('LOG_NOTE_MALFORMED');
    });
  });

  describe('when the signed text is not a checkpoint', () => {
    it('rejects with LOG_CHECKPOINT_MALFORMED', () => {
      const note = signNote(`${origin}\nforty-two\n`, origin, runnerKey);
      expect(codeOf(() => verifyCheckpoint(note, [runnerVerifier]))).toBe('LOG_CHECKPOINT_MALFORMED');
    });
  });

  describe('when the checkpoint names another log', () => {
    it('rejects with LOG_CHECKPOINT_ORIGIN_MISMATCH', () => {
      const elsewhere = signCheckpoint({ ...checkpoint, origin: 'example.com/log' }, origin, runnerKey);
      expect(codeOf(() => verifyCheckpoint(elsewhere, [runnerVerifier], origin))).toBe('LOG_CHECKPOINT_ORIGIN_MISMATCH');
    });
  });
});
