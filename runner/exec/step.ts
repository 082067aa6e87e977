/**
 * Runs one step: argv spawned without a shell, in its own process group, environment built from the
 * allowlist, output streamed into the local evidence store with a cap, a timeout that sends SIGTERM to the
 * whole group and SIGKILL after a grace period. Whatever the step leaves running in its group is killed
 * when it ends.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import type { BlobStore, BlobWriter, CappedBlob } from '../state/blobs.js';
import { endLaunch, startLaunch, toSpawnStdio, type LaunchPlan } from './sandbox.js';

/** Bytes of stderr kept in memory to explain a limit exit; matched against patterns, never recorded. */
const STDERR_TAIL_BYTES = 4096;

export type SpawnFailure = 'not-found' | 'permission-denied' | 'spawn-failed';

export interface StepOutcome {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  durationMs: number;
  spawnFailure: SpawnFailure | null;
  stdout: CappedBlob;
  stderr: CappedBlob;
  /** The end of stderr, for classifying limit exits locally. Never leaves the runner. */
  stderrTail: string;
  /** OOM kills in the step's memory cgroup (sandbox.ts endLaunch); absent without one. */
  oomKills?: number;
  /** The runner stopped the step (its `signal` fired: the agent is shutting down); absent otherwise. */
  aborted?: true;
}

export interface RunStepOptions {
  plan: LaunchPlan;
  timeoutMs: number;
  /** Time between SIGTERM and SIGKILL once the timeout fires. */
  killGraceMs: number;
  outputCapBytes: number;
  blobs: BlobStore;
  /**
   * Whether the process group's leader is itself the step (true) or a wrapper that must outlive the
   * step's grace period (false: bwrap, whose death takes the whole sandbox down at once). On timeout a
   * wrapper leader is spared the SIGTERM so that the step can run its own handlers.
   */
  leaderIsStep?: boolean;
  /** Stops the step as a timeout does (SIGTERM, then SIGKILL after the grace), and marks it aborted. */
  signal?: AbortSignal;
}

/**
 * Resolves with the step's outcome, or rejects with the coded error of a write that failed (its output
 * could not be kept: a full disk is STATE_DISK_FULL): the step's group is then killed at once, both
 * temporary blobs are removed, and the caller ends the run. A failed write never throws out of a stream
 * handler, where it would take the whole runner down.
 */
export function runStep(options: RunStepOptions): Promise<StepOutcome> {
  const { plan, blobs } = options;
  let stdout: BlobWriter | undefined;
  let stderr: BlobWriter;
  try {
    stdout = blobs.writer(options.outputCapBytes);
    stderr = blobs.writer(options.outputCapBytes);
  } catch (err) {
    // Nothing started; what the plan holds (its cgroup) goes with it, or every such failure would leave one.
    stdout?.abort();
    endLaunch(plan);
    return Promise.reject(err);
  }
  return runStarted(options, plan, stdout, stderr);
}

/** Both blobs, named by their digests; if either cannot be stored, neither is kept and the error is thrown. */
function finishOutputs(stdout: BlobWriter, stderr: BlobWriter): { stdout: CappedBlob; stderr: CappedBlob } {
  try {
    const out = stdout.finish();
    return { stdout: out, stderr: stderr.finish() };
  } catch (err) {
    stdout.abort();
    stderr.abort();
    throw err;
  }
}

