import { JsonError, parseJson } from '../core/json.js';
import { toPrintableExcerpt } from '../core/printable.js';
import { checkSchema } from '../core/schema.js';
import type { CapsuleKind } from '../trust/trust.js';
import { CapsuleError } from './errors.js';
import manifestSchema from './manifest.schema.json' with { type: 'json' };

export const CAPSULE_PAYLOAD_TYPE = 'application/vnd.edge-runner.capsule.v1+json';
export const CAPSULE_FILE_MEDIA_TYPE = 'application/vnd.edge-runner.capsule-file.v1+json';
export const CAPSULE_API_VERSION = 'edge-runner.dev/capsule/v1';

export type IsolationRequirement = 'required' | 'best-effort';
export type CollectParser = 'file' | 'junit' | 'tap';

export interface Step {
  name: string;
  run: string[];
  env?: Record<string, string>;
  timeoutSeconds?: number;
  continueOnFailure?: boolean;
}

export interface InputFile {
  path: string;
  sha256: string;
  size: number;
  executable?: boolean;
}

export interface CollectRule {
  path: string;
  as: CollectParser;
}

export interface Manifest {
  apiVersion: typeof CAPSULE_API_VERSION;
  kind: CapsuleKind;
  id: string;
  description?: string;
  issuedAt: string;
  notBefore: string;
  expiresAt: string;
  nonce: string;
  isolation?: IsolationRequirement;
  target: { runners?: string[]; labels?: string[] };
  steps: Step[];
  inputs: InputFile[];
  collect: CollectRule[];
  /**
   * A recurring capsule: accepted once, then run at every slot of `cron` (five or six croner fields) in
   * `timezone` (an IANA name; UTC when absent) until it expires or a newer capsule with its id replaces it.
   */
  schedule?: { cron: string; timezone?: string };
  /** Names of operator-granted resources (runner configuration `resources`) the steps need bound in. */
  needs?: string[];
  change?: { target: string; patch: string };
}

export { manifestSchema };

/** Manifest bytes (the verified DSSE payload) to a typed manifest; schema and path rules enforced. */
export function parseManifest(payload: Uint8Array): Manifest {
  let value: unknown;
  try {
    // A second `steps` or `isolation` would mean one thing to this runner and another to a reviewer.
    value = parseJson(payload);
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    throw new CapsuleError('CAPSULE_SCHEMA', `The capsule manifest is not valid JSON: ${cause.message}.`, { json: cause.code }, { cause });
  }
  const problem = checkSchema(manifestSchema, value);
  if (problem) {
    throw new CapsuleError('CAPSULE_SCHEMA', `The capsule manifest does not match its schema at ${problem.path}: ${problem.message}.`, {
      path: problem.path,
    });
  }
  const manifest = value as Manifest;
  verifyPaths(manifest);
  return manifest;
}

/**
 * A workspace path must stay inside the workspace by construction: relative, '/'-separated, with no empty,
 * '.' or '..' segment, no NUL or backslash. Symlinks are handled where the file system is (runner/exec).
 */
export function isContainedPath(path: string): boolean {
  if (path.length === 0 || path.startsWith('/') || path.includes('\0') || path.includes('\\')) return false;
  return path.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..');
}

function verifyPaths(manifest: Manifest): void {
  if (Date.parse(manifest.notBefore) >= Date.parse(manifest.expiresAt)) {
    throw new CapsuleError('CAPSULE_SCHEMA', "The capsule's validity window is empty: notBefore is not before expiresAt.");
  }
  const all = [...manifest.inputs.map((i) => i.path), ...manifest.collect.map((c) => c.path)];
  if (manifest.change) all.push(manifest.change.patch);
  for (const path of all) {
    if (!isContainedPath(path)) {
      throw new CapsuleError('CAPSULE_PATH_ESCAPE', `The path "${toPrintableExcerpt(path)}" would leave the run's workspace.`, { path });
    }
  }
  const inputs = new Set<string>();
  for (const { path } of manifest.inputs) {
    if (inputs.has(path)) throw new CapsuleError('CAPSULE_SCHEMA', `The input "${toPrintableExcerpt(path)}" is listed twice.`, { path });
    inputs.add(path);
  }
  // An input cannot also be a directory holding another input.
  for (const path of inputs) {
    const segments = path.split('/');
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join('/');
      if (inputs.has(parent))
        throw new CapsuleError('CAPSULE_SCHEMA', `The input "${toPrintableExcerpt(parent)}" is both a file and a folder.`, { path });
    }
  }
  const steps = new Set<string>();
  for (const { name } of manifest.steps) {
    if (steps.has(name)) throw new CapsuleError('CAPSULE_SCHEMA', `The step name "${name}" is used twice.`, { name });
    steps.add(name);
  }
}
