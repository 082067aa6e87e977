/**
 * Issue 11, the target's state as one digest (runner/remediate/tree.ts): golden vectors (files, modes,
 * symlinks, empty folders), the auditor's find/stat/sha256sum recipe giving the same digest, symlinks never
 * followed, the caps at their limits, the copy, and every CHANGE_TARGET_* code.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { copyTree, readTree, TREE_MAX_DEPTH, treeDigestOf, type TreeCaps } from '../../../runner/remediate/tree.js';
import { codeOf } from '../../helpers/codes.js';

const CAPS: TreeCaps = { maxBytes: 256 * 1024 * 1024, maxEntries: 100_000 };
const isRoot = process.getuid?.() === 0;
const hex = (text: string | Buffer) => createHash('sha256').update(text).digest('hex');

/**
 * The README's recipe, run as written: an auditor recomputes the digest of a target folder with find,
 * stat, readlink and sha256sum (GNU coreutils and findutils).
 */
export const AUDITOR_RECIPE = String.raw`cd "$1" && LC_ALL=C find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z |
  while IFS= read -r -d '' p; do
    if [ -L "$p" ]; then printf 'symlink 0777 %s %s\n' "$(readlink -n -- "$p" | sha256sum | cut -c1-64)" "$p"
    elif [ -d "$p" ]; then printf 'dir %04d - %s\n' "$(stat -c %a -- "$p")" "$p"
    else printf 'file %04d %s %s\n' "$(stat -c %a -- "$p")" "$(sha256sum < "$p" | cut -c1-64)" "$p"
    fi
  done | sha256sum | sed 's/^\([0-9a-f]*\).*/sha256:\1/'`;

