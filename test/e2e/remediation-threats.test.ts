/**
 * The threat rows of issue 11, each through the real CLI (dist/runner/main.js): approvals that must not
 * count, changes that must never be applied, and what a failed apply leaves (the pre-state, by digest).
 */
import { existsSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readTree } from '../../runner/remediate/tree.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { LEDGER_PATCH, makeRemediationWorld, recordsOf, type RemediationWorld, type RemediationWorldOptions } from '../helpers/remediation.js';

const worlds: RemediationWorld[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});
const world = (options?: RemediationWorldOptions) => {
  const w = makeRemediationWorld(options);
  worlds.push(w);
  return w;
};

const CAPS = { maxBytes: 1 << 20, maxEntries: 1000 };
const rounding = (w: RemediationWorld) => readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8');

/** `edge-runner verify` of a bundle against the world's trust document alone: exit 0. */
function verifiesOffline(w: RemediationWorld, bundle: string): void {
  const verified = runCli(['verify', bundle, '--trust', w.trustPath]);
  expect(verified.status, `${verified.stdout}${verified.stderr}`).toBe(0);
}
const kinds = (w: RemediationWorld, prefix: string) => recordsOf(w).filter((r) => r.kind.startsWith(prefix));

function propose(
  w: RemediationWorld,
  change: Record<string, unknown> = { patch: 'fix.diff' },
  files: Record<string, string> = { 'fix.diff': LEDGER_PATCH },
) {
  const { result, json } = w.exec(w.remediate(change, files));
  expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
  const bundle = String(json!.bundle);
  return { bundle, evidence: String(json!.evidenceDigest), json: json!, ...w.remediationOf(bundle) };
}

type Approved = {
  approvals: Array<{ status: string; code?: string; approver?: string }>;
  change: { state: string; code?: string; counted?: number } | null;
};
function approve(w: RemediationWorld, ...files: string[]): { status: number | null; out: Approved } {
  const { result, json } = w.change(['approve', ...files]);
  expect(json, `${result.stdout}${result.stderr}`).toBeDefined();
  return { status: result.status, out: json as unknown as Approved };
}

