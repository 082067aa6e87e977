/**
 * `edge-runner config check` through the built CLI: every effective value with its origin (default,
 * runner.json, the file, a variable, a flag), unknown keys refused with the key named (exit 2), proxy
 * passwords never printed, and the same file read by the agent and by `exec` (EDGE_RUNNER_CONFIG).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from '../../helpers/cli.js';
import { makeWorld, type World } from '../../helpers/world.js';

const worlds: World[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});

const ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

function setup(toml: string): { w: World; file: string } {
  const w = makeWorld();
  worlds.push(w);
  const file = join(w.dir, 'agent.toml');
  writeFileSync(file, toml, { mode: 0o600 });
  return { w, file };
}

function setSettings(w: World, settings: unknown): void {
  const path = join(w.stateDir, 'runner.json');
  writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), settings }, null, 2));
}

describe('edge-runner config check', () => {
  it('prints each effective value with where it came from, and exits 0', () => {
    const { w, file } = setup('[exec]\nkillGraceMs = 1500\n\n[coordinator]\nurl = "https://c.bank.example"\n');
    setSettings(w, { limits: { cpuSeconds: 60 } });
    const result = runCli(['config', 'check', '--state', w.stateDir, '--config', file], {
      env: { ...ENV, EDGE_RUNNER_STEP_TIMEOUT_SECONDS: '30' },
    });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(`configuration file: ${file}\n`);
    expect(result.stdout).toMatch(/^exec\.killGraceMs = 1500 +# file .*agent\.toml$/m);
    expect(result.stdout).toMatch(/^coordinator\.url = "https:\/\/c\.bank\.example" +# file /m);
    expect(result.stdout).toMatch(/^limits\.cpuSeconds = 60 +# runner\.json$/m);
    expect(result.stdout).toMatch(/^exec\.defaultStepTimeoutSeconds = 30 +# environment EDGE_RUNNER_STEP_TIMEOUT_SECONDS$/m);
    expect(result.stdout).toMatch(/^limits\.memoryBytes = 1073741824 +# default$/m);
  });

  it('gives the same as JSON, and takes the file EDGE_RUNNER_CONFIG names', () => {
    const { file } = setup('[store]\nreserveBytes = 1_000_000\n');
    const result = runCli(['config', 'check', '--json'], { env: { ...ENV, EDGE_RUNNER_CONFIG: file } });
    expect(result.status).toBe(0);
    const report = JSON.parse(result.stdout) as { ok: boolean; file: string; settings: { setting: string; value: unknown; origin: unknown }[] };
    expect(report.ok).toBe(true);
    expect(report.file).toBe(file);
    expect(report.settings.find((s) => s.setting === 'store.reserveBytes')).toEqual({
      setting: 'store.reserveBytes',
      value: 1_000_000,
      origin: { source: 'file', where: file },
    });
  });

  it('refuses an unknown key with CONFIG_UNKNOWN_SETTING naming it, exit 2, in words and in JSON', () => {
    const { file } = setup('[coordinator]\nurl = "https://c.bank.example"\npollWait = 5\n');
    const words = runCli(['config', 'check', '--config', file], { env: ENV });
    expect(words.status).toBe(2);
    expect(words.stderr).toBe(
      `edge-runner: CONFIG_UNKNOWN_SETTING: The configuration file ${file} sets coordinator.pollWait, which is not a setting.\n`,
    );
    const json = runCli(['config', 'check', '--config', file, '--json'], { env: ENV });
    expect(json.status).toBe(2);
    expect(JSON.parse(json.stdout)).toEqual({
      ok: false,
      error: { code: 'CONFIG_UNKNOWN_SETTING', message: expect.stringContaining('coordinator.pollWait') },
    });
  });

  it("refuses an unknown key in runner.json's settings too", () => {
    const { w } = setup('');
    setSettings(w, { exec: { killGrace: 1 } });
    const result = runCli(['config', 'check', '--state', w.stateDir], { env: ENV });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('CONFIG_UNKNOWN_SETTING: runner.json sets exec.killGrace');
  });

  it('never prints a proxy password', () => {
    const { file } = setup('[coordinator]\nhttpsProxy = "http://svc:s3cret-Pa55@proxy.bank.example:3128"\n');
    const result = runCli(['config', 'check', '--config', file, '--json'], { env: { ...ENV, http_proxy: 'http://u:other-s3cret@p.example:8080' } });
    expect(result.status).toBe(0);
    expect(result.stdout).not.toContain('s3cret');
    expect(result.stdout).toContain('http://svc:****@proxy.bank.example:3128');
  });

  it('makes the agent and exec refuse the same unknown key before anything is recorded', () => {
    const { w, file } = setup('[exec]\nkilGraceMs = 1\n');
    const agent = runCli(['agent', '--state', w.stateDir, '--config', file], { env: ENV });
    expect(agent.status).toBe(2);
    expect(agent.stderr).toContain('CONFIG_UNKNOWN_SETTING');
    const exec = runCli(['exec', w.writeCapsule(w.capsule()), '--state', w.stateDir], { env: { ...ENV, EDGE_RUNNER_CONFIG: file } });
    expect(exec.status).toBe(2);
    expect(exec.stderr).toContain('CONFIG_UNKNOWN_SETTING');
    const status = runCli(['status', '--state', w.stateDir, '--json'], { env: ENV });
    expect(JSON.parse(status.stdout).log.size).toBe(0);
  });
  it('refuses a FIFO put where the file is named, at once (opening one to read would wait for a writer: a hang)', () => {
    const w = makeWorld();
    worlds.push(w);
    const fifo = join(w.dir, 'agent.toml');
    expect(spawnSync('mkfifo', ['-m', '0600', fifo]).status).toBe(0);
    for (const args of [
      ['config', 'check', '--config', fifo],
      ['status', '--state', w.stateDir, '--config', fifo, '--json'],
    ]) {
      const result = runCli(args, { env: ENV, timeoutMs: 15_000 });
      expect(result.status, args.join(' ')).toBe(2);
      expect(`${result.stdout}${result.stderr}`).toContain('CONFIG_INVALID');
    }
  });
});
