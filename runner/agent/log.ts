/** Signing checkpoints of the runner's log and building the proofs bundles carry (I/O over the store). */
import type { PrivateKey } from '../core/ed25519.js';
import { runnerOrigin, signCheckpoint, toVerifierKey } from '../log/checkpoint.js';
import { toBundleLogMember, type BundleLogMember } from '../log/bundle-log.js';
import type { Store, StoredCheckpoint } from '../store/store.js';

export interface LogIdentity {
  runnerId: string;
  key: PrivateKey;
}

export function originOf(identity: LogIdentity): string {
  return runnerOrigin(identity.runnerId, identity.key.keyid);
}

/** The runner's note verifier key, `name+hash+base64(0x01 || key)`, as golang.org/x/mod/sumdb/note reads it. */
export function verifierKeyOf(identity: LogIdentity): string {
  return toVerifierKey(originOf(identity), identity.key.publicKey);
}

/** Signs (and keeps) a checkpoint of the tree as it is now, unless one for this size exists already. */
export function checkpointNow(store: Store, identity: LogIdentity): StoredCheckpoint {
  const size = store.merkle.size();
  const latest = store.latestCheckpoint();
  if (latest && latest.size === size) return latest;
  const origin = originOf(identity);
  const note = signCheckpoint({ origin, size, rootHash: store.merkle.root(size), extensions: [] }, origin, identity.key);
  store.saveCheckpoint(size, note);
  return store.latestCheckpoint()!;
}

/** The bundle's log member for leaf `index`, proved against a fresh checkpoint that covers it. */
export function bundleLogFor(store: Store, identity: LogIdentity, index: number, leaf: Uint8Array): BundleLogMember {
  const checkpoint = checkpointNow(store, identity);
  return toBundleLogMember(index, leaf, store.merkle.inclusionProof(index, checkpoint.size), checkpoint.note);
}
