import { createHash } from 'node:crypto';

export function sha256(...parts: Uint8Array[]): Buffer {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

export function sha256Hex(...parts: Uint8Array[]): string {
  return sha256(...parts).toString('hex');
}

/** `sha256:HEX` form used for blobs and evidence references. */
export function toDigestRef(bytes: Uint8Array): string {
  return `sha256:${sha256Hex(bytes)}`;
}
