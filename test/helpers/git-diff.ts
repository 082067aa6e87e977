/**
 * Real unified diffs from real git: a scratch repository holds `before`, is committed, gets `after`, and
 * `git diff --cached` says what changed (a/ and b/ names, renames detected, "\ No newline at end of file").
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export type GitFiles = Record<string, string | Buffer | { bytes: string | Buffer; mode: number }>;

const GIT_ENV = { PATH: '/usr/bin:/bin', HOME: '/nonexistent', GIT_CONFIG_NOSYSTEM: '1', LC_ALL: 'C' };

function git(cwd: string, args: string[]): Buffer {
  const result = spawnSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.invalid', '-c', 'core.autocrlf=false', ...args], {
    cwd,
    env: GIT_ENV,
  });
  if (result.status !== 0) throw new Error(`git ${args.join(' ')} failed: ${result.stderr.toString()}`);
  return result.stdout;
}

function writeAll(root: string, files: GitFiles): void {
  for (const [path, value] of Object.entries(files)) {
    const file = join(root, path);
    mkdirSync(dirname(file), { recursive: true });
    const bytes = typeof value === 'string' || Buffer.isBuffer(value) ? value : value.bytes;
    writeFileSync(file, bytes);
    chmodSync(file, typeof value === 'string' || Buffer.isBuffer(value) ? 0o644 : value.mode);
  }
}

/** The diff git writes from `before` to `after` (a path missing from `after` is deleted). */
export function gitDiff(before: GitFiles, after: GitFiles, extraArgs: string[] = []): Buffer {
  const root = mkdtempSync(join(tmpdir(), 'edge-runner-gitdiff-'));
  try {
    git(root, ['init', '-q']);
    writeAll(root, before);
    git(root, ['add', '-A']);
    git(root, ['commit', '-q', '--allow-empty', '-m', 'before']);
    for (const path of Object.keys(before)) if (!(path in after)) rmSync(join(root, path));
    writeAll(root, after);
    git(root, ['add', '-A']);
    return git(root, ['diff', '--cached', ...extraArgs]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
