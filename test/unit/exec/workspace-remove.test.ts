/** Issue 8, point 14b at the mechanism: removeTree removes any depth, never outside, and says why it failed. */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { removeTree } from '../../../runner/exec/workspace.js';

describe('removeTree', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-runner-rmtree-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it.skipIf(!existsSync('/usr/bin/perl'))('attack 14b: removes 8000 nested folders (far past PATH_MAX) with a file in the deepest', () => {
    const root = join(dir, 'run');
    mkdirSync(root);
    const made = spawnSync('/usr/bin/perl', ['-e', 'for (1..8000) { mkdir "dd" or die; chdir "dd" or die } open F, ">deep" or die; close F'], {
      cwd: root,
    });
    expect(made.status, made.stderr.toString()).toBe(0);
    removeTree(root);
    expect(existsSync(root)).toBe(false);
  });

  it('never follows a symlink inside the tree: what it points to stays', () => {
    const outside = join(dir, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'keep'), 'keep me');
    const root = join(dir, 'run');
    mkdirSync(join(root, 'a', 'b'), { recursive: true });
    symlinkSync(outside, join(root, 'a', 'b', 'link-to-dir'));
    symlinkSync(join(outside, 'keep'), join(root, 'a', 'link-to-file'));
    writeFileSync(join(root, 'a', 'input'), 'read-only input');
    chmodSync(join(root, 'a', 'input'), 0o444);
    removeTree(root);
    expect(existsSync(root)).toBe(false);
    expect(readFileSync(join(outside, 'keep'), 'utf8')).toBe('keep me');
  });

  it('a missing folder is not an error; a symlink given as the folder is removed, not followed', () => {
    removeTree(join(dir, 'absent'));
    const outside = join(dir, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'keep'), 'keep me');
    symlinkSync(outside, join(dir, 'run'));
    removeTree(join(dir, 'run'));
    expect(existsSync(join(dir, 'run'))).toBe(false);
    expect(readFileSync(join(outside, 'keep'), 'utf8')).toBe('keep me');
  });

  it.skipIf(process.getuid?.() !== 0)(
    'a folder it cannot remove (a mount point: EBUSY) ends with EXEC_WORKSPACE_NOT_REMOVED and its errno (needs root)',
    () => {
      const root = join(dir, 'run');
      const point = join(root, 'a', 'mounted');
      mkdirSync(point, { recursive: true });
      expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', point]).status).toBe(0);
      try {
        expect(() => removeTree(root)).toThrow(
          expect.objectContaining({ code: 'EXEC_WORKSPACE_NOT_REMOVED', details: expect.objectContaining({ errno: 'EBUSY' }) }),
        );
      } finally {
        spawnSync('umount', [point]);
      }
      removeTree(root);
      expect(existsSync(root)).toBe(false);
    },
  );
});
