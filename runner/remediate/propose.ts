/**
 * A remediate capsule's proposal (issue 11, "Propose"). Two halves around the nonce:
 *   - `prepareProposal`, before the nonce burns: the target is one the operator declared, the change applies
 *     exactly to the real target as it is now (read, never written), the cited reproductions are this
 *     runner's own evidence; the footprint and the tier are derived from the signed policy. Any refusal is a
 *     capsule.rejected with its code, and the capsule may come again.
 *   - `stageProposal`, in the run's workspace: the target copied to `<workspace>/target`, its copy's digest
 *     checked equal to the pre-state, the change written to the copy, the post-state read from it, and
 *     `change.staged` recorded with the change digest, before any step runs against the copy.
 * The proposal's evidence and its `change.proposed` record are the run's (runner/agent/run-capsule.ts).
 */
import { join } from 'node:path';
import { CapsuleError } from '../capsule/errors.js';
import { STAGED_TARGET_DIR, type Manifest } from '../capsule/manifest.js';
import type { AcceptedCapsule } from '../capsule/verify.js';
import type { ChangeTarget } from '../config/config.js';
import type { RemediationEvidence, ReproductionRef, Verdict } from '../evidence/statement.js';
import { changeDigestOf, changeSpecDigest, policyDigest } from '../policy/change-digest.js';
import { deriveFootprint } from '../policy/surfaces.js';
import { deriveTier } from '../policy/tier.js';
import type { Footprint, Tier } from '../policy/types.js';
import type { RemediationPolicy } from '../trust/trust.js';
import type { RunnerContext } from '../agent/runner.js';
import { readPlanned, writePlan } from './files.js';
import { planChange, type FilePlan } from './patch.js';
import { copyTree, readTree } from './tree.js';
import { ChangeError } from './errors.js';
import { RemediationError } from './machine-errors.js';

/** The target's caps, defaults applied (runner configuration `targets.NAME`). */
export interface TargetCaps {
  maxBytes: number;
  maxEntries: number;
}

export const DEFAULT_TARGET_MAX_BYTES = 256 * 1024 * 1024; // bytes
export const DEFAULT_TARGET_MAX_ENTRIES = 100_000;
export const DEFAULT_HEALTH_CHECK_TIMEOUT_SECONDS = 60;

/** The most files a change may touch, and the longest path it may name: what the evidence's footprint carries. */
export const FOOTPRINT_MAX_FILES = 4096;
export const FOOTPRINT_MAX_PATH_CHARS = 1024;

export function capsOf(target: ChangeTarget): TargetCaps {
  return { maxBytes: target.maxBytes ?? DEFAULT_TARGET_MAX_BYTES, maxEntries: target.maxEntries ?? DEFAULT_TARGET_MAX_ENTRIES };
}

/** A plan as kept with the change: every after-file's bytes are in the blob store by their sha256. */
export type KeptPlan = Array<Omit<FilePlan, 'after'> & { after?: { sha256: string; mode: number } }>;

/** What the proposal checks found before the nonce burnt; the staging in the workspace completes it. */
export interface Prepared {
  target: string;
  config: ChangeTarget;
  caps: TargetCaps;
  preState: string;
  plan: FilePlan[];
  footprint: Footprint;
  tier: Tier;
  policy: string;
  changeSpec: string;
  reproductions: ReproductionRef[];
  /** The capsule file's digest: it is kept in the blob store for apply. */
  fileDigest: string;
  /** The capsule's decision time (RFC 3339): it is verified again at this time when the change is applied. */
  acceptedAt: string;
}

/** A proposal staged in the workspace: the change digest the approvals will name. */
export interface Staged extends Prepared {
  changeDigest: string;
  postState: string;
  stagedPath: string;
}

/** What a change row keeps as its details: the proposal's evidence, the capsule's signers, the plan. */
export interface ChangeDetails {
  evidence: RemediationEvidence;
  signers: string[];
  plan: KeptPlan;
}

export function remediationPolicyOf(ctx: RunnerContext): RemediationPolicy {
  const policy = ctx.state.trust.body.policy.remediation;
  // verifyCapsule refuses a remediate capsule under a policy without remediation (CAPSULE_POLICY).
  if (policy === undefined) throw new Error('remediation policy missing after acceptance');
  return policy;
}

/**
 * Before the nonce burns: every check of a proposal that needs no workspace. Throws CapsuleError
 * (CAPSULE_TARGET_UNDECLARED), ChangeError (the change does not apply to the target as it is) or
 * RemediationError (CHANGE_REPRODUCTION_UNKNOWN).
 */
