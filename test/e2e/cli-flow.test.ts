/** The README's flow through the built CLI: the demo script end to end, and the usage contract. */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { expectDemoOutput } from '../helpers/demo-output.js';

const demo = fileURLToPath(new URL('../../scripts/demo.mjs', import.meta.url));

describe('the demo flow through the built CLI', () => {
  it('starts a coordinator and an agent, runs both capsules through them, holds a bundle in the outbox while the coordinator is down, refuses a tampered capsule, and governs two remediations (one applied on two approvals, one rolled back)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-runner-demo-test-'));
    try {
      const result = spawnSync(process.execPath, [demo], {
        env: { PATH: process.env.PATH, EDGE_RUNNER_DEMO_DIR: dir },
        encoding: 'utf8',
        timeout: 300_000,
      });
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      expectDemoOutput(result.stdout);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 330_000);
});

describe('the command-line contract', () => {
  it('exits 2 with a usage message for an unknown command or a missing option', () => {
    expect(runCli(['frobnicate']).status).toBe(2);
    const missing = runCli(['exec', 'x.capsule.json']);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/--state/);
  });

  it('exits 2 with STATE_MISSING when the state folder does not exist', () => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-runner-cli-'));
    try {
      writeFileSync(join(dir, 'x.capsule.json'), '{}');
      const result = runCli(['exec', join(dir, 'x.capsule.json'), '--state', join(dir, 'nope')]);
      expect(result.status).toBe(2);
      expect(result.stderr).toContain('STATE_MISSING');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keygen writes a 0600 private key, never overwrites it, and a key others can read is refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-runner-keys-'));
    try {
      const first = runCli(['keygen', '--out', join(dir, 'k')]);
      expect(first.status).toBe(0);
      expect(first.stdout.trim()).toMatch(/^[0-9a-f]{64}$/);
      expect(statSync(join(dir, 'k.key')).mode & 0o777).toBe(0o600);
      const again = runCli(['keygen', '--out', join(dir, 'k')]);
      expect(again.status).toBe(2);
      expect(readFileSync(join(dir, 'k.key'), 'utf8')).toContain('PRIVATE KEY');
      chmodSync(join(dir, 'k.key'), 0o644);
      writeFileSync(join(dir, 'trust.json'), '{}');
      const refused = runCli(['trust', 'sign', join(dir, 'trust.json'), '--key', join(dir, 'k.key'), '--out', join(dir, 't.json')]);
      expect(refused.status).toBe(2);
      expect(refused.stderr).toContain('STATE_KEY_PERMISSIONS');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('prints its version', () => {
    const result = runCli(['--version']);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/^edge-runner \d+\.\d+\.\d+/);
  });
});
