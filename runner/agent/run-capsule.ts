/**
 * One capsule through the runner: verify -> record -> execute -> evidence -> record -> bundle. Every decision
 * is a record written before its effect; if a record cannot be written the runner stops (STORE_WRITE_FAILED).
 * Works on a RunnerContext (runner.ts), so a daemon holding one store runs capsule after capsule through it.
 */
import { randomUUID } from 'node:crypto';
import { statfsSync } from 'node:fs';
import { join } from 'node:path';
import { sha256Hex } from '../core/digest.js';
import { isCodedError } from '../core/errors.js';
import { CapsuleError, type CapsuleErrorCode } from '../capsule/errors.js';
import { DEFAULT_CLOCK_SKEW_MS, verifyCapsule, type AcceptedCapsule } from '../capsule/verify.js';
import { buildBundle, formatBundle, signEvidence, type Bundle } from '../evidence/bundle.js';
import { guardBundle } from '../evidence/egress.js';
import { buildStatement, decideVerdict, type IsolationUsed, type StepRecord, type Verdict } from '../evidence/statement.js';
import { collectArtifacts } from '../exec/collect.js';
import { buildStepEnv } from '../exec/env.js';
import { ExecError } from '../exec/errors.js';
import { classifyLimitExit, isLoaderEnvName } from '../exec/sandbox.js';
import { runStep, type StepOutcome } from '../exec/step.js';
import { startForwarders, type Forwarders } from '../exec/forward.js';
import { needsUnixSockets, openResourceMounts, resolveGrants, toResourceEnv, type ResolvedGrant, type ResourceMount } from '../exec/resources.js';
import { SYSCALL_FILTER_UNIX } from '../exec/seccomp.js';
import { createWorkspace, writeInputs } from '../exec/workspace.js';
import { isDiskFull, writeFileAtomic } from '../state/files.js';
import { StateError } from '../state/errors.js';
import { StoreError } from '../store/errors.js';
import type { ScheduleRow } from '../store/store.js';
import { ScheduleError } from '../schedule/errors.js';
import { nextSlotAfter, parseSchedule } from '../schedule/slots.js';
import { catchUpOfTrust, recordDueAsMissed } from '../schedule/missed.js';
import { RUNNER_VERSION } from '../version.js';
import { ChangeError } from '../remediate/errors.js';
import { RemediationError } from '../remediate/machine-errors.js';
import { prepareProposal, proposalEvidenceOf, stageProposal, type Prepared, type Staged } from '../remediate/propose.js';
import { decideChange, recordProposal, remediationEgressOf, type ChangeOutcome } from '../remediate/machine.js';
import { RunError } from './errors.js';
import type { Launcher } from './launcher.js';
import { sealedLogFor } from './log.js';
import { removeRunFolder, type RunnerContext } from './runner.js';

export type CapsuleOutcome =
  /** `code`: CAPSULE_*, or a remediate capsule's change refused before its nonce burnt (CHANGE_*). */
  | {
      kind: 'rejected';
      code: CapsuleErrorCode | ChangeError['code'] | RemediationError['code'];
      message: string;
      capsuleId?: string;
      fileDigest?: string;
    }
  /**
   * A recurring capsule, accepted once and kept: nothing ran now; the agent's scheduler fires it at each
   * slot (runner/schedule/scheduler.ts). `replaced`: the manifest digests of the schedules it ended.
   */
  | { kind: 'scheduled'; capsuleId: string; manifestDigest: string; cron: string; timezone: string; firstSlot: string; replaced: string[] }
  | {
      kind: 'completed';
      runId: string;
      capsuleId: string;
      verdict: Verdict;
      isolation: IsolationUsed;
      steps: StepRecord[];
      bundle: Bundle;
      bundlePath: string;
      evidenceDigest: string;
      /** A remediate capsule's proposal: its change, and what became of it (auto-apply may have applied it). */
      change?: ChangeOutcome;
    };

export interface RunCapsuleOptions {
  /** The capsule file's size on disk, when `bytes` was read only up to just past the size cap. */
  size?: number;
  /**
   * Runs inside the transaction of the record that decides the capsule (its acceptance, or its rejection):
   * the agent moves its work feed's cursor there, so a capsule is decided and passed over together or not at
   * all. If it throws, the decision is not recorded either.
   */
  decided?: () => void;
  /** Aborts the running step (SIGTERM, then SIGKILL after exec.killGraceMs); the run ends run.aborted RUN_AGENT_STOPPED. */
  signal?: AbortSignal;
  /**
   * Once it fires, no further step starts: the running one may end by itself (the agent's stop grace), then
   * the run ends run.aborted RUN_AGENT_STOPPED. A run whose last step already ended completes as usual.
   */
  stopping?: AbortSignal;
}

