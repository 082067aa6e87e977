import { CodedError } from '../core/errors.js';

/**
 * Codes the step sandbox raises. The capsule-level rejection for "this capsule requires isolation the host
 * cannot give" is CAPSULE_ISOLATION_UNAVAILABLE (capsule/errors.ts); EXEC_ISOLATION_UNAVAILABLE is the
 * exec-level fact it is derived from.
 */
export type SandboxErrorCode =
  /** Isolation was required, and the probe found that bwrap cannot run here. details: { reason } */
  | 'EXEC_ISOLATION_UNAVAILABLE'
  /** A helper program (bwrap, prlimit, setpriv) is not installed. details: { tool } */
  | 'EXEC_SANDBOX_TOOL_MISSING'
  /** The launch request is malformed: empty argv, relative paths, limits that are not positive integers. */
  | 'EXEC_SANDBOX_REQUEST_INVALID'
  /** The step env names a dynamic-loader variable that would act on the wrappers outside the sandbox. details: { name } */
  | 'EXEC_SANDBOX_ENV_UNSAFE'
  /** A step's memory cgroup could not be made, joined or removed; the step does not run unbounded. details: { code } */
  | 'EXEC_SANDBOX_CGROUP';

export class SandboxError extends CodedError<SandboxErrorCode> {}
