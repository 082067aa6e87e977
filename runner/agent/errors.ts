import { CodedError } from '../core/errors.js';

export type RunErrorCode = 'RUN_WORKSPACE_FAILED' | 'RUN_INTERNAL';

export class RunError extends CodedError<RunErrorCode> {}
