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
  /** GET /v1/trust/{version}: no kept trust document has that version. */
  | 'FEED_TRUST_NOT_FOUND'
  | 'INBOX_DIGEST_MISMATCH'
  | 'INBOX_RUNNER_MISMATCH'
  | 'INBOX_NOT_FOUND'
  | 'INBOX_RECORD_CONFLICT'
  | 'OPERATOR_UNAUTHORIZED'
  | 'OPERATOR_BAD_QUERY'
  | 'COORDINATOR_CONFIG'
  | 'COORDINATOR_INTERNAL'
  | 'COORDINATOR_TRUST_EXPIRED'
  | 'COORDINATOR_STORAGE_FULL'
  | 'COORDINATOR_BUSY';

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
