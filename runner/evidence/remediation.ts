/**
 * The offline checks of a remediation bundle (verifyBundle step 6): everything an auditor can recompute from
 * the bundle and the trust document, so a runner cannot understate what a change needed or overstate who
 * authorized it. The change digest is recomputed from the capsule in the bundle and the evidence's state
 * digests; the footprint's surfaces and the tier are derived again from the signed policy; every approval
 * envelope is verified and counted again at the recorded decision time. Pure.
 */
import { toCanonicalJson } from '../core/canonical-json.js';
import { toPrintableExcerpt } from '../core/printable.js';
import type { Envelope } from '../core/dsse.js';
import type { Manifest } from '../capsule/manifest.js';
import { verifyApproval, type VerifiedApproval } from '../policy/approval.js';
import { changeDigestOf, changeSpecDigest, policyDigest } from '../policy/change-digest.js';
import { countApprovals, type ApprovalCount } from '../policy/count.js';
import { ApprovalError } from '../policy/errors.js';
import { deriveFootprint } from '../policy/surfaces.js';
import { deriveTier } from '../policy/tier.js';
import type { VerifiedTrust } from '../trust/trust.js';
import { EvidenceError } from './errors.js';
import type { RemediationEvidence, Statement } from './statement.js';

/** A change's `files` action as the footprint (and the plan) names it. */
const FOOTPRINT_ACTION = { add: 'add', replace: 'modify', delete: 'delete' } as const;

/** The phases of a change decided on approvals (or on none): only their bundles carry approvals. */
export const FINAL_PHASES: ReadonlySet<RemediationEvidence['phase']> = new Set(['applied', 'rolled-back', 'refused']);

export interface VerifiedRemediation {
  evidence: RemediationEvidence;
  /** The bundle's approvals as they verified, in the bundle's order (the counted ones, then the vetoes). */
  approvals: VerifiedApproval[];
  /** Final phases: the approvals counted again at `decidedAt`. */
  count?: ApprovalCount;
}

export interface RemediationCheckInput {
  statement: Statement;
  manifest: Manifest;
  manifestDigest: string;
  capsuleSigners: readonly string[];
  approvals: readonly Envelope[];
  trust: VerifiedTrust;
}

