/**
 * The third example capsule (capsules/validate-config-repo) end to end through the built CLI, in the real
 * bwrap sandbox: `capsule pack` expands its folder and glob inputs, `exec` runs Config::Tiny's own test
 * suite (vendored) and then checks the config repo the operator grants in a TOML configuration file
 * (EDGE_RUNNER_CONFIG) with it, both reporting TAP; the
 * bundle carries TAP counts and the resource's name, never its path, and verifies offline.
 */
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCapsuleFile } from '../../runner/capsule/capsule-file.js';
import { parseManifest } from '../../runner/capsule/manifest.js';
import { parseBase64 } from '../../runner/core/base64.js';
import type { EvidencePredicate } from '../../runner/evidence/statement.js';
import { probeIsolation } from '../../runner/exec/sandbox.js';
import { runCli } from '../helpers/cli.js';
import { makeWorld, mkdirSync, readFileSync, type World } from '../helpers/world.js';

const CAPSULE_DIR = fileURLToPath(new URL('../../capsules/validate-config-repo', import.meta.url));
const bwrapUsable = probeIsolation().available === 'bwrap';
const perlThere = (() => {
  try {
    return statSync('/usr/bin/perl').isFile();
  } catch {
    return false;
  }
})();
const skipReason = !bwrapUsable ? 'bwrap cannot run here' : !perlThere ? 'no /usr/bin/perl here' : undefined;

let world: World;
let capsulePath: string;
let repo: string;
let configPath: string;

/** Every file below `dir`, relative to CAPSULE_DIR. */
function filesBelow(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? filesBelow(join(dir, entry.name)) : [relative(CAPSULE_DIR, join(dir, entry.name))],
  );
}

/** The operator's TOML configuration file (EDGE_RUNNER_CONFIG) granting `resources`, and nothing else. */
function grant(resources: Record<string, { path: string }>): void {
  const toml = Object.entries(resources).map(([name, { path }]) => `[resources.${name}]\npath = ${JSON.stringify(path)}\n`);
  writeFileSync(configPath, `# the operator's grants\n${toml.join('\n')}`, { mode: 0o600 });
}

function exec(name: string) {
  const out = join(world.dir, `${name}.bundle.json`);
  const result = runCli(['exec', capsulePath, '--state', world.stateDir, '--out', out, '--json'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', EDGE_RUNNER_CONFIG: configPath },
    timeoutMs: 300_000,
  });
  return { result, out };
}

function predicateOf(bundlePath: string): EvidencePredicate {
  const bundle = JSON.parse(readFileSync(bundlePath, 'utf8')) as { evidence: { payload: string } };
  return (JSON.parse(Buffer.from(bundle.evidence.payload, 'base64').toString('utf8')) as { predicate: EvidencePredicate }).predicate;
}

function pack(): void {
  const result = runCli(['capsule', 'pack', CAPSULE_DIR, '--key', join(world.dir, 'signer.key'), '--out', capsulePath]);
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
}

beforeAll(() => {
  world = makeWorld({ labels: ['demo'] });
  writeFileSync(join(world.dir, 'signer.key'), world.signers[0]!.toPem(), { mode: 0o600 });
  capsulePath = join(world.dir, 'validate-config-repo.capsule.json');
  repo = join(world.dir, 'config-repo');
  configPath = join(world.dir, 'edge-runner.toml');
  mkdirSync(join(repo, 'services'), { recursive: true });
  writeFileSync(join(repo, 'services', 'ledger.ini'), '[server]\nhost = db.internal\nport = 5432\n\n[pool]\nsize = 10\n');
  writeFileSync(join(repo, 'rounding.ini'), '; rounding rules\n[feature]\nrounding = bankers\n');
  writeFileSync(join(repo, 'notes.txt'), 'not an ini file, not checked\n');
});
afterAll(() => world.cleanup());

