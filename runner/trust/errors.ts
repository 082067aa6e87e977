import { CodedError } from '../core/errors.js';

export type TrustErrorCode =
  | 'TRUST_TOO_LARGE'
  | 'TRUST_UNPARSEABLE'
  | 'TRUST_SCHEMA'
  | 'TRUST_KEY_INVALID'
  | 'TRUST_KEYID_MISMATCH'
  | 'TRUST_SIGNATURE'
  | 'TRUST_EXPIRED'
  | 'TRUST_ROLLBACK'
  | 'TRUST_VERSION_SKIP';

export class TrustError extends CodedError<TrustErrorCode> {}