/** Takes one capsule file's bytes through acceptance and, if accepted, through a run. */
export async function runCapsule(ctx: RunnerContext, bytes: Buffer, options: RunCapsuleOptions = {}): Promise<CapsuleOutcome> {
  const { state, store } = ctx;
  const decisionTime = ctx.clock();
  // A context lives long: the pinned trust document may expire while it is open.
  if (Date.parse(state.trust.body.expires) <= decisionTime.getTime()) {
    throw new StateError(
      'STATE_TRUST_INVALID',
      `The pinned trust document expired at ${state.trust.body.expires}; nothing is accepted until a new one is pinned.`,
      {
        trustCode: 'TRUST_EXPIRED',
      },
    );
  }
  const size = options.size ?? bytes.length;
  // A file read only up to the cap has no digest we could stand behind: its size is recorded instead.
  const fileDigest = size === bytes.length ? `sha256:${sha256Hex(bytes)}` : undefined;
  const decided = options.decided ?? (() => {});
  const reject = (
    err: CapsuleError | ChangeError | RemediationError,
    context: { capsuleId?: string; manifestDigest?: string } = {},
  ): CapsuleOutcome => {
    const details = err.details as Readonly<Record<string, unknown>>;
    const capsuleId = typeof details.capsuleId === 'string' ? details.capsuleId : context.capsuleId;
    const manifestDigest = typeof details.manifestDigest === 'string' ? details.manifestDigest : context.manifestDigest;
    store.transaction(() => {
      store.appendRecord('capsule.rejected', {
        code: err.code,
        ...(fileDigest ? { fileDigest } : { fileSize: size }),
        ...(capsuleId ? { capsuleId } : {}),
        ...(manifestDigest ? { manifestDigest } : {}),
      });
      decided();
    });
    // Ids, codes and digests only: the details may hold what the file said (an unsigned payloadType, a path).
    ctx.logger.warn({ code: err.code, fileDigest, capsuleId, manifestDigest }, 'capsule rejected');
    return { kind: 'rejected', code: err.code, message: err.message, ...(fileDigest ? { fileDigest } : {}), ...(capsuleId ? { capsuleId } : {}) };
  };

  let accepted: AcceptedCapsule | undefined;
  let launcher: Launcher;
  let prepared: Prepared | undefined;
  try {
    accepted = verifyCapsule(bytes, {
      trust: state.trust,
      runner: { id: state.identity.id, labels: state.identity.labels },
      now: decisionTime,
      hasSeen: (id, nonce) => store.hasSeen(id, nonce),
    });
    launcher = admitAccepted(ctx, accepted);
    // A remediate capsule's change is checked against the real target (read only) before its nonce burns.
    if (accepted.manifest.kind === 'remediate') prepared = prepareRemediation(ctx, accepted, fileDigest, size, decisionTime);
    // Before the nonce is burnt: a capsule refused for want of room can be sent again once there is room.
    refuseBelowReserve(ctx, accepted, fileDigest ? { fileDigest } : { fileSize: size }, decided);
    const { manifest, manifestDigest, signers } = accepted;
    const schedule = manifest.schedule ? scheduleOf(accepted!, decisionTime) : undefined;
    // The file is kept to run again at each slot; by digest, so keeping it twice is keeping it once. A file
    // read only up to the cap has no digest to keep it by (acceptance refuses it by size before this).
    if (schedule && !fileDigest) {
      throw new CapsuleError('CAPSULE_TOO_LARGE', `The recurring capsule file is ${size} bytes, more than was read of it.`, {
        capsuleId: manifest.id,
        manifestDigest,
      });
    }
    // A remediate capsule's file is kept too: its change is applied (and its steps run again) once approved;
    // and a reproduce capsule's, which a remediation may cite and run again after its apply (it must pass then).
    if (schedule || prepared || (manifest.kind === 'reproduce' && fileDigest)) ctx.state.blobs.put(bytes);
    let replaced: ScheduleRow[] = [];
    store.transaction(() => {
      replaced = supersededBy(ctx, accepted!);
      const record = store.acceptCapsule(manifest.nonce, {
        capsuleId: manifest.id,
        capsuleKind: manifest.kind,
        manifestDigest,
        ...(fileDigest ? { fileDigest } : {}),
        signers,
      });
      for (const old of replaced) {
        // Its due slots that will now never run are recorded missed before it ends (never silent).
        recordDueAsMissed(store, old, decisionTime, catchUpOfTrust(state.trust));
        store.endSchedule({ capsuleId: manifest.id, manifestDigest: old.manifestDigest, reason: 'replaced' });
      }
      if (schedule && fileDigest) {
        store.addSchedule({
          manifestDigest,
          capsuleId: manifest.id,
          acceptedSeq: record.seq,
          acceptedAt: record.at,
          issuedAt: manifest.issuedAt,
          fileDigest,
          cron: schedule.cron,
          timezone: schedule.timezone,
          expiresAt: manifest.expiresAt,
        });
      }
      decided();
    });
    if (schedule) {
      ctx.logger.info({ capsuleId: manifest.id, manifestDigest, ...schedule, replaced: replaced.length }, 'recurring capsule accepted');
      return { kind: 'scheduled', capsuleId: manifest.id, manifestDigest, ...schedule, replaced: replaced.map((row) => row.manifestDigest) };
    }
  } catch (err) {
    if (err instanceof CapsuleError) return reject(err);
    if ((err instanceof ChangeError || err instanceof RemediationError) && accepted) {
      return reject(err, { capsuleId: accepted.manifest.id, manifestDigest: accepted.manifestDigest });
    }
    if (err instanceof StoreError && err.code === 'STORE_REPLAY' && accepted) {
      return reject(new CapsuleError('CAPSULE_REPLAY', err.message, { capsuleId: accepted.manifest.id }, { cause: err }));
    }
    throw err;
  }
  const outcome = await runAccepted(ctx, accepted, launcher, { ...options, ...(prepared ? { remediation: prepared } : {}) });
  // Auto-apply: a change whose derived tier needs nobody, and whose staged validation passed, is decided now.
  if (outcome.change?.state === 'proposed' && outcome.change.required === 0) {
    const stop = { ...(options.signal ? { signal: options.signal } : {}), ...(options.stopping ? { stopping: options.stopping } : {}) };
    return { ...outcome, change: await decideChange(ctx, outcome.change.changeDigest, stop) };
  }
  return outcome;
}

