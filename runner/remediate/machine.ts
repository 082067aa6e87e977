/**
 * The remediation state machine (issue 11, "Apply, verify, roll back"). A change's row (runner/store/changes.ts)
 * moves only with the record that says so, in one transaction, and always before the effect:
 *
 *   proposed --change.applying--> applying --change.applied--> applied --change.verifying--> verifying
 *       |                            |                                                          |
 *       |                            +--change.rolling-back (CHANGE_APPLY_MISMATCH, an error)    +--change.verified--> verified
 *       |                            +--change.refused (CHANGE_STALE, seen under the lock)       +--change.rolling-back (code)
 *       +--change.refused (stale, policy changed, veto, capsule unavailable, validation failed)        |
 *                                              rolling-back --change.rolled-back | change.rollback-failed
 *
 * `applying`, `applied`, `verifying` and `rolling-back` hold the target (one change per target: a unique
 * index) and name the process that holds it. When that process is gone, the next open of a runner context
 * resumes (resumeOnOpen, resumeChanges): `applying` -> verify if the target is at the post-state (every
 * file was written), else roll back (CHANGE_INTERRUPTED); `applied` -> verify; `verifying` -> roll back
 * (CHANGE_INTERRUPTED: a verification is only trusted whole, in one go); `rolling-back` -> restore again.
 * writePlan runs only after change.applying, and change.applying is written only from `proposed`: a
 * change is never applied twice. The final bundle (applied, rolled-back, or refused after it was
 * authorized) is sealed in the transaction of the last transition and carries the approvals counted.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256Hex } from '../core/digest.js';
import { isCodedError } from '../core/errors.js';
import { CAPSULE_MAX_BYTES } from '../capsule/capsule-file.js';
import { CapsuleError } from '../capsule/errors.js';
import { STAGED_TARGET_DIR } from '../capsule/manifest.js';
import { verifyCapsule, type AcceptedCapsule } from '../capsule/verify.js';
import type { Envelope } from '../core/dsse.js';
import { buildBundle, formatBundle, signEvidence, type Bundle } from '../evidence/bundle.js';
import { guardBundle, type RemediationEgress } from '../evidence/egress.js';
import {
  buildStatement,
  type ArtifactRecord,
  type HealthCheckRecord,
  type RemediationEvidence,
  type ReproductionRef,
  type StepRecord,
  type Verdict,
} from '../evidence/statement.js';
import { createWorkspace, removeTree, writeInputs } from '../exec/workspace.js';
import { verifyApproval, type VerifiedApproval } from '../policy/approval.js';
import { policyDigest } from '../policy/change-digest.js';
import { countApprovals, type ApprovalCount } from '../policy/count.js';
import type { Requirement } from '../policy/types.js';
import { writeFileAtomic } from '../state/files.js';
import { currentProcess, isProcessAlive } from '../state/process.js';
import { ACTIVE_CHANGE_STATES, type ChangeRow, type ChangeState } from '../store/changes.js';
import { StoreError } from '../store/errors.js';
import { UNCLASSIFIED_SURFACE } from '../trust/trust.js';
import { RUNNER_VERSION } from '../version.js';
import type { Launcher } from '../agent/launcher.js';
import { sealedLogFor } from '../agent/log.js';
import { removeRunFolder, type RunnerContext } from '../agent/runner.js';
import {
  admitAccepted,
  bindResources,
  endRun,
  executeSteps,
  freeBytesOf,
  runAccepted,
  sandboxOf,
  type BoundResources,
} from '../agent/run-capsule.js';
import { restorePlan, snapshotPlan, writePlan } from './files.js';
import type { FilePlan } from './patch.js';
import { copyTree, readTree } from './tree.js';
import { runHealthCheck } from './health.js';
import { RemediationError, type RemediationErrorCode } from './machine-errors.js';
import { capsOf, DEFAULT_HEALTH_CHECK_TIMEOUT_SECONDS, keepPlan, proposalEvidenceOf, type ChangeDetails, type Staged } from './propose.js';

/** What became of a change, as far as this call took it. */
export interface ChangeOutcome {
  changeDigest: string;
  state: ChangeState;
  /** Why it was refused or rolled back. */
  code?: string;
  /** The approvals the tier requires, and those counted at the last decision. */
  required: number;
  counted?: number;
  /** Requirements still unmet (proposed, waiting). */
  missing?: Requirement[];
  /** Another change holds the target: this one waits (decided again at the next approval or resume). */
  busy?: boolean;
  /** The final bundle's evidence digest and file, when one was sealed. */
  finalEvidence?: string;
  bundlePath?: string;
}

/** The egress provenance of a remediation member: the plan's paths, the policy's names, the trust's key names. */
export function remediationEgressOf(ctx: RunnerContext, plan: ReadonlyArray<{ path: string }>): RemediationEgress {
  const policy = ctx.state.trust.body.policy.remediation;
  const policyNames = new Set<string>([UNCLASSIFIED_SURFACE]);
  for (const name of Object.keys(policy?.surfaces ?? {})) policyNames.add(name);
  for (const name of Object.keys(policy?.rules ?? {})) policyNames.add(name);
  for (const name of Object.keys(policy?.groups ?? {})) policyNames.add(name);
  for (const [name, deps] of Object.entries(policy?.dependsOn ?? {})) [name, ...deps].forEach((n) => policyNames.add(n));
  const approvers = new Set(Object.values(ctx.state.trust.body.keys).map((key) => key.name));
  return { paths: new Set(plan.map((file) => file.path)), policyNames, approvers };
}

