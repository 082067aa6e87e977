/**
 * The single executable, as an ops team gets it: dist/edge-runner copied alone into an empty folder and run
 * with a clean environment (`env -i PATH=/usr/bin:/bin` and a HOME that cannot be written), with no
 * node_modules anywhere above it and no cache folder: the binary carries no native addon (SQLite is Node's
 * built-in node:sqlite), so it has nothing to unpack anywhere.
 *
 * This file builds nothing: CI runs `npm run build:binary` first, and here a missing binary fails the run
 * when CI is set and skips these tests otherwise.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';
import { expectDemoOutput } from '../helpers/demo-output.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIST_BINARY = join(ROOT, 'dist/edge-runner');
const DIST_BUNDLE = join(ROOT, 'dist/sea/main.cjs');
const DIST_BUILD_INFO = join(ROOT, 'dist/sea/build-info.json');
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

/**
 * A fresh folder holding `bin/edge-runner` (a copy of the binary, alone in its folder), `home/` (the HOME
 * it runs with: empty, mode 0555) and `work/` (where it is run from).
 */
interface Sandbox {
  dir: string;
  binDir: string;
  bin: string;
  home: string;
  work: string;
}

const sandboxes: string[] = [];

function makeSandbox(): Sandbox {
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-e2e-'));
  sandboxes.push(dir);
  const binDir = join(dir, 'bin');
  mkdirSync(binDir);
  const bin = join(binDir, 'edge-runner');
  copyFileSync(DIST_BINARY, bin);
  chmodSync(bin, 0o755);
  const home = join(dir, 'home');
  mkdirSync(home);
  chmodSync(home, 0o555);
  const work = join(dir, 'work');
  mkdirSync(work);
  return { dir, binDir, bin, home, work };
}

function listTree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

/**
 * Mode 0555 makes HOME read-only for any user but root. As root (CI), HOME is made read-only for real: the
 * command runs in a private mount namespace where HOME is bind-mounted read-only (`unshare --mount`).
 * Undefined when that is not possible here; then the tests rely on the mode and on checking afterwards
 * that HOME is still empty.
 */
function readOnlyHomeWrapper(home: string): string[] | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const wrapper = ['/usr/bin/unshare', '--mount', '--propagation', 'private', '/bin/sh', '-c', 'mount --bind -o ro "$0" "$0" && exec "$@"', home];
  const probe = spawnSync(wrapper[0] ?? '', [...wrapper.slice(1), '/bin/sh', '-c', 'if touch "$0/.write-probe" 2>/dev/null; then exit 1; fi', home], {
    env: { PATH: CLEAN_PATH },
  });
  rmSync(join(home, '.write-probe'), { force: true });
  return probe.status === 0 ? wrapper : undefined;
}

/** Runs `file args` with exactly `env` (nothing of the test's own environment), inside `wrapper` if given. */
function run(
  file: string,
  args: string[],
  opts: { env: Record<string, string>; cwd: string; wrapper?: string[]; timeoutMs?: number },
): Promise<BinaryResult> {
  const [cmd, ...pre] = opts.wrapper ? [...opts.wrapper, file] : [file];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd ?? file, [...pre, ...args], {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ['ignore', 'pipe', 'pipe'],
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
  });
}

