/**
 * Governed remediation through the real CLI (dist/runner/main.js): a remediate capsule proposed by `exec`
 * (staged, validated on the copy, the real target untouched), approvals given with `change approve`, the
 * change applied, verified, and its final bundle carrying the approvals it relied on.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { auditLog, LEDGER_PATCH, makeRemediationWorld, type RemediationWorld } from '../helpers/remediation.js';

const worlds: RemediationWorld[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});
const world = (options?: Parameters<typeof makeRemediationWorld>[0]) => {
  const w = makeRemediationWorld(options);
  worlds.push(w);
  return w;
};

/** Proposes the ledger rounding fix; returns the proposal's bundle path and evidence digest. */
function propose(w: RemediationWorld) {
  const { result, json } = w.exec(w.remediate({ patch: 'fix.diff' }, { 'fix.diff': LEDGER_PATCH }));
  expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
  const bundle = String(json!.bundle);
  return { bundle, evidence: String(json!.evidenceDigest), ...w.remediationOf(bundle) };
}

describe.skipIf(!existsSync(CLI_ENTRY))('governed remediation through the CLI (needs dist/)', () => {
  it('proposes without touching the target, then applies on two ledger owners and seals a final bundle with their approvals', () => {
    const w = world();
    const proposal = propose(w);
    expect(proposal.remediation.phase).toBe('proposed');
    expect(proposal.remediation.tier.approvals).toBe(2);
    expect(proposal.remediation.footprint.surfaces).toEqual(['ledger']);
    expect(proposal.remediation.footprint.dependents).toEqual(['payments']);
    expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=floor\n');

    const one = w.change(['approve', w.approve(proposal, w.keys.alice, 'alice')]);
    expect(one.result.status, one.result.stderr).toBe(0);
    expect((one.json!.change as { state: string }).state).toBe('proposed');
    expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=floor\n');

    const two = w.change(['approve', w.approve(proposal, w.keys.bob, 'bob')]);
    expect(two.result.status, `${two.result.stdout}${two.result.stderr}`).toBe(0);
    const change = two.json!.change as { state: string; bundlePath: string };
    expect(change.state).toBe('verified');
    expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=half-even\n');
    const final = w.remediationOf(change.bundlePath);
    expect(final.remediation.phase).toBe('applied');
    expect(final.remediation.approvals!.counted.map((a) => a.approver)).toEqual(['alice', 'bob']);
    expect(final.remediation.outcome!.targetDigest).toBe(proposal.remediation.postState);
    const bundle = JSON.parse(readFileSync(change.bundlePath, 'utf8')) as { approvals: unknown[] };
    expect(bundle.approvals).toHaveLength(2);
    // Offline, against the trust document alone: the proposal, and the final bundle with its approvals.
    for (const path of [proposal.bundle, change.bundlePath]) {
      const verified = runCli(['verify', path, '--trust', w.trustPath]);
      expect(verified.status, `${verified.stdout}${verified.stderr}`).toBe(0);
    }
    // The before-bytes kept for a rollback are gone once the change is verified.
    expect(existsSync(join(w.stateDir, 'changes', proposal.remediation.change.slice('sha256:'.length)))).toBe(false);
    const audit = auditLog(w);
    expect(audit.status, `${audit.stdout}${audit.stderr}`).toBe(0);
  });

  it("carries the post-apply validation's collected artifacts in the final bundle, as its steps", () => {
    const w = world();
    const steps = [{ name: 'check', run: ['/bin/sh', '-c', 'mkdir -p out && cp "$EDGE_RUNNER_TARGET/ledger/rounding.txt" out/rounding.txt'] }];
    const { json } = w.exec(
      w.remediate({ patch: 'fix.diff' }, { 'fix.diff': LEDGER_PATCH }, { steps, collect: [{ path: 'out/rounding.txt', as: 'file' }] }),
    );
    const proposal = { bundle: String(json!.bundle), evidence: String(json!.evidenceDigest) };
    const two = w.change(['approve', w.approve(proposal, w.keys.alice, 'alice'), w.approve(proposal, w.keys.bob, 'bob')]);
    const change = two.json!.change as { state: string; bundlePath: string };
    expect(change.state).toBe('verified');
    const final = JSON.parse(readFileSync(change.bundlePath, 'utf8')) as { evidence: { payload: string } };
    const statement = JSON.parse(Buffer.from(final.evidence.payload, 'base64').toString('utf8')) as {
      subject: Array<{ name: string; digest: { sha256: string } }>;
      predicate: { steps: Array<{ name: string; status: string }>; artifacts: Array<{ path: string; digest: string }> };
    };
    expect(statement.predicate.steps.map((s) => [s.name, s.status])).toEqual([['check', 'succeeded']]);
    // The copy the validation read was the applied target: the digest of its half-even file.
    const applied = createHash('sha256').update('mode=half-even\n').digest('hex');
    expect(statement.predicate.artifacts).toEqual([expect.objectContaining({ path: 'out/rounding.txt', digest: `sha256:${applied}` })]);
    expect(statement.subject.map((s) => s.name)).toContain('artifact/out/rounding.txt');
    const verified = runCli(['verify', change.bundlePath, '--trust', w.trustPath]);
    expect(verified.status, verified.stdout).toBe(0);
  });

  describe('a cited reproduction', () => {
    /** A reproduce capsule reading the deployed file through the grant: it fails while the defect is there. */
    function reproduce(w: RemediationWorld): string {
      const file = w.capsule({
        kind: 'reproduce',
        needs: ['ledger'],
        steps: [{ name: 'rounding', run: ['/bin/sh', '-c', 'grep -q half-even "$EDGE_RUNNER_RESOURCE_LEDGER/ledger/rounding.txt"'] }],
      });
      const { result, json } = w.exec(w.writeCapsule(file, 'reproduce.capsule.json'));
      expect(result.status, `${result.stdout}${result.stderr}`).toBe(1);
      expect(json!.verdict).toBe('fail');
      return String(json!.evidenceDigest);
    }

    it('is carried by the proposal as this runner ran it, run again after the apply, and must then pass', () => {
      const w = world({ grantTarget: true });
      const evidence = reproduce(w);
      const { result, json } = w.exec(w.remediate({ patch: 'fix.diff', reproductions: [evidence] }, { 'fix.diff': LEDGER_PATCH }));
      expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
      const proposal = { bundle: String(json!.bundle), evidence: String(json!.evidenceDigest) };
      expect(w.remediationOf(proposal.bundle).remediation.reproductions).toEqual([expect.objectContaining({ evidence, verdict: 'fail' })]);
      const two = w.change(['approve', w.approve(proposal, w.keys.alice, 'alice'), w.approve(proposal, w.keys.bob, 'bob')]);
      const change = two.json!.change as { state: string; bundlePath: string };
      expect(change.state, `${two.result.stdout}${two.result.stderr}`).toBe('verified');
      const again = w.remediationOf(change.bundlePath).remediation.outcome!.reproductions!;
      expect(again).toHaveLength(1);
      expect(again[0]!.verdict).toBe('pass');
      expect(again[0]!.evidence).not.toBe(evidence);
    });

    it('that still fails after the apply rolls the change back (CHANGE_REPRODUCTION_FAILED)', () => {
      const w = world({ grantTarget: true });
      const evidence = reproduce(w);
      const notAFix = LEDGER_PATCH.replace('+mode=half-even', '+mode=round');
      const { json } = w.exec(w.remediate({ patch: 'fix.diff', reproductions: [evidence] }, { 'fix.diff': notAFix }));
      const proposal = { bundle: String(json!.bundle), evidence: String(json!.evidenceDigest) };
      const two = w.change(['approve', w.approve(proposal, w.keys.alice, 'alice'), w.approve(proposal, w.keys.bob, 'bob')]);
      expect(two.result.status).toBe(1);
      expect(two.json!.change).toMatchObject({ state: 'rolled-back', code: 'CHANGE_REPRODUCTION_FAILED' });
      expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=floor\n');
    });
  });
});
