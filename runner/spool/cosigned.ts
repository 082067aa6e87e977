/**
 * The witness's answer carried back by hand: a file DIR/in/SIZE-ROOT16.cosigned (the coordinator's
 * `export` writes it) is the runner's checkpoint as the witness holds it, with the witness's cosignature
 * line(s) appended. It is taken as the online agent takes a 200 from add-checkpoint: the tree must be this
 * log's own (its root equal to the log's root at that size), and only cosignature lines that verify with the
 * trust document's witness keys are kept (Store.saveCosignature, once per size and witness).
 */
import { isCodedError } from '../core/errors.js';
import { parseCheckpoint } from '../log/checkpoint.js';
import { verifyCosignatures, type WitnessKey } from '../protocol/witness.js';
import { CAPS } from '../protocol/wire.js';
import type { Store } from '../store/store.js';
import { SpoolError } from './errors.js';

/** Keeps the verified cosignatures of one cosigned checkpoint; returns its size and the witnesses. Throws SPOOL_COSIGNED_INVALID. */
export function acceptCosigned(store: Store, witnesses: readonly WitnessKey[], origin: string, bytes: Buffer): { size: number; witnesses: string[] } {
  const invalid = (why: string, cause?: unknown) =>
    new SpoolError('SPOOL_COSIGNED_INVALID', `The cosigned checkpoint is not taken: ${why}.`, {}, cause === undefined ? undefined : { cause });
  if (bytes.length > CAPS.addCheckpointBytes + CAPS.cosignatureResponseBytes) throw invalid('it is over its cap');
  const text = bytes.toString('utf8');
  const blank = text.indexOf('\n\n');
  if (blank < 0 || !text.endsWith('\n')) throw invalid('it is not a signed note');
  const body = text.slice(0, blank + 1);
  let checkpoint;
  try {
    checkpoint = parseCheckpoint(body);
  } catch (err) {
    throw invalid('its checkpoint does not parse', err);
  }
  if (checkpoint.origin !== origin) throw invalid('it is of another log');
  if (checkpoint.size > store.merkle.size() || !store.merkle.root(checkpoint.size).equals(checkpoint.rootHash)) {
    throw invalid('it is not a tree of this log');
  }
  // The runner's own signature line is not a cosignature; every other line must be one.
  const lines = text
    .slice(blank + 2)
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith(`— ${origin} `));
  if (lines.length === 0) throw invalid('it carries no cosignature');
  let verified;
  try {
    verified = verifyCosignatures(body, `${lines.join('\n')}\n`, witnesses);
  } catch (err) {
    throw invalid(`a cosignature line is malformed (${isCodedError(err) ? err.code : 'invalid'})`, err);
  }
  if (verified.length === 0) throw invalid('no cosignature verifies with a witness key of the trust document');
  for (const { name, timestamp, line } of verified) store.saveCosignature({ size: checkpoint.size, witness: name, timestamp, line });
  return { size: checkpoint.size, witnesses: verified.map((v) => v.name) };
}
