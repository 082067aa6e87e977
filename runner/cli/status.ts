/**
 * `edge-runner status --state DIR [--config FILE] [--json]`: what a monitoring check needs to know about a
 * runner, read without writing anything and without walking the log (runner/store/status.ts), so it can run
 * every minute beside a live agent, whose lock it never takes. Exit codes a check can use:
 *   0 ok;
 *   1 warning: the trust document expires within 30 days, free disk under twice the reserve, an answer queued
 *     for more than an hour, a dead letter, a schedule slot due for more than 5 minutes and not handled
 *     (the agent is not running it), the latest checkpoint not cosigned for more than an hour while a
 *     coordinator is configured; a trust update cut short (the runner finishes or refuses it at its next
 *     start);
 *   2 critical: the trust document expired (the runner refuses to act), free disk under the reserve (runs
 *     are refused with RUN_DISK_RESERVE), the database holds fewer records than the last checkpoint the
 *     runner signed (an older copy put back: the runner refuses to open it), or the state or its database
 *     cannot be read (the error's code).
 * Each condition has a stable STATUS_ code in the report. The last error (the latest record of an error
 * kind) is shown for the operator but is not a condition by itself: a rejected capsule is the runner
 * working.
 */
import { statfsSync } from 'node:fs';
import { readEnvironment, resolveConfig } from '../config/config.js';
import { isCodedError } from '../core/errors.js';
import { nextSlotAfter } from '../schedule/slots.js';
import { StatusReader, type StatusSnapshot } from '../store/status.js';
import { commandConfigSources } from './config-file.js';
import { describeError, EXIT, exitCodeFor, printError, printJson, toPrintable, UsageError } from './output.js';
import { readStateView, stateSettings, type StateView } from './state-view.js';

const DAY_MS = 86_400_000;
/** Inside this many days of its expiry, the trust document is a warning. */
export const TRUST_WARNING_DAYS = 30;
/** An answer queued for longer than this is a warning (the coordinator has not taken it). */
export const OUTBOX_STALE_MS = 3_600_000;
/** A schedule slot this far past and not handled (neither run nor recorded as missed) is a warning. */
export const SCHEDULE_BEHIND_MS = 5 * 60_000;
/** The latest checkpoint not cosigned for this long, with a coordinator configured, is a warning. */
export const WITNESS_STALE_MS = 3_600_000;
/** A change applying, verifying or rolling back with no transition for this long is a warning (its runner died?). */
export const CHANGE_STUCK_MS = 15 * 60_000;
/** Free disk under this many times the reserve is a warning (under the reserve itself, critical). */
export const DISK_WARNING_FACTOR = 2;

export type StatusLevel = 'ok' | 'warning' | 'critical';

export type StatusCode =
  | 'STATUS_TRUST_EXPIRED'
  | 'STATUS_TRUST_EXPIRING'
  | 'STATUS_DISK_BELOW_RESERVE'
  | 'STATUS_DISK_LOW'
  | 'STATUS_OUTBOX_STALE'
  | 'STATUS_OUTBOX_DEAD'
  | 'STATUS_SCHEDULE_BEHIND'
  | 'STATUS_WITNESS_STALE'
  | 'STATUS_LOG_ROLLED_BACK'
  | 'STATUS_TRUST_UPDATE_PENDING'
  | 'STATUS_CHANGE_ROLLBACK_FAILED'
  | 'STATUS_CHANGE_STUCK';

export interface StatusProblem {
  level: 'warning' | 'critical';
  code: StatusCode;
  message: string;
}

