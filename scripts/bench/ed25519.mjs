// Ed25519 verification: node:crypto (OpenSSL, one KeyObject per key, as the runner does) against tweetnacl
// (the second implementation, through the same strict wrapper), over the same signatures in the same run.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const SECONDS = 1.5;

export async function run({ dist = 'dist' } = {}) {
  const { PrivateKey, verifyWithTweetnacl } = await import(pathToFileURL(resolve(dist, 'runner/core/ed25519.js')).href);
  const key = PrivateKey.generate();
  const message = Buffer.alloc(512, 7);
  const signature = key.sign(message);
  const rate = (verify) => {
    let n = 0;
    const start = process.hrtime.bigint();
    while (Number(process.hrtime.bigint() - start) < SECONDS * 1e9) {
      for (let i = 0; i < 100; i++) if (!verify()) throw new Error('signature did not verify');
      n += 100;
    }
    return n / (Number(process.hrtime.bigint() - start) / 1e9);
  };
  const nacl = rate(() => verifyWithTweetnacl(key.publicKey.raw, message, signature));
  const node = rate(() => key.publicKey.verify(message, signature));
  return [
    { name: 'Ed25519 verify, tweetnacl (strict wrapper), 512-byte message', value: Math.round(nacl), unit: 'verifies/s' },
    { name: 'Ed25519 verify, node:crypto KeyObject, 512-byte message', value: Math.round(node), unit: 'verifies/s', reference: 'tweetnacl', ratio: Number((node / nacl).toFixed(1)) },
  ];
}
