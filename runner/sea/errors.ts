import { CodedError } from '../core/errors.js';

/**
 * Reasons the single binary refuses to start or to load its SQLite addon. `SEA_*` concern the embedded
 * addon and its cache folder; `RUNTIME_*` concern the environment the binary was started in.
 */
export type SeaErrorCode =
  | 'SEA_BUILD_INFO_INVALID'
  | 'SEA_CACHE_DIR_INVALID'
  | 'SEA_CACHE_DIR_INSECURE'
  | 'SEA_ADDON_MISSING'
  | 'SEA_ADDON_PERMISSIONS'
  | 'SEA_ADDON_DIGEST_MISMATCH'
  | 'SEA_ADDON_WRITE_FAILED'
  | 'SEA_ADDON_LOAD_FAILED'
  | 'RUNTIME_NODE_OPTIONS_SET'
  | 'RUNTIME_TLS_VERIFY_DISABLED';

export class SeaError extends CodedError<SeaErrorCode> {}
