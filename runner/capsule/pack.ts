/**
 * The signing side: a manifest template plus the input files' bytes become a signed capsule file. Digests
 * and sizes are filled in here so a coordinator never types them by hand.
 *
 * A template's `inputs` may name folders and glob patterns as well as files (expandInputs): a test suite of
 * hundreds of files is one line, and what gets signed is still the explicit list of every file, by path,
 * digest and size. The expansion is pure: the folder is read through a FileTree the caller provides
 * (runner/cli/capsule.ts walks the disk with lstat, never following a symlink).
 */
import { posix } from 'node:path';
import { toBase64 } from '../core/base64.js';
import { sha256Hex } from '../core/digest.js';
import { signEnvelope } from '../core/dsse.js';
import type { PrivateKey } from '../core/ed25519.js';
import { toPrintableExcerpt } from '../core/printable.js';
import { CAPSULE_MAX_BYTES } from './capsule-file.js';
import { CAPSULE_FILE_MEDIA_TYPE, CAPSULE_PAYLOAD_TYPE, isContainedPath, parseManifest, type Manifest } from './manifest.js';
import type { CapsuleFile } from './capsule-file.js';
import manifestSchema from './manifest.schema.json' with { type: 'json' };

export type TemplateInput = { path: string; executable?: boolean };
export type ManifestTemplate = Omit<Manifest, 'inputs'> & { inputs: TemplateInput[] };

/** The most input files a manifest lists (its schema's maxItems): the count a pack is refused past. */
export const PACK_MAX_FILES: number = manifestSchema.properties.inputs.maxItems;
/**
 * The most input bytes a pack takes, before reading any: blobs travel base64 (4 bytes per 3) inside a
 * capsule file of at most CAPSULE_MAX_BYTES. The finished file is checked against that cap too.
 */
export const PACK_MAX_INPUT_BYTES = Math.floor((CAPSULE_MAX_BYTES * 3) / 4);
/** The most entries one expansion may visit in the folder (files and folders, matched or not). */
export const PACK_MAX_VISITED = 100_000;

/** What the caller's file system shows at a path relative to the capsule folder, without following links. */
export type TreeEntry = { path: string; type: 'file'; size: number } | { path: string; type: 'directory' | 'symlink' | 'other' };

export interface FileTree {
  /**
   * The entry at `path`, or undefined when nothing is there. Only the last segment need be seen without
   * following a link (lstat follows the folders above it): expandInputs asks for every ancestor itself.
   */
  entry(path: string): TreeEntry | undefined;
  /** The entries directly inside the folder at `path` ('' is the capsule folder itself). */
  children(path: string): TreeEntry[];
}

/** A template's inputs cannot be expanded into a list of files: one sentence naming what and why. */
export class PackError extends Error {}

/** Characters that make an input entry a glob pattern (path.matchesGlob's syntax: * ** ? [..] {a,b}). */
const GLOB_MAGIC = /[*?[\]{}]/;

export function isGlobPattern(path: string): boolean {
  return GLOB_MAGIC.test(path);
}

/**
 * Expands a template's inputs into files, sorted by path (UTF-8 byte order, so the same folder packs to the
 * same list on every host and locale), each listed once. An entry is a glob pattern when it holds one of
 * `* ? [ ] { }`, otherwise a file or a folder (all files below it, dot files included). Wildcards do not
 * match names that begin with '.'. A file selected by several entries is executable when any of them says
 * so. Refused, with a PackError: a path that would leave the folder, a missing file, a pattern that matches
 * nothing, a symlink or special file met anywhere in what is walked or above a named path (a symlink could
 * pull in bytes from outside the folder, and a runner writes no symlinks), more than PACK_MAX_FILES files, more than
 * PACK_MAX_INPUT_BYTES bytes.
 */
