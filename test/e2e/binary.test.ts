/**
 * The single executable, as an ops team gets it: dist/edge-runner copied alone into an empty folder and run
 * with a clean environment (only PATH=/usr/bin:/bin, plus a HOME and a cache folder inside the test's
 * folder), with no node_modules anywhere above it.
 *
 * This file builds nothing: CI runs `npm run build:binary` first, and here a missing binary fails the run
 * when CI is set and skips these tests otherwise. The one exception is the addon probe (see below), a small
 * second binary built by the same pipeline, until a CLI command opens a database.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIST_BINARY = join(ROOT, 'dist/edge-runner');
const DIST_BUNDLE = join(ROOT, 'dist/sea/main.cjs');
const CLEAN_PATH = '/usr/bin:/bin';
const HEX64 = /\b[0-9a-f]{64}\b/;

const binaryPresent = existsSync(DIST_BINARY);
const inCi = Boolean(process.env.CI);

interface BinaryResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A fresh empty folder holding one copy of a binary, its own HOME and its own cache folder. */
interface Sandbox {
  dir: string;
  bin: string;
  home: string;
  cacheDir: string;
}

interface RunBinaryOptions {
  sandbox: Sandbox;
  /** Added to the clean environment; `undefined` removes a default (e.g. EDGE_RUNNER_CACHE_DIR). */
  env?: Record<string, string | undefined>;
  cwd?: string;
  input?: string | Buffer;
  timeoutMs?: number;
}

const sandboxes: string[] = [];

function makeSandbox(binary: string = DIST_BINARY): Sandbox {
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-e2e-'));
  sandboxes.push(dir);
  const bin = join(dir, 'edge-runner');
  copyFileSync(binary, bin);
  chmodSync(bin, 0o755);
  const home = join(dir, 'home');
  mkdirSync(home, { mode: 0o700 });
  return { dir, bin, home, cacheDir: join(dir, 'cache') };
}

/**
 * Runs the sandbox's binary as `env -i PATH=/usr/bin:/bin HOME=<sandbox>/home EDGE_RUNNER_CACHE_DIR=<sandbox>/cache`:
 * the environment below replaces the test's own entirely.
 */
function runBinary(args: string[], opts: RunBinaryOptions): Promise<BinaryResult> {
  const env: Record<string, string> = {};
  const wanted = { PATH: CLEAN_PATH, HOME: opts.sandbox.home, EDGE_RUNNER_CACHE_DIR: opts.sandbox.cacheDir, ...opts.env };
  for (const [key, value] of Object.entries(wanted)) if (value !== undefined) env[key] = value;
  return new Promise((resolve, reject) => {
    const child = spawn(opts.sandbox.bin, args, {
      cwd: opts.cwd ?? opts.sandbox.dir,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 20_000,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) =>
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }),
    );
    child.stdin.end(opts.input ?? '');
  });
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function cachedAddons(dir: string): string[] {
  return readdirSync(dir).filter((name) => /^better_sqlite3-[0-9a-f]{64}\.node$/.test(name));
}