/**
 * In the proposal bundle's transaction (runner/agent/run-capsule.ts): change.proposed and the change's row;
 * a proposal whose staged validation did not pass is refused at once (CHANGE_VALIDATION_FAILED): nobody can
 * approve it into the target.
 */
export function recordProposal(
  ctx: RunnerContext,
  staged: Staged,
  accepted: AcceptedCapsule,
  proposal: { runId: string; evidenceDigest: string; verdict: Verdict },
): ChangeOutcome {
  const { store } = ctx;
  const details: ChangeDetails = { evidence: proposalEvidenceOf(staged), signers: accepted.signers, plan: keepPlan(ctx, staged.plan) };
  store.proposeChange(
    {
      runId: proposal.runId,
      changeDigest: staged.changeDigest,
      evidenceDigest: proposal.evidenceDigest,
      verdict: proposal.verdict,
      required: staged.tier.approvals,
    },
    {
      changeDigest: staged.changeDigest,
      target: staged.target,
      capsuleId: accepted.manifest.id,
      manifestDigest: accepted.manifestDigest,
      fileDigest: staged.fileDigest,
      proposalRunId: proposal.runId,
      proposalEvidence: proposal.evidenceDigest,
      acceptedAt: staged.acceptedAt,
      preState: staged.preState,
      postState: staged.postState,
      policyDigest: staged.policy,
      verdict: proposal.verdict,
      required: staged.tier.approvals,
      details: JSON.stringify(details),
    },
  );
  const base = { changeDigest: staged.changeDigest, required: staged.tier.approvals };
  if (proposal.verdict !== 'pass') {
    store.moveChange('change.refused', { changeDigest: staged.changeDigest, code: 'CHANGE_VALIDATION_FAILED' }, 'proposed', 'refused', {
      code: 'CHANGE_VALIDATION_FAILED',
    });
    return { ...base, state: 'refused', code: 'CHANGE_VALIDATION_FAILED' };
  }
  return { ...base, state: 'proposed' };
}

// ---------------------------------------------------------------------------------------------------------
// What a change keeps, read back

export function detailsOf(row: ChangeRow): ChangeDetails {
  return JSON.parse(row.details) as ChangeDetails;
}

/** Where the bytes of every file the apply replaces or deletes are kept until the change is final. */
function snapshotDirOf(ctx: RunnerContext, row: ChangeRow): string {
  return join(ctx.state.layout.dir, 'changes', row.changeDigest.replace(/^sha256:/, ''));
}

/** A blob kept by this runner, when it is there, a plain file, and has its digest. */
function readKept(ctx: RunnerContext, digest: string, cap: number): Buffer | undefined {
  const ref = digest.startsWith('sha256:') ? digest : `sha256:${digest}`;
  const path = ctx.state.blobs.pathOf(ref);
  try {
    const stats = lstatSync(path);
    if (!stats.isFile() || stats.size > cap) return undefined;
    const bytes = readFileSync(path);
    return `sha256:${sha256Hex(bytes)}` === ref ? bytes : undefined;
  } catch {
    return undefined;
  }
}

/** The plan as kept, its after-bytes read back from the blob store (CHANGE_CAPSULE_UNAVAILABLE when one is gone). */
function planOf(ctx: RunnerContext, details: ChangeDetails): FilePlan[] {
  return details.plan.map((file) => {
    if (file.after === undefined) return { ...file, after: undefined } as FilePlan;
    const bytes = readKept(ctx, file.after.sha256, Number.MAX_SAFE_INTEGER);
    if (bytes === undefined)
      throw new RemediationError('CHANGE_CAPSULE_UNAVAILABLE', `The kept bytes of "${file.path}" are gone from the blob store.`);
    return { ...file, after: { ...file.after, bytes } };
  });
}

/** What the host lacks for now (the capsule's isolation, a grant): the change waits instead of being refused. */
const HOST_CODES = new Set(['CAPSULE_ISOLATION_UNAVAILABLE', 'CAPSULE_RESOURCE_UNGRANTED']);

/**
 * The proposal's capsule again: the kept file, verified under the pinned trust as at its acceptance, admitted.
 * Undefined when the file is gone or no longer verifies; `{ host }` when this host cannot run it now.
 */
function loadCapsule(ctx: RunnerContext, row: ChangeRow): Loaded | { host: string } | undefined {
  const cap = ctx.state.trust.body.policy.maxCapsuleBytes ?? CAPSULE_MAX_BYTES;
  const bytes = readKept(ctx, row.fileDigest, cap);
  if (bytes === undefined) return undefined;
  try {
    const accepted = verifyCapsule(bytes, {
      trust: ctx.state.trust,
      runner: { id: ctx.state.identity.id, labels: ctx.state.identity.labels },
      now: new Date(row.acceptedAt),
      hasSeen: () => false, // its nonce burnt at the proposal; this is that acceptance's change
    });
    if (accepted.manifestDigest !== row.manifestDigest) return undefined;
    return { accepted, launcher: admitAccepted(ctx, accepted) };
  } catch (err) {
    if (err instanceof CapsuleError) return HOST_CODES.has(err.code) ? { host: err.code } : undefined;
    throw err;
  }
}