function auditorDigest(root: string): string {
  const result = spawnSync('bash', ['-c', AUDITOR_RECIPE, 'recipe', root], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
  if (result.status !== 0) throw new Error(result.stderr);
  return result.stdout.trim();
}
const hasRecipeTools = ['bash', 'find', 'stat', 'sha256sum', 'readlink', 'sort'].every(
  (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0,
);

describe('the tree digest', () => {
  let dir: string;
  let root: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-runner-tree-'));
    root = join(dir, 'target');
    mkdirSync(root);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** A target with every kind of entry: nested files, modes, an empty folder, symlinks in and out. */
  function makeTarget(): void {
    mkdirSync(join(root, 'conf'));
    writeFileSync(join(root, 'conf', 'app.ini'), 'rounding = half-even\n');
    chmodSync(join(root, 'conf', 'app.ini'), 0o640);
    writeFileSync(join(root, 'run.sh'), '#!/bin/sh\nexit 0\n');
    chmodSync(join(root, 'run.sh'), 0o4755);
    mkdirSync(join(root, 'empty'));
    chmodSync(join(root, 'empty'), 0o700);
    symlinkSync('conf/app.ini', join(root, 'current'));
    symlinkSync('/etc', join(root, 'outside'));
    writeFileSync(join(root, 'a b.txt'), '');
    chmodSync(join(root, 'a b.txt'), 0o644);
    chmodSync(join(root, 'conf'), 0o755);
  }

  it('is the SHA-256 of one line per entry, sorted by path (golden vector)', () => {
    makeTarget();
    const lines =
      `file 0644 ${hex('')} a b.txt\n` +
      `dir 0755 - conf\n` +
      `file 0640 ${hex('rounding = half-even\n')} conf/app.ini\n` +
      `symlink 0777 ${hex('conf/app.ini')} current\n` +
      `dir 0700 - empty\n` +
      `symlink 0777 ${hex('/etc')} outside\n` +
      `file 4755 ${hex('#!/bin/sh\nexit 0\n')} run.sh\n`;
    const state = readTree(root, CAPS);
    expect(state.digest).toBe(`sha256:${hex(lines)}`);
    expect(state.entries.map((e) => e.path)).toEqual(['a b.txt', 'conf', 'conf/app.ini', 'current', 'empty', 'outside', 'run.sh']);
    expect(treeDigestOf([...state.entries].reverse())).toBe(state.digest);
  });

  it('of an empty target is the SHA-256 of nothing', () => {
    expect(readTree(root, CAPS)).toEqual({ digest: `sha256:${hex('')}`, entries: [] });
  });

  it('sorts by the UTF-8 bytes of the whole path, as `LC_ALL=C sort` does (U+E000 before U+1F600, which code-unit order reverses)', () => {
    writeFileSync(join(root, '\u{1F600}'), '');
    writeFileSync(join(root, '\uE000'), '');
    expect(readTree(root, CAPS).entries.map((e) => e.path)).toEqual(['\uE000', '\u{1F600}']);
    expect(['\uE000', '\u{1F600}'].sort()).toEqual(['\u{1F600}', '\uE000']);
  });

  it('sorts by the whole path ("a.b" before "a/b", "a-b" before "a/")', () => {
    mkdirSync(join(root, 'a'));
    writeFileSync(join(root, 'a', 'b'), '');
    writeFileSync(join(root, 'a.b'), '');
    writeFileSync(join(root, 'a-b'), '');
    expect(readTree(root, CAPS).entries.map((e) => e.path)).toEqual(['a', 'a-b', 'a.b', 'a/b']);
  });

  it.runIf(hasRecipeTools)("equals what the auditor's find/stat/sha256sum recipe computes", () => {
    makeTarget();
    mkdirSync(join(root, 'deep', 'er'), { recursive: true });
    writeFileSync(join(root, 'deep', 'er', 'café ünïcode'), 'x');
    writeFileSync(join(root, '-leading-dash'), 'y\n');
    writeFileSync(join(root, '\u{1F600}'), '');
    writeFileSync(join(root, '\uE000'), '');
    symlinkSync('target with\nnewline', join(root, 'odd-link'));
    expect(auditorDigest(root)).toBe(readTree(root, CAPS).digest);
  });

  it('changes with a mode, a byte, a name, a symlink target, and an empty folder', () => {
    makeTarget();
    const seen = new Set([readTree(root, CAPS).digest]);
    const step = (fn: () => void) => {
      fn();
      const digest = readTree(root, CAPS).digest;
      expect(seen.has(digest)).toBe(false);
      seen.add(digest);
    };
    step(() => chmodSync(join(root, 'conf', 'app.ini'), 0o644));
    step(() => writeFileSync(join(root, 'conf', 'app.ini'), 'rounding = half-up\n'));
    step(() => mkdirSync(join(root, 'empty', 'inner')));
    step(() => {
      rmSync(join(root, 'current'));
      symlinkSync('run.sh', join(root, 'current'));
    });
    step(() => writeFileSync(join(root, 'new'), ''));
  });

  it('never follows a symlink: a link to a folder outside is one entry, its files are not read', () => {
    const outside = join(dir, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'secret'), 'not part of the target');
    symlinkSync(outside, join(root, 'link'));
    const state = readTree(root, CAPS);
    expect(state.entries).toEqual([{ type: 'symlink', path: 'link', sha256: hex(outside) }]);
  });

  describe('refusals', () => {
    it('rejects with CHANGE_TARGET_MISSING a target that is missing, a file, or a symlink to a folder', () => {
      expect(codeOf(() => readTree(join(dir, 'nope'), CAPS))).toBe('CHANGE_TARGET_MISSING');
      writeFileSync(join(dir, 'file'), '');
      expect(codeOf(() => readTree(join(dir, 'file'), CAPS))).toBe('CHANGE_TARGET_MISSING');
      symlinkSync(root, join(dir, 'link'));
      expect(codeOf(() => readTree(join(dir, 'link'), CAPS))).toBe('CHANGE_TARGET_MISSING');
    });

    it('rejects with CHANGE_TARGET_UNSUPPORTED a fifo', () => {
      mkdirSync(join(root, 'run'));
      expect(spawnSync('mkfifo', [join(root, 'run', 'pipe')]).status).toBe(0);
      expect(codeOf(() => readTree(root, CAPS))).toBe('CHANGE_TARGET_UNSUPPORTED');
    });

    it('rejects with CHANGE_TARGET_UNSUPPORTED a name with a newline (two trees would read as the same lines) or not UTF-8', () => {
      writeFileSync(join(root, 'a\nfile 0644 x b'), '');
      expect(codeOf(() => readTree(root, CAPS))).toBe('CHANGE_TARGET_UNSUPPORTED');
      rmSync(join(root, 'a\nfile 0644 x b'));
      writeFileSync(Buffer.concat([Buffer.from(`${root}/`), Buffer.from([0xff, 0xfe])]), '');
      expect(codeOf(() => readTree(root, CAPS))).toBe('CHANGE_TARGET_UNSUPPORTED');
    });

    it('takes maxEntries entries and rejects one more with CHANGE_TARGET_TOO_LARGE', () => {
      for (let i = 0; i < 9; i++) writeFileSync(join(root, `f${i}`), '');
      mkdirSync(join(root, 'd'));
      expect(readTree(root, { ...CAPS, maxEntries: 10 }).entries).toHaveLength(10);
      expect(codeOf(() => readTree(root, { ...CAPS, maxEntries: 9 }))).toBe('CHANGE_TARGET_TOO_LARGE');
    });

    it('takes maxBytes bytes of files and rejects one more with CHANGE_TARGET_TOO_LARGE', () => {
      writeFileSync(join(root, 'a'), Buffer.alloc(600));
      mkdirSync(join(root, 'd'));
      writeFileSync(join(root, 'd', 'b'), Buffer.alloc(400));
      expect(readTree(root, { ...CAPS, maxBytes: 1000 }).entries).toHaveLength(3);
      expect(codeOf(() => readTree(root, { ...CAPS, maxBytes: 999 }))).toBe('CHANGE_TARGET_TOO_LARGE');
    });

    it(`takes folders ${TREE_MAX_DEPTH} deep and rejects one deeper with CHANGE_TARGET_TOO_LARGE`, () => {
      let path = root;
      for (let i = 0; i < TREE_MAX_DEPTH; i++) {
        path = join(path, 'd');
        mkdirSync(path);
      }
      expect(readTree(root, CAPS).entries).toHaveLength(TREE_MAX_DEPTH);
      mkdirSync(join(path, 'd'));
      expect(codeOf(() => readTree(root, CAPS))).toBe('CHANGE_TARGET_TOO_LARGE');
    });

    it.runIf(isRoot && existsSync('/usr/bin/setpriv'))(
      'rejects with CHANGE_TARGET_UNREADABLE a folder it may not read (as root: the built tree.js run as uid 65534)',
      () => {
        const entry = fileURLToPath(new URL('../../../dist/runner/remediate/tree.js', import.meta.url));
        if (!existsSync(entry)) throw new Error(`${entry} is missing: run \`npx tsc -p tsconfig.build.json\` (npm test does)`);
        chmodSync(dir, 0o755);
        chmodSync(root, 0o755);
        mkdirSync(join(root, 'locked'), { mode: 0o700 });
        writeFileSync(join(root, 'locked', 'x'), '');
        const script = `const { readTree } = await import(${JSON.stringify(pathToFileURL(entry).href)});
          try { readTree(${JSON.stringify(root)}, { maxBytes: 1e9, maxEntries: 1e6 }); console.log('read'); } catch (err) { console.log(err.code); }`;
        const result = spawnSync(
          '/usr/bin/setpriv',
          ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script],
          {
            encoding: 'utf8',
            env: { PATH: '/usr/bin:/bin' },
          },
        );
        expect(result.stdout.trim(), result.stderr).toBe('CHANGE_TARGET_UNREADABLE');
      },
    );

    it.skipIf(isRoot)('rejects with CHANGE_TARGET_UNREADABLE a folder it may not read (not as root: root reads it)', () => {
      mkdirSync(join(root, 'locked'));
      writeFileSync(join(root, 'locked', 'x'), '');
      chmodSync(join(root, 'locked'), 0);
      try {
        expect(codeOf(() => readTree(root, CAPS))).toBe('CHANGE_TARGET_UNREADABLE');
      } finally {
        chmodSync(join(root, 'locked'), 0o755);
      }
    });
  });

  describe('copyTree', () => {
    it('copies files, modes, empty folders and symlinks as symlinks, and returns the digest the source has', () => {
      makeTarget();
      chmodSync(join(root, 'empty'), 0o555);
      const dest = join(dir, 'copy');
      const copied = copyTree(root, dest, CAPS);
      expect(copied).toEqual(readTree(root, CAPS));
      expect(readTree(dest, CAPS)).toEqual(copied);
      expect(statSync(dest).mode & 0o7777).toBe(0o700);
      expect(lstatSync(join(dest, 'outside')).isSymbolicLink()).toBe(true);
      expect(readlinkSync(join(dest, 'outside'))).toBe('/etc');
    });

    it('refuses a destination that exists (STATE_WRITE_FAILED) and leaves it as it was', () => {
      const dest = join(dir, 'copy');
      mkdirSync(dest);
      writeFileSync(join(dest, 'keep'), 'k');
      expect(codeOf(() => copyTree(root, dest, CAPS))).toBe('STATE_WRITE_FAILED');
      expect(existsSync(join(dest, 'keep'))).toBe(true);
    });

    it('removes what it copied when the target is refused halfway (a fifo)', () => {
      for (let i = 0; i < 5; i++) writeFileSync(join(root, `a${i}`), 'x');
      expect(spawnSync('mkfifo', [join(root, 'z-pipe')]).status).toBe(0);
      const dest = join(dir, 'copy');
      expect(codeOf(() => copyTree(root, dest, CAPS))).toBe('CHANGE_TARGET_UNSUPPORTED');
      expect(existsSync(dest)).toBe(false);
    });
  });
});
