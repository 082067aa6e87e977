import { CodedError } from '../core/errors.js';

/** Capsule rejection codes, in the order acceptance checks them (DESIGN.md, Capsule file). */
export type CapsuleErrorCode =
  | 'CAPSULE_TOO_LARGE'
  | 'CAPSULE_UNPARSEABLE'
  | 'CAPSULE_PAYLOAD_TYPE'
  | 'CAPSULE_BASE64_INVALID'
  | 'CAPSULE_SIGNATURE_INVALID'
  | 'CAPSULE_SIGNATURE_DUPLICATE'
  | 'CAPSULE_KEYID_MISMATCH'
  | 'CAPSULE_SIGNER_ROLE'
  | 'CAPSULE_SIGNATURE_THRESHOLD'
  | 'CAPSULE_SCHEMA'
  | 'CAPSULE_PATH_ESCAPE'
  | 'CAPSULE_NOT_YET_VALID'
  | 'CAPSULE_EXPIRED'
  | 'CAPSULE_TARGET'
  | 'CAPSULE_REPLAY'
  | 'CAPSULE_INPUT_MISSING'
  | 'CAPSULE_INPUT_DIGEST'
  | 'CAPSULE_BLOB_UNREFERENCED'
  | 'CAPSULE_POLICY'
  | 'CAPSULE_ISOLATION_UNAVAILABLE'
  /**
   * The capsule `needs` a resource the runner's configuration does not grant, or whose grant cannot be bound
   * as configured (missing on the host, not a socket, overlapping the state folder); nothing runs.
   */
  | 'CAPSULE_RESOURCE_UNGRANTED'
  /** A recurring capsule's `schedule` names no valid cron expression or time zone, or no slot before it expires. */
  | 'CAPSULE_SCHEDULE_INVALID'
  /** A schedule of a capsule with this id, issued later, is active here: an older capsule does not replace it. */
  | 'CAPSULE_SUPERSEDED'
  /** A remediate capsule names a change target the runner's configuration does not declare. */
  | 'CAPSULE_TARGET_UNDECLARED';

export class CapsuleError extends CodedError<CapsuleErrorCode> {}
