/**
 * Running capsules in tests the way the CLI does: a runner context opened on a state folder, one capsule
 * through runCapsule, the context closed. `directSelector` spawns steps as they are, in the runner's own
 * identity: for tests of exec itself, never a default of the product.
 */
import type { ConfigOverrides } from '../../runner/config/config.js';
import type { Launcher, LauncherSelector } from '../../runner/agent/launcher.js';
import { withRunner } from '../../runner/agent/runner.js';
import { runCapsule, type CapsuleOutcome } from '../../runner/agent/run-capsule.js';

export const directLauncher: Launcher = {
  isolation: 'none',
  leaderIsStep: true,
  prepare: () => {},
  plan: (argv, env, workspace) => ({ file: argv[0]!, args: argv.slice(1), env, cwd: workspace }),
};

export const directSelector: LauncherSelector = () => directLauncher;

export interface ExecInStateOptions {
  launcher?: LauncherSelector;
  /** Settings as flags would give them (over the defaults and runner.json). */
  flags?: ConfigOverrides;
  clock?: () => Date;
}

export function execInState(stateDir: string, bytes: Buffer, options: ExecInStateOptions = {}): Promise<CapsuleOutcome> {
  return withRunner(
    stateDir,
    {
      launcher: options.launcher ?? directSelector,
      ...(options.flags ? { config: { flags: options.flags } } : {}),
      ...(options.clock ? { clock: options.clock } : {}),
    },
    (ctx) => runCapsule(ctx, bytes),
  );
}
