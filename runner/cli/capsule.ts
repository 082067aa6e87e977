import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  realpathSync,
  statSync,
  type Stats,
} from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { CAPSULE_MAX_BYTES, MANIFEST_MAX_BYTES } from '../capsule/capsule-file.js';
import { JsonError, parseJson } from '../core/json.js';
import {
  expandInputs,
  PACK_MAX_INPUT_BYTES,
  PackError,
  packCapsule,
  type FileTree,
  type ManifestTemplate,
  type TemplateInput,
  type TreeEntry,
} from '../capsule/pack.js';
import { toDigestRef } from '../core/digest.js';
import { toPrintableExcerpt } from '../core/printable.js';
import { readPrivateKeyFile } from '../state/keyfile.js';
import { writeFileAtomic } from '../state/files.js';
import { readFileCapped } from './files.js';
import { collectOption } from './options.js';
import { UsageError } from './output.js';

const DURATION = /^(\d+)([smhd])$/;
const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400 } as const;

export function capsuleCommand(): Command {
  const capsule = new Command('capsule').description('Author capsules (the coordinator side).');
  capsule
    .command('pack')
    .description('Read DIR/capsule.json and the inputs it names (files, folders, glob patterns), fill in digests, sizes, times and nonce, and sign.')
    .argument('<dir>', 'a capsule folder holding capsule.json and its input files')
    .requiredOption('--key <path>', 'a capsule-signer private key (repeat for a threshold)', collectOption, [])
    .requiredOption('--out <path>', 'the capsule file to write (NAME.capsule.json)')
    .option('--valid-for <duration>', 'validity window when capsule.json sets no expiresAt (e.g. 30m, 24h, 7d)', '24h')
    .action((dir: string, opts: { key: string[]; out: string; validFor: string }) => {
      const template = readTemplate(join(dir, 'capsule.json'));
      const match = DURATION.exec(opts.validFor);
      if (!match) throw new UsageError(`--valid-for "${opts.validFor}" is not a duration such as 30m, 24h or 7d.`);
      const now = new Date();
      now.setUTCMilliseconds(0);
      const seconds = Number(match[1]) * UNIT_SECONDS[match[2] as keyof typeof UNIT_SECONDS];
      const filled = {
        apiVersion: 'edge-runner.dev/capsule/v1',
        inputs: [],
        collect: [],
        ...template,
        issuedAt: template.issuedAt ?? now.toISOString(),
        notBefore: template.notBefore ?? now.toISOString(),
        expiresAt: template.expiresAt ?? new Date(now.getTime() + seconds * 1000).toISOString(),
        nonce: template.nonce ?? randomBytes(16).toString('hex'),
      } as ManifestTemplate;
      let inputs: TemplateInput[];
      const tree = folderTree(dir);
      try {
        if (!Array.isArray(filled.inputs)) throw new PackError('The inputs in capsule.json must be a list.');
        inputs = expandInputs(filled.inputs, tree);
      } catch (err) {
        if (err instanceof PackError) throw new UsageError(err.message);
        throw err;
      }
      refuseKeyInputs(inputs, tree, opts.key);
      const files = readInputs(dir, inputs, tree);
      const keys = opts.key.map(readPrivateKeyFile);
      const file = packCapsule({ ...filled, inputs }, files, keys);
      const bytes = Buffer.from(`${JSON.stringify(file, null, 2)}\n`);
      if (bytes.length > CAPSULE_MAX_BYTES) {
        throw new UsageError(
          `The packed capsule of ${files.size} input file(s) is ${bytes.length} bytes, over the ${CAPSULE_MAX_BYTES}-byte capsule cap.`,
        );
      }
      writeFileAtomic(opts.out, bytes);
      process.stdout.write(`packed ${filled.id} (${filled.kind}, ${files.size} input(s), ${keys.length} signature(s)) -> ${opts.out}\n`);
      process.stdout.write(`${toDigestRef(bytes)}\n`);
    });
  return capsule;
}

/** What the walk saw of a regular file: the bytes read later must come from this same file. */
type FileIdentity = { dev: number; ino: number };

/**
 * The capsule folder as expandInputs sees it: lstat only, so a symlink is reported as one and never followed.
 * Names are read as bytes and must be UTF-8: Node would otherwise turn every invalid byte into U+FFFD, so two
 * files could become one name (one of them silently left out) or a name that leads to no file. Each regular
 * file's device and inode are kept, for readInputs to check against what it opens.
 */
