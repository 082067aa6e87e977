import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type BetterSqlite3 from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';

import { installAndLoadAddon, loadSeaNativeBinding, resolveCacheDir } from '../../../runner/sea/addon.js';
import { isSea, parseSeaBuildInfo, seaVersionInfo, verifyRuntimeEnvironment } from '../../../runner/sea/runtime.js';

const require = createRequire(import.meta.url);
const ADDON = readFileSync(require.resolve('better-sqlite3/build/Release/better_sqlite3.node'));
const Database = require('better-sqlite3') as typeof BetterSqlite3;
const root = mkdtempSync(join(tmpdir(), 'edge-runner-addon-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function expectCode(fn: () => unknown, code: string): void {
  expect(fn).toThrow(expect.objectContaining({ code }) as Error);
}

describe('outside the single binary', () => {
  it('is not a SEA, has no build information and no addon to load', () => {
    expect(isSea()).toBe(false);
    expect(seaVersionInfo()).toBeUndefined();
    expect(loadSeaNativeBinding()).toBeUndefined();
  });

  it('accepts NODE_OPTIONS (plain node was asked for) but not NODE_TLS_REJECT_UNAUTHORIZED=0', () => {
    expect(() => verifyRuntimeEnvironment({ NODE_OPTIONS: '--require x' })).not.toThrow();
    expectCode(() => verifyRuntimeEnvironment({ NODE_TLS_REJECT_UNAUTHORIZED: '0' }), 'RUNTIME_TLS_VERIFY_DISABLED');
  });
});

describe('resolveCacheDir', () => {
  it('prefers EDGE_RUNNER_CACHE_DIR, then an absolute XDG_CACHE_HOME, then ~/.cache', () => {
    expect(resolveCacheDir({ EDGE_RUNNER_CACHE_DIR: '/c', XDG_CACHE_HOME: '/x', HOME: '/h' })).toBe('/c');
    expect(resolveCacheDir({ XDG_CACHE_HOME: '/x', HOME: '/h' })).toBe('/x/edge-runner');
    expect(resolveCacheDir({ XDG_CACHE_HOME: 'relative' })).toMatch(/\/\.cache\/edge-runner$/);
  });

  it('refuses a relative EDGE_RUNNER_CACHE_DIR with SEA_CACHE_DIR_INVALID', () => {
    expectCode(() => resolveCacheDir({ EDGE_RUNNER_CACHE_DIR: 'cache' }), 'SEA_CACHE_DIR_INVALID');
  });
});

describe('installAndLoadAddon', () => {
  it('writes the addon once, mode 0500 in a 0700 folder, and loads a working better-sqlite3', () => {
    const dir = join(root, 'fresh', 'cache');
    const binding = installAndLoadAddon(ADDON, dir);
    expect(installAndLoadAddon(ADDON, dir)).toBeDefined();
    const db = new Database(':memory:', { nativeBinding: binding as string });
    expect(db.prepare('select 6 * 7 as answer').get()).toEqual({ answer: 42 });
    const files = readdirSync(dir);
    expect(files).toHaveLength(1);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, files[0] ?? '')).mode & 0o777).toBe(0o500);
  });

  it('refuses a cached file whose bytes do not match its name with SEA_ADDON_DIGEST_MISMATCH', () => {
    const dir = join(root, 'tampered');
    installAndLoadAddon(ADDON, dir);
    const file = join(dir, readdirSync(dir)[0] ?? '');
    chmodSync(file, 0o700);
    writeFileSync(file, Buffer.concat([ADDON, Buffer.from([0])]));
    chmodSync(file, 0o500);
    expectCode(() => installAndLoadAddon(ADDON, dir), 'SEA_ADDON_DIGEST_MISMATCH');
  });

  it('refuses a cache folder that group or others can write with SEA_CACHE_DIR_INSECURE', () => {
    const dir = join(root, 'open');
    mkdirSync(dir, { mode: 0o700 });
    chmodSync(dir, 0o775);
    expectCode(() => installAndLoadAddon(ADDON, dir), 'SEA_CACHE_DIR_INSECURE');
  });

  it('refuses a cached file that others can write with SEA_ADDON_PERMISSIONS', () => {
    const dir = join(root, 'loose');
    installAndLoadAddon(ADDON, dir);
    chmodSync(join(dir, readdirSync(dir)[0] ?? ''), 0o666);
    expectCode(() => installAndLoadAddon(ADDON, dir), 'SEA_ADDON_PERMISSIONS');
  });
});

describe('parseSeaBuildInfo', () => {
  const good = { codeSha256: 'a'.repeat(64), addonSha256: 'b'.repeat(64), node: 'v20.20.2', nodeOptions: 'ignored' };

  it('reads what the build script writes', () => {
    expect(parseSeaBuildInfo(JSON.stringify({ ...good, esbuild: '0.28.2' }))).toEqual(good);
  });

  it('rejects anything else with SEA_BUILD_INFO_INVALID', () => {
    for (const text of ['', 'null', JSON.stringify({ ...good, codeSha256: 'A'.repeat(64) }), JSON.stringify({ ...good, nodeOptions: 'maybe' })]) {
      expectCode(() => parseSeaBuildInfo(text), 'SEA_BUILD_INFO_INVALID');
    }
  });
});