/** The proposal checks before the nonce burns; a capsule file read only up to its cap has no digest to keep it by. */
function prepareRemediation(ctx: RunnerContext, accepted: AcceptedCapsule, fileDigest: string | undefined, size: number, now: Date): Prepared {
  if (fileDigest === undefined) {
    throw new CapsuleError('CAPSULE_TOO_LARGE', `The remediate capsule file is ${size} bytes, more than was read of it.`, {
      capsuleId: accepted.manifest.id,
      manifestDigest: accepted.manifestDigest,
    });
  }
  return prepareProposal(ctx, accepted, fileDigest, now);
}

/**
 * A recurring capsule's schedule, checked at acceptance (CAPSULE_SCHEDULE_INVALID): croner reads the cron
 * expression, the zone is one this runtime knows, and a slot comes before the capsule expires.
 */
function scheduleOf({ manifest, manifestDigest }: AcceptedCapsule, now: Date): { cron: string; timezone: string; firstSlot: string } {
  const cron = manifest.schedule!.cron;
  const timezone = manifest.schedule!.timezone ?? 'UTC';
  const context = { capsuleId: manifest.id, manifestDigest };
  // `issuedAt` orders replacements (supersededBy): one claimed in the future would make a schedule that no
  // capsule issued later, by the clock, could replace.
  if (Date.parse(manifest.issuedAt) > now.getTime() + DEFAULT_CLOCK_SKEW_MS) {
    throw new CapsuleError(
      'CAPSULE_NOT_YET_VALID',
      `The recurring capsule says it was issued at ${manifest.issuedAt}, which is still to come.`,
      context,
    );
  }
  let first: Date | undefined;
  try {
    parseSchedule({ cron, timezone });
    first = nextSlotAfter(cron, timezone, now);
  } catch (err) {
    if (err instanceof ScheduleError) throw new CapsuleError('CAPSULE_SCHEDULE_INVALID', err.message, context, { cause: err });
    throw err;
  }
  if (first === undefined || first.getTime() >= Date.parse(manifest.expiresAt)) {
    throw new CapsuleError(
      'CAPSULE_SCHEDULE_INVALID',
      `The schedule "${cron}" names no slot before the capsule expires at ${manifest.expiresAt}.`,
      context,
    );
  }
  return { cron, timezone, firstSlot: first.toISOString() };
}

