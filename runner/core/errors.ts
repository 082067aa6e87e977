/**
 * Coded errors. Every rejection the runner makes carries a stable code (UPPER_SNAKE, prefixed by the module
 * that raises it) and one plain sentence; structured details, typed per code where a module declares them,
 * ride along for the debug log, never for egress. When one error is translated into another, the original
 * stays as `cause`. Modelled on sigstore-js `BaseError<Code>` and go-witness `ErrThresholdNotMet{Threshold, Actual}`.
 */
export class CodedError<Code extends string = string, Details extends object = Readonly<Record<string, unknown>>> extends Error {
  readonly code: Code;
  readonly details: Readonly<Details>;

  constructor(code: Code, message: string, details?: Details, options?: { cause?: unknown }) {
    super(message, options);
    // The subclass's own name (StoreError, CapsuleError, ...), so a stack trace says which module threw.
    this.name = new.target.name;
    this.code = code;
    this.details = details ?? ({} as Details);
  }
}

export function isCodedError(err: unknown): err is CodedError<string, Readonly<Record<string, unknown>>> {
  return err instanceof CodedError;
}

export type CoreErrorCode = 'CORE_BASE64_INVALID' | 'CORE_KEY_INVALID';

export class CoreError extends CodedError<CoreErrorCode> {}
