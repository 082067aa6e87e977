import { CodedError } from '../core/errors.js';

export type RunErrorCode =
  | 'RUN_WORKSPACE_FAILED'
  | 'RUN_INTERNAL'
  /** The state folder's file system has less free space than the configured reserve: no run starts. */
  | 'RUN_DISK_RESERVE'
  /** The file system filled during a run: the run ended as aborted (recorded when the log had room). */
  | 'RUN_DISK_FULL'
  | 'RUN_AGENT_STOPPED';

export class RunError extends CodedError<RunErrorCode> {}
