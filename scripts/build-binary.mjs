#!/usr/bin/env node
// Builds dist/edge-runner, one Linux executable, with Node's own single executable applications (SEA):
//   1. esbuild bundles runner/main.ts (and everything it imports, better-sqlite3's JavaScript included)
//      into one CommonJS file, dist/sea/main.cjs;
//   2. `node --experimental-sea-config` turns it into a blob, with two assets: the better-sqlite3 addon
//      (written to a private cache and loaded with process.dlopen at run time, see runner/sea/addon.ts)
//      and build-info.json (the SHA-256 of the bundled code, printed by `edge-runner --version`);
//   3. a copy of the running node (process.execPath), stripped of its debug symbols and with its reading
//      of NODE_OPTIONS switched off (see disableNodeOptions), receives the blob through postject, which
//      also flips the SEA fuse.
// Everything is offline: no download, only what is in node_modules and the node that runs this script.
//
// Usage: node scripts/build-binary.mjs [--out dist/edge-runner] [--no-strip] [--reproducible] [--keep-node-options]
//   --reproducible (alias --no-code-cache): no V8 code cache in the blob. V8's code cache is not byte-for-
//   byte deterministic, so by default two builds of the same commit differ (their code SHA-256, printed by
//   --version, does not); without it the binary is reproducible, and starts about 9 ms slower here.
// Also importable: `buildSea({ entry | source, outFile, workDir })` builds another entry the same way (the
// end-to-end tests use it for a small probe of the addon loader).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { stripVTControlCharacters } from 'node:util';

