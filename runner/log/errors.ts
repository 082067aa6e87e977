import { CodedError } from '../core/errors.js';

/**
 * Reason codes of the log module. Each has one plain sentence (LOG_ERROR_SENTENCES) that the CLI may print;
 * the thrown error's `details` say what was expected and what was found, for the debug log.
 */
export type LogErrorCode =
  | 'LOG_INDEX_OUT_OF_RANGE'
  | 'LOG_SIZE_OUT_OF_RANGE'
  | 'LOG_HASH_INVALID'
  | 'LOG_PROOF_INVALID'
  | 'LOG_CONSISTENCY_INVALID'
  | 'LOG_NOTE_TOO_LARGE'
  | 'LOG_NOTE_MALFORMED'
  | 'LOG_CHECKPOINT_MALFORMED'
  | 'LOG_CHECKPOINT_UNKNOWN_SIGNER'
  | 'LOG_CHECKPOINT_BAD_SIGNATURE'
  | 'LOG_CHECKPOINT_ORIGIN_MISMATCH'
  | 'LOG_NAME_INVALID'
  | 'LOG_VERIFIER_KEY_INVALID'
  | 'LOG_STORE_INCONSISTENT'
  | 'LOG_APPEND_FAILED'
  | 'LOG_EXPORT_INVALID'
  | 'LOG_EXPORT_LINE_TOO_LONG'
  | 'LOG_EXPORT_UNKNOWN_RUNNER'
  | 'LOG_EXPORT_TRUNCATED'
  | 'LOG_EXPORT_UNCHECKPOINTED'
  | 'LOG_LEAF_INVALID'
  | 'LOG_REPLAY_ACCEPTED'
  | 'LOG_ROOT_MISMATCH'
  | 'LOG_CHECKPOINT_BEYOND_LEAVES'
  | 'LOG_CHECKPOINT_MISPLACED'
  | 'LOG_EARLIER_CHECKPOINT_MISMATCH'
  | 'LOG_EARLIER_CHECKPOINT_BEYOND_EXPORT'
  | 'LOG_COSIGNATURE_INVALID';

export const LOG_ERROR_SENTENCES: Readonly<Record<LogErrorCode, string>> = {
  LOG_INDEX_OUT_OF_RANGE: 'The leaf index is not inside the tree.',
  LOG_COSIGNATURE_INVALID: 'A cosignature by a witness of the trust document does not verify for the checkpoint it is on.',
  LOG_SIZE_OUT_OF_RANGE: 'The tree size is not valid for this request.',
  LOG_HASH_INVALID: 'A hash does not have the expected length.',
  LOG_PROOF_INVALID: 'The inclusion proof does not lead to the checkpoint root.',
  LOG_CONSISTENCY_INVALID: 'The consistency proof does not link the two tree roots.',
  LOG_NOTE_TOO_LARGE: 'The signed note is larger than the allowed size.',
  LOG_NOTE_MALFORMED: 'The signed note is not well formed.',
  LOG_CHECKPOINT_MALFORMED: 'The checkpoint text is not well formed.',
  LOG_CHECKPOINT_UNKNOWN_SIGNER: 'The checkpoint carries no signature from a known log key.',
  LOG_CHECKPOINT_BAD_SIGNATURE: 'A checkpoint signature from a known log key does not verify.',
  LOG_CHECKPOINT_ORIGIN_MISMATCH: 'The checkpoint names a different log than expected.',
  LOG_NAME_INVALID: 'The note key name is empty or contains spaces or a plus sign.',
  LOG_VERIFIER_KEY_INVALID: 'The note verifier key is not well formed.',
  LOG_STORE_INCONSISTENT: 'The log store is missing or holds an unexpected tree node.',
  LOG_APPEND_FAILED: 'The record could not be appended to the log.',
  LOG_EXPORT_INVALID: 'The log export is not well formed.',
  LOG_EXPORT_LINE_TOO_LONG: 'A line of the log export is longer than the allowed size.',
  LOG_EXPORT_UNKNOWN_RUNNER: 'The log export names a runner key that the trust document does not enrol under that name.',
  LOG_EXPORT_TRUNCATED: 'The log export ends before all the leaves its header announces.',
  LOG_EXPORT_UNCHECKPOINTED: 'The last leaves of the log export are not covered by a signed checkpoint.',
  LOG_LEAF_INVALID: 'A leaf of the log export is not a canonical record at its index.',
  LOG_REPLAY_ACCEPTED: 'The log accepts the same capsule id and nonce twice: a capsule ran again.',
  LOG_ROOT_MISMATCH: 'A signed checkpoint does not match the tree recomputed from the leaves.',
  LOG_CHECKPOINT_BEYOND_LEAVES: 'A checkpoint covers more leaves than the export holds at that point.',
  LOG_CHECKPOINT_MISPLACED: 'A checkpoint is not right after the leaf that completes its tree, or sizes do not increase.',
  LOG_EARLIER_CHECKPOINT_MISMATCH: 'The log is not an extension of the earlier checkpoint: the tree at that size differs.',
  LOG_EARLIER_CHECKPOINT_BEYOND_EXPORT: 'The earlier checkpoint covers more leaves than the log now holds.',
};

export class LogError extends CodedError<LogErrorCode> {
  constructor(code: LogErrorCode, message?: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(code, message ?? LOG_ERROR_SENTENCES[code], details, options);
    this.name = 'LogError';
  }
}
