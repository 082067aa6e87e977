/**
 * How steps are launched on this host. A launcher is chosen per capsule from its isolation requirement;
 * isolation is probed once per selector (bwrap is actually tried), and a capsule that requires isolation the
 * host cannot give is rejected before anything runs. There is no default launcher: the runner context is
 * always handed one (the CLI hands it `sandboxLauncherSelector()`).
 */
import type { RunnerConfig } from '../config/config.js';
import { isCodedError } from '../core/errors.js';
import type { IsolationUsed } from '../evidence/statement.js';
import {
  grantWorkspaceToStep,
  planLaunch,
  probeIsolation,
  selectIsolation,
  type IsolationProbe,
  type LaunchPlan,
  type SandboxConfig,
  type StepLimits,
} from '../exec/sandbox.js';

export interface Launcher {
  /** The isolation this launcher gives; recorded in the evidence. */
  isolation: IsolationUsed;
  /** False when the launched process is a wrapper (bwrap) rather than the step itself. */
  leaderIsStep: boolean;
  /** Called once the inputs are written, before any step: e.g. hand the workspace to the step user. */
  prepare(workspace: string): void;
  plan(argv: string[], env: Record<string, string>, workspace: string): LaunchPlan;
}

export interface LauncherContext {
  /** The runner's state folder, hidden from every step. */
  stateDir: string;
  /** The runner's configuration: limits, step user, where the tools are. */
  config: RunnerConfig;
}

export type LauncherSelector = (requirement: 'required' | 'best-effort', context: LauncherContext) => Launcher | { unavailable: string };

/** The sandbox settings a configuration implies. */
export function sandboxConfigOf(config: RunnerConfig): SandboxConfig {
  return { runAsUid: config.stepUser.uid, runAsGid: config.stepUser.gid, searchPath: config.toolSearchPath };
}

/**
 * The production launcher: bwrap when it works here, with the configured limits and step user; 'none' only
 * for a best-effort capsule on a root runner (steps then still run as the step user, with limits).
 * `overrides` replace what the configuration implies (tests point bwrapPath elsewhere).
 */
export function sandboxLauncherSelector(overrides: SandboxConfig = {}): LauncherSelector {
  return (requirement, { stateDir, config }) => {
    const sandbox: SandboxConfig = { ...sandboxConfigOf(config), ...overrides };
    const limits: StepLimits = { ...config.limits };
    // Probed once per sandbox configuration and process (bwrap is actually run), then cached.
    const probe: IsolationProbe = probeIsolation(sandbox);
    let mode;
    try {
      mode = selectIsolation(requirement, probe);
    } catch (err) {
      if (isCodedError(err)) return { unavailable: 'bubblewrap (bwrap) is missing or cannot create namespaces here' };
      throw err;
    }
    // Without bwrap, a step of a non-root runner would run as the runner itself: able to read its key and
    // reach the network. Only a root runner can fall back to 'none' (steps then run as the step user).
    if (mode === 'none' && (sandbox.runnerUid ?? process.getuid?.()) !== 0) {
      return { unavailable: 'without bubblewrap, a runner that is not root cannot keep a step away from its own key' };
    }
    return {
      isolation: mode,
      leaderIsStep: mode !== 'bwrap',
      prepare: (workspace) => {
        grantWorkspaceToStep(workspace, sandbox);
      },
      // The state folder (keys, database, evidence) is hidden from every step; only its workspace shows.
      plan: (argv, env, workspace) => planLaunch({ argv, env, workspace, limits, mode, hide: [stateDir] }, sandbox),
    };
  };
}
