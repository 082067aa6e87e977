import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { MANIFEST_MAX_BYTES } from '../capsule/capsule-file.js';
import { isContainedPath } from '../capsule/manifest.js';
import { JsonError, parseJson } from '../core/json.js';
import { packCapsule, type ManifestTemplate } from '../capsule/pack.js';
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
    .description('Read DIR/capsule.json and the inputs it names, fill in digests, sizes, times and nonce, and sign.')
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
      const files = new Map<string, Buffer>();
      for (const input of filled.inputs ?? []) {
        if (!isContainedPath(input.path)) throw new UsageError(`The input path "${input.path}" must be relative and inside ${dir}.`);
        files.set(input.path, readFileSync(join(dir, input.path)));
      }
      const keys = opts.key.map(readPrivateKeyFile);
      const file = packCapsule(filled, files, keys);
      const bytes = Buffer.from(`${JSON.stringify(file, null, 2)}\n`);
      writeFileAtomic(opts.out, bytes);
      process.stdout.write(`packed ${filled.id} (${filled.kind}, ${files.size} input(s), ${keys.length} signature(s)) -> ${opts.out}\n`);
      process.stdout.write(`${toDigestRef(bytes)}\n`);
    });
  return capsule;
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