/** A loaded capsule, or undefined (for a rollback, which needs none to restore files). */
function loadedOf(ctx: RunnerContext, row: ChangeRow): Loaded | undefined {
  const loaded = loadCapsule(ctx, row);
  return loaded === undefined || 'host' in loaded ? undefined : loaded;
}

/** The change's accepted approvals, verified again under the pinned trust (a key rotated out no longer counts). */
function approvalsOf(ctx: RunnerContext, row: ChangeRow): VerifiedApproval[] {
  const verified: VerifiedApproval[] = [];
  for (const approval of ctx.store.approvalsOf(row.changeDigest)) {
    if (approval.envelope === undefined) continue;
    try {
      verified.push(verifyApproval(JSON.parse(approval.envelope) as Envelope, ctx.state.trust));
    } catch {
      // no longer an approver's, under this trust: not counted
    }
  }
  return verified;
}

export function countFor(ctx: RunnerContext, row: ChangeRow, at: Date, extra: readonly VerifiedApproval[] = []): ApprovalCount {
  const details = detailsOf(row);
  const known = approvalsOf(ctx, row);
  const approvals = [...known, ...extra.filter((a) => !known.some((k) => k.digest === a.digest))];
  return countApprovals({
    approvals,
    changeDigest: row.changeDigest,
    proposal: row.proposalEvidence,
    // What the proposal named: an approval naming another runner, target or capsule is refused here as
    // offline verify refuses it, so the runner never applies on one and then signs a bundle verify refuses.
    proposed: { runner: ctx.state.identity.id, target: row.target, capsule: { id: row.capsuleId, digest: row.manifestDigest } },
    tier: details.evidence.tier,
    capsuleSigners: details.signers,
    trust: ctx.state.trust,
    decisionTime: at,
  });
}

const outcomeOf = (row: ChangeRow, extra: Partial<ChangeOutcome> = {}): ChangeOutcome => ({
  changeDigest: row.changeDigest,
  state: row.state,
  required: row.required,
  ...(row.code !== undefined ? { code: row.code } : {}),
  ...(row.finalEvidence !== undefined ? { finalEvidence: row.finalEvidence } : {}),
  ...extra,
});

// ---------------------------------------------------------------------------------------------------------
// Decide and apply

export interface DecideOptions {
  signal?: AbortSignal;
  stopping?: AbortSignal;
}

/**
 * Decides a proposed change now: refused for good (policy changed, a veto, the capsule unavailable, the
 * target stale), left waiting (approvals missing, the target held by another change), or applied, verified
 * and, on any failure, rolled back. Call it inside the agent's run lane; it resolves when the change is final
 * or waits.
 */
export async function decideChange(ctx: RunnerContext, changeDigest: string, options: DecideOptions = {}): Promise<ChangeOutcome> {
  const { store } = ctx;
  const row = store.change(changeDigest);
  if (row === undefined) throw new RemediationError('CHANGE_UNKNOWN', `No change ${changeDigest} was proposed on this runner.`);
  if (row.state !== 'proposed') return outcomeOf(row);
  const refuse = (code: RemediationErrorCode, counted: readonly VerifiedApproval[] = [], loaded?: Loaded) =>
    refuseChange(ctx, row, code, counted, loaded);

  const now = ctx.clock();
  // An expired pin decides nothing (as no capsule is accepted under it); the change waits for a new one.
  if (Date.parse(ctx.state.trust.body.expires) <= now.getTime()) {
    ctx.logger.warn({ changeDigest, expires: ctx.state.trust.body.expires }, 'change not decided: the pinned trust document expired');
    return outcomeOf(row);
  }
  if (policyDigest(ctx.state.trust.body.policy) !== row.policyDigest) return refuse('CHANGE_POLICY_CHANGED');
  const count = countFor(ctx, row, now);
  if (count.vetoes.length > 0) {
    // A veto is a signed answer: the final bundle (phase refused) carries the vetoes' envelopes, so the
    // coordinator and the approvers learn it, and verify checks each veto is an eligible person's.
    const vetoed = loadCapsule(ctx, row);
    const sealable = vetoed !== undefined && !('host' in vetoed) ? vetoed : undefined;
    return refuseChange(ctx, row, 'CHANGE_VETOED', count.counted, sealable, { vetoes: count.vetoes, decidedAt: now });
  }
  if (!count.satisfied) return outcomeOf(row, { counted: count.counted.length, missing: count.missing });
  const loaded = loadCapsule(ctx, row);
  if (loaded === undefined) return refuse('CHANGE_CAPSULE_UNAVAILABLE');
  if ('host' in loaded) return outcomeOf(row, { counted: count.counted.length, code: loaded.host });
  // As a run: no apply starts with the state's disk below its reserve (its records and bundle need the room).
  if (belowReserve(ctx)) return outcomeOf(row, { counted: count.counted.length, code: 'RUN_DISK_RESERVE' });
  if (store.changeHolding(row.target) !== undefined) return outcomeOf(row, { counted: count.counted.length, busy: true, code: 'CHANGE_TARGET_BUSY' });
  const config = ctx.config.targets[row.target];
  // A target the configuration no longer declares (or a changed folder) is not the one proposed on.
  if (config === undefined || !isAtState(config.path, capsOf(config), row.preState)) return refuse('CHANGE_STALE', count.counted, loaded);

  // The decision: change.applying, with the approvals counted at its own `at` (the decision time).
  let decided: ApprovalCount | undefined;
  try {
    store.transaction(() => {
      const record = store.moveChange('change.applying', { changeDigest, approvals: count.counted.map((a) => a.digest) }, 'proposed', 'applying', {
        approvals: count.counted.map((a) => a.digest),
        owner: currentProcess() ?? null,
      });
      decided = countFor(ctx, row, new Date(record.at));
      const same = decided.satisfied && decided.counted.map((a) => a.digest).join() === count.counted.map((a) => a.digest).join();
      if (!same) throw new DecisionMoved();
    });
  } catch (err) {
    if (err instanceof DecisionMoved) return outcomeOf(store.change(changeDigest)!, { counted: decided?.counted.length ?? 0 });
    // Another process took the target (the unique index) or the change between the checks and the record.
    if (err instanceof StoreError && err.code === 'STORE_WRITE_FAILED') {
      const moved = store.change(changeDigest)!;
      return outcomeOf(moved, moved.state === 'proposed' ? { busy: true, code: 'CHANGE_TARGET_BUSY' } : {});
    }
    throw err;
  }
  const outcome = await applyChange(ctx, store.change(changeDigest)!, loaded, count.counted, options);
  // Others that waited for the target (busy) are decided now: most are stale, which the log then says.
  for (const waiting of store.openChanges()) {
    if (waiting.state === 'proposed' && waiting.target === row.target && waiting.changeDigest !== changeDigest)
      await decideChange(ctx, waiting.changeDigest, options);
  }
  return outcome;
}

