/**
 * C2SP tlog-witness v1.0.0 add-checkpoint (body format, every decision branch, on real trees and signed
 * checkpoints) and C2SP tlog-cosignature cosignature/v1 (Ed25519).
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { runnerOrigin, signCheckpoint, signNote, verifyNote, type NoteVerifier } from '../../../runner/log/checkpoint.js';
import { EMPTY_ROOT, consistencyProof, hashLeaf, nodeReaderFromLeafHashes, rootFromNodes } from '../../../runner/log/merkle.js';
import {
  cosignatureKeyId,
  cosignedMessage,
  decideAddCheckpoint,
  formatAddCheckpoint,
  formatTlogSize,
  parseAddCheckpoint,
  parseTlogSize,
  signCosignature,
  verifyCosignatures,
  type ParsedAddCheckpoint,
} from '../../../runner/protocol/witness.js';
import { codeOf } from '../../helpers/codes.js';

const runnerKey = PrivateKey.generate();
const origin = runnerOrigin('runner-a', runnerKey.keyid);
const verifiers: NoteVerifier[] = [{ name: origin, publicKey: runnerKey.publicKey }];

/** A log of `n` leaves and its reader; `variant` changes the leaves so two logs fork. */
function tree(n: number, variant = '') {
  const leaves = Array.from({ length: n }, (_, i) => hashLeaf(Buffer.from(`leaf ${i}${i >= 2 ? variant : ''}`)));
  const read = nodeReaderFromLeafHashes(leaves);
  return { size: n, root: n === 0 ? Buffer.from(EMPTY_ROOT) : rootFromNodes(n, read), read };
}
const checkpointOf = (t: { size: number; root: Buffer }, key = runnerKey) =>
  signCheckpoint({ origin, size: t.size, rootHash: t.root, extensions: [] }, origin, key);
const request = (oldSize: number, proof: Buffer[], note: string): ParsedAddCheckpoint =>
  parseAddCheckpoint(formatAddCheckpoint(oldSize, proof, note));

describe('the add-checkpoint body', () => {
  const note = checkpointOf(tree(5));
  const proof = consistencyProof(3, 5, tree(5).read);

  it('round-trips: old size line, proof lines, blank line, note', () => {
    const body = formatAddCheckpoint(3, proof, note);
    expect(body.toString()).toBe(`old 3\n${proof.map((p) => `${p.toString('base64')}\n`).join('')}\n${note}`);
    expect(parseAddCheckpoint(body)).toEqual({ oldSize: 3, proof, note });
  });

  it('an empty proof from old size 0 is a line "old 0" and the blank line', () => {
    expect(formatAddCheckpoint(0, [], note).toString()).toBe(`old 0\n\n${note}`);
  });

  const refused = (text: string | Buffer) => codeOf(() => parseAddCheckpoint(typeof text === 'string' ? Buffer.from(text) : text));
  it.each([
    ['a leading zero in the old size', `old 03\n\n${note}`],
    ['a plus sign in the old size', `old +3\n\n${note}`],
    ['no "old" keyword', `3\n\n${note}`],
    ['two spaces', `old  3\n\n${note}`],
    ['an old size beyond 2^53', `old 9007199254740993\n\n${note}`],
    ['a proof line that is not base64', `old 3\nnot base64!\n\n${note}`],
    ['a proof line of 31 bytes', `old 3\n${Buffer.alloc(31).toString('base64')}\n\n${note}`],
    ['a proof line in URL-safe base64', `old 3\n${Buffer.alloc(32, 0xfb).toString('base64url')}=\n\n${note}`],
    ['a proof line without padding', `old 3\n${Buffer.alloc(32).toString('base64').slice(0, -1)}\n\n${note}`],
    ['a proof line with spare bits set', `old 3\n${Buffer.alloc(32).toString('base64').slice(0, 42)}B=\n\n${note}`],
    ['no blank line', `old 3\n${proof[0]!.toString('base64')}\n`],
    ['nothing after the blank line', 'old 0\n\n'],
    ['64 proof lines', `old 3\n${`${Buffer.alloc(32).toString('base64')}\n`.repeat(64)}\n${note}`],
    ['carriage returns', `old 3\r\n\r\n${note}`],
  ])('a body with %s is refused with WITNESS_BODY_MALFORMED', (_what, text) => {
    expect(refused(text)).toBe('WITNESS_BODY_MALFORMED');
  });

  it('63 proof lines are accepted; a body over 16 KiB or not UTF-8 is refused with WITNESS_BODY_MALFORMED', () => {
    const hash = `${Buffer.alloc(32).toString('base64')}\n`;
    expect(parseAddCheckpoint(Buffer.from(`old 3\n${hash.repeat(63)}\n${note}`)).proof).toHaveLength(63);
    expect(refused(Buffer.alloc(16 * 1024 + 1, 0x61))).toBe('WITNESS_BODY_MALFORMED');
    expect(refused(Buffer.concat([Buffer.from('old 0\n\n'), Buffer.from([0xff, 0xfe])]))).toBe('WITNESS_BODY_MALFORMED');
  });
});

