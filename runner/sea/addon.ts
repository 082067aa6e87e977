/**
 * The better-sqlite3 addon inside the single binary. A `.node` file can only be loaded from a file, so the
 * binary carries it as the SEA asset `better_sqlite3.node` and, on first use, writes it into a private
 * cache folder under a name that is its SHA-256, then loads it with `process.dlopen`:
 *
 *   - the folder: $EDGE_RUNNER_CACHE_DIR, else $XDG_CACHE_HOME/edge-runner, else ~/.cache/edge-runner;
 *     created mode 0700; refused if another user owns it or group or others can write it;
 *   - the file: better_sqlite3-<sha256>.node, written to a temporary name in the same folder and renamed,
 *     so binaries starting at once on an empty cache each see either no file or a whole one;
 *   - before every load, the bytes on disk are hashed again, through the same open descriptor that is then
 *     loaded (/proc/self/fd/N), so what is loaded is what was checked. A file whose digest does not match
 *     its name is never ours (we only rename complete files into place): the runner refuses it with
 *     SEA_ADDON_DIGEST_MISMATCH rather than silently replacing the evidence.
 *
 * Usage (runner/store/db.ts): `new Database(path, { nativeBinding: loadSeaNativeBinding() })`. Outside the
 * binary it returns undefined and better-sqlite3 finds its addon in node_modules as usual.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fchmodSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
  constants as fsConstants,
} from 'node:fs';
import { constants as osConstants, homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

import { SeaError } from './errors.js';
import { SEA_ADDON_ASSET, getSeaApi } from './runtime.js';

export { seaVersionInfo, verifyRuntimeEnvironment } from './runtime.js';

export const ADDON_FILE_PREFIX = 'better_sqlite3-';
export const ADDON_FILE_SUFFIX = '.node';
/** Attempts to find a whole file after writing one (another process may rename over ours meanwhile). */
const MAX_INSTALL_ATTEMPTS = 3;

let loaded: unknown;

/**
 * The loaded better-sqlite3 addon when running as the single binary, to pass to better-sqlite3 as
 * `nativeBinding`; undefined otherwise (one cached built-in lookup). Loads once per process.
 * Throws SeaError: SEA_CACHE_DIR_INVALID, SEA_CACHE_DIR_INSECURE, SEA_ADDON_MISSING, SEA_ADDON_PERMISSIONS,
 * SEA_ADDON_DIGEST_MISMATCH, SEA_ADDON_WRITE_FAILED, SEA_ADDON_LOAD_FAILED.
 */
export function loadSeaNativeBinding(env: NodeJS.ProcessEnv = process.env): unknown {
  const sea = getSeaApi();
  if (!sea) return undefined;
  if (loaded !== undefined) return loaded;
  let raw: string | ArrayBuffer;
  try {
    raw = sea.getRawAsset(SEA_ADDON_ASSET);
  } catch (cause) {
    throw new SeaError('SEA_ADDON_MISSING', 'the binary carries no SQLite addon', { asset: SEA_ADDON_ASSET }, { cause });
  }
  // getRawAsset is zero-copy over the binary's own mapped bytes; the view is only read.
  const bytes = typeof raw === 'string' ? Buffer.from(raw, 'latin1') : new Uint8Array(raw);
  loaded = installAndLoadAddon(bytes, resolveCacheDir(env));
  return loaded;
}

/** $EDGE_RUNNER_CACHE_DIR, else $XDG_CACHE_HOME/edge-runner (if absolute, per the XDG spec), else ~/.cache/edge-runner. */
export function resolveCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.EDGE_RUNNER_CACHE_DIR;
  if (explicit !== undefined && explicit !== '') {
    if (!isAbsolute(explicit)) {
      throw new SeaError('SEA_CACHE_DIR_INVALID', 'EDGE_RUNNER_CACHE_DIR must be an absolute path', { dir: explicit });
    }
    return explicit;
  }
  const xdg = env.XDG_CACHE_HOME;
  if (xdg !== undefined && isAbsolute(xdg)) return join(xdg, 'edge-runner');
  let home: string;
  try {
    home = homedir();
  } catch (cause) {
    throw new SeaError('SEA_CACHE_DIR_INVALID', 'no home folder to put the cache in; set EDGE_RUNNER_CACHE_DIR', {}, { cause });
  }
  return join(home, '.cache', 'edge-runner');
}