export interface StatusReport {
  status: StatusLevel;
  checkedAt: string;
  runner: { id: string; labels: string[]; keyid: string };
  trust: { version: number; expires: string; daysLeft: number };
  log: {
    size: number;
    lastCheckpoint: { size: number; signedAt: string } | null;
    lastWitnessed: { size: number; by: string[]; receivedAt: string } | null;
  };
  outbox: {
    queued: number;
    oldestQueuedAt: string | null;
    oldestQueuedAgeSeconds: number | null;
    dead: number;
    lastDead: { digest: string; code: string; createdAt: string } | null;
    lastAttemptCode: string | null;
  };
  schedules: {
    capsuleId: string;
    manifestDigest: string;
    cron: string;
    timezone: string;
    expiresAt: string;
    lastSlot: string | null;
    nextFiring: string | null;
  }[];
  disk: { path: string; freeBytes: number; reserveBytes: number };
  /**
   * The configuration file the report was judged under (--config, else EDGE_RUNNER_CONFIG), or null: the
   * reserve and whether a coordinator is configured come from it, so a check run without the agent's file
   * judges by other values (a larger reserve in the file: runs refused while status says ok). Shown, so a
   * report says what it was judged by.
   */
  config: { file: string | null };
  lastError: { seq: number; kind: string; code: string; at: string } | null;
  /** Governed changes: waiting for approvals, in progress, and rollbacks that failed (each a critical condition). */
  changes: {
    pending: number;
    oldestPendingAt: string | null;
    inProgress: { changeDigest: string; target: string; state: string; updatedAt: string }[];
    rollbackFailed: { changeDigest: string; target: string; code: string; updatedAt: string }[];
  };
  problems: StatusProblem[];
}

export interface StatusOptions {
  state: string;
  config?: string;
  json?: boolean;
}

const STATUS_HELP = `Usage: edge-runner status [options]

Report the runner for monitoring, reading only: exit 0 ok, 1 warning, 2 critical.

Options:
  --state <dir>    the runner state folder
  --config <file>  the configuration file (for the disk reserve and the coordinator); else EDGE_RUNNER_CONFIG
  --json           print machine-readable results
  -h, --help       display help for command
`;

/** The command's work, for both parsers: prints the report, returns the exit code. */
export async function statusAction(opts: StatusOptions): Promise<number> {
  let report: StatusReport;
  try {
    report = await readStatus(opts.state, { configFile: opts.config, now: new Date() });
  } catch (err) {
    // Unreadable is critical: a check that cannot see the runner must not say it is fine.
    if (!opts.json) throw err;
    printJson({ status: 'critical', error: describeError(err) });
    return EXIT.usage;
  }
  if (opts.json) printJson(report);
  else process.stdout.write(formatStatus(report));
  return report.status === 'ok' ? 0 : report.status === 'warning' ? 1 : 2;
}

/**
 * `edge-runner status ...` on its own (runner/main.ts sends it here before the other commands load: their
 * modules, ajv, undici, pino, tweetnacl, commander and the child_process it loads among them, are most of a
 * command's start, and monitoring runs status every minute). Its three options are parsed here, with the
 * same error line and exit codes as the whole command line (usage errors exit 2); status-command.ts is the
 * same command for `edge-runner --help` and runCli. This file imports nothing of commander.
 */
export async function runStatusCli(argv: string[]): Promise<number> {
  try {
    const opts = parseStatusArgs(argv.slice(3));
    if (opts === 'help') {
      process.stdout.write(STATUS_HELP);
      return EXIT.ok;
    }
    return await statusAction(opts);
  } catch (err) {
    let debug = false;
    try {
      debug = resolveConfig({ env: readEnvironment() }).debug;
    } catch {
      // The environment itself is what failed; the error says so.
    }
    printError(err, { debug });
    return exitCodeFor(err);
  }
}

/** `--state DIR` (or `--state=DIR`), `--config FILE`, `--json`, `-h`/`--help`; anything else is a usage error. */
export function parseStatusArgs(args: readonly string[]): StatusOptions | 'help' {
  const values: { state?: string; config?: string } = {};
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '-h' || arg === '--help') return 'help';
    if (arg === '--json') {
      json = true;
      continue;
    }
    const match = /^--(state|config)(?:=(.*))?$/.exec(arg);
    if (!match) throw new UsageError(`unknown option '${arg}' (status takes --state, --config, --json)`);
    const name = match[1] as 'state' | 'config';
    const value = match[2] ?? args[++i];
    if (value === undefined || value === '') throw new UsageError(`option '--${name}' needs a value`);
    values[name] = value;
  }
  if (values.state === undefined) throw new UsageError("required option '--state <dir>' not specified");
  return { state: values.state, ...(values.config !== undefined ? { config: values.config } : {}), ...(json ? { json } : {}) };
}

