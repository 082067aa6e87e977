#!/usr/bin/env node
// Builds dist/edge-runner, one Linux executable, with Node's own single executable applications (SEA):
//   1. esbuild bundles runner/main.ts and everything it imports into one CommonJS file, dist/sea/main.cjs
//      (SQLite is Node's built-in node:sqlite: the binary carries no native addon);
//   2. `node --experimental-sea-config` turns it into a blob, with the V8 code cache of the bundle, no
//      Node options of its own (`execArgv: []`) and no way to add any at run time (`execArgvExtension:
//      "none"`: NODE_OPTIONS is ignored), and one asset, build-info.json (the SHA-256 of the bundled code,
//      printed by `edge-runner --version`);
//   3. a copy of the running node (process.execPath: the pinned Node 24 when run through npm), stripped of
//      its debug symbols, receives the blob through postject, which also flips the SEA fuse;
//   4. the result is proven: it starts, and it does not run a `--require` script named in NODE_OPTIONS that
//      the same node, as node, does run. Either failing fails the build.
// Everything is offline: no download, only what is in node_modules and the node that runs this script.
//
// Usage: node scripts/build-binary.mjs [--out dist/edge-runner] [--no-strip] [--reproducible]
//   --reproducible (alias --no-code-cache): no V8 code cache in the blob. V8's code cache is not byte-for-
//   byte deterministic, so by default two builds of the same commit differ (their code SHA-256, printed by
//   --version, does not); without it the binary is reproducible, and starts a few ms slower.
// Also importable: `buildSea({ entry | source, outFile, workDir })` builds another entry the same way.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { stripVTControlCharacters } from 'node:util';

import { build, version as esbuildVersion } from 'esbuild';

import { requireNode24 } from './node-version.mjs';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const BUILD_INFO_ASSET = 'build-info.json';
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const POSTJECT_CLI = join(ROOT, 'node_modules/postject/dist/cli.js');

function sha256Hex(bytes) {
  return createHash('sha256').update(bytes).digest('hex');
}

function relativeToRoot(path) {
  return relative(ROOT, path) || '.';
}

function elapsedMs(startNs) {
  return Number((process.hrtime.bigint() - startNs) / 1_000_000n);
}

/**
 * Builds one SEA executable. `entry` is a path to bundle, or `source` ({ contents, resolveDir, loader })
 * an in-memory entry. `probeArgs` are the arguments the finished binary is started with to prove that it
 * runs and ignores NODE_OPTIONS (it must exit 0 with them). Returns the digests, the sizes and the time
 * each stage took.
 */
