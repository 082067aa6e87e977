/**
 * packaging/edge-runner-agent.service: checked by `systemd-analyze verify` where systemd's tools are installed
 * (skipped visibly otherwise), its hardening asserted line by line, and the configuration file it names
 * (packaging/agent.toml, the example) accepted by `config check`, which the unit runs before the agent starts.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_STEP_LIMITS, grantWorkspaceToStep, planLaunch, probeIsolation } from '../../runner/exec/sandbox.js';
import { runCli } from '../helpers/cli.js';

const UNIT = fileURLToPath(new URL('../../packaging/edge-runner-agent.service', import.meta.url));
const EXAMPLE_CONFIG = fileURLToPath(new URL('../../packaging/agent.toml', import.meta.url));
const unit = readFileSync(UNIT, 'utf8');

const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
const systemdVersion = analyze.status === 0 ? Number(/^systemd (\d+)/.exec(analyze.stdout)?.[1] ?? 0) : undefined;
if (systemdVersion === undefined) console.warn('systemd unit test: systemd-analyze is not installed; the verify case is skipped');

/** Every value of a directive in [Service] (a directive may be given on several lines). */
function directive(name: string): string[] {
  return unit
    .split('\n')
    .filter((line) => line.startsWith(`${name}=`))
    .map((line) => line.slice(name.length + 1));
}

/**
 * A classic BPF seccomp program for x86_64 (struct sock_filter, 8 bytes each): for each system call named, an
 * errno unless its first argument is one of `allowArg0`; everything else allowed. Enough to replay the rules
 * systemd's settings add (seccomp-util.c: seccomp_protect_hostname, seccomp_restrict_address_families).
 */
function denyFilter(rules: { nr: number; errno: number; allowArg0?: number[] }[]): Buffer {
  const ins: [number, number, number, number][] = [];
  const LD_ABS = 0x20;
  const JEQ = 0x15;
  const RET = 0x06;
  const ALLOW = 0x7fff0000;
  const ERRNO = 0x00050000;
  // The jumps are filled in once the program's length is known: -1 means "to ALLOW" (the last instruction).
  ins.push([LD_ABS, 0, 0, 4], [JEQ, 0, -1, 0xc000003e]);
  for (const rule of rules) {
    const allowed = rule.allowArg0 ?? [];
    // Not this call: over its argument checks and its errno, to the next rule.
    ins.push([LD_ABS, 0, 0, 0], [JEQ, 0, allowed.length > 0 ? allowed.length + 2 : 1, rule.nr]);
    if (allowed.length > 0) {
      ins.push([LD_ABS, 0, 0, 16]);
      for (const family of allowed) ins.push([JEQ, -1, 0, family]);
    }
    ins.push([RET, 0, 0, ERRNO | rule.errno]);
  }
  ins.push([RET, 0, 0, ALLOW]);
  const last = ins.length - 1;
  const out = Buffer.alloc(ins.length * 8);
  ins.forEach(([code, jt, jf, k], i) => {
    out.writeUInt16LE(code, i * 8);
    out.writeUInt8(jt === -1 ? last - i - 1 : jt, i * 8 + 2);
    out.writeUInt8(jf === -1 ? last - i - 1 : jf, i * 8 + 3);
    out.writeUInt32LE(k >>> 0, i * 8 + 4);
  });
  return out;
}

const SYS_SOCKET = 41;
const SYS_SETHOSTNAME = 170;
const SYS_SETDOMAINNAME = 171;
const EPERM = 1;
const EAFNOSUPPORT = 97;
const FAMILIES: Record<string, number> = { AF_UNIX: 1, AF_INET: 2, AF_INET6: 10, AF_NETLINK: 16 };

const root = process.geteuid?.() === 0;
const sandboxed = process.arch === 'x64' && root && probeIsolation().available === 'bwrap';
if (!sandboxed) console.warn('systemd unit test: not root with bwrap on x86_64; the replayed seccomp rules are not run');

/**
 * The sandbox the runner plans for a step (as its probe does, /bin/true as the step), run with `filter` laid
 * over it by an outer bwrap (whose --seccomp applies to everything below it, as systemd's does to the service).
 */