/** The sandbox's binary as `env -i PATH=/usr/bin:/bin HOME=<sandbox>/home [extra]`, run from work/. */
function runBinary(sandbox: Sandbox, args: string[], extraEnv: Record<string, string> = {}): Promise<BinaryResult> {
  return run(sandbox.bin, args, { env: { PATH: CLEAN_PATH, HOME: sandbox.home, ...extraEnv }, cwd: sandbox.work });
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
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
    for (const dir of sandboxes) {
      chmodSync(join(dir, 'home'), 0o700);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('--version', () => {
    it('prints the version, the SHA-256 of the embedded code and the Node.js 24 it is made of', async () => {
      const sandbox = makeSandbox();
      const res = await runBinary(sandbox, ['--version']);
      expect(res.stderr).toBe('');
      expect(res.code).toBe(0);
      const lines = res.stdout.split('\n');
      expect(lines[0]).toMatch(/^edge-runner \d+\.\d+\.\d+$/);
      expect(lines[1]).toMatch(/^code sha256:[0-9a-f]{64}$/);
      expect(lines[2]).toMatch(/^node v24\.\d+\.\d+$/);
      const digest = HEX64.exec(lines[1] ?? '')?.[0];
      if (existsSync(DIST_BUNDLE)) expect(digest).toBe(sha256Hex(readFileSync(DIST_BUNDLE)));
      if (existsSync(DIST_BUILD_INFO)) {
        const info = JSON.parse(readFileSync(DIST_BUILD_INFO, 'utf8')) as { node: string };
        expect(lines[2]).toBe(`node ${info.node}`);
      }
      expect(listTree(sandbox.binDir)).toEqual(['edge-runner']);
      expect(listTree(sandbox.home)).toEqual([]);
    });
  });

  describe('when NODE_OPTIONS asks to preload a script', () => {
    it('does not run it, where the same NODE_OPTIONS makes plain node run it', async () => {
      const sandbox = makeSandbox();
      const marker = join(sandbox.dir, 'injected.ran');
      const script = join(sandbox.dir, 'inject.cjs');
      const esm = join(sandbox.dir, 'inject.mjs');
      const payload = `require('fs').writeFileSync(${JSON.stringify(marker)}, 'ran'); console.log('INJECTED');\n`;
      writeFileSync(script, payload);
      writeFileSync(esm, `import { createRequire } from 'node:module'; const require = createRequire(import.meta.url); ${payload}`);

      // The probe works: node itself, with the same environment, runs it.
      const control = await run(process.execPath, ['-e', '0'], { env: { PATH: CLEAN_PATH, NODE_OPTIONS: `--require=${script}` }, cwd: sandbox.work });
      expect(control.stdout).toContain('INJECTED');
      expect(existsSync(marker)).toBe(true);
      rmSync(marker);

      const cases = [`--require=${script}`, `-r ${script}`, `--import=${pathToFileURL(esm).href}`, '--max-old-space-size=16 --inspect'];
      for (const nodeOptions of cases) {
        const res = await runBinary(sandbox, ['--version'], { NODE_OPTIONS: nodeOptions });
        expect(existsSync(marker), `NODE_OPTIONS=${nodeOptions} ran code in the binary`).toBe(false);
        expect(res.stdout).not.toContain('INJECTED');
        expect(res.stderr, `NODE_OPTIONS=${nodeOptions}`).toBe('');
        expect(res.code).toBe(0);
        expect(res.stdout).toMatch(/^edge-runner \d+\.\d+\.\d+\ncode sha256:[0-9a-f]{64}\n/);
      }
    });

    it('does not take Node options from the command line either (--node-options is an argument like any other)', async () => {
      const sandbox = makeSandbox();
      const marker = join(sandbox.dir, 'injected.ran');
      const script = join(sandbox.dir, 'inject.cjs');
      writeFileSync(script, `require('fs').writeFileSync(${JSON.stringify(marker)}, 'ran');\n`);
      const res = await runBinary(sandbox, [`--node-options=--require=${script}`, '--version']);
      expect(existsSync(marker)).toBe(false);
      expect(res.code).toBe(2);
    });
  });

  // The demo script drives the copied binary (EDGE_RUNNER_BIN, here a launcher outside the binary's folder
  // that starts it with `env -i PATH=/usr/bin:/bin HOME=<read-only>`): keygen, trust sign, init, the binary as
  // the agent of a coordinator (bwrap steps), verify, log export and verify, and a tampered capsule refused.
  describe('the full flow, copied alone into an empty folder, with a read-only HOME and no cache folder', () => {
    it('keygen, trust sign, init, a coordinator and the binary as agent, pack, publish, verify, and refuses a tampered capsule', async () => {
      const sandbox = makeSandbox();
      const launcherDir = join(sandbox.dir, 'launcher');
      mkdirSync(launcherDir);
      const launcher = join(launcherDir, 'edge-runner');
      const quote = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;
      writeFileSync(launcher, `#!/bin/sh\nexec /usr/bin/env -i PATH=${CLEAN_PATH} HOME=${quote(sandbox.home)} ${quote(sandbox.bin)} "$@"\n`, {
        mode: 0o755,
      });

      const wrapper = readOnlyHomeWrapper(sandbox.home);
      // CI runs as root, where only the read-only mount makes HOME read-only: it must be in place there.
      if (inCi && process.getuid?.() === 0) expect(wrapper, 'unshare --mount with a read-only bind mount of HOME').toBeDefined();
      const result = await run(process.execPath, [join(ROOT, 'scripts/demo.mjs')], {
        env: { PATH: CLEAN_PATH, EDGE_RUNNER_BIN: launcher, EDGE_RUNNER_DEMO_DIR: sandbox.work },
        cwd: sandbox.work,
        wrapper,
        timeoutMs: 300_000,
      });
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expectDemoOutput(result.stdout);
      // Nothing was unpacked or cached anywhere: the binary's folder and HOME are as they were.
      expect(listTree(sandbox.binDir)).toEqual(['edge-runner']);
      expect(listTree(sandbox.home)).toEqual([]);
      expect(listTree(sandbox.dir).filter((p) => /(^|\/)\.cache(\/|$)|\.node$/.test(p))).toEqual([]);
    }, 330_000);
  });
});
