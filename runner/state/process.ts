/**
 * Who a process is, across pid reuse and reboots: its pid, and its start time as the kernel reports it
 * qualified by the boot it belongs to. The store records the owner of each running run with it, and the blob
 * store names temporary files with it, so that what a dead process left can be told from what a live one is
 * still writing. Linux (/proc).
 */
import { readFileSync } from 'node:fs';

export interface ProcessIdentity {
  pid: number;
  /** The process's start time as the kernel reports it (/proc/PID/stat field 22), qualified by boot id. */
  start: string;
}

/** This process, as ProcessIdentity; undefined where /proc is not readable. */
export function currentProcess(): ProcessIdentity | undefined {
  const start = processStart(process.pid);
  return start === undefined ? undefined : { pid: process.pid, start };
}

/**
 * Whether the process `owner` names is still running. With `ticksOnly`, `owner.start` is the start time in
 * clock ticks alone (for names that cannot hold the boot id: cgroups, which do not outlive a boot anyway).
 */
export function isProcessAlive(owner: ProcessIdentity, options: { ticksOnly?: boolean } = {}): boolean {
  return (options.ticksOnly ? processStartTicks(owner.pid) : processStart(owner.pid)) === owner.start;
}

/** The start time of process `pid` in clock ticks since boot (/proc/PID/stat field 22), or undefined. */
export function processStartTicks(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may hold spaces and parentheses: count fields after the last ')'. starttime is field 22.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

let bootId: string | undefined;

/** The process's start time, qualified by the boot it belongs to (a pid and start time recur across boots). */
function processStart(pid: number): string | undefined {
  try {
    bootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return undefined;
  }
  const ticks = processStartTicks(pid);
  return ticks === undefined ? undefined : `${bootId}:${ticks}`;
}