export function expandInputs(inputs: readonly TemplateInput[], tree: FileTree): TemplateInput[] {
  const selected = new Map<string, { size: number; executable: boolean }>();
  let visited = 0;
  const walk = (root: string): Array<TreeEntry & { type: 'file' }> => {
    const files: Array<TreeEntry & { type: 'file' }> = [];
    const folders = [root];
    while (folders.length > 0) {
      for (const child of tree.children(folders.pop()!)) {
        if (++visited > PACK_MAX_VISITED)
          throw new PackError(`The inputs walk more than ${PACK_MAX_VISITED} entries; name narrower folders or patterns.`);
        if (child.type === 'directory') folders.push(child.path);
        else if (child.type === 'file') files.push(child);
        else throw refusedEntry(child);
      }
    }
    return files;
  };
  const select = (file: { path: string; size: number }, executable: boolean) => {
    if (!isContainedPath(file.path)) throw new PackError(`The file name "${toPrintableExcerpt(file.path)}" cannot be a capsule input path.`);
    const seen = selected.get(file.path);
    selected.set(file.path, { size: file.size, executable: executable || (seen?.executable ?? false) });
  };
  /**
   * Every folder above `path` is a folder, not a symlink to one: lstat of `link/secret` follows `link`, so
   * without this a named file or pattern below a linked folder would pull in bytes from outside.
   */
  const checkAncestors = (path: string) => {
    const segments = path.split('/');
    for (let i = 1; i < segments.length; i++) {
      const ancestor = tree.entry(segments.slice(0, i).join('/'));
      if (ancestor?.type === 'directory') continue;
      if (ancestor === undefined) throw new PackError(`The input "${toPrintableExcerpt(path)}" does not exist.`);
      if (ancestor.type === 'file')
        throw new PackError(`The input "${toPrintableExcerpt(path)}" is below "${toPrintableExcerpt(ancestor.path)}", which is not a folder.`);
      throw refusedEntry(ancestor);
    }
  };
  for (const input of inputs) {
    if (typeof input !== 'object' || input === null) throw new PackError('Each input in capsule.json must be an object with a path.');
    const { path } = input;
    if (typeof path !== 'string' || !isContainedPath(path)) {
      throw new PackError(`The input "${toPrintableExcerpt(String(path))}" must be a relative path inside the capsule folder.`);
    }
    // "executable": "true" must not quietly pack a script its step then cannot run.
    if (input.executable !== undefined && typeof input.executable !== 'boolean') {
      throw new PackError(`The input "${toPrintableExcerpt(path)}" has an executable that is not true or false.`);
    }
    const executable = input.executable === true;
    if (isGlobPattern(path)) {
      // A file really named "[x].t" is not what the pattern "[x].t" selects ("x.t"): never pick one silently.
      if (tree.entry(path) !== undefined) {
        throw new PackError(
          `The input "${toPrintableExcerpt(path)}" is both a pattern and the name of an entry in the folder; name its folder or a pattern that says which.`,
        );
      }
      const segments = path.split('/');
      const firstMagic = segments.findIndex((segment) => isGlobPattern(segment));
      const prefix = segments.slice(0, firstMagic).join('/');
      if (prefix !== '') {
        checkAncestors(prefix);
        const base = tree.entry(prefix);
        if (base?.type !== 'directory')
          throw new PackError(`The input pattern "${toPrintableExcerpt(path)}" starts in "${toPrintableExcerpt(prefix)}", which is not a folder.`);
      }
      const matched = walk(prefix).filter((file) => posix.matchesGlob(file.path, path));
      if (matched.length === 0) throw new PackError(`The input pattern "${toPrintableExcerpt(path)}" matches no file.`);
      for (const file of matched) select(file, executable);
      continue;
    }
    checkAncestors(path);
    const entry = tree.entry(path);
    if (entry === undefined) throw new PackError(`The input "${toPrintableExcerpt(path)}" does not exist.`);
    if (entry.type === 'file') select(entry, executable);
    else if (entry.type === 'directory') {
      const files = walk(path);
      if (files.length === 0) throw new PackError(`The input folder "${toPrintableExcerpt(path)}" holds no file.`);
      for (const file of files) select(file, executable);
    } else throw refusedEntry(entry);
  }
  const paths = [...selected.keys()].sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
  const total = [...selected.values()].reduce((sum, file) => sum + file.size, 0);
  if (paths.length > PACK_MAX_FILES) {
    throw new PackError(`The inputs expand to ${paths.length} files; a capsule holds at most ${PACK_MAX_FILES}.`);
  }
  if (total > PACK_MAX_INPUT_BYTES) {
    throw new PackError(
      `The inputs expand to ${paths.length} files of ${total} bytes; a capsule holds at most ${PACK_MAX_INPUT_BYTES} bytes of inputs.`,
    );
  }
  return paths.map((path) => (selected.get(path)!.executable ? { path, executable: true } : { path }));
}

function refusedEntry(entry: TreeEntry): PackError {
  const what = entry.type === 'symlink' ? 'a symlink' : 'not a regular file or folder';
  return new PackError(`The input "${toPrintableExcerpt(entry.path)}" is ${what}; capsule pack takes regular files only.`);
}

export function packCapsule(template: ManifestTemplate, files: ReadonlyMap<string, Uint8Array>, keys: readonly PrivateKey[]): CapsuleFile {
  const blobs: Record<string, string> = {};
  const inputs = template.inputs.map(({ path, executable }) => {
    const data = files.get(path);
    if (!data) throw new Error(`no bytes given for input ${path}`);
    const sha256 = sha256Hex(data);
    blobs[`sha256:${sha256}`] = toBase64(data);
    return executable ? { path, sha256, size: data.length, executable } : { path, sha256, size: data.length };
  });
  const manifest = { ...template, inputs };
  const payload = Buffer.from(JSON.stringify(manifest, null, 2), 'utf8');
  parseManifest(payload); // refuse to sign what a runner would refuse to run
  return { mediaType: CAPSULE_FILE_MEDIA_TYPE, envelope: signEnvelope(CAPSULE_PAYLOAD_TYPE, payload, keys), blobs };
}
