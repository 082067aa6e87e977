import { Command } from 'commander';
import { sandboxLauncherSelector } from '../agent/launcher.js';
import { createLogger } from '../agent/logger.js';
import { RunnerAgent } from '../agent/daemon.js';
import { openRunner } from '../agent/runner.js';
import { resolveConfig, type ConfigOverrides } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { parseJson } from '../core/json.js';
import { cliEnvironment } from './context.js';
import { readFileCapped } from './files.js';
import { EXIT, UsageError } from './output.js';

/** A configuration file is small: settings, never data. */
const CONFIG_FILE_MAX_BYTES = 64 * 1024;

export function agentCommand(): Command {
  return new Command('agent')
    .description('Run as an agent until SIGTERM: take capsules from the coordinator, run them, ship their evidence.')
    .requiredOption('--state <dir>', 'the runner state folder')
    .option('--config <file>', 'a JSON file of settings (the shape of runner.json "settings"), over runner.json')
    .option('--coordinator <url>', "the coordinator's base URL (over coordinator.url and EDGE_RUNNER_COORDINATOR_URL)")
    .action(async (opts: { state: string; config?: string; coordinator?: string }) => {
      const file = opts.config === undefined ? undefined : readConfigFile(opts.config);
      const flags: ConfigOverrides = opts.coordinator === undefined ? {} : { coordinator: { url: opts.coordinator } };
      const env = cliEnvironment();
      // Checked once before the state is opened, so a bad setting is refused before anything else.
      const preview = resolveConfig({ env, ...(file ? { file } : {}), flags });
      // An agent logs by default (info): it runs unattended, and its operator reads the log.
      const explicitLevel = (env.EDGE_RUNNER_LOG_LEVEL ?? '') !== '' || file?.logLevel !== undefined;
      const logger = createLogger(explicitLevel ? preview.logLevel : 'info');
      const ctx = openRunner(opts.state, { launcher: sandboxLauncherSelector(), config: { env, ...(file ? { file } : {}), flags }, logger });
      try {
        const agent = new RunnerAgent(ctx);
        // Listening for as long as the agent runs: a second signal aborts the running step at once (stop()),
        // where Node's default would kill the agent before it records the run and flushes.
        const stop = () => agent.stop();
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
        try {
          await agent.run();
        } finally {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
        }
      } finally {
        ctx.close();
      }
      process.exitCode = EXIT.ok;
    });
}

function readConfigFile(path: string): ConfigOverrides {
  const { bytes, size } = readFileCapped(path, CONFIG_FILE_MAX_BYTES);
  if (size > CONFIG_FILE_MAX_BYTES) throw new UsageError(`The configuration file ${path} is larger than ${CONFIG_FILE_MAX_BYTES} bytes.`);
  let value: unknown;
  try {
    value = parseJson(bytes);
  } catch {
    throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} is not valid JSON.`, { setting: path, source: 'file' });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} is not a JSON object of settings.`, { setting: path, source: 'file' });
  }
  return value as ConfigOverrides;
}
