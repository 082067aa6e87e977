/**
 * `edge-runner approve` through the built CLI: it prints what the person approves (from a proposal bundle it
 * verified), signs only what the runner would count, and writes the approval once. The proposal is built
 * with the runner's own builders (test/helpers/approvals.ts) until the propose step writes real ones.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeKeyPair } from '../../runner/state/keyfile.js';
import { verifyApproval } from '../../runner/policy/approval.js';
import { countApprovals } from '../../runner/policy/count.js';
import type { PrivateKey } from '../../runner/core/ed25519.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { makeApprovalWorld, TEST_POLICY, type ApprovalWorld, type Proposal } from '../helpers/approvals.js';

describe('edge-runner approve', () => {
  let world: ApprovalWorld;
  let proposal: Proposal;
  let proposalPath: string;
  const keyFiles = new Map<PrivateKey, string>();
  let outs = 0;

  beforeAll(() => {
    world = makeApprovalWorld();
    proposal = world.proposal({ description: 'FIN-1042 rounding \u001b[2K\rOK signed by the board' });
    proposalPath = world.write('proposal.bundle.json', proposal.bytes);
  });
  afterAll(() => world.cleanup());

  const keyFile = (key: PrivateKey) => {
    if (!keyFiles.has(key)) keyFiles.set(key, writeKeyPair(join(world.dir, `key-${keyFiles.size}`), key).privatePath);
    return keyFiles.get(key)!;
  };
  const approve = (key: PrivateKey, extra: string[] = [], options: { bundle?: string; input?: string; trust?: string } = {}) => {
    const out = join(world.dir, `approval-${++outs}.json`);
    const args = [
      'approve',
      options.bundle ?? proposalPath,
      '--key',
      keyFile(key),
      '--trust',
      options.trust ?? world.trustPath,
      '--out',
      out,
      ...extra,
    ];
    if (options.input === undefined) return { ...runCli(args), out };
    const r = spawnSync(process.execPath, [CLI_ENTRY, ...args], {
      encoding: 'utf8',
      input: options.input,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      timeout: 60_000,
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, out };
  };

  describe('when a ledger owner approves with --yes', () => {
    it('prints the validation, the footprint, the tier and its rules, then writes an approval that counts', () => {
      const r = approve(world.keys.alice, ['--yes', '--not-after', '12h']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(`Proposal ${proposal.evidenceDigest}`);
      expect(r.stdout).toContain('Staged validation: verdict pass');
      expect(r.stdout).toContain('step check: succeeded, exit 0');
      expect(r.stdout).toContain('modify ledger/rounding.txt  +1 -1  [ledger]');
      expect(r.stdout).toContain('dependents (they depend on a touched surface): payments');
      expect(r.stdout).toContain('Tier: 2 approvals by distinct persons');
      expect(r.stdout).toContain('ledger (touched, its rule): 2 from ledger-owners, no autonomy');
      expect(r.stdout).toContain('payments (dependent, its rule): 1 from any approver');
      expect(r.stdout).toContain('declared by the capsule: 1 approval, understated (the declaration was wrong; the derived tier applies)');
      expect(r.stdout).toContain(`APPROVE change ${proposal.changeDigest}`);
      expect((statSync(r.out).mode & 0o777).toString(8)).toBe('644');
      const alice = verifyApproval(readFileSync(r.out), world.trust);
      expect(alice).toMatchObject({ approver: 'alice', changeDigest: proposal.changeDigest });
      expect(alice.predicate).toMatchObject({ proposal: proposal.evidenceDigest, runner: world.runnerId, target: 'config', decision: 'approve' });
      expect(Date.parse(alice.predicate.notAfter) - Date.parse(alice.predicate.signedAt)).toBe(12 * 3600_000);
      const bob = verifyApproval(readFileSync(approve(world.keys.bob, ['--yes']).out), world.trust);
      const count = countApprovals({
        approvals: [alice, bob],
        changeDigest: proposal.changeDigest,
        proposal: proposal.evidenceDigest,
        tier: proposal.remediation.tier,
        capsuleSigners: [world.keys.signer.keyid],
        trust: world.trust,
        decisionTime: new Date(),
      });
      expect(count.satisfied).toBe(true);
    });

    it("prints the capsule signer's free text escaped, so it cannot forge a line", () => {
      const r = approve(world.keys.carol, ['--yes']);
      expect(r.stdout).toContain('description: FIN-1042 rounding \\u001b[2K\\u000dOK signed by the board');
      expect(r.stdout).not.toContain('\u001b');
    });
  });

  describe('when asked for confirmation', () => {
    it('signs on yes', () => {
      const r = approve(world.keys.alice, [], { input: 'yes\n' });
      expect([r.status, existsSync(r.out)]).toEqual([0, true]);
      expect(r.stderr).toContain('Type yes to sign');
    });

    it('signs nothing on anything else or on no input, with exit 1', () => {
      for (const input of ['no\n', 'y\n', '']) {
        const r = approve(world.keys.alice, [], { input });
        expect([r.status, existsSync(r.out)]).toEqual([1, false]);
        expect(r.stderr).toContain('not signed');
      }
    });
  });

  describe('when the approval would not count', () => {
    it('refuses the capsule signer, by their approver key of the same name (APPROVAL_SELF)', () => {
      const r = approve(world.keys.malloryApprover, ['--yes']);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('APPROVAL_SELF');
      expect(existsSync(r.out)).toBe(false);
    });

    it('refuses a key without the approver role, the capsule signing key among them (APPROVAL_SIGNATURE)', () => {
      for (const key of [world.keys.root, world.keys.signer, world.keys.outsider]) {
        const r = approve(key, ['--yes']);
        expect([r.status, existsSync(r.out)]).toEqual([1, false]);
        expect(r.stderr).toContain('APPROVAL_SIGNATURE');
      }
    });

    it('refuses a validity longer than the policy allows (APPROVAL_TOO_LONG)', () => {
      const r = approve(world.keys.alice, ['--yes', '--not-after', '8d']);
      expect([r.status, existsSync(r.out)]).toEqual([1, false]);
      expect(r.stderr).toContain('APPROVAL_TOO_LONG');
      expect(approve(world.keys.alice, ['--yes', '--not-after', '7d']).status).toBe(0);
    });

    it('refuses a --not-after in the past or unreadable as a usage error (exit 2)', () => {
      expect(approve(world.keys.alice, ['--yes', '--not-after', '2020-01-01T00:00:00Z']).status).toBe(2);
      expect(approve(world.keys.alice, ['--yes', '--not-after', 'tomorrow']).status).toBe(2);
    });

    it('refuses to approve a proposal whose staged validation failed (APPROVAL_STAGED_FAILED), and signs a reject', () => {
      const failed = world.write('failed.bundle.json', world.proposal({ verdict: 'fail' }).bytes);
      const r = approve(world.keys.alice, ['--yes'], { bundle: failed });
      expect([r.status, existsSync(r.out)]).toEqual([1, false]);
      expect(r.stderr).toContain('APPROVAL_STAGED_FAILED');
      const reject = approve(world.keys.alice, ['--yes', '--reject'], { bundle: failed });
      expect(reject.status).toBe(0);
      expect(verifyApproval(readFileSync(reject.out), world.trust).predicate.decision).toBe('reject');
    });

    it('refuses a bundle that is not a proposal (APPROVAL_NOT_PROPOSAL), and one that does not verify (BUNDLE_*)', () => {
      const final = world.write(
        'final.bundle.json',
        world.final(proposal, { approvals: [world.approve(proposal, world.keys.alice), world.approve(proposal, world.keys.bob)] }).bytes,
      );
      const r = approve(world.keys.carol, ['--yes'], { bundle: final });
      expect([r.status, r.stderr.includes('APPROVAL_NOT_PROPOSAL')]).toEqual([1, true]);
      const tampered = world.write('tampered.bundle.json', proposal.bytes.toString('utf8').replace(/"index": 0/, '"index": 1'));
      const t = approve(world.keys.carol, ['--yes'], { bundle: tampered });
      expect(t.status).toBe(1);
      expect(t.stderr).toMatch(/edge-runner: (BUNDLE|LOG)_[A-Z_]+: /);
    });
  });

  describe('groups and change control', () => {
    let strict: ApprovalWorld;
    let strictPath: string;
    beforeAll(() => {
      // ledger alone (nothing depends on it), under change control: every requirement names a group.
      strict = makeApprovalWorld({
        ...TEST_POLICY,
        dependsOn: {},
        rules: { ...TEST_POLICY.rules, ledger: { approvals: 2, group: 'ledger-owners', changeControl: true } },
      });
      strictPath = strict.write('proposal.bundle.json', strict.proposal().bytes);
    });
    afterAll(() => strict.cleanup());
    const approveStrict = (key: PrivateKey, extra: string[]) => {
      const out = join(strict.dir, `approval-${++outs}.json`);
      const prefix = join(strict.dir, `key-${outs}`);
      const { privatePath } = writeKeyPair(prefix, key);
      return { ...runCli(['approve', strictPath, '--key', privatePath, '--trust', strict.trustPath, '--out', out, '--yes', ...extra]), out };
    };

    it('refuses an approver outside the required groups (APPROVAL_GROUP)', () => {
      const r = approveStrict(strict.keys.dave, ['--change-ticket', 'CHG-7']);
      expect([r.status, r.stderr.includes('APPROVAL_GROUP'), existsSync(r.out)]).toEqual([1, true, false]);
    });

    it('refuses an approval without a change ticket (APPROVAL_CHANGE_TICKET), and puts the ticket in the approval', () => {
      const r = approveStrict(strict.keys.alice, []);
      expect([r.status, r.stderr.includes('APPROVAL_CHANGE_TICKET')]).toEqual([1, true]);
      const ok = approveStrict(strict.keys.alice, ['--change-ticket', 'CHG-7']);
      expect(ok.status).toBe(0);
      expect(verifyApproval(readFileSync(ok.out), strict.trust).predicate.changeTicket).toBe('CHG-7');
    });
  });

  it('never overwrites an existing file (exit 2, the file unchanged)', () => {
    const out = join(world.dir, 'taken.json');
    writeFileSync(out, 'mine');
    const r = runCli(['approve', proposalPath, '--key', keyFile(world.keys.alice), '--trust', world.trustPath, '--out', out, '--yes']);
    expect(r.status).toBe(2);
    expect(readFileSync(out, 'utf8')).toBe('mine');
  });

  describe('edge-runner verify of remediation bundles', () => {
    it('shows the phase, the tier and who was counted', () => {
      const final = world.write(
        'applied.bundle.json',
        world.final(proposal, { approvals: [world.approve(proposal, world.keys.alice), world.approve(proposal, world.keys.bob)] }).bytes,
      );
      const r = runCli(['verify', proposalPath, final, '--trust', world.trustPath]);
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('; change config proposed, tier 2');
      expect(r.stdout).toContain('; change config applied, tier 2, approved by alice, bob');
      const json = JSON.parse(runCli(['verify', final, '--trust', world.trustPath, '--json']).stdout);
      expect(json[0].remediation).toMatchObject({ phase: 'applied', tier: 2, approvers: ['alice', 'bob'], autonomous: false });
    });

    it('fails a final bundle whose approvals do not hold (exit 1, BUNDLE_APPROVALS_INVALID)', () => {
      const short = world.write('short.bundle.json', world.final(proposal, { approvals: [world.approve(proposal, world.keys.alice)] }).bytes);
      const r = runCli(['verify', short, '--trust', world.trustPath]);
      expect(r.status).toBe(1);
      expect(r.stdout).toContain('BUNDLE_APPROVALS_INVALID');
    });
  });
});
