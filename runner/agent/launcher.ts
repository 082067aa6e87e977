/**
 * How steps are launched on this host. Isolation is probed once per process (bwrap is actually tried);
 * a capsule that requires isolation the host cannot give is rejected before anything runs.
 */
import { isCodedError } from '../core/errors.js';
import {
  DEFAULT_STEP_LIMITS,
  grantWorkspaceToStep,
  planLaunch,
  probeIsolation,
  selectIsolation,
  type IsolationProbe,
  type SandboxConfig,
  type StepLimits,
} from '../exec/sandbox.js';
import type { Launcher, LauncherSelector } from './exec-capsule.js';

export function sandboxLauncherSelector(config: SandboxConfig = {}, limits: StepLimits = DEFAULT_STEP_LIMITS): LauncherSelector {
  let probe: IsolationProbe | undefined; // probed on first use, once per selector (bwrap is actually run)
  return (requirement, { stateDir, stepUser }) => {
    const sandbox: SandboxConfig = stepUser ? { ...config, runAsUid: stepUser.uid, runAsGid: stepUser.gid } : config;
    probe ??= probeIsolation(config);
    let mode;
    try {
      mode = selectIsolation(requirement, probe);
    } catch (err) {
      if (isCodedError(err)) return { unavailable: 'bubblewrap (bwrap) is missing or cannot create namespaces here' };
      throw err;
    }
    // Without bwrap, a step of a non-root runner would run as the runner itself: able to read its key and
    // reach the network. Only a root runner can fall back to 'none' (steps then run as uid 65534).
    if (mode === 'none' && (config.runnerUid ?? process.getuid?.()) !== 0) {
      return { unavailable: 'without bubblewrap, a runner that is not root cannot keep a step away from its own key' };
    }
    const launcher: Launcher = {
      isolation: mode,
      leaderIsStep: mode !== 'bwrap',
      prepare: (workspace) => {
        grantWorkspaceToStep(workspace, sandbox);
      },
      // The state folder (keys, database, evidence) is hidden from every step; only its workspace shows.
      plan: (argv, env, workspace) => planLaunch({ argv, env, workspace, limits, mode, hide: [stateDir] }, sandbox),
    };
    return launcher;
  };
}

export const selectLauncher: LauncherSelector = sandboxLauncherSelector();