import { build, version as esbuildVersion } from 'esbuild';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const ADDON_ASSET = 'better_sqlite3.node';
export const BUILD_INFO_ASSET = 'build-info.json';
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const ADDON_PATH = join(ROOT, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node');
const POSTJECT_CLI = join(ROOT, 'node_modules/postject/dist/cli.js');

function sha256Hex(bytes) {
  return createHash('sha256').update(bytes).digest('hex');
}

function relativeToRoot(path) {
  return relative(ROOT, path) || '.';
}

/**
 * better-sqlite3 loads its addon through the `bindings` package, which searches the file system for a
 * `.node` file. Inside the binary there is none: the addon arrives as `nativeBinding` instead. Replace
 * `bindings` with a stub that says so, so that a forgotten `nativeBinding` fails loudly and never
 * picks up some other better_sqlite3.node lying around on the host.
 */
const noBindingsPlugin = {
  name: 'edge-runner-no-bindings',
  setup(b) {
    b.onResolve({ filter: /^bindings$/ }, () => ({ path: 'bindings', namespace: 'edge-runner-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'edge-runner-stub' }, () => ({
      loader: 'js',
      contents: `module.exports = function bindings(name) {
  const err = new Error('the single binary loads ' + name + ' only through loadSeaNativeBinding(); pass it to better-sqlite3 as nativeBinding');
  err.code = 'SEA_ADDON_NOT_PASSED';
  throw err;
};`,
    }));
  },
};

/** Fails early, with a clear message, when the addon in node_modules was built for another Node ABI. */
function checkAddonLoads(addonPath) {
  try {
    statSync(addonPath);
  } catch {
    throw new Error(`${relativeToRoot(addonPath)} is missing: run npm ci (better-sqlite3 builds its addon on install)`);
  }
  try {
    process.dlopen({ exports: {} }, addonPath);
  } catch (err) {
    throw new Error(
      `${relativeToRoot(addonPath)} does not load in ${process.execPath} (${process.version}); ` +
        `rebuild it for this node with npm rebuild better-sqlite3: ${err.message}`,
    );
  }
}

function elapsedMs(startNs) {
  return Number((process.hrtime.bigint() - startNs) / 1_000_000n);
}

/**
 * Builds one SEA executable. `entry` is a path to bundle, or `source` ({ contents, resolveDir, loader })
 * an in-memory entry. Returns the digests, the sizes and the time each stage took.
 */
export async function buildSea({
  entry,
  source,
  outFile,
  workDir,
  strip = true,
  useCodeCache = true,
  patchNodeOptions = true,
  addonPath = ADDON_PATH,
  quiet = false,
}) {
  const started = process.hrtime.bigint();
  const timings = {};
  mkdirSync(workDir, { recursive: true });
  mkdirSync(dirname(outFile), { recursive: true });
  checkAddonLoads(addonPath);

  // 1. Bundle. CommonJS because the SEA main script is run as CommonJS in Node 20; target node20.
  let t = process.hrtime.bigint();
  const bundlePath = join(workDir, 'main.cjs');
  const result = await build({
    ...(entry ? { entryPoints: [entry] } : { stdin: source }),
    absWorkingDir: ROOT,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    outfile: bundlePath,
    plugins: [noBindingsPlugin],
    // import.meta has no meaning in a CommonJS bundle; runner code must not rely on it (esbuild warns).
    logLevel: quiet ? 'error' : 'warning',
    logOverride: { 'empty-import-meta': 'error' },
    legalComments: 'eof',
    metafile: true,
  });
  timings.bundleMs = elapsedMs(t);
  const bundle = readFileSync(bundlePath);
  const codeSha256 = sha256Hex(bundle);
  const addonSha256 = sha256Hex(readFileSync(addonPath));

  // 2. A copy of this node, stripped of debug info and the static symbol table (the dynamic symbols that
  // addons link against stay), with its reading of NODE_OPTIONS switched off (see disableNodeOptions).
  // Built under a temporary name and renamed into place, so a running copy never sees a half-written file.
  const tmpOut = `${outFile}.tmp-${process.pid}`;
  let stripped;
  let nodeOptions;
  try {
    t = process.hrtime.bigint();
    ({ stripped, nodeOptions } = prepareNodeCopy(tmpOut, { strip, patchNodeOptions, workDir, quiet }));
    timings.copyMs = elapsedMs(t);

    // 3. The SEA blob, with the addon and the build information as assets.
    t = process.hrtime.bigint();
    const buildInfo = { codeSha256, addonSha256, node: process.version, esbuild: esbuildVersion, nodeOptions };
    const blobPath = writeSeaBlob({ workDir, bundlePath, addonPath, buildInfo, useCodeCache });
    timings.blobMs = elapsedMs(t);

    // 4. The blob injected, the fuse flipped.
    t = process.hrtime.bigint();
    injectBlob(tmpOut, blobPath, quiet);
    timings.injectMs = elapsedMs(t);
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
    addonSha256,
    binarySha256,
    bundleBytes: bundle.length,
    binaryBytes: binary.length,
    stripped,
    nodeOptions,
    useCodeCache,
    inputs: Object.keys(result.metafile.inputs).length,
    timings,
  };
}

function prepareNodeCopy(file, { strip, patchNodeOptions, workDir, quiet }) {
  rmSync(file, { force: true });
  copyFileSync(process.execPath, file);
  chmodSync(file, 0o755);
  let stripped = false;
  if (strip) {
    const res = spawnSync('strip', ['--strip-all', file], { encoding: 'utf8' });
    if (res.error || res.status !== 0) {
      if (!quiet) console.warn(`build-binary: strip unavailable or failed, keeping symbols (${res.error?.message ?? res.stderr})`);
    } else {
      stripped = true;
    }
  }
  if (patchNodeOptions) disableNodeOptions(file, workDir);
  return { stripped, nodeOptions: patchNodeOptions ? 'ignored' : 'honoured' };
}

/** Writes build-info.json and sea-config.json, runs `node --experimental-sea-config`; returns the blob's path. */
function writeSeaBlob({ workDir, bundlePath, addonPath, buildInfo, useCodeCache }) {
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
    useSnapshot: false,
    useCodeCache,
    assets: { [ADDON_ASSET]: addonPath, [BUILD_INFO_ASSET]: buildInfoPath },
  };
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
 * Node 20's single executables read NODE_OPTIONS as node does: `--require` there runs code inside the
 * binary before any of ours. Node 20 has no setting to stop it (sea-config `execArgvExtension: "none"`
 * came with Node 25 and 24.x), no fuse, and NODE_WITHOUT_NODE_OPTIONS needs a source build of Node.
 * Node reads the variable in C++ through one C string literal, "NODE_OPTIONS" (ProcessGlobalArgs, and the
 * per-worker options): this blanks its first byte in our copy, so the name looked up is "", which getenv
 * never finds. Other bytes spelling NODE_OPTIONS are left alone: messages and JS sources are not NUL-
 * delimited, and V8 snapshot strings carry a 4-byte length before them (0c 00 00 00).
 * Then it proves the effect, or fails the build: the patched copy must still run, and ignore a
 * NODE_OPTIONS=--require=probe that the untouched node does run.
 */
export function disableNodeOptions(file, workDir) {
  const data = readFileSync(file);
  const literal = Buffer.from('\0NODE_OPTIONS\0', 'latin1');
  const lengthPrefix = Buffer.from([0x0c, 0, 0, 0]);
  const hits = [];
  for (let i = data.indexOf(literal); i !== -1; i = data.indexOf(literal, i + 1)) {
    if (!data.subarray(i - 3, i + 1).equals(lengthPrefix)) hits.push(i + 1);
  }
  if (hits.length !== 1) {
    throw new Error(
      `expected one "NODE_OPTIONS" C string in ${process.execPath} (${process.version}), found ${hits.length}; ` +
        'rebuild with --keep-node-options (the binary then refuses to start while NODE_OPTIONS is set)',
    );
  }
  data[hits[0]] = 0;
  writeFileSync(file, data);

  const probe = join(workDir, 'node-options-probe.cjs');
  const marker = join(workDir, 'node-options-probe.ran');
  writeFileSync(probe, `require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'ran');\n`);
  const runWithProbe = (bin) => {
    rmSync(marker, { force: true });
    const res = spawnSync(bin, ['-e', 'process.stdout.write("alive")'], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_OPTIONS: `--require ${JSON.stringify(probe)}` },
    });
    return { alive: res.status === 0 && res.stdout === 'alive', probeRan: existsSync(marker), stderr: res.stderr };
  };
  const control = runWithProbe(process.execPath);
  const patched = runWithProbe(file);
  rmSync(marker, { force: true });
  rmSync(probe, { force: true });
  if (!control.probeRan) throw new Error(`control failed: ${process.execPath} did not run a NODE_OPTIONS --require probe`);
  if (!patched.alive || patched.probeRan) {
    throw new Error(
      `disabling NODE_OPTIONS did not work (alive: ${patched.alive}, probe ran: ${patched.probeRan}): ${patched.stderr}`,
    );
  }
}

