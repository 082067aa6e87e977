/**
 * The operator's configuration file (TOML, runner/cli/config-file.ts) and the origins of every effective
 * value (runner/config/config.ts resolveConfigWithOrigins): defaults < runner.json < file < environment < flags.
 */
import { chmodSync, lchownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, resolveConfigWithOrigins } from '../../../runner/config/config.js';
import { CONFIG_FILE_MAX_BYTES, commandConfigSources, readConfigFile } from '../../../runner/cli/config-file.js';
import { codeOf } from '../../helpers/codes.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'edge-runner-config-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string | Buffer, mode = 0o644): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

const AGENT_TOML = `# an operator's file
logLevel = "warn"

[exec]
killGraceMs = 1_500

[store]
reserveBytes = 268_435_456   # 256 MiB

[coordinator]
url = "https://coordinator.bank.example"
pollWaitSeconds = 20

[resources.ledger]
path = "/srv/ledger-extract"

[resources.pg]
socket = "/run/postgresql/.s.PGSQL.5432"

[spool]
dir = "/var/spool/edge-runner"

[stepUser]
uid = 1001
gid = 1001
`;

describe('the configuration file', () => {
  it('reads TOML in the shape of runner.json settings, sections, resources and step user included', () => {
    const overrides = readConfigFile(file('agent.toml', AGENT_TOML));
    const { config } = resolveConfigWithOrigins({ file: overrides });
    expect(config.logLevel).toBe('warn');
    expect(config.exec.killGraceMs).toBe(1500);
    expect(config.store.reserveBytes).toBe(256 * 1024 * 1024);
    expect(config.coordinator.url).toBe('https://coordinator.bank.example');
    expect(config.resources).toEqual({ ledger: { path: '/srv/ledger-extract' }, pg: { socket: '/run/postgresql/.s.PGSQL.5432' } });
    expect(config.spool.dir).toBe('/var/spool/edge-runner');
    expect(config.stepUser).toEqual({ uid: 1001, gid: 1001 });
  });

  it('still reads a file named .json as JSON (what agent --config took before)', () => {
    const overrides = readConfigFile(file('agent.json', JSON.stringify({ coordinator: { pollWaitSeconds: 5 } })));
    expect(resolveConfigWithOrigins({ file: overrides }).config.coordinator.pollWaitSeconds).toBe(5);
  });

  it('says where every value came from: default, runner.json, the file by path, a variable by name, a flag by name', () => {
    const path = file('agent.toml', AGENT_TOML);
    const sources = commandConfigSources({
      configFlag: path,
      env: { EDGE_RUNNER_RESERVE_BYTES: '536870912', https_proxy: 'http://proxy.bank.example:3128' },
      flags: { coordinator: { url: 'https://other.bank.example' } },
      flagNames: { 'coordinator.url': '--coordinator' },
    });
    const { config, origins } = resolveConfigWithOrigins({ ...sources, state: { exec: { outputCapBytes: 4096, killGraceMs: 10 } } });
    expect(origins['exec.defaultStepTimeoutSeconds']).toEqual({ source: 'default' });
    expect(origins['exec.outputCapBytes']).toEqual({ source: 'state' });
    expect(origins['exec.killGraceMs']).toEqual({ source: 'file', where: path });
    expect(config.exec.killGraceMs).toBe(1500);
    expect(origins['store.reserveBytes']).toEqual({ source: 'environment', where: 'EDGE_RUNNER_RESERVE_BYTES' });
    expect(config.store.reserveBytes).toBe(536870912);
    expect(origins['coordinator.httpsProxy']).toEqual({ source: 'environment', where: 'https_proxy' });
    expect(origins['coordinator.url']).toEqual({ source: 'flags', where: '--coordinator' });
    expect(config.coordinator.url).toBe('https://other.bank.example');
    expect(origins['resources.ledger']).toEqual({ source: 'file', where: path });
    expect(origins.stepUser).toEqual({ source: 'file', where: path });
    // Every setting of the configuration has an origin.
    for (const section of ['exec', 'limits', 'sandbox', 'store', 'coordinator', 'spool'] as const) {
      for (const name of Object.keys(DEFAULT_CONFIG[section])) expect(origins[`${section}.${name}`]).toBeDefined();
    }
  });

  it('takes the file EDGE_RUNNER_CONFIG names when no flag does, and none when neither does', () => {
    const path = file('agent.toml', '[exec]\nkillGraceMs = 7\n');
    expect(commandConfigSources({ configFlag: undefined, env: { EDGE_RUNNER_CONFIG: path } }).file).toEqual({ exec: { killGraceMs: 7 } });
    expect(commandConfigSources({ configFlag: undefined, env: {} }).file).toBeUndefined();
  });

  describe('when a key is unknown', () => {
    it.each([
      ['a misspelt section', '[coordinater]\nurl = "https://c.example"\n', 'coordinater'],
      ['a misspelt setting', '[exec]\nkillGrace = 100\n', 'exec.killGrace'],
      ['a top-level key', 'loglevel = "info"\n', 'loglevel'],
      ['a member of spool', '[spool]\nfolder = "/x"\n', 'spool.folder'],
    ])('refuses %s with CONFIG_UNKNOWN_SETTING, naming the key and the file', (_what, text, key) => {
      const path = file('agent.toml', text);
      const sources = commandConfigSources({ configFlag: path, env: {} });
      expect(codeOf(() => resolveConfigWithOrigins(sources))).toBe('CONFIG_UNKNOWN_SETTING');
      expect(() => resolveConfigWithOrigins(sources)).toThrow(`The configuration file ${path} sets ${key}, which is not a setting.`);
    });
  });

  describe('when the file is wrong', () => {
    it.each([
      ['a syntax error', '[exec\nkillGraceMs = 1\n', /not valid TOML \(line 1/],
      ['a key given twice (TOML forbids it)', '[exec]\nkillGraceMs = 1\nkillGraceMs = 2\n', /not valid TOML/],
      ['a byte that is not UTF-8', Buffer.from([0x6c, 0x3d, 0xff, 0x0a]), /not UTF-8/],
    ])('refuses %s with CONFIG_INVALID', (_what, text, message) => {
      const path = file('agent.toml', text);
      expect(codeOf(() => readConfigFile(path))).toBe('CONFIG_INVALID');
      expect(() => readConfigFile(path)).toThrow(message);
    });

    it.each([
      ['a date where a number goes', '[exec]\nkillGraceMs = 1979-05-27\n'],
      ['a string where a number goes', '[exec]\nkillGraceMs = "1000"\n'],
      ['an integer beyond 2^53', '[store]\nreserveBytes = 9_007_199_254_740_993\n'],
      ['a fraction', '[limits]\nmemoryBytes = 1.5\n'],
      ['a resource reaching a public address', '[resources.web]\ntcp = "8.8.8.8:443"\n'],
    ])('refuses %s with CONFIG_INVALID, naming the file', (_what, text) => {
      const path = file('agent.toml', text);
      const check = () => resolveConfigWithOrigins(commandConfigSources({ configFlag: path, env: {} }));
      expect(codeOf(check)).toBe('CONFIG_INVALID');
      expect(check).toThrow(path);
    });

    it(`refuses a file over ${CONFIG_FILE_MAX_BYTES} bytes, and reads one at the cap`, () => {
      const padding = (n: number) => `# ${'x'.repeat(n - 3)}\n`;
      expect(readConfigFile(file('at-cap.toml', padding(CONFIG_FILE_MAX_BYTES)))).toEqual({});
      const over = file('over.toml', padding(CONFIG_FILE_MAX_BYTES + 1));
      expect(codeOf(() => readConfigFile(over))).toBe('CONFIG_INVALID');
    });

    it('refuses a file that group or others may write (it grants resources to steps) with CONFIG_FILE_UNSAFE', () => {
      expect(codeOf(() => readConfigFile(file('group.toml', '', 0o664)))).toBe('CONFIG_FILE_UNSAFE');
      expect(codeOf(() => readConfigFile(file('world.toml', '', 0o646)))).toBe('CONFIG_FILE_UNSAFE');
      expect(readConfigFile(file('fine.toml', '', 0o600))).toEqual({});
    });

    it("judges the folder of the file a link points at, not the link's", () => {
      const open = mkdtempSync(join(tmpdir(), 'edge-runner-config-open-'));
      try {
        chmodSync(open, 0o777);
        writeFileSync(join(open, 'agent.toml'), '');
        chmodSync(join(open, 'agent.toml'), 0o644);
        symlinkSync(join(open, 'agent.toml'), join(dir, 'link.toml'));
        expect(codeOf(() => readConfigFile(join(dir, 'link.toml')))).toBe('CONFIG_FILE_UNSAFE');
      } finally {
        rmSync(open, { recursive: true, force: true });
      }
    });

    it('refuses a file in a folder others may write (it could be swapped) with CONFIG_FILE_UNSAFE', () => {
      const path = file('agent.toml', '');
      chmodSync(dir, 0o777);
      expect(codeOf(() => readConfigFile(path))).toBe('CONFIG_FILE_UNSAFE');
      chmodSync(dir, 0o1777); // sticky, as /tmp: nobody else can rename it
      expect(readConfigFile(path)).toEqual({});
      chmodSync(dir, 0o700);
    });
  });
});

describe('the way to the configuration file (a local user attacking it)', () => {
  /** A folder anyone may write, without the sticky bit, for the duration of one test. */
  function openFolder(): string {
    const open = mkdtempSync(join(dir, 'open-'));
    chmodSync(open, 0o777);
    return open;
  }

  it('refuses a link in a folder others may write, even to a safe file: they could point it at any file root owns', () => {
    const safe = file('agent.toml', 'logLevel = "warn"\n', 0o600);
    const link = join(openFolder(), 'agent.toml');
    symlinkSync(safe, link);
    expect(codeOf(() => readConfigFile(link))).toBe('CONFIG_FILE_UNSAFE');
    expect(readConfigFile(safe)).toEqual({ logLevel: 'warn' });
  });

  it('refuses a file below a folder others may write, however safe its own folder: they could swap the folder', () => {
    const inner = join(openFolder(), 'etc');
    mkdirSync(inner, { mode: 0o700 });
    const path = join(inner, 'agent.toml');
    writeFileSync(path, '', { mode: 0o600 });
    expect(codeOf(() => readConfigFile(path))).toBe('CONFIG_FILE_UNSAFE');
  });

  it("in a sticky folder (as /tmp) takes the runner's own entries, and refuses a link another user put there", () => {
    const sticky = mkdtempSync(join(dir, 'sticky-'));
    chmodSync(sticky, 0o1777);
    const safe = file('agent.toml', '', 0o600);
    symlinkSync(safe, join(sticky, 'mine.toml'));
    expect(readConfigFile(join(sticky, 'mine.toml'))).toEqual({});
    symlinkSync(safe, join(sticky, 'theirs.toml'));
    lchownSync(join(sticky, 'theirs.toml'), 12345, 12345);
    expect(codeOf(() => readConfigFile(join(sticky, 'theirs.toml')))).toBe('CONFIG_FILE_UNSAFE');
  });

  it('follows links the runner laid, relative and absolute, through .., to the same answer', () => {
    mkdirSync(join(dir, 'a'), { mode: 0o700 });
    const path = file('a/agent.toml', 'logLevel = "error"\n', 0o600);
    symlinkSync('a/../a/agent.toml', join(dir, 'rel.toml'));
    symlinkSync(join(dir, 'rel.toml'), join(dir, 'abs.toml'));
    expect(readConfigFile(join(dir, 'abs.toml'))).toEqual(readConfigFile(path));
    symlinkSync('loop1.toml', join(dir, 'loop2.toml'));
    symlinkSync('loop2.toml', join(dir, 'loop1.toml'));
    expect(() => readConfigFile(join(dir, 'loop1.toml'))).toThrow();
  });

  it.each([
    ['a section', 'exec = 1979-05-27\n'],
    ['resources', 'resources = 1979-05-27T07:32:00Z\n'],
    ['a setting', '[exec]\nkillGraceMs = 07:32:00\n'],
  ])('refuses a date where %s goes with CONFIG_INVALID (a TomlDate would pass for an empty table)', (_what, text) => {
    const path = file('agent.toml', text, 0o600);
    const check = () => resolveConfigWithOrigins(commandConfigSources({ configFlag: path, env: {} }));
    expect(codeOf(check)).toBe('CONFIG_INVALID');
  });

  it('reads a file with a byte order mark and CRLF line ends as the same settings; keys such as __proto__ are unknown', () => {
    expect(readConfigFile(file('bom.toml', '\ufefflogLevel = "warn"\r\n[exec]\r\nkillGraceMs = 5\r\n', 0o600))).toEqual({
      logLevel: 'warn',
      exec: { killGraceMs: 5 },
    });
    for (const text of ['[__proto__]\nkillGraceMs = 5\n', '__proto__.exec.killGraceMs = 5\n', '[constructor]\nx = 1\n']) {
      const path = file('proto.toml', text, 0o600);
      expect(
        codeOf(() => resolveConfigWithOrigins(commandConfigSources({ configFlag: path, env: {} }))),
        text,
      ).toBe('CONFIG_UNKNOWN_SETTING');
    }
  });
});
