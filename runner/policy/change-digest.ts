/**
 * The digests an approval is bound to (docs: README, governed remediation). Each is `sha256:` + SHA-256 of
 * canonical JSON (runner/core/canonical-json.ts), so an auditor recomputes it with `jq -cS . | sha256sum`.
 * Pure.
 */
import { toCanonicalJson } from '../core/canonical-json.js';
import { sha256Hex } from '../core/digest.js';
import type { Manifest } from '../capsule/manifest.js';
import type { TrustDocumentBody } from '../trust/trust.js';

export const CHANGE_DIGEST_TYPE = 'https://edge-runner.dev/change/v1';

/** The whole signed policy of the trust document (not only its remediation part): what the tier came from. */
export function policyDigest(policy: TrustDocumentBody['policy']): string {
  return digestOf(policy);
}

/**
 * The change as the capsule signed it: `manifest.change`, and every input it names (the patch, each file's
 * `from`) as the manifest lists it (path, sha256, size, executable), sorted by the UTF-8 bytes of the path
 * (code-point order: what jq's sort_by and LC_ALL=C sort give; UTF-16 order differs for names mixing
 * U+E000–U+FFFF and astral characters). The inputs' digests stand for their bytes.
 */
export function changeSpecDigest(manifest: Manifest): string {
  const { change } = manifest;
  if (change === undefined) throw new TypeError('Only a remediate capsule has a change.');
  const named = new Set([
    ...(change.patch === undefined ? [] : [change.patch]),
    ...(change.files ?? []).flatMap((f) => (f.from === undefined ? [] : [f.from])),
  ]);
  const inputs = manifest.inputs
    .filter((input) => named.has(input.path))
    .map(({ path, sha256, size, executable }) => ({ path, sha256, size, ...(executable === undefined ? {} : { executable }) }))
    .sort((a, b) => Buffer.compare(Buffer.from(a.path, 'utf8'), Buffer.from(b.path, 'utf8')));
  return digestOf({ change, inputs });
}

export interface ChangeDigestParts {
  /** The change target's name (runner configuration `targets`). */
  target: string;
  /** Tree digests (runner/remediate/tree.ts) of the target before and of the staged copy after the change. */
  preState: string;
  postState: string;
  /** The capsule's manifest digest: it holds the nonce, so an approval never carries over to another proposal. */
  capsule: string;
  /** changeSpecDigest of the capsule. */
  change: string;
  /** policyDigest of the trust document the tier was derived under. */
  policy: string;
}

/** What approvals are bound to: target, pre-state, post-state, capsule, change and policy in one digest. */
export function changeDigestOf(parts: ChangeDigestParts): string {
  const { target, preState, postState, capsule, change, policy } = parts;
  return digestOf({ _type: CHANGE_DIGEST_TYPE, target, preState, postState, capsule, change, policy });
}

function digestOf(value: unknown): string {
  return `sha256:${sha256Hex(Buffer.from(toCanonicalJson(value), 'utf8'))}`;
}
