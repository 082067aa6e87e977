/**
 * A change's plan: what it does to each file of its target, computed from the signed change and the bytes it
 * names, before anything is written. Pure over bytes: the target is seen only through `read`.
 *
 * The unified diff is parsed by jsdiff (`parsePatch`) and applied here, strictly: each hunk at exactly the
 * line its header names (no fuzz, no offset search: a hunk whose lines are elsewhere is CHANGE_HUNK_FAILED),
 * in order and not overlapping, its new-side line the one the hunks before it lead to, the lines compared as
 * bytes (a CRLF file is patched by a CRLF diff, never converted), "\ No newline at end of file" only on the
 * file's last line and only where the file has none. jsdiff's own `applyPatch` (fuzzFactor 0, no line-ending
 * conversion) must then give the same bytes: a second implementation, as tweetnacl is for Ed25519.
 *
 * Supported: git's `a/` and `b/` names, `/dev/null` for an added or deleted file, `new file mode` 100644 or
 * 100755. Refused with CHANGE_PATCH_INVALID: a binary patch, a rename or copy, a mode change, a symlink, a
 * hunk without a file, names that are not UTF-8, more than PATCH_MAX_BYTES bytes, PATCH_MAX_FILES files or
 * PATCH_MAX_HUNKS hunks.
 * The diff is read as bytes (latin1, lossless) for its lines and as UTF-8 for its names (git's quoted names
 * decoded by jsdiff), and both readings must have the same shape.
 */
import { applyPatch, diffLines, parsePatch, type StructuredPatch, type StructuredPatchHunk } from 'diff';
import { isContainedPath, type Change } from '../capsule/manifest.js';
import { sha256Hex } from '../core/digest.js';
import { toPrintableExcerpt } from '../core/printable.js';
import type { FileAction } from '../policy/types.js';
import { ChangeError } from './errors.js';

export interface FilePlan {
  /** Relative to the target, '/'-separated, from the signed change. */
  path: string;
  action: FileAction;
  /** modify and delete: the file as the plan found it (mode = st_mode & 07777). */
  before?: { sha256: string; mode: number };
  /** add and modify: what the file becomes. */
  after?: { bytes: Buffer; sha256: string; mode: number };
  linesAdded: number;
  linesRemoved: number;
}

/** What `read` says of a path of the target: its bytes and mode, nothing there, or something that is not a plain file reached without symlinks. */
export type PlannedRead = { bytes: Buffer; mode: number } | 'absent' | 'not-a-file';

/** Bytes of one patch (a capsule may carry 64 MiB; a diff this large is no reviewable change). */
export const PATCH_MAX_BYTES = 16 * 1024 * 1024;
/** Files one patch may change. */
export const PATCH_MAX_FILES = 10_000;
/** Hunks one patch may hold, over all its files. */
export const PATCH_MAX_HUNKS = 100_000;
/** Edits beyond which a replaced file's lines are counted as all removed and all added (the diff is not searched further). */
const REPLACE_DIFF_MAX_EDITS = 1000;
/** Lines beyond which a replaced file is not diffed at all (counted as all removed and all added). */
const REPLACE_DIFF_MAX_LINES = 100_000;

/**
 * The start of the temporary names the writer leaves beside a file it renames into place (files.ts): a
 * change may not name such a file, or the writer's clean-up would remove it.
 */
export const TEMP_PREFIX = '.edge-runner-tmp-';

export const NEW_FILE_MODE = 0o644;
export const NEW_EXECUTABLE_MODE = 0o755;

/**
 * The plan of `change` against the target `read` shows, sorted by path: the patch first, then `files`, no
 * path twice, no path both a file and a folder. Throws CHANGE_* (errors.ts); CHANGE_EMPTY when the plan
 * changes no byte and no mode.
 */