function runPlannedStepUnder(
  filter: Buffer,
  unitReplay: string[] = [],
  caps: string[] = directive('CapabilityBoundingSet')[0]!.split(' '),
): { status: number | null; stdout: string; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-unit-step-'));
  dirs.push(dir);
  const workspace = join(dir, 'workspace');
  mkdirSync(workspace);
  grantWorkspaceToStep(workspace);
  // A step that writes in its workspace and reads it back, as the step user.
  const argv = ['/bin/sh', '-c', 'echo written > out && cat out && id -u'];
  const plan = planLaunch({ argv, env: { PATH: '/usr/bin:/bin' }, workspace, limits: { ...DEFAULT_STEP_LIMITS }, mode: 'bwrap' });
  const inputs = [...(plan.fdInputs ?? []), filter].map((bytes, i) => {
    writeFileSync(join(dir, `fd-${i}`), bytes, { mode: 0o600 });
    return openSync(join(dir, `fd-${i}`), 'r');
  });
  try {
    const outerFd = 3 + inputs.length - 1;
    const outer = unitReplay.length > 0 ? [...unitReplay.map((arg) => arg.replaceAll('{dir}', dir))] : ['--dev-bind', '/', '/'];
    const result = spawnSync(plan.file, [...outer, '--seccomp', String(outerFd), '--', ...boundingSet(caps), plan.file, ...plan.args], {
      cwd: plan.cwd,
      env: plan.env,
      stdio: ['ignore', 'pipe', 'pipe', ...inputs],
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  } finally {
    for (const fd of inputs) closeSync(fd);
  }
}

/** setpriv keeping only the unit's CapabilityBoundingSet= (what systemd does with it: PR_CAPBSET_DROP the rest). */
function boundingSet(caps: string[]): string[] {
  const kept = caps.map((cap) => `+${cap.replace(/^CAP_/, '').toLowerCase()}`);
  return ['setpriv', `--bounding-set=-all,${kept.join(',')}`, '--'];
}

/**
 * The unit's file system settings, replayed with an outer bwrap (as systemd lays them, in the service's mount
 * namespace): ProtectSystem=strict (all read-only), PrivateDevices (a /dev of null, zero, random, tty...),
 * ProtectKernelTunables (/proc/sys and /sys read-only; /sys/fs/cgroup stays writable, not needed here),
 * PrivateTmp, and the one writable folder (StateDirectory: here the test's own folder).
 */
const UNIT_REPLAY = ['--ro-bind', '/', '/', '--dev', '/dev', '--bind', '/proc', '/proc', '--ro-bind', '/proc/sys', '/proc/sys'];
UNIT_REPLAY.push('--ro-bind', '/sys', '/sys', '--tmpfs', '/tmp', '--bind', '{dir}', '{dir}');

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('the systemd unit', () => {
  it.skipIf(systemdVersion === undefined)('passes systemd-analyze verify (the binary path pointed at an executable)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-runner-unit-'));
    dirs.push(dir);
    const binary = join(dir, 'edge-runner');
    writeFileSync(binary, '#!/bin/sh\nexit 0\n');
    chmodSync(binary, 0o755);
    // verify checks that ExecStart names an executable file; only that path differs from the shipped unit.
    const copy = join(dir, 'edge-runner-agent.service');
    writeFileSync(copy, unit.replaceAll('/usr/local/bin/edge-runner', binary));
    const result = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8', timeout: 60_000 });
    const complaints = result.stderr
      .split('\n')
      .filter((line) => line.trim() !== '')
      // DelegateSubgroup= came with systemd 254; older ones ignore it (and the steps fall back to rlimits).
      .filter((line) => !(systemdVersion! < 254 && line.includes("Unknown key 'DelegateSubgroup'")));
    expect(complaints).toEqual([]);
    expect(result.status).toBe(0);
  });

  it('runs the agent on the state folder systemd keeps writable, with the configuration file, after checking it', () => {
    expect(directive('ExecStart')).toEqual(['/usr/local/bin/edge-runner agent --state /var/lib/edge-runner --config /etc/edge-runner/agent.toml']);
    expect(directive('ExecStartPre')).toEqual([
      '/usr/local/bin/edge-runner config check --state /var/lib/edge-runner --config /etc/edge-runner/agent.toml',
    ]);
    expect(directive('StateDirectory')).toEqual(['edge-runner']);
    expect(directive('StateDirectoryMode')).toEqual(['0700']);
    expect(directive('KillSignal')).toEqual(['SIGTERM']);
  });

  it('is hardened: no new privileges, a read-only system, private /tmp, few address families, a bounded capability set', () => {
    expect(directive('NoNewPrivileges')).toEqual(['yes']);
    expect(directive('ProtectSystem')).toEqual(['strict']);
    expect(directive('PrivateTmp')).toEqual(['yes']);
    expect(directive('ProtectHome')).toEqual(['yes']);
    expect(directive('PrivateDevices')).toEqual(['yes']);
    expect(directive('RestrictAddressFamilies')).toEqual(['AF_UNIX AF_INET AF_INET6 AF_NETLINK']);
    const caps = directive('CapabilityBoundingSet')[0]!.split(' ');
    expect(caps).toContain('CAP_SYS_ADMIN'); // bwrap's namespaces and mounts, as root
    for (const absent of ['CAP_SYS_MODULE', 'CAP_SYS_PTRACE', 'CAP_SYS_RAWIO', 'CAP_NET_RAW', 'CAP_MKNOD', 'CAP_SYS_BOOT', 'CAP_BPF']) {
      expect(caps).not.toContain(absent);
    }
    for (const yes of ['ProtectKernelTunables', 'ProtectKernelModules', 'ProtectKernelLogs', 'ProtectClock', 'LockPersonality', 'RestrictSUIDSGID']) {
      expect(directive(yes), yes).toEqual(['yes']);
    }
  });

  it('unsets every variable the configuration reads (each would win over the file), whatever a manager sets', () => {
    const source = readFileSync(fileURLToPath(new URL('../../runner/config/config.ts', import.meta.url)), 'utf8');
    const read = new Set([...source.matchAll(/'((?:EDGE_RUNNER_[A-Z_]+)|(?:https?|no)_proxy|(?:HTTPS?|NO)_PROXY)'/g)].map((m) => m[1]!));
    expect(read.size).toBeGreaterThan(10);
    const unset = directive('UnsetEnvironment').join(' ').split(' ');
    expect([...read].filter((name) => !unset.includes(name))).toEqual([]);
  });

  it('unsets what would change the runtime or the proxy from the manager’s environment', () => {
    const unset = directive('UnsetEnvironment').join(' ').split(' ');
    for (const name of ['NODE_OPTIONS', 'LD_PRELOAD', 'NODE_TLS_REJECT_UNAUTHORIZED', 'https_proxy', 'HTTPS_PROXY', 'EDGE_RUNNER_CONFIG']) {
      expect(unset).toContain(name);
    }
  });

  it('names a configuration file whose example passes config check', () => {
    const result = runCli(['config', 'check', '--config', EXAMPLE_CONFIG]);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/^coordinator\.url = "https:\/\/coordinator\.example\.internal" +# file /m);
  });

  describe('against what bwrap does for every step, as root (systemd cannot be started here: its seccomp rules are replayed)', () => {
    it.skipIf(!sandboxed)('sets no ProtectHostname=yes: its rule (sethostname EPERM) fails every step the runner plans', () => {
      const hostname = denyFilter([
        { nr: SYS_SETHOSTNAME, errno: EPERM },
        { nr: SYS_SETDOMAINNAME, errno: EPERM },
      ]);
      const replayed = runPlannedStepUnder(hostname);
      expect(replayed.status).not.toBe(0);
      expect(replayed.stderr).toMatch(/hostname/i);
      expect(directive('ProtectHostname')).toEqual([]);
    });

    it.skipIf(!sandboxed)("runs the runner's planned step under the unit's own RestrictAddressFamilies (netlink for the loopback)", () => {
      const families = directive('RestrictAddressFamilies')[0]!.split(' ');
      expect(families.every((name) => FAMILIES[name] !== undefined)).toBe(true);
      const allowed = runPlannedStepUnder(denyFilter([{ nr: SYS_SOCKET, errno: EAFNOSUPPORT, allowArg0: families.map((f) => FAMILIES[f]!) }]));
      expect(allowed.stderr).toBe('');
      expect(allowed.status).toBe(0);
      expect(allowed.stdout).toBe('written\n65534\n');
      // And the replay is a real one: without AF_NETLINK, bwrap cannot bring up the step's loopback.
      const withoutNetlink = families.filter((f) => f !== 'AF_NETLINK').map((f) => FAMILIES[f]!);
      expect(runPlannedStepUnder(denyFilter([{ nr: SYS_SOCKET, errno: EAFNOSUPPORT, allowArg0: withoutNetlink }])).status).not.toBe(0);
    });

    it.skipIf(!sandboxed)(
      "runs the runner's planned step as the step user under the unit replayed: its capability bounding set, a read-only system, private /dev and /tmp, read-only kernel tunables, its address families",
      () => {
        const families = directive('RestrictAddressFamilies')[0]!
          .split(' ')
          .map((f) => FAMILIES[f]!);
        const filter = denyFilter([{ nr: SYS_SOCKET, errno: EAFNOSUPPORT, allowArg0: families }]);
        const replayed = runPlannedStepUnder(filter, UNIT_REPLAY);
        expect(replayed.stderr).toBe('');
        expect(replayed.stdout).toBe('written\n65534\n');
        expect(replayed.status).toBe(0);
        // The replay bites: without CAP_SYS_ADMIN in the set, bwrap cannot make the step's namespaces.
        const caps = directive('CapabilityBoundingSet')[0]!.split(' ');
        const without = runPlannedStepUnder(
          filter,
          UNIT_REPLAY,
          caps.filter((cap) => cap !== 'CAP_SYS_ADMIN'),
        );
        expect(without.status).not.toBe(0);
      },
    );
  });
});
