/** The coordinator section: defaults with units, the environment names, the file layer, and the refusals. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, isLoopbackHost, resolveConfig } from '../../../runner/config/config.js';
import { ConfigError } from '../../../runner/config/errors.js';
import { codeOf } from '../../helpers/codes.js';

describe('the coordinator settings', () => {
  it('default to no coordinator, a 30 s long poll, a 60 s signature, and backoff from 1 s to 5 minutes', () => {
    const { coordinator } = resolveConfig();
    expect(coordinator).toEqual(DEFAULT_CONFIG.coordinator);
    expect(coordinator.url).toBe('');
    expect(coordinator.caFile).toBe('');
    expect(coordinator.pollWaitSeconds).toBe(30);
    expect(coordinator.signatureTtlSeconds).toBe(60);
    expect(coordinator.backoffBaseMs).toBe(1000);
    expect(coordinator.backoffCapMs).toBe(300_000);
  });

  it('reads EDGE_RUNNER_COORDINATOR_URL, EDGE_RUNNER_CA_FILE and the proxy variables (lower case first), and flags override them', () => {
    const config = resolveConfig({
      env: {
        EDGE_RUNNER_COORDINATOR_URL: 'https://coordinator.example:8443/',
        EDGE_RUNNER_CA_FILE: '/etc/edge-runner/ca.pem',
        HTTPS_PROXY: 'http://upper.example:3128',
        https_proxy: 'http://user:secret@lower.example:3128',
        HTTP_PROXY: 'http://plain.example:3128',
        NO_PROXY: 'localhost,.internal',
      },
      flags: { coordinator: { url: 'https://other.example' } },
    });
    expect(config.coordinator.url).toBe('https://other.example');
    expect(config.coordinator.caFile).toBe('/etc/edge-runner/ca.pem');
    expect(config.coordinator.httpsProxy).toBe('http://user:secret@lower.example:3128');
    expect(config.coordinator.httpProxy).toBe('http://plain.example:3128');
    expect(config.coordinator.noProxy).toBe('localhost,.internal');
  });

  it('merges defaults < runner.json < the configuration file < the environment < flags', () => {
    const config = resolveConfig({
      state: { coordinator: { pollWaitSeconds: 10, flushMs: 1 } },
      file: { coordinator: { pollWaitSeconds: 20, stopGraceMs: 5, url: 'https://file.example' } },
      env: { EDGE_RUNNER_COORDINATOR_URL: 'https://env.example' },
    });
    expect(config.coordinator).toMatchObject({ pollWaitSeconds: 20, flushMs: 1, stopGraceMs: 5, url: 'https://env.example' });
  });

  it('accepts plain http to 127.0.0.1, another 127/8 address, ::1 and localhost', () => {
    for (const url of ['http://127.0.0.1:8080', 'http://127.1.2.3', 'http://[::1]:9000/prefix', 'http://localhost:1']) {
      expect(resolveConfig({ flags: { coordinator: { url } } }).coordinator.url).toBe(url);
    }
  });

  it('refuses plain http to a host that is not loopback with CONFIG_COORDINATOR_PLAIN_HTTP, naming the host', () => {
    for (const url of ['http://coordinator.example', 'http://10.0.0.1:8080', 'http://128.0.0.1', 'http://127.0.0.1.example.com', 'http://[::2]']) {
      let error: unknown;
      try {
        resolveConfig({ env: { EDGE_RUNNER_COORDINATOR_URL: url } });
      } catch (err) {
        error = err;
      }
      expect(error, url).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).code, url).toBe('CONFIG_COORDINATOR_PLAIN_HTTP');
      expect((error as ConfigError).details, url).toMatchObject({ setting: 'coordinator.url', source: 'environment' });
    }
  });

  it('tells loopback hosts apart as WHATWG URL parsing spells them', () => {
    expect(isLoopbackHost(new URL('http://0x7f.1/').hostname)).toBe(true); // 127.0.0.1 once normalised
    expect(isLoopbackHost(new URL('http://LOCALHOST/').hostname)).toBe(true);
    expect(isLoopbackHost(new URL('http://[0:0:0:0:0:0:0:1]/').hostname)).toBe(true);
    expect(isLoopbackHost(new URL('http://127.0.0.1.nip.io/').hostname)).toBe(false);
    expect(isLoopbackHost(new URL('http://localhost.example/').hostname)).toBe(false);
  });

  describe('when a value is wrong', () => {
    it.each([
      ['a coordinator URL that is not a URL', { flags: { coordinator: { url: 'coordinator:8443' } } }],
      ['a coordinator URL of another scheme', { flags: { coordinator: { url: 'ftp://coordinator.example' } } }],
      ['a coordinator URL with credentials', { flags: { coordinator: { url: 'https://user:pw@coordinator.example' } } }],
      ['a coordinator URL with a query', { env: { EDGE_RUNNER_COORDINATOR_URL: 'https://coordinator.example/?a=1' } }],
      ['a relative CA file', { env: { EDGE_RUNNER_CA_FILE: 'ca.pem' } }],
      ['a proxy URL of another scheme', { env: { HTTPS_PROXY: 'socks5://proxy.example:1080' } }],
      ['a proxy URL with a path', { env: { https_proxy: 'http://proxy.example:3128/path' } }],
      ['a long poll beyond the 60 s the coordinator allows', { file: { coordinator: { pollWaitSeconds: 61 } } }],
      ['a signature valid beyond the 300 s the coordinator allows', { state: { coordinator: { signatureTtlSeconds: 301 } } }],
      ['a zero request timeout', { flags: { coordinator: { requestTimeoutMs: 0 } } }],
      ['a backoff cap below its base', { flags: { coordinator: { backoffBaseMs: 10_000, backoffCapMs: 5000 } } }],
      ['a negative stop grace', { flags: { coordinator: { stopGraceMs: -1 } } }],
      ['a flush bound that is not a whole number', { file: { coordinator: { flushMs: 1.5 } } }],
      ['a NO_PROXY with control characters', { env: { NO_PROXY: 'a\nb' } }],
    ])('rejects %s with CONFIG_INVALID', (_what, sources) => {
      expect(codeOf(() => resolveConfig(sources))).toBe('CONFIG_INVALID');
    });

    it('refuses an unknown coordinator setting with CONFIG_UNKNOWN_SETTING', () => {
      expect(codeOf(() => resolveConfig({ file: { coordinator: { token: 'x' } as never } }))).toBe('CONFIG_UNKNOWN_SETTING');
    });

    it("names the configuration file's setting in the sentence", () => {
      expect(() => resolveConfig({ file: { coordinator: { pollWaitSeconds: 61 } } })).toThrow(
        /the configuration file's coordinator\.pollWaitSeconds/,
      );
    });
  });
});