/** Reads the state folder and its database (read-only) and judges what it finds at `now`. */
export async function readStatus(stateDir: string, options: { configFile?: string | undefined; now: Date }): Promise<StatusReport> {
  const view = await readStateView(stateDir);
  const sources = commandConfigSources({ configFlag: options.configFile, env: readEnvironment() });
  const config = resolveConfig({ ...sources, state: stateSettings(view.identity) });
  const snapshot = StatusReader.readSnapshot(view.layout.database, { busyTimeoutMs: config.store.busyTimeoutMs });
  const disk = statfsSync(view.layout.dir);
  return judgeStatus(view, snapshot, {
    now: options.now,
    freeBytes: Number(disk.bavail) * Number(disk.bsize),
    reserveBytes: config.store.reserveBytes,
    coordinatorConfigured: config.coordinator.url !== '',
    configFile: sources.filePath,
  });
}

/** The report and its conditions, from what was read (pure: the clock and the disk come in). */
export function judgeStatus(
  view: StateView,
  snapshot: StatusSnapshot,
  env: { now: Date; freeBytes: number; reserveBytes: number; coordinatorConfigured: boolean; configFile?: string | undefined },
): StatusReport {
  const now = env.now.getTime();
  const problems: StatusProblem[] = [];
  const trust = view.trust;
  const expiresMs = Date.parse(trust.expires);
  const daysLeft = Math.floor((expiresMs - now) / DAY_MS);
  if (expiresMs <= now) {
    problems.push({
      level: 'critical',
      code: 'STATUS_TRUST_EXPIRED',
      message: `The trust document (version ${trust.version}) expired at ${trust.expires}; the runner refuses to act until it is updated.`,
    });
  } else if (expiresMs - now <= TRUST_WARNING_DAYS * DAY_MS) {
    problems.push({
      level: 'warning',
      code: 'STATUS_TRUST_EXPIRING',
      message: `The trust document (version ${trust.version}) expires at ${trust.expires}, in ${daysLeft} day(s).`,
    });
  }
  if (view.pendingTrustVersion !== undefined) {
    problems.push({
      level: 'warning',
      code: 'STATUS_TRUST_UPDATE_PENDING',
      message: `A trust update to version ${view.pendingTrustVersion} was cut short; the pinned version ${trust.version} is in force until the runner next starts and finishes (or refuses) it.`,
    });
  }
  if (env.freeBytes < env.reserveBytes) {
    problems.push({
      level: 'critical',
      code: 'STATUS_DISK_BELOW_RESERVE',
      message: `${formatBytes(env.freeBytes)} free on the state folder's file system, under the reserve of ${formatBytes(env.reserveBytes)}: runs are refused.`,
    });
  } else if (env.freeBytes < env.reserveBytes * DISK_WARNING_FACTOR) {
    problems.push({
      level: 'warning',
      code: 'STATUS_DISK_LOW',
      message: `${formatBytes(env.freeBytes)} free on the state folder's file system, under twice the reserve of ${formatBytes(env.reserveBytes)}.`,
    });
  }
  const { outbox } = snapshot;
  const oldestMs = outbox.oldestQueuedAt === undefined ? undefined : Date.parse(outbox.oldestQueuedAt);
  const ageSeconds = oldestMs === undefined ? null : Math.max(0, Math.floor((now - oldestMs) / 1000));
  if (ageSeconds !== null && ageSeconds * 1000 > OUTBOX_STALE_MS) {
    problems.push({
      level: 'warning',
      code: 'STATUS_OUTBOX_STALE',
      message: `${outbox.queued} answer(s) queued, the oldest for ${formatAge(ageSeconds)}${outbox.lastAttemptCode ? ` (last attempt: ${outbox.lastAttemptCode})` : ''}.`,
    });
  }
  if (outbox.dead > 0) {
    problems.push({
      level: 'warning',
      code: 'STATUS_OUTBOX_DEAD',
      message: `${outbox.dead} answer(s) refused for good by the coordinator (dead letters), the latest with ${outbox.lastDead?.code ?? 'no code'}.`,
    });
  }
  const schedules = snapshot.schedules.map((row) => {
    // After the last slot handled when that is ahead of the clock (it jumped back): handled slots never fire again.
    const next = safeNextSlot(row.cron, row.timezone, new Date(Math.max(env.now.getTime(), Date.parse(row.lastSlot ?? row.acceptedAt))));
    const pending = safeNextSlot(row.cron, row.timezone, new Date(row.lastSlot ?? row.acceptedAt));
    const expires = Date.parse(row.expiresAt);
    if (pending !== undefined && pending.getTime() < expires && now - pending.getTime() > SCHEDULE_BEHIND_MS) {
      problems.push({
        level: 'warning',
        code: 'STATUS_SCHEDULE_BEHIND',
        message: `The schedule of ${row.capsuleId} has a slot due at ${pending.toISOString()} that is neither run nor recorded as missed: is the agent running?`,
      });
    }
    return {
      capsuleId: row.capsuleId,
      manifestDigest: row.manifestDigest,
      cron: row.cron,
      timezone: row.timezone,
      expiresAt: row.expiresAt,
      lastSlot: row.lastSlot ?? null,
      nextFiring: next !== undefined && next.getTime() < expires ? next.toISOString() : null,
    };
  });
  if (snapshot.headSize !== undefined && snapshot.headSize > snapshot.logSize) {
    problems.push({
      level: 'critical',
      code: 'STATUS_LOG_ROLLED_BACK',
      message: `The database holds ${snapshot.logSize} records, fewer than the ${snapshot.headSize} of the last checkpoint the runner signed: it is an older copy, and the runner refuses to open it.`,
    });
  }
  const checkpoint = snapshot.lastCheckpoint;
  const witnessed = snapshot.lastWitnessed;
  if (
    env.coordinatorConfigured &&
    checkpoint !== undefined &&
    (witnessed?.size ?? 0) < checkpoint.size &&
    now - Date.parse(checkpoint.signedAt) > WITNESS_STALE_MS
  ) {
    problems.push({
      level: 'warning',
      code: 'STATUS_WITNESS_STALE',
      message: `The checkpoint at size ${checkpoint.size} (signed ${checkpoint.signedAt}) is not cosigned; the last cosigned size is ${witnessed?.size ?? 'none'}.`,
    });
  }
  const changes = snapshot.changes ?? { pending: 0, oldestPendingAt: undefined, inProgress: [], rollbackFailed: [] };
  for (const failed of changes.rollbackFailed) {
    problems.push({
      level: 'critical',
      code: 'STATUS_CHANGE_ROLLBACK_FAILED',
      message: `The change ${failed.changeDigest} to target ${failed.target} was rolled back (${failed.code}) but the target is not at its pre-state digest: look at it by hand.`,
    });
  }
  for (const held of changes.inProgress) {
    if (now - Date.parse(held.updatedAt) > CHANGE_STUCK_MS) {
      problems.push({
        level: 'warning',
        code: 'STATUS_CHANGE_STUCK',
        message: `The change ${held.changeDigest} to target ${held.target} has been ${held.state} since ${held.updatedAt}: if its runner died, any command on the state folder resumes it.`,
      });
    }
  }
  const level: StatusLevel = problems.some((p) => p.level === 'critical') ? 'critical' : problems.length > 0 ? 'warning' : 'ok';
  return {
    status: level,
    checkedAt: env.now.toISOString(),
    runner: { id: view.identity.id, labels: [...view.identity.labels], keyid: view.identity.keyid },
    trust: { version: trust.version, expires: trust.expires, daysLeft },
    log: {
      size: snapshot.logSize,
      lastCheckpoint: checkpoint ?? null,
      lastWitnessed: witnessed
        ? {
            size: witnessed.size,
            by: witnessed.witnesses.map((w) => w.name),
            receivedAt:
              witnessed.witnesses
                .map((w) => w.receivedAt)
                .sort()
                .at(-1) ?? '',
          }
        : null,
    },
    outbox: {
      queued: outbox.queued,
      oldestQueuedAt: outbox.oldestQueuedAt ?? null,
      oldestQueuedAgeSeconds: ageSeconds,
      dead: outbox.dead,
      lastDead: outbox.lastDead ?? null,
      lastAttemptCode: outbox.lastAttemptCode ?? null,
    },
    schedules,
    disk: { path: view.layout.dir, freeBytes: env.freeBytes, reserveBytes: env.reserveBytes },
    config: { file: env.configFile ?? null },
    lastError: snapshot.lastError
      ? { seq: snapshot.lastError.seq, kind: snapshot.lastError.kind, code: snapshot.lastError.code, at: snapshot.lastError.at }
      : null,
    changes: { ...changes, oldestPendingAt: changes.oldestPendingAt ?? null },
    problems,
  };
}

