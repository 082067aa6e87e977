import { CodedError } from '../core/errors.js';

export type StateErrorCode =
  | 'STATE_EXISTS'
  | 'STATE_MISSING'
  | 'STATE_CORRUPT'
  | 'STATE_INIT_INVALID'
  | 'STATE_KEY_PERMISSIONS'
  | 'STATE_KEY_UNREADABLE'
  | 'STATE_TRUST_INVALID';

export class StateError extends CodedError<StateErrorCode> {}
