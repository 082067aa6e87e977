#!/usr/bin/env node
// Entry point. No top-level await: the single-binary build bundles this file as CommonJS. `--version` is
// answered before the command modules load, so ops tooling that polls it pays only Node's own start.
import { seaVersionInfo, verifyRuntimeEnvironment } from './sea/runtime.js';
import { RUNNER_VERSION } from './version.js';

async function main(argv: string[]): Promise<number> {
  try {
    verifyRuntimeEnvironment();
  } catch (err) {
    const { printError } = await import('./cli/output.js');
    printError(err);
    return 2;
  }
  if (argv[2] === '--version' || argv[2] === '-V') {
    const info = seaVersionInfo();
    process.stdout.write(`edge-runner ${RUNNER_VERSION}\n`);
    process.stdout.write(info ? `code sha256:${info.codeSha256}\nnode ${info.node}\n` : 'code sha256: none (not running as the single binary)\n');
    return 0;
  }
  const { runCli } = await import('./cli/index.js');
  return runCli(argv);
}

void main(process.argv).then((code) => {
  process.exitCode = code;
});