/** A schedule the runner accepted has a valid expression; should one not parse here, status still answers. */
function safeNextSlot(cron: string, timezone: string, after: Date): Date | undefined {
  try {
    return nextSlotAfter(cron, timezone, after);
  } catch (err) {
    if (isCodedError(err)) return undefined;
    throw err;
  }
}

/** The human form: one line per item, the conditions last. */
export function formatStatus(report: StatusReport): string {
  const lines: string[] = [];
  const { runner, trust, log, outbox, disk } = report;
  lines.push(`runner      ${runner.id}${runner.labels.length > 0 ? ` (labels: ${runner.labels.join(', ')})` : ''}, key ${runner.keyid}`);
  lines.push(`trust       version ${trust.version}, expires ${trust.expires} (${trust.daysLeft >= 0 ? `in ${trust.daysLeft} day(s)` : 'expired'})`);
  const checkpoint = log.lastCheckpoint ? `last checkpoint at size ${log.lastCheckpoint.size} (${log.lastCheckpoint.signedAt})` : 'no checkpoint yet';
  const witnessed = log.lastWitnessed ? `last witnessed size ${log.lastWitnessed.size} by ${log.lastWitnessed.by.join(', ')}` : 'never witnessed';
  lines.push(`log         ${log.size} record(s), ${checkpoint}, ${witnessed}`);
  const oldest = outbox.oldestQueuedAgeSeconds === null ? '' : `, oldest queued ${formatAge(outbox.oldestQueuedAgeSeconds)} ago`;
  const attempt = outbox.lastAttemptCode ? ` (last attempt: ${outbox.lastAttemptCode})` : '';
  lines.push(
    `outbox      ${outbox.queued} queued${oldest}${attempt}, ${outbox.dead} dead letter(s)${outbox.lastDead ? ` (latest ${outbox.lastDead.code})` : ''}`,
  );
  if (report.schedules.length === 0) lines.push('schedules   none');
  for (const s of report.schedules) {
    lines.push(`schedule    ${s.capsuleId} "${s.cron}" (${s.timezone}): next ${s.nextFiring ?? 'none before it expires'}, expires ${s.expiresAt}`);
  }
  const { changes } = report;
  const inProgress = changes.inProgress.map((c) => `${c.target} ${c.state}`).join(', ');
  lines.push(
    `changes     ${changes.pending} pending approval${changes.oldestPendingAt ? ` (oldest proposed ${changes.oldestPendingAt})` : ''}${inProgress ? `, in progress: ${inProgress}` : ''}${changes.rollbackFailed.length > 0 ? `, ${changes.rollbackFailed.length} rollback(s) FAILED` : ''}`,
  );
  lines.push(`disk        ${formatBytes(disk.freeBytes)} free on ${disk.path} (reserve ${formatBytes(disk.reserveBytes)})`);
  lines.push(`config      ${report.config.file ?? 'no configuration file (defaults, runner.json, environment): give --config as the agent has it'}`);
  const error = report.lastError;
  lines.push(`last error  ${error ? `${error.code || error.kind} (${error.kind}, record ${error.seq}, ${error.at})` : 'none'}`);
  lines.push(`status      ${report.status}`);
  for (const p of report.problems) lines.push(`  ${p.level}: ${p.code}: ${p.message}`);
  return `${lines.map((line) => toPrintable(line)).join('\n')}\n`;
}

function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

function formatAge(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 172_800) return `${Math.floor(seconds / 3600)} h`;
  return `${Math.floor(seconds / 86_400)} days`;
}
