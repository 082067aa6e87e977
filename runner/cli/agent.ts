import { Command } from 'commander';
import { sandboxLauncherSelector } from '../agent/launcher.js';
import { createLogger } from '../agent/logger.js';
import { RunnerAgent } from '../agent/daemon.js';
import { SpoolAgent } from '../agent/spool-agent.js';
import { openRunner } from '../agent/runner.js';
import { resolveConfig, type ConfigOverrides } from '../config/config.js';
import { SpoolError } from '../spool/errors.js';
import { commandConfigSources } from './config-file.js';
import { cliEnvironment } from './context.js';
import { EXIT } from './output.js';
import { resolve } from 'node:path';

export function agentCommand(): Command {
  return new Command('agent')
    .description(
      'Run as an agent until SIGTERM: take capsules from the coordinator (or, air-gapped, from a spool folder), run them, ship (or spool) their evidence.',
    )
    .requiredOption('--state <dir>', 'the runner state folder')
    .option('--config <file>', 'the configuration file (TOML; a .json name is read as JSON), over runner.json; else EDGE_RUNNER_CONFIG')
    .option('--coordinator <url>', "the coordinator's base URL (over coordinator.url and EDGE_RUNNER_COORDINATOR_URL)")
    .option('--spool <dir>', 'air-gapped: take capsule files from DIR/in/, write answers and checkpoints to DIR/out/ (over spool.dir)')
    .action(async (opts: { state: string; config?: string; coordinator?: string; spool?: string }) => {
      const flags: ConfigOverrides = {
        ...(opts.coordinator === undefined ? {} : { coordinator: { url: opts.coordinator } }),
        ...(opts.spool === undefined ? {} : { spool: { dir: resolve(opts.spool) } }),
      };
      const env = cliEnvironment();
      const sources = commandConfigSources({
        configFlag: opts.config,
        env,
        flags,
        flagNames: { 'coordinator.url': '--coordinator', 'spool.dir': '--spool' },
      });
      // Checked once before the state is opened, so a bad setting is refused before anything else.
      const preview = resolveConfig(sources);
      // One source of work: a spool and a coordinator together would leave it unclear where answers go.
      if (preview.spool.dir !== '' && preview.coordinator.url !== '') {
        throw new SpoolError(
          'SPOOL_WITH_COORDINATOR',
          'Both a spool folder and a coordinator are configured; the agent takes work from one of them: unset spool.dir or coordinator.url.',
        );
      }
      // An agent logs by default (info): it runs unattended, and its operator reads the log.
      const explicitLevel = (env.EDGE_RUNNER_LOG_LEVEL ?? '') !== '' || sources.file?.logLevel !== undefined;
      const logger = createLogger(explicitLevel ? preview.logLevel : 'info');
      const ctx = openRunner(opts.state, { launcher: sandboxLauncherSelector(), config: sources, logger });
      try {
        const agent = ctx.config.spool.dir !== '' ? new SpoolAgent(ctx, { dir: ctx.config.spool.dir }) : new RunnerAgent(ctx);
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
