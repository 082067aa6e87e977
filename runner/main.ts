#!/usr/bin/env node
// Entry point. No top-level await: the single-binary build bundles this file as CommonJS. `--version` is
// answered before the command modules load (they are imported dynamically below, which esbuild turns into
// lazily run module bodies), so ops tooling that polls it pays little more than Node's own start: this file
// imports only runner/sea/runtime.ts and runner/version.ts, and those import nothing that does work.
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
    let info;
    try {
      info = seaVersionInfo();
    } catch (err) {
      const { printError } = await import('./cli/output.js');
      printError(err);
      return 2;
    }
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
