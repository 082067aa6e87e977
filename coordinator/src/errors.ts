/**
 * The coordinator's own reason codes, for what the protocol module does not decide: routing, operator
 * credentials, feed queries and the inbox. Each answer on the wire is `{code, message}` with an HTTP status;
 * codes of the pure modules (PROTOCOL_*, WITNESS_*, BUNDLE_*, CAPSULE_*, REJECTION_*) pass through unchanged.
 */
import { CodedError } from '../../runner/core/errors.js';

export type CoordinatorErrorCode =
  | 'PROTOCOL_NOT_FOUND'
  | 'PROTOCOL_METHOD_NOT_ALLOWED'
  | 'PROTOCOL_BODY_TOO_LARGE'
  | 'PROTOCOL_SHUTTING_DOWN'
  | 'PROTOCOL_BUSY'
  | 'PROTOCOL_MISDIRECTED'
  | 'FEED_BAD_QUERY'
  | 'FEED_CAPSULE_NOT_FOUND'
  | 'FEED_CURSOR_AHEAD'
  /** The work feed's `approvals` cursor is past every approval stored here (the database is an older copy). */
  | 'FEED_APPROVALS_CURSOR_AHEAD'
  /** GET /v1/trust/{version}: no kept trust document has that version. */
  | 'FEED_TRUST_NOT_FOUND'
  | 'INBOX_DIGEST_MISMATCH'
  | 'INBOX_RUNNER_MISMATCH'
  | 'INBOX_NOT_FOUND'
  | 'INBOX_RECORD_CONFLICT'
  // Approvals (coordinator/src/approvals.ts): the approval verified, but it does not answer a proposal held here.
  /** The approval's `proposal` is not the evidence digest of any bundle this coordinator holds. */
  | 'INBOX_PROPOSAL_UNKNOWN'
  /** The bundle the approval names is not a remediation proposal (phase `proposed`). */
  | 'INBOX_NOT_A_PROPOSAL'
  /** The approval's change digest, target, capsule or runner is not the proposal's. */
  | 'INBOX_PROPOSAL_MISMATCH'
  /** The proposal already has as many approvals as the coordinator keeps for one (64). */
  | 'INBOX_APPROVALS_FULL'
  /** The approver already has as many approvals of the proposal here as one person may (4). */
  | 'INBOX_APPROVER_FULL'
  /** The runner already sent the change's final bundle (applied, rolled back, refused): no approval counts now. */
  | 'INBOX_CHANGE_DECIDED'
  | 'OPERATOR_UNAUTHORIZED'
  | 'OPERATOR_BAD_QUERY'
  | 'COORDINATOR_CONFIG'
  | 'COORDINATOR_INTERNAL'
  | 'COORDINATOR_TRUST_EXPIRED'
  | 'COORDINATOR_STORAGE_FULL'
  | 'COORDINATOR_BUSY'
  // The spool (coordinator/src/spool.ts): the folder given to import or export, and per-file refusals of an import.
  /** The folder to import from or export to is not a folder. */
  | 'SPOOL_DIR_INVALID'
  /** A spool file is a symlink, a folder or a device, or cannot be read: never read as a document. */
  | 'SPOOL_FILE_NOT_REGULAR'
  /** A spool file is over the cap of its kind (the link's body caps). */
  | 'SPOOL_FILE_TOO_LARGE'
  /** A bundle or rejection file is not the bytes whose SHA-256 its name gives (altered, or cut short on the way). */
  | 'SPOOL_DIGEST_MISMATCH'
  /** A checkpoint file is not of the tree size and root its name gives. */
  | 'SPOOL_NAME_MISMATCH'
  /** A file that is not part of the spool layout (passed over, reported). */
  | 'SPOOL_FILE_FOREIGN';

/** An error that is also an HTTP answer: a status, a stable code and one sentence. */
export class HttpError extends CodedError<string> {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(code, message);
    this.status = status;
    this.headers = headers;
  }
}

/** A coordinator setup problem (state folder, config, keys): the CLI prints it and exits non-zero. */
export class CoordinatorError extends CodedError<CoordinatorErrorCode> {}
