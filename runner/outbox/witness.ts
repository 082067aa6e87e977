/**
 * The runner's side of the coordinator's witness (C2SP tlog-witness v1.0.0 add-checkpoint, cosignature/v1):
 * after shipping, the latest checkpoint goes to the coordinator with a consistency proof (RFC 9162 §2.1.4)
 * from the size it last cosigned; the cosignatures that come back are verified with the trust document's
 * witness keys before they are kept. A 409 says which size the witness holds (text/x.tlog.size): the proof
 * is made again from that size, once.
 */
import type { CoordinatorClient } from '../api/client.js';
import { checkpointNow, type LogIdentity } from '../agent/log.js';
import type { Logger } from '../agent/logger.js';
import { formatAddCheckpoint, verifyCosignatures, witnessKeysOf, type WitnessKey } from '../protocol/witness.js';
import type { Store } from '../store/store.js';
import { isCodedError } from '../core/errors.js';

/** The witnesses of a trust document are the protocol's (runner/protocol/witness.ts); re-exported for the agent. */
export { witnessKeysOf, type WitnessKey };

export type WitnessOutcome =
  | { kind: 'cosigned'; size: number; witnesses: string[] }
  /** The latest checkpoint is cosigned already (or the trust document names no witness). */
  | { kind: 'current'; size: number }
  | { kind: 'retry'; code: string; retryAfterMs?: number }
  | { kind: 'refused'; code: string; status?: number };

export interface WitnessSubmitterOptions {
  store: Store;
  client: Pick<CoordinatorClient, 'addCheckpoint'>;
  identity: LogIdentity;
  witnesses: readonly WitnessKey[];
  logger: Logger;
}

export class WitnessSubmitter {
  constructor(private readonly options: WitnessSubmitterOptions) {}

  /** The size the coordinator last cosigned, as far as this runner knows: the largest any witness key cosigned. */
  witnessedSize(): number {
    return Math.max(0, ...this.options.witnesses.map((w) => this.options.store.witnessedSize(w.name)));
  }

  async submit(signal?: AbortSignal): Promise<WitnessOutcome> {
    const { store, client, identity, witnesses, logger } = this.options;
    if (witnesses.length === 0) return { kind: 'current', size: store.merkle.size() };
    const checkpoint = checkpointNow(store, identity);
    let oldSize = this.witnessedSize();
    if (oldSize === checkpoint.size) return { kind: 'current', size: checkpoint.size };
    for (let attempt = 0; attempt < 2; attempt++) {
      if (oldSize > checkpoint.size) {
        logger.error({ code: 'WITNESS_SIZE_AHEAD', witnessSize: oldSize, logSize: checkpoint.size }, 'the witness holds a size beyond this log');
        return { kind: 'refused', code: 'WITNESS_SIZE_AHEAD' };
      }
      const proof = oldSize === 0 || oldSize === checkpoint.size ? [] : store.merkle.consistencyProof(oldSize, checkpoint.size);
      const answer = await client.addCheckpoint(formatAddCheckpoint(oldSize, proof, checkpoint.note), signal);
      if (answer.kind === 'retry')
        return { kind: 'retry', code: answer.code, ...(answer.retryAfterMs !== undefined ? { retryAfterMs: answer.retryAfterMs } : {}) };
      if (answer.kind === 'permanent') {
        logger.error({ code: answer.code, status: answer.status, size: checkpoint.size }, 'the witness refused the checkpoint');
        return { kind: 'refused', code: answer.code, status: answer.status };
      }
      if (answer.value.kind === 'conflict') {
        logger.info({ heldSize: answer.value.size, assumedSize: oldSize }, 'the witness holds another size; proving from it');
        if (answer.value.size === oldSize) break; // the same answer twice: no progress to be had by asking again
        oldSize = answer.value.size;
        continue;
      }
      let verified: { name: string; timestamp: number; line: string }[];
      try {
        verified = verifyCosignatures(checkpoint.note, answer.value.lines, witnesses);
      } catch (err) {
        const code = isCodedError(err) ? err.code : 'WITNESS_COSIGNATURE_UNVERIFIED';
        logger.error({ code }, 'the cosignatures returned do not verify');
        return { kind: 'retry', code };
      }
      if (verified.length === 0) {
        logger.error({ code: 'WITNESS_COSIGNATURE_UNVERIFIED' }, 'no cosignature returned verifies with a witness key');
        return { kind: 'retry', code: 'WITNESS_COSIGNATURE_UNVERIFIED' };
      }
      for (const { name, timestamp, line } of verified) store.saveCosignature({ size: checkpoint.size, witness: name, timestamp, line });
      logger.info({ size: checkpoint.size, witnesses: verified.map((v) => v.name).join(',') }, 'checkpoint cosigned');
      return { kind: 'cosigned', size: checkpoint.size, witnesses: verified.map((v) => v.name) };
    }
    return { kind: 'retry', code: 'WITNESS_CONFLICT' };
  }
}
