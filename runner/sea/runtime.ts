/**
 * What the runner knows about the single executable it may be running in: whether it is one, what code it
 * carries (for `--version`), and whether the environment it was started in is one it accepts.
 *
 * Cheap when not a single executable: one lookup of a built-in module, cached. No `import.meta` here or in
 * anything this imports: the binary's bundle is CommonJS, the tsc build is ESM, and both must work.
 */
import type * as SeaModule from 'node:sea';

import { parseJson } from '../core/json.js';
import { SeaError } from './errors.js';

export type SeaApi = typeof SeaModule;

/** The one asset's name; scripts/build-binary.mjs writes it. */
export const SEA_BUILD_INFO_ASSET = 'build-info.json';

let seaApi: SeaApi | null | undefined;

/**
 * `node:sea` when this process is a single executable, else undefined. `process.getBuiltinModule` (Node
 * 20.16+) works the same from ESM, from CommonJS and from a SEA's main script, where `require` only
 * reaches built-ins and `import.meta` does not exist; a node older than that is never our binary.
 */
export function getSeaApi(): SeaApi | undefined {
  if (seaApi === undefined) {
    let api: SeaApi | null = null;
    try {
      const mod = typeof process.getBuiltinModule === 'function' ? process.getBuiltinModule('node:sea') : undefined;
      if (mod?.isSea()) api = mod;
    } catch {
      api = null;
    }
    seaApi = api;
  }
  return seaApi ?? undefined;
}

export function isSea(): boolean {
  return getSeaApi() !== undefined;
}

/** What `scripts/build-binary.mjs` recorded about the build, embedded as the `build-info.json` asset. */
export interface SeaBuildInfo {
  /** SHA-256 (hex) of the bundled JavaScript that is the binary's main script (dist/sea/main.cjs). */
  codeSha256: string;
  /** The Node.js version the binary is made of, e.g. `v24.22.3`. */
  node: string;
  /** The esbuild version that bundled it. */
  esbuild: string;
}

const HEX64 = /^[0-9a-f]{64}$/;
const NODE_VERSION = /^v\d+\.\d+\.\d+/;

/** The build-info asset is about 200 bytes. */
const BUILD_INFO_MAX_BYTES = 4096;

/** Parses the build-info asset (the strict parser, under a cap); throws SEA_BUILD_INFO_INVALID on anything unexpected. */
export function parseSeaBuildInfo(text: string): SeaBuildInfo {
  let value: unknown;
  try {
    value = parseJson(text, { maxBytes: BUILD_INFO_MAX_BYTES });
  } catch (cause) {
    throw new SeaError('SEA_BUILD_INFO_INVALID', 'the binary’s build information is not JSON', {}, { cause });
  }
  const v = value as Partial<Record<keyof SeaBuildInfo, unknown>> | null;
  if (
    typeof v !== 'object' ||
    v === null ||
    typeof v.codeSha256 !== 'string' ||
    !HEX64.test(v.codeSha256) ||
    typeof v.node !== 'string' ||
    !NODE_VERSION.test(v.node) ||
    typeof v.esbuild !== 'string'
  ) {
    throw new SeaError('SEA_BUILD_INFO_INVALID', 'the binary’s build information is malformed');
  }
  return { codeSha256: v.codeSha256, node: v.node, esbuild: v.esbuild };
}

let buildInfo: SeaBuildInfo | undefined;

/**
 * The embedded build information, for `edge-runner --version` (print `codeSha256`); undefined when not
 * running as a single executable. Like any version string it is what the binary says about itself: to
 * check a host's copy against a release, compare `sha256sum edge-runner` with the release's digest too.
 */
export function seaVersionInfo(): SeaBuildInfo | undefined {
  const sea = getSeaApi();
  if (!sea) return undefined;
  buildInfo ??= parseSeaBuildInfo(sea.getAsset(SEA_BUILD_INFO_ASSET, 'utf8'));
  return buildInfo;
}

/**
 * Refuses to run in an environment that changes what Node itself does underneath the runner. Call it first
 * thing in main, with the environment from runner/config (readEnvironment). In and out of the binary:
 *
 * - RUNTIME_TLS_VERIFY_DISABLED: NODE_TLS_REJECT_UNAUTHORIZED=0 would turn off certificate checks for
 *   every TLS connection the runner makes (the coordinator).
 *
 * NODE_OPTIONS needs no check: the single binary is built with `execArgvExtension: "none"`, so its Node
 * never reads the variable (the build proves it with a `--require` probe, and so do the e2e tests); outside
 * the binary, plain node was asked for, options included.
 */
export function verifyRuntimeEnvironment(env: Readonly<Record<string, string | undefined>>): void {
  if (env.NODE_TLS_REJECT_UNAUTHORIZED === '0') {
    throw new SeaError('RUNTIME_TLS_VERIFY_DISABLED', 'NODE_TLS_REJECT_UNAUTHORIZED=0 would disable certificate checks; unset it', {
      variable: 'NODE_TLS_REJECT_UNAUTHORIZED',
    });
  }
}
