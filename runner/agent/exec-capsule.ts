/**
 * One capsule through the runner: verify -> record -> execute -> evidence -> record -> bundle. Every decision
 * is a record written before its effect; if a record cannot be written the runner stops (STORE_WRITE_FAILED).
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { sha256Hex } from '../core/digest.js';
import { isCodedError } from '../core/errors.js';
import { CapsuleError, type CapsuleErrorCode } from '../capsule/errors.js';
import { verifyCapsule, type AcceptedCapsule } from '../capsule/verify.js';
import { buildBundle, signEvidence, type Bundle } from '../evidence/bundle.js';
import { guardBundle } from '../evidence/egress.js';
import { buildStatement, decideVerdict, type IsolationUsed, type StepRecord, type Verdict } from '../evidence/statement.js';
import { collectArtifacts } from '../exec/collect.js';
import { buildStepEnv } from '../exec/env.js';
import { classifyLimitExit, isLoaderEnvName, type LaunchPlan } from '../exec/sandbox.js';
import { runStep, type StepOutcome } from '../exec/step.js';
import { createWorkspace, writeInputs } from '../exec/workspace.js';
import { writeFileAtomic } from '../state/files.js';
import { loadState, type RunnerState } from '../state/state.js';
import { StoreError } from '../store/errors.js';
import { Store } from '../store/store.js';
import { RUNNER_VERSION } from '../version.js';
import { RunError } from './errors.js';
import { bundleLogFor } from './log.js';
import { logger } from './logger.js';

export interface Launcher {
  /** The isolation this launcher gives; recorded in the evidence. */
  isolation: IsolationUsed;
  /** False when the launched process is a wrapper (bwrap) rather than the step itself. */
  leaderIsStep?: boolean;
  /** Called once the inputs are written, before any step: e.g. hand the workspace to the step user. */
  prepare?(workspace: string): void;
  plan(argv: string[], env: Record<string, string>, workspace: string): LaunchPlan;
}

/** Spawns argv as it is, in the runner's own identity: for tests that exercise exec without the sandbox. */
export const directLauncher: Launcher = {
  isolation: 'none',
  plan: (argv, env, workspace) => ({ file: argv[0]!, args: argv.slice(1), env, cwd: workspace }),
};

export interface LauncherContext {
  stateDir: string;
  /** The identity steps run as when the runner is root (runner.json `stepUser`, set by `init`). */
  stepUser?: { uid: number; gid: number };
}

export type LauncherSelector = (requirement: 'required' | 'best-effort', context: LauncherContext) => Launcher | { unavailable: string };

export interface ExecConfig {
  defaultTimeoutSeconds: number;
  killGraceMs: number;
  outputCapBytes: number;
  keepWorkspace: boolean;
}

export const DEFAULT_EXEC_CONFIG: ExecConfig = {
  defaultTimeoutSeconds: 600, // seconds
  killGraceMs: 2000, // ms between SIGTERM and SIGKILL
  outputCapBytes: 8 * 1024 * 1024, // bytes kept per stream
  keepWorkspace: false,
};

export interface ExecOptions {
  stateDir: string;
  capsuleBytes: Buffer;
  /** The capsule file's size on disk, when `capsuleBytes` was read only up to just past the size cap. */
  capsuleSize?: number;
  config?: Partial<ExecConfig>;
  now?: () => Date;
  /** Chooses how a step is launched given the capsule's isolation requirement. */
  selectLauncher?: LauncherSelector;
  openStore?: (state: RunnerState) => Store;
}

export type ExecResult =
  | { kind: 'rejected'; code: CapsuleErrorCode; message: string; capsuleId?: string; fileDigest?: string }
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
    };

/**
 * Opens the runner's database the way every command that acts on a state folder must: runs left behind by
 * a runner process that died are closed first, each with a run.aborted record, so the log is consistent
 * before anything new is appended.
 */
export function openRunnerStore(state: RunnerState): Store {
  const store = Store.open(state.layout.database);
  try {
    for (const runId of store.abortInterruptedRuns()) {
      // The dead runner's workspace: nothing in it is evidence (outputs went to the blob store as they came).
      if (/^[0-9a-f-]{36}$/.test(runId)) rmSync(join(state.layout.runs, runId), { recursive: true, force: true });
    }
    return store;
  } catch (err) {
    store.close();
    throw err;
  }
}

