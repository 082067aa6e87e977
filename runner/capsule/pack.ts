/**
 * The signing side: a manifest template plus the input files' bytes become a signed capsule file. Digests
 * and sizes are filled in here so a coordinator never types them by hand.
 */
import { toBase64 } from '../core/base64.js';
import { sha256Hex } from '../core/digest.js';
import { signEnvelope } from '../core/dsse.js';
import type { PrivateKey } from '../core/ed25519.js';
import { CAPSULE_FILE_MEDIA_TYPE, CAPSULE_PAYLOAD_TYPE, parseManifest, type Manifest } from './manifest.js';
import type { CapsuleFile } from './capsule-file.js';

export type ManifestTemplate = Omit<Manifest, 'inputs'> & { inputs: Array<{ path: string; executable?: boolean }> };

export function packCapsule(template: ManifestTemplate, files: ReadonlyMap<string, Uint8Array>, keys: readonly PrivateKey[]): CapsuleFile {
  const blobs: Record<string, string> = {};
  const inputs = template.inputs.map(({ path, executable }) => {
    const data = files.get(path);
    if (!data) throw new Error(`no bytes given for input ${path}`);
    const sha256 = sha256Hex(data);
    blobs[`sha256:${sha256}`] = toBase64(data);
    return executable ? { path, sha256, size: data.length, executable } : { path, sha256, size: data.length };
  });
  const manifest = { ...template, inputs };
  const payload = Buffer.from(JSON.stringify(manifest, null, 2), 'utf8');
  parseManifest(payload); // refuse to sign what a runner would refuse to run
  return { mediaType: CAPSULE_FILE_MEDIA_TYPE, envelope: signEnvelope(CAPSULE_PAYLOAD_TYPE, payload, keys), blobs };
}
