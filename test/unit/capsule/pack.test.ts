/** capsule pack's input expansion: folders and glob patterns to an explicit, sorted list of regular files. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  expandInputs,
  isGlobPattern,
  PACK_MAX_FILES,
  PACK_MAX_INPUT_BYTES,
  PACK_MAX_VISITED,
  PackError,
  type FileTree,
  type TemplateInput,
  type TreeEntry,
} from '../../../runner/capsule/pack.js';

/** An in-memory folder: path -> size for files, 'dir' implied by the paths, 'symlink' or 'other' marked. */
function memoryTree(entries: Record<string, number | 'symlink' | 'other' | 'dir'>): FileTree & { listed: string[] } {
  const all = new Map<string, TreeEntry>();
  for (const [path, what] of Object.entries(entries)) {
    const segments = path.split('/');
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join('/');
      all.set(parent, { path: parent, type: 'directory' });
    }
    all.set(path, typeof what === 'number' ? { path, type: 'file', size: what } : { path, type: what === 'dir' ? 'directory' : what });
  }
  const listed: string[] = [];
  return {
    listed,
    entry: (path) => all.get(path),
    children(path) {
      listed.push(path);
      // Deliberately reverse-sorted: the expansion must not depend on the order a folder is read in.
      return [...all.values()]
        .filter((e) => (path === '' ? !e.path.includes('/') : e.path.startsWith(`${path}/`) && !e.path.slice(path.length + 1).includes('/')))
        .reverse();
    },
  };
}

const paths = (inputs: TemplateInput[]) => inputs.map((i) => i.path);

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof PackError) return err.message;
    throw err;
  }
  throw new Error('expected a PackError');
}

