import { CodedError } from '../core/errors.js';

export type StateErrorCode =
  | 'STATE_EXISTS'
  | 'STATE_MISSING'
  | 'STATE_CORRUPT'
  | 'STATE_INIT_INVALID'
  | 'STATE_KEY_PERMISSIONS'
  | 'STATE_KEY_UNREADABLE'
  | 'STATE_TRUST_INVALID'
  /** The state folder, a folder above it or an entry in it can be changed by someone other than the runner or root. */
  | 'STATE_PERMISSIONS'
  /** trust.dsse.json is not the document whose digest runner.json pins. */
  | 'STATE_TRUST_MISMATCH'
  /** runner.json pins no trust document (a state folder made before the pin existed). */
  | 'STATE_TRUST_UNPINNED'
  /** A file the runner writes could not be written whole (the temporary file is removed). */
  | 'STATE_WRITE_FAILED'
  /** The same, because the file system is full (ENOSPC, EDQUOT). */
  | 'STATE_DISK_FULL';

export class StateError extends CodedError<StateErrorCode> {}