/**
 * A newer capsule with the id of an active schedule replaces it (returns the schedules to end); an older one
 * (by the signed `issuedAt`, then the manifest digest) is refused, CAPSULE_SUPERSEDED, so a replayed older
 * capsule cannot undo a newer one.
 */
function supersededBy(ctx: RunnerContext, { manifest, manifestDigest }: AcceptedCapsule): ScheduleRow[] {
  const active = ctx.store.activeSchedulesOf(manifest.id);
  const issued = Date.parse(manifest.issuedAt);
  // One issuedAt twice: the greater manifest digest wins, so every runner ends with the same schedule
  // whichever of the two reached it first (arrival order is the network's, not the signer's).
  const newer = active.find((row) => {
    const at = Date.parse(row.issuedAt);
    return at > issued || (at === issued && row.manifestDigest > manifestDigest);
  });
  if (newer !== undefined) {
    throw new CapsuleError(
      'CAPSULE_SUPERSEDED',
      `A capsule ${manifest.id} issued at ${newer.issuedAt} is scheduled here and orders after this one (a later issuedAt, or the same and a greater manifest digest); this one does not replace it.`,
      { capsuleId: manifest.id, manifestDigest },
    );
  }
  return active;
}

/** Free bytes on the file system holding `dir`, as an unprivileged writer sees them (f_bavail). */
export function freeBytesOf(dir: string): number {
  const stats = statfsSync(dir);
  return Number(stats.bavail) * Number(stats.bsize);
}

/**
 * Refuses to start a run when the state folder's file system has less free space than the reserve: the
 * refusal is recorded (capsule.rejected, code RUN_DISK_RESERVE; the reserve is what leaves the log room for
 * it) and thrown, so the CLI exits with the code and the capsule, whose nonce is not burnt, can come again.
 */
function refuseBelowReserve(
  ctx: RunnerContext,
  accepted: AcceptedCapsule,
  file: { fileDigest: string } | { fileSize: number },
  decided: () => void,
): void {
  const reserve = ctx.config.store.reserveBytes;
  let free: number;
  try {
    free = freeBytesOf(ctx.state.layout.dir);
  } catch {
    free = 0; // no answer is no room: fail closed
  }
  if (free >= reserve) return;
  ctx.store.transaction(() => {
    ctx.store.appendRecord('capsule.rejected', {
      code: 'RUN_DISK_RESERVE',
      ...file,
      capsuleId: accepted.manifest.id,
      manifestDigest: accepted.manifestDigest,
    });
    decided();
  });
  ctx.logger.warn({ code: 'RUN_DISK_RESERVE', capsuleId: accepted.manifest.id }, 'run refused: disk below reserve');
  throw new RunError(
    'RUN_DISK_RESERVE',
    `The state folder's file system has ${free} bytes free, below the reserve of ${reserve} bytes (store.reserveBytes); no run starts until there is room. The refusal is recorded.`,
    { capsuleId: accepted.manifest.id, freeBytes: free, reserveBytes: reserve },
  );
}

function selectLauncher(ctx: RunnerContext, accepted: AcceptedCapsule): Launcher {
  const requirement = accepted.manifest.isolation ?? 'required';
  const selected = ctx.launcher(requirement, { stateDir: ctx.state.layout.dir, config: ctx.config });
  if ('unavailable' in selected) {
    throw new CapsuleError(
      'CAPSULE_ISOLATION_UNAVAILABLE',
      `The capsule requires step isolation, which this host cannot give: ${selected.unavailable}.`,
      {
        capsuleId: accepted.manifest.id,
        manifestDigest: accepted.manifestDigest,
      },
    );
  }
  return selected;
}

/** A recurring capsule's run: the slot it fires for, and what is recorded with its run.started (in one transaction). */
export interface ScheduledRun {
  /** RFC 3339 UTC. */
  scheduledFor: string;
  /**
   * In the run.started transaction, before its record: the slots missed before this one are recorded and the
   * slot is handled with the start, or none of it is.
   */
  beforeStart: () => void;
}

/**
 * The checks of an accepted capsule that are the runner's, not the signer's (step environment policy, the
 * isolation it requires): at acceptance, and again at each firing of a recurring capsule. Returns its launcher.
 */