/**
 * The highest symbol version a file needs with `prefix` (GLIBC_, GLIBCXX_), from `objdump -T`; undefined
 * when objdump is absent. The binary needs the higher of node's and the addon's.
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
  const opts = { out: join(ROOT, 'dist/edge-runner'), strip: true, useCodeCache: true, patchNodeOptions: true };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--out') opts.out = resolve(argv[++i] ?? '');
    else if (arg === '--no-strip') opts.strip = false;
    else if (arg === '--no-code-cache' || arg === '--reproducible') opts.useCodeCache = false;
    else if (arg === '--keep-node-options') opts.patchNodeOptions = false;
    else throw new Error(`unknown option ${arg}`);
  }
  return opts;
}

async function main() {
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
    patchNodeOptions: opts.patchNodeOptions,
  });
  // sha256sum format, so `sha256sum -c dist/edge-runner.sha256` checks a copy.
  writeFileSync(`${opts.out}.sha256`, `${out.binarySha256}  ${relative(dirname(opts.out), opts.out)}\n`);
  const mib = (n) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
  console.log(
    [
      `built ${relativeToRoot(out.outFile)} (${mib(out.binaryBytes)}, ${out.stripped ? 'stripped' : 'not stripped'}) in ${out.timings.totalMs} ms`,
      `  stages: bundle ${out.timings.bundleMs} ms, blob ${out.timings.blobMs} ms, copy+strip ${out.timings.copyMs} ms, inject ${out.timings.injectMs} ms`,
      `  node ${process.version}, esbuild ${esbuildVersion}, ${out.inputs} bundled files, bundle ${mib(out.bundleBytes)}, code cache ${out.useCodeCache ? 'on' : 'off'}, NODE_OPTIONS ${out.nodeOptions}`,
      `  code   sha256 ${out.codeSha256} (${relativeToRoot(out.bundlePath)})`,
      `  addon  sha256 ${out.addonSha256}`,
      `  binary sha256 ${out.binarySha256}`,
      `  needs glibc ${requiredSymbolVersion(out.outFile) ?? '?'} (node) and ${requiredSymbolVersion(ADDON_PATH) ?? '?'} (SQLite addon); ` +
        `libstdc++ GLIBCXX_${requiredSymbolVersion(out.outFile, 'GLIBCXX_') ?? '?'} (node) and GLIBCXX_${requiredSymbolVersion(ADDON_PATH, 'GLIBCXX_') ?? '?'} (addon)`,
    ].join('\n'),
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err) => {
    console.error(`build-binary: ${err.message}`);
    process.exitCode = 1;
  });
}