describe('decideAddCheckpoint', () => {
  const t3 = tree(3);
  const t5 = tree(5);
  const t5fork = tree(5, 'x');
  const held3 = { size: 3, rootHash: t3.root };

  it('cosigns the first checkpoint of a log (old size 0, never cosigned, empty proof)', () => {
    const decision = decideAddCheckpoint(request(0, [], checkpointOf(t3)), undefined, verifiers);
    expect(decision).toMatchObject({ kind: 'cosign', checkpoint: { origin, size: 3 } });
  });

  it('cosigns a checkpoint that extends the held one with a valid consistency proof', () => {
    const decision = decideAddCheckpoint(request(3, consistencyProof(3, 5, t5.read), checkpointOf(t5)), held3, verifiers);
    expect(decision).toMatchObject({ kind: 'cosign', checkpoint: { size: 5 } });
    if (decision.kind === 'cosign') expect(decision.checkpoint.rootHash.equals(t5.root)).toBe(true);
  });

  it('cosigns the held checkpoint again (same size, same root, empty proof)', () => {
    expect(decideAddCheckpoint(request(3, [], checkpointOf(t3)), held3, verifiers).kind).toBe('cosign');
  });

  it('ignores signatures by unknown keys on the checkpoint', () => {
    const note = checkpointOf(t3);
    const extra = signNote(note.slice(0, note.indexOf('\n\n') + 1), 'someone.else/w', PrivateKey.generate());
    const both = `${note}${extra.slice(extra.indexOf('\n\n') + 2)}`;
    expect(decideAddCheckpoint(request(0, [], both), undefined, verifiers).kind).toBe('cosign');
  });

  it('answers 404 WITNESS_UNKNOWN_LOG for an origin it has no verifier for', () => {
    const other = PrivateKey.generate();
    const otherOrigin = runnerOrigin('runner-z', other.keyid);
    const note = signCheckpoint({ origin: otherOrigin, size: 3, rootHash: t3.root, extensions: [] }, otherOrigin, other);
    expect(decideAddCheckpoint(request(0, [], note), undefined, verifiers)).toMatchObject({
      kind: 'error',
      status: 404,
      code: 'WITNESS_UNKNOWN_LOG',
    });
  });

  it('answers 403 WITNESS_BAD_SIGNATURE when no signature is by the log key, or the log key signature fails', () => {
    const forged = checkpointOf(t3, PrivateKey.generate());
    expect(decideAddCheckpoint(request(0, [], forged), undefined, verifiers)).toMatchObject({
      kind: 'error',
      status: 403,
      code: 'WITNESS_BAD_SIGNATURE',
    });
    const note = checkpointOf(t3);
    const tampered = note.replace('\n3\n', '\n4\n');
    expect(decideAddCheckpoint(request(0, [], tampered), undefined, verifiers)).toMatchObject({
      kind: 'error',
      status: 403,
      code: 'WITNESS_BAD_SIGNATURE',
    });
  });

  it('answers 400 WITNESS_OLD_SIZE_TOO_LARGE when the old size is above the checkpoint size', () => {
    expect(decideAddCheckpoint(request(5, [], checkpointOf(t3)), { size: 5, rootHash: t5.root }, verifiers)).toMatchObject({
      kind: 'error',
      status: 400,
      code: 'WITNESS_OLD_SIZE_TOO_LARGE',
    });
  });

  it('answers 400 WITNESS_BODY_MALFORMED when the note is not a signed note', () => {
    expect(decideAddCheckpoint({ oldSize: 0, proof: [], note: 'no blank line\n' }, undefined, verifiers)).toMatchObject({ status: 400 });
  });

  it('answers conflict (409) with the held size when the old size is not the held one, and 0 when it holds none', () => {
    expect(decideAddCheckpoint(request(2, consistencyProof(2, 5, t5.read), checkpointOf(t5)), held3, verifiers)).toEqual({
      kind: 'conflict',
      size: 3,
    });
    expect(decideAddCheckpoint(request(0, [], checkpointOf(t5)), held3, verifiers)).toEqual({ kind: 'conflict', size: 3 });
    expect(decideAddCheckpoint(request(3, consistencyProof(3, 5, t5.read), checkpointOf(t5)), undefined, verifiers)).toEqual({
      kind: 'conflict',
      size: 0,
    });
  });

  it('answers 422 WITNESS_EMPTY_ROOT for a checkpoint of size 0 whose root is not the empty tree root', () => {
    const note = checkpointOf({ size: 0, root: t3.root });
    expect(decideAddCheckpoint(request(0, [], note), undefined, verifiers)).toMatchObject({ kind: 'error', status: 422, code: 'WITNESS_EMPTY_ROOT' });
    expect(decideAddCheckpoint(request(0, [], checkpointOf(tree(0))), undefined, verifiers).kind).toBe('cosign');
  });

  it('answers 422 WITNESS_PROOF_AT_ZERO when the proof from old size 0 is not empty', () => {
    expect(decideAddCheckpoint(request(0, [t3.root], checkpointOf(t3)), undefined, verifiers)).toMatchObject({
      kind: 'error',
      status: 422,
      code: 'WITNESS_PROOF_AT_ZERO',
    });
  });

  it('keeps a validly signed checkpoint whose consistency proof does not verify as a fork (WITNESS_CONSISTENCY)', () => {
    // The witness holds the runner's tree of 3 with a third leaf the runner has since rewritten: the new
    // checkpoint comes with a true proof of its own history, which does not reach the held root.
    const decision = decideAddCheckpoint(
      request(3, consistencyProof(3, 5, t5.read), checkpointOf(t5)),
      { size: 3, rootHash: tree(3, 'x').root },
      verifiers,
    );
    expect(decision).toMatchObject({ kind: 'fork', reason: 'WITNESS_CONSISTENCY', checkpoint: { size: 5 } });
    // A correct tree with a damaged proof is no better.
    const proof = consistencyProof(3, 5, t5.read);
    proof[0] = Buffer.alloc(32);
    expect(decideAddCheckpoint(request(3, proof, checkpointOf(t5)), held3, verifiers)).toMatchObject({ kind: 'fork', reason: 'WITNESS_CONSISTENCY' });
  });

  it('keeps a validly signed checkpoint of the held size with another root as a fork (WITNESS_ROOT_CONFLICT)', () => {
    const t4 = tree(4);
    const t4fork = tree(4, 'x');
    const decision = decideAddCheckpoint(request(4, [], checkpointOf(t4fork)), { size: 4, rootHash: t4.root }, verifiers);
    expect(decision).toMatchObject({ kind: 'fork', reason: 'WITNESS_ROOT_CONFLICT', checkpoint: { size: 4 } });
  });

  it('answers 422 WITNESS_CONSISTENCY (not a fork) for the held tree sent with a non-empty proof', () => {
    expect(decideAddCheckpoint(request(3, [t3.root], checkpointOf(t3)), held3, verifiers)).toMatchObject({
      kind: 'error',
      status: 422,
      code: 'WITNESS_CONSISTENCY',
    });
  });

  it('never answers fork for a checkpoint that is not validly signed', () => {
    const forged = checkpointOf(t5fork, PrivateKey.generate());
    expect(decideAddCheckpoint(request(3, consistencyProof(3, 5, t5fork.read), forged), held3, verifiers)).toMatchObject({
      kind: 'error',
      status: 403,
    });
  });
});

