import { CodedError } from '../../runner/core/errors.js';

/**
 * Runs `fn` and returns the code of the CodedError it throws, or undefined when it throws nothing. Any
 * other exception is rethrown, so a crash is never mistaken for a clean rejection.
 */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (err instanceof CodedError) return err.code;
    throw err;
  }
}
