/**
 * Ed25519 points that must never be a key: the eight points of small order, every other encoding of them,
 * and non-canonical encodings (y >= p). Built from the curve, not copied: see test/unit/core/ed25519.test.ts,
 * which checks that these are eight distinct points with [8]P = identity (the whole 8-torsion, since the
 * curve's cofactor is 8) and derives the order-8 y from the doubling formula.
 */
import { createHash } from 'node:crypto';

export const P = (1n << 255n) - 19n;
export const L = (1n << 252n) + 27742317777372353535851937790883648493n;
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function encode(y: bigint, sign: 0 | 1 = 0): Buffer {
  let n = y | (BigInt(sign) << 255n);
  const out = Buffer.alloc(32);
  for (let i = 0; i < 32; i++) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

export function fromLe(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]!);
  return n;
}

export function toLe(n: bigint, length = 32): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

/** y of the two order-8 y values (the other is P - Y8), as libsodium's blocklist lists them. */
export const Y8 = fromLe(Buffer.from('26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', 'hex'));

/** The canonical encodings of the eight small-order points, with the order of each. */
export const SMALL_ORDER_POINTS: readonly { name: string; encoding: Buffer; order: number }[] = [
  { name: 'identity (y = 1)', encoding: encode(1n), order: 1 },
  { name: 'y = p - 1', encoding: encode(P - 1n), order: 2 },
  { name: 'y = 0, x even', encoding: encode(0n, 0), order: 4 },
  { name: 'y = 0, x odd', encoding: encode(0n, 1), order: 4 },
  { name: 'order-8 y, x even', encoding: encode(Y8, 0), order: 8 },
  { name: 'order-8 y, x odd', encoding: encode(Y8, 1), order: 8 },
  { name: 'order-8 -y, x even', encoding: encode(P - Y8, 0), order: 8 },
  { name: 'order-8 -y, x odd', encoding: encode(P - Y8, 1), order: 8 },
];

/** The other encodings of small-order points: x = 0 with the sign bit set, and y + p for y = 0 and y = 1. */
export const SMALL_ORDER_ALIASES: readonly { name: string; encoding: Buffer }[] = [
  { name: 'identity with the sign bit set', encoding: encode(1n, 1) },
  { name: 'y = p - 1 with the sign bit set', encoding: encode(P - 1n, 1) },
  { name: 'y = p (0 + p)', encoding: encode(P, 0) },
  { name: 'y = p with the sign bit set', encoding: encode(P, 1) },
  { name: 'y = p + 1 (identity + p)', encoding: encode(P + 1n, 0) },
  { name: 'y = p + 1 with the sign bit set', encoding: encode(P + 1n, 1) },
];

export const IDENTITY = encode(1n);

export function spkiOf(raw: Uint8Array): Buffer {
  return Buffer.concat([SPKI_PREFIX, raw]);
}

/** A PEM for any 32 bytes, whether or not they are a usable key (what a hostile trust document can carry). */
export function pemOfRaw(raw: Uint8Array): string {
  return `-----BEGIN PUBLIC KEY-----\n${spkiOf(raw).toString('base64')}\n-----END PUBLIC KEY-----\n`;
}

/** The keyid the runner would compute for these bytes (SHA-256 of the SPKI DER). */
export function keyidOfRaw(raw: Uint8Array): string {
  return createHash('sha256').update(spkiOf(raw)).digest('hex');
}

/** The forged signature of the review: R = identity, S = 0. It satisfies [S]B = R + [k]A for A = identity. */
export const IDENTITY_FORGERY = Buffer.concat([IDENTITY, Buffer.alloc(32)]);
