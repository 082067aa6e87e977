/** A signed trust document for protocol tests: a root, a capsule signer, two runners, an approver and a witness. */
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { verifyTrustDocument, type VerifiedTrust } from '../../../runner/trust/trust.js';
import { makeTrustBody, signTrust } from '../../helpers/world.js';

export interface ProtocolTrust {
  root: PrivateKey;
  signer: PrivateKey;
  runner: PrivateKey;
  otherRunner: PrivateKey;
  approver: PrivateKey;
  witness: PrivateKey;
  outsider: PrivateKey;
  trust: VerifiedTrust;
}

export function makeProtocolTrust(): ProtocolTrust {
  const [root, signer, runner, otherRunner, approver, witness, outsider] = Array.from({ length: 7 }, () => PrivateKey.generate()) as [
    PrivateKey,
    PrivateKey,
    PrivateKey,
    PrivateKey,
    PrivateKey,
    PrivateKey,
    PrivateKey,
  ];
  const body = makeTrustBody([
    { name: 'root-1', key: root, roles: ['root'] },
    { name: 'signer-1', key: signer, roles: ['capsule-signer'] },
    { name: 'runner-a', key: runner, roles: ['runner'] },
    { name: 'runner-b', key: otherRunner, roles: ['runner'] },
    { name: 'alice', key: approver, roles: ['approver'] },
    { name: 'coordinator.example', key: witness, roles: ['witness'] },
  ]);
  body.roles.approver.threshold = 1;
  body.roles.witness = { threshold: 1 };
  const trust = verifyTrustDocument(signTrust(body, [root]), { now: new Date() });
  return { root, signer, runner, otherRunner, approver, witness, outsider, trust };
}