describe('the single binary (dist/edge-runner)', () => {
  if (!binaryPresent) {
    if (inCi) {
      it('exists', () => {
        throw new Error(`${DIST_BINARY} is missing: CI must run \`npm run build:binary\` before the tests`);
      });
    } else {
      it.skip('is not built (run `npm run build:binary` to run these tests)', () => {});
    }
    return;
  }

  afterAll(() => {
    for (const dir of sandboxes) rmSync(dir, { recursive: true, force: true });
  });

  describe('--version', () => {
    it('prints the version and the SHA-256 of the embedded code, alone in an empty folder', async () => {
      const sandbox = makeSandbox();
      const res = await runBinary(['--version'], { sandbox });
      expect(res.stderr).toBe('');
      expect(res.code).toBe(0);
      expect(res.stdout).toMatch(/^edge-runner \d+\.\d+\.\d+/);
      const digest = HEX64.exec(res.stdout)?.[0];
      expect(digest, 'a 64-hex code digest in the --version output').toBeDefined();
      if (existsSync(DIST_BUNDLE)) expect(digest).toBe(sha256Hex(readFileSync(DIST_BUNDLE)));
      expect(readdirSync(sandbox.dir).sort()).toEqual(['edge-runner', 'home']);
    });
  });

  describe('when NODE_OPTIONS asks to --require a script', () => {
    it('does not run that script (the build switched NODE_OPTIONS off in this binary)', async () => {
      const sandbox = makeSandbox();
      const marker = join(sandbox.dir, 'injected.ran');
      const script = join(sandbox.dir, 'inject.cjs');
      writeFileSync(script, `require('fs').writeFileSync(${JSON.stringify(marker)}, 'ran'); console.log('INJECTED');\n`);
      for (const nodeOptions of [`--require=${script}`, `-r ${script}`, '--max-old-space-size=16 --inspect']) {
        const res = await runBinary(['--version'], { sandbox, env: { NODE_OPTIONS: nodeOptions } });
        expect(existsSync(marker), `NODE_OPTIONS=${nodeOptions} ran code in the binary`).toBe(false);
        expect(res.stdout).not.toContain('INJECTED');
        // Neutralised: the binary runs as without it (a build that could not switch it off refuses instead).
        if (res.code === 0) expect(res.stderr).toBe('');
        else expect(res.stderr).toContain('RUNTIME_NODE_OPTIONS_SET');
      }
    });
  });

  // The demo script drives the copied binary (EDGE_RUNNER_BIN) with env -i PATH=/usr/bin:/bin, HOME and the
  // cache folder: keygen, trust sign, init, pack, exec (bwrap), verify, and a tampered capsule refused.
  describe('the full flow', () => {
    it('keygen, trust sign, init, pack, exec, verify, and refuses a tampered capsule', async () => {
      const sandbox = makeSandbox();
      const work = join(sandbox.dir, 'work');
      mkdirSync(work);
      const demo = join(ROOT, 'scripts/demo.mjs');
      const result = await new Promise<BinaryResult>((resolve, reject) => {
        const child = spawn(process.execPath, [demo], {
          cwd: sandbox.dir,
          env: { PATH: CLEAN_PATH, EDGE_RUNNER_BIN: sandbox.bin, EDGE_RUNNER_DEMO_DIR: work, EDGE_RUNNER_CACHE_DIR: sandbox.cacheDir },
          timeout: 120_000,
        });
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        child.stdout.on('data', (c: Buffer) => out.push(c));
        child.stderr.on('data', (c: Buffer) => err.push(c));
        child.on('error', reject);
        child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
      });
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/validate-ledger\s+verdict PASS/);
      expect(result.stdout).toMatch(/reproduce-rounding\s+verdict FAIL/);
      expect(result.stdout).toContain('2/2 bundles verify offline');
      expect(result.stdout).toMatch(/log\s+10 records, \d+ signed checkpoints verify; consistent with/);
      expect(result.stdout).toMatch(/refused with CAPSULE_INPUT_DIGEST, nothing executed/);
      // The addon was written once into the sandbox's own cache, nowhere near a node_modules.
      expect(readdirSync(sandbox.cacheDir).filter((f) => f.endsWith('.node'))).toHaveLength(1);
    }, 150_000);
  });
});

/**
 * The better-sqlite3 addon inside a single binary, exercised through a probe: a second SEA built by the
 * same pipeline (scripts/build-binary.mjs) from a few lines that load the addon with loadSeaNativeBinding()
 * and open an in-memory database. It stands in for a CLI command that opens the database (ask: an
 * `edge-runner doctor`); then these tests can run against dist/edge-runner itself.
 */
const PROBE_SOURCE = `
import Database from 'better-sqlite3';
import { loadSeaNativeBinding } from './runner/sea/addon.ts';
try {
  const nativeBinding = loadSeaNativeBinding();
  if (nativeBinding === undefined) throw Object.assign(new Error('not a single executable'), { code: 'PROBE_NOT_SEA' });
  const db = new Database(':memory:', { nativeBinding });
  const row = db.prepare('select 6 * 7 as answer').get();
  console.log(JSON.stringify({ ok: true, answer: row.answer }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, code: err.code, message: err.message }));
  process.exitCode = 2;
}
`;

interface ProbeOutput {
  ok: boolean;
  answer?: number;
  code?: string;
}

