import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execInState } from '../../helpers/runner.js';
import { signEnvelope } from '../../../runner/core/dsse.js';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { formatBundle, verifyBundle, type Bundle } from '../../../runner/evidence/bundle.js';
import { IN_TOTO_PAYLOAD_TYPE } from '../../../runner/evidence/statement.js';
import { makeTrustBody, makeWorld, signTrust, type World } from '../../helpers/world.js';
import { verifyTrustDocument } from '../../../runner/trust/trust.js';
import { codeOf } from '../../helpers/codes.js';

describe('verifyBundle', () => {
  let world: World;
  let bundle: Bundle;
  // Written as the runner writes a bundle (formatBundle), the one spelling verify accepts.
  const encode = (b: unknown) => Buffer.from(formatBundle(b as Bundle));
  const statementOf = (b: Bundle) => JSON.parse(Buffer.from(b.evidence.payload, 'base64').toString()) as Record<string, any>;
  const resign = (statement: unknown, key: PrivateKey): Bundle => ({
    ...bundle,
    evidence: signEnvelope(IN_TOTO_PAYLOAD_TYPE, Buffer.from(JSON.stringify(statement)), [key]),
  });

  beforeAll(async () => {
    world = makeWorld();
    const other = world.capsule({ collect: [], steps: [{ name: 'ok', run: ['/bin/true'] }] });
    const result = await execInState(world.stateDir, Buffer.from(JSON.stringify(other)));
    if (result.kind !== 'completed') throw new Error(`setup run was ${result.kind}`);
    bundle = result.bundle;
  });
  afterAll(() => world.cleanup());

  describe('when the bundle is as the runner wrote it', () => {
    it('verifies and names the runner, capsule and verdict', () => {
      const verified = verifyBundle(encode(bundle), world.trust);
      expect(verified.runnerName).toBe(world.runnerId);
      expect(verified.statement.predicate.run.verdict).toBe('pass');
      expect(verified.runnerKeyid).toBe(world.runnerKey.keyid);
    });
  });

  describe('when the bundle is not JSON or has an unknown member', () => {
    it('rejects with BUNDLE_UNPARSEABLE', () => {
      expect(codeOf(() => verifyBundle(Buffer.from('{'), world.trust))).toBe('BUNDLE_UNPARSEABLE');
      expect(codeOf(() => verifyBundle(encode({ ...bundle, extra: 1 }), world.trust))).toBe('BUNDLE_UNPARSEABLE');
    });
  });

  describe('when the bundle is over the size cap', () => {
    it('rejects with BUNDLE_TOO_LARGE before parsing', () => {
      expect(codeOf(() => verifyBundle(Buffer.alloc(8 * 1024 * 1024 + 1, 0x20), world.trust))).toBe('BUNDLE_TOO_LARGE');
    });
  });

  describe('when one byte of the evidence payload changes', () => {
    it('rejects with BUNDLE_EVIDENCE_SIGNATURE', () => {
      const payload = Buffer.from(bundle.evidence.payload, 'base64');
      payload[payload.length - 3] = payload[payload.length - 3]! ^ 1;
      const tampered = { ...bundle, evidence: { ...bundle.evidence, payload: payload.toString('base64') } };
      expect(codeOf(() => verifyBundle(encode(tampered), world.trust))).toBe('BUNDLE_EVIDENCE_SIGNATURE');
    });
  });

  describe('when the evidence is signed by a key the trust document does not enrol as a runner', () => {
    it('rejects with BUNDLE_UNKNOWN_RUNNER', () => {
      expect(codeOf(() => verifyBundle(encode(resign(statementOf(bundle), world.outsider)), world.trust))).toBe('BUNDLE_UNKNOWN_RUNNER');
      expect(codeOf(() => verifyBundle(encode(resign(statementOf(bundle), world.signers[0]!)), world.trust))).toBe('BUNDLE_UNKNOWN_RUNNER');
    });
  });

  describe('when the capsule envelope is swapped for one no trusted signer made', () => {
    it('rejects with BUNDLE_CAPSULE_SIGNATURE', () => {
      const forged = {
        ...bundle,
        capsule: signEnvelope(bundle.capsule.payloadType, Buffer.from(bundle.capsule.payload, 'base64'), [world.outsider]),
      };
      expect(codeOf(() => verifyBundle(encode(forged), world.trust))).toBe('BUNDLE_CAPSULE_SIGNATURE');
    });
  });

  describe("when the evidence names a different capsule's digest", () => {
    it('rejects with BUNDLE_CAPSULE_DIGEST', () => {
      const statement = statementOf(bundle);
      statement.subject[0].digest.sha256 = '0'.repeat(64);
      expect(codeOf(() => verifyBundle(encode(resign(statement, world.runnerKey)), world.trust))).toBe('BUNDLE_CAPSULE_DIGEST');
    });
  });

  describe('when the evidence is paired with another valid capsule', () => {
    it('rejects with BUNDLE_CAPSULE_DIGEST', () => {
      const otherCapsule = world.capsule();
      expect(codeOf(() => verifyBundle(encode({ ...bundle, capsule: otherCapsule.envelope }), world.trust))).toBe('BUNDLE_CAPSULE_DIGEST');
    });
  });

  describe('when the statement carries a field outside the closed schema', () => {
    it('rejects with BUNDLE_STATEMENT_SCHEMA', () => {
      const statement = statementOf(bundle);
      statement.predicate.steps[0].note = 'free text';
      expect(codeOf(() => verifyBundle(encode(resign(statement, world.runnerKey)), world.trust))).toBe('BUNDLE_STATEMENT_SCHEMA');
    });
  });

  describe('when the predicate names another runner than the key that signed it', () => {
    it('rejects with BUNDLE_INCONSISTENT', () => {
      const statement = statementOf(bundle);
      statement.predicate.runner.id = 'runner-elsewhere';
      expect(codeOf(() => verifyBundle(encode(resign(statement, world.runnerKey)), world.trust))).toBe('BUNDLE_INCONSISTENT');
    });
  });

  describe('when the auditor uses a trust document that does not enrol this runner', () => {
    it('rejects with BUNDLE_UNKNOWN_RUNNER', () => {
      const root = PrivateKey.generate();
      const body = makeTrustBody([
        { name: 'root', key: root, roles: ['root'] },
        { name: 'signer-1', key: world.signers[0]!, roles: ['capsule-signer'] },
      ]);
      const trust = verifyTrustDocument(signTrust(body, [root]));
      expect(codeOf(() => verifyBundle(encode(bundle), trust))).toBe('BUNDLE_UNKNOWN_RUNNER');
    });
  });
});
