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
  | 'TRUST_VERSION_SKIP'
  /** A document offered as one version (GET /v1/trust/{version}) carries a higher one. */
  | 'TRUST_FAST_FORWARD'
  /** A role's threshold is above the number of keys (approvers: distinct names) that hold it. */
  | 'TRUST_THRESHOLD_UNSATISFIABLE'
  /** A runner key also holds another role. */
  | 'TRUST_ROLE_CONFLICT'
  /** A runner's name is also the name of another key. */
  | 'TRUST_NAME_DUPLICATE'
  /** The remediation policy names an undeclared surface or group, or asks more approvals than can be given. */
  | 'TRUST_POLICY_INVALID';

export class TrustError extends CodedError<TrustErrorCode> {}