class DecisionMoved extends Error {}

function belowReserve(ctx: RunnerContext): boolean {
  try {
    return freeBytesOf(ctx.state.layout.dir) < ctx.config.store.reserveBytes;
  } catch {
    return true; // no answer is no room
  }
}

interface Loaded {
  accepted: AcceptedCapsule;
  launcher: Launcher;
}

function isAtState(path: string, caps: ReturnType<typeof capsOf>, digest: string): boolean {
  try {
    return readTree(path, caps).digest === digest;
  } catch (err) {
    if (isCodedError(err)) return false; // missing, unreadable, too large, unsupported: not the pre-state
    throw err;
  }
}

/** The target's digest now, or undefined when it cannot be read (missing, unreadable...). */
function digestNow(ctx: RunnerContext, row: ChangeRow): string | undefined {
  const config = ctx.config.targets[row.target];
  if (config === undefined) return undefined;
  try {
    return readTree(config.path, capsOf(config)).digest;
  } catch (err) {
    if (isCodedError(err)) return undefined;
    throw err;
  }
}

function refuseChange(
  ctx: RunnerContext,
  row: ChangeRow,
  code: RemediationErrorCode,
  counted: readonly VerifiedApproval[],
  loaded?: Loaded,
  decision: { vetoes?: readonly VerifiedApproval[]; decidedAt?: Date } = {},
): ChangeOutcome {
  const from: ChangeState = row.state;
  const vetoes = decision.vetoes ?? [];
  ctx.logger.warn({ changeDigest: row.changeDigest, code }, 'change refused');
  // A change refused once it was authorized (stale), or vetoed, gets a final bundle with the approvals it had.
  if (loaded !== undefined && (counted.length >= row.required || vetoes.length > 0)) {
    const final = sealFinal(ctx, row, loaded, {
      phase: 'refused',
      verdict: 'error',
      code,
      targetDigest: digestNow(ctx, row) ?? row.preState,
      counted,
      vetoes,
      ...(decision.decidedAt ? { decidedAt: decision.decidedAt } : {}),
      transition: (finalEvidence) =>
        ctx.store.moveChange('change.refused', { changeDigest: row.changeDigest, code }, from, 'refused', { code, finalEvidence, owner: null }),
    });
    return outcomeOf(ctx.store.change(row.changeDigest)!, final);
  }
  ctx.store.moveChange('change.refused', { changeDigest: row.changeDigest, code }, from, 'refused', { code, owner: null });
  return outcomeOf(ctx.store.change(row.changeDigest)!);
}

/**
 * From `applying` (recorded): the target checked again under the lock, its files kept, the change written,
 * the post-state checked, `change.applied`, then the verification.
 */