describe('expandInputs', () => {
  const suite = memoryTree({
    'capsule.json': 10,
    'lib/Config/Tiny.pm': 100,
    't/01.compile.t': 5,
    't/02.main.t': 6,
    't/data/test.conf': 7,
    't/.hidden.t': 8,
    LICENSE: 9,
    'Z.txt': 1,
    'a.txt': 1,
  });

  it('keeps plain files as they are and sorts the result by path in byte order (upper case before lower)', () => {
    expect(paths(expandInputs([{ path: 'a.txt' }, { path: 'Z.txt' }, { path: 'LICENSE' }], suite))).toEqual(['LICENSE', 'Z.txt', 'a.txt']);
  });

  it('expands a folder to every file below it, dot files included', () => {
    expect(paths(expandInputs([{ path: 't' }], suite))).toEqual(['t/.hidden.t', 't/01.compile.t', 't/02.main.t', 't/data/test.conf']);
  });

  it("expands glob patterns (*, **, ?, [..], {a,b}); wildcards skip dot files; only the pattern's own folder is walked", () => {
    const tree = memoryTree({
      ...Object.fromEntries(['t/01.compile.t', 't/02.main.t', 't/data/test.conf', 't/.hidden.t'].map((p) => [p, 1])),
      'other/x.t': 1,
    });
    expect(paths(expandInputs([{ path: 't/*.t' }], tree))).toEqual(['t/01.compile.t', 't/02.main.t']);
    expect(tree.listed).toEqual(['t', 't/data']);
    expect(paths(expandInputs([{ path: 't/**' }], tree))).toEqual(['t/01.compile.t', 't/02.main.t', 't/data/test.conf']);
    expect(paths(expandInputs([{ path: 't/0?.*.t' }], tree))).toEqual(['t/01.compile.t', 't/02.main.t']);
    expect(paths(expandInputs([{ path: 't/0[2-9]*' }], tree))).toEqual(['t/02.main.t']);
    expect(paths(expandInputs([{ path: '{t,other}/*.t' }], tree))).toEqual(['other/x.t', 't/01.compile.t', 't/02.main.t']);
    expect(paths(expandInputs([{ path: '**/*.conf' }], tree))).toEqual(['t/data/test.conf']);
  });

  it('lists a file matched twice once, executable when any entry that selects it says so', () => {
    const out = expandInputs([{ path: 't/**' }, { path: 't/01.compile.t', executable: true }, { path: 't/*.t' }], suite);
    expect(out).toEqual([{ path: 't/01.compile.t', executable: true }, { path: 't/02.main.t' }, { path: 't/data/test.conf' }]);
  });

  it('gives the same list whatever order the entries come in', () => {
    const a = expandInputs([{ path: 'lib' }, { path: 't/*.t' }, { path: 'LICENSE' }], suite);
    const b = expandInputs([{ path: 'LICENSE' }, { path: 't/*.t' }, { path: 'lib' }], suite);
    expect(a).toEqual(b);
  });

  it('refuses a symlink named directly, inside a folder, or anywhere a pattern walks (matched or not)', () => {
    const tree = memoryTree({ 'suite/run.sh': 1, 'suite/link.t': 'symlink', 'suite/sub/deep': 'symlink', 'data/x': 1 });
    expect(refusal(() => expandInputs([{ path: 'suite/link.t' }], tree))).toMatch(/"suite\/link\.t" is a symlink/);
    expect(refusal(() => expandInputs([{ path: 'suite' }], tree))).toMatch(/is a symlink/);
    expect(refusal(() => expandInputs([{ path: 'suite/*.sh' }], tree))).toMatch(/is a symlink/);
    expect(paths(expandInputs([{ path: 'data' }], tree))).toEqual(['data/x']);
  });

  it('refuses a path or a pattern below a symlinked folder, though lstat of the path itself shows a regular file', () => {
    // As lstat reports it: `link` is a symlink (to a folder outside), `link/id_rsa` the file it leads to.
    const tree = memoryTree({ 'link/id_rsa': 1, 'link/sub/key.pem': 1, 'ok/a': 1, 'ok/real/b': 1, link: 'symlink', 'ok/real': 'symlink' });
    for (const path of ['link/id_rsa', 'link/sub', 'link/sub/*.pem', 'link/*', 'ok/real/b', 'ok/real/*']) {
      expect(
        refusal(() => expandInputs([{ path }], tree)),
        path,
      ).toMatch(/"(link|ok\/real)"(, which is not a folder| is a symlink)/);
    }
    expect(refusal(() => expandInputs([{ path: 'ok/a/x' }], tree))).toMatch(/is below "ok\/a", which is not a folder/);
    expect(refusal(() => expandInputs([{ path: 'nope/a/x' }], tree))).toMatch(/"nope\/a\/x" does not exist/);
  });

  it('refuses a pattern that is also the name of a file in the folder, rather than packing what the pattern matches', () => {
    const tree = memoryTree({ 't/[x].t': 1, 't/x.t': 2, 't/{a,b}': 3, 't/a': 4 });
    for (const path of ['t/[x].t', 't/{a,b}']) {
      expect(
        refusal(() => expandInputs([{ path }], tree)),
        path,
      ).toMatch(/is both a pattern and the name of an entry in the folder/);
    }
    expect(paths(expandInputs([{ path: 't' }], tree))).toEqual(['t/[x].t', 't/a', 't/x.t', 't/{a,b}']);
  });

  it('refuses an input entry that is not an object, or whose executable is not a boolean', () => {
    expect(refusal(() => expandInputs([null as unknown as TemplateInput], suite))).toMatch(/must be an object with a path/);
    expect(refusal(() => expandInputs([{ path: 'LICENSE', executable: 'true' as unknown as boolean }], suite))).toBe(
      'The input "LICENSE" has an executable that is not true or false.',
    );
  });

  it('refuses a special file (a fifo, a socket, a device)', () => {
    expect(refusal(() => expandInputs([{ path: 'd' }], memoryTree({ 'd/fifo': 'other' })))).toMatch(/not a regular file or folder/);
  });

  it('refuses paths that leave the folder, missing files, empty folders, and patterns that match nothing', () => {
    for (const path of ['../x', '/etc/passwd', 'a/../b', './a', 'a//b', 'a\\b', '', '../*']) {
      expect(refusal(() => expandInputs([{ path }], suite))).toMatch(/must be a relative path inside the capsule folder/);
    }
    expect(refusal(() => expandInputs([{ path: 'nope.txt' }], suite))).toMatch(/"nope\.txt" does not exist/);
    expect(refusal(() => expandInputs([{ path: 't/*.pl' }], suite))).toMatch(/"t\/\*\.pl" matches no file/);
    expect(refusal(() => expandInputs([{ path: 'nope/*.t' }], suite))).toMatch(/not a folder/);
    expect(refusal(() => expandInputs([{ path: 'a.txt/*' }], suite))).toMatch(/not a folder/);
    expect(refusal(() => expandInputs([{ path: 'e' }], memoryTree({ e: 'dir' })))).toMatch(/holds no file/);
    expect(refusal(() => expandInputs([{ path: 42 as unknown as string }], suite))).toMatch(/relative path/);
  });

  it('refuses a file name the manifest could not carry (a backslash in it)', () => {
    expect(refusal(() => expandInputs([{ path: 'w' }], memoryTree({ 'w/a\\b': 1 })))).toMatch(/cannot be a capsule input path/);
  });

  it(`accepts exactly ${PACK_MAX_FILES} files and refuses one more, naming the count`, () => {
    const files = (n: number) => memoryTree(Object.fromEntries(Array.from({ length: n }, (_, i) => [`t/${String(i).padStart(5, '0')}.t`, 1])));
    expect(expandInputs([{ path: 't' }], files(PACK_MAX_FILES))).toHaveLength(PACK_MAX_FILES);
    expect(refusal(() => expandInputs([{ path: 't/*.t' }], files(PACK_MAX_FILES + 1)))).toBe(
      `The inputs expand to ${PACK_MAX_FILES + 1} files; a capsule holds at most ${PACK_MAX_FILES}.`,
    );
    expect(refusal(() => expandInputs([{ path: 't' }], files(5000)))).toContain('expand to 5000 files');
  });

  it('refuses inputs over the size cap before reading any, naming the count and the bytes', () => {
    const big = memoryTree({ 'd/a': PACK_MAX_INPUT_BYTES - 10, 'd/b': 10 });
    expect(expandInputs([{ path: 'd' }], big)).toHaveLength(2);
    const over = memoryTree({ 'd/a': PACK_MAX_INPUT_BYTES - 10, 'd/b': 11 });
    expect(refusal(() => expandInputs([{ path: 'd' }], over))).toBe(
      `The inputs expand to 2 files of ${PACK_MAX_INPUT_BYTES + 1} bytes; a capsule holds at most ${PACK_MAX_INPUT_BYTES} bytes of inputs.`,
    );
  });

  it('stops walking a huge folder at a named bound instead of listing it all', () => {
    let calls = 0;
    const endless: FileTree = {
      entry: (path) => (isGlobPattern(path) ? undefined : { path, type: 'directory' }),
      children: (path) => {
        calls++;
        return Array.from({ length: 1000 }, (_, i) => ({ path: `${path}/${i}`, type: 'directory' as const }));
      },
    };
    expect(refusal(() => expandInputs([{ path: 'x/**/*.t' }], endless))).toContain(`more than ${PACK_MAX_VISITED} entries`);
    expect(calls).toBeLessThanOrEqual(PACK_MAX_VISITED / 1000 + 1);
  });

  it('is a function of the set of entries and the folder: sorted, each file once, whatever the order of entries or listings', () => {
    const segment = fc.constantFrom('a', 'b', 'B', 't', '.d', 'x.t', 'y.t', 'é', '10', '9');
    const filePath = fc.array(segment, { minLength: 1, maxLength: 4 }).map((parts) => parts.join('/'));
    const entry = fc.oneof(filePath, fc.constantFrom('*', '**', '*/*.t', '**/*.t', 't/**', '{a,b}/**', '?', '[ab]/*'));
    fc.assert(
      fc.property(fc.uniqueArray(filePath, { maxLength: 30 }), fc.array(entry, { minLength: 1, maxLength: 5 }), (files, entries) => {
        // A path cannot be both a file and a folder: keep the files no other file is below.
        const leaves = files.filter((f) => !files.some((g) => g.startsWith(`${f}/`)));
        const tree = memoryTree(Object.fromEntries(leaves.map((f) => [f, 1])));
        const run = (list: string[]) => {
          try {
            return paths(
              expandInputs(
                list.map((path) => ({ path })),
                tree,
              ),
            );
          } catch (err) {
            if (err instanceof PackError) return 'refused';
            throw err;
          }
        };
        const once = run(entries);
        expect(run([...entries].reverse())).toEqual(once);
        expect(run([...entries, ...entries])).toEqual(once);
        if (once !== 'refused') {
          const sorted = [...once].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
          expect(once).toEqual(sorted);
          expect(new Set(once).size).toBe(once.length);
          for (const path of once) expect(leaves).toContain(path);
        }
      }),
      { numRuns: 500 },
    );
  });
});