export async function buildSea({ entry, source, outFile, workDir, strip = true, useCodeCache = true, probeArgs = ['--version'], quiet = false }) {
  const started = process.hrtime.bigint();
  const timings = {};
  mkdirSync(workDir, { recursive: true });
  mkdirSync(dirname(outFile), { recursive: true });

  // 1. Bundle. CommonJS: the SEA main script is run as CommonJS (with the code cache, it must be).
  let t = process.hrtime.bigint();
  const bundlePath = join(workDir, 'main.cjs');
  const result = await build({
    ...(entry ? { entryPoints: [entry] } : { stdin: source }),
    absWorkingDir: ROOT,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    outfile: bundlePath,
    // Start time: the whole bundle is loaded before main runs, even for `--version`, and what that costs
    // grows with its bytes, comments and indentation included. Whitespace and comments go (a third of the
    // bundle; `--version` about 3% nearer `node -e 0`, timed side by side as scripts/bench/binary.mjs does); names stay,
    // so stack traces and error names read as in the sources, and columns map back through
    // dist/sea/main.cjs.map (not embedded). ASCII output: an all-ASCII bundle is a one-byte string in V8.
    minifyWhitespace: true,
    charset: 'ascii',
    sourcemap: 'external',
    // import.meta has no meaning in a CommonJS bundle; runner code must not rely on it (esbuild warns).
    logLevel: quiet ? 'error' : 'warning',
    logOverride: { 'empty-import-meta': 'error' },
    legalComments: 'eof',
    metafile: true,
  });
  timings.bundleMs = elapsedMs(t);
  const bundle = readFileSync(bundlePath);
  const codeSha256 = sha256Hex(bundle);

  // 2. A copy of this node, stripped of debug info and the static symbol table (the dynamic symbols stay).
  // Built under a temporary name and renamed into place, so a running copy never sees a half-written file.
  const tmpOut = `${outFile}.tmp-${process.pid}`;
  let stripped;
  try {
    t = process.hrtime.bigint();
    stripped = prepareNodeCopy(tmpOut, { strip, quiet });
    timings.copyMs = elapsedMs(t);

    // 3. The SEA blob, with the build information as its one asset.
    t = process.hrtime.bigint();
    const buildInfo = { codeSha256, node: process.version, esbuild: esbuildVersion };
    const blobPath = writeSeaBlob({ workDir, bundlePath, buildInfo, useCodeCache });
    timings.blobMs = elapsedMs(t);

    // 4. The blob injected, the fuse flipped.
    t = process.hrtime.bigint();
    injectBlob(tmpOut, blobPath, quiet);
    timings.injectMs = elapsedMs(t);

    // 5. Proof that the sea-config did what it says, before the file takes its real name.
    t = process.hrtime.bigint();
    proveNodeOptionsIgnored(tmpOut, { workDir, probeArgs });
    timings.proveMs = elapsedMs(t);
    renameSync(tmpOut, outFile);
  } catch (err) {
    rmSync(tmpOut, { force: true });
    throw err;
  }
  const binary = readFileSync(outFile);
  const binarySha256 = sha256Hex(binary);
  timings.totalMs = elapsedMs(started);

  return {
    outFile,
    bundlePath,
    codeSha256,
    binarySha256,
    bundleBytes: bundle.length,
    binaryBytes: binary.length,
    stripped,
    useCodeCache,
    inputs: Object.keys(result.metafile.inputs).length,
    timings,
  };
}

/** Copies this node to `file` and strips it; returns whether it is stripped. */
function prepareNodeCopy(file, { strip, quiet }) {
  rmSync(file, { force: true });
  copyFileSync(process.execPath, file);
  chmodSync(file, 0o755);
  if (!strip) return false;
  const res = spawnSync('strip', ['--strip-all', file], { encoding: 'utf8' });
  if (res.error || res.status !== 0) {
    if (!quiet) console.warn(`build-binary: strip unavailable or failed, keeping symbols (${res.error?.message ?? res.stderr})`);
    return false;
  }
  return true;
}

/**
 * The sea-config fields Node 24.22 reads (node_sea.cc; `node --experimental-sea-config`): main, output,
 * disableExperimentalSEAWarning, useSnapshot, useCodeCache, execArgv, execArgvExtension, assets. Node
 * ignores any other field without a word, so a misspelt one would silently fall back to a default: this
 * list is checked against the config written below.
 */
const SEA_CONFIG_FIELDS = new Set([
  'main',
  'output',
  'disableExperimentalSEAWarning',
  'useSnapshot',
  'useCodeCache',
  'execArgv',
  'execArgvExtension',
  'assets',
]);

