/**
 * What every command that acts on a state folder shares: the environment read once, the production
 * launcher, and a runner context opened and closed around the command (runner/agent/runner.ts).
 */
import { readEnvironment, resolveConfig, type RunnerConfig } from '../config/config.js';
import { sandboxLauncherSelector } from '../agent/launcher.js';
import { createLogger } from '../agent/logger.js';
import { withRunner, type RunnerContext } from '../agent/runner.js';
import { commandConfigSources } from './config-file.js';

/** The process environment, read once for the whole command line. */
let environment: Readonly<Record<string, string | undefined>> | undefined;

export function cliEnvironment(): Readonly<Record<string, string | undefined>> {
  environment ??= readEnvironment();
  return environment;
}

/** The configuration before any state folder is read (defaults < environment): logging, debug output. */
export function cliConfig(): RunnerConfig {
  return resolveConfig({ env: cliEnvironment() });
}

/**
 * Opens the runner context for `stateDir`, runs the command in it, and closes it. The configuration file is
 * `configFile` (a command's `--config`) or the one EDGE_RUNNER_CONFIG names, when either does.
 */
export function inRunner<T>(stateDir: string, fn: (ctx: RunnerContext) => T | Promise<T>, options: { configFile?: string } = {}): Promise<T> {
  const config = commandConfigSources({ configFlag: options.configFile, env: cliEnvironment() });
  return withRunner(stateDir, { launcher: sandboxLauncherSelector(), config, logger: createLogger(cliConfig().logLevel) }, fn);
}