export function admitAccepted(ctx: RunnerContext, accepted: AcceptedCapsule): Launcher {
  verifyStepEnvPolicy(accepted);
  grantsOf(ctx, accepted);
  const launcher = selectLauncher(ctx, accepted);
  // Grants are bound only into a bwrap sandbox (exec/resources.ts): without one, nothing of them would be exact.
  if ((accepted.manifest.needs ?? []).length > 0 && launcher.isolation !== 'bwrap') {
    const context = { capsuleId: accepted.manifest.id, manifestDigest: accepted.manifestDigest };
    throw new CapsuleError('CAPSULE_ISOLATION_UNAVAILABLE', 'The capsule needs granted resources, which only a bwrap sandbox can bind.', context);
  }
  return launcher;
}

/**
 * The operator's grants for what the capsule `needs`, checked on this host; CAPSULE_RESOURCE_UNGRANTED for a
 * name not granted or a grant that cannot be bound. The message names the resource, never its path.
 */
function grantsOf(ctx: RunnerContext, { manifest, manifestDigest }: AcceptedCapsule): ResolvedGrant[] {
  const spool = ctx.config.spool.dir;
  const resolution = resolveGrants(manifest.needs ?? [], ctx.config.resources, ctx.state.layout.dir, spool ? { keep: [spool] } : {});
  if ('grants' in resolution) return resolution.grants;
  const { name, why } = resolution.refused;
  throw new CapsuleError('CAPSULE_RESOURCE_UNGRANTED', `The capsule needs the resource "${name}", which ${why}; nothing ran.`, {
    capsuleId: manifest.id,
    manifestDigest,
  });
}

/** The run's grants, their tcp forwarders listening: what each step's plan binds, and what `close` ends. */
export interface BoundResources {
  grants: ResolvedGrant[];
  mounts: ResourceMount[];
  close: () => Promise<void>;
}

export async function bindResources(ctx: RunnerContext, accepted: AcceptedCapsule): Promise<BoundResources> {
  const grants = grantsOf(ctx, accepted); // again: a grant may have gone from the host since acceptance
  const tcp = grants.flatMap((grant) => (grant.upstream ? [{ name: grant.name, ...grant.upstream }] : []));
  let forwarders: Forwarders | undefined;
  if (tcp.length > 0) {
    const owner = process.getuid?.() === 0 ? { uid: ctx.config.stepUser.uid, gid: ctx.config.stepUser.gid } : undefined;
    forwarders = await startForwarders(tcp, owner ? { owner } : {});
  }
  let pinned;
  try {
    pinned = openResourceMounts(grants, forwarders?.sockets); // each source pinned for the whole run
  } catch (err) {
    await forwarders?.close();
    if (!(err instanceof ExecError)) throw err;
    // Gone or swapped since it was checked: the capsule's need cannot be met as granted.
    const context = { capsuleId: accepted.manifest.id, manifestDigest: accepted.manifestDigest };
    throw new CapsuleError('CAPSULE_RESOURCE_UNGRANTED', err.message, context, { cause: err });
  }
  const { mounts, close } = pinned;
  return {
    grants,
    mounts,
    close: async () => {
      close();
      await forwarders?.close();
    },
  };
}

