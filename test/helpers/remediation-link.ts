/**
 * A governed-remediation world for the link's tests (the agent online, or air-gapped on a spool): a
 * LinkWorld whose trust document allows remediate capsules under a ledger policy (two of the ledger owners,
 * never autonomous), with approver keys for alice and bob and one for the capsule signer's own name; a change
 * target folder holding ledger/rounding.txt; the remediate capsule that fixes it; and the approvals an
 * approver would sign for the proposal the runner sends.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256Hex } from '../../runner/core/digest.js';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { packCapsule } from '../../runner/capsule/pack.js';
import type { Statement } from '../../runner/evidence/statement.js';
import { signApproval } from '../../runner/policy/approval.js';
import type { RemediationPolicy } from '../../runner/trust/trust.js';
import { makeLinkWorld, type LinkWorld } from './agent-link.js';
import { baseTemplate } from './world.js';

export const LEDGER_POLICY: RemediationPolicy = {
  surfaces: { ledger: ['ledger/**'] },
  rules: { ledger: { approvals: 2, group: 'ledger-owners' } },
  default: { approvals: 1 },
  groups: { 'ledger-owners': ['alice', 'bob', 'signer-1'] },
  noAutonomy: ['ledger'],
};

const PATCH = ['--- a/ledger/rounding.txt', '+++ b/ledger/rounding.txt', '@@ -1 +1 @@', '-mode=floor', '+mode=half-even', ''].join('\n');

export interface RemediationLinkWorld {
  world: LinkWorld;
  /** The change target's folder, and the runner configuration that declares it (`targets.ledger`). */
  target: string;
  config: { targets: { ledger: { path: string } } };
  approvers: { alice: PrivateKey; bob: PrivateKey; signerApprover: PrivateKey };
  /** The remediate capsule file (JSON) fixing ledger/rounding.txt, addressed to the runner. */
  capsule(): Buffer;
  /** An approval envelope of `proposal` by `name`, as `edge-runner approve` writes it, and its digest. */
  approve(proposal: HeldProposal, name: 'alice' | 'bob' | 'signer-1', signedAt?: Date): { digest: string; bytes: string };
}

/** A bundle as read back from the coordinator or the spool: its signed statement and evidence digest. */
export interface HeldProposal {
  statement: Statement;
  evidence: string;
}

export function readHeldBundle(bytes: Buffer): HeldProposal {
  const payload = Buffer.from(JSON.parse(bytes.toString('utf8')).evidence.payload, 'base64');
  return { statement: JSON.parse(payload.toString('utf8')) as Statement, evidence: `sha256:${sha256Hex(payload)}` };
}

export function makeRemediationLinkWorld(options: { runnerId?: string } = {}): RemediationLinkWorld {
  const approvers = { alice: PrivateKey.generate(), bob: PrivateKey.generate(), signerApprover: PrivateKey.generate() };
  const world = makeLinkWorld({
    ...(options.runnerId !== undefined ? { runnerId: options.runnerId } : {}),
    extraKeys: [
      { name: 'alice', key: approvers.alice, roles: ['approver'] },
      { name: 'bob', key: approvers.bob, roles: ['approver'] },
      // The capsule signer also holds an approver key under the same name: separation of duties refuses it.
      { name: 'signer-1', key: approvers.signerApprover, roles: ['approver'] },
    ],
    policy: { allowedKinds: ['reproduce', 'validate', 'remediate'], remediation: LEDGER_POLICY },
  });
  const target = join(world.dir, 'ledger-service');
  mkdirSync(join(target, 'ledger'), { recursive: true });
  writeFileSync(join(target, 'ledger', 'rounding.txt'), 'mode=floor\n');
  const keyOf = { alice: approvers.alice, bob: approvers.bob, 'signer-1': approvers.signerApprover };
  return {
    world,
    target,
    config: { targets: { ledger: { path: target } } },
    approvers,
    capsule() {
      const file = packCapsule(
        baseTemplate({
          kind: 'remediate',
          target: { runners: [world.runnerId] },
          change: { target: 'ledger', patch: 'fix.diff' },
          steps: [{ name: 'staged-is-half-even', run: ['/bin/sh', '-c', 'grep -qx mode=half-even "$EDGE_RUNNER_TARGET/ledger/rounding.txt"'] }],
          inputs: [{ path: 'fix.diff' }],
        }),
        new Map([['fix.diff', Buffer.from(PATCH)]]),
        [world.signer],
      );
      return Buffer.from(JSON.stringify(file));
    },
    approve(proposal, name, signedAt = new Date(Date.now() - 5_000)) {
      const remediation = proposal.statement.predicate.remediation!;
      const signed = signApproval(
        remediation.change,
        {
          proposal: proposal.evidence,
          runner: world.runnerId,
          target: remediation.target,
          capsule: { id: proposal.statement.predicate.capsule.id, digest: proposal.statement.predicate.capsule.digest },
          approver: name,
          decision: 'approve',
          signedAt: signedAt.toISOString(),
          notAfter: new Date(signedAt.getTime() + 3600_000).toISOString(),
        },
        keyOf[name],
      );
      return { digest: signed.digest, bytes: JSON.stringify(signed.envelope, null, 2) };
    },
  };
}
