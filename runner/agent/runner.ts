/**
 * The runner context: built once, held for as long as the process runs (one CLI command, or a daemon's whole
 * life), and passed to everything that acts. Like tuf-js's Updater and Buildkite's AgentWorker, it is the one
 * composition root: the state folder (identity, key, pinned trust), one open store, the configuration, the
 * clock, the launcher and the logger. Opening it closes the runs that a dead runner left behind, so the log
 * is consistent before anything new is appended.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { resolveConfig, type ConfigSources, type RunnerConfig } from '../config/config.js';
import { isCodedError } from '../core/errors.js';
import { removeTree } from '../exec/workspace.js';
import { assertTrustCurrent, loadState, type RunnerState } from '../state/state.js';
import { Store } from '../store/store.js';
import type { LauncherSelector } from './launcher.js';
import { silentLogger, type Logger } from './logger.js';
import { finishTrustUpdate } from './trust-update.js';
import { resumeChanges, resumeOnOpen } from '../remediate/machine.js';

/** One clock reading per decision: callers read it once and pass the value on. */
export type Clock = () => Date;

export interface OpenRunnerOptions {
  /** Required: there is no default that could run steps unsandboxed. */
  launcher: LauncherSelector;
  /**
   * The environment and flags, merged once over the defaults and the state folder's runner.json (in that
   * order) into the context's configuration. Without them: defaults < runner.json.
   */
  config?: Omit<ConfigSources, 'state'>;
  clock?: Clock;
  logger?: Logger;
  /**
   * `ignore`: open even though the pinned trust document has expired (`trust update`, which may bring the
   * runner back; every decision still checks the pin's expiry). Otherwise an expired pin refuses the open.
   */
  trustExpiry?: 'enforce' | 'ignore';
}

export interface RunnerContext {
  readonly state: RunnerState;
  readonly store: Store;
  readonly config: RunnerConfig;
  readonly clock: Clock;
  readonly launcher: LauncherSelector;
  readonly logger: Logger;
  /** Runs closed as aborted when the context was opened (their runner had died). */
  readonly abortedOnOpen: readonly string[];
  close(): void;
}

/** The configuration of a state folder: defaults < runner.json < environment < flags. */
export function configOf(state: RunnerState, sources: Omit<ConfigSources, 'state'> = {}): RunnerConfig {
  return resolveConfig({
    ...sources,
    state: { ...state.identity.settings, ...(state.identity.stepUser ? { stepUser: state.identity.stepUser } : {}) },
  });
}

export function openRunner(stateDir: string, options: OpenRunnerOptions): RunnerContext {
  if (typeof options.launcher !== 'function') throw new TypeError('openRunner needs a launcher: there is no default that runs steps unsandboxed');
  const clock = options.clock ?? (() => new Date());
  const openedAt = clock();
  // The expiry is applied once a trust update that a crash cut short is finished (it may be what renews it).
  const state = loadState(stateDir, openedAt, { trustExpiry: 'ignore' });
  const config = configOf(state, options.config);
  const logger = options.logger ?? silentLogger;
  const store = Store.open(state.layout.database, { busyTimeoutMs: config.store.busyTimeoutMs, now: clock });
  let abortedOnOpen: string[];
  try {
    const finished = finishTrustUpdate({ state, store });
    if (finished.kind !== 'none')
      logger.warn({ ...finished, trustVersion: state.trust.body.version }, 'trust update cut short by a crash: ' + finished.kind);
    if (options.trustExpiry !== 'ignore') assertTrustCurrent(state.trust, openedAt);
    abortedOnOpen = store.abortInterruptedRuns();
  } catch (err) {
    store.close();
    throw err;
  }
  for (const runId of abortedOnOpen) logger.warn({ runId }, 'run of a runner that died recorded as aborted');
  removeLeftovers(state, store, config, abortedOnOpen, logger);
  let closed = false;
  const ctx: RunnerContext = {
    state,
    store,
    config,
    clock,
    launcher: options.launcher,
    logger,
    abortedOnOpen,
    close() {
      if (closed) return;
      closed = true;
      store.close();
    },
  };
  // Changes a dead runner was applying, verifying or rolling back: rolled back or restored again now
  // (runner/remediate/machine.ts); those it had fully written are verified by resumeChanges. Each change's
  // failure is logged there and left for the next open.
  resumeOnOpen(ctx);
  return ctx;
}

const RUN_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * What dead runs leave behind, removed when a runner opens: the temporary blobs of writers that are gone
 * (a runner killed with SIGKILL mid-step; never those of a live runner on the same state folder, which the
 * temporary names tell apart), and run folders of runs that are no longer running (the runs just aborted,
 * and any whose removal failed before; with exec.keepWorkspace only the former). Nothing there is
 * evidence: outputs went to the blob store as they came.
 */
function removeLeftovers(state: RunnerState, store: Store, config: RunnerConfig, abortedOnOpen: readonly string[], logger: Logger): void {
  const temporaries = state.blobs.removeDeadTemporaries();
  if (temporaries.length > 0) logger.warn({ count: temporaries.length }, 'temporary blobs of dead runners removed');
  let names: string[];
  try {
    names = readdirSync(state.layout.runs);
  } catch {
    return;
  }
  const aborted = new Set(abortedOnOpen);
  for (const runId of names) {
    if (!RUN_ID.test(runId)) continue;
    if (!aborted.has(runId)) {
      if (config.exec.keepWorkspace) continue;
      let running: boolean;
      try {
        running = store.run(runId)?.status === 'running';
      } catch {
        continue;
      }
      if (running) continue; // a live runner's run (a dead one's was just aborted)
    }
    removeRunFolder(store, runId, join(state.layout.runs, runId), logger.child({ runId }));
  }
}

/**
 * Removes a run's folder whatever its depth. A failure is recorded (workspace.not-removed, with its code)
 * and logged; the next open retries. On a full disk the record may fail too: then the log line is all.
 */
export function removeRunFolder(store: Store, runId: string, runDir: string, ops: Logger): boolean {
  try {
    removeTree(runDir);
    return true;
  } catch (err) {
    const code = isCodedError(err) ? err.code : 'EXEC_WORKSPACE_NOT_REMOVED';
    const errno = isCodedError(err) && typeof err.details.errno === 'string' ? err.details.errno : undefined;
    let recorded = true;
    try {
      store.appendRecord('workspace.not-removed', { runId, code, ...(errno !== undefined ? { errno } : {}) }, runId);
    } catch {
      recorded = false;
    }
    ops.warn({ code, errno, recorded }, 'workspace not removed');
    return false;
  }
}

/** Opens a context, runs `fn`, and closes it whatever happens. */
export async function withRunner<T>(stateDir: string, options: OpenRunnerOptions, fn: (ctx: RunnerContext) => T | Promise<T>): Promise<T> {
  const ctx = openRunner(stateDir, options);
  try {
    // Every open resumes what a dead runner left of a change (verifications are async: here, not in openRunner).
    // A resume that fails (a full disk) does not stop the command: status says the change is stuck.
    try {
      await resumeChanges(ctx);
    } catch (err) {
      ctx.logger.error({ code: isCodedError(err) ? err.code : 'RUN_INTERNAL' }, 'changes not resumed');
    }
    return await fn(ctx);
  } finally {
    ctx.close();
  }
}