async function applyChange(
  ctx: RunnerContext,
  row: ChangeRow,
  loaded: Loaded,
  counted: readonly VerifiedApproval[],
  options: DecideOptions,
): Promise<ChangeOutcome> {
  const config = ctx.config.targets[row.target]!;
  const caps = capsOf(config);
  const ops = ctx.logger.child({ changeDigest: row.changeDigest, target: row.target });
  // Under the lock now: a target edited between the check and the record is refused, never written.
  if (!isAtState(config.path, caps, row.preState)) return refuseChange(ctx, row, 'CHANGE_STALE', counted, loaded);
  const plan = planOf(ctx, detailsOf(row));
  const snapshot = snapshotDirOf(ctx, row);
  try {
    mkdirSync(snapshot, { recursive: true, mode: 0o700 });
    snapshotPlan(config.path, plan, snapshot);
    writePlan(config.path, plan);
  } catch (err) {
    ops.warn({ code: isCodedError(err) ? err.code : 'RUN_INTERNAL' }, 'apply failed midway; rolling back');
    return rollBack(
      ctx,
      row,
      'applying',
      isCodedError(err) && /^[A-Z][A-Z0-9_]{0,63}$/.test(err.code) ? err.code : 'CHANGE_APPLY_MISMATCH',
      loaded,
      counted,
    );
  }
  const after = digestNow(ctx, row);
  if (after !== row.postState) return rollBack(ctx, row, 'applying', 'CHANGE_APPLY_MISMATCH', loaded, counted);
  ctx.store.moveChange('change.applied', { changeDigest: row.changeDigest, targetDigest: after }, 'applying', 'applied');
  ops.info({}, 'change applied');
  return verifyChange(ctx, ctx.store.change(row.changeDigest)!, loaded, counted, options);
}

/**
 * From `applied`: a run of the capsule's steps against a fresh copy of the applied target, the cited
 * reproductions run again (each must now pass), the operator's health check. All pass: `change.verified`
 * and the final bundle; else the change is rolled back with the first failure's code.
 */
async function verifyChange(
  ctx: RunnerContext,
  row: ChangeRow,
  loaded: Loaded,
  counted: readonly VerifiedApproval[],
  options: DecideOptions,
): Promise<ChangeOutcome> {
  const { store } = ctx;
  const { accepted, launcher } = loaded;
  const config = ctx.config.targets[row.target]!;
  const runId = randomUUID();
  const startedAt = ctx.clock();
  const ops = ctx.logger.child({ changeDigest: row.changeDigest, runId });
  store.transaction(() => {
    store.startRun({ runId, capsuleId: accepted.manifest.id, manifestDigest: accepted.manifestDigest, isolation: launcher.isolation });
    store.moveChange('change.verifying', { changeDigest: row.changeDigest, runId }, 'applied', 'verifying', {
      verifyRunId: runId,
      owner: currentProcess() ?? null,
    });
  });
  const runDir = join(ctx.state.layout.runs, runId);
  let resources: BoundResources | undefined;
  let steps: StepRecord[] = [];
  let artifacts: ArtifactRecord[] = [];
  let verdict: Verdict = 'error';
  let failure: string | undefined;
  let healthCheck: HealthCheckRecord | undefined;
  const reproductions: ReproductionRef[] = [];
  try {
    const workspace = createWorkspace(runDir);
    writeInputs(workspace, accepted.manifest.inputs, accepted.inputs);
    const copy = copyTree(config.path, join(workspace, STAGED_TARGET_DIR), capsOf(config));
    if (copy.digest !== row.postState) failure = 'CHANGE_APPLY_MISMATCH';
    launcher.prepare(workspace);
    resources = await bindResources(ctx, accepted);
    const executed = await executeSteps(ctx, accepted, launcher, {
      runId,
      workspace,
      ops,
      signal: options.signal,
      stopping: options.stopping,
      resources,
      extraEnv: { EDGE_RUNNER_TARGET: join(workspace, STAGED_TARGET_DIR) },
    });
    steps = executed.steps;
    artifacts = executed.artifacts;
    verdict = executed.verdict;
    if (failure === undefined && verdict !== 'pass') failure = 'CHANGE_VERIFY_FAILED';
    await resources.close();
    resources = undefined;
    if (failure === undefined) {
      for (const ref of detailsOf(row).evidence.reproductions ?? []) {
        const again = await rerunReproduction(ctx, ref, options);
        reproductions.push(again);
        if (again.verdict !== 'pass') failure ??= 'CHANGE_REPRODUCTION_FAILED';
      }
    }
    if (failure === undefined && config.healthCheck !== undefined) {
      healthCheck = await runHealthCheck(config.healthCheck, config.path, config.healthCheckTimeoutSeconds ?? DEFAULT_HEALTH_CHECK_TIMEOUT_SECONDS);
      if (healthCheck.status !== 'succeeded') failure = 'CHANGE_HEALTH_CHECK_FAILED';
    }
    // The copy was checked at its start; the steps, reproductions and health check took time in which a
    // local user may have edited the real target. The bundle signs targetDigest = postState: read it again.
    if (failure === undefined && digestNow(ctx, row) !== row.postState) failure = 'CHANGE_APPLY_MISMATCH';
  } catch (err) {
    ops.warn({ code: isCodedError(err) ? err.code : 'RUN_INTERNAL' }, 'verification stopped midway; rolling back');
    failure = 'CHANGE_INTERRUPTED';
    endRun(store, runId, isCodedError(err) && /^[A-Z][A-Z0-9_]{0,63}$/.test(err.code) ? err.code : 'RUN_INTERNAL');
  } finally {
    await resources?.close();
    if (!ctx.config.exec.keepWorkspace) removeRunFolder(store, runId, runDir, ops);
  }
  const run = { runId, startedAt, steps, artifacts, healthCheck, reproductions };
  if (failure === undefined) {
    const final = sealFinal(ctx, row, loaded, {
      phase: 'applied',
      verdict: 'pass',
      targetDigest: row.postState,
      counted,
      run,
      transition: (finalEvidence) =>
        store.moveChange('change.verified', { changeDigest: row.changeDigest, runId }, 'verifying', 'verified', { finalEvidence, owner: null }),
    });
    ops.info({}, 'change verified');
    return outcomeOf(store.change(row.changeDigest)!, final);
  }
  return rollBack(ctx, row, 'verifying', failure, loaded, counted, run);
}