export async function execCapsule(options: ExecOptions): Promise<ExecResult> {
  const config = { ...DEFAULT_EXEC_CONFIG, ...options.config };
  const now = options.now ?? (() => new Date());
  const decisionTime = now();
  const state = loadState(options.stateDir, decisionTime);
  const store = options.openStore ? options.openStore(state) : openRunnerStore(state);
  try {
    const size = options.capsuleSize ?? options.capsuleBytes.length;
    const complete = size === options.capsuleBytes.length;
    // A file read only up to the cap has no digest we could stand behind: its size is recorded instead.
    const fileDigest = complete ? `sha256:${sha256Hex(options.capsuleBytes)}` : undefined;
    const reject = (err: CapsuleError): ExecResult => {
      const capsuleId = typeof err.details.capsuleId === 'string' ? err.details.capsuleId : undefined;
      store.appendRecord('capsule.rejected', {
        code: err.code,
        ...(fileDigest ? { fileDigest } : { fileSize: size }),
        ...(capsuleId ? { capsuleId } : {}),
        ...(typeof err.details.manifestDigest === 'string' ? { manifestDigest: err.details.manifestDigest } : {}),
      });
      logger().warn({ code: err.code, fileDigest, capsuleId, details: err.details }, 'capsule rejected');
      return { kind: 'rejected', code: err.code, message: err.message, ...(fileDigest ? { fileDigest } : {}), ...(capsuleId ? { capsuleId } : {}) };
    };

    let accepted: AcceptedCapsule;
    let launcher: Launcher;
    try {
      accepted = verifyCapsule(options.capsuleBytes, {
        trust: state.trust,
        runner: { id: state.config.id, labels: state.config.labels },
        now: decisionTime,
        hasSeen: (id, nonce) => store.hasSeen(id, nonce),
      });
      verifyStepEnvPolicy(accepted);
      const requirement = accepted.manifest.isolation ?? 'required';
      const selected = (options.selectLauncher ?? (() => directLauncher))(requirement, {
        stateDir: state.layout.dir,
        ...(state.config.stepUser ? { stepUser: state.config.stepUser } : {}),
      });
      if ('unavailable' in selected) {
        throw new CapsuleError('CAPSULE_ISOLATION_UNAVAILABLE', `The capsule requires step isolation, which this host cannot give: ${selected.unavailable}.`, {
          capsuleId: accepted.manifest.id,
          manifestDigest: accepted.manifestDigest,
        });
      }
      launcher = selected;
      store.acceptCapsule(accepted.manifest.id, accepted.manifest.nonce, {
        capsuleId: accepted.manifest.id,
        capsuleKind: accepted.manifest.kind,
        manifestDigest: accepted.manifestDigest,
        fileDigest,
        signers: accepted.signers,
      });
    } catch (err) {
      if (err instanceof CapsuleError) return reject(err);
      if (err instanceof StoreError && err.code === 'STORE_REPLAY') {
        return reject(new CapsuleError('CAPSULE_REPLAY', err.message, { capsuleId: accepted!.manifest.id }));
      }
      throw err;
    }
    return await runAccepted(state, store, accepted, launcher, config, now);
  } finally {
    store.close();
  }
}

async function runAccepted(
  state: RunnerState,
  store: Store,
  accepted: AcceptedCapsule,
  launcher: Launcher,
  config: ExecConfig,
  now: () => Date,
): Promise<ExecResult> {
  const { manifest } = accepted;
  const runId = randomUUID();
  const ops = logger().child({ runId, capsuleId: manifest.id });
  const startedAt = now();
  store.startRun(runId, manifest.id, accepted.manifestDigest, {
    runId,
    capsuleId: manifest.id,
    manifestDigest: accepted.manifestDigest,
    isolation: launcher.isolation,
  });
  const runDir = join(state.layout.runs, runId);
  try {
    return await runSteps(state, store, accepted, launcher, config, now, { runId, runDir, startedAt, ops });
  } catch (err) {
    // Whatever stopped the run midway is recorded, with a code, unless the run already ended.
    const reason = isCodedError(err) && /^[A-Z][A-Z0-9_]{0,63}$/.test(err.code) ? err.code : 'RUN_INTERNAL';
    try {
      if (store.run(runId)?.status === 'running') store.finishRun(runId, 'aborted', null, { runId, reason });
    } catch {
      // The store itself is failing; the next start records this run as aborted (abortInterruptedRuns).
    }
    throw err;
  } finally {
    // Last, and best effort: a leftover process writing into the workspace must not cost the evidence.
    if (!config.keepWorkspace) {
      try {
        rmSync(runDir, { recursive: true, force: true });
      } catch (err) {
        ops.warn({ code: (err as NodeJS.ErrnoException).code }, 'workspace not removed');
      }
    }
  }
}

interface RunContext {
  runId: string;
  runDir: string;
  startedAt: Date;
  ops: ReturnType<typeof logger>;
}

