/** Key files: PKCS#8 PEM private keys (mode 0600, refused when group or others can read) and SPKI PEM public keys. */
import { closeSync, fstatSync, openSync, readFileSync, unlinkSync, constants } from 'node:fs';
import { PrivateKey, verifyKeyPair } from '../core/ed25519.js';
import { isCodedError } from '../core/errors.js';
import { StateError } from './errors.js';
import { writeFileAtomic } from './files.js';

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
    const key = PrivateKey.fromPem(readFileSync(fd, 'utf8'));
    verifyKeyPair(key);
    return key;
  } catch (err) {
    if (err instanceof StateError) throw err;
    if (isCodedError(err) && err.details.reason === 'pair-mismatch') {
      throw new StateError('STATE_KEY_UNREADABLE', `The private key ${path} does not sign for its own public key.`, { path }, { cause: err });
    }
    throw new StateError('STATE_KEY_UNREADABLE', `The private key ${path} is not an Ed25519 PKCS#8 PEM key.`, { path }, { cause: err });
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes a new key pair; never overwrites (runner/state/files.ts: random O_EXCL|O_NOFOLLOW temporary file,
 * checked writes, then link(2), which fails on an existing name), private key mode 0600 from its creation.
 * If the public key cannot be written, the private key just written is removed: a pair or nothing.
 */
export function writeKeyPair(prefix: string, key: PrivateKey): { privatePath: string; publicPath: string } {
  const privatePath = `${prefix}.key`;
  const publicPath = `${prefix}.pub`;
  writeFileAtomic(privatePath, key.toPem(), { mode: 0o600, replace: false });
  try {
    writeFileAtomic(publicPath, key.publicKey.toPem(), { mode: 0o644, replace: false });
  } catch (err) {
    unlinkSync(privatePath);
    throw err;
  }
  return { privatePath, publicPath };
}
