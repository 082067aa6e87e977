import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readSync } from 'node:fs';
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
      try {
        if (!Array.isArray(filled.inputs)) throw new PackError('The inputs in capsule.json must be a list.');
        inputs = expandInputs(filled.inputs, folderTree(dir));
      } catch (err) {
        if (err instanceof PackError) throw new UsageError(err.message);
        throw err;
      }
      const files = new Map<string, Buffer>();
      let total = 0;
      for (const input of inputs) {
        // Read against the cap again: a file that grew after the walk must not be read whole into memory.
        const bytes = readInput(dir, input.path, PACK_MAX_INPUT_BYTES - total);
        total += bytes.length;
        files.set(input.path, bytes);
      }
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

/** The capsule folder as expandInputs sees it: lstat only, so a symlink is reported as one and never followed. */
function folderTree(dir: string): FileTree {
  const describe = (path: string, stats: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean; size: number }): TreeEntry => {
    if (stats.isSymbolicLink()) return { path, type: 'symlink' };
    if (stats.isDirectory()) return { path, type: 'directory' };
    if (stats.isFile()) return { path, type: 'file', size: stats.size };
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
      return readdirSync(join(dir, path)).map((name) => {
        const child = path === '' ? name : `${path}/${name}`;
        return describe(child, lstatSync(join(dir, child)));
      });
    },
  };
}

/**
 * One input's bytes, opened without following a symlink (one swapped in after the walk is refused, not read
 * through), checked to be a regular file and to fit in what is left of the input cap.
 */
function readInput(dir: string, path: string, maxBytes: number): Buffer {
  let fd: number;
  try {
    fd = openSync(join(dir, path), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP')
      throw new UsageError(`The input "${path}" is a symlink; capsule pack takes regular files only.`);
    throw err;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw new UsageError(`The input "${path}" is not a regular file.`);
    if (stats.size > maxBytes) throw new UsageError(`The input "${path}" grew past the ${PACK_MAX_INPUT_BYTES}-byte input cap while it was packed.`);
    const buffer = Buffer.alloc(stats.size);
    let read = 0;
    while (read < buffer.length) {
      const n = readSync(fd, buffer, read, buffer.length - read, read);
      if (n === 0) throw new UsageError(`The input "${path}" changed while it was read.`);
      read += n;
    }
    return buffer;
  } finally {
    closeSync(fd);
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