/** A cited reproduction's capsule run again (its kept file, verified as at its first run), as a run of its own. */
async function rerunReproduction(ctx: RunnerContext, ref: ReproductionRef, options: DecideOptions): Promise<ReproductionRef> {
  const unavailable: ReproductionRef = { evidence: ref.evidence, capsule: ref.capsule, verdict: 'error' };
  const first = ref.runId === undefined ? undefined : ctx.store.run(ref.runId);
  const fileDigest = first === undefined ? undefined : ctx.store.acceptedFileOf(first.manifestDigest);
  const bytes = fileDigest === undefined ? undefined : readKept(ctx, fileDigest, ctx.state.trust.body.policy.maxCapsuleBytes ?? CAPSULE_MAX_BYTES);
  if (first === undefined || bytes === undefined) return unavailable;
  let accepted: AcceptedCapsule;
  let launcher: Launcher;
  try {
    accepted = verifyCapsule(bytes, {
      trust: ctx.state.trust,
      runner: { id: ctx.state.identity.id, labels: ctx.state.identity.labels },
      now: new Date(first.startedAt),
      hasSeen: () => false,
    });
    launcher = admitAccepted(ctx, accepted);
  } catch (err) {
    if (err instanceof CapsuleError) return unavailable;
    throw err;
  }
  const outcome = await runAccepted(ctx, accepted, launcher, {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.stopping ? { stopping: options.stopping } : {}),
  });
  return { evidence: outcome.evidenceDigest, capsule: outcome.capsuleId, verdict: outcome.verdict, runId: outcome.runId };
}

interface FinalRun {
  runId: string;
  startedAt: Date;
  steps: StepRecord[];
  /** What the post-apply validation collected (its test results), as its steps are. */
  artifacts: ArtifactRecord[];
  healthCheck?: HealthCheckRecord | undefined;
  reproductions?: ReproductionRef[];
}

/**
 * Back to the pre-state: `change.rolling-back` (from `from`) before any file is restored, every planned
 * path put back, the digest checked: `change.rolled-back` (equal to the pre-state) or
 * `change.rollback-failed` (an alarm), with the final bundle. A restore that throws leaves the change
 * rolling back only when the process dies in it (the next open restores again); a restore that fails
 * (CHANGE_RESTORE_FAILED, a full disk) ends rollback-failed unless the digest is the pre-state after all.
 */
function rollBack(
  ctx: RunnerContext,
  row: ChangeRow,
  from: 'applying' | 'verifying' | 'rolling-back',
  code: string,
  loaded: Loaded | undefined,
  counted: readonly VerifiedApproval[],
  run?: FinalRun,
): ChangeOutcome {
  const { store } = ctx;
  const config = ctx.config.targets[row.target];
  if (from !== 'rolling-back') {
    store.moveChange('change.rolling-back', { changeDigest: row.changeDigest, code }, from, 'rolling-back', {
      code,
      owner: currentProcess() ?? null,
    });
  }
  ctx.logger.warn({ changeDigest: row.changeDigest, code }, 'rolling back');
  if (config === undefined)
    throw new RemediationError('CHANGE_STALE', `The change target "${row.target}" is no longer declared; the rollback waits for it.`);
  try {
    restorePlan(config.path, planOf(ctx, detailsOf(row)), snapshotDirOf(ctx, row));
  } catch (err) {
    // A restore that cannot finish (a folder standing where a planned file was, a full disk) ends in the
    // alarm below unless the target is at its pre-state after all: never silent. A planned file someone
    // else edited meanwhile is put back to its before-bytes (the pre-state is the promise); other files are
    // never touched, so their edits leave the target off its pre-state (rollback-failed).
    if (!isCodedError(err)) throw err;
    ctx.logger.error({ changeDigest: row.changeDigest, code: err.code }, 'restore failed');
  }
  const now = digestNow(ctx, row);
  const restored = now === row.preState;
  const kind = restored ? 'change.rolled-back' : 'change.rollback-failed';
  const to: ChangeState = restored ? 'rolled-back' : 'rollback-failed';
  const targetDigest = now ?? `sha256:${'0'.repeat(64)}`;
  const transition = (finalEvidence?: string) =>
    store.moveChange(kind, { changeDigest: row.changeDigest, code, targetDigest }, 'rolling-back', to, {
      owner: null,
      ...(finalEvidence ? { finalEvidence } : {}),
    });
  if (!restored) ctx.logger.error({ changeDigest: row.changeDigest, code, targetDigest }, 'rollback failed: the target is not at its pre-state');
  if (loaded === undefined) {
    transition();
    return outcomeOf(store.change(row.changeDigest)!);
  }
  const final = sealFinal(ctx, row, loaded, {
    phase: 'rolled-back',
    verdict: 'fail',
    code,
    targetDigest,
    counted,
    ...(run ? { run } : {}),
    transition,
  });
  return outcomeOf(store.change(row.changeDigest)!, final);
}

