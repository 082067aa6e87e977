/** `edge-runner status` for the whole command line (help, runCli); runner/main.ts runs status.ts directly. */
import { Command } from 'commander';
import { statusAction, type StatusOptions } from './status.js';

export function statusCommand(): Command {
  return new Command('status')
    .description('Report the runner for monitoring, reading only: exit 0 ok, 1 warning, 2 critical.')
    .requiredOption('--state <dir>', 'the runner state folder')
    .option('--config <file>', 'the configuration file (for the disk reserve and the coordinator); else EDGE_RUNNER_CONFIG')
    .option('--json', 'print machine-readable results')
    .action(async (opts: StatusOptions) => {
      process.exitCode = await statusAction(opts);
    });
}
