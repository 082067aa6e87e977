import { parseEnvelope, type Envelope } from '../core/dsse.js';
import { JsonError, parseJson } from '../core/json.js';
import { toPrintableExcerpt } from '../core/printable.js';
import { CapsuleError } from './errors.js';
import { CAPSULE_FILE_MEDIA_TYPE } from './manifest.js';

export interface CapsuleFile {
  mediaType: typeof CAPSULE_FILE_MEDIA_TYPE;
  envelope: Envelope;
  /** "sha256:HEX" -> base64 bytes of an input file. */
  blobs: Record<string, string>;
}

export const CAPSULE_MAX_BYTES = 64 * 1024 * 1024;
/**
 * The signed manifest travels on in every bundle; capped so that a bundle always fits under
 * BUNDLE_MAX_BYTES (runner/evidence/bundle.ts). Input bytes are blobs and do not count.
 */
export const MANIFEST_MAX_BYTES = 4 * 1024 * 1024;

/** Capsule file bytes to their parts; the size cap is checked before parsing. */
export function parseCapsuleFile(bytes: Uint8Array, maxBytes = CAPSULE_MAX_BYTES): CapsuleFile {
  if (bytes.length > maxBytes) {
    throw new CapsuleError('CAPSULE_TOO_LARGE', `The capsule file is over the ${maxBytes}-byte cap.`, {
      size: bytes.length,
      cap: maxBytes,
    });
  }
  let value: unknown;
  try {
    // Duplicate member names at any depth (two envelopes, two payloads, two blobs of one digest) are refused.
    value = parseJson(bytes);
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    throw new CapsuleError('CAPSULE_UNPARSEABLE', `The capsule file is not valid JSON: ${cause.message}.`, { json: cause.code }, { cause });
  }
  const unparseable = (why: string) => new CapsuleError('CAPSULE_UNPARSEABLE', `The capsule file is not a capsule: ${why}.`);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw unparseable('not a JSON object');
  const { mediaType, envelope, blobs, ...rest } = value as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw unparseable(`unexpected member "${toPrintableExcerpt(Object.keys(rest)[0]!)}"`);
  if (mediaType !== CAPSULE_FILE_MEDIA_TYPE) throw unparseable(`mediaType is not ${CAPSULE_FILE_MEDIA_TYPE}`);
  if (typeof blobs !== 'object' || blobs === null || Array.isArray(blobs)) throw unparseable('blobs is not an object');
  for (const [ref, data] of Object.entries(blobs)) {
    if (!/^sha256:[0-9a-f]{64}$/.test(ref) || typeof data !== 'string') throw unparseable('a blob is not "sha256:HEX": base64');
  }
  let parsedEnvelope: Envelope;
  try {
    parsedEnvelope = parseEnvelope(envelope);
  } catch (err) {
    throw unparseable(err instanceof Error ? err.message.replace(/\.$/, '') : 'bad envelope');
  }
  if (parsedEnvelope.payload.length > Math.ceil(MANIFEST_MAX_BYTES / 3) * 4) {
    throw new CapsuleError('CAPSULE_TOO_LARGE', `The capsule manifest is over the ${MANIFEST_MAX_BYTES}-byte cap.`, { cap: MANIFEST_MAX_BYTES });
  }
  return { mediaType: CAPSULE_FILE_MEDIA_TYPE, envelope: parsedEnvelope, blobs: blobs as Record<string, string> };
}