interface FinalOptions {
  phase: 'applied' | 'rolled-back' | 'refused';
  verdict: Verdict;
  code?: string;
  targetDigest: string;
  counted: readonly VerifiedApproval[];
  /** A refusal's vetoes: carried after the counted approvals in `bundle.approvals`, as verify counts them. */
  vetoes?: readonly VerifiedApproval[];
  /** The time the approvals were counted at, when it is not a recorded change.applying's. */
  decidedAt?: Date;
  /** The verification run, when it got that far; otherwise a run of its own carries the bundle. */
  run?: FinalRun;
  /** The last transition, in the bundle's transaction, given the final evidence digest. */
  transition: (finalEvidence: string) => void;
}

/**
 * The final bundle: the proposal's remediation member with the decision (the `change.applying` or
 * `change.refused` time, the approvals counted, their envelopes in `bundle.approvals`) and the outcome, sealed
 * with the last transition in one transaction.
 */
function sealFinal(ctx: RunnerContext, row: ChangeRow, loaded: Loaded, final: FinalOptions): { finalEvidence: string; bundlePath: string } {
  const { state, store } = ctx;
  const { accepted, launcher } = loaded;
  const { manifest } = accepted;
  const details = detailsOf(row);
  const running = final.run !== undefined && store.run(final.run.runId)?.status === 'running';
  const runId = running ? final.run!.runId : randomUUID();
  const startedAt = running ? final.run!.startedAt : ctx.clock();
  const steps = running ? final.run!.steps : [];
  const artifacts = running ? final.run!.artifacts : [];
  const autonomous = row.required === 0;
  // The decision time: change.applying's `at` (or, for a refusal, the time of this sealing, which its record shares).
  const decidedAt = final.decidedAt?.toISOString() ?? store.change(row.changeDigest)?.decidedAt ?? ctx.clock().toISOString();
  const outcome: NonNullable<RemediationEvidence['outcome']> = {
    ...(final.code !== undefined ? { code: final.code } : {}),
    targetDigest: final.targetDigest,
    ...(final.run?.healthCheck ? { healthCheck: final.run.healthCheck } : {}),
    ...(final.run?.reproductions && final.run.reproductions.length > 0 ? { reproductions: final.run.reproductions } : {}),
  };
  const remediation: RemediationEvidence = {
    ...details.evidence,
    phase: final.phase,
    proposal: row.proposalEvidence,
    decidedAt,
    approvals: { counted: final.counted.map((a) => ({ digest: a.digest, approver: a.approver })), autonomous },
    outcome,
  };
  const runner = { id: state.identity.id, keyid: state.key.keyid };
  const statement = buildStatement({
    runner: { ...runner, version: RUNNER_VERSION },
    capsule: { id: manifest.id, kind: manifest.kind, digest: accepted.manifestDigest, signers: accepted.signers },
    run: {
      id: runId,
      startedAt: startedAt.toISOString(),
      endedAt: ctx.clock().toISOString(),
      isolation: launcher.isolation,
      ...(launcher.sandbox ? { sandbox: sandboxOf(launcher, []) } : {}),
      verdict: final.verdict,
    },
    steps,
    artifacts,
    policy: { decision: 'allowed', rule: autonomous ? 'autonomous-change' : 'approved-change', trustVersion: state.trust.body.version },
    remediation,
  });
  const evidence = signEvidence(statement, { manifest, runner, remediation: remediationEgressOf(ctx, details.plan) }, state.key);
  let bundleText = '';
  store.transaction(() => {
    final.transition(evidence.digest);
    if (!running) store.startRun({ runId, capsuleId: manifest.id, manifestDigest: accepted.manifestDigest, isolation: launcher.isolation });
    store.finishRun({ runId, verdict: final.verdict });
    store.recordEvidence({ runId, evidenceDigest: evidence.digest }, (record) => {
      const sealed = sealedLogFor(store, { runnerId: state.identity.id, key: state.key }, record.seq, record.leaf);
      const bundle: Bundle = {
        ...buildBundle(evidence.envelope, accepted.envelope, sealed.log),
        approvals: [...final.counted, ...(final.vetoes ?? [])].map((a) => a.envelope),
      };
      guardBundle(bundle);
      bundleText = formatBundle(bundle);
      return { bundle: Buffer.from(bundleText, 'utf8'), checkpoint: sealed.checkpoint };
    });
  });
  const bundlePath = join(state.layout.bundles, `${runId}.bundle.json`);
  writeFileAtomic(bundlePath, bundleText);
  // The kept before-bytes served the rollback; a change that ended (other than a failed rollback, which an
  // operator may need them for) no longer needs them.
  const ended = store.change(row.changeDigest)?.state;
  if (ended === 'verified' || ended === 'rolled-back' || ended === 'refused') forgetSnapshot(ctx, row);
  return { finalEvidence: evidence.digest, bundlePath };
}

/** Removes a final change's kept before-bytes; best effort (a leftover is only disk, never evidence). */
function forgetSnapshot(ctx: RunnerContext, row: ChangeRow): void {
  try {
    const dir = snapshotDirOf(ctx, row);
    if (existsSync(dir)) removeTree(dir);
  } catch (err) {
    ctx.logger.warn({ changeDigest: row.changeDigest, code: isCodedError(err) ? err.code : 'RUN_INTERNAL' }, 'kept change files not removed');
  }
}