/** Creates the folder mode 0700 if absent; refuses one another user owns or that group or others can write. */
export function ensurePrivateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (cause) {
    throw new SeaError('SEA_CACHE_DIR_INVALID', `cannot create the cache folder ${dir}`, { dir }, { cause });
  }
  const st = statSync(dir);
  if (!st.isDirectory()) {
    throw new SeaError('SEA_CACHE_DIR_INVALID', `the cache folder ${dir} is not a folder`, { dir });
  }
  const uid = process.geteuid?.();
  if ((uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0) {
    throw new SeaError(
      'SEA_CACHE_DIR_INSECURE',
      `the cache folder ${dir} must belong to this user and not be writable by group or others (chmod 700)`,
      { dir, mode: (st.mode & 0o777).toString(8), ownerUid: st.uid, uid },
    );
  }
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Installs `bytes` as `better_sqlite3-<sha256>.node` in `cacheDir` (unless a whole copy is there), checks
 * the digest of what is on disk and loads it. Exported for tests, which run it with the addon from
 * node_modules outside the binary.
 */
export function installAndLoadAddon(bytes: Uint8Array, cacheDir: string): unknown {
  const digest = sha256Hex(bytes);
  ensurePrivateDir(cacheDir);
  const file = join(cacheDir, `${ADDON_FILE_PREFIX}${digest}${ADDON_FILE_SUFFIX}`);
  for (let attempt = 1; ; attempt++) {
    const fd = openIfPresent(file);
    if (fd === undefined) {
      if (attempt > MAX_INSTALL_ATTEMPTS) {
        throw new SeaError('SEA_ADDON_WRITE_FAILED', `the SQLite addon did not stay in ${cacheDir}`, { file, attempt });
      }
      writeAtomically(cacheDir, file, digest, bytes);
      continue;
    }
    try {
      verifyAddonFile(fd, file, digest);
      return dlopenDescriptor(fd, file);
    } finally {
      closeSync(fd);
    }
  }
}

function openIfPresent(file: string): number | undefined {
  try {
    return openSync(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SeaError('SEA_ADDON_PERMISSIONS', `cannot open the cached SQLite addon ${file}`, { file }, { cause: err });
  }
}

function verifyAddonFile(fd: number, file: string, expected: string): void {
  const st = fstatSync(fd);
  const uid = process.geteuid?.();
  if (!st.isFile() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0) {
    throw new SeaError(
      'SEA_ADDON_PERMISSIONS',
      `the cached SQLite addon ${file} must be a file of this user that group and others cannot write`,
      { file, mode: (st.mode & 0o777).toString(8), ownerUid: st.uid, uid },
    );
  }
  const actual = sha256Hex(readFileSync(fd));
  if (actual !== expected) {
    throw new SeaError(
      'SEA_ADDON_DIGEST_MISMATCH',
      `the cached SQLite addon ${file} does not match its digest; it was changed after it was written. ` +
        'Keep it for investigation, then delete it: the runner writes a fresh copy',
      { file, expected, actual },
    );
  }
}

/** Loads the very file behind `fd` (Linux /proc/self/fd), so nothing can be swapped in after the check. */
function dlopenDescriptor(fd: number, file: string): unknown {
  const target = existsSync('/proc/self/fd') ? `/proc/self/fd/${fd}` : file;
  const mod: { exports: unknown } = { exports: {} };
  try {
    process.dlopen(mod, target, osConstants.dlopen.RTLD_NOW);
  } catch (cause) {
    throw new SeaError(
      'SEA_ADDON_LOAD_FAILED',
      `cannot load the SQLite addon from ${file} (is the cache folder on a noexec mount, or the host's glibc or libstdc++ too old?)`,
      { file, reason: (cause as Error).message },
      { cause },
    );
  }
  return mod.exports;
}

function writeAtomically(dir: string, file: string, digest: string, bytes: Uint8Array): void {
  const tmp = join(dir, `.${ADDON_FILE_PREFIX}${digest}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    fchmodSync(fd, 0o500);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, file); // atomic within one folder; a concurrent writer's identical copy may replace ours
  } catch (cause) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // already renamed, or never created
    }
    throw new SeaError('SEA_ADDON_WRITE_FAILED', `cannot write the SQLite addon into ${dir}`, { dir }, { cause });
  }
}