/** Runs an accepted capsule (one-off, or one firing of a recurring one): records, steps, evidence, bundle. */
export async function runAccepted(
  ctx: RunnerContext,
  accepted: AcceptedCapsule,
  launcher: Launcher,
  { signal, stopping, scheduled, remediation }: Pick<RunCapsuleOptions, 'signal' | 'stopping'> & { scheduled?: ScheduledRun; remediation?: Prepared },
): Promise<CapsuleOutcome & { kind: 'completed' }> {
  const { manifest } = accepted;
  const { store } = ctx;
  const runId = randomUUID();
  const ops = ctx.logger.child({ runId, capsuleId: manifest.id, ...(scheduled ? { scheduledFor: scheduled.scheduledFor } : {}) });
  const startedAt = ctx.clock();
  store.transaction(() => {
    scheduled?.beforeStart();
    store.startRun({
      runId,
      capsuleId: manifest.id,
      manifestDigest: accepted.manifestDigest,
      isolation: launcher.isolation,
      ...(scheduled ? { scheduledFor: scheduled.scheduledFor } : {}),
      ...(neededOf(accepted).length > 0 ? { resources: neededOf(accepted) } : {}),
    });
  });
  const runDir = join(ctx.state.layout.runs, runId);
  let workspaceGone = false;
  let resources: BoundResources | undefined;
  const freeWorkspace = () => {
    if (workspaceGone) return;
    workspaceGone = true;
    removeRunFolder(store, runId, runDir, ops);
  };
  try {
    resources = await bindResources(ctx, accepted);
    const scheduledFor = scheduled?.scheduledFor;
    return await runSteps(ctx, accepted, launcher, { runId, runDir, startedAt, ops, signal, stopping, scheduledFor, resources, remediation });
  } catch (err) {
    // Whatever stopped the run midway is recorded, with a code, unless the run already ended. A full disk
    // (RUN_DISK_FULL) may refuse that record too: the workspace, most likely what filled it, is freed first
    // and the record tried once more.
    const diskFull = isDiskFull(err);
    const reason = abortReasonOf(err);
    let ended = endRun(store, runId, reason);
    if (ended === 'not-recorded') {
      freeWorkspace();
      ended = endRun(store, runId, reason);
    }
    ops.warn({ code: reason, ended }, 'run stopped before it finished');
    if (!diskFull) throw err;
    freeWorkspace(); // room first, whatever exec.keepWorkspace says
    throw new RunError(
      'RUN_DISK_FULL',
      ended === 'aborted'
        ? 'The disk filled during the run: it is recorded as aborted (RUN_DISK_FULL) and its workspace removed.'
        : ended === 'already-ended'
          ? 'The disk filled after the run ended: its records are kept, but its bundle may not have been written.'
          : 'The disk filled during the run and its end could not be recorded; the next start records it as aborted.',
      { runId, ended },
      { cause: err },
    );
  } finally {
    await resources?.close(); // every step is over: nothing of the run may still reach a granted service
    // Last, and best effort: a leftover process writing into the workspace must not cost the evidence.
    if (!ctx.config.exec.keepWorkspace) freeWorkspace();
  }
}

/** The reason a run.aborted record gives: RUN_DISK_FULL for a full disk anywhere, else the error's code. */
function abortReasonOf(err: unknown): string {
  if (isDiskFull(err)) return 'RUN_DISK_FULL';
  return isCodedError(err) && /^[A-Z][A-Z0-9_]{0,63}$/.test(err.code) ? err.code : 'RUN_INTERNAL';
}

/** Ends a run that stopped midway; never throws (the store may be what is failing). */
export function endRun(store: RunnerContext['store'], runId: string, reason: string): 'aborted' | 'already-ended' | 'not-recorded' {
  try {
    if (store.run(runId)?.status !== 'running') return 'already-ended';
    store.abortRun({ runId, reason });
    return 'aborted';
  } catch {
    // The next start records this run as aborted (abortInterruptedRuns), once its runner is gone.
    return 'not-recorded';
  }
}

interface RunContext {
  runId: string;
  runDir: string;
  startedAt: Date;
  ops: RunnerContext['logger'];
  signal: AbortSignal | undefined;
  stopping: AbortSignal | undefined;
  scheduledFor: string | undefined;
  resources: BoundResources;
  remediation?: Prepared | undefined;
}

