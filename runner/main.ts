#!/usr/bin/env node
// No top-level await: the single-binary build bundles this file as CommonJS.
import { runCli } from './cli/index.js';

void runCli(process.argv).then((code) => {
  process.exitCode = code;
});
