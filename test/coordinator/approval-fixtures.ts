/**
 * Proposals held by the coordinator and approvals of them, for the coordinator's approvals tests
 * (approvals.test.ts, approvals-holes.test.ts). A proposal is a bundle written into the coordinator's
 * database as the inbox would have stored it (the coordinator reads a held proposal's signed statement, it
 * does not verify it again); the real path, a runner's proposal shipped through the inbox, is
 * test/integration/agent-approvals.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { toCanonicalJson } from '../../runner/core/canonical-json.js';
import { sha256Hex } from '../../runner/core/digest.js';
import { signEnvelope } from '../../runner/core/dsse.js';
import type { PrivateKey } from '../../runner/core/ed25519.js';
import { BUNDLE_MEDIA_TYPE, formatBundle } from '../../runner/evidence/bundle.js';
import { IN_TOTO_PAYLOAD_TYPE } from '../../runner/evidence/statement.js';
import { formatApproval, signApproval, type ApprovalPredicate } from '../../runner/policy/approval.js';
import type { CoordinatorWorld } from './helpers.js';

export interface Proposal {
  evidence: string;
  runner: string;
  change: string;
  target: string;
  capsule: { id: string; digest: string };
}

export const digestRef = () => `sha256:${randomBytes(32).toString('hex')}`;

let logIndex = 10_000;

export function approvalFixtures(world: () => CoordinatorWorld) {
  const rows = (sql: string, ...params: string[]) => {
    const db = new DatabaseSync(join(world().stateDir, 'coordinator.db'), { readOnly: true });
    try {
      return db.prepare(sql).all(...params) as Record<string, unknown>[];
    } finally {
      db.close();
    }
  };

  /**
   * A bundle of `runner`'s kept in the coordinator's bundles table as the inbox keeps one, whose signed
   * statement has a remediation member of `phase` (none when null): a new change, or the change of `of`
   * (its final bundle: same capsule, same change).
   */
  function holdProposal(runner: string, runnerKey: PrivateKey, phase: string | null = 'proposed', of?: Proposal): Proposal {
    const capsule = of?.capsule ?? { id: `fix-${randomBytes(3).toString('hex')}`, digest: digestRef() };
    const change = of?.change ?? digestRef();
    const statement = {
      _type: 'https://in-toto.io/Statement/v1',
      subject: [{ name: `capsule/${capsule.id}`, digest: { sha256: capsule.digest.slice(7) } }],
      predicateType: 'https://edge-runner.dev/evidence/v1',
      predicate: {
        runner: { id: runner, keyid: runnerKey.keyid },
        capsule: { ...capsule, kind: 'remediate', signers: [] },
        run: { verdict: 'pass' },
        ...(phase === null
          ? {}
          : {
              remediation: {
                phase,
                target: 'ledger',
                change,
                preState: digestRef(),
                postState: digestRef(),
                policy: digestRef(),
                ...(of ? { proposal: of.evidence } : {}),
              },
            }),
      },
    };
    const payload = Buffer.from(toCanonicalJson(statement), 'utf8');
    const evidence = `sha256:${sha256Hex(payload)}`;
    const bundle = {
      mediaType: BUNDLE_MEDIA_TYPE,
      evidence: signEnvelope(IN_TOTO_PAYLOAD_TYPE, payload, [runnerKey]),
      capsule: signEnvelope('application/vnd.edge-runner.capsule+json', Buffer.from('{}'), [world().world.signers[0]!]),
      approvals: [],
    };
    const bytes = Buffer.from(formatBundle(bundle as never));
    const db = new DatabaseSync(join(world().stateDir, 'coordinator.db'));
    try {
      db.exec('PRAGMA busy_timeout = 5000');
      db.prepare(
        `INSERT INTO bundles (digest, runner, capsule_id, manifest_digest, verdict, evidence_digest, log_index, received_at, bytes)
         VALUES (?, ?, ?, ?, 'pass', ?, ?, ?, ?)`,
      ).run(`sha256:${sha256Hex(bytes)}`, runner, capsule.id, capsule.digest, evidence, logIndex++, new Date().toISOString(), bytes);
    } finally {
      db.close();
    }
    return { evidence, runner, change, target: 'ledger', capsule };
  }

  function approvalFor(
    proposal: Proposal,
    approver: { name: string; key: PrivateKey },
    patch: Partial<ApprovalPredicate> = {},
    change = proposal.change,
  ): { bytes: Buffer; digest: string; hex: string } {
    const signedAt = new Date(Date.now() - 60_000);
    const predicate: ApprovalPredicate = {
      proposal: proposal.evidence,
      runner: proposal.runner,
      target: proposal.target,
      capsule: proposal.capsule,
      approver: approver.name,
      decision: 'approve',
      signedAt: signedAt.toISOString(),
      notAfter: new Date(signedAt.getTime() + 86_400_000).toISOString(),
      ...patch,
    };
    const signed = signApproval(change, predicate, approver.key);
    return { bytes: Buffer.from(formatApproval(signed.envelope)), digest: signed.digest, hex: signed.digest.slice(7) };
  }

  return { rows, holdProposal, approvalFor };
}