describe('text/x.tlog.size', () => {
  it('is the size in decimal and a newline', () => {
    expect(formatTlogSize(20852014)).toBe('20852014\n');
    expect(parseTlogSize(Buffer.from('0\n'))).toBe(0);
    expect(parseTlogSize(Buffer.from('42\n'))).toBe(42);
  });
  it.each(['42', '042\n', '-1\n', '4 2\n', '42\n\n', ''])('refuses %j with WITNESS_BODY_MALFORMED', (text) => {
    expect(codeOf(() => parseTlogSize(Buffer.from(text)))).toBe('WITNESS_BODY_MALFORMED');
  });
});

describe('cosignature/v1', () => {
  const witness = PrivateKey.generate();
  const name = 'coordinator.example/witness';
  const note = checkpointOf(tree(5));
  const body = note.slice(0, note.indexOf('\n\n') + 1);

  it('the key ID is SHA-256(name || "\\n" || 0x04 || public key)[:4]', () => {
    const expected = createHash('sha256')
      .update(Buffer.concat([Buffer.from(`${name}\n`), Buffer.from([0x04]), witness.publicKey.raw]))
      .digest()
      .subarray(0, 4);
    expect(cosignatureKeyId(name, witness.publicKey).equals(expected)).toBe(true);
  });

  it('signs "cosignature/v1\\ntime T\\n" + the checkpoint body, as an 8-byte big-endian time and an Ed25519 signature', () => {
    const line = signCosignature(note, name, witness, 1679315147);
    expect(line).toMatch(new RegExp(`^\u2014 ${name.replace('.', '\\.')} [A-Za-z0-9+/]{102}==\n$`));
    const blob = Buffer.from(line.slice(2 + name.length + 1, -1), 'base64');
    expect(blob).toHaveLength(4 + 8 + 64);
    expect(blob.subarray(0, 4).equals(cosignatureKeyId(name, witness.publicKey))).toBe(true);
    expect(blob.readBigUInt64BE(4)).toBe(1679315147n);
    const message = Buffer.from(`cosignature/v1\ntime 1679315147\n${body}`);
    expect(cosignedMessage(note, 1679315147).equals(message)).toBe(true);
    expect(witness.publicKey.verify(message, blob.subarray(12))).toBe(true);
    // The signature is not over the plain note text (that would be a note signature, type 0x01).
    expect(witness.publicKey.verify(Buffer.from(body), blob.subarray(12))).toBe(false);
  });

  it('appended to the note, a cosignature line is an ordinary signed-note signature line (ignored by note verifiers without the key)', () => {
    const line = signCosignature(note, name, witness, 1679315147);
    expect(verifyNote(`${note}${line}`, verifiers).unverified).toEqual([
      { name, keyHash: cosignatureKeyId(name, witness.publicKey).readUInt32BE(0) },
    ]);
  });

  it('verifyCosignatures returns the valid lines of known witnesses and ignores unknown ones', () => {
    const other = PrivateKey.generate();
    const lines =
      signCosignature(note, name, witness, 100) + signCosignature(note, 'unknown.example/w', other, 200) + signCosignature(note, name, other, 300);
    const valid = verifyCosignatures(note, lines, [{ name, key: witness.publicKey }]);
    expect(valid).toEqual([{ name, timestamp: 100, line: signCosignature(note, name, witness, 100) }]);
    expect(verifyCosignatures(body, lines, [{ name, key: witness.publicKey }])).toHaveLength(1);
    expect(verifyCosignatures(note, lines, [])).toEqual([]);
  });

  it('a cosignature by a known witness that does not verify (another checkpoint, another time) is refused with WITNESS_COSIGNATURE_MALFORMED', () => {
    const line = signCosignature(checkpointOf(tree(4)), name, witness, 100);
    expect(codeOf(() => verifyCosignatures(note, line, [{ name, key: witness.publicKey }]))).toBe('WITNESS_COSIGNATURE_MALFORMED');
    const good = signCosignature(note, name, witness, 100);
    const blob = Buffer.from(good.slice(2 + name.length + 1, -1), 'base64');
    blob.writeBigUInt64BE(101n, 4);
    const retimed = `\u2014 ${name} ${blob.toString('base64')}\n`;
    expect(codeOf(() => verifyCosignatures(note, retimed, [{ name, key: witness.publicKey }]))).toBe('WITNESS_COSIGNATURE_MALFORMED');
  });

  it.each([
    ['a line without the em dash', (l: string) => l.slice(2)],
    ['no final newline', (l: string) => l.slice(0, -1)],
    ['non-canonical base64', (l: string) => l.replace(/=?\n$/, 'x\n')],
  ])('lines with %s are refused with WITNESS_COSIGNATURE_MALFORMED', (_what, edit) => {
    const line = signCosignature(note, name, witness, 100);
    expect(codeOf(() => verifyCosignatures(note, edit(line), [{ name, key: witness.publicKey }]))).toBe('WITNESS_COSIGNATURE_MALFORMED');
  });

  it('a zero timestamp is refused when signing (tlog-witness: the timestamp MUST NOT be zero)', () => {
    expect(codeOf(() => signCosignature(note, name, witness, 0))).toBe('WITNESS_COSIGNATURE_MALFORMED');
  });
});