/** Returns undefined for a bundle of a read-only kind (which then carries no approvals). */
export function verifyRemediation(input: RemediationCheckInput): VerifiedRemediation | undefined {
  const { statement, manifest, approvals } = input;
  const { predicate } = statement;
  const remediation = predicate.remediation;
  const inconsistent = (what: string) => new EvidenceError('BUNDLE_INCONSISTENT', `The evidence ${what}.`);
  // Keys rotate under one policy (the same change digest): an auditor holding another version is told which the runner used.
  const decidedUnder = predicate.policy.trustVersion;
  const versionHint =
    decidedUnder === input.trust.body.version
      ? ''
      : ` (the runner signed this evidence under trust document version ${decidedUnder}; this is version ${input.trust.body.version})`;
  const invalid = (what: string) => new EvidenceError('BUNDLE_APPROVALS_INVALID', `The bundle's approvals do not hold: ${what}${versionHint}.`);

  // a. The kind, the policy rule and the phase agree.
  if (remediation === undefined) {
    if (manifest.kind === 'remediate') throw inconsistent('of a remediate capsule carries no remediation member');
    if (predicate.policy.rule !== 'read-only-kind')
      throw inconsistent(`of a ${manifest.kind} capsule names the policy rule ${predicate.policy.rule}`);
    // Approvals here are refused by the closed bundle check (BUNDLE_SCHEMA at /approvals), as the runner's guard refuses them.
    return undefined;
  }
  if (manifest.kind !== 'remediate' || manifest.change === undefined)
    throw inconsistent(`of a ${manifest.kind} capsule carries a remediation member`);
  const final = FINAL_PHASES.has(remediation.phase);
  const expectedRule = !final ? 'staged-change' : remediation.approvals?.autonomous === true ? 'autonomous-change' : 'approved-change';
  if (predicate.policy.rule !== expectedRule)
    throw inconsistent(`of a ${remediation.phase} change names the policy rule ${predicate.policy.rule}, not ${expectedRule}`);
  if (!final) {
    // Approval envelopes in a proposal's bundle: the closed bundle check, as above.
    if (remediation.approvals !== undefined) throw inconsistent('of a proposal names approvals');
  } else if (
    remediation.proposal === undefined ||
    remediation.decidedAt === undefined ||
    remediation.approvals === undefined ||
    remediation.outcome === undefined
  ) {
    throw inconsistent(`of a ${remediation.phase} change does not name its proposal, decision time, approvals and outcome`);
  }

  // The reproductions the capsule cites are the ones the evidence carries (an approver reads their verdicts), in its order.
  const cited = manifest.change.reproductions ?? [];
  const carried = (remediation.reproductions ?? []).map((ref) => ref.evidence);
  if (cited.join() !== carried.join()) throw inconsistent('does not carry exactly the reproductions the capsule cites');

  // b. The change digest: the capsule in this bundle, its change, the states, and this trust document's policy.
  const changeDigestError = (what: string) => new EvidenceError('BUNDLE_CHANGE_DIGEST', `The evidence's change digest does not hold: ${what}.`);
  if (remediation.target !== manifest.change.target) throw changeDigestError("the target is not the capsule's change target");
  const policy = policyDigest(input.trust.body.policy);
  if (remediation.policy !== policy || input.trust.body.policy.remediation === undefined) {
    throw changeDigestError(
      `the tier was derived under another policy than this trust document's (verify with trust document version ${predicate.policy.trustVersion})`,
    );
  }
  const recomputed = changeDigestOf({
    target: remediation.target,
    preState: remediation.preState,
    postState: remediation.postState,
    capsule: input.manifestDigest,
    change: changeSpecDigest(manifest),
    policy,
  });
  if (recomputed !== remediation.change) throw changeDigestError('it is not the digest of this target, these states, this capsule and this policy');

  // c. The footprint's surfaces and the tier, derived again from the signed policy and the change's files.
  const rules = input.trust.body.policy.remediation;
  const footprint = deriveFootprint(remediation.footprint.files, rules);
  if (toCanonicalJson(footprint) !== toCanonicalJson(remediation.footprint)) {
    throw new EvidenceError(
      'BUNDLE_TIER_MISMATCH',
      "The evidence's footprint is not the one the signed policy gives its files (surfaces, dependents or line totals differ).",
    );
  }
  // The paths the signed change names itself (its `files`; the patch's bytes are not in the bundle) are
  // in the footprint with their action: a runner cannot leave one out to lower the tier.
  for (const file of manifest.change.files ?? []) {
    const action = FOOTPRINT_ACTION[file.action];
    if (!footprint.files.some((entry) => entry.path === file.path && entry.action === action)) {
      throw new EvidenceError(
        'BUNDLE_TIER_MISMATCH',
        `The evidence's footprint does not ${action} "${toPrintableExcerpt(file.path)}", which the capsule's change does.`,
      );
    }
  }
  const tier = deriveTier(footprint, rules, manifest.change.declaredTier);
  if (toCanonicalJson(tier) !== toCanonicalJson(remediation.tier)) {
    throw new EvidenceError('BUNDLE_TIER_MISMATCH', "The evidence's tier is not the one the signed policy derives for its footprint.");
  }
  if (!final) return { evidence: remediation, approvals: [] };

  // d. Every approval verifies, counts again at the decision time, and the evidence says exactly that.
  const verified = approvals.map((envelope, i) => {
    try {
      return verifyApproval(envelope, input.trust);
    } catch (err) {
      if (!(err instanceof ApprovalError)) throw err;
      throw invalid(`approval ${i + 1} does not verify (${err.code}: ${err.message.replace(/\.$/, '')})`);
    }
  });
  if (new Set(verified.map((a) => a.digest)).size !== verified.length) throw invalid('an approval is carried twice');
  const count = countApprovals({
    approvals: verified,
    changeDigest: remediation.change,
    proposal: remediation.proposal!,
    proposed: { runner: predicate.runner.id, target: remediation.target, capsule: { id: manifest.id, digest: input.manifestDigest } },
    tier,
    capsuleSigners: input.capsuleSigners,
    trust: input.trust,
    decisionTime: new Date(remediation.decidedAt!),
  });
  const refused = count.refused[0];
  if (refused !== undefined) {
    throw invalid(`approval ${verified.indexOf(refused.approval) + 1} does not count (${refused.code}: ${refused.message.replace(/\.$/, '')})`);
  }
  const expected = [...count.counted, ...count.vetoes].map((a) => a.digest);
  if (expected.join() !== verified.map((a) => a.digest).join()) throw invalid('they are not in the order counted, then vetoes');
  const counted = count.counted.map((a) => ({ digest: a.digest, approver: a.approver }));
  if (toCanonicalJson(counted) !== toCanonicalJson(remediation.approvals!.counted)) {
    throw invalid('the evidence lists other counted approvals than the bundle carries');
  }
  // A veto is the signed answer of a vetoed change: its envelope travels in the bundle (the evidence lists only counted ones).
  if (remediation.phase === 'refused' && remediation.outcome?.code === 'CHANGE_VETOED' && count.vetoes.length === 0) {
    throw invalid('the change is said to be vetoed and the bundle carries no veto');
  }
  if (remediation.approvals!.autonomous) {
    // No human was required: the tier is 0 (an approval given anyway may still be listed, and counted).
    if (tier.approvals !== 0) throw invalid(`the change is said to need no approval but its tier needs ${tier.approvals}`);
  } else if (remediation.phase !== 'refused' && !count.satisfied) {
    const missing = count.missing.map((m) => `${m.approvals} more${m.group === undefined ? '' : ` from ${m.group}`}`).join(', ');
    throw invalid(
      `the change was applied without the approvals its tier needs (${count.vetoes.length > 0 ? 'vetoed' : missing || 'change control'})`,
    );
  }
  return { evidence: remediation, approvals: verified, count };
}
