/**
 * Coded errors. Every rejection the runner makes carries a stable code (UPPER_SNAKE, prefixed by the module
 * that raises it) and one plain sentence; structured details ride along for the debug log, never for egress.
 * Modelled on sigstore-js `BaseError<Code>` and go-witness `ErrThresholdNotMet{Threshold, Actual}`.
 */
export class CodedError<Code extends string = string> extends Error {
  readonly code: Code;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: Code, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CodedError';
    this.code = code;
    this.details = details;
  }
}

export function isCodedError(err: unknown): err is CodedError {
  return err instanceof CodedError;
}

export type CoreErrorCode = 'CORE_BASE64_INVALID' | 'CORE_KEY_INVALID';

export class CoreError extends CodedError<CoreErrorCode> {}
