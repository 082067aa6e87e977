import { Command } from 'commander';
import { PrivateKey } from '../core/ed25519.js';
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
      const { privatePath, publicPath } = writeKeyPair(opts.out, key);
      if (opts.json) printJson({ keyid: key.keyid, name: opts.name ?? null, privateKey: privatePath, publicKey: publicPath });
      else process.stdout.write(`${key.keyid}\n`);
      process.exitCode = EXIT.ok;
    });
}