async function runSteps(
  ctx: RunnerContext,
  accepted: AcceptedCapsule,
  launcher: Launcher,
  { runId, runDir, startedAt, ops, signal, stopping, scheduledFor, resources, remediation }: RunContext,
): Promise<CapsuleOutcome & { kind: 'completed' }> {
  const { state, store } = ctx;
  const { manifest } = accepted;
  let workspace: string;
  let staged: Staged | undefined;
  try {
    workspace = createWorkspace(runDir);
    writeInputs(workspace, manifest.inputs, accepted.inputs);
    // The change staged in <workspace>/target before the workspace is given to the step user.
    if (remediation) staged = stageProposal(ctx, remediation, accepted, workspace, runId);
    launcher.prepare(workspace);
  } catch (err) {
    if (err instanceof ChangeError || err instanceof RemediationError) throw err;
    // A symlink on an input's way is the capsule's doing: it is rejected with the capsule's code.
    if (err instanceof ExecError && err.code === 'EXEC_PATH_ESCAPE') {
      throw new CapsuleError('CAPSULE_PATH_ESCAPE', err.message, { capsuleId: manifest.id, manifestDigest: accepted.manifestDigest }, { cause: err });
    }
    throw new RunError('RUN_WORKSPACE_FAILED', 'The run workspace could not be prepared; nothing was executed.', { runId }, { cause: err });
  }

  const extraEnv: Record<string, string> = staged ? { EDGE_RUNNER_TARGET: staged.stagedPath } : {};
  const { steps, artifacts, verdict } = await executeSteps(ctx, accepted, launcher, { runId, workspace, ops, signal, stopping, resources, extraEnv });
  const endedAt = ctx.clock();

  const runner = { id: state.identity.id, keyid: state.key.keyid };
  const statement = buildStatement({
    runner: { ...runner, version: RUNNER_VERSION },
    capsule: { id: manifest.id, kind: manifest.kind, digest: accepted.manifestDigest, signers: accepted.signers },
    run: {
      id: runId,
      startedAt: startedAt.toISOString(),
      endedAt: endedAt.toISOString(),
      isolation: launcher.isolation,
      ...(launcher.sandbox ? { sandbox: sandboxOf(launcher, resources.grants) } : {}),
      verdict,
      ...(scheduledFor !== undefined ? { scheduledFor } : {}),
      ...(resources.grants.length > 0 ? { resources: resources.grants.map((grant) => grant.name) } : {}),
    },
    steps,
    artifacts,
    policy: { decision: 'allowed', rule: staged ? 'staged-change' : 'read-only-kind', trustVersion: state.trust.body.version },
    ...(staged ? { remediation: proposalEvidenceOf(staged) } : {}),
  });
  const evidence = signEvidence(
    statement,
    { manifest, runner, ...(staged ? { remediation: remediationEgressOf(ctx, staged.plan) } : {}) },
    state.key,
  );
  // The run's end, its evidence and its bundle queued for the coordinator: one transaction, so a runner killed
  // anywhere here leaves either a running run (aborted at the next start, and answered as such) or all three.
  let bundle: Bundle | undefined;
  let bundleText = '';
  let change: ChangeOutcome | undefined;
  store.transaction(() => {
    store.finishRun({ runId, verdict });
    store.recordEvidence({ runId, evidenceDigest: evidence.digest }, (record) => {
      const sealed = sealedLogFor(store, { runnerId: state.identity.id, key: state.key }, record.seq, record.leaf);
      bundle = buildBundle(evidence.envelope, accepted.envelope, sealed.log);
      guardBundle(bundle);
      bundleText = formatBundle(bundle);
      return { bundle: Buffer.from(bundleText, 'utf8'), checkpoint: sealed.checkpoint };
    });
    // The proposal is the bundle's: its record and its row, in the same transaction.
    if (staged) change = recordProposal(ctx, staged, accepted, { runId, evidenceDigest: evidence.digest, verdict });
  });
  ops.info({ verdict, isolation: launcher.isolation }, 'run finished');
  const bundlePath = join(state.layout.bundles, `${runId}.bundle.json`);
  // A copy for the operator; the outbox row holds the same bytes for the coordinator.
  writeFileAtomic(bundlePath, bundleText);
  return {
    kind: 'completed',
    runId,
    capsuleId: manifest.id,
    verdict,
    isolation: launcher.isolation,
    steps,
    bundle: bundle!,
    bundlePath,
    evidenceDigest: evidence.digest,
    ...(change ? { change } : {}),
  };
}

/** What the steps of a run did: each step's record, the collected artifacts and the verdict over them. */
export interface ExecutedSteps {
  steps: StepRecord[];
  artifacts: ReturnType<typeof collectArtifacts>;
  verdict: Verdict;
}

/**
 * Runs the capsule's steps in `workspace`, one after the other (a failed step stops the rest unless it may
 * fail), each recorded as step.finished; then collects and decides the verdict. `extraEnv`: the runner's
 * own variables (a remediation's EDGE_RUNNER_TARGET), set over the step's.
 */
