/**
 * Codes of the runner's side of the coordinator link that are not one HTTP exchange (those are
 * runner/api/errors.ts): the answers the outbox owes, the witness, and the agent's own refusals.
 */
import { CodedError } from '../core/errors.js';

export type OutboxErrorCode =
  /** An outbox row's record is missing or is not one a rejection answers for (the store is inconsistent). */
  | 'OUTBOX_ANSWER_UNAVAILABLE'
  /** The store could not be read or written under the shipper (a full disk): logged, backed off, retried. */
  | 'OUTBOX_STORE_FAILED'
  /** The work feed answered without new work before its wait was up (a feed that repeats itself): backed off. */
  | 'FEED_NO_PROGRESS'
  /** The agent was started without a coordinator URL (coordinator.url, EDGE_RUNNER_COORDINATOR_URL, --coordinator). */
  | 'OUTBOX_NO_COORDINATOR'
  /** None of the cosignature lines the coordinator returned verifies with a witness key of the trust document. */
  | 'WITNESS_COSIGNATURE_UNVERIFIED'
  /** The witness claims to hold a size beyond the runner's own log: a fork or a rollback, never retried blindly. */
  | 'WITNESS_SIZE_AHEAD'
  /** The status report is not numbers, enums and the runner's own identity (DESIGN.md rule 3). */
  | 'EGRESS_STATUS';

export class OutboxError extends CodedError<OutboxErrorCode> {}