function runStarted(options: RunStepOptions, plan: LaunchPlan, stdout: BlobWriter, stderr: BlobWriter): Promise<StepOutcome> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    let timedOut = false;
    let aborted = false;
    let spawnFailure: SpawnFailure | null = null;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    let settled = false;

    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(plan.file, plan.args, {
        cwd: plan.cwd,
        env: plan.env,
        detached: true, // its own process group, so the whole group can be signalled
        stdio: toSpawnStdio(plan), // and the sandbox's own fds (seccomp program, cgroup hold)
        shell: false,
        windowsHide: true,
        ...(plan.uid !== undefined ? { uid: plan.uid } : {}),
        ...(plan.gid !== undefined ? { gid: plan.gid } : {}),
      });
    } catch {
      // spawn throws synchronously on arguments it cannot pass (e.g. a NUL byte): nothing started.
      settled = true;
      endLaunch(plan);
      try {
        resolve({
          exitCode: null,
          signal: null,
          timedOut: false,
          durationMs: 0,
          spawnFailure: 'spawn-failed',
          ...finishOutputs(stdout, stderr),
          stderrTail: '',
        });
      } catch (err) {
        reject(err);
      }
      return;
    }
    const signalGroup = (signal: NodeJS.Signals) => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, signal);
      } catch {
        // ESRCH: the group is already gone.
      }
    };
    // A write that fails (a full disk) ends the step now: its output can no longer be kept whole.
    let writeFailure: unknown;
    const keep = (writer: BlobWriter, chunk: Buffer): void => {
      if (writeFailure !== undefined) return;
      try {
        writer.write(chunk);
      } catch (err) {
        writeFailure = err;
        signalGroup('SIGKILL');
        finish();
      }
    };
    child.stdout!.on('data', (chunk: Buffer) => keep(stdout, chunk));
    // A pipe that fails to read ends like one the step closed ('close' follows); unhandled, the error
    // would take the whole runner down.
    child.stdout!.on('error', () => {});
    child.stderr!.on('error', () => {});
    let tail = Buffer.alloc(0);
    child.stderr!.on('data', (chunk: Buffer) => {
      keep(stderr, chunk);
      tail = Buffer.concat([tail, chunk]);
      if (tail.length > STDERR_TAIL_BYTES) tail = tail.subarray(tail.length - STDERR_TAIL_BYTES);
    });

    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(termTimer);
      clearTimeout(killTimer);
      options.signal?.removeEventListener('abort', onAbort);
      // Nothing the step started may outlive it; a process that escaped the group (setsid) may still hold
      // the pipes, so they are closed from this side rather than waited for.
      signalGroup('SIGKILL');
      child.stdout?.destroy();
      child.stderr?.destroy();
      const durationMs = Number((process.hrtime.bigint() - started) / 1_000_000n);
      const { oomKills } = endLaunch(plan); // the step's cgroup: read, then removed
      if (writeFailure !== undefined) {
        stdout.abort();
        stderr.abort();
        reject(writeFailure);
        return;
      }
      let outputs: { stdout: CappedBlob; stderr: CappedBlob };
      try {
        outputs = finishOutputs(stdout, stderr);
      } catch (err) {
        reject(err);
        return;
      }
      resolve({
        exitCode: exit?.code ?? null,
        signal: exit?.signal ?? null,
        timedOut,
        durationMs,
        spawnFailure,
        ...outputs,
        stderrTail: tail.toString('utf8'),
        ...(oomKills !== undefined ? { oomKills } : {}),
        ...(aborted ? { aborted: true as const } : {}),
      });
    };

    /** SIGTERM to the step (not to a wrapper leader), SIGKILL to the group after the grace. */
    const stop = () => {
      if (options.leaderIsStep === false && child.pid !== undefined) signalMembers(child.pid, 'SIGTERM');
      else signalGroup('SIGTERM');
      killTimer = setTimeout(() => signalGroup('SIGKILL'), options.killGraceMs);
    };
    const termTimer: NodeJS.Timeout = setTimeout(() => {
      timedOut = true;
      stop();
    }, options.timeoutMs);
    const onAbort = () => {
      if (timedOut || aborted || exit !== undefined) return;
      aborted = true;
      clearTimeout(termTimer);
      stop();
    };
    if (options.signal?.aborted) queueMicrotask(onAbort);
    else options.signal?.addEventListener('abort', onAbort, { once: true });

    child.on('error', (err: NodeJS.ErrnoException) => {
      spawnFailure = err.code === 'ENOENT' ? 'not-found' : err.code === 'EACCES' ? 'permission-denied' : 'spawn-failed';
      finish();
    });
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      clearTimeout(termTimer); // it ended by itself: it cannot time out any more
      if (timedOut || aborted) {
        // In the grace period: what is left of the group has until the SIGKILL timer to finish its handlers.
        setTimeout(finish, options.killGraceMs + 500).unref();
        return;
      }
      // A grandchild may hold the pipes open: end the group, then give the pipes a moment to drain.
      signalGroup('SIGKILL');
      setTimeout(finish, 2000).unref();
    });
    child.on('close', () => finish());
    try {
      startLaunch(plan, child); // feeds the seccomp program; moves a held bwrap into its cgroup, then lets it go
    } catch {
      // Not in its cgroup: it never starts the step.
      spawnFailure = 'spawn-failed';
      signalGroup('SIGKILL');
    }
  });
}

/** Signals every process of group `pgid` except its leader (found through /proc). */
function signalMembers(pgid: number, signal: NodeJS.Signals): void {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry) || Number(entry) === pgid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command name (which may hold spaces): state ppid pgrp ...
      const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
      if (pgrp === pgid) process.kill(Number(entry), signal);
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
}
