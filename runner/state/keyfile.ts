/** Key files: PKCS#8 PEM private keys (mode 0600, refused when group or others can read) and SPKI PEM public keys. */
import { closeSync, fstatSync, openSync, readFileSync, writeFileSync, constants } from 'node:fs';
import { PrivateKey } from '../core/ed25519.js';
import { StateError } from './errors.js';

export function readPrivateKeyFile(path: string): PrivateKey {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (cause) {
    throw new StateError('STATE_KEY_UNREADABLE', `The private key ${path} cannot be opened.`, { path }, { cause });
  }
  try {
    const mode = fstatSync(fd).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new StateError(
        'STATE_KEY_PERMISSIONS',
        `The private key ${path} is readable by group or others (mode ${mode.toString(8).padStart(4, '0')}); run chmod 600 on it.`,
        { path },
      );
    }
    return PrivateKey.fromPem(readFileSync(fd, 'utf8'));
  } catch (err) {
    if (err instanceof StateError) throw err;
    throw new StateError('STATE_KEY_UNREADABLE', `The private key ${path} is not an Ed25519 PKCS#8 PEM key.`, { path }, { cause: err });
  } finally {
    closeSync(fd);
  }
}

/** Writes a new key pair; never overwrites (O_EXCL), private key created with mode 0600. */
export function writeKeyPair(prefix: string, key: PrivateKey): { privatePath: string; publicPath: string } {
  const privatePath = `${prefix}.key`;
  const publicPath = `${prefix}.pub`;
  writeFileSync(privatePath, key.toPem(), { mode: 0o600, flag: 'wx' });
  writeFileSync(publicPath, key.publicKey.toPem(), { mode: 0o644, flag: 'wx' });
  return { privatePath, publicPath };
}
