/** Issue 8, point 3: the free-space reserve is a setting like the others (default, bounds, environment). */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, resolveConfig } from '../../../runner/config/config.js';

describe('store.reserveBytes', () => {
  it('defaults to 128 MiB', () => {
    expect(DEFAULT_CONFIG.store.reserveBytes).toBe(128 * 1024 * 1024);
    expect(resolveConfig().store.reserveBytes).toBe(128 * 1024 * 1024);
  });

  it('is set by runner.json settings and EDGE_RUNNER_RESERVE_BYTES (which wins)', () => {
    expect(resolveConfig({ state: { store: { reserveBytes: 1024 } } }).store.reserveBytes).toBe(1024);
    expect(resolveConfig({ state: { store: { reserveBytes: 1024 } }, env: { EDGE_RUNNER_RESERVE_BYTES: '4096' } }).store.reserveBytes).toBe(4096);
  });

  it('cannot be switched off or set beyond its bound (CONFIG_INVALID)', () => {
    expect(() => resolveConfig({ env: { EDGE_RUNNER_RESERVE_BYTES: '0' } })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    expect(() => resolveConfig({ state: { store: { reserveBytes: 2 ** 50 + 1 } } })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    expect(() => resolveConfig({ env: { EDGE_RUNNER_RESERVE_BYTES: '10M' } })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });
});
