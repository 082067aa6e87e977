/** The `sandbox` settings (issue 8, points 1 and 2): defaults, and what runner.json may and may not set. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, isSystemFolderPath, resolveConfig } from '../../../runner/config/config.js';

describe('the sandbox settings', () => {
  it('default to the system folders a program needs, bounded tmpfs sizes and the runner-found cgroup', () => {
    expect(DEFAULT_CONFIG.sandbox).toEqual({
      systemFolders: ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc'],
      tmpBytes: 256 * 1024 * 1024,
      shmBytes: 64 * 1024 * 1024,
      memoryCgroup: '',
      requireMemoryCgroup: false,
    });
  });

  it('take a narrower folder list, sizes and a cgroup folder from runner.json', () => {
    const config = resolveConfig({
      state: { sandbox: { systemFolders: ['/usr', '/etc/ssl'], tmpBytes: 4096, memoryCgroup: '/sys/fs/cgroup/edge.slice/runner.service' } },
    });
    expect(config.sandbox.systemFolders).toEqual(['/usr', '/etc/ssl']);
    expect(config.sandbox.tmpBytes).toBe(4096);
    expect(config.sandbox.shmBytes).toBe(DEFAULT_CONFIG.sandbox.shmBytes);
    expect(config.sandbox.memoryCgroup).toBe('/sys/fs/cgroup/edge.slice/runner.service');
  });

  it.each([
    [{ systemFolders: ['/'] }],
    [{ systemFolders: ['usr'] }],
    [{ systemFolders: ['/usr/../home'] }],
    [{ systemFolders: ['/usr/'] }],
    [{ systemFolders: '/usr' }],
    [{ systemFolders: Array.from({ length: 33 }, (_, i) => `/f${i}`) }],
    [{ tmpBytes: 0 }],
    [{ shmBytes: 2 ** 41 }],
    [{ memoryCgroup: '/tmp/cg' }],
    [{ memoryCgroup: '/sys/fs/cgroup/../x' }],
    [{ requireMemoryCgroup: 'yes' }],
  ])('refuses %j with CONFIG_INVALID', (sandbox) => {
    expect(() => resolveConfig({ state: { sandbox } as never })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });

  it('refuses an unknown sandbox setting with CONFIG_UNKNOWN_SETTING', () => {
    expect(() => resolveConfig({ state: { sandbox: { unknown: 1 } } as never })).toThrow(expect.objectContaining({ code: 'CONFIG_UNKNOWN_SETTING' }));
  });

  it('accepts as a system folder only plain absolute paths, which are safe to name in the evidence', () => {
    for (const ok of ['/usr', '/etc/ssl', '/opt/tool-1.2', '/lib64']) expect(isSystemFolderPath(ok), ok).toBe(true);
    for (const bad of ['/', '', 'usr', '/a/./b', '/a/..', '/a b', '/a\nb', '/\u001b[2J', `/${'x'.repeat(65)}`])
      expect(isSystemFolderPath(bad), bad).toBe(false);
  });
});