export function folderTree(dir: string): FileTree & { identity(path: string): FileIdentity | undefined } {
  const identities = new Map<string, FileIdentity>();
  const describe = (path: string, stats: Stats): TreeEntry => {
    if (stats.isSymbolicLink()) return { path, type: 'symlink' };
    if (stats.isDirectory()) return { path, type: 'directory' };
    if (stats.isFile()) {
      identities.set(path, { dev: stats.dev, ino: stats.ino });
      return { path, type: 'file', size: stats.size };
    }
    return { path, type: 'other' };
  };
  return {
    entry(path) {
      try {
        return describe(path, lstatSync(join(dir, path)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
        throw err;
      }
    },
    children(path) {
      return readdirSync(join(dir, path), { encoding: 'buffer' }).map((raw) => {
        let name: string;
        try {
          name = UTF8.decode(raw);
        } catch {
          throw new PackError(
            `A file name in the folder "${toPrintableExcerpt(path === '' ? '.' : path)}" is not UTF-8; a capsule input path must be.`,
          );
        }
        const child = path === '' ? name : `${path}/${name}`;
        return describe(child, lstatSync(join(dir, child)));
      });
    },
    identity: (path) => identities.get(path),
  };
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The expanded inputs' bytes, each read against what is left of the input cap (a file that grew after the
 * walk must not be read whole into memory) and checked to be the very file the walk saw: a folder above it
 * swapped for a symlink after the walk (open's O_NOFOLLOW guards the last segment only) leads elsewhere.
 */
export function readInputs(
  dir: string,
  inputs: readonly TemplateInput[],
  tree: { identity(path: string): FileIdentity | undefined },
): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  let total = 0;
  const root = realpathSync(dir);
  for (const { path } of inputs) {
    const bytes = readInput(dir, root, path, PACK_MAX_INPUT_BYTES - total, tree.identity(path));
    total += bytes.length;
    files.set(path, bytes);
  }
  return files;
}

/**
 * One input's bytes, opened without following a symlink (one swapped in after the walk is refused, not read
 * through), checked to be a regular file, the one the walk saw, reached through no link (where the host
 * says, in /proc/self/fd, what an open descriptor leads to: a folder swapped while the walk listed it
 * leaves the walk with the outside file's identity), and to fit in what is left of the input cap.
 */
function readInput(dir: string, root: string, path: string, maxBytes: number, seen: FileIdentity | undefined): Buffer {
  let fd: number;
  try {
    fd = openSync(join(dir, path), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP')
      throw new UsageError(`The input "${toPrintableExcerpt(path)}" is a symlink; capsule pack takes regular files only.`);
    throw err;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw new UsageError(`The input "${toPrintableExcerpt(path)}" is not a regular file.`);
    if (seen === undefined || stats.dev !== seen.dev || stats.ino !== seen.ino) {
      throw new UsageError(
        `The input "${toPrintableExcerpt(path)}" is not the file the folder held when it was listed; it changed while it was packed.`,
      );
    }
    const opened = openedPath(fd);
    if (opened !== undefined && opened !== join(root, path)) {
      throw new UsageError(`The input "${toPrintableExcerpt(path)}" was reached through a symlink that appeared while it was packed.`);
    }
    if (stats.size > maxBytes)
      throw new UsageError(`The input "${toPrintableExcerpt(path)}" grew past the ${PACK_MAX_INPUT_BYTES}-byte input cap while it was packed.`);
    const buffer = Buffer.alloc(stats.size);
    let read = 0;
    while (read < buffer.length) {
      const n = readSync(fd, buffer, read, buffer.length - read, read);
      if (n === 0) throw new UsageError(`The input "${toPrintableExcerpt(path)}" changed while it was read.`);
      read += n;
    }
    return buffer;
  } finally {
    closeSync(fd);
  }
}

/** The path an open descriptor leads to, where /proc shows it (Linux); undefined where it does not. */
function openedPath(fd: number): string | undefined {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

/**
 * A signing key kept in the capsule folder is not packed by a folder or a `**` pattern: the capsule would
 * carry it to every runner. Compared by device and inode, so a hard link or another spelling of the path is
 * the same key.
 */
function refuseKeyInputs(
  inputs: readonly TemplateInput[],
  tree: { identity(path: string): FileIdentity | undefined },
  keyPaths: readonly string[],
): void {
  const keys = keyPaths.flatMap((path) => {
    try {
      const stats = statSync(path);
      return [{ path, dev: stats.dev, ino: stats.ino }];
    } catch {
      return []; // readPrivateKeyFile names the missing key
    }
  });
  for (const { path } of inputs) {
    const seen = tree.identity(path);
    const key = keys.find((k) => seen !== undefined && k.dev === seen.dev && k.ino === seen.ino);
    if (key) {
      throw new UsageError(`The input "${toPrintableExcerpt(path)}" is the signing key ${key.path}; a capsule carries its inputs to every runner.`);
    }
  }
}

/** DIR/capsule.json, under the manifest's cap, through the strict parser: what is signed is what was meant. */
function readTemplate(path: string): Partial<ManifestTemplate> {
  const { bytes, size } = readFileCapped(path, MANIFEST_MAX_BYTES);
  if (size > MANIFEST_MAX_BYTES) throw new UsageError(`${path} is over the ${MANIFEST_MAX_BYTES}-byte manifest cap.`);
  let value: unknown;
  try {
    value = parseJson(bytes);
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    throw new UsageError(`${path} is not valid JSON: ${cause.message}.`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError(`${path} is not a JSON object.`);
  return value as Partial<ManifestTemplate>;
}
