/**
 * Review: the signature is checked on the headers before the body is read (verifyRequestHeaders, then
 * checkContentDigest), and the witness refuses checkpoints an edge-runner log never writes.
 */
import { describe, expect, it } from 'vitest';
import { isCodedError } from '../../../runner/core/errors.js';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { runnerOrigin, signCheckpoint } from '../../../runner/log/checkpoint.js';
import { EMPTY_ROOT } from '../../../runner/log/merkle.js';
import { checkContentDigest, signRequest, verifyRequestHeaders } from '../../../runner/protocol/http-signature.js';
import { decideAddCheckpoint, parseAddCheckpoint, formatAddCheckpoint } from '../../../runner/protocol/witness.js';
import { verifyTrustDocument } from '../../../runner/trust/trust.js';
import { makeTrustBody, signTrust } from '../../helpers/world.js';

const root = PrivateKey.generate();
const runner = PrivateKey.generate();
const trust = verifyTrustDocument(
  signTrust(
    makeTrustBody([
      { name: 'root-1', key: root, roles: ['root'] },
      { name: 'runner-a', key: runner, roles: ['runner'] },
    ]),
    [root],
  ),
  { now: new Date() },
);
const url = 'https://coordinator.example/v1/bundles/' + 'a'.repeat(64);
const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return 'none';
  } catch (err) {
    return isCodedError(err) ? err.code : String(err);
  }
};

describe('verifyRequestHeaders and checkContentDigest', () => {
  it('a signed PUT verifies on its headers alone, and only its own body passes checkContentDigest (else PROTOCOL_DIGEST_MISMATCH)', async () => {
    const body = Buffer.from('{"bundle":1}');
    const headers = await signRequest({ method: 'PUT', url, body }, runner, { now: new Date() });
    const verified = await verifyRequestHeaders({ method: 'PUT', url, headers, hasBody: true }, { trust, now: new Date() });
    expect(verified.name).toBe('runner-a');
    expect(verified.contentDigest).toBe(headers['content-digest']);
    expect(codeOf(() => checkContentDigest(verified.contentDigest, body))).toBe('none');
    expect(codeOf(() => checkContentDigest(verified.contentDigest, Buffer.from('{"bundle":2}')))).toBe('PROTOCOL_DIGEST_MISMATCH');
  });

  it('a request that announces a body but signs no Content-Digest is refused on its headers (PROTOCOL_COMPONENT_MISSING)', async () => {
    const headers = await signRequest({ method: 'PUT', url }, runner, { now: new Date() });
    await expect(verifyRequestHeaders({ method: 'PUT', url, headers, hasBody: true }, { trust, now: new Date() })).rejects.toMatchObject({
      code: 'PROTOCOL_COMPONENT_MISSING',
    });
    expect(codeOf(() => checkContentDigest(undefined, Buffer.from('x')))).toBe('PROTOCOL_DIGEST_MISSING');
  });
});

describe('decideAddCheckpoint', () => {
  it('attack: a validly signed checkpoint with extension lines is refused with 400 WITNESS_BODY_MALFORMED, not cosigned', () => {
    const origin = runnerOrigin('runner-a', runner.keyid);
    const note = signCheckpoint({ origin, size: 0, rootHash: EMPTY_ROOT, extensions: ['free text'] }, origin, runner);
    const decision = decideAddCheckpoint(parseAddCheckpoint(formatAddCheckpoint(0, [], note)), undefined, [
      { name: origin, publicKey: runner.publicKey },
    ]);
    expect(decision).toMatchObject({ kind: 'error', status: 400, code: 'WITNESS_BODY_MALFORMED' });
  });
});
