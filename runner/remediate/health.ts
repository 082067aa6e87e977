/**
 * The operator's health check after an apply: their own argv (runner configuration `targets.NAME.healthCheck`),
 * run on the host as the runner's user, in the target folder, without a shell, with an empty environment but
 * PATH, killed at its timeout. Exit 0 is healthy. Only codes and durations are kept (HealthCheckRecord):
 * what it printed is the host's and never leaves.
 */
import { spawn } from 'node:child_process';
import type { HealthCheckRecord } from '../evidence/statement.js';

const HEALTH_PATH = '/usr/local/bin:/usr/bin:/bin';

export async function runHealthCheck(argv: readonly string[], cwd: string, timeoutSeconds: number): Promise<HealthCheckRecord> {
  const started = process.hrtime.bigint();
  const elapsed = () => Number((process.hrtime.bigint() - started) / 1_000_000n);
  return new Promise((resolve) => {
    let timedOut = false;
    let settled = false;
    const done = (record: HealthCheckRecord) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(record);
    };
    const child = spawn(argv[0]!, argv.slice(1), { cwd, env: { PATH: HEALTH_PATH }, stdio: 'ignore', detached: true });
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL'); // its whole process group: a check that forked is ended too
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutSeconds * 1000);
    child.on('error', () => done({ status: 'spawn-failed', exitCode: null, signal: null, timedOut: false, durationMs: elapsed() }));
    child.on('exit', (code, signal) => {
      const status = timedOut ? 'timed-out' : code === 0 ? 'succeeded' : 'failed';
      done({ status, exitCode: code, signal, timedOut, durationMs: elapsed() });
    });
  });
}
