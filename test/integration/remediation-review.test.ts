/**
 * Review of the remediation state machine (issue 11), through the real CLI (dist/runner/main.js): holes a
 * hostile approver, capsule signer or local user could use, each closed by the commit that added its test.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { PrivateKey } from '../../runner/core/ed25519.js';
import { formatApproval, signApproval } from '../../runner/policy/approval.js';
import { readTree } from '../../runner/remediate/tree.js';
import { sandboxLauncherSelector } from '../../runner/agent/launcher.js';
import { openRunner } from '../../runner/agent/runner.js';
import { acceptApproval } from '../../runner/remediate/approvals.js';
import { resumeChanges } from '../../runner/remediate/machine.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { LEDGER_PATCH, makeRemediationWorld, recordsOf, type RemediationWorld, type RemediationWorldOptions } from '../helpers/remediation.js';

const worlds: RemediationWorld[] = [];
const mounts: string[] = [];
afterEach(() => {
  for (const mount of mounts.splice(0)) spawnSync('umount', ['-l', mount]);
  for (const w of worlds.splice(0)) w.cleanup();
});
/** Whether a tmpfs can be mounted here (root, and mount allowed). */
function canMountTmpfs(): boolean {
  if (process.getuid?.() !== 0) return false;
  return spawnSync('sh', ['-c', 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d" && umount "$d"; s=$?; rmdir "$d"; exit $s']).status === 0;
}
const world = (options?: RemediationWorldOptions) => {
  const w = makeRemediationWorld(options);
  worlds.push(w);
  return w;
};
const rounding = (w: RemediationWorld) => readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8');
const kinds = (w: RemediationWorld, kind: string) => recordsOf(w).filter((r) => r.kind === kind);

function propose(w: RemediationWorld) {
  const { result, json } = w.exec(w.remediate({ patch: 'fix.diff' }, { 'fix.diff': LEDGER_PATCH }));
  expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
  return { bundle: String(json!.bundle), evidence: String(json!.evidenceDigest) };
}

/** An approval bound to the proposal's digests whose readable fields (runner, capsule) say something else. */
function approveNaming(
  w: RemediationWorld,
  p: { bundle: string; evidence: string },
  key: PrivateKey,
  approver: string,
  names: { runner?: string; capsule?: { id: string; digest: string } },
): string {
  const { remediation, capsule, runner } = w.remediationOf(p.bundle);
  const signedAt = new Date(Date.now() - 1000);
  const signed = signApproval(
    remediation.change,
    {
      proposal: p.evidence,
      runner: names.runner ?? runner,
      target: remediation.target,
      capsule: names.capsule ?? { id: capsule.id, digest: capsule.digest },
      approver,
      decision: 'approve',
      signedAt: signedAt.toISOString().replace(/\.\d+Z$/, 'Z'),
      notAfter: new Date(signedAt.getTime() + 3600_000).toISOString().replace(/\.\d+Z$/, 'Z'),
    },
    key,
  );
  const path = join(w.dir, `named-${approver}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, formatApproval(signed.envelope));
  return path;
}

type Approved = {
  approvals: Array<{ status: string; code?: string }>;
  change: { state: string; code?: string; counted?: number; bundlePath?: string } | null;
};
const approve = (w: RemediationWorld, ...files: string[]) => w.change(['approve', ...files]).json as unknown as Approved;

describe.skipIf(!existsSync(CLI_ENTRY))('remediation review (needs dist/)', () => {
  it('refuses approvals naming another runner or another capsule (APPROVAL_WRONG_PROPOSAL), so the change is not applied on them', () => {
    const w = world();
    const p = propose(w);
    const out = approve(
      w,
      approveNaming(w, p, w.keys.alice, 'alice', { runner: 'some-other-runner' }),
      approveNaming(w, p, w.keys.bob, 'bob', { capsule: { id: 'another-capsule', digest: `sha256:${'d'.repeat(64)}` } }),
    );
    expect(out.approvals.map((a) => a.code)).toEqual(['APPROVAL_WRONG_PROPOSAL', 'APPROVAL_WRONG_PROPOSAL']);
    expect(out.change).toMatchObject({ state: 'proposed' });
    expect(rounding(w)).toBe('mode=floor\n');
    expect(kinds(w, 'change.applying')).toHaveLength(0);
    // Two right ones apply it, and the final bundle verifies offline.
    const right = approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
    expect(right.change).toMatchObject({ state: 'verified' });
    const bundle = right.change!.bundlePath;
    expect(bundle).toBeDefined();
    expect(runCli(['verify', bundle!, '--trust', w.trustPath]).status).toBe(0);
  });

  it('refuses an approval that arrives after the change was decided (APPROVAL_CHANGE_DECIDED), so the log never says it counted', () => {
    const w = world();
    const p = propose(w);
    expect(approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob')).change).toMatchObject({ state: 'verified' });
    const late = approve(w, w.approve(p, w.keys.carol, 'carol'));
    expect(late.approvals.map((a) => a.code)).toEqual(['APPROVAL_CHANGE_DECIDED']);
    expect(late.change).toMatchObject({ state: 'verified' });
    expect(kinds(w, 'approval.accepted')).toHaveLength(2);
    expect(kinds(w, 'approval.refused').map((r) => (r.body as { code: string }).code)).toEqual(['APPROVAL_CHANGE_DECIDED']);
    expect(kinds(w, 'change.applying')).toHaveLength(1);
  });

  it('answers a veto with a signed final bundle (phase refused, CHANGE_VETOED) carrying the veto, which verifies offline; stripped of the veto it does not', () => {
    const w = world();
    const p = propose(w);
    approve(w, w.approve(p, w.keys.alice, 'alice'));
    const out = approve(w, w.approve(p, w.keys.carol, 'carol', { decision: 'reject' }));
    expect(out.change).toMatchObject({ state: 'refused', code: 'CHANGE_VETOED' });
    const path = out.change!.bundlePath;
    expect(path, 'a vetoed change has a final bundle').toBeDefined();
    const { remediation } = w.remediationOf(path!);
    expect(remediation).toMatchObject({ phase: 'refused', outcome: { code: 'CHANGE_VETOED' } });
    expect(remediation.approvals!.counted.map((a) => a.approver)).toEqual(['alice']);
    const bundle = JSON.parse(readFileSync(path!, 'utf8')) as { approvals: unknown[] };
    expect(bundle.approvals).toHaveLength(2);
    const verified = runCli(['verify', path!, '--trust', w.trustPath]);
    expect(verified.status, `${verified.stdout}${verified.stderr}`).toBe(0);
    const stripped = join(w.dir, 'stripped.bundle.json');
    writeFileSync(stripped, JSON.stringify({ ...bundle, approvals: bundle.approvals.slice(0, 1) }));
    const refused = runCli(['verify', stripped, '--trust', w.trustPath]);
    expect(refused.status).not.toBe(0);
    expect(`${refused.stdout}${refused.stderr}`).toContain('BUNDLE_APPROVALS_INVALID');
    expect(rounding(w)).toBe('mode=floor\n');
    expect(kinds(w, 'change.applying')).toHaveLength(0);
  });

  it('does not sign a change verified whose target a local user edited after the verification copy (the health check passed): the digest is read again before the seal', () => {
    // The health check runs on the real target after the copy: an edit it makes stands for a local user's then.
    const w = world({ healthCheck: ['/bin/sh', '-c', 'echo planted > docs/other.txt'] });
    const p = propose(w);
    const out = approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
    const now = readTree(w.target, { maxBytes: 1 << 20, maxEntries: 1000 }).digest;
    const path = out.change!.bundlePath!;
    const { remediation } = w.remediationOf(path);
    // Whatever the outcome, the signed target digest is the one the target has.
    expect(remediation.outcome!.targetDigest).toBe(now);
    expect(out.change).toMatchObject({ state: 'rollback-failed', code: 'CHANGE_APPLY_MISMATCH' });
    expect(rounding(w)).toBe('mode=floor\n');
  });

  it.runIf(canMountTmpfs())(
    'takes on, in the same long-lived process, a change whose final bundle could not be sealed (the state disk filled during the verification), instead of leaving it verifying until a restart',
    async () => {
      const w = world();
      // The state folder on a small tmpfs of its own; the health check fills it (a full disk at the sealing).
      const aside = mkdtempSync(join(tmpdir(), 'edge-runner-state-aside-'));
      execFileSync('cp', ['-a', `${w.stateDir}/.`, aside]);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', w.stateDir]);
      mounts.push(w.stateDir);
      execFileSync('cp', ['-a', `${aside}/.`, w.stateDir]);
      rmSync(aside, { recursive: true, force: true });
      const fill = join(w.stateDir, 'fill');
      const config = JSON.parse(readFileSync(w.configPath, 'utf8')) as { targets: { config: Record<string, unknown> } };
      config.targets.config.healthCheck = ['/bin/sh', '-c', `cat /dev/zero > ${fill} 2>/dev/null; exit 0`];
      writeFileSync(w.configPath, JSON.stringify({ ...config, store: { reserveBytes: 1 } }));
      const p = propose(w);
      const file = JSON.parse(readFileSync(w.configPath, 'utf8')) as Record<string, unknown>;
      const ctx = openRunner(w.stateDir, { launcher: sandboxLauncherSelector(), config: { file: file as never, env: w.env } });
      try {
        await acceptApproval(ctx, readFileSync(w.approve(p, w.keys.alice, 'alice')), 'file');
        await expect(acceptApproval(ctx, readFileSync(w.approve(p, w.keys.bob, 'bob')), 'file')).rejects.toThrow();
        const stuck = ctx.store.changes()[0]!;
        expect(stuck.state).toBe('verifying');
        // Room again; the agent's next round (resumeChanges in its run lane) ends the change.
        rmSync(fill);
        const outcomes = await resumeChanges(ctx);
        expect(outcomes.map((o) => o.state)).toEqual(['rolled-back']);
        expect(ctx.store.changes()[0]).toMatchObject({ state: 'rolled-back', code: 'CHANGE_INTERRUPTED' });
        expect(rounding(w)).toBe('mode=floor\n');
      } finally {
        ctx.close();
      }
    },
    60_000,
  );
});
