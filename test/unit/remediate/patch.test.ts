/**
 * Issue 11, the change's plan: a unified diff applied exactly (each hunk at its stated line, no fuzz, no
 * offset, bytes compared as they are), whole files added, replaced or deleted, and every way a hostile
 * capsule signer's change is refused, by code. Real diffs come from real git (test/helpers/git-diff.ts).
 */
import { applyPatch, parsePatch } from 'diff';
import { describe, expect, it } from 'vitest';
import type { Change } from '../../../runner/capsule/manifest.js';
import { sha256Hex } from '../../../runner/core/digest.js';
import { ChangeError } from '../../../runner/remediate/errors.js';
import {
  PATCH_MAX_BYTES,
  PATCH_MAX_FILES,
  PATCH_MAX_HUNKS,
  planChange,
  TEMP_PREFIX,
  type FilePlan,
  type PlannedRead,
} from '../../../runner/remediate/patch.js';
import { codeOf } from '../../helpers/codes.js';
import { gitDiff } from '../../helpers/git-diff.js';

type Target = Record<string, string | Buffer | { bytes: string | Buffer; mode: number } | 'not-a-file'>;

/** `read` over an in-memory target. */
function readerOf(target: Target): (path: string) => PlannedRead {
  return (path) => {
    if (!Object.hasOwn(target, path)) return 'absent';
    const value = target[path]!;
    if (value === 'not-a-file') return value;
    if (typeof value === 'string' || Buffer.isBuffer(value)) return { bytes: Buffer.from(value), mode: 0o644 };
    return { bytes: Buffer.from(value.bytes), mode: value.mode };
  };
}

/** The plan of a change made of one patch (and optional files) against `target`. */
function plan(
  target: Target,
  patch: string | Buffer | undefined,
  files: Change['files'] = undefined,
  inputs: Record<string, string | Buffer> = {},
): FilePlan[] {
  const bytes = new Map(Object.entries(inputs).map(([k, v]) => [k, Buffer.from(v)]));
  if (patch !== undefined) bytes.set('fix.diff', Buffer.from(patch));
  const change: Change = { target: 'app', ...(patch === undefined ? {} : { patch: 'fix.diff' }), ...(files === undefined ? {} : { files }) };
  return planChange(change, bytes, readerOf(target));
}

const after = (p: FilePlan | undefined): string => p!.after!.bytes.toString('latin1');
const planCode = (...args: Parameters<typeof plan>) => codeOf(() => plan(...args));

const TEN = Array.from({ length: 10 }, (_, i) => `line ${i + 1}\n`).join('');