describe.skipIf(!existsSync(CLI_ENTRY))('governed remediation threat rows (needs dist/)', () => {
  describe('approvals that do not count', () => {
    it('refuses an approval for another change with APPROVAL_WRONG_CHANGE', () => {
      const w = world();
      const p = propose(w);
      const { status, out } = approve(w, w.approve(p, w.keys.alice, 'alice', { changeDigest: `sha256:${'c'.repeat(64)}` }));
      expect(status).toBe(3);
      expect(out.approvals[0]).toMatchObject({ status: 'refused', code: 'APPROVAL_WRONG_CHANGE' });
      expect(kinds(w, 'approval.refused').map((r) => (r.body as { code?: string }).code)).toEqual(['APPROVAL_WRONG_CHANGE']);
    });

    it('counts the same approval given twice once (decided once, by digest), and a second approval by the same person not at all', () => {
      const w = world();
      const p = propose(w);
      const file = w.approve(p, w.keys.alice, 'alice');
      expect(approve(w, file).out.approvals[0]!.status).toBe('accepted');
      const again = approve(w, file);
      expect(again.out.approvals[0]!.status).toBe('known');
      const second = approve(w, w.approve(p, w.keys.alice, 'alice', { notAfter: new Date(Date.now() + 3600_000) }));
      expect(second.out.approvals[0]!.code).toBe('APPROVAL_DUPLICATE_PERSON');
      expect(second.out.change).toMatchObject({ state: 'proposed', counted: 1 });
      expect(rounding(w)).toBe('mode=floor\n');
      expect(kinds(w, 'approval.accepted')).toHaveLength(1);
    });

    it('counts one person with two keys once (APPROVAL_DUPLICATE_PERSON), so two of her approvals do not apply a two-person change', () => {
      const w = world();
      const p = propose(w);
      const { out } = approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.alice2, 'alice'));
      expect(out.approvals.map((a) => a.status)).toContain('refused');
      expect(out.approvals.find((a) => a.status === 'refused')!.code).toBe('APPROVAL_DUPLICATE_PERSON');
      expect(out.change).toMatchObject({ state: 'proposed', counted: 1 });
      expect(rounding(w)).toBe('mode=floor\n');
    });

    it('refuses an approval signed by a key without the approver role with APPROVAL_SIGNATURE', () => {
      const w = world();
      const p = propose(w);
      const { status, out } = approve(w, w.approve(p, w.root, 'root-1'));
      expect(status).toBe(3);
      expect(out.approvals[0]!.code).toBe('APPROVAL_SIGNATURE');
    });

    it("refuses the capsule signer's approval of their own change (another key, same person) with APPROVAL_SELF", () => {
      const w = world({
        policy: { surfaces: { ledger: ['ledger/**'] }, rules: { ledger: { approvals: 1 } }, default: { approvals: 1 }, noAutonomy: ['ledger'] },
      });
      const p = propose(w);
      const { status, out } = approve(w, w.approve(p, w.keys.signerApprover, 'signer-1'));
      expect(status).toBe(3);
      expect(out.approvals[0]!.code).toBe('APPROVAL_SELF');
      expect(out.change!.state).toBe('proposed');
      expect(rounding(w)).toBe('mode=floor\n');
    });

    it('refuses an expired approval with APPROVAL_EXPIRED', () => {
      const w = world();
      const p = propose(w);
      const signedAt = new Date(Date.now() - 3 * 3600_000);
      const { out } = approve(w, w.approve(p, w.keys.alice, 'alice', { signedAt, notAfter: new Date(Date.now() - 3600_000) }));
      expect(out.approvals[0]!.code).toBe('APPROVAL_EXPIRED');
    });

    it('leaves a change below its derived tier proposed and its target untouched (one ledger owner of two)', () => {
      const w = world();
      const p = propose(w);
      const { status, out } = approve(w, w.approve(p, w.keys.alice, 'alice'));
      expect(status).toBe(0);
      expect(out.change).toMatchObject({ state: 'proposed', counted: 1 });
      expect(kinds(w, 'change.applying')).toHaveLength(0);
      expect(rounding(w)).toBe('mode=floor\n');
    });

    it('refuses an approver outside the required group with APPROVAL_GROUP', () => {
      const w = world({
        policy: {
          surfaces: { ledger: ['ledger/**'] },
          rules: { ledger: { approvals: 1, group: 'ledger-owners' } },
          default: { approvals: 1 },
          groups: { 'ledger-owners': ['alice', 'bob'] },
        },
      });
      const p = propose(w);
      expect(approve(w, w.approve(p, w.keys.dave, 'dave')).out.approvals[0]!.code).toBe('APPROVAL_GROUP');
    });

    it('refuses a change a ledger owner rejected (CHANGE_VETOED), whatever approvals come after', () => {
      const w = world();
      const p = propose(w);
      const { status, out } = approve(w, w.approve(p, w.keys.carol, 'carol', { decision: 'reject' }));
      expect(status).toBe(1);
      expect(out.change).toMatchObject({ state: 'refused', code: 'CHANGE_VETOED' });
      approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
      expect(rounding(w)).toBe('mode=floor\n');
      expect(kinds(w, 'change.applying')).toHaveLength(0);
    });
  });

  describe('a hostile capsule signer', () => {
    it('cannot reach the real target from the staged validation, nor change the post-state approvers sign by editing the staged copy', () => {
      const w = world({ grantTarget: true });
      const hostile = [
        'echo planted > "$EDGE_RUNNER_RESOURCE_LEDGER/ledger/rounding.txt" 2>/dev/null',
        'echo more > "$EDGE_RUNNER_TARGET/ledger/extra.txt"',
        'echo tampered > "$EDGE_RUNNER_TARGET/ledger/rounding.txt"',
        'true',
      ].join('; ');
      const { result, json } = w.exec(
        w.remediate(
          { patch: 'fix.diff' },
          { 'fix.diff': LEDGER_PATCH },
          { needs: ['ledger'], steps: [{ name: 'check', run: ['/bin/sh', '-c', hostile] }] },
        ),
      );
      expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
      expect(rounding(w)).toBe('mode=floor\n');
      const p = { bundle: String(json!.bundle), evidence: String(json!.evidenceDigest) };
      const { remediation } = w.remediationOf(p.bundle);
      const done = approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
      expect(done.out.change!.state).toBe('verified');
      expect(readTree(w.target, CAPS).digest).toBe(remediation.postState);
      expect(rounding(w)).toBe('mode=half-even\n');
      expect(existsSync(join(w.target, 'ledger', 'extra.txt'))).toBe(false);
    });
  });

  describe('tiers the capsule cannot lower', () => {
    it('derives tier 1 for a payments change declared as tier 0, says the declaration was understated, and does not auto-apply it', () => {
      const w = world();
      writeFileSync(join(w.target, 'docs', 'fees.txt'), 'x\n');
      const p = propose(
        w,
        { files: [{ path: 'payments/fees.txt', action: 'add', from: 'fees.txt' }], declaredTier: { approvals: 0 } },
        { 'fees.txt': 'fee=1\n' },
      );
      expect(p.remediation.tier.approvals).toBe(1);
      expect(p.remediation.tier.declared).toEqual({ approvals: 0, comparison: 'understated' });
      expect((p.json.change as { state: string }).state).toBe('proposed');
      expect(existsSync(join(w.target, 'payments', 'fees.txt'))).toBe(false);
    });

    it('auto-applies a docs-only change (tier 0, staged validation passed) and says no human was required', () => {
      const w = world();
      const p = propose(w, { files: [{ path: 'docs/readme.md', action: 'replace', from: 'readme.md' }] }, { 'readme.md': '# ledger v2\n' });
      const change = p.json.change as { state: string; bundlePath: string };
      expect(change.state).toBe('verified');
      expect(readFileSync(join(w.target, 'docs', 'readme.md'), 'utf8')).toBe('# ledger v2\n');
      const final = w.remediationOf(change.bundlePath).remediation;
      expect(final.approvals).toEqual({ counted: [], autonomous: true });
      verifiesOffline(w, change.bundlePath);
    });
  });

  describe('changes that are never applied', () => {
    it('refuses a target edited after the proposal with CHANGE_STALE and never writes it', () => {
      const w = world();
      const p = propose(w);
      writeFileSync(join(w.target, 'ledger', 'rounding.txt'), 'mode=ceil\n');
      const { status, out } = approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
      expect(status).toBe(1);
      expect(out.change).toMatchObject({ state: 'refused', code: 'CHANGE_STALE' });
      expect(rounding(w)).toBe('mode=ceil\n');
      expect(kinds(w, 'change.applied')).toHaveLength(0);
      const bundle = (out.change as unknown as { bundlePath: string }).bundlePath;
      expect(w.remediationOf(bundle).remediation).toMatchObject({ phase: 'refused', outcome: { code: 'CHANGE_STALE' } });
      verifiesOffline(w, bundle);
    });

    it('applies only the first of two proposals made against the same pre-state; the second is then stale (CHANGE_STALE)', () => {
      const w = world();
      const first = propose(w);
      const second = propose(w, { files: [{ path: 'ledger/limits.txt', action: 'add', from: 'limits.txt' }] }, { 'limits.txt': 'max=10\n' });
      expect(second.remediation.preState).toBe(first.remediation.preState);
      expect(approve(w, w.approve(first, w.keys.alice, 'alice'), w.approve(first, w.keys.bob, 'bob')).out.change!.state).toBe('verified');
      const late = approve(w, w.approve(second, w.keys.alice, 'alice'), w.approve(second, w.keys.carol, 'carol'));
      expect(late.out.change).toMatchObject({ state: 'refused', code: 'CHANGE_STALE' });
      expect(existsSync(join(w.target, 'ledger', 'limits.txt'))).toBe(false);
      expect(kinds(w, 'change.applying')).toHaveLength(1);
    });

    it('rejects a hunk that does not apply exactly with CHANGE_HUNK_FAILED before the nonce burns', () => {
      const w = world();
      const patch = LEDGER_PATCH.replace('-mode=floor', '-mode=round');
      const { result, json } = w.exec(w.remediate({ patch: 'fix.diff' }, { 'fix.diff': patch }));
      expect(result.status).toBe(3);
      expect(json!.code).toBe('CHANGE_HUNK_FAILED');
      expect(kinds(w, 'capsule.rejected').map((r) => (r.body as { code?: string }).code)).toEqual(['CHANGE_HUNK_FAILED']);
      expect(kinds(w, 'capsule.accepted')).toHaveLength(0);
    });

    it.each([
      ['..', ['--- a/../outside.txt', '+++ b/../outside.txt', '@@ -0,0 +1 @@', '+x', ''].join('\n')],
      ['an absolute path', ['--- /dev/null', '+++ b//etc/edge-runner-outside', '@@ -0,0 +1 @@', '+x', ''].join('\n')],
    ])('rejects a patch path escaping the target (%s) with CHANGE_PATH_ESCAPE', (_name, patch) => {
      const w = world();
      const { result, json } = w.exec(w.remediate({ patch: 'fix.diff' }, { 'fix.diff': patch }));
      expect(result.status, result.stderr).toBe(3);
      expect(json!.code).toBe('CHANGE_PATH_ESCAPE');
    });

    it('rejects a change through a symlink inside the target pointing outside it with CHANGE_PATH_ESCAPE', () => {
      const w = world();
      symlinkSync(w.dir, join(w.target, 'out'));
      const { result, json } = w.exec(w.remediate({ files: [{ path: 'out/planted.txt', action: 'add', from: 'x.txt' }] }, { 'x.txt': 'x\n' }));
      expect(result.status, result.stderr).toBe(3);
      expect(json!.code).toBe('CHANGE_PATH_ESCAPE');
      expect(existsSync(join(w.dir, 'planted.txt'))).toBe(false);
    });

    it('rejects a change that changes nothing with CHANGE_EMPTY', () => {
      const w = world();
      const { result, json } = w.exec(
        w.remediate({ files: [{ path: 'ledger/rounding.txt', action: 'replace', from: 'same.txt' }] }, { 'same.txt': 'mode=floor\n' }),
      );
      expect(result.status).toBe(3);
      expect(json!.code).toBe('CHANGE_EMPTY');
    });

    it('rejects a capsule naming an undeclared target with CAPSULE_TARGET_UNDECLARED, its nonce unburnt', () => {
      const w = world();
      const { result, json } = w.exec(w.remediate({ target: 'elsewhere', patch: 'fix.diff' }, { 'fix.diff': LEDGER_PATCH }));
      expect(result.status).toBe(3);
      expect(json!.code).toBe('CAPSULE_TARGET_UNDECLARED');
      expect(kinds(w, 'capsule.accepted')).toHaveLength(0);
    });

    it('rejects a cited reproduction that is not evidence of this runner with CHANGE_REPRODUCTION_UNKNOWN', () => {
      const w = world();
      const { result, json } = w.exec(w.remediate({ patch: 'fix.diff', reproductions: [`sha256:${'d'.repeat(64)}`] }, { 'fix.diff': LEDGER_PATCH }));
      expect(result.status).toBe(3);
      expect(json!.code).toBe('CHANGE_REPRODUCTION_UNKNOWN');
    });

    it('refuses a proposal whose staged validation failed (CHANGE_VALIDATION_FAILED): approvals cannot apply it', () => {
      const w = world();
      const { result, json } = w.exec(
        w.remediate(
          { patch: 'fix.diff' },
          { 'fix.diff': LEDGER_PATCH },
          { steps: [{ name: 'check', run: ['/bin/sh', '-c', 'grep -q floor "$EDGE_RUNNER_TARGET/ledger/rounding.txt"'] }] },
        ),
      );
      expect(result.status).toBe(1);
      expect(json!.change).toMatchObject({ state: 'refused', code: 'CHANGE_VALIDATION_FAILED' });
      const p = { bundle: String(json!.bundle), evidence: String(json!.evidenceDigest) };
      approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
      expect(rounding(w)).toBe('mode=floor\n');
    });
  });

  describe('rolled back to the pre-state', () => {
    it('rolls back a change whose health check fails after apply, the target digest equal to the pre-state again', () => {
      const w = world({ healthCheck: ['/bin/sh', '-c', 'grep -q floor ledger/rounding.txt'] });
      const before = readTree(w.target, CAPS).digest;
      const p = propose(w);
      expect(p.remediation.preState).toBe(before);
      const { status, out } = approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
      expect(status).toBe(1);
      expect(out.change).toMatchObject({ state: 'rolled-back', code: 'CHANGE_HEALTH_CHECK_FAILED' });
      expect(readTree(w.target, CAPS).digest).toBe(before);
      expect(rounding(w)).toBe('mode=floor\n');
      const final = w.remediationOf((out.change as unknown as { bundlePath: string }).bundlePath).remediation;
      expect(final).toMatchObject({ phase: 'rolled-back', outcome: { code: 'CHANGE_HEALTH_CHECK_FAILED', targetDigest: before } });
      expect(final.outcome!.healthCheck!.status).toBe('failed');
      verifiesOffline(w, (out.change as unknown as { bundlePath: string }).bundlePath);
      expect(kinds(w, 'change.').map((r) => r.kind)).toEqual([
        'change.staged',
        'change.proposed',
        'change.applying',
        'change.applied',
        'change.verifying',
        'change.rolling-back',
        'change.rolled-back',
      ]);
    });
  });

  it('says rollback-failed when the target was also edited during the verification (a local user), and status is critical with STATUS_CHANGE_ROLLBACK_FAILED', () => {
    const w = world({ healthCheck: ['/bin/sh', '-c', 'echo planted > docs/other.txt; exit 1'] });
    const before = readTree(w.target, CAPS).digest;
    const p = propose(w);
    const { status, out } = approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
    expect(status).toBe(1);
    expect(out.change).toMatchObject({ state: 'rollback-failed', code: 'CHANGE_HEALTH_CHECK_FAILED' });
    expect(rounding(w)).toBe('mode=floor\n'); // every planned path restored; the stranger's file is not the runner's to remove
    expect(readTree(w.target, CAPS).digest).not.toBe(before);
    const report = runCli(['status', '--state', w.stateDir, '--json'], { env: w.env });
    expect(report.status).toBe(2);
    const json = JSON.parse(report.stdout) as { problems: Array<{ code: string }>; changes: { rollbackFailed: unknown[] } };
    expect(json.problems.map((p) => p.code)).toContain('STATUS_CHANGE_ROLLBACK_FAILED');
    expect(json.changes.rollbackFailed).toHaveLength(1);
  });

  it('lists and shows changes with their state', () => {
    const w = world();
    const p = propose(w);
    const list = w.change(['list']);
    expect(list.result.status).toBe(0);
    expect((list.json!.changes as Array<{ change: string; state: string }>)[0]).toMatchObject({ change: p.remediation.change, state: 'proposed' });
    const report = JSON.parse(runCli(['status', '--state', w.stateDir, '--json'], { env: w.env }).stdout) as { changes: { pending: number } };
    expect(report.changes.pending).toBe(1);
    const shown = w.change(['show', p.remediation.change]);
    expect(shown.json).toMatchObject({ change: p.remediation.change, required: 2, preState: p.remediation.preState });
    const unknown = runCli(['change', 'show', `sha256:${'e'.repeat(64)}`, '--state', w.stateDir], { env: w.env });
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain('CHANGE_UNKNOWN');
  });
});
