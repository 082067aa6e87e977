/**
 * A memory cgroup per step: the bound on everything a step holds in memory at once, whatever the kind
 * (heap, shared and memfd mappings, memfd and tmpfs pages, page cache, kernel memory it causes), over all
 * its processes. rlimits are per process and per kind; a cgroup is the only total.
 *
 * The runner needs a cgroup folder it may create children in (a "parent"):
 *   - cgroup v2: a folder whose cgroup.subtree_control lists `memory` (a delegated subtree, e.g. systemd's
 *     Delegate=yes with DelegateSubgroup=, whose service folder is then the parent), given in the
 *     configuration, or the runner's own cgroup when its subtree_control already lists memory;
 *   - cgroup v1: the runner's own folder in the memory hierarchy (v1 has no rule against processes in inner
 *     folders), or a configured folder of that hierarchy.
 * A step's cgroup is `<parent>/edge-runner-step-<pid>-<start>-<random>`, named after the runner process that
 * made it (runner/state/process.ts), with memory.max (v1: memory.limit_in_bytes, and the TCP buffers it
 * charges only when memory.kmem.tcp.limit_in_bytes is set), and swap at 0 where the kernel lets us set it.
 * It is removed when the step ends; one whose runner died (SIGKILL) is removed when a runner next opens.
 * v1 never charges UDP socket buffers: the evidence names the version, and the README says so. The kernel's count of OOM
 * kills in it (v2 memory.events, v1 memory.oom_control) is how the runner knows a step hit its memory bound.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isProcessAlive, processStartTicks } from '../state/process.js';
import { SandboxError } from './sandbox-errors.js';

export type CgroupVersion = 1 | 2;

export interface MemoryCgroupParent {
  version: CgroupVersion;
  dir: string;
}

export interface StepCgroup {
  version: CgroupVersion;
  dir: string;
}

const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * Where step cgroups can be made, or why not. `configured` is the configuration's folder ('' = find the
 * runner's own). Tries it for real: a child is made, limited and removed.
 */
export function findMemoryCgroupParent(configured: string): { parent: MemoryCgroupParent } | { reason: string } {
  let parent: MemoryCgroupParent | undefined;
  try {
    parent = configured !== '' ? toConfiguredParent(configured) : toOwnParent();
  } catch (err) {
    return { reason: err instanceof Error ? err.message : String(err) };
  }
  if (!parent) return { reason: 'no memory cgroup the runner may create children in' };
  try {
    removeStepCgroup(createStepCgroup(parent, 64 * 1024 * 1024));
  } catch (err) {
    return { reason: `a step cgroup cannot be made in ${parent.dir}: ${err instanceof Error ? err.message : String(err)}` };
  }
  return { parent };
}

function toConfiguredParent(dir: string): MemoryCgroupParent | undefined {
  if (existsSync(join(dir, 'cgroup.subtree_control'))) return hasMemoryController(dir) ? { version: 2, dir } : undefined;
  if (existsSync(join(dir, 'memory.limit_in_bytes'))) return { version: 1, dir };
  return undefined;
}

function hasMemoryController(dir: string): boolean {
  return readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('memory');
}

/** The runner's own cgroup, from /proc/self/cgroup and the mount table. */
function toOwnParent(): MemoryCgroupParent | undefined {
  const lines = readFileSync('/proc/self/cgroup', 'utf8').split('\n').filter(Boolean);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).map(toMount);
  const v1 = lines.map((line) => line.split(':')).find(([, controllers]) => controllers?.split(',').includes('memory'));
  if (v1) {
    const mount = mounts.find((m) => m.fsType === 'cgroup' && m.superOptions.split(',').includes('memory'));
    const dir = mount && toMountedPath(mount, v1.slice(2).join(':'));
    return dir && existsSync(join(dir, 'memory.limit_in_bytes')) ? { version: 1, dir } : undefined;
  }
  const v2 = lines.find((line) => line.startsWith('0::'));
  if (!v2) return undefined;
  const mount = mounts.find((m) => m.fsType === 'cgroup2');
  const dir = mount && toMountedPath(mount, v2.slice(3));
  return dir && existsSync(join(dir, 'cgroup.subtree_control')) && hasMemoryController(dir) ? { version: 2, dir } : undefined;
}

interface Mount {
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string;
}