describe('planChange', () => {
  describe('when a git diff modifies a file', () => {
    it('applies each hunk at its line and counts the lines added and removed', () => {
      const changed = TEN.replace('line 2\n', 'line two\n').replace('line 9\n', 'line nine\nline nine and a half\n');
      const diff = gitDiff({ 'conf/app.ini': TEN }, { 'conf/app.ini': changed }, ['-U1']);
      const [file, ...rest] = plan({ 'conf/app.ini': TEN }, diff);
      expect(rest).toEqual([]);
      expect(file).toMatchObject({ path: 'conf/app.ini', action: 'modify', linesAdded: 3, linesRemoved: 2 });
      expect(after(file)).toBe(changed);
      expect(file!.before).toEqual({ sha256: sha256Hex(Buffer.from(TEN)), mode: 0o644 });
      expect(file!.after!.sha256).toBe(sha256Hex(Buffer.from(changed)));
    });

    it('keeps the file mode (0600 stays 0600, 4755 stays 4755)', () => {
      const diff = gitDiff({ a: TEN }, { a: TEN.replace('line 5', 'five') });
      expect(plan({ a: { bytes: TEN, mode: 0o600 } }, diff)[0]!.after!.mode).toBe(0o600);
      expect(plan({ a: { bytes: TEN, mode: 0o4755 } }, diff)[0]!.after!.mode).toBe(0o4755);
    });

    it('rejects with CHANGE_HUNK_FAILED a hunk whose lines are there, but not at its stated line (jsdiff alone would move it)', () => {
      const diff = gitDiff({ a: TEN }, { a: TEN.replace('line 5\n', 'five\n') }).toString('latin1');
      const moved = `line 0\n${TEN}`; // every line one further down
      // jsdiff's own applyPatch, fuzz 0, searches and finds the hunk one line off: exactly what we refuse.
      expect(applyPatch(moved, parsePatch(diff)[0]!, { fuzzFactor: 0 })).toBe(`line 0\n${TEN.replace('line 5\n', 'five\n')}`);
      const err = catchChangeError(() => plan({ a: moved }, diff));
      expect(err.code).toBe('CHANGE_HUNK_FAILED');
      expect(err.details).toEqual({ path: 'a', hunk: 1 });
    });

    it('names the hunk that fails (the second of two) and the file', () => {
      const changed = TEN.replace('line 1\n', 'one\n').replace('line 10\n', 'ten\n');
      const diff = gitDiff({ a: TEN }, { a: changed }, ['-U1']);
      const err = catchChangeError(() => plan({ a: TEN.replace('line 9\n', 'line 9 edited\n') }, diff));
      expect(err.code).toBe('CHANGE_HUNK_FAILED');
      expect(err.details).toEqual({ path: 'a', hunk: 2 });
      expect(err.message).toBe('Hunk 2 of the patch to "a" does not apply: line 9 is not what it says.');
    });

    it("never prints the file's bytes in its message", () => {
      const diff = gitDiff({ a: 'password=hunter2\n' }, { a: 'password=correct-horse\n' });
      const err = catchChangeError(() => plan({ a: 'password=other-secret\n' }, diff));
      expect(err.code).toBe('CHANGE_HUNK_FAILED');
      expect(err.message).not.toMatch(/hunter2|correct-horse|other-secret/);
    });

    it('rejects with CHANGE_PATCH_INVALID a hunk whose new-side line the hunks before it do not lead to', () => {
      const diff = '--- a/a\n+++ b/a\n@@ -1,2 +1,3 @@\n line 1\n+new\n line 2\n@@ -5,1 +5,1 @@\n-line 5\n+five\n';
      expect(planCode({ a: TEN }, diff)).toBe('CHANGE_PATCH_INVALID');
      const fixed = diff.replace('@@ -5,1 +5,1 @@', '@@ -5,1 +6,1 @@');
      expect(after(plan({ a: TEN }, fixed)[0])).toBe(TEN.replace('line 1\n', 'line 1\nnew\n').replace('line 5\n', 'five\n'));
    });

    it('rejects with CHANGE_PATCH_INVALID hunks out of order or overlapping', () => {
      const reversed = '--- a/a\n+++ b/a\n@@ -5 +5 @@\n-line 5\n+five\n@@ -2 +2 @@\n-line 2\n+two\n';
      expect(planCode({ a: TEN }, reversed)).toBe('CHANGE_PATCH_INVALID');
      const overlapping = '--- a/a\n+++ b/a\n@@ -2,2 +2,2 @@\n-line 2\n+two\n line 3\n@@ -3 +3 @@\n-line 3\n+three\n';
      expect(planCode({ a: TEN }, overlapping)).toBe('CHANGE_PATCH_INVALID');
    });

    it('rejects with CHANGE_FILE_MISSING a diff of a file the target does not have', () => {
      expect(planCode({}, gitDiff({ a: TEN }, { a: `${TEN}x\n` }))).toBe('CHANGE_FILE_MISSING');
    });

    it('rejects with CHANGE_PATCH_INVALID a file header without a hunk', () => {
      expect(planCode({ a: TEN }, '--- a/a\n+++ b/a\n')).toBe('CHANGE_PATCH_INVALID');
    });
  });

  describe('line endings and the last line', () => {
    it('patches a CRLF file with a CRLF diff, keeping CRLF', () => {
      const crlf = 'a\r\nb\r\nc\r\n';
      const diff = gitDiff({ w: crlf }, { w: 'a\r\nB\r\nc\r\n' });
      expect(after(plan({ w: crlf }, diff)[0])).toBe('a\r\nB\r\nc\r\n');
    });

    it('rejects with CHANGE_HUNK_FAILED an LF diff against the CRLF file (no line-ending conversion, which jsdiff does by default)', () => {
      const diff = gitDiff({ w: 'a\nb\nc\n' }, { w: 'a\nB\nc\n' }).toString('latin1');
      const crlf = 'a\r\nb\r\nc\r\n';
      expect(applyPatch(crlf, parsePatch(diff)[0]!)).toBe('a\r\nB\r\nc\r\n');
      expect(planCode({ w: crlf }, diff)).toBe('CHANGE_HUNK_FAILED');
    });

    it('changes a last line that has no newline, and keeps it without one', () => {
      const diff = gitDiff({ f: 'a\nb' }, { f: 'a\nB' });
      expect(diff.toString()).toContain('\\ No newline at end of file');
      expect(after(plan({ f: 'a\nb' }, diff)[0])).toBe('a\nB');
    });

    it('adds a newline at the end, and removes one', () => {
      expect(after(plan({ f: 'a\nb' }, gitDiff({ f: 'a\nb' }, { f: 'a\nb\n' }))[0])).toBe('a\nb\n');
      expect(after(plan({ f: 'a\nb\n' }, gitDiff({ f: 'a\nb\n' }, { f: 'a\nb' }))[0])).toBe('a\nb');
      expect(after(plan({ f: 'a\nb' }, gitDiff({ f: 'a\nb' }, { f: 'a\nb\nc\n' }))[0])).toBe('a\nb\nc\n');
    });

    it('rejects with CHANGE_HUNK_FAILED a hunk that says the file has no newline at its end when it has one, and the other way round', () => {
      const noEol = gitDiff({ f: 'a\nb' }, { f: 'a\nB' });
      expect(planCode({ f: 'a\nb\n' }, noEol)).toBe('CHANGE_HUNK_FAILED');
      const eol = gitDiff({ f: 'a\nb\n' }, { f: 'a\nB\n' });
      expect(planCode({ f: 'a\nb' }, eol)).toBe('CHANGE_HUNK_FAILED');
      const append = '--- a/f\n+++ b/f\n@@ -2,0 +3 @@\n+c\n';
      expect(planCode({ f: 'a\nb' }, append)).toBe('CHANGE_HUNK_FAILED');
      expect(after(plan({ f: 'a\nb\n' }, append)[0])).toBe('a\nb\nc\n');
    });

    it('rejects with CHANGE_PATCH_INVALID a "\\ No newline at end of file" that is not on a last line', () => {
      const misplaced = '--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-a\n\\ No newline at end of file\n-b\n+A\n+b\n';
      expect(planCode({ f: 'a\nb' }, misplaced)).toBe('CHANGE_PATCH_INVALID');
      const early = '--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+A\n';
      expect(planCode({ f: 'a\nb' }, early)).toBe('CHANGE_HUNK_FAILED');
    });

    it('patches bytes that are not UTF-8 exactly (latin1 text)', () => {
      const before = Buffer.from('caf\xe9\nna\xefve\n', 'latin1');
      const changed = Buffer.from('caf\xe9\nna\xefve!\n', 'latin1');
      const diff = gitDiff({ l: before }, { l: changed });
      expect(plan({ l: before }, diff)[0]!.after!.bytes.equals(changed)).toBe(true);
    });
  });

  describe('when a git diff adds or deletes a file', () => {
    it('adds a file from /dev/null with mode 0644, or 0755 for git\'s "new file mode 100755"', () => {
      const [file] = plan({}, gitDiff({}, { 'bin/new.sh': 'echo hi\n' }));
      expect(file).toMatchObject({ path: 'bin/new.sh', action: 'add', linesAdded: 1, linesRemoved: 0 });
      expect(file!.before).toBeUndefined();
      expect(file!.after!.mode).toBe(0o644);
      const [exec] = plan({}, gitDiff({}, { 'run.sh': { bytes: '#!/bin/sh\n', mode: 0o755 } }));
      expect(exec!.after!.mode).toBe(0o755);
    });

    it('adds an empty file (git writes no hunk for it)', () => {
      const [file] = plan({}, gitDiff({}, { empty: '' }));
      expect(file).toMatchObject({ path: 'empty', action: 'add' });
      expect(file!.after!.bytes.length).toBe(0);
    });

    it('rejects with CHANGE_FILE_EXISTS an add over a file the target has', () => {
      expect(planCode({ n: 'x\n' }, gitDiff({}, { n: 'x\n' }))).toBe('CHANGE_FILE_EXISTS');
    });

    it('deletes a file whose every line the diff removes, and rejects with CHANGE_HUNK_FAILED one that has more', () => {
      const diff = gitDiff({ old: 'a\nb\n' }, {});
      const [file] = plan({ old: 'a\nb\n' }, diff);
      expect(file).toMatchObject({ path: 'old', action: 'delete', linesRemoved: 2 });
      expect(file!.after).toBeUndefined();
      expect(planCode({ old: 'a\nb\nc\n' }, diff)).toBe('CHANGE_HUNK_FAILED');
      expect(planCode({}, diff)).toBe('CHANGE_FILE_MISSING');
    });

    it('deletes an empty file, and rejects with CHANGE_HUNK_FAILED that header-only delete of a file with bytes', () => {
      const diff = gitDiff({ empty: '' }, {});
      expect(plan({ empty: '' }, diff)[0]).toMatchObject({ path: 'empty', action: 'delete' });
      expect(planCode({ empty: 'not empty\n' }, diff)).toBe('CHANGE_HUNK_FAILED');
    });
  });

  describe('what the runner does not apply (CHANGE_PATCH_INVALID)', () => {
    it('refuses a rename', () => {
      const body = `${TEN}${TEN}`;
      const diff = gitDiff({ old: body }, { new: body }, ['-M']);
      expect(diff.toString()).toContain('rename from old');
      expect(planCode({ old: body }, diff)).toBe('CHANGE_PATCH_INVALID');
    });

    it('refuses a copy', () => {
      const body = `${TEN}${TEN}`;
      const diff = gitDiff({ old: body }, { old: body, copy: body }, ['-C', '--find-copies-harder']);
      expect(diff.toString()).toContain('copy from old');
      expect(planCode({ old: body }, diff)).toBe('CHANGE_PATCH_INVALID');
    });

    it('refuses a mode change', () => {
      const diff = gitDiff({ s: { bytes: 'x\n', mode: 0o644 } }, { s: { bytes: 'x\n', mode: 0o755 } });
      expect(diff.toString()).toContain('new mode 100755');
      expect(planCode({ s: 'x\n' }, diff)).toBe('CHANGE_PATCH_INVALID');
    });

    it("refuses a binary patch, git's and GNU diff's", () => {
      const binary = Buffer.from([0, 1, 2, 3, 0xff, 0]);
      expect(planCode({}, gitDiff({}, { b: binary }))).toBe('CHANGE_PATCH_INVALID');
      expect(planCode({}, gitDiff({}, { b: binary }, ['--binary']))).toBe('CHANGE_PATCH_INVALID');
      expect(planCode({ b: 'x' }, 'diff --git a/b b/b\nindex 1..2 100644\nBinary files a/b and b/b differ\n')).toBe('CHANGE_PATCH_INVALID');
    });

    it('refuses a symlink added by the diff (mode 120000)', () => {
      const diff =
        'diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+/etc/shadow\n\\ No newline at end of file\n';
      expect(planCode({}, diff)).toBe('CHANGE_PATCH_INVALID');
    });

    it("refuses names without git's a/ and b/, a hunk without a file, an empty patch, and text that is no diff", () => {
      expect(planCode({ a: TEN }, '--- a\n+++ a\n@@ -1 +1 @@\n-line 1\n+one\n')).toBe('CHANGE_PATCH_INVALID');
      expect(planCode({ a: TEN }, '@@ -1 +1 @@\n-line 1\n+one\n')).toBe('CHANGE_PATCH_INVALID');
      expect(planCode({ a: TEN }, '')).toBe('CHANGE_PATCH_INVALID');
      expect(planCode({ a: TEN }, 'just some words\n')).toBe('CHANGE_PATCH_INVALID');
      expect(planCode({ a: TEN }, '--- a/a\n+++ b/a\n@@ -1 +1 @@\n-line 1\n+one\n+two\n')).toBe('CHANGE_PATCH_INVALID');
    });

    it('never quotes the offending line of a malformed diff in its message', () => {
      const err = catchChangeError(() => plan({ a: TEN }, '--- a/a\n+++ b/a\n@@ -1,2 +1,2 @@\n-line 1\n*SECRET-TOKEN\n'));
      expect(err.code).toBe('CHANGE_PATCH_INVALID');
      expect(err.message).not.toContain('SECRET');
    });

    it('refuses a rename whose --- and +++ name two files without git headers', () => {
      expect(planCode({ a: TEN }, '--- a/a\n+++ b/b\n@@ -1 +1 @@\n-line 1\n+one\n')).toBe('CHANGE_PATCH_INVALID');
    });

    it(`takes ${PATCH_MAX_HUNKS} hunks and refuses one more`, () => {
      const lines = Array.from({ length: PATCH_MAX_HUNKS + 1 }, (_, i) => `${i}\n`);
      const target = { big: lines.join('') };
      const hunks = (n: number) => Array.from({ length: n }, (_, i) => `@@ -${i + 1} +${i + 1} @@\n-${i}\n+x${i}\n`).join('');
      const [file] = plan(target, `--- a/big\n+++ b/big\n${hunks(PATCH_MAX_HUNKS)}`);
      expect(file!.linesAdded).toBe(PATCH_MAX_HUNKS);
      const err = catchChangeError(() => plan(target, `--- a/big\n+++ b/big\n${hunks(PATCH_MAX_HUNKS + 1)}`));
      expect(err.code).toBe('CHANGE_PATCH_INVALID');
      expect(err.message).toContain(`more than ${PATCH_MAX_HUNKS} hunks`);
    });

    it(`takes a patch of ${PATCH_MAX_BYTES} bytes and refuses one byte more`, () => {
      const lines = 16_384;
      const header = `--- /dev/null\n+++ b/big\n@@ -0,0 +1,${lines} @@\n`;
      const body = PATCH_MAX_BYTES - header.length;
      const width = Math.floor(body / lines) - 2; // '+', the text, '\n'
      const last = body - (lines - 1) * (width + 2) - 2;
      const patch = header + `+${'x'.repeat(width)}\n`.repeat(lines - 1) + `+${'y'.repeat(last)}\n`;
      expect(patch.length).toBe(PATCH_MAX_BYTES);
      expect(plan({}, patch)[0]!.after!.bytes.length).toBe(PATCH_MAX_BYTES - header.length - lines);
      const over = patch.replace(`+${'y'.repeat(last)}\n`, `+${'y'.repeat(last + 1)}\n`);
      const err = catchChangeError(() => plan({}, over));
      expect(err.code).toBe('CHANGE_PATCH_INVALID');
      expect(err.message).toContain(`over the ${PATCH_MAX_BYTES}-byte cap`);
    });

    it(`takes ${PATCH_MAX_FILES} files and refuses one more`, () => {
      const files = (n: number) => Array.from({ length: n }, (_, i) => `--- /dev/null\n+++ b/f${i}\n@@ -0,0 +1 @@\n+x\n`).join('');
      expect(plan({}, files(PATCH_MAX_FILES))).toHaveLength(PATCH_MAX_FILES);
      expect(planCode({}, files(PATCH_MAX_FILES + 1))).toBe('CHANGE_PATCH_INVALID');
    });
  });

  describe('paths (CHANGE_PATH_ESCAPE, CHANGE_PATH_TWICE)', () => {
    it.each([
      ['a ..', '--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-x\n+y\n'],
      ['an absolute path', '--- a//etc/passwd\n+++ b//etc/passwd\n@@ -1 +1 @@\n-x\n+y\n'],
      ['an empty segment', '--- /dev/null\n+++ b/conf//x\n@@ -0,0 +1 @@\n+y\n'],
      ['a . segment', '--- /dev/null\n+++ b/./x\n@@ -0,0 +1 @@\n+y\n'],
      ['a backslash', '--- /dev/null\n+++ b/..\\x\n@@ -0,0 +1 @@\n+y\n'],
    ])('rejects a diff path with %s', (_what, diff) => {
      expect(planCode({}, diff)).toBe('CHANGE_PATH_ESCAPE');
    });

    it.each([['../x'], ['/etc/x'], ['a//b'], ['a/./b'], ['a\\b'], ['a\0b'], [''], ['x\r'], ['a\nb'], ['\ud800'], ['\udc00x']])(
      'rejects the files path %j',
      (path) => {
        expect(planCode({}, undefined, [{ path, action: 'add', from: 'in' }], { in: 'x\n' })).toBe('CHANGE_PATH_ESCAPE');
      },
    );

    it('rejects a CRLF git header naming a file with a carriage return (git header only: an empty file added)', () => {
      expect(planCode({}, 'diff --git a/x b/x\r\nnew file mode 100644\r\nindex 0000000..e69de29\r\n')).toBe('CHANGE_PATH_ESCAPE');
    });

    it("rejects a path in the writer's own temporary names (its clean-up would remove the file)", () => {
      expect(planCode({}, undefined, [{ path: `conf/${TEMP_PREFIX}0123`, action: 'add', from: 'in' }], { in: 'x' })).toBe('CHANGE_PATH_ESCAPE');
      expect(planCode({}, `--- /dev/null\n+++ b/${TEMP_PREFIX}x/y\n@@ -0,0 +1 @@\n+y\n`)).toBe('CHANGE_PATH_ESCAPE');
    });

    it('rejects a path that `read` finds through a symlink, at a folder or at a special file', () => {
      expect(planCode({ 'link/x': 'not-a-file' }, '--- /dev/null\n+++ b/link/x\n@@ -0,0 +1 @@\n+y\n')).toBe('CHANGE_PATH_ESCAPE');
      expect(planCode({ dir: 'not-a-file' }, undefined, [{ path: 'dir', action: 'delete' }])).toBe('CHANGE_PATH_ESCAPE');
    });

    it('rejects a patch touching one file twice, and a patch and files touching the same path', () => {
      const twice = '--- a/a\n+++ b/a\n@@ -1 +1 @@\n-line 1\n+one\n--- a/a\n+++ b/a\n@@ -2 +2 @@\n-line 2\n+two\n';
      expect(planCode({ a: TEN }, twice)).toBe('CHANGE_PATH_TWICE');
      const once = '--- a/a\n+++ b/a\n@@ -1 +1 @@\n-line 1\n+one\n';
      expect(planCode({ a: TEN }, once, [{ path: 'a', action: 'delete' }])).toBe('CHANGE_PATH_TWICE');
    });

    it('rejects a change that makes a path both a file and a folder', () => {
      const files = [
        { path: 'x', action: 'add' as const, from: 'in' },
        { path: 'x/y', action: 'add' as const, from: 'in' },
      ];
      expect(planCode({}, undefined, files, { in: 'z\n' })).toBe('CHANGE_PATH_TWICE');
    });

    it('reads a quoted UTF-8 name as git writes it', () => {
      const [file] = plan({ 'café.txt': 'a\n' }, gitDiff({ 'café.txt': 'a\n' }, { 'café.txt': 'b\n' }));
      expect(file!.path).toBe('café.txt');
    });
  });

  describe('whole files', () => {
    it('adds with 0644 (0755 when executable), replaces keeping the mode unless executable is given, deletes', () => {
      const target = { keep: { bytes: 'a\nb\nc\n', mode: 0o640 }, gone: 'x\ny\n' };
      const plans = plan(
        target,
        undefined,
        [
          { path: 'new/tool', action: 'add', from: 'in/tool', executable: true },
          { path: 'new/readme', action: 'add', from: 'in/readme' },
          { path: 'keep', action: 'replace', from: 'in/keep' },
          { path: 'gone', action: 'delete' },
        ],
        { 'in/tool': '#!/bin/sh\n', 'in/readme': 'hello\n', 'in/keep': 'a\nB\nc\nd\n' },
      );
      expect(plans.map((p) => [p.path, p.action, p.after?.mode, p.linesAdded, p.linesRemoved])).toEqual([
        ['gone', 'delete', undefined, 0, 2],
        ['keep', 'modify', 0o640, 2, 1],
        ['new/readme', 'add', 0o644, 1, 0],
        ['new/tool', 'add', 0o755, 1, 0],
      ]);
      const exec = plan(target, undefined, [{ path: 'keep', action: 'replace', from: 'in', executable: true }], { in: 'a\nb\nc\n' });
      expect(exec[0]!.after!.mode).toBe(0o755);
      const plain = plan({ s: { bytes: 'x', mode: 0o755 } }, undefined, [{ path: 's', action: 'replace', from: 'in', executable: false }], {
        in: 'x',
      });
      expect(plain[0]!.after!.mode).toBe(0o644);
    });

    it('rejects with CHANGE_FILE_EXISTS an add over a file, and CHANGE_FILE_MISSING a replace or delete of none', () => {
      expect(planCode({ a: 'x' }, undefined, [{ path: 'a', action: 'add', from: 'in' }], { in: 'y' })).toBe('CHANGE_FILE_EXISTS');
      expect(planCode({}, undefined, [{ path: 'a', action: 'replace', from: 'in' }], { in: 'y' })).toBe('CHANGE_FILE_MISSING');
      expect(planCode({}, undefined, [{ path: 'a', action: 'delete' }])).toBe('CHANGE_FILE_MISSING');
    });
  });

  describe('a change that changes nothing (CHANGE_EMPTY)', () => {
    it('rejects a replace with the same bytes and mode, and a diff whose hunk holds only context', () => {
      expect(planCode({ a: 'x\n' }, undefined, [{ path: 'a', action: 'replace', from: 'in' }], { in: 'x\n' })).toBe('CHANGE_EMPTY');
      expect(planCode({ a: TEN }, '--- a/a\n+++ b/a\n@@ -1,2 +1,2 @@\n line 1\n line 2\n')).toBe('CHANGE_EMPTY');
    });

    it('accepts a replace that only changes the mode', () => {
      const [file] = plan({ a: 'x\n' }, undefined, [{ path: 'a', action: 'replace', from: 'in', executable: true }], { in: 'x\n' });
      expect(file!.before!.mode).toBe(0o644);
      expect(file!.after!.mode).toBe(0o755);
    });
  });
});

function catchChangeError(fn: () => unknown): ChangeError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ChangeError) return err;
    throw err;
  }
  throw new Error('no ChangeError was thrown');
}
