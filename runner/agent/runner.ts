/**
 * The runner context: built once, held for as long as the process runs (one CLI command, or a daemon's whole
 * life), and passed to everything that acts. Like tuf-js's Updater and Buildkite's AgentWorker, it is the one
 * composition root: the state folder (identity, key, pinned trust), one open store, the configuration, the
 * clock, the launcher and the logger. Opening it closes the runs that a dead runner left behind, so the log
 * is consistent before anything new is appended.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { resolveConfig, type ConfigSources, type RunnerConfig } from '../config/config.js';
import { loadState, type RunnerState } from '../state/state.js';
import { Store } from '../store/store.js';
import type { LauncherSelector } from './launcher.js';
import { silentLogger, type Logger } from './logger.js';

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
  const state = loadState(stateDir, clock());
  const config = configOf(state, options.config);
  const logger = options.logger ?? silentLogger;
  const store = Store.open(state.layout.database, { busyTimeoutMs: config.store.busyTimeoutMs, now: clock });
  let abortedOnOpen: string[];
  try {
    abortedOnOpen = store.abortInterruptedRuns();
  } catch (err) {
    store.close();
    throw err;
  }
  for (const runId of abortedOnOpen) {
    // The dead runner's workspace: nothing in it is evidence (outputs went to the blob store as they came).
    if (/^[0-9a-f-]{36}$/.test(runId)) rmSync(join(state.layout.runs, runId), { recursive: true, force: true });
    logger.warn({ runId }, 'run of a runner that died recorded as aborted');
  }
  let closed = false;
  return {
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
}

/** Opens a context, runs `fn`, and closes it whatever happens. */
export async function withRunner<T>(stateDir: string, options: OpenRunnerOptions, fn: (ctx: RunnerContext) => T | Promise<T>): Promise<T> {
  const ctx = openRunner(stateDir, options);
  try {
    return await fn(ctx);
  } finally {
    ctx.close();
  }
}
