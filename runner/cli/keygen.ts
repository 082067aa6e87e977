import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { PrivateKey, PublicKey, verifyKeyPair } from '../core/ed25519.js';
import { CoreError } from '../core/errors.js';
import { writeKeyPair } from '../state/keyfile.js';
import { EXIT, printJson } from './output.js';

export function keygenCommand(): Command {
  return new Command('keygen')
    .description('Write a new Ed25519 key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM).')
    .requiredOption('--out <prefix>', 'path prefix of the two files')
    .option('--name <name>', 'a human name, printed for the trust document')
    .option('--json', 'print a machine-readable summary')
    .action((opts: { out: string; name?: string; json?: boolean }) => {
      const key = PrivateKey.generate();
      // The pair is checked before it is written (point checks, a signature in both engines), and the public
      // key is read back from the file an operator will enrol, so what is enrolled is what the runner accepts.
      verifyKeyPair(key);
      const { privatePath, publicPath } = writeKeyPair(opts.out, key);
      if (PublicKey.fromPem(readFileSync(publicPath, 'utf8')).keyid !== key.keyid) {
        throw new CoreError('CORE_KEY_INVALID', `The public key written to ${publicPath} is not the key that was generated.`);
      }
      if (opts.json) printJson({ keyid: key.keyid, name: opts.name ?? null, privateKey: privatePath, publicKey: publicPath });
      else process.stdout.write(`${key.keyid}\n`);
      process.exitCode = EXIT.ok;
    });
}
