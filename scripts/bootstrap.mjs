#!/usr/bin/env node
// Installs dependencies when they are missing or stale, so `npm test` and `npm run demo` work on a fresh
// clone. Uses `npm ci` (the lockfile, exactly) and checks the native SQLite addon actually loads.
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const marker = join(root, 'node_modules', '.package-lock.json');
const lock = join(root, 'package-lock.json');

function addonLoads() {
  try {
    const require = createRequire(join(root, 'package.json'));
    const Database = require('better-sqlite3');
    new Database(':memory:').close();
    return true;
  } catch {
    return false;
  }
}

const [major] = process.versions.node.split('.').map(Number);
if (major !== 20) {
  console.error(`edge-runner needs Node.js 20 (found ${process.versions.node}).`);
  process.exit(2);
}
const stale = !existsSync(marker) || statSync(marker).mtimeMs < statSync(lock).mtimeMs;
if (stale || !addonLoads()) {
  console.error('bootstrap: installing dependencies with npm ci ...');
  execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' });
  if (!addonLoads()) {
    console.error('bootstrap: better-sqlite3 does not load after install; is a C++ toolchain (g++, make, python3) present?');
    process.exit(2);
  }
}

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
