/**
 * Capsule acceptance (pure): capsule file bytes + verified trust + one clock reading -> an accepted capsule,
 * or a CapsuleError with the reason code of the first check that failed. The order is DESIGN.md's: size cap,
 * parse, signatures meet the capsule-signer threshold, manifest schema, freshness, target, replay, input
 * digests, policy.
 */
import { parseBase64 } from '../core/base64.js';
import { sha256Hex } from '../core/digest.js';
import { DsseError, verifyEnvelope, type DsseErrorCode, type Envelope } from '../core/dsse.js';
import { toPrintableExcerpt } from '../core/printable.js';
import type { VerifiedTrust } from '../trust/trust.js';
import { parseCapsuleFile, CAPSULE_MAX_BYTES } from './capsule-file.js';
import { CapsuleError, type CapsuleErrorCode } from './errors.js';
import { CAPSULE_PAYLOAD_TYPE, parseManifest, type Manifest } from './manifest.js';

export interface RunnerIdentity {
  id: string;
  labels: readonly string[];
}

export interface CapsuleVerifyOptions {
  trust: VerifiedTrust;
  runner: RunnerIdentity;
  /** The single clock reading for this decision. */
  now: Date;
  /** Replay check: true when this id+nonce was accepted before. */
  hasSeen: (capsuleId: string, nonce: string) => boolean;
  maxBytes?: number;
  /** Tolerance for a runner clock behind the signer's, applied to notBefore only. Default 60 s. */
  clockSkewMs?: number;
}

export const DEFAULT_CLOCK_SKEW_MS = 60_000;

export interface AcceptedCapsule {
  manifest: Manifest;
  /** The verified DSSE payload: the bytes the evidence's capsule subject digests. */
  manifestBytes: Buffer;
  manifestDigest: string;
  /** The envelope rebuilt from the signatures that verified (what a bundle carries on). */
  envelope: Envelope;
  signers: string[];
  /** Input bytes by path, digests checked. */
  inputs: Map<string, Buffer>;
}

const DSSE_TO_CAPSULE: Record<DsseErrorCode, CapsuleErrorCode> = {
  DSSE_MALFORMED: 'CAPSULE_UNPARSEABLE',
  DSSE_PAYLOAD_TYPE: 'CAPSULE_PAYLOAD_TYPE',
  DSSE_BASE64_INVALID: 'CAPSULE_BASE64_INVALID',
  DSSE_NO_VALID_SIGNATURE: 'CAPSULE_SIGNATURE_INVALID',
  DSSE_SIGNATURE_DUPLICATE: 'CAPSULE_SIGNATURE_DUPLICATE',
  DSSE_KEYID_MISMATCH: 'CAPSULE_KEYID_MISMATCH',
  DSSE_SIGNER_ROLE: 'CAPSULE_SIGNER_ROLE',
  DSSE_THRESHOLD: 'CAPSULE_SIGNATURE_THRESHOLD',
};

export function verifyCapsule(bytes: Uint8Array, options: CapsuleVerifyOptions): AcceptedCapsule {
  return verify(bytes, options, { runner: options.runner, hasSeen: options.hasSeen });
}

export type PublishVerifyOptions = Omit<CapsuleVerifyOptions, 'runner' | 'hasSeen'>;

/**
 * Every check of acceptance that does not depend on a runner (all but target and replay), in the same order
 * and with the same codes: what a coordinator checks before it publishes a capsule to any runner, so a
 * capsule whose inputs were altered after signing (CAPSULE_INPUT_DIGEST) never reaches the feed.
 */
export function verifyPublishable(bytes: Uint8Array, options: PublishVerifyOptions): AcceptedCapsule {
  return verify(bytes, options, undefined);
}

