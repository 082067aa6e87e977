/**
 * packaging/edge-runner-agent.service: checked by `systemd-analyze verify` where systemd's tools are installed
 * (skipped visibly otherwise), its hardening asserted line by line, and the configuration file it names
 * (packaging/agent.toml, the example) accepted by `config check`, which the unit runs before the agent starts.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
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
});