describe('the validate-config-repo example capsule', () => {
  it('ships Config::Tiny unmodified with its license, and packs its folder and glob inputs into an explicit sorted list', () => {
    expect(readFileSync(join(CAPSULE_DIR, 'vendor', 'Config-Tiny', 'LICENSE'), 'utf8')).toContain('Terms of Perl itself');
    expect(readFileSync(join(CAPSULE_DIR, 'vendor', 'Config-Tiny', 'lib', 'Config', 'Tiny.pm'), 'utf8')).toContain("our $VERSION = '2.30';");
    pack();
    const manifest = parseManifest(parseBase64(parseCapsuleFile(readFileSync(capsulePath)).envelope.payload));
    const expected = ['suite/tap.sh', 'check/t/config-repo.t', ...filesBelow(join(CAPSULE_DIR, 'vendor'))].sort((a, b) =>
      Buffer.compare(Buffer.from(a), Buffer.from(b)),
    );
    expect(manifest.inputs.map((i) => i.path)).toEqual(expected);
    expect(manifest.inputs.length).toBeGreaterThan(15);
    expect(manifest.needs).toEqual(['config-repo']);
  });

  describe.skipIf(skipReason !== undefined)(`in the bwrap sandbox (${skipReason ?? 'bwrap and perl here'})`, () => {
    it('is refused before anything runs when the operator has not granted config-repo (exit 3)', () => {
      pack();
      grant({});
      const { result } = exec('ungranted');
      expect(result.status).toBe(3);
      expect(JSON.parse(result.stdout)).toMatchObject({ status: 'rejected', code: 'CAPSULE_RESOURCE_UNGRANTED' });
    });

    it("runs Config::Tiny's own suite and the granted repo's check, both as TAP: verdict pass, counts only, the name and never the path", () => {
      pack();
      grant({ 'config-repo': { path: repo } });
      const { result, out } = exec('pass');
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      const summary = JSON.parse(result.stdout);
      expect(summary).toMatchObject({ status: 'completed', verdict: 'pass', isolation: 'bwrap' });
      expect(summary.steps.map((s: { name: string; exitCode: number }) => [s.name, s.exitCode])).toEqual([
        ['upstream-suite', 0],
        ['check-config-repo', 0],
      ]);
      const predicate = predicateOf(out);
      expect(predicate.run.resources).toEqual(['config-repo']);
      const [upstream, check] = predicate.artifacts;
      // The nine upstream test files, each a subtest of the driver's stream, all passing.
      expect(upstream).toMatchObject({ path: 'reports/upstream.tap', as: 'tap', status: 'collected' });
      expect(upstream!.summary).toEqual({
        format: 'tap',
        status: 'parsed',
        planned: 9,
        tests: 9,
        failures: 0,
        skipped: 0,
        todo: 0,
        bailedOut: false,
      });
      expect(check!.summary).toEqual({ format: 'tap', status: 'parsed', planned: 1, tests: 1, failures: 0, skipped: 0, todo: 0, bailedOut: false });
      const bundleText = readFileSync(out, 'utf8');
      const evidenceText = Buffer.from(JSON.parse(bundleText).evidence.payload, 'base64').toString('utf8');
      for (const hostDetail of [repo, world.dir, 'ledger.ini', 'db.internal', '/resources']) {
        expect(bundleText).not.toContain(hostDetail);
        expect(evidenceText).not.toContain(hostDetail);
      }
      const verified = runCli(['verify', out, '--trust', world.trustPath]);
      expect(verified.stderr).toBe('');
      expect(verified.status).toBe(0);
    });

    it('fails (exit 1) when a file in the granted repo does not parse, and the TAP counts say which report failed', () => {
      writeFileSync(join(repo, 'services', 'broken.ini'), '[server]\nthis line has no equals sign\n');
      try {
        pack();
        grant({ 'config-repo': { path: repo } });
        const { result, out } = exec('fail');
        expect(result.status).toBe(1);
        const predicate = predicateOf(out);
        expect(predicate.run.verdict).toBe('fail');
        const [upstream, check] = predicate.artifacts;
        expect(upstream!.summary).toMatchObject({ status: 'parsed', tests: 9, failures: 0 });
        expect(check!.summary).toMatchObject({ status: 'parsed', planned: 1, tests: 1, failures: 1 });
        expect(predicate.steps.find((s) => s.name === 'check-config-repo')?.exitCode).toBe(1);
      } finally {
        writeFileSync(join(repo, 'services', 'broken.ini'), '[server]\nfixed = yes\n');
      }
    });
  });
});
