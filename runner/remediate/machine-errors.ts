/**
 * The remediation state machine's codes (runner/remediate/machine.ts and its parts): why a proposal was
 * refused before its nonce burnt, why a proposed change was refused for good, why an applied one was rolled
 * back. The change mechanics' own codes (a hunk that does not apply, a path escaping the target, ...) are
 * ChangeError's (runner/remediate/errors.ts). Each has one plain sentence where it is thrown.
 */
import { CodedError } from '../core/errors.js';

export type RemediationErrorCode =
  /** A cited reproduction is not the evidence of a run of this runner's own log. */
  | 'CHANGE_REPRODUCTION_UNKNOWN'
  /** The real target's digest is not the proposal's pre-state: the change was never applied. */
  | 'CHANGE_STALE'
  /** The pinned trust policy is not the one the tier was derived under: approvals of the old one do not count. */
  | 'CHANGE_POLICY_CHANGED'
  /** A person who could have approved the change rejected it. */
  | 'CHANGE_VETOED'
  /** The staged validation did not pass: there is nothing to approve. */
  | 'CHANGE_VALIDATION_FAILED'
  /** The kept capsule file is gone, altered, or no longer verifies under the pinned trust. */
  | 'CHANGE_CAPSULE_UNAVAILABLE'
  /** After every file was written, the target's digest is not the proposal's post-state. */
  | 'CHANGE_APPLY_MISMATCH'
  /** The runner stopped (killed, or the agent stopped) while the change was being applied or verified. */
  | 'CHANGE_INTERRUPTED'
  /** The post-apply validation (the capsule's steps against the applied target) did not pass. */
  | 'CHANGE_VERIFY_FAILED'
  /** A cited reproduction, run again after the apply, did not pass. */
  | 'CHANGE_REPRODUCTION_FAILED'
  /** The operator's health check did not exit 0 in time. */
  | 'CHANGE_HEALTH_CHECK_FAILED'
  /** Another change holds the target (being applied, verified or rolled back). */
  | 'CHANGE_TARGET_BUSY'
  /** The change touches more files (or longer paths) than a proposal's evidence can carry (FOOTPRINT_MAX_FILES, FOOTPRINT_MAX_PATH_CHARS). */
  | 'CHANGE_FOOTPRINT_TOO_LARGE'
  /** No change with this digest was proposed on this runner. */
  | 'CHANGE_UNKNOWN';

export class RemediationError extends CodedError<RemediationErrorCode> {}
