import { CodedError } from '../core/errors.js';

export type StoreErrorCode = 'STORE_OPEN_FAILED' | 'STORE_WRITE_FAILED' | 'STORE_REPLAY' | 'STORE_SCHEMA_VERSION';

export class StoreError extends CodedError<StoreErrorCode> {}