export function prepareProposal(ctx: RunnerContext, accepted: AcceptedCapsule, fileDigest: string, decisionTime: Date): Prepared {
  const { manifest, manifestDigest } = accepted;
  const change = manifest.change!;
  const context = { capsuleId: manifest.id, manifestDigest };
  const config = ctx.config.targets[change.target];
  if (config === undefined) {
    throw new CapsuleError(
      'CAPSULE_TARGET_UNDECLARED',
      `The change target "${change.target}" is not one this runner's configuration declares.`,
      context,
    );
  }
  const caps = capsOf(config);
  const policy = remediationPolicyOf(ctx);
  const pre = readTree(config.path, caps);
  const plan = planChange(change, accepted.inputs, (path) => readPlanned(config.path, path));
  // Refused here, before the nonce burns: the proposal's evidence could not carry the footprint.
  if (plan.length > FOOTPRINT_MAX_FILES || plan.some((file) => file.path.length > FOOTPRINT_MAX_PATH_CHARS)) {
    throw new RemediationError(
      'CHANGE_FOOTPRINT_TOO_LARGE',
      `The change touches ${plan.length} files (at most ${FOOTPRINT_MAX_FILES}, paths of at most ${FOOTPRINT_MAX_PATH_CHARS} characters); split it.`,
      context,
    );
  }
  const footprint = deriveFootprint(
    plan.map(({ path, action, linesAdded, linesRemoved }) => ({ path, action, linesAdded, linesRemoved })),
    policy,
  );
  const tier = deriveTier(footprint, policy, change.declaredTier);
  return {
    target: change.target,
    config,
    caps,
    preState: pre.digest,
    plan,
    footprint,
    tier,
    policy: policyDigest(ctx.state.trust.body.policy),
    changeSpec: changeSpecDigest(manifest),
    reproductions: reproductionsOf(ctx, manifest, context),
    fileDigest,
    acceptedAt: decisionTime.toISOString(),
  };
}

/** The cited reproductions as this runner's log has them: each the evidence of one of its own runs. */
function reproductionsOf(ctx: RunnerContext, manifest: Manifest, context: Record<string, string>): ReproductionRef[] {
  return (manifest.change!.reproductions ?? []).map((evidence) => {
    const run = ctx.store.runOfEvidence(evidence);
    if (run === undefined || run.verdict === null) {
      throw new RemediationError(
        'CHANGE_REPRODUCTION_UNKNOWN',
        `The cited reproduction ${evidence} is not the evidence of a run on this runner.`,
        context,
      );
    }
    return { evidence, capsule: run.capsuleId, verdict: run.verdict as Verdict, runId: run.runId };
  });
}

/**
 * In the workspace, before any step: the copy, its digest equal to the pre-state (else CHANGE_STALE: the
 * target changed since the checks), the change written to the copy, the post-state, `change.staged`.
 */
export function stageProposal(ctx: RunnerContext, prepared: Prepared, accepted: AcceptedCapsule, workspace: string, runId: string): Staged {
  const stagedPath = join(workspace, STAGED_TARGET_DIR);
  const copied = copyTree(prepared.config.path, stagedPath, prepared.caps);
  if (copied.digest !== prepared.preState) {
    throw new RemediationError('CHANGE_STALE', 'The change target changed while the proposal was being staged; nothing ran.', { runId });
  }
  const plan = planChange(accepted.manifest.change!, accepted.inputs, (path) => readPlanned(stagedPath, path));
  writePlan(stagedPath, plan);
  const postState = readTree(stagedPath, prepared.caps).digest;
  // An apply that changes nothing is not a success: never proposed (planChange refuses it first; this holds
  // whatever the plan said, by the digests themselves).
  if (postState === prepared.preState) throw new ChangeError('CHANGE_EMPTY', 'The staged change leaves the target as it was.', {});
  const changeDigest = changeDigestOf({
    target: prepared.target,
    preState: prepared.preState,
    postState,
    capsule: accepted.manifestDigest,
    change: prepared.changeSpec,
    policy: prepared.policy,
  });
  ctx.store.appendRecord('change.staged', { runId, changeDigest, target: prepared.target, preState: prepared.preState, postState }, runId);
  return { ...prepared, plan, changeDigest, postState, stagedPath };
}

/** The proposal's remediation member (phase `proposed`). */
export function proposalEvidenceOf(staged: Staged): RemediationEvidence {
  return {
    phase: 'proposed',
    target: staged.target,
    change: staged.changeDigest,
    preState: staged.preState,
    postState: staged.postState,
    policy: staged.policy,
    footprint: staged.footprint,
    tier: staged.tier,
    ...(staged.reproductions.length > 0 ? { reproductions: staged.reproductions } : {}),
  };
}

/** The plan as the change row keeps it: after-bytes go to the blob store. */
export function keepPlan(ctx: RunnerContext, plan: readonly FilePlan[]): KeptPlan {
  return plan.map((file) => {
    const { after, ...rest } = file;
    if (after === undefined) return rest;
    ctx.state.blobs.put(after.bytes);
    return { ...rest, after: { sha256: after.sha256, mode: after.mode } };
  });
}
