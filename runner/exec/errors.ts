import { CodedError } from '../core/errors.js';

export interface ExecErrorDetails {
  /** A path of the signed manifest would leave the run's workspace (through `..` or a symlink). */
  EXEC_PATH_ESCAPE: { path: string };
  /** The capsule carries no bytes for an input its manifest lists. */
  EXEC_INPUT_MISSING: { path: string };
  /** A run's workspace could not be removed whole (what is left stays for the next open to retry). */
  EXEC_WORKSPACE_NOT_REMOVED: { path: string; errno?: string };
  /** A granted resource's host path is no longer what was checked when the run pinned it (exec/resources.ts). */
  EXEC_RESOURCE_CHANGED: { name: string };
}

export type ExecErrorCode = keyof ExecErrorDetails;

/** Errors of running steps (workspace, inputs, collect); the sandbox has its own (sandbox-errors.ts). */
export class ExecError<C extends ExecErrorCode = ExecErrorCode> extends CodedError<C, ExecErrorDetails[C]> {}
