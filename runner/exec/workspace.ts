/**
 * A fresh workspace per run. Inputs are written read-only (0444, or 0555 when marked executable), with
 * every parent created by us and checked not to be a symlink, so nothing is written outside the workspace.
 */
import { chmodSync, lstatSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import { join, sep } from 'node:path';
import { ExecError } from './errors.js';
import { isContainedPath, type InputFile } from '../capsule/manifest.js';

export function createWorkspace(runDir: string): string {
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const workspace = join(runDir, 'workspace');
  mkdirSync(workspace, { mode: 0o755 });
  return realpathSync(workspace);
}

export function writeInputs(workspace: string, inputs: readonly InputFile[], bytes: ReadonlyMap<string, Buffer>): void {
  for (const input of inputs) {
    const target = resolveInside(workspace, input.path, { forWrite: true });
    const data = bytes.get(input.path);
    if (!data) throw new ExecError('EXEC_INPUT_MISSING', `The capsule carries no bytes for the input "${input.path}".`, { path: input.path });
    writeFileSync(target, data, { flag: 'wx', mode: 0o600 });
    chmodSync(target, input.executable ? 0o555 : 0o444);
  }
}

/**
 * Resolves a manifest path inside the workspace. Each existing component is lstat-ed: a symlink anywhere on
 * the way is an escape (CAPSULE_PATH_ESCAPE), as is a lexical escape. With forWrite, missing parents are made.
 */
export function resolveInside(workspace: string, path: string, options: { forWrite?: boolean } = {}): string {
  const escape = () => new ExecError('EXEC_PATH_ESCAPE', `The path "${path}" would leave the run's workspace.`, { path });
  if (!isContainedPath(path)) throw escape();
  const segments = path.split('/');
  let current = workspace;
  for (let i = 0; i < segments.length; i++) {
    current = join(current, segments[i]!);
    const last = i === segments.length - 1;
    let stat;
    try {
      stat = lstatSync(current);
    } catch {
      if (options.forWrite && !last) {
        mkdirSync(current, { mode: 0o755 });
        continue;
      }
      return current; // absent: the caller decides what a missing file means
    }
    if (stat.isSymbolicLink()) throw escape();
    if (!last && !stat.isDirectory()) throw escape();
  }
  if (!current.startsWith(workspace + sep)) throw escape();
  return current;
}
