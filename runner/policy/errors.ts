import { CodedError } from '../core/errors.js';

/**
 * Why an approval does not count (runner/policy/approval.ts verifies one, count.ts counts them for a
 * change). Each is one plain sentence with the code; the runner records the code (`approval.refused`).
 */
export type ApprovalErrorCode =
  /** The approval file is larger than APPROVAL_MAX_BYTES. */
  | 'APPROVAL_TOO_LARGE'
  /** Not a DSSE envelope in JSON (a member twice, an unknown member, bad base64). */
  | 'APPROVAL_UNPARSEABLE'
  /** Not signed by exactly one key holding the approver role in the trust document. */
  | 'APPROVAL_SIGNATURE'
  /** The signed statement is not an approval statement (closed schema: subject, predicate type, members). */
  | 'APPROVAL_SCHEMA'
  /** The approver named in the statement is not the trust document's name of the key that signed it. */
  | 'APPROVAL_NAME_MISMATCH'
  /** Bound to another change digest (another target, pre-state, change, policy or capsule). */
  | 'APPROVAL_WRONG_CHANGE'
  /** Bound to another proposal bundle than the one this change was proposed in. */
  | 'APPROVAL_WRONG_PROPOSAL'
  /** Signed after the decision time (beyond the allowed clock skew). */
  | 'APPROVAL_NOT_YET_VALID'
  /** Its notAfter is at or before the decision time. */
  | 'APPROVAL_EXPIRED'
  /** Valid for longer than the policy's approvalMaxSeconds. */
  | 'APPROVAL_TOO_LONG'
  /** The same person (key name) already counts for this change, or the same approval was given twice. */
  | 'APPROVAL_DUPLICATE_PERSON'
  /** The approver is a person who signed the capsule: the proposer cannot authorize their own change. */
  | 'APPROVAL_SELF'
  /** The approver belongs to none of the groups the change's tier requires approvals from. */
  | 'APPROVAL_GROUP'
  /** The change requires change control and the approval carries no change ticket. */
  | 'APPROVAL_CHANGE_TICKET'
  // `edge-runner approve` refusing to sign:
  /** The bundle offered for approval is not a proposal (a remediation in phase `proposed`). */
  | 'APPROVAL_NOT_PROPOSAL'
  /** The proposal's staged validation did not pass: only a reject can be signed for it. */
  | 'APPROVAL_STAGED_FAILED'
  /** The runner: the change the approval names was already decided (applied, rolled back, refused, or under way). */
  | 'APPROVAL_CHANGE_DECIDED';

export class ApprovalError extends CodedError<ApprovalErrorCode> {}
