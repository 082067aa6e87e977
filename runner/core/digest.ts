import { createHash, hash } from 'node:crypto';

/** SHA-256 of the parts, concatenated. One part is hashed in one call (crypto.hash: no Hash object). */
export function sha256(...parts: Uint8Array[]): Buffer {
  if (parts.length === 1) return hash('sha256', parts[0]!, 'buffer');
  const h = createHash('sha256');
  for (const part of parts) h.update(part);
  return h.digest();
}

export function sha256Hex(...parts: Uint8Array[]): string {
  if (parts.length === 1) return hash('sha256', parts[0]!, 'hex');
  return sha256(...parts).toString('hex');
}

/** `sha256:HEX` form used for blobs and evidence references. */
export function toDigestRef(bytes: Uint8Array): string {
  return `sha256:${sha256Hex(bytes)}`;
}
