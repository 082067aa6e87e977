import { CodedError } from '../core/errors.js';

export type EvidenceErrorCode =
  | 'EGRESS_SCHEMA'
  | 'EGRESS_PROVENANCE'
  | 'BUNDLE_TOO_LARGE'
  | 'BUNDLE_UNPARSEABLE'
  | 'BUNDLE_EVIDENCE_SIGNATURE'
  | 'BUNDLE_UNKNOWN_RUNNER'
  | 'BUNDLE_CAPSULE_SIGNATURE'
  | 'BUNDLE_STATEMENT_SCHEMA'
  | 'BUNDLE_CAPSULE_SCHEMA'
  | 'BUNDLE_CAPSULE_DIGEST'
  | 'BUNDLE_INCONSISTENT'
  | 'BUNDLE_LOG_MISSING';

export class EvidenceError extends CodedError<EvidenceErrorCode> {}