function parseProbe(res: BinaryResult): ProbeOutput {
  try {
    return JSON.parse(res.stdout) as ProbeOutput;
  } catch {
    throw new Error(`probe printed no JSON (exit ${res.code}, signal ${res.signal}): ${res.stdout}${res.stderr}`);
  }
}

describe.skipIf(!binaryPresent)('the SQLite addon inside the binary', () => {
  let probeBinary = '';
  let buildDir = '';

  beforeAll(async () => {
    buildDir = mkdtempSync(join(tmpdir(), 'edge-runner-probe-build-'));
    const { buildSea } = (await import(pathToFileURL(join(ROOT, 'scripts/build-binary.mjs')).href)) as {
      buildSea: (opts: Record<string, unknown>) => Promise<{ outFile: string }>;
    };
    const built = await buildSea({
      source: { contents: PROBE_SOURCE, resolveDir: ROOT, loader: 'ts', sourcefile: 'sea-probe.ts' },
      outFile: join(buildDir, 'probe'),
      workDir: join(buildDir, 'work'),
      quiet: true,
    });
    probeBinary = built.outFile;
  }, 120_000);

  afterAll(() => {
    if (buildDir) rmSync(buildDir, { recursive: true, force: true });
    for (const dir of sandboxes) rmSync(dir, { recursive: true, force: true });
  });

  it('writes the addon once into a private cache folder and opens a database with it', async () => {
    const sandbox = makeSandbox(probeBinary);
    for (let i = 0; i < 2; i++) {
      const res = await runBinary([], { sandbox });
      expect(parseProbe(res)).toEqual({ ok: true, answer: 42 });
    }
    expect(statSync(sandbox.cacheDir).mode & 0o777).toBe(0o700);
    expect(readdirSync(sandbox.cacheDir)).toEqual(cachedAddons(sandbox.cacheDir));
    expect(cachedAddons(sandbox.cacheDir)).toHaveLength(1);
  });

  it('uses ~/.cache/edge-runner when no cache folder is configured', async () => {
    const sandbox = makeSandbox(probeBinary);
    const res = await runBinary([], { sandbox, env: { EDGE_RUNNER_CACHE_DIR: undefined } });
    expect(parseProbe(res).ok).toBe(true);
    expect(cachedAddons(join(sandbox.home, '.cache/edge-runner'))).toHaveLength(1);
  });

  describe('when six binaries start at once on an empty cache', () => {
    it('all of them work and exactly one addon file is left, with no temporary files', async () => {
      const sandbox = makeSandbox(probeBinary);
      const results = await Promise.all(Array.from({ length: 6 }, () => runBinary([], { sandbox })));
      for (const res of results) expect(parseProbe(res)).toEqual({ ok: true, answer: 42 });
      expect(readdirSync(sandbox.cacheDir)).toHaveLength(1);
      expect(cachedAddons(sandbox.cacheDir)).toHaveLength(1);
    });
  });

  describe('when the cached addon was changed after it was written', () => {
    it('refuses to load it with SEA_ADDON_DIGEST_MISMATCH and leaves it in place', async () => {
      const sandbox = makeSandbox(probeBinary);
      expect(parseProbe(await runBinary([], { sandbox })).ok).toBe(true);
      const [name] = cachedAddons(sandbox.cacheDir);
      const file = join(sandbox.cacheDir, name ?? '');
      chmodSync(file, 0o700);
      const bytes = readFileSync(file);
      bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff;
      writeFileSync(file, bytes);
      chmodSync(file, 0o500);

      const res = await runBinary([], { sandbox });
      expect(res.code).toBe(2);
      expect(parseProbe(res)).toMatchObject({ ok: false, code: 'SEA_ADDON_DIGEST_MISMATCH' });
      expect(sha256Hex(readFileSync(file))).toBe(sha256Hex(bytes));
    });
  });

  describe('when the cache folder is writable by others', () => {
    it('refuses it with SEA_CACHE_DIR_INSECURE', async () => {
      const sandbox = makeSandbox(probeBinary);
      mkdirSync(sandbox.cacheDir);
      chmodSync(sandbox.cacheDir, 0o777);
      const res = await runBinary([], { sandbox });
      expect(parseProbe(res)).toMatchObject({ ok: false, code: 'SEA_CACHE_DIR_INSECURE' });
    });
  });
});