/** proc(5) mountinfo: id parent major:minor root mountpoint options [optional...] - fstype source superoptions */
function toMount(line: string): Mount {
  const fields = line.split(' ');
  const dash = fields.indexOf('-');
  const unescape = (text: string) => text.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
  return {
    root: unescape(fields[3] ?? ''),
    mountPoint: unescape(fields[4] ?? ''),
    fsType: fields[dash + 1] ?? '',
    superOptions: fields[dash + 3] ?? '',
  };
}

/** The folder of cgroup `path` under a mount whose root is `mount.root` (a container sees a subtree). */
function toMountedPath(mount: Mount, path: string): string | undefined {
  if (!mount.mountPoint.startsWith(CGROUP_ROOT)) return undefined;
  const root = mount.root === '/' ? '' : mount.root;
  if (root !== '' && path !== root && !path.startsWith(`${root}/`)) return undefined;
  return join(mount.mountPoint, path.slice(root.length));
}

/** Makes a step's cgroup with its memory bound (and no swap, where the kernel offers that knob). */
export function createStepCgroup(parent: MemoryCgroupParent, memoryBytes: number): StepCgroup {
  const dir = join(parent.dir, `${STEP_PREFIX}${process.pid}-${processStartTicks(process.pid) ?? 0}-${randomBytes(8).toString('hex')}`);
  mkdirSync(dir);
  const cgroup: StepCgroup = { version: parent.version, dir };
  try {
    if (parent.version === 2) {
      writeFileSync(join(dir, 'memory.max'), String(memoryBytes));
      if (existsSync(join(dir, 'memory.swap.max'))) writeFileSync(join(dir, 'memory.swap.max'), '0');
    } else {
      writeFileSync(join(dir, 'memory.limit_in_bytes'), String(memoryBytes));
      // v1 charges socket buffers only under a TCP limit of their own; set before any task joins.
      if (existsSync(join(dir, 'memory.kmem.tcp.limit_in_bytes'))) writeFileSync(join(dir, 'memory.kmem.tcp.limit_in_bytes'), String(memoryBytes));
      // memsw is memory + swap: equal to the memory limit means no swap. Absent when swap accounting is off.
      if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) writeFileSync(join(dir, 'memory.memsw.limit_in_bytes'), String(memoryBytes));
    }
  } catch (err) {
    removeStepCgroup(cgroup);
    throw err;
  }
  return cgroup;
}

const STEP_PREFIX = 'edge-runner-step-';
const STEP_NAME = /^edge-runner-step-(\d+)-(\d+)-[0-9a-f]{16}$/;

/**
 * Removes the step cgroups of runners that are gone (killed before their step ended): only those whose
 * maker's pid and start time no longer match a live process, so a live runner's steps on the same parent
 * are never touched; a cgroup that still holds a process cannot be removed anyway (EBUSY). Returns how
 * many were removed.
 */
export function removeDeadStepCgroups(parent: MemoryCgroupParent): number {
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(parent.dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    const match = STEP_NAME.exec(name);
    if (!match || isProcessAlive({ pid: Number(match[1]), start: match[2]! }, { ticksOnly: true })) continue;
    try {
      rmdirSync(join(parent.dir, name));
      removed += 1;
    } catch {
      // busy (a process of it still exits) or gone: the next open tries again
    }
  }
  return removed;
}

/** Moves a process (all its threads) into the step's cgroup; its later children are born there. */
export function joinStepCgroup(cgroup: StepCgroup, pid: number): void {
  writeFileSync(join(cgroup.dir, 'cgroup.procs'), String(pid));
}

/** How many times the kernel's OOM killer killed a process of this cgroup. */
export function countOomKills(cgroup: StepCgroup): number {
  const file = cgroup.version === 2 ? 'memory.events' : 'memory.oom_control';
  const text = readFileSync(join(cgroup.dir, file), 'utf8');
  const match = /^oom_kill (\d+)$/m.exec(text);
  return match ? Number(match[1]) : 0;
}

/**
 * Removes a step's cgroup once its processes are gone (a process that is still exiting keeps it busy for
 * a moment). A cgroup that cannot be removed raises EXEC_SANDBOX_CGROUP: it would hold memory counters
 * and, worse, a process.
 */
export function removeStepCgroup(cgroup: StepCgroup): void {
  const deadline = Date.now() + 2000;
  for (;;) {
    try {
      rmdirSync(cgroup.dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || Date.now() > deadline) {
        throw new SandboxError('EXEC_SANDBOX_CGROUP', 'The step cgroup could not be removed.', { code: code ?? 'unknown' }, { cause: err });
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
}
