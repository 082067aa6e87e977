/**
 * Runs one step: argv spawned without a shell, in its own process group, environment built from the
 * allowlist, output streamed into the local evidence store with a cap, a timeout that sends SIGTERM to the
 * whole group and SIGKILL after a grace period. Whatever the step leaves running in its group is killed
 * when it ends.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import type { BlobStore, CappedBlob } from '../state/blobs.js';
import type { LaunchPlan } from './sandbox.js';

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
}

export function runStep(options: RunStepOptions): Promise<StepOutcome> {
  const { plan, blobs } = options;
  const stdout = blobs.writer(options.outputCapBytes);
  const stderr = blobs.writer(options.outputCapBytes);
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    let timedOut = false;
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
        stdio: ['ignore', 'pipe', 'pipe'],
        shell: false,
        windowsHide: true,
        ...(plan.uid !== undefined ? { uid: plan.uid } : {}),
        ...(plan.gid !== undefined ? { gid: plan.gid } : {}),
      });
    } catch {
      // spawn throws synchronously on arguments it cannot pass (e.g. a NUL byte): nothing started.
      settled = true;
      resolve({
        exitCode: null,
        signal: null,
        timedOut: false,
        durationMs: 0,
        spawnFailure: 'spawn-failed',
        stdout: stdout.finish(),
        stderr: stderr.finish(),
        stderrTail: '',
      });
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
    child.stdout!.on('data', (chunk: Buffer) => stdout.write(chunk));
    let tail = Buffer.alloc(0);
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr.write(chunk);
      tail = Buffer.concat([tail, chunk]);
      if (tail.length > STDERR_TAIL_BYTES) tail = tail.subarray(tail.length - STDERR_TAIL_BYTES);
    });

    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(termTimer);
      clearTimeout(killTimer);
      // Nothing the step started may outlive it; a process that escaped the group (setsid) may still hold
      // the pipes, so they are closed from this side rather than waited for.
      signalGroup('SIGKILL');
      child.stdout?.destroy();
      child.stderr?.destroy();
      const durationMs = Number((process.hrtime.bigint() - started) / 1_000_000n);
      resolve({
        exitCode: exit?.code ?? null,
        signal: exit?.signal ?? null,
        timedOut,
        durationMs,
        spawnFailure,
        stdout: stdout.finish(),
        stderr: stderr.finish(),
        stderrTail: tail.toString('utf8'),
      });
    };

    const termTimer: NodeJS.Timeout = setTimeout(() => {
      timedOut = true;
      if (options.leaderIsStep === false && child.pid !== undefined) signalMembers(child.pid, 'SIGTERM');
      else signalGroup('SIGTERM');
      killTimer = setTimeout(() => signalGroup('SIGKILL'), options.killGraceMs);
    }, options.timeoutMs);

    child.on('error', (err: NodeJS.ErrnoException) => {
      spawnFailure = err.code === 'ENOENT' ? 'not-found' : err.code === 'EACCES' ? 'permission-denied' : 'spawn-failed';
      finish();
    });
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      clearTimeout(termTimer); // it ended by itself: it cannot time out any more
      if (timedOut) {
        // In the grace period: what is left of the group has until the SIGKILL timer to finish its handlers.
        setTimeout(finish, options.killGraceMs + 500).unref();
        return;
      }
      // A grandchild may hold the pipes open: end the group, then give the pipes a moment to drain.
      signalGroup('SIGKILL');
      setTimeout(finish, 2000).unref();
    });
    child.on('close', () => finish());
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
