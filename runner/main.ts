#!/usr/bin/env node
// Entry point. No top-level await: the single-binary build bundles this file as CommonJS. `--version` is
// answered before the command modules load (they are imported dynamically below, which esbuild turns into
// lazily run module bodies), so ops tooling that polls it pays little more than Node's own start: this file
// imports only runner/config/config.ts (for the environment), runner/sea/runtime.ts and runner/version.ts,
// and those import nothing that does work.
import { writeSync } from 'node:fs';

import { readEnvironment } from './config/config.js';
import { seaVersionInfo, verifyRuntimeEnvironment } from './sea/runtime.js';
import { RUNNER_VERSION } from './version.js';

/**
 * Writes to fd 1 directly. `process.stdout` would first load Node's stream modules, a few milliseconds of
 * CPU that `node -e 0` never spends and that `--version` does not need. A pipe that is full and non-blocking
 * (EAGAIN) gets the rest through process.stdout, which waits for it.
 */
function writeStdout(text: string): void {
  const bytes = Buffer.from(text, 'utf8');
  let offset = 0;
  try {
    while (offset < bytes.length) offset += writeSync(1, bytes, offset);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
    process.stdout.write(bytes.subarray(offset));
  }
}

async function main(argv: string[]): Promise<number> {
  try {
    verifyRuntimeEnvironment(readEnvironment());
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
    writeStdout(
      `edge-runner ${RUNNER_VERSION}\n` +
        (info ? `code sha256:${info.codeSha256}\nnode ${info.node}\n` : 'code sha256: none (not running as the single binary)\n'),
    );
    return 0;
  }
  // First: no step may inherit a descriptor the runner's parent left open (bubblewrap passes them on).
  const { closeInheritedDescriptors } = await import('./cli/descriptors.js');
  closeInheritedDescriptors();
  // `status` alone, without loading every other command (most of a command's start): monitoring runs it often.
  if (argv[2] === 'status') {
    const { runStatusCli } = await import('./cli/status.js');
    return runStatusCli(argv);
  }
  const { runCli } = await import('./cli/index.js');
  return runCli(argv);
}

void main(process.argv).then((code) => {
  process.exitCode = code;
});