export function planChange(change: Change, inputs: ReadonlyMap<string, Buffer>, read: (path: string) => PlannedRead): FilePlan[] {
  const plans = new Map<string, FilePlan>();
  const claim = (path: string): void => {
    verifyChangePath(path);
    if (plans.has(path)) throw new ChangeError('CHANGE_PATH_TWICE', `The change touches "${toPrintableExcerpt(path)}" twice.`, { path });
  };
  if (change.patch !== undefined) {
    const bytes = inputs.get(change.patch);
    if (bytes === undefined) throw invalid(`its patch "${toPrintableExcerpt(change.patch)}" is not among the capsule's inputs`);
    for (const file of parseChangePatch(bytes)) {
      claim(file.path);
      plans.set(file.path, planPatchedFile(file, readFile(read, file.path)));
    }
  }
  for (const file of change.files ?? []) {
    claim(file.path);
    const current = readFile(read, file.path);
    const from = (): Buffer => {
      const bytes = file.from === undefined ? undefined : inputs.get(file.from);
      if (bytes === undefined) throw invalid(`the bytes of "${toPrintableExcerpt(file.path)}" are not among the capsule's inputs`, file.path);
      return bytes;
    };
    switch (file.action) {
      case 'add': {
        if (current !== 'absent') throw exists(file.path);
        const bytes = from();
        plans.set(file.path, {
          path: file.path,
          action: 'add',
          after: { bytes, sha256: sha256Hex(bytes), mode: file.executable === true ? NEW_EXECUTABLE_MODE : NEW_FILE_MODE },
          linesAdded: countLines(bytes),
          linesRemoved: 0,
        });
        break;
      }
      case 'replace': {
        if (current === 'absent') throw missing(file.path);
        const bytes = from();
        const mode = file.executable === undefined ? current.mode : file.executable ? NEW_EXECUTABLE_MODE : NEW_FILE_MODE;
        plans.set(file.path, {
          path: file.path,
          action: 'modify',
          before: { sha256: sha256Hex(current.bytes), mode: current.mode },
          after: { bytes, sha256: sha256Hex(bytes), mode },
          ...countReplacedLines(current.bytes, bytes),
        });
        break;
      }
      case 'delete':
        if (current === 'absent') throw missing(file.path);
        plans.set(file.path, {
          path: file.path,
          action: 'delete',
          before: { sha256: sha256Hex(current.bytes), mode: current.mode },
          linesAdded: 0,
          linesRemoved: countLines(current.bytes),
        });
        break;
    }
  }
  // A path that is also a folder of another: writing one would make the other impossible.
  for (const path of plans.keys()) {
    for (let slash = path.indexOf('/'); slash !== -1; slash = path.indexOf('/', slash + 1)) {
      const folder = path.slice(0, slash);
      if (plans.has(folder)) {
        throw new ChangeError(
          'CHANGE_PATH_TWICE',
          `The change makes "${toPrintableExcerpt(folder)}" a file and also touches "${toPrintableExcerpt(path)}" inside it.`,
          {
            path: folder,
          },
        );
      }
    }
  }
  const sorted = [...plans.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  if (sorted.every(isNoChange)) throw new ChangeError('CHANGE_EMPTY', 'The change changes no byte and no mode of its target.', {});
  return sorted;
}

/**
 * A path a change may name: inside the target by construction (isContainedPath: relative, no `..`, `.` or
 * empty segment, no NUL or backslash), plain text (no control character, no lone surrogate: the tree digest
 * refuses such names, and a file made with one could not be digested), and none of the writer's temporary
 * names. Throws CHANGE_PATH_ESCAPE.
 */
const NOT_PLAIN =
  // eslint-disable-next-line no-control-regex
  /[\u0000-\u001f\u007f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export function verifyChangePath(path: string): void {
  const refuse = (why: string) => new ChangeError('CHANGE_PATH_ESCAPE', `The change path "${toPrintableExcerpt(path)}" ${why}.`, { path });
  if (!isContainedPath(path)) throw refuse('would leave the change target');
  if (NOT_PLAIN.test(path)) throw refuse('is not plain text (a control character or a lone surrogate)');
  if (path.split('/').some((segment) => segment.startsWith(TEMP_PREFIX))) throw refuse("is in the runner's own temporary names");
}

/** Whether a planned file stays as it was (same bytes, same mode). */
export function isNoChange(plan: FilePlan): boolean {
  return plan.before !== undefined && plan.after !== undefined && plan.before.sha256 === plan.after.sha256 && plan.before.mode === plan.after.mode;
}

/** A file's lines: each '\n' ends one, and a last line without it counts too. */
export function countLines(bytes: Uint8Array): number {
  let lines = 0;
  for (let i = bytes.indexOf(0x0a); i !== -1; i = bytes.indexOf(0x0a, i + 1)) lines++;
  return bytes.length > 0 && bytes[bytes.length - 1] !== 0x0a ? lines + 1 : lines;
}

function countReplacedLines(before: Buffer, after: Buffer): { linesAdded: number; linesRemoved: number } {
  const all = { linesAdded: countLines(after), linesRemoved: countLines(before) };
  if (all.linesAdded > REPLACE_DIFF_MAX_LINES || all.linesRemoved > REPLACE_DIFF_MAX_LINES) return all;
  const changes = diffLines(before.toString('latin1'), after.toString('latin1'), { maxEditLength: REPLACE_DIFF_MAX_EDITS });
  if (changes === undefined) return all;
  let linesAdded = 0;
  let linesRemoved = 0;
  for (const change of changes) {
    if (change.added) linesAdded += change.count;
    else if (change.removed) linesRemoved += change.count;
  }
  return { linesAdded, linesRemoved };
}

function readFile(read: (path: string) => PlannedRead, path: string): { bytes: Buffer; mode: number } | 'absent' {
  const current = read(path);
  if (current === 'not-a-file') {
    throw new ChangeError(
      'CHANGE_PATH_ESCAPE',
      `The change path "${toPrintableExcerpt(path)}" is not a plain file of the change target (a symlink, a folder or a special file is there or on the way).`,
      { path },
    );
  }
  return current;
}

/** One file of the patch, its names checked. */
interface PatchedFile {
  path: string;
  kind: 'add' | 'modify' | 'delete';
  /** add: from `new file mode`. */
  mode?: number;
  /** The latin1 reading: lines as bytes. */
  index: StructuredPatch;
}

function planPatchedFile(file: PatchedFile, current: { bytes: Buffer; mode: number } | 'absent'): FilePlan {
  const { path } = file;
  let linesAdded = 0;
  let linesRemoved = 0;
  for (const hunk of file.index.hunks) {
    for (const line of hunk.lines) {
      if (line.startsWith('+')) linesAdded++;
      else if (line.startsWith('-')) linesRemoved++;
    }
  }
  if (file.kind === 'add') {
    if (current !== 'absent') throw exists(path);
    const bytes = applyHunksExactly(path, Buffer.alloc(0), file.index);
    return { path, action: 'add', after: { bytes, sha256: sha256Hex(bytes), mode: file.mode ?? NEW_FILE_MODE }, linesAdded, linesRemoved };
  }
  if (current === 'absent') throw missing(path);
  const before = { sha256: sha256Hex(current.bytes), mode: current.mode };
  const bytes = applyHunksExactly(path, current.bytes, file.index);
  if (file.kind === 'delete') {
    if (bytes.length !== 0) {
      throw new ChangeError('CHANGE_HUNK_FAILED', `The patch deletes "${toPrintableExcerpt(path)}" but its hunks do not remove the whole file.`, {
        path,
        hunk: file.index.hunks.length,
      });
    }
    return { path, action: 'delete', before, linesAdded, linesRemoved };
  }
  return { path, action: 'modify', before, after: { bytes, sha256: sha256Hex(bytes), mode: current.mode }, linesAdded, linesRemoved };
}

const HUNK_HEADER = /^@@ /gm;
/** A line no hunk body holds (hunk lines start with ' ', '+', '-' or '\'): git's binary patch, GNU diff's binary notice. */
const BINARY_LINE = /^(?:GIT binary patch|Binary files |literal \d|delta \d)/m;
const SUPPORTED_FILE_MODES: ReadonlyMap<string, number> = new Map([
  ['100644', NEW_FILE_MODE],
  ['100755', NEW_EXECUTABLE_MODE],
]);

/** The files of a unified diff, each with the path it changes; throws CHANGE_PATCH_INVALID or CHANGE_PATH_*. */
export function parseChangePatch(bytes: Buffer): PatchedFile[] {
  if (bytes.length > PATCH_MAX_BYTES) throw invalid(`it is over the ${PATCH_MAX_BYTES}-byte cap`);
  const text = bytes.toString('latin1');
  let hunkHeaders = 0;
  HUNK_HEADER.lastIndex = 0;
  while (HUNK_HEADER.exec(text) !== null) {
    if (++hunkHeaders > PATCH_MAX_HUNKS) throw invalid(`it holds more than ${PATCH_MAX_HUNKS} hunks`);
  }
  if (BINARY_LINE.test(text)) throw invalid('it holds a binary patch');
  const content = parseOrRefuse(text);
  const named = parseOrRefuse(bytes.toString('utf8'));
  if (content.length > PATCH_MAX_FILES) throw invalid(`it changes more than ${PATCH_MAX_FILES} files`);
  const sameShape =
    content.length === named.length &&
    content.every((index, i) => {
      const other = named[i]!;
      return (
        index.hunks.length === other.hunks.length &&
        index.hunks.every((hunk, j) => hunk.oldStart === other.hunks[j]!.oldStart && hunk.lines.length === other.hunks[j]!.lines.length)
      );
    });
  if (!sameShape) throw invalid('its bytes read differently as text');
  const files = content.map((index, i) => toPatchedFile(index, named[i]!));
  if (files.length === 0) throw invalid('it changes no file');
  return files;
}

function parseOrRefuse(text: string): StructuredPatch[] {
  try {
    // An empty patch parses as one file with no names and no hunks: refused below.
    return parsePatch(text);
  } catch (err) {
    // jsdiff's message quotes the offending line: only its number is said (a message never carries file bytes).
    const line = /line (\d+)/.exec(err instanceof Error ? err.message : '')?.[1];
    throw invalid(`it is not a unified diff${line === undefined ? '' : ` (from its line ${line})`}`);
  }
}

function toPatchedFile(index: StructuredPatch, named: StructuredPatch): PatchedFile {
  const oldName = named.oldFileName;
  const newName = named.newFileName;
  if (oldName === undefined || newName === undefined) throw invalid('a hunk names no file');
  const shown = toPrintableExcerpt(newName === '/dev/null' ? oldName : newName);
  if (index.isBinary === true) throw invalid(`it holds a binary patch for "${shown}"`);
  if (index.isRename === true || index.isCopy === true) throw invalid(`it renames or copies "${shown}"`);
  const add = oldName === '/dev/null' || index.isCreate === true;
  const remove = newName === '/dev/null' || index.isDelete === true;
  if (add && remove) throw invalid(`it both adds and deletes "${shown}"`);
  if (!add && !remove && (index.oldMode !== undefined || index.newMode !== undefined)) {
    throw invalid(`it changes the mode of "${shown}" (a change's files give a mode with "executable")`);
  }
  if (add && index.newMode !== undefined && !SUPPORTED_FILE_MODES.has(index.newMode)) {
    throw invalid(`it adds "${shown}" with mode ${toPrintableExcerpt(index.newMode)} (only plain files, 100644 or 100755)`);
  }
  if (remove && index.oldMode !== undefined && !SUPPORTED_FILE_MODES.has(index.oldMode)) {
    throw invalid(`it deletes "${shown}", which it says has mode ${toPrintableExcerpt(index.oldMode)} (only plain files, 100644 or 100755)`);
  }
  const strip = (name: string, prefix: 'a/' | 'b/'): string => {
    if (name.includes('\ufffd')) throw invalid('a file name in it is not UTF-8');
    if (!name.startsWith(prefix)) throw invalid(`the file name "${toPrintableExcerpt(name)}" does not start with git's "${prefix}"`);
    return name.slice(2);
  };
  let path: string;
  if (add) path = strip(newName, 'b/');
  else if (remove) path = strip(oldName, 'a/');
  else {
    path = strip(newName, 'b/');
    if (strip(oldName, 'a/') !== path) throw invalid(`it renames "${toPrintableExcerpt(oldName)}"`);
  }
  verifyChangePath(path);
  if (!add && !remove && index.hunks.length === 0) throw invalid(`it names "${toPrintableExcerpt(path)}" without a hunk`, path);
  const mode = add && index.newMode !== undefined ? SUPPORTED_FILE_MODES.get(index.newMode) : undefined;
  return { path, kind: add ? 'add' : remove ? 'delete' : 'modify', ...(mode === undefined ? {} : { mode }), index };
}

/** A text as lines (latin1: one character per byte) and whether its last line ends with a newline. */
interface Lines {
  lines: string[];
  eol: boolean;
}

function toLines(text: string): Lines {
  if (text === '') return { lines: [], eol: true };
  const lines = text.split('\n');
  const last = lines.pop()!;
  if (last === '') return { lines, eol: true };
  lines.push(last);
  return { lines, eol: false };
}

function fromLines({ lines, eol }: Lines): string {
  return lines.length === 0 ? '' : lines.join('\n') + (eol ? '\n' : '');
}

/** One hunk's two sides, and which of them ends without a newline. */
interface HunkSides {
  old: string[];
  new: string[];
  oldNoEol: boolean;
  newNoEol: boolean;
}

function toHunkSides(path: string, hunk: StructuredPatchHunk, number: number): HunkSides {
  const sides: HunkSides = { old: [], new: [], oldNoEol: false, newNoEol: false };
  const bad = () => invalid(`hunk ${number} of "${toPrintableExcerpt(path)}" has a misplaced "\\ No newline at end of file"`, path);
  let previous: string | undefined;
  for (const line of hunk.lines) {
    // jsdiff reads an empty line inside a hunk as an empty context line.
    const op = line.length > 0 ? line[0]! : ' ';
    if (op === '\\') {
      if (previous === undefined || previous === '\\') throw bad();
      if (previous !== '+') sides.oldNoEol = true;
      if (previous !== '-') sides.newNoEol = true;
      previous = op;
      continue;
    }
    const content = line.slice(1);
    if ((op === ' ' || op === '-') && sides.oldNoEol) throw bad();
    if ((op === ' ' || op === '+') && sides.newNoEol) throw bad();
    if (op === ' ') {
      sides.old.push(content);
      sides.new.push(content);
    } else if (op === '-') sides.old.push(content);
    else if (op === '+') sides.new.push(content);
    else throw invalid(`hunk ${number} of "${toPrintableExcerpt(path)}" holds a line that is not context, added or removed`, path);
    previous = op;
  }
  if (sides.old.length !== hunk.oldLines || sides.new.length !== hunk.newLines) {
    throw invalid(`hunk ${number} of "${toPrintableExcerpt(path)}" does not hold the lines its header counts`, path);
  }
  return sides;
}

/**
 * `before` with every hunk applied at exactly its stated line; throws CHANGE_HUNK_FAILED naming the file and
 * the hunk (1-based) that does not match, CHANGE_PATCH_INVALID for hunks out of order or inconsistent.
 */
export function applyHunksExactly(path: string, before: Buffer, index: StructuredPatch): Buffer {
  const oldText = before.toString('latin1');
  const old = toLines(oldText);
  const out: string[] = [];
  let eol = old.eol;
  let consumed = 0; // old lines already copied or replaced
  let delta = 0; // new lines minus old lines so far
  const failed = (number: number, why: string) =>
    new ChangeError('CHANGE_HUNK_FAILED', `Hunk ${number} of the patch to "${toPrintableExcerpt(path)}" does not apply: ${why}.`, {
      path,
      hunk: number,
    });
  index.hunks.forEach((hunk, i) => {
    const number = i + 1;
    const sides = toHunkSides(path, hunk, number);
    const start = hunk.oldStart - 1;
    if (!Number.isSafeInteger(start) || start < consumed) {
      throw invalid(`hunk ${number} of "${toPrintableExcerpt(path)}" starts before the end of the hunk before it`, path);
    }
    if (hunk.newStart !== hunk.oldStart + delta) {
      throw invalid(`hunk ${number} of "${toPrintableExcerpt(path)}" names a new line that the hunks before it do not lead to`, path);
    }
    const end = start + sides.old.length;
    if (end > old.lines.length) throw failed(number, `the file has ${old.lines.length} lines`);
    for (let k = 0; k < sides.old.length; k++) {
      if (old.lines[start + k] !== sides.old[k]) throw failed(number, `line ${start + k + 1} is not what it says`);
    }
    const reachesEnd = end === old.lines.length;
    if ((sides.oldNoEol || sides.newNoEol) && !reachesEnd) throw failed(number, 'the file does not end where it says');
    if (reachesEnd && old.lines.length > 0 && !old.eol && !sides.oldNoEol) {
      // The file's last line has no newline and the hunk does not say so (or adds after it without touching it).
      throw failed(number, 'the file ends without a newline');
    }
    if (sides.oldNoEol && old.eol) throw failed(number, 'the file ends with a newline');
    for (let k = consumed; k < start; k++) out.push(old.lines[k]!);
    for (const line of sides.new) out.push(line);
    consumed = end;
    delta += sides.new.length - sides.old.length;
    if (reachesEnd) eol = sides.new.length > 0 ? !sides.newNoEol : true;
  });
  for (let k = consumed; k < old.lines.length; k++) out.push(old.lines[k]!);
  const result = fromLines({ lines: out, eol });
  // jsdiff's applyPatch, held to no fuzz and no line-ending conversion, must agree byte for byte.
  const second = index.hunks.length === 0 ? oldText : applyPatch(oldText, index, { fuzzFactor: 0, autoConvertLineEndings: false });
  if (second !== result) throw invalid(`jsdiff applies the patch to "${toPrintableExcerpt(path)}" differently`, path);
  return Buffer.from(result, 'latin1');
}

function invalid(why: string, path?: string): ChangeError<'CHANGE_PATCH_INVALID'> {
  return new ChangeError('CHANGE_PATCH_INVALID', `The change's patch is refused: ${why}.`, { why, ...(path === undefined ? {} : { path }) });
}

function exists(path: string): ChangeError<'CHANGE_FILE_EXISTS'> {
  return new ChangeError('CHANGE_FILE_EXISTS', `The change adds "${toPrintableExcerpt(path)}", which is already in the change target.`, { path });
}

function missing(path: string): ChangeError<'CHANGE_FILE_MISSING'> {
  return new ChangeError('CHANGE_FILE_MISSING', `The change modifies or deletes "${toPrintableExcerpt(path)}", which is not in the change target.`, {
    path,
  });
}
