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
  const { size, note, kept } = checkpointOf(store, identity);
  if (kept) return store.latestCheckpoint()!;
  store.saveCheckpoint(size, note);
  return store.latestCheckpoint()!;
}

/** The checkpoint of the tree as it is now: the kept one for this size, or one signed now and not yet kept. */
export function checkpointOf(store: Store, identity: LogIdentity): { size: number; note: string; kept: boolean } {
  const size = store.merkle.size();
  const latest = store.latestCheckpoint();
  if (latest && latest.size === size) return { size, note: latest.note, kept: true };
  const origin = originOf(identity);
  return { size, note: signCheckpoint({ origin, size, rootHash: store.merkle.root(size), extensions: [] }, origin, identity.key), kept: false };
}

/**
 * The bundle's log member for leaf `index` and the checkpoint it is proved under, signed for the log as it
 * is now and not yet kept: Store.recordEvidence keeps it in the evidence's transaction, after the outbox row.
 */
export function sealedLogFor(
  store: Store,
  identity: LogIdentity,
  index: number,
  leaf: Uint8Array,
): { log: BundleLogMember; checkpoint: { size: number; note: string } } {
  const { size, note } = checkpointOf(store, identity);
  return { log: toBundleLogMember(index, leaf, store.merkle.inclusionProof(index, size), note), checkpoint: { size, note } };
}

/** The bundle's log member for leaf `index`, proved against a fresh checkpoint that covers it. */
export function bundleLogFor(store: Store, identity: LogIdentity, index: number, leaf: Uint8Array): BundleLogMember {
  const checkpoint = checkpointNow(store, identity);
  return toBundleLogMember(index, leaf, store.merkle.inclusionProof(index, checkpoint.size), checkpoint.note);
}
