/**
 * Exit codes, and how an error becomes one line a person can act on. Every message printed here is passed
 * through toPrintable (runner/core/printable.ts): an error may quote a member name, a path or a file name
 * that came from outside, and its control characters must not reach the terminal raw.
 */
import { isCodedError } from '../core/errors.js';
import { toPrintable, toPrintableExcerpt, toPrintableJson } from '../core/printable.js';

/** The most characters of an error's code and sentence printed (the sentence may quote input). */
const MAX_CODE_CHARS = 64;
const MAX_MESSAGE_CHARS = 2000;

export { toPrintable };

export const EXIT = {
  ok: 0,
  /** Verification failed, or the run's verdict is not pass. */
  failed: 1,
  /** Usage or configuration error. */
  usage: 2,
  /** Capsule rejected; nothing executed. */
  rejected: 3,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class UsageError extends Error {}

/** Maps an error to its exit code: capsule rejections 3, verification failures 1, everything else 2. */
export function exitCodeFor(err: unknown, verifying = false): ExitCode {
  if (isCodedError(err)) {
    if (err.code.startsWith('CAPSULE_')) return EXIT.rejected;
    // SEA_*, RUNTIME_*, STATE_*, STORE_*: the host or its configuration, not the input.
    if (verifying && /^(BUNDLE_|EGRESS_|LOG_|TRUST_)/.test(err.code)) return EXIT.failed;
  }
  return EXIT.usage;
}

/**
 * commander's own errors (codes `commander.*`), recognised without importing commander: `status` prints its
 * errors through this file and starts without it (commander loads child_process, a tenth of a start).
 */
function isCommanderError(err: unknown): err is Error {
  return err instanceof Error && err.name === 'CommanderError' && String((err as { code?: unknown }).code).startsWith('commander.');
}

/** The error's code and its sentence, made printable (both for the terminal and for --json). */
export function describeError(err: unknown): { code: string; message: string } {
  const { code, message } = rawDescription(err);
  // Capped too: a sentence that quotes input is read by a person, never megabytes of it.
  return { code: toPrintableExcerpt(code, MAX_CODE_CHARS), message: toPrintableExcerpt(message, MAX_MESSAGE_CHARS) };
}

function rawDescription(err: unknown): { code: string; message: string } {
  if (isCodedError(err)) return { code: err.code, message: err.message };
  if (err instanceof UsageError) return { code: 'USAGE', message: err.message };
  if (isCommanderError(err)) return { code: 'USAGE', message: err.message.replace(/^error: /, '') };
  const errno = err as NodeJS.ErrnoException;
  if (errno && typeof errno.code === 'string' && typeof errno.path === 'string') {
    return { code: `IO_${errno.code}`, message: `${errno.path}: ${errno.message.split(',')[0] ?? errno.code}.` };
  }
  return { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

/** One line, `edge-runner: CODE: sentence`; with `debug` (EDGE_RUNNER_DEBUG=1) the stack and causes too. */
export function printError(err: unknown, options: { debug?: boolean } = {}): void {
  const { code, message } = describeError(err);
  process.stderr.write(`edge-runner: ${code}: ${message}\n`);
  if (options.debug && err instanceof Error) {
    for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
      // The message on one printable line, then the stack's own frames (written by Node, not by the input).
      const stack = e.stack ?? '';
      const header = `${e.name}: ${e.message}`;
      const frames = (stack.startsWith(header) ? stack.slice(header.length) : '').split('\n').filter((line) => /^\s+at /.test(line));
      process.stderr.write(
        `${depth > 0 ? 'caused by: ' : ''}${e.name}: ${toPrintable(e.message)}\n${frames.map((f) => `${toPrintable(f)}\n`).join('')}`,
      );
    }
  }
}

/** JSON on stdout, every string in it printable (toPrintableJson: still the same JSON value). */
export function printJson(value: unknown): void {
  process.stdout.write(`${toPrintableJson(JSON.stringify(value, null, 2))}\n`);
}