/** Writes build-info.json and sea-config.json, runs `node --experimental-sea-config`; returns the blob's path. */
function writeSeaBlob({ workDir, bundlePath, buildInfo, useCodeCache }) {
  const buildInfoPath = join(workDir, BUILD_INFO_ASSET);
  writeFileSync(buildInfoPath, `${JSON.stringify(buildInfo, null, 2)}\n`);
  const blobPath = join(workDir, 'sea-prep.blob');
  const configPath = join(workDir, 'sea-config.json');
  // `main` relative to workDir (the blob records it, for stack traces): the blob then does not depend on
  // where the repository is checked out. Asset paths are only read, so absolute ones are fine.
  const seaConfig = {
    main: relative(workDir, bundlePath),
    output: relative(workDir, blobPath),
    disableExperimentalSEAWarning: true,
    // No startup snapshot: measured, a SEA whose snapshot holds only a one-line main starts 10 to 25% slower
    // than the same main without one (its snapshot replaces node's own and is bigger to deserialize), so
    // no snapshot of the runner could answer `--version` sooner; and it would run the runner's module code
    // at build time, freezing state such as whether it is a SEA.
    useSnapshot: false,
    useCodeCache,
    // No Node options of ours, and none from the environment: NODE_OPTIONS is ignored, and `--node-options`
    // on the command line is an argument like any other. Proven after the build (proveNodeOptionsIgnored).
    execArgv: [],
    execArgvExtension: 'none',
    assets: { [BUILD_INFO_ASSET]: buildInfoPath },
  };
  const unknown = Object.keys(seaConfig).filter((k) => !SEA_CONFIG_FIELDS.has(k));
  if (unknown.length > 0) throw new Error(`sea-config fields Node does not read: ${unknown.join(', ')}`);
  writeFileSync(configPath, `${JSON.stringify(seaConfig, null, 2)}\n`);
  const res = spawnSync(process.execPath, ['--experimental-sea-config', configPath], {
    cwd: workDir,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  if (res.status !== 0) throw new Error(`node --experimental-sea-config failed (${res.status}): ${res.stderr || res.stdout}`);
  return blobPath;
}

/**
 * postject runs in a child process: its ELF library prints a harmless warning per unnamed note section of
 * node's straight to the process's stderr; the child's output is filtered and anything else is shown.
 */
function injectBlob(file, blobPath, quiet) {
  const res = spawnSync(process.execPath, [POSTJECT_CLI, file, 'NODE_SEA_BLOB', blobPath, '--sentinel-fuse', SEA_FUSE], {
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  const expected = /^(warning: Can't find string offset for section name '\.note[.\d]*'|Start injection of NODE_SEA_BLOB.*|💉 Injection done!)$/u;
  const lines = stripVTControlCharacters(`${res.stdout}${res.stderr}`)
    .split('\n')
    .filter((l) => l.trim() !== '' && !expected.test(l.trim()));
  if (res.status !== 0) throw new Error(`postject failed (${res.status}): ${lines.join('\n')}`);
  if (!quiet) for (const line of lines) console.warn(`postject: ${line}`);
}

/**
 * A single executable made with `execArgvExtension: "none"` must not read NODE_OPTIONS: a `--require` there
 * would run code inside the binary before any of ours. This proves it on the file just built, or fails the
 * build: with NODE_OPTIONS naming a probe script (both spellings, `--require=` and `-r`), the binary must
 * exit 0 and the probe must not have run, while the very node it was copied from, run as node with the same
 * NODE_OPTIONS, does run the probe (so the probe itself is known to work).
 */
export function proveNodeOptionsIgnored(file, { workDir, probeArgs = ['--version'] }) {
  const probe = join(workDir, 'node-options-probe.cjs');
  const marker = join(workDir, 'node-options-probe.ran');
  writeFileSync(probe, `require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'ran');\n`);
  const runWithProbe = (bin, args, nodeOptions) => {
    rmSync(marker, { force: true });
    const res = spawnSync(bin, args, {
      encoding: 'utf8',
      env: { PATH: '/usr/bin:/bin', NODE_OPTIONS: nodeOptions },
      timeout: 30_000,
    });
    return { status: res.status, probeRan: existsSync(marker), output: `${res.stdout ?? ''}${res.stderr ?? ''}`.trim() };
  };
  try {
    for (const nodeOptions of [`--require=${probe}`, `-r ${JSON.stringify(probe)}`]) {
      const control = runWithProbe(process.execPath, ['-e', '0'], nodeOptions);
      if (!control.probeRan) {
        throw new Error(`control failed: ${process.execPath} did not run the probe in NODE_OPTIONS=${nodeOptions}: ${control.output}`);
      }
      const built = runWithProbe(file, probeArgs, nodeOptions);
      if (built.probeRan || built.status !== 0) {
        throw new Error(
          `the binary does not ignore NODE_OPTIONS=${nodeOptions} (exit ${built.status}, probe ran: ${built.probeRan}); ` +
            `is execArgvExtension supported by ${process.version}? ${built.output}`,
        );
      }
    }
  } finally {
    rmSync(marker, { force: true });
    rmSync(probe, { force: true });
  }
}

/**
 * The highest symbol version a file needs with `prefix` (GLIBC_, GLIBCXX_), from `objdump -T`; undefined
 * when objdump is absent.
 */
export function requiredSymbolVersion(file, prefix = 'GLIBC_') {
  const res = spawnSync('objdump', ['-T', file], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (res.status !== 0) return undefined;
  const pattern = new RegExp(`\\b${prefix}(\\d+(?:\\.\\d+)*)`, 'g');
  const versions = [...new Set([...res.stdout.matchAll(pattern)].map((m) => m[1]))];
  const compare = (a, b) => {
    const [x, y] = [a.split('.').map(Number), b.split('.').map(Number)];
    for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
    return 0;
  };
  return versions.sort(compare).at(-1);
}

function parseArgs(argv) {
  const opts = { out: join(ROOT, 'dist/edge-runner'), strip: true, useCodeCache: true };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--out') opts.out = resolve(argv[++i] ?? '');
    else if (arg === '--no-strip') opts.strip = false;
    else if (arg === '--no-code-cache' || arg === '--reproducible') opts.useCodeCache = false;
    else throw new Error(`unknown option ${arg}`);
  }
  return opts;
}

async function main() {
  requireNode24('build-binary');
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    console.warn(`build-binary: built and tested for linux-x64 only; this is ${process.platform}-${process.arch}`);
  }
  const opts = parseArgs(process.argv.slice(2));
  const out = await buildSea({
    entry: join(ROOT, 'runner/main.ts'),
    outFile: opts.out,
    workDir: join(dirname(opts.out), 'sea'),
    strip: opts.strip,
    useCodeCache: opts.useCodeCache,
  });
  // sha256sum format, so `sha256sum -c dist/edge-runner.sha256` checks a copy.
  writeFileSync(`${opts.out}.sha256`, `${out.binarySha256}  ${relative(dirname(opts.out), opts.out)}\n`);
  const mib = (n) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
  console.log(
    [
      `built ${relativeToRoot(out.outFile)} (${mib(out.binaryBytes)}, ${out.stripped ? 'stripped' : 'not stripped'}) in ${out.timings.totalMs} ms`,
      `  stages: bundle ${out.timings.bundleMs} ms, copy+strip ${out.timings.copyMs} ms, blob ${out.timings.blobMs} ms, inject ${out.timings.injectMs} ms, prove ${out.timings.proveMs} ms`,
      `  node ${process.version} (${process.execPath}), esbuild ${esbuildVersion}, ${out.inputs} bundled files, bundle ${mib(out.bundleBytes)}, code cache ${out.useCodeCache ? 'on' : 'off'}`,
      '  NODE_OPTIONS ignored (execArgvExtension "none"; proven: a --require probe did not run)',
      `  code   sha256 ${out.codeSha256} (${relativeToRoot(out.bundlePath)})`,
      `  binary sha256 ${out.binarySha256}`,
      `  needs glibc ${requiredSymbolVersion(out.outFile) ?? '?'}, libstdc++ GLIBCXX_${requiredSymbolVersion(out.outFile, 'GLIBCXX_') ?? '?'} (objdump -T)`,
    ].join('\n'),
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err) => {
    console.error(`build-binary: ${err.message}`);
    process.exitCode = 1;
  });
}
