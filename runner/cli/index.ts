/** The command line: the contract other tools and auditors rely on. One file per command. */
import { Command, CommanderError } from 'commander';
import { agentCommand } from './agent.js';
import { approveCommand } from './approve.js';
import { capsuleCommand } from './capsule.js';
import { configCommand } from './config.js';
import { execCommand } from './exec.js';
import { initCommand } from './init.js';
import { keygenCommand } from './keygen.js';
import { logCommand } from './log.js';
import { cliConfig } from './context.js';
import { EXIT, exitCodeFor, printError } from './output.js';
import { statusCommand } from './status-command.js';
import { trustCommand } from './trust.js';
import { verifyCommand } from './verify.js';
import { changeCommand } from './change.js';

export function buildProgram(): Command {
  const program = new Command('edge-runner')
    .description('A signed agent for regulated enclaves: verified capsules in, signed evidence out.')
    .option('-V, --version', 'print the version and the digest of the embedded code (answered by main.ts)')
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) })
    .showHelpAfterError(false);
  for (const command of [
    keygenCommand(),
    trustCommand(),
    initCommand(),
    capsuleCommand(),
    execCommand(),
    verifyCommand(),
    approveCommand(),
    changeCommand(),
    logCommand(),
    agentCommand(),
    statusCommand(),
    configCommand(),
  ]) {
    program.addCommand(command);
  }
  for (const command of program.commands) {
    command.exitOverride();
    for (const sub of command.commands) sub.exitOverride();
  }
  return program;
}

export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  // A LOG_ error of `log export` is its own verification of what it writes failing: exit 1, as `log verify`.
  const verifying =
    argv[2] === 'verify' || (argv[2] === 'trust' && argv[3] === 'show') || (argv[2] === 'log' && (argv[3] === 'verify' || argv[3] === 'export'));
  process.exitCode = undefined;
  try {
    await program.parseAsync(argv);
    if (argv.length <= 2) {
      program.outputHelp();
      return EXIT.usage;
    }
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version') return EXIT.ok;
      return EXIT.usage;
    }
    let debug = false;
    try {
      debug = cliConfig().debug;
    } catch {
      // The environment itself is what failed; the error says so.
    }
    printError(err, { debug });
    return exitCodeFor(err, verifying);
  }
}
