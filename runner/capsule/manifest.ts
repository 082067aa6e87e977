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
  /** A remediate capsule's change (and only theirs): what it does to the operator's change target. */
  change?: Change;
}

/**
 * A change to one of the operator's change targets (runner configuration `targets`), by name. `patch` is
 * the input holding a unified diff whose paths are relative to the target (git's `a/` and `b/` prefixes
 * are taken off); `files` adds, replaces or deletes whole files, an added or replaced one with the bytes of
 * the input `from`. Both may be given: the patch is applied first, then the files, and no path twice.
 */
export interface Change {
  target: string;
  patch?: string;
  files?: ChangeFile[];
  /** What the capsule says the change needs; only recorded and compared: the runner derives the tier. */
  declaredTier?: { approvals: number };
  /** Evidence digests (`sha256:HEX`) of reproduce runs on this runner that showed the defect. */
  reproductions?: string[];
}

export interface ChangeFile {
  /** Relative to the target. */
  path: string;
  action: 'add' | 'replace' | 'delete';
  /** add and replace: the input whose bytes the file gets. */
  from?: string;
  /** add and replace: the file is made executable (mode 0755 instead of 0644). */
  executable?: boolean;
}

/** Where a remediate capsule's steps find the staged copy of the change target, in the run's workspace. */
export const STAGED_TARGET_DIR = 'target';

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
  verifyChange(manifest, inputs);
  const steps = new Set<string>();
  for (const { name } of manifest.steps) {
    if (steps.has(name)) throw new CapsuleError('CAPSULE_SCHEMA', `The step name "${name}" is used twice.`, { name });
    steps.add(name);
  }
}

/**
 * A remediate capsule has a change and nothing else has one; a change names inputs for its bytes, paths
 * that stay inside the target, and no path twice. Its inputs stay out of the staged target's folder (they
 * would overwrite what the change staged), and it never recurs: a change is decided once.
 */
function verifyChange(manifest: Manifest, inputs: ReadonlySet<string>): void {
  const schema = (why: string, details: Record<string, unknown> = {}) => new CapsuleError('CAPSULE_SCHEMA', why, details);
  const { change } = manifest;
  if (manifest.kind !== 'remediate') {
    if (change !== undefined) throw schema(`A ${manifest.kind} capsule carries no change; only a remediate capsule does.`);
    return;
  }
  if (change === undefined) throw schema('A remediate capsule names no change.');
  if (manifest.schedule !== undefined) throw schema('A remediate capsule cannot recur: each change is proposed and decided once.');
  if (change.patch === undefined && change.files === undefined) throw schema('The change carries neither a patch nor files.');
  const staged = [...inputs].find((path) => path === STAGED_TARGET_DIR || path.startsWith(`${STAGED_TARGET_DIR}/`));
  if (staged !== undefined) {
    throw schema(`The input "${toPrintableExcerpt(staged)}" is in ${STAGED_TARGET_DIR}/, where the staged copy of the change target goes.`, {
      path: staged,
    });
  }
  const named = [
    ...(change.patch === undefined ? [] : [change.patch]),
    ...(change.files ?? []).flatMap((file) => (file.from === undefined ? [] : [file.from])),
  ];
  for (const path of named) {
    if (!inputs.has(path)) throw schema(`The change names "${toPrintableExcerpt(path)}", which is not one of the capsule's inputs.`, { path });
    // Plain text only: the change spec digest is recomputed with jq, which writes a control character (DEL
    // included) as an escape where canonical JSON writes it raw.
    if ([...path].some((c) => c.charCodeAt(0) < 0x20 || c === '\u007f'))
      throw schema(`The change names the input "${toPrintableExcerpt(path)}", whose name holds a control character.`, { path });
  }
  const paths = new Set<string>();
  for (const file of change.files ?? []) {
    if (!isContainedPath(file.path)) {
      throw new CapsuleError('CAPSULE_PATH_ESCAPE', `The change path "${toPrintableExcerpt(file.path)}" would leave the change target.`, {
        path: file.path,
      });
    }
    if (paths.has(file.path)) throw schema(`The change lists "${toPrintableExcerpt(file.path)}" twice.`, { path: file.path });
    paths.add(file.path);
    if ((file.action === 'delete') !== (file.from === undefined)) {
      throw schema(
        file.action === 'delete'
          ? `The change deletes "${toPrintableExcerpt(file.path)}" and also gives it bytes.`
          : `The change ${file.action}s "${toPrintableExcerpt(file.path)}" without naming the input that holds its bytes.`,
        { path: file.path },
      );
    }
    if (file.action === 'delete' && file.executable !== undefined) {
      throw schema(`The change deletes "${toPrintableExcerpt(file.path)}" and also sets its mode.`, { path: file.path });
    }
  }
}
