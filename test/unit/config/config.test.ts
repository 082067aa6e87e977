/** One configuration type: defaults with units, merged once as defaults < state file < environment < flags. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, resolveConfig } from '../../../runner/config/config.js';
import { codeOf } from '../../helpers/codes.js';

describe('resolveConfig', () => {
  it('gives the defaults when nothing is set', () => {
    const config = resolveConfig();
    expect(config).toEqual({ ...DEFAULT_CONFIG, toolSearchPath: [] });
    expect(config.exec.defaultStepTimeoutSeconds).toBe(600);
    expect(config.stepUser).toEqual({ uid: 65534, gid: 65534 });
  });

  it('lets the state file override the defaults, the environment the state file, and flags the environment', () => {
    const config = resolveConfig({
      state: { exec: { killGraceMs: 100, outputCapBytes: 10 }, stepUser: { uid: 1000, gid: 1000 }, logLevel: 'warn' },
      env: { EDGE_RUNNER_STEP_TIMEOUT_SECONDS: '30', EDGE_RUNNER_LOG_LEVEL: 'info', PATH: '/opt/bin:relative:/usr/local/bin' },
      flags: { exec: { outputCapBytes: 20 } },
    });
    expect(config.exec).toEqual({ ...DEFAULT_CONFIG.exec, killGraceMs: 100, outputCapBytes: 20, defaultStepTimeoutSeconds: 30 });
    expect(config.stepUser).toEqual({ uid: 1000, gid: 1000 });
    expect(config.logLevel).toBe('info');
    expect(config.toolSearchPath).toEqual(['/opt/bin', '/usr/local/bin']);
  });

  it('returns a frozen value, so no module changes it after the merge', () => {
    const config = resolveConfig();
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.exec)).toBe(true);
    expect(Object.isFrozen(DEFAULT_CONFIG.limits)).toBe(true);
  });

  describe('when a value is wrong', () => {
    it.each([
      ['an unknown log level in the environment', { env: { EDGE_RUNNER_LOG_LEVEL: 'loud' } }],
      ['a timeout that is not a number', { env: { EDGE_RUNNER_STEP_TIMEOUT_SECONDS: '10s' } }],
      ['a zero timeout', { env: { EDGE_RUNNER_STEP_TIMEOUT_SECONDS: '0' } }],
      ['a step user of root in the state file', { state: { stepUser: { uid: 0, gid: 0 } } }],
      ['a negative grace', { flags: { exec: { killGraceMs: -1 } } }],
      ['a fractional limit', { state: { limits: { memoryBytes: 1.5 } } }],
      ['a boolean given as a string', { state: { exec: { keepWorkspace: 'yes' } as never } }],
      ['a step user of null', { state: { stepUser: null as never } }],
      ['a step user with members besides uid and gid', { state: { stepUser: { uid: 1000, gid: 1000, extra: 1 } as never } }],
      ['a section that is not an object', { state: { exec: 5 as never } }],
      ['a step timeout beyond what a timer holds (it would fire at once)', { env: { EDGE_RUNNER_STEP_TIMEOUT_SECONDS: '3000000' } }],
      ['a kill grace beyond a minute', { flags: { exec: { killGraceMs: 2 ** 31 } } }],
      ['a busy timeout the SQLite driver refuses', { env: { EDGE_RUNNER_BUSY_TIMEOUT_MS: '999999999999' } }],
    ])('rejects %s with CONFIG_INVALID', (_what, sources) => {
      expect(codeOf(() => resolveConfig(sources))).toBe('CONFIG_INVALID');
    });

    it.each([
      ['an unknown section', { state: { nonsense: 1 } as never }],
      ['an unknown setting', { flags: { exec: { nonsense: 1 } as never } }],
      ['an unknown spool setting', { file: { spool: { folder: '/x' } } as never }],
    ])('refuses %s with CONFIG_UNKNOWN_SETTING', (_what, sources) => {
      expect(codeOf(() => resolveConfig(sources))).toBe('CONFIG_UNKNOWN_SETTING');
    });

    it('names the setting and where it came from in the sentence', () => {
      expect(() => resolveConfig({ env: { EDGE_RUNNER_LOG_LEVEL: 'loud' } })).toThrow(/EDGE_RUNNER_LOG_LEVEL is "loud"/);
      expect(() => resolveConfig({ state: { limits: { openFiles: 0 } } })).toThrow(/runner\.json limits\.openFiles/);
    });
  });
});
