/**
 * A hostile review of the offline check of final remediation bundles: approvals whose predicate names
 * another runner or capsule than the proposal, and a coordinator adding approvals to a bundle it relays.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatBundle, verifyBundle } from '../../../runner/evidence/bundle.js';
import { checkClosedBundle, guardBundle } from '../../../runner/evidence/egress.js';
import { signEnvelope } from '../../../runner/core/dsse.js';
import { IN_TOTO_PAYLOAD_TYPE } from '../../../runner/evidence/statement.js';
import { codeOf } from '../../helpers/codes.js';
import { signTrust } from '../../helpers/world.js';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { verifyTrustDocument } from '../../../runner/trust/trust.js';
import { makeApprovalWorld, type ApprovalWorld, type Proposal } from '../../helpers/approvals.js';

describe('verifyBundle of a final remediation bundle under attack', () => {
  let world: ApprovalWorld;
  let proposal: Proposal;
  beforeAll(() => {
    world = makeApprovalWorld();
    proposal = world.proposal();
  });
  afterAll(() => world.cleanup());
  const verify = (bytes: Buffer) => verifyBundle(bytes, world.trust);

  it.each([
    ['another runner', { runner: 'runner-elsewhere' }],
    ['another capsule', () => ({ capsule: { id: 'other-fix', digest: `sha256:${'c'.repeat(64)}` } })],
  ])('refuses an applied change counting an approval that names %s (BUNDLE_APPROVALS_INVALID)', (_what, patch) => {
    const edit = typeof patch === 'function' ? patch() : patch;
    const approvals = [world.approve(proposal, world.keys.alice, edit), world.approve(proposal, world.keys.bob)];
    const { bytes } = world.final(proposal, { approvals });
    let err: (Error & { code?: string }) | undefined;
    try {
      verify(bytes);
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toBe('BUNDLE_APPROVALS_INVALID');
    expect(err?.message).toContain('APPROVAL_WRONG_PROPOSAL');
  });

  it("refuses an applied change to which a relay added a third owner's approval (the evidence lists two)", () => {
    const approvals = [world.approve(proposal, world.keys.alice), world.approve(proposal, world.keys.bob)];
    const { bundle } = world.final(proposal, { approvals });
    const carol = world.approve(proposal, world.keys.carol);
    const added = { ...bundle, approvals: [...bundle.approvals, carol.envelope] };
    expect(codeOf(() => verify(Buffer.from(formatBundle(added))))).toBe('BUNDLE_APPROVALS_INVALID');
  });

  it('refuses an applied change to which a relay added a reject signed after the decision (not yet valid then)', () => {
    const decidedAt = new Date(Date.now() - 3600_000);
    const at = (ms: number) => new Date(decidedAt.getTime() + ms).toISOString();
    const approvals = [
      world.approve(proposal, world.keys.alice, { signedAt: at(-60_000), notAfter: at(3600_000) }),
      world.approve(proposal, world.keys.bob, { signedAt: at(-60_000), notAfter: at(3600_000) }),
    ];
    const { bundle } = world.final(proposal, { approvals, decidedAt });
    const late = world.approve(proposal, world.keys.carol, { decision: 'reject', signedAt: at(120_000), notAfter: at(3600_000) });
    const added = { ...bundle, approvals: [...bundle.approvals, late.envelope] };
    expect(codeOf(() => verify(Buffer.from(formatBundle(added))))).toBe('BUNDLE_APPROVALS_INVALID');
  });

  it('lets no other signed statement ride out as an approval of a final bundle (the closed check: EGRESS_SCHEMA)', () => {
    const approvals = [world.approve(proposal, world.keys.alice), world.approve(proposal, world.keys.bob)];
    const { bundle } = world.final(proposal, { approvals });
    const smuggled = signEnvelope(IN_TOTO_PAYLOAD_TYPE, Buffer.from(JSON.stringify({ secret: 'the host /etc/shadow' })), [world.keys.alice]);
    const carrying = { ...bundle, approvals: [...bundle.approvals, smuggled] };
    expect(checkClosedBundle(carrying)).toMatchObject({ kind: 'schema', path: '/approvals/2' });
    expect(codeOf(() => guardBundle(carrying))).toBe('EGRESS_SCHEMA');
    expect(checkClosedBundle(bundle)).toBeUndefined();
  });

  describe("a footprint that leaves out a file the capsule's change names (a runner understating the tier)", () => {
    const files = [{ path: 'ledger/limits.txt', action: 'add' as const, from: 'limits.txt' }];
    const inputs = { 'limits.txt': 'max=10\n' };

    it('is refused (BUNDLE_TIER_MISMATCH) when the named file is missing from the footprint', () => {
      const understated = world.proposal({
        change: { files },
        inputs,
        files: [{ path: 'docs/notes.md', action: 'modify', linesAdded: 1, linesRemoved: 1 }],
      });
      expect(codeOf(() => verify(understated.bytes))).toBe('BUNDLE_TIER_MISMATCH');
    });

    it('is refused when the footprint gives the named file another action', () => {
      const other = world.proposal({
        change: { files },
        inputs,
        files: [{ path: 'ledger/limits.txt', action: 'modify', linesAdded: 1, linesRemoved: 0 }],
      });
      expect(codeOf(() => verify(other.bytes))).toBe('BUNDLE_TIER_MISMATCH');
    });

    it('verifies when the footprint has it (beside the patch file)', () => {
      const honest = world.proposal({
        change: { files },
        inputs,
        files: [
          { path: 'ledger/limits.txt', action: 'add', linesAdded: 1, linesRemoved: 0 },
          { path: 'ledger/rounding.txt', action: 'modify', linesAdded: 1, linesRemoved: 1 },
        ],
      });
      expect(codeOf(() => verify(honest.bytes))).toBeUndefined();
    });
  });

  describe('the reproductions the capsule cites', () => {
    const cited = [`sha256:${'1'.repeat(64)}`, `sha256:${'2'.repeat(64)}`];
    const ref = (evidence: string) => ({ evidence, capsule: 'repro-rounding', verdict: 'fail' as const });

    it('verifies a proposal that carries each, in the order cited', () => {
      const p = world.proposal({ change: { reproductions: cited }, edit: (r) => (r.reproductions = cited.map(ref)) });
      expect(codeOf(() => verify(p.bytes))).toBeUndefined();
    });

    it.each([
      ['leaves one out', (r: { reproductions?: unknown[] }) => (r.reproductions = [ref(cited[0]!)])],
      ['carries none', () => undefined],
    ])('refuses a proposal that %s (BUNDLE_INCONSISTENT)', (_what, edit) => {
      const p = world.proposal({ change: { reproductions: cited }, edit });
      expect(codeOf(() => verify(p.bytes))).toBe('BUNDLE_INCONSISTENT');
    });

    it("never signs one carrying a reproduction the capsule does not cite (the runner's guard: EGRESS_PROVENANCE)", () => {
      const other = [ref(cited[0]!), ref(`sha256:${'3'.repeat(64)}`)];
      expect(codeOf(() => world.proposal({ change: { reproductions: cited }, edit: (r) => (r.reproductions = other) }))).toBe('EGRESS_PROVENANCE');
      expect(codeOf(() => world.proposal({ edit: (r) => (r.reproductions = [ref(cited[0]!)]) }))).toBe('EGRESS_PROVENANCE');
    });
  });

  it('names the trust document version the runner signed under when an approval does not verify under this one', () => {
    const approvals = [world.approve(proposal, world.keys.alice), world.approve(proposal, world.keys.bob)];
    const { bytes } = world.final(proposal, { approvals });
    // Version 2, the same policy (so the same change digest), bob's key rotated.
    const body = structuredClone(world.trustBody);
    body.version = 2;
    const rotated = PrivateKey.generate();
    body.keys[rotated.keyid] = { ...body.keys[world.keys.bob.keyid]!, publicKey: rotated.publicKey.toPem() };
    delete body.keys[world.keys.bob.keyid];
    const v2 = verifyTrustDocument(signTrust(body, [world.keys.root]));
    let message = '';
    try {
      verifyBundle(bytes, v2);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('APPROVAL_SIGNATURE');
    expect(message).toContain('signed this evidence under trust document version 1; this is version 2');
  });
});
