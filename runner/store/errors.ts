import { CodedError } from '../core/errors.js';

export interface StoreErrorDetails {
  STORE_OPEN_FAILED: { path: string };
  STORE_WRITE_FAILED: { runId?: string; id?: number };
  STORE_REPLAY: { capsuleId: string };
  STORE_SCHEMA_VERSION: { found: number; known: number };
  STORE_TREE_INCONSISTENT: { level?: number; index?: number; found?: number | string; expected?: number; expectedIndex?: number };
  STORE_TREE_RANGE: { index?: number; size?: number; current?: number };
  STORE_CORRUPT: StoreCorruptDetails;
  STORE_ROLLED_BACK: { path: string; size?: number; headSize?: number };
}

/** What a store check found (the open-time ones are in runner/store/integrity.ts). */
export interface StoreCorruptDetails {
  path?: string;
  /** Which check failed: the open-time ones, or a value read back that is not of its column's type. */
  check: 'quick_check' | 'nonces' | 'value' | 'outbox';
  /** quick_check's first lines. */
  problems?: string[];
  nonces?: number;
  accepted?: number;
  mismatched?: number;
  /** Acceptances in the log that repeat an id + nonce. */
  repeated?: number;
  /** Answers for capsules in the log without their outbox row, and rows without their record. */
  missing?: number;
  orphans?: number;
}

export type StoreErrorCode = keyof StoreErrorDetails;

export class StoreError<C extends StoreErrorCode = StoreErrorCode> extends CodedError<C, StoreErrorDetails[C]> {}
