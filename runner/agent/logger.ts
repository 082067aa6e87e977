/**
 * The runner's operational log: JSON lines (pino) on stderr, silent unless the configuration sets a level.
 * Decisions are in SQLite; this log is for operators. It carries ids, codes and digests only — never step
 * output, file contents, environment values, or what an untrusted file said about itself (a rejected
 * capsule's payloadType, a path, a member name): callers log an error's code, never its details.
 *
 * As a second line, every string value a call logs goes through toPrintable (runner/core/printable.ts):
 * JSON already escapes C0 controls, this also escapes C1 controls and bidi overrides, which a terminal or a
 * log viewer would otherwise act on.
 */
import { pino, type Logger } from 'pino';
import type { LogLevel } from '../config/config.js';
import { toPrintable } from '../core/printable.js';

export type { Logger };

export function createLogger(level: LogLevel): Logger {
  return pino(
    { name: 'edge-runner', level, base: { pid: process.pid }, formatters: { log: printableValues } },
    pino.destination({ fd: 2, sync: true }),
  );
}

/** The logged object with its string members (one level deep: calls log flat objects) made printable. */
export function printableValues(object: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(object)) out[toPrintable(key)] = typeof value === 'string' ? toPrintable(value) : value;
  return out;
}

/** A logger that drops everything (tests, and library callers that bring none). */
export const silentLogger: Logger = pino({ level: 'silent' });
