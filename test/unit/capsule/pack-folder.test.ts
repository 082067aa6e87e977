/**
 * capsule pack's walk and reads on a real folder (runner/cli/capsule.ts folderTree and readInputs): what a
 * hostile or careless author's folder may hold (a symlinked folder above a named input, a folder swapped
 * for a symlink between the walk and the read, file names that are not UTF-8) never brings in bytes from
 * outside the folder, and never leaves a file out silently.
 */
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { expandInputs, PackError } from '../../../runner/capsule/pack.js';
import { folderTree, readInputs } from '../../../runner/cli/capsule.js';
import { UsageError } from '../../../runner/cli/output.js';

let root: string;
let dir: string;
let outside: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'pack-folder-'));
  dir = join(root, 'capsule');
  outside = join(root, 'outside');
  mkdirSync(dir);
  mkdirSync(join(outside, 'sub'), { recursive: true });
  writeFileSync(join(outside, 'id_rsa'), 'SECRET');
  writeFileSync(join(outside, 'sub', 'key.pem'), 'SUBSECRET');
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof PackError || err instanceof UsageError) return err.message;
    throw err;
  }
  throw new Error('expected a refusal');
}

describe('capsule pack on a real folder', () => {
  it('refuses a file, a folder or a pattern named below a symlinked folder (lstat follows the folders above)', () => {
    symlinkSync(outside, join(dir, 'link'));
    for (const path of ['link/id_rsa', 'link/sub', 'link/sub/key.pem', 'link/sub/*.pem']) {
      expect(
        message(() => expandInputs([{ path }], folderTree(dir))),
        path,
      ).toContain('The input "link" is a symlink');
    }
  });

  it('refuses a file whose folder was swapped for a symlink after the walk, instead of reading what it now leads to', () => {
    mkdirSync(join(dir, 'suite'));
    writeFileSync(join(dir, 'suite', 'key.pem'), 'inside');
    const tree = folderTree(dir);
    const inputs = expandInputs([{ path: 'suite' }], tree);
    expect(inputs).toEqual([{ path: 'suite/key.pem' }]);
    // Between the walk and the read: suite/ becomes a link to a folder outside holding a file of that name.
    renameSync(join(dir, 'suite'), join(root, 'moved'));
    symlinkSync(join(outside, 'sub'), join(dir, 'suite'));
    expect(message(() => readInputs(dir, inputs, tree))).toBe(
      'The input "suite/key.pem" is not the file the folder held when it was listed; it changed while it was packed.',
    );
  });

  it('refuses a file reached through a folder swapped for a symlink while the walk listed it', () => {
    mkdirSync(join(dir, 'suite'));
    writeFileSync(join(dir, 'suite', 'a.t'), 'inside');
    writeFileSync(join(outside, 'sub', 'a.t'), 'outside');
    const tree = folderTree(dir);
    // The race, made certain: suite/ passes lstat as a folder, then becomes a link before it is listed,
    // so the walk lists (and lstat describes) the outside folder's files under suite/.
    const racing = {
      entry: tree.entry,
      children(path: string) {
        if (path === 'suite') {
          renameSync(join(dir, 'suite'), join(root, 'moved'));
          symlinkSync(join(outside, 'sub'), join(dir, 'suite'));
        }
        return tree.children(path);
      },
    };
    const inputs = expandInputs([{ path: 'suite' }], racing);
    expect(inputs.map((i) => i.path)).toEqual(['suite/a.t', 'suite/key.pem']);
    expect(message(() => readInputs(dir, inputs, tree))).toBe(
      'The input "suite/a.t" was reached through a symlink that appeared while it was packed.',
    );
  });

  it('reads the very files it walked', () => {
    mkdirSync(join(dir, 't'));
    writeFileSync(join(dir, 't', 'a.t'), 'a');
    writeFileSync(join(dir, 't', 'b.t'), 'bb');
    const tree = folderTree(dir);
    const files = readInputs(dir, expandInputs([{ path: 't/*.t' }], tree), tree);
    expect([...files].map(([path, bytes]) => [path, bytes.toString()])).toEqual([
      ['t/a.t', 'a'],
      ['t/b.t', 'bb'],
    ]);
  });

  it('refuses a folder holding a file name that is not UTF-8, rather than leaving files out or naming one that is not there', () => {
    mkdirSync(join(dir, 'd'));
    // Node decodes both names to "\uFFFD.t"; a third file really has that name.
    writeFileSync(Buffer.concat([Buffer.from(`${dir}/d/`), Buffer.from([0xff]), Buffer.from('.t')]), 'a');
    writeFileSync(Buffer.concat([Buffer.from(`${dir}/d/`), Buffer.from([0xfe]), Buffer.from('.t')]), 'b');
    writeFileSync(join(dir, 'd', '\uFFFD.t'), 'c');
    for (const path of ['d', 'd/*.t']) {
      expect(
        message(() => expandInputs([{ path }], folderTree(dir))),
        path,
      ).toBe('A file name in the folder "d" is not UTF-8; a capsule input path must be.');
    }
  });
});
