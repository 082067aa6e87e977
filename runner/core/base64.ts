import { CoreError } from './errors.js';

// DSSE accepts standard and URL-safe base64, padded or not; any other character is an error (DESIGN.md).
const STRICT_BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/** Decodes standard or URL-safe base64 (padding optional). Throws CORE_BASE64_INVALID on anything else. */
export function parseBase64(text: string, what = 'value'): Buffer {
  if (typeof text !== 'string' || !STRICT_BASE64.test(text)) {
    throw new CoreError('CORE_BASE64_INVALID', `The ${what} is not valid base64.`);
  }
  // One alphabet per string: mixing '+/' with '-_' would give one value several encodings.
  if (/[+/]/.test(text) && /[-_]/.test(text)) {
    throw new CoreError('CORE_BASE64_INVALID', `The ${what} is not valid base64.`);
  }
  const body = text.replace(/=+$/, '');
  const padding = text.length - body.length;
  // A 4-character group holds 3 bytes; a trailing group of 1 character is impossible, and padding must
  // complete the group exactly when present.
  if (body.length % 4 === 1 || (padding > 0 && (body.length + padding) % 4 !== 0)) {
    throw new CoreError('CORE_BASE64_INVALID', `The ${what} is not valid base64.`);
  }
  const bytes = Buffer.from(body.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  // Reject non-canonical encodings (unused trailing bits set) so that one value has one encoding.
  if (bytes.toString('base64').replace(/=+$/, '') !== body.replace(/-/g, '+').replace(/_/g, '/')) {
    throw new CoreError('CORE_BASE64_INVALID', `The ${what} is not valid base64.`);
  }
  return bytes;
}

export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}