export async function executeSteps(
  ctx: RunnerContext,
  accepted: AcceptedCapsule,
  launcher: Launcher,
  {
    runId,
    workspace,
    ops,
    signal,
    stopping,
    resources,
    extraEnv = {},
  }: {
    runId: string;
    workspace: string;
    ops: RunnerContext['logger'];
    signal: AbortSignal | undefined;
    stopping: AbortSignal | undefined;
    resources: BoundResources;
    extraEnv?: Record<string, string>;
  },
): Promise<ExecutedSteps> {
  const { state, store, config } = ctx;
  const { manifest } = accepted;
  const steps: StepRecord[] = [];
  let stopped = false;
  for (const step of manifest.steps) {
    if (signal?.aborted || stopping?.aborted) throw agentStopped(runId);
    if (stopped) {
      steps.push({ name: step.name, status: 'skipped', exitCode: null, signal: null, timedOut: false, durationMs: 0 });
      continue;
    }
    // The runner's resource variables win over the step's own of the same name.
    const plan = launcher.plan(
      step.run,
      { ...buildStepEnv(workspace, step.env), ...toResourceEnv(resources.grants), ...extraEnv },
      workspace,
      resources.mounts,
    );
    const outcome = await runStep({
      plan,
      timeoutMs: (step.timeoutSeconds ?? config.exec.defaultStepTimeoutSeconds) * 1000,
      killGraceMs: config.exec.killGraceMs,
      outputCapBytes: config.exec.outputCapBytes,
      blobs: state.blobs,
      leaderIsStep: launcher.leaderIsStep,
      ...(signal ? { signal } : {}),
    });
    if (outcome.aborted) throw agentStopped(runId);
    const record = toStepRecord(step.name, outcome);
    ops.info(
      {
        step: step.name,
        status: record.status,
        exitCode: record.exitCode,
        signal: record.signal,
        durationMs: record.durationMs,
        limit: record.limit,
      },
      'step finished',
    );
    steps.push(record);
    store.appendRecord('step.finished', { runId, ...record }, runId);
    if (record.status !== 'succeeded' && !step.continueOnFailure) stopped = true;
  }

  const artifacts = collectArtifacts(workspace, manifest.collect, state.blobs, config.exec.collectMaxBytes);
  const continueOnFailure = new Set(manifest.steps.filter((s) => s.continueOnFailure).map((s) => s.name));
  return { steps, artifacts, verdict: decideVerdict(steps, artifacts, continueOnFailure) };
}

/** The capsule's needed resource names, sorted and once each: what run.started and the evidence carry. */
function neededOf({ manifest }: AcceptedCapsule): string[] {
  return [...new Set(manifest.needs ?? [])].sort();
}

/** The launcher's sandbox as this run used it: a step with a socket or tcp grant ran under the AF_UNIX filter. */
export function sandboxOf(launcher: Launcher, grants: readonly ResolvedGrant[]): NonNullable<Launcher['sandbox']> {
  const sandbox = launcher.sandbox!;
  return needsUnixSockets(grants) && sandbox.syscallFilter !== undefined ? { ...sandbox, syscallFilter: SYSCALL_FILTER_UNIX } : sandbox;
}

export function agentStopped(runId: string): RunError {
  return new RunError('RUN_AGENT_STOPPED', 'The agent stopped while the run was going on; the run is recorded as aborted.', { runId });
}

/** Policy: a step may not set variables that steer the dynamic loader of the sandbox's own wrappers. */
function verifyStepEnvPolicy({ manifest, manifestDigest }: AcceptedCapsule): void {
  for (const step of manifest.steps) {
    const unsafe = Object.keys(step.env ?? {}).find(isLoaderEnvName);
    if (unsafe) {
      throw new CapsuleError('CAPSULE_POLICY', `The step "${step.name}" sets ${unsafe}, which would steer the loader of the runner's sandbox.`, {
        capsuleId: manifest.id,
        manifestDigest,
      });
    }
  }
}

const LIMIT_RECORDED: Record<ReturnType<typeof classifyLimitExit>['reason'], StepRecord['limit']> = {
  'cpu-limit': 'cpu-limit',
  'process-limit': 'process-limit',
  'memory-limit': 'memory-limit',
  'open-files-limit': 'file-limit',
  timeout: 'timeout',
  signal: undefined,
  none: undefined,
};

function toStepRecord(name: string, outcome: StepOutcome): StepRecord {
  const status = outcome.spawnFailure ? 'spawn-failed' : outcome.timedOut ? 'timed-out' : outcome.exitCode === 0 ? 'succeeded' : 'failed';
  const { reason, known } = classifyLimitExit({
    exitCode: outcome.exitCode,
    signal: outcome.signal,
    timedOut: outcome.timedOut,
    stderrTail: outcome.stderrTail,
    ...(outcome.oomKills !== undefined ? { oomKills: outcome.oomKills } : {}),
  });
  // A limit is recorded as a fact only when the runner saw it; the step's exit code or words are a guess.
  const limit = known ? LIMIT_RECORDED[reason] : undefined;
  const limitInferred = known ? undefined : LIMIT_RECORDED[reason];
  return {
    name,
    status,
    exitCode: outcome.exitCode,
    signal: outcome.signal,
    timedOut: outcome.timedOut,
    durationMs: outcome.durationMs,
    ...(outcome.spawnFailure ? { spawnFailure: outcome.spawnFailure } : {}),
    ...(limit ? { limit } : {}),
    ...(limitInferred ? { limitInferred } : {}),
    stdout: outcome.stdout,
    stderr: outcome.stderr,
  };
}
