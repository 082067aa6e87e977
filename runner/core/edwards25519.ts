/**
 * Point checks on edwards25519 in plain BigInt arithmetic, so they mean the same in every verifier (node,
 * a browser page) and owe nothing to either signature engine.
 *
 * Neither engine refuses everything RFC 8032 and libsodium refuse. A public key that is one of the eight
 * points of small order (the identity among them) makes the cofactorless check [S]B = R + [k]A satisfiable
 * without any private key: with A = identity, R = identity and S = 0 every message "verifies" (tweetnacl
 * accepts it). And a point has more than one encoding when its y can also be written as y + p, or when
 * x = 0 and the sign bit is set anyway, so one key could be enrolled under two keyids. So a key is decoded
 * here as RFC 8032 section 5.1.3 says, every failure case refused, and [8]A must not be the identity.
 * The R half of a signature gets the cheap part of the same check (canonical y, not small order) on every
 * verify, as libsodium's `crypto_sign_verify_detached` does.
 */

/** The field prime p = 2^255 - 19. */
export const P = (1n << 255n) - 19n;
/** d = -121665 / 121666 mod p, the curve constant. */
const D = mod(-121665n * invert(121666n));
/** sqrt(-1) mod p = 2^((p-1)/4). */
const SQRT_M1 = pow(2n, (P - 1n) / 4n);

export type PointProblem = 'non-canonical' | 'not-on-curve' | 'small-order';

export interface AffinePoint {
  x: bigint;
  y: bigint;
}

function mod(a: bigint): bigint {
  const r = a % P;
  return r >= 0n ? r : r + P;
}

function pow(base: bigint, exponent: bigint): bigint {
  let result = 1n;
  let b = mod(base);
  let e = exponent;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return result;
}

function invert(a: bigint): bigint {
  return pow(a, P - 2n);
}

/** The 255-bit little-endian y and the sign bit (bit 255) of a 32-byte encoding. */
export function splitEncoding(bytes: Uint8Array): { y: bigint; sign: 0 | 1 } {
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(bytes[i]!);
  const sign = (y >> 255n) & 1n ? 1 : 0;
  return { y: y & ((1n << 255n) - 1n), sign };
}

/**
 * RFC 8032 section 5.1.3, decoding: y must be below p, x^2 = (y^2 - 1) / (d y^2 + 1) must have a root,
 * and x = 0 with the sign bit set is refused. Returns the point or the reason it is not one.
 */
export function decodePoint(bytes: Uint8Array): AffinePoint | Exclude<PointProblem, 'small-order'> {
  if (bytes.length !== 32) return 'non-canonical';
  const { y, sign } = splitEncoding(bytes);
  if (y >= P) return 'non-canonical';
  const u = mod(y * y - 1n);
  const v = mod(D * y * y + 1n);
  // Candidate root x = u v^3 (u v^7)^((p-5)/8) (RFC 8032 section 5.1.3 step 2).
  let x = mod(u * pow(v, 3n) * pow(u * pow(v, 7n), (P - 5n) / 8n));
  const vx2 = mod(v * x * x);
  if (vx2 === u) {
    // x is a root.
  } else if (vx2 === mod(-u)) {
    x = mod(x * SQRT_M1);
  } else {
    return 'not-on-curve';
  }
  if (x === 0n && sign === 1) return 'non-canonical';
  if (Number(x & 1n) !== sign) x = P - x;
  return { x, y };
}

/** Twisted Edwards addition (a = -1), complete on this curve: no special cases. */
export function addPoints(a: AffinePoint, b: AffinePoint): AffinePoint {
  const t = mod(D * a.x * b.x * a.y * b.y);
  return {
    x: mod((a.x * b.y + a.y * b.x) * invert(1n + t)),
    y: mod((a.y * b.y + a.x * b.x) * invert(1n - t)),
  };
}

export function isIdentity(point: AffinePoint): boolean {
  return point.x === 0n && point.y === 1n;
}

/**
 * True when [8]P is the identity: P is one of the eight points of small order. Three doublings in projective
 * coordinates (dbl-2008-hwcd with a = -1), so no inversion; the identity is X = 0, Y = Z.
 */
export function hasSmallOrder(point: AffinePoint): boolean {
  let [x, y, z] = [point.x, point.y, 1n];
  for (let i = 0; i < 3; i++) {
    const a = mod(x * x);
    const b = mod(y * y);
    const c = mod(2n * z * z);
    const d = mod(-a);
    const e = mod((x + y) * (x + y) - a - b);
    const g = mod(d + b);
    const f = mod(g - c);
    const h = mod(d - b);
    [x, y, z] = [mod(e * f), mod(g * h), mod(f * g)];
  }
  return x === 0n && y === z;
}

/**
 * Why a 32-byte public key is refused, or undefined when it is a canonical encoding of a point that is not
 * of small order. Done once per key, when it is loaded.
 */
export function publicKeyProblem(bytes: Uint8Array): PointProblem | undefined {
  const point = decodePoint(bytes);
  if (typeof point === 'string') return point;
  return hasSmallOrder(point) ? 'small-order' : undefined;
}

/**
 * The y coordinates of the eight small-order points: 0 (two points of order 4), 1 (the identity), p - 1
 * (order 2) and two y of order 8 (two points each). Every small-order point, with either sign bit, has one
 * of these y; test/unit/core/ed25519.test.ts derives them from the curve equation.
 */
const SMALL_ORDER_Y: readonly bigint[] = [
  0n,
  1n,
  P - 1n,
  splitEncoding(Buffer.from('26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', 'hex')).y,
  splitEncoding(Buffer.from('c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a', 'hex')).y,
];

/**
 * The per-signature check on R, cheap enough for every verify: its y is below p and is not the y of a
 * small-order point (which also covers x = 0 with the sign bit set: only y = 1 and y = p - 1 have x = 0).
 * An R off the curve never verifies in either engine (both compare R with an encoding they computed).
 */
export function isAcceptableR(encoding: Uint8Array): boolean {
  if (encoding.length !== 32) return false;
  const { y } = splitEncoding(encoding);
  return y < P && !SMALL_ORDER_Y.includes(y);
}
