/**
 * Trust rotation fixtures: the next version of a trust document with keys taken out and put in (a root key
 * that leaked, a capsule signer that left), and what a state folder's log says about trust updates.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PrivateKey } from '../../runner/core/ed25519.js';
import { parseRecordLeaf, type RecordBodies } from '../../runner/log/record.js';
import { Store } from '../../runner/store/store.js';
import type { TrustDocumentBody } from '../../runner/trust/trust.js';
import type { NamedKey } from './world.js';

/** `body` as version `version` (default: one more), without the keys in `remove`, with those in `add`. */
export function rotatedBody(
  body: TrustDocumentBody,
  change: { remove?: PrivateKey[]; add?: NamedKey[]; version?: number; expires?: string },
): TrustDocumentBody {
  const keys = { ...body.keys };
  for (const key of change.remove ?? []) delete keys[key.keyid];
  for (const { name, key, roles } of change.add ?? []) keys[key.keyid] = { publicKey: key.publicKey.toPem(), name, roles };
  return { ...body, version: change.version ?? body.version + 1, expires: change.expires ?? body.expires, keys };
}

export type TrustRecord =
  { kind: 'trust.updated'; body: RecordBodies['trust.updated'] } | { kind: 'trust.refused'; body: RecordBodies['trust.refused'] };

/** The trust.updated and trust.refused records of a state folder's log, in order (the database opened and closed). */
export function trustRecords(stateDir: string): TrustRecord[] {
  const store = Store.open(join(stateDir, 'runner.db'));
  try {
    const out: TrustRecord[] = [];
    for (const record of store.records()) {
      if (record.kind !== 'trust.updated' && record.kind !== 'trust.refused') continue;
      const parsed = parseRecordLeaf(record.leaf, record.seq);
      out.push({ kind: parsed.kind, body: parsed.body } as TrustRecord);
    }
    return out;
  } finally {
    store.close();
  }
}

/** The pin as the state folder holds it: runner.json's trustSha256 and the bytes of trust.dsse.json. */
export function pinOf(stateDir: string): { trustSha256: string; trust: Buffer } {
  const identity = JSON.parse(readFileSync(join(stateDir, 'runner.json'), 'utf8')) as { trustSha256: string };
  return { trustSha256: identity.trustSha256, trust: readFileSync(join(stateDir, 'trust.dsse.json')) };
}