function verify(
  bytes: Uint8Array,
  options: PublishVerifyOptions,
  forRunner: { runner: RunnerIdentity; hasSeen: CapsuleVerifyOptions['hasSeen'] } | undefined,
): AcceptedCapsule {
  const { trust, now } = options;
  // 1. Size cap, 2. parse.
  const file = parseCapsuleFile(bytes, options.maxBytes ?? trust.body.policy.maxCapsuleBytes ?? CAPSULE_MAX_BYTES);
  // 3. Signatures: a threshold of distinct capsule-signer keys over PAE(payloadType, payload).
  const verified = verifySignatures(file.envelope, trust);
  const manifestDigest = `sha256:${sha256Hex(verified.payload)}`;
  // 4. Schema, on the verified payload only.
  const manifest = withCapsule(manifestDigest, () => parseManifest(verified.payload));
  const context = { capsuleId: manifest.id, manifestDigest };
  // 5. Freshness, against the one clock reading.
  const at = now.getTime();
  if (at + (options.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS) < Date.parse(manifest.notBefore)) {
    throw new CapsuleError('CAPSULE_NOT_YET_VALID', `The capsule is not valid before ${manifest.notBefore}.`, context);
  }
  if (at >= Date.parse(manifest.expiresAt)) {
    throw new CapsuleError('CAPSULE_EXPIRED', `The capsule expired at ${manifest.expiresAt}.`, context);
  }
  if (forRunner !== undefined) {
    const { runner, hasSeen } = forRunner;
    // 6. Target: this runner by id, or one of its labels.
    const byId = manifest.target.runners?.includes(runner.id) ?? false;
    const byLabel = manifest.target.labels?.some((label) => runner.labels.includes(label)) ?? false;
    if (!byId && !byLabel) {
      throw new CapsuleError('CAPSULE_TARGET', `The capsule is not addressed to runner ${runner.id}.`, context);
    }
    // 7. Replay: an accepted id+nonce is never accepted again.
    if (hasSeen(manifest.id, manifest.nonce)) {
      throw new CapsuleError('CAPSULE_REPLAY', `The capsule ${manifest.id} with this nonce was already accepted.`, context);
    }
  }
  // 8. Input digests: every input has a blob whose bytes match the signed digest and size, and every blob is
  // an input's.
  const inputs = new Map<string, Buffer>();
  for (const input of manifest.inputs) {
    const encoded = file.blobs[`sha256:${input.sha256}`];
    if (encoded === undefined) {
      throw new CapsuleError('CAPSULE_INPUT_MISSING', `The capsule carries no bytes for the input "${toPrintableExcerpt(input.path)}".`, {
        ...context,
        path: input.path,
      });
    }
    let data: Buffer;
    try {
      data = parseBase64(encoded, 'blob');
    } catch {
      throw new CapsuleError('CAPSULE_BASE64_INVALID', `The bytes of the input "${toPrintableExcerpt(input.path)}" are not valid base64.`, {
        ...context,
        path: input.path,
      });
    }
    if (data.length !== input.size || sha256Hex(data) !== input.sha256) {
      throw new CapsuleError('CAPSULE_INPUT_DIGEST', `The bytes of the input "${toPrintableExcerpt(input.path)}" do not match the signed digest.`, {
        ...context,
        path: input.path,
      });
    }
    inputs.set(input.path, data);
  }
  // Every blob is an input's bytes: a capsule file carries nothing the signed manifest does not name, so
  // unsigned bytes cannot ride along into the evidence store or to the next reader of the file.
  const referenced = new Set(manifest.inputs.map((input) => `sha256:${input.sha256}`));
  const unreferenced = Object.keys(file.blobs).filter((ref) => !referenced.has(ref));
  if (unreferenced.length > 0) {
    throw new CapsuleError('CAPSULE_BLOB_UNREFERENCED', `The capsule file carries ${unreferenced.length} blob(s) that no signed input names.`, {
      ...context,
      blobs: unreferenced.length,
    });
  }
  // 9. Policy from the signed trust document.
  if (!trust.body.policy.allowedKinds.includes(manifest.kind)) {
    throw new CapsuleError('CAPSULE_POLICY', `The trust policy does not allow ${manifest.kind} capsules.`, context);
  }
  // A change is only as governed as the policy that derives its approvals: none, no remediation.
  if (manifest.kind === 'remediate' && trust.body.policy.remediation === undefined) {
    throw new CapsuleError(
      'CAPSULE_POLICY',
      'The trust policy allows remediate capsules but gives no remediation rules to derive their approvals from.',
      context,
    );
  }
  return { manifest, manifestBytes: verified.payload, manifestDigest, envelope: verified.verifiedEnvelope, signers: verified.signers, inputs };
}

/**
 * Step 3 alone: the envelope meets the capsule-signer threshold (CAPSULE_* codes). Exported for a
 * coordinator, which checks what a capsule's signers signed before publishing it to any runner.
 */
export function verifySignatures(envelope: Envelope, trust: VerifiedTrust) {
  try {
    return verifyEnvelope(envelope, {
      payloadType: CAPSULE_PAYLOAD_TYPE,
      keys: trust.keys,
      role: 'capsule-signer',
      threshold: trust.body.roles['capsule-signer'].threshold,
    });
  } catch (err) {
    if (err instanceof DsseError) {
      const code = DSSE_TO_CAPSULE[err.code];
      throw new CapsuleError(code, err.message.replace(/^The envelope/, 'The capsule envelope'), { ...err.details });
    }
    throw err;
  }
}

function withCapsule<T>(manifestDigest: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof CapsuleError) throw new CapsuleError(err.code, err.message, { ...err.details, manifestDigest });
    throw err;
  }
}
