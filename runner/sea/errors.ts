import { CodedError } from '../core/errors.js';

/**
 * Reasons the single binary refuses to start. `SEA_*` concern what the binary carries; `RUNTIME_*` the
 * environment it was started in.
 */
export type SeaErrorCode = 'SEA_BUILD_INFO_INVALID' | 'RUNTIME_TLS_VERIFY_DISABLED';

export class SeaError extends CodedError<SeaErrorCode> {}
