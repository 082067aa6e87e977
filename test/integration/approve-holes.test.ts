/**
 * Review of the approval digests from an auditor's side: every digest an approval is bound to (policy,
 * change spec, change, the approval itself) recomputed from the files alone with jq -cS, base64 and
 * sha256sum, as the README tells an auditor to, and compared with what the runner's code computes.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { writeKeyPair } from '../../runner/state/keyfile.js';
import { runCli } from '../helpers/cli.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatApproval, signApproval } from '../../runner/policy/approval.js';
import { changeSpecDigest, policyDigest } from '../../runner/policy/change-digest.js';
import { makeApprovalWorld, type ApprovalWorld } from '../helpers/approvals.js';

const hasTools = spawnSync('bash', ['-c', 'command -v jq && command -v sha256sum && command -v base64']).status === 0;

/** The auditor's recipe (README, governed remediation): prints policy, spec, capsule and change digests. */
const RECIPE = String.raw`
set -euo pipefail
trust=$1 bundle=$2
d() { sha256sum | cut -d' ' -f1; }
policy=sha256:$(jq -r .payload "$trust" | base64 -d | jq -cjS .policy | d)
manifest=$(jq -r .capsule.payload "$bundle" | base64 -d)
capsule=sha256:$(printf '%s' "$manifest" | d)
spec=sha256:$(printf '%s' "$manifest" | jq -cjS '.change as $c
  | ([$c.patch] + [($c.files // [])[] | .from] | map(select(. != null))) as $named
  | {change: $c, inputs: ([.inputs[] | select(.path as $p | any($named[]; . == $p))
      | {path, sha256, size} + (if has("executable") then {executable} else {} end)] | sort_by(.path))}' | d)
change=sha256:$(jq -r .evidence.payload "$bundle" | base64 -d | jq -cjS --arg capsule "$capsule" --arg change "$spec" --arg policy "$policy" \
  '.predicate.remediation | {_type: "https://edge-runner.dev/change/v1", target, preState, postState, capsule: $capsule, change: $change, policy: $policy}' | d)
echo "$policy $spec $capsule $change"
`;

function recompute(trustPath: string, bundlePath: string): string[] {
  const r = spawnSync('bash', ['-c', RECIPE, 'recipe', trustPath, bundlePath], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return r.stdout.trim().split(' ');
}

describe.skipIf(!hasTools)('approval digests recomputed by an auditor with jq -cS and sha256sum (needs jq)', () => {
  let world: ApprovalWorld;
  beforeAll(() => {
    world = makeApprovalWorld();
  });
  afterAll(() => world.cleanup());

  it('gives the policy, change spec, capsule and change digests of a proposal, as the runner computed them', () => {
    const proposal = world.proposal({
      change: { files: [{ path: 'ledger/limits.txt', action: 'add', from: 'limits.txt' }] },
      inputs: { 'limits.txt': 'max=10\n', 'unrelated.txt': 'not named by the change\n' },
    });
    const bundlePath = world.write(`${proposal.manifest.id}.bundle.json`, proposal.bytes);
    const [policy, spec, capsule, change] = recompute(world.trustPath, bundlePath);
    expect(policy).toBe(policyDigest(world.trustBody.policy));
    expect(spec).toBe(changeSpecDigest(proposal.manifest));
    expect(capsule).toBe(proposal.manifestDigest);
    expect(change).toBe(proposal.changeDigest);
  });

  it('gives the same change spec digest when the inputs it names sort differently by UTF-16 and by code point', () => {
    // U+E000 is below U+1F600 as a code point (jq's and LC_ALL=C's order), above it as UTF-16 (a surrogate pair starts 0xD83D).
    const proposal = world.proposal({
      change: {
        files: [
          { path: 'ledger/a.txt', action: 'add', from: '\u{E000}.txt' },
          { path: 'ledger/b.txt', action: 'add', from: '\u{1F600}.txt' },
        ],
      },
      inputs: { '\u{E000}.txt': 'a\n', '\u{1F600}.txt': 'b\n' },
    });
    const bundlePath = world.write(`${proposal.manifest.id}.bundle.json`, proposal.bytes);
    const [, spec, , change] = recompute(world.trustPath, bundlePath);
    expect(spec).toBe(changeSpecDigest(proposal.manifest));
    expect(change).toBe(proposal.changeDigest);
  });

  it('gives the approval digest of an approval file as edge-runner approve writes it: jq -cjS . FILE | sha256sum', () => {
    const proposal = world.proposal();
    const signed = signApproval(
      proposal.changeDigest,
      {
        proposal: proposal.evidenceDigest,
        runner: world.runnerId,
        target: proposal.remediation.target,
        capsule: { id: proposal.manifest.id, digest: proposal.manifestDigest },
        approver: 'alice',
        decision: 'approve',
        signedAt: '2026-12-02T12:00:00.000Z',
        notAfter: '2026-12-03T12:00:00.000Z',
      },
      world.keys.alice,
    );
    const path = world.write('alice.approval.json', formatApproval(signed.envelope));
    const r = spawnSync('bash', ['-c', 'jq -cjS . "$1" | sha256sum | cut -d" " -f1', 'digest', path], { encoding: 'utf8' });
    expect(`sha256:${r.stdout.trim()}`).toBe(signed.digest);
  });
});

describe('edge-runner approve --not-after', () => {
  let world: ApprovalWorld;
  beforeAll(() => {
    world = makeApprovalWorld();
  });
  afterAll(() => world.cleanup());

  it.each(['2026-11-31T12:00:00Z', '2027-02-29T12:00:00Z', '2026-12-03T24:00:00Z'])(
    'refuses %s, a time no calendar has (Date would roll it over), and signs nothing',
    (when) => {
      const proposalPath = world.write('p.bundle.json', world.proposal().bytes);
      const key = writeKeyPair(join(world.dir, `alice-${when.slice(0, 10)}`), world.keys.alice).privatePath;
      const out = join(world.dir, `a-${when.slice(0, 13)}.json`);
      const r = runCli(['approve', proposalPath, '--key', key, '--trust', world.trustPath, '--out', out, '--not-after', when, '--yes']);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain('is neither a duration');
      expect(existsSync(out)).toBe(false);
    },
  );

  it('prints footprint paths with a bidi override, a C1 CSI or a line separator escaped (a capsule signer chose them)', () => {
    const path = 'ledger/\u202etxt.exe\u009b2K\u2028OK';
    const proposalPath = world.write('bidi.bundle.json', world.proposal({ files: [{ path, action: 'add', linesAdded: 1, linesRemoved: 0 }] }).bytes);
    const key = writeKeyPair(join(world.dir, 'alice-bidi'), world.keys.alice).privatePath;
    const out = join(world.dir, 'bidi.approval.json');
    const r = runCli(['approve', proposalPath, '--key', key, '--trust', world.trustPath, '--out', out, '--yes']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('add    ledger/\\u202etxt.exe\\u009b2K\\u2028OK  +1 -0  [ledger]');
    expect(r.stdout).not.toMatch(/[\u202e\u009b\u2028]/);
  });
});
