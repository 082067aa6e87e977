/**
 * The runner's operational log: JSON lines (pino) on stderr, silent unless the configuration sets a level.
 * Decisions are in SQLite; this log is for operators. It carries ids, codes and digests only — never step
 * output, file contents or environment values.
 */
import { pino, type Logger } from 'pino';
import type { LogLevel } from '../config/config.js';

export type { Logger };

export function createLogger(level: LogLevel): Logger {
  return pino({ name: 'edge-runner', level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

/** A logger that drops everything (tests, and library callers that bring none). */
export const silentLogger: Logger = pino({ level: 'silent' });
