import { CodedError } from '../core/errors.js';

/** Codes of the air-gapped spool (runner/spool, runner/agent/spool-agent.ts). */
export type SpoolErrorCode =
  /** The spool folder (or its in/ or out/) is not a folder the runner can use: missing, a symlink, or not writable. */
  | 'SPOOL_DIR_INVALID'
  /** A spool file could not be written durably (temporary file, fsync, rename or the folder's fsync failed). */
  | 'SPOOL_WRITE_FAILED'
  /** A file already in out/ under a content address holds other bytes than that address names. */
  | 'SPOOL_OUT_CONFLICT'
  /** A cosigned checkpoint in in/ is malformed, not of this runner's log as it is, or carries no valid witness cosignature. */
  | 'SPOOL_COSIGNED_INVALID'
  /** Both a spool folder and a coordinator are configured: the agent takes work from one place only. */
  | 'SPOOL_WITH_COORDINATOR';

export class SpoolError extends CodedError<SpoolErrorCode> {}
