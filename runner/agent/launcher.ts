/**
 * How steps are launched on this host. A launcher is chosen per capsule from its isolation requirement;
 * isolation is probed once per selector (bwrap is actually tried), and a capsule that requires isolation the
 * host cannot give is rejected before anything runs. There is no default launcher: the runner context is
 * always handed one (the CLI hands it `sandboxLauncherSelector()`).
 *
 * Under bwrap each step gets its own memory cgroup when the runner can make one (exec/cgroup.ts; found once
 * per process), else per-process rlimits only; which one is the launcher's `sandbox.memoryBound`, recorded
 * in the evidence. With `sandbox.requireMemoryCgroup` a host without a usable cgroup runs nothing.
 */
import type { RunnerConfig } from '../config/config.js';
import { isCodedError } from '../core/errors.js';
import type { IsolationUsed, SandboxUsed } from '../evidence/statement.js';
import { SYSCALL_FILTER } from '../exec/seccomp.js';
import { createStepCgroup, findMemoryCgroupParent, removeDeadStepCgroups, type MemoryCgroupParent } from '../exec/cgroup.js';
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
import { SandboxError } from '../exec/sandbox-errors.js';
import type { ResourceMount } from '../exec/resources.js';

export interface Launcher {
  /** The isolation this launcher gives; recorded in the evidence. */
  isolation: IsolationUsed;
  /** What the steps see and what bounds their memory; recorded in the evidence when given. */
  sandbox?: SandboxUsed;
  /** False when the launched process is a wrapper (bwrap) rather than the step itself. */
  leaderIsStep: boolean;
  /** Called once the inputs are written, before any step: e.g. hand the workspace to the step user. */
  prepare(workspace: string): void;
  /** `resources`: the run's granted resources to bind (exec/resources.ts); only a bwrap launcher takes them. */
  plan(argv: string[], env: Record<string, string>, workspace: string, resources?: readonly ResourceMount[]): LaunchPlan;
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
  return {
    runAsUid: config.stepUser.uid,
    runAsGid: config.stepUser.gid,
    searchPath: config.toolSearchPath,
    systemFolders: config.sandbox.systemFolders,
    tmpBytes: config.sandbox.tmpBytes,
    shmBytes: config.sandbox.shmBytes,
  };
}

const cgroupParents = new Map<string, { parent: MemoryCgroupParent } | { reason: string }>();

/**
 * Where step cgroups go, found (and tried) once per configured folder and process; the step cgroups that
 * runners killed mid-step left there are removed then (review F6: they would pile up to the kernel's limit).
 */
function memoryCgroupParent(configured: string): { parent: MemoryCgroupParent } | { reason: string } {
  let found = cgroupParents.get(configured);
  if (!found) {
    found = findMemoryCgroupParent(configured);
    if ('parent' in found) removeDeadStepCgroups(found.parent);
    cgroupParents.set(configured, found);
  }
  return found;
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
    // Only bwrap can hold a step until it is in its cgroup; without bwrap the rlimits are all there is.
    const cgroup = mode === 'bwrap' ? memoryCgroupParent(config.sandbox.memoryCgroup) : { reason: 'steps run without bwrap' };
    if (config.sandbox.requireMemoryCgroup && !('parent' in cgroup)) {
      return { unavailable: 'the configuration requires a memory cgroup per step, and none can be made here' };
    }
    const parent = 'parent' in cgroup ? cgroup.parent : undefined;
    const used: SandboxUsed =
      mode === 'bwrap'
        ? {
            systemFolders: [...(sandbox.systemFolders ?? [])],
            memoryBound: parent ? (parent.version === 2 ? 'cgroup-v2' : 'cgroup-v1') : 'rlimit',
            syscallFilter: SYSCALL_FILTER,
          }
        : { memoryBound: 'rlimit' };
    return {
      isolation: mode,
      sandbox: used,
      leaderIsStep: mode !== 'bwrap',
      prepare: (workspace) => {
        grantWorkspaceToStep(workspace, sandbox);
      },
      // The state folder (keys, database, evidence) is hidden from every step; only its workspace shows.
      // A step's cgroup is made with its plan; runStep removes it when the step is over (endLaunch).
      plan: (argv, env, workspace, resources) =>
        planLaunch(
          {
            argv,
            env,
            workspace,
            limits,
            mode,
            hide: [stateDir],
            ...(resources?.length ? { resources } : {}),
            ...(parent ? { cgroup: toStepCgroup(parent, limits.memoryBytes) } : {}),
          },
          sandbox,
        ),
    };
  };
}

function toStepCgroup(parent: MemoryCgroupParent, memoryBytes: number) {
  try {
    return createStepCgroup(parent, memoryBytes);
  } catch (err) {
    if (isCodedError(err)) throw err;
    throw new SandboxError(
      'EXEC_SANDBOX_CGROUP',
      'The step memory cgroup could not be made; the step does not run.',
      {
        code: (err as NodeJS.ErrnoException).code ?? 'unknown',
      },
      { cause: err },
    );
  }
}
