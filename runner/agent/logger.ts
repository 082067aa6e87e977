/**
 * The runner's operational log: JSON lines (pino) on stderr, off unless EDGE_RUNNER_LOG_LEVEL is set
 * (trace, debug, info, warn, error). Decisions are in SQLite; this log is for operators. It carries ids,
 * codes and digests only — never step output, file contents or environment values.
 */
import { pino, type Logger } from 'pino';

let root: Logger | undefined;

export function logger(): Logger {
  root ??= pino(
    { name: 'edge-runner', level: process.env.EDGE_RUNNER_LOG_LEVEL ?? 'silent', base: { pid: process.pid } },
    pino.destination({ fd: 2, sync: true }),
  );
  return root;
}