async function runSteps(
  state: RunnerState,
  store: Store,
  accepted: AcceptedCapsule,
  launcher: Launcher,
  config: ExecConfig,
  now: () => Date,
  { runId, runDir, startedAt, ops }: RunContext,
): Promise<ExecResult> {
  const { manifest } = accepted;
  let workspace: string;
  try {
    workspace = createWorkspace(runDir);
    writeInputs(workspace, manifest.inputs, accepted.inputs);
    launcher.prepare?.(workspace);
  } catch (err) {
    if (err instanceof CapsuleError) throw err; // a symlink on an input's way: CAPSULE_PATH_ESCAPE
    throw new RunError('RUN_WORKSPACE_FAILED', 'The run workspace could not be prepared; nothing was executed.', { runId }, { cause: err });
  }

  const steps: StepRecord[] = [];
  let stopped = false;
  for (const step of manifest.steps) {
    if (stopped) {
      steps.push({ name: step.name, status: 'skipped', exitCode: null, signal: null, timedOut: false, durationMs: 0 });
      continue;
    }
    const plan = launcher.plan(step.run, buildStepEnv(workspace, step.env), workspace);
    const outcome = await runStep({
      plan,
      timeoutMs: (step.timeoutSeconds ?? config.defaultTimeoutSeconds) * 1000,
      killGraceMs: config.killGraceMs,
      outputCapBytes: config.outputCapBytes,
      blobs: state.blobs,
      leaderIsStep: launcher.leaderIsStep ?? true,
    });
    const record = toStepRecord(step.name, outcome);
    ops.info({ step: step.name, status: record.status, exitCode: record.exitCode, signal: record.signal, durationMs: record.durationMs, limit: record.limit }, 'step finished');
    steps.push(record);
    store.appendRecord('step.finished', { runId, ...record }, runId);
    if (record.status !== 'succeeded' && !step.continueOnFailure) stopped = true;
  }

  const artifacts = collectArtifacts(workspace, manifest.collect, state.blobs);
  const continueOnFailure = new Set(manifest.steps.filter((s) => s.continueOnFailure).map((s) => s.name));
  const verdict = decideVerdict(steps, artifacts, continueOnFailure);
  const endedAt = now();
  store.finishRun(runId, 'finished', verdict, { runId, verdict });
  ops.info({ verdict, isolation: launcher.isolation }, 'run finished');

  const statement = buildStatement({
    runner: { id: state.config.id, keyid: state.key.keyid, version: RUNNER_VERSION },
    capsule: { id: manifest.id, kind: manifest.kind, digest: accepted.manifestDigest, signers: accepted.signers },
    run: { id: runId, startedAt: startedAt.toISOString(), endedAt: endedAt.toISOString(), isolation: launcher.isolation, verdict },
    steps,
    artifacts,
    policy: { decision: 'allowed', rule: 'read-only-kind', trustVersion: state.trust.body.version },
  });
  const evidence = signEvidence(statement, { manifest, runner: { id: state.config.id, keyid: state.key.keyid } }, state.key);
  const evidenceRecord = store.recordEvidence(runId, evidence.digest, { runId, evidenceDigest: evidence.digest });
  const log = bundleLogFor(store, { runnerId: state.config.id, key: state.key }, evidenceRecord.seq, evidenceRecord.leaf);
  const bundle = buildBundle(evidence.envelope, accepted.envelope, log);
  guardBundle(bundle);
  const bundlePath = join(state.layout.bundles, `${runId}.bundle.json`);
  writeFileAtomic(bundlePath, `${JSON.stringify(bundle, null, 2)}\n`);
  return {
    kind: 'completed',
    runId,
    capsuleId: manifest.id,
    verdict,
    isolation: launcher.isolation,
    steps,
    bundle,
    bundlePath,
    evidenceDigest: evidence.digest,
  };
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
  const status = outcome.spawnFailure
    ? 'spawn-failed'
    : outcome.timedOut
      ? 'timed-out'
      : outcome.exitCode === 0
        ? 'succeeded'
        : 'failed';
  const { reason } = classifyLimitExit({ exitCode: outcome.exitCode, signal: outcome.signal, timedOut: outcome.timedOut, stderrTail: outcome.stderrTail });
  const limit = LIMIT_RECORDED[reason];
  return {
    name,
    status,
    exitCode: outcome.exitCode,
    signal: outcome.signal,
    timedOut: outcome.timedOut,
    durationMs: outcome.durationMs,
    ...(outcome.spawnFailure ? { spawnFailure: outcome.spawnFailure } : {}),
    ...(limit ? { limit } : {}),
    stdout: outcome.stdout,
    stderr: outcome.stderr,
  };
}
