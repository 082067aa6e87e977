/** verifyApproval: each code at its boundary, and one approval has one digest however its file is spelt. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signEnvelope, type Envelope } from '../../../runner/core/dsse.js';
import { toCanonicalJson } from '../../../runner/core/canonical-json.js';
import type { PrivateKey } from '../../../runner/core/ed25519.js';
import { IN_TOTO_PAYLOAD_TYPE } from '../../../runner/evidence/statement.js';
import {
  APPROVAL_MAX_BYTES,
  APPROVAL_PREDICATE_TYPE,
  buildApprovalStatement,
  formatApproval,
  signApproval,
  verifyApproval,
  type ApprovalPredicate,
} from '../../../runner/policy/approval.js';
import { codeOf } from '../../helpers/codes.js';
import { makeApprovalWorld, type ApprovalWorld, type Proposal } from '../../helpers/approvals.js';

describe('verifyApproval', () => {
  let world: ApprovalWorld;
  let proposal: Proposal;
  beforeAll(() => {
    world = makeApprovalWorld();
    proposal = world.proposal();
  });
  afterAll(() => world.cleanup());

  const predicateBy = (name: string, patch: Partial<ApprovalPredicate> = {}): ApprovalPredicate => ({
    proposal: proposal.evidenceDigest,
    runner: world.runnerId,
    target: 'config',
    capsule: { id: proposal.manifest.id, digest: proposal.manifestDigest },
    approver: name,
    decision: 'approve',
    signedAt: '2026-12-01T10:00:00.000Z',
    notAfter: '2026-12-02T10:00:00.000Z',
    ...patch,
  });
  const file = (envelope: Envelope) => Buffer.from(formatApproval(envelope));
  const signed = (statement: unknown, keys: PrivateKey[]) => signEnvelope(IN_TOTO_PAYLOAD_TYPE, Buffer.from(JSON.stringify(statement)), keys);
  const verify = (input: Buffer | Envelope) => verifyApproval(input, world.trust);

  describe('when an approver signed it', () => {
    it('returns the approver, the keyid, the change digest and the predicate', () => {
      const { envelope, digest } = signApproval(proposal.changeDigest, predicateBy('alice', { changeTicket: 'CHG-1042' }), world.keys.alice);
      const verified = verify(file(envelope));
      expect(verified).toMatchObject({ approver: 'alice', keyid: world.keys.alice.keyid, changeDigest: proposal.changeDigest, digest });
      expect(verified.predicate.changeTicket).toBe('CHG-1042');
    });

    it('gives the same digest to the same approval spelt with other whitespace, base64 or no keyid hint', () => {
      const { envelope, digest } = signApproval(proposal.changeDigest, predicateBy('alice'), world.keys.alice);
      const unpadded = { ...envelope, payload: envelope.payload.replace(/=+$/, ''), signatures: [{ sig: envelope.signatures[0]!.sig }] };
      expect(verify(Buffer.from(JSON.stringify(unpadded))).digest).toBe(digest);
      expect(verify(Buffer.from(`  ${JSON.stringify(envelope)}\n\n`)).digest).toBe(digest);
      expect(verify(unpadded).envelope).toEqual(envelope);
    });

    it('accepts an envelope already parsed from a bundle', () => {
      const { envelope } = signApproval(proposal.changeDigest, predicateBy('bob'), world.keys.bob);
      expect(verify(envelope).approver).toBe('bob');
    });
  });

  describe('when the file is over the cap', () => {
    it(`rejects with APPROVAL_TOO_LARGE above ${APPROVAL_MAX_BYTES} bytes, before parsing`, () => {
      const { envelope } = signApproval(proposal.changeDigest, predicateBy('alice'), world.keys.alice);
      const text = JSON.stringify(envelope);
      expect(codeOf(() => verify(Buffer.from(text.padEnd(APPROVAL_MAX_BYTES, ' '))))).toBeUndefined();
      expect(codeOf(() => verify(Buffer.from(text.padEnd(APPROVAL_MAX_BYTES + 1, ' '))))).toBe('APPROVAL_TOO_LARGE');
    });
  });

  describe('when the file is not a DSSE envelope in JSON', () => {
    it('rejects with APPROVAL_UNPARSEABLE', () => {
      const { envelope } = signApproval(proposal.changeDigest, predicateBy('alice'), world.keys.alice);
      expect(codeOf(() => verify(Buffer.from('{')))).toBe('APPROVAL_UNPARSEABLE');
      expect(codeOf(() => verify(Buffer.from(JSON.stringify({ ...envelope, note: 'x' }))))).toBe('APPROVAL_UNPARSEABLE');
      // Two payload members: one reader would see one decision, another reader the other.
      const twice = JSON.stringify(envelope).replace('"payload":', `"payload":"${envelope.payload}","payload":`);
      expect(codeOf(() => verify(Buffer.from(twice)))).toBe('APPROVAL_UNPARSEABLE');
      expect(codeOf(() => verify(Buffer.from(JSON.stringify({ ...envelope, payload: '*not base64*' }))))).toBe('APPROVAL_UNPARSEABLE');
    });
  });

  describe('when it is not signed by exactly one approver key', () => {
    it('rejects a key the trust document does not list with APPROVAL_SIGNATURE', () => {
      const { envelope } = signApproval(proposal.changeDigest, predicateBy('alice'), world.keys.outsider);
      expect(codeOf(() => verify(file(envelope)))).toBe('APPROVAL_SIGNATURE');
    });

    it('rejects a listed key without the approver role (the capsule signer, the root) with APPROVAL_SIGNATURE', () => {
      expect(codeOf(() => verify(file(signApproval(proposal.changeDigest, predicateBy('mallory'), world.keys.signer).envelope)))).toBe(
        'APPROVAL_SIGNATURE',
      );
      expect(codeOf(() => verify(file(signApproval(proposal.changeDigest, predicateBy('root-1'), world.keys.root).envelope)))).toBe(
        'APPROVAL_SIGNATURE',
      );
      expect(codeOf(() => verify(file(signApproval(proposal.changeDigest, predicateBy(world.runnerId), world.keys.runner).envelope)))).toBe(
        'APPROVAL_SIGNATURE',
      );
    });

    it('rejects two signatures in one approval with APPROVAL_SIGNATURE, even both by approvers', () => {
      const statement = buildApprovalStatement(proposal.changeDigest, predicateBy('alice'));
      expect(codeOf(() => verify(file(signed(statement, [world.keys.alice, world.keys.bob]))))).toBe('APPROVAL_SIGNATURE');
    });

    it('rejects a signature over other bytes with APPROVAL_SIGNATURE', () => {
      const { envelope } = signApproval(proposal.changeDigest, predicateBy('alice'), world.keys.alice);
      const other = signApproval(proposal.changeDigest, predicateBy('alice', { decision: 'reject' }), world.keys.alice).envelope;
      expect(codeOf(() => verify(file({ ...envelope, payload: other.payload })))).toBe('APPROVAL_SIGNATURE');
    });
  });

  describe('when the signed statement is not an approval statement', () => {
    it.each([
      ['an unknown predicate member', (s: any) => (s.predicate.comment = 'trust me')],
      ['another predicate type', (s: any) => (s.predicateType = 'https://edge-runner.dev/evidence/v1')],
      ['two subjects', (s: any) => s.subject.push(s.subject[0])],
      ['a subject naming another target than the predicate', (s: any) => (s.subject[0].name = 'change/other')],
      ['a decision other than approve or reject', (s: any) => (s.predicate.decision = 'maybe')],
      ['a notAfter not after signedAt', (s: any) => (s.predicate.notAfter = s.predicate.signedAt)],
      ['a change ticket with a control character', (s: any) => (s.predicate.changeTicket = 'CHG\u001b[2K')],
      ['a signedAt that is not an RFC 3339 UTC time', (s: any) => (s.predicate.signedAt = '2026-02-30T10:00:00Z')],
    ])('rejects %s with APPROVAL_SCHEMA', (_what, edit) => {
      const statement = structuredClone(buildApprovalStatement(proposal.changeDigest, predicateBy('alice'))) as any;
      edit(statement);
      expect(codeOf(() => verify(file(signed(statement, [world.keys.alice]))))).toBe('APPROVAL_SCHEMA');
    });

    it('rejects a payload that is not JSON with APPROVAL_SCHEMA', () => {
      const envelope = signEnvelope(IN_TOTO_PAYLOAD_TYPE, Buffer.from('not json'), [world.keys.alice]);
      expect(codeOf(() => verify(file(envelope)))).toBe('APPROVAL_SCHEMA');
    });

    it('refuses to sign what a verifier would refuse', () => {
      expect(
        codeOf(() => signApproval(proposal.changeDigest, predicateBy('alice', { notAfter: '2026-12-01T10:00:00.000Z' }), world.keys.alice)),
      ).toBe('APPROVAL_SCHEMA');
    });
  });

  describe('when the approver named is not the name of the signing key', () => {
    it('rejects with APPROVAL_NAME_MISMATCH (bob cannot sign as alice)', () => {
      const { envelope } = signApproval(proposal.changeDigest, predicateBy('alice'), world.keys.bob);
      expect(codeOf(() => verify(file(envelope)))).toBe('APPROVAL_NAME_MISMATCH');
    });
  });

  it('signs an in-toto Statement v1 over the change digest, canonical JSON', () => {
    const { envelope } = signApproval(proposal.changeDigest, predicateBy('alice'), world.keys.alice);
    const payload = Buffer.from(envelope.payload, 'base64').toString('utf8');
    const statement = JSON.parse(payload);
    expect(payload).toBe(toCanonicalJson(statement));
    expect(statement._type).toBe('https://in-toto.io/Statement/v1');
    expect(statement.predicateType).toBe(APPROVAL_PREDICATE_TYPE);
    expect(statement.subject).toEqual([{ name: 'change/config', digest: { sha256: proposal.changeDigest.slice(7) } }]);
  });
});
