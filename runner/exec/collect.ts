/**
 * After the steps: each `collect` rule's file is opened without following symlinks, digested into the
 * local evidence store, and summarised by its parser. Paths come from the signed manifest; a path that
 * reaches through a symlink is recorded as escaped and never read.
 */
import { closeSync, constants, fstatSync, openSync, readlinkSync, readSync } from 'node:fs';
import { sep } from 'node:path';
import type { CollectRule } from '../capsule/manifest.js';
import { ExecError } from './errors.js';
import { DEFAULT_CONFIG } from '../config/config.js';
import { parserFor } from '../evidence/parsers/index.js';
import type { ArtifactRecord } from '../evidence/statement.js';
import type { BlobStore } from '../state/blobs.js';
import { resolveInside } from './workspace.js';

/** The default cap on a collected file (runner/config/config.ts owns the setting). */
export const COLLECT_MAX_BYTES = DEFAULT_CONFIG.exec.collectMaxBytes;

/** An artifact as the evidence records it (runner/evidence/statement.ts owns the format). */
export type Artifact = ArtifactRecord;

export function collectArtifacts(workspace: string, rules: readonly CollectRule[], blobs: BlobStore, maxBytes = COLLECT_MAX_BYTES): Artifact[] {
  return rules.map((rule) => collectOne(workspace, rule, blobs, maxBytes));
}

function openedInside(fd: number, workspace: string): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`).startsWith(workspace + sep);
  } catch {
    return false;
  }
}

function collectOne(workspace: string, rule: CollectRule, blobs: BlobStore, maxBytes: number): Artifact {
  const base = { path: rule.path, as: rule.as };
  let target: string;
  try {
    target = resolveInside(workspace, rule.path);
  } catch (err) {
    if (err instanceof ExecError && err.code === 'EXEC_PATH_ESCAPE') return { ...base, status: 'escaped' };
    throw err;
  }
  let fd: number;
  try {
    fd = openSync(target, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ...base, status: code === 'ELOOP' ? 'escaped' : code === 'ENOENT' ? 'missing' : 'not-a-file' };
  }
  try {
    // The lstat walk above and this open are two moments: a step process still alive could have swapped a
    // folder on the way for a symlink in between. What counts is the file actually opened: its path must
    // be inside the workspace, and it must not be a hard link to a file elsewhere.
    if (!openedInside(fd, workspace)) return { ...base, status: 'escaped' };
    const stat = fstatSync(fd);
    if (!stat.isFile()) return { ...base, status: 'not-a-file' };
    if (stat.nlink > 1) return { ...base, status: 'escaped' };
    if (stat.size > maxBytes) return { ...base, status: 'too-large', size: stat.size };
    const data = Buffer.alloc(stat.size);
    let read = 0;
    while (read < data.length) {
      const n = readSync(fd, data, read, data.length - read, read);
      if (n === 0) break;
      read += n;
    }
    const bytes = data.subarray(0, read);
    const digest = blobs.put(bytes);
    const artifact: Artifact = { ...base, status: 'collected', digest, size: bytes.length };
    const parser = parserFor(rule.as);
    if (parser) artifact.summary = parser.parse(bytes);
    return artifact;
  } finally {
    closeSync(fd);
  }
}