// ---------------------------------------------------------------------------------------------------------
// Resume

function heldByTheLiving(row: ChangeRow, isAlive: (owner: NonNullable<ChangeRow['owner']>) => boolean): boolean {
  return row.owner !== undefined && isAlive(row.owner);
}

/**
 * At every open of a runner context (runner/agent/runner.ts), synchronously: each change a dead process
 * held is taken on. `applying`: at the post-state, every file was written (change.applied; resumeChanges
 * verifies it); otherwise rolled back (CHANGE_INTERRUPTED). `verifying`: rolled back (CHANGE_INTERRUPTED).
 * `rolling-back`: restored again. Never written forward again: writePlan ran once, after change.applying.
 */
export function resumeOnOpen(ctx: RunnerContext, isAlive: (owner: NonNullable<ChangeRow['owner']>) => boolean = isProcessAlive): ChangeOutcome[] {
  const outcomes: ChangeOutcome[] = [];
  for (const row of ctx.store.openChanges()) {
    if (!ACTIVE_CHANGE_STATES.includes(row.state) || heldByTheLiving(row, isAlive)) continue;
    ctx.logger.warn({ changeDigest: row.changeDigest, state: row.state }, 'change of a runner that died taken on');
    try {
      const loaded = loadedOf(ctx, row);
      const counted = countedOf(ctx, row);
      if (row.state === 'applying') {
        const now = digestNow(ctx, row);
        if (now === row.postState) {
          // Held by nobody: resumeChanges verifies it, in this process or the next that opens (change.verifying is taken once).
          ctx.store.moveChange('change.applied', { changeDigest: row.changeDigest, targetDigest: now }, 'applying', 'applied', { owner: null });
          outcomes.push(outcomeOf(ctx.store.change(row.changeDigest)!));
        } else outcomes.push(rollBack(ctx, row, 'applying', 'CHANGE_INTERRUPTED', loaded, counted));
      } else if (row.state === 'verifying') outcomes.push(rollBack(ctx, row, 'verifying', 'CHANGE_INTERRUPTED', loaded, counted));
      else if (row.state === 'rolling-back') outcomes.push(rollBack(ctx, row, 'rolling-back', row.code ?? 'CHANGE_INTERRUPTED', loaded, counted));
    } catch (err) {
      // Another opener took it on first (the row moved), or the restore itself failed: the next open tries again.
      ctx.logger.error({ changeDigest: row.changeDigest, code: isCodedError(err) ? err.code : 'RUN_INTERNAL' }, 'change not resumed');
    }
  }
  return outcomes;
}

/** The approvals change.applying relied on, verified again (the final bundle carries them). */
function countedOf(ctx: RunnerContext, row: ChangeRow): VerifiedApproval[] {
  const digests = new Set(row.approvals ?? []);
  return approvalsOf(ctx, row).filter((a) => digests.has(a.digest));
}

/**
 * After the open: changes applied by a dead process are verified, and proposed ones decided (an approval
 * that came while the target was held, or auto-apply cut short). Run it in the agent's run lane.
 */
export async function resumeChanges(ctx: RunnerContext, options: DecideOptions = {}): Promise<ChangeOutcome[]> {
  const self = currentProcess();
  const isSelf = (owner: NonNullable<ChangeRow['owner']>) => self !== undefined && owner.pid === self.pid && owner.start === self.start;
  const mine = (row: ChangeRow) => row.owner !== undefined && isSelf(row.owner);
  // Every decision of this process runs in the run lane, as this does: a change this process still holds
  // is one whose decision threw midway (its final bundle not sealed: a full disk), taken on as a dead one's,
  // or a long-lived agent left it verifying (the target at its post-state, unverified) until a restart.
  const outcomes = resumeOnOpen(ctx, (owner) => !isSelf(owner) && isProcessAlive(owner));
  for (const row of ctx.store.openChanges()) {
    if (row.state === 'applied' && (mine(row) || !heldByTheLiving(row, isProcessAlive))) {
      const loaded = loadedOf(ctx, row);
      const counted = countedOf(ctx, row);
      if (loaded === undefined) {
        ctx.store.moveChange(
          'change.rolling-back',
          { changeDigest: row.changeDigest, code: 'CHANGE_CAPSULE_UNAVAILABLE' },
          'applied',
          'rolling-back',
          {
            code: 'CHANGE_CAPSULE_UNAVAILABLE',
            owner: currentProcess() ?? null,
          },
        );
        outcomes.push(rollBack(ctx, ctx.store.change(row.changeDigest)!, 'rolling-back', 'CHANGE_CAPSULE_UNAVAILABLE', undefined, counted));
      } else {
        try {
          outcomes.push(await verifyChange(ctx, row, loaded, counted, options));
        } catch (err) {
          // Another process took it on between the read and change.verifying: it is that one's now.
          if (!(err instanceof StoreError && err.code === 'STORE_WRITE_FAILED')) throw err;
        }
      }
    } else if (row.state === 'proposed' && ctx.store.changeHolding(row.target) === undefined) {
      const decided = await decideChange(ctx, row.changeDigest, options);
      if (decided.state !== 'proposed') outcomes.push(decided);
    }
  }
  return outcomes;
}
