/**
 * Holes of governed remediation beyond the rows, through the real CLI: a full disk under the target
 * in the middle of an apply, a policy changed between proposal and approval, approvals bound to another
 * proposal, oversized and garbage approval files.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readTree } from '../../runner/remediate/tree.js';
import { APPROVAL_MAX_BYTES } from '../../runner/policy/approval.js';
import { TEST_POLICY } from '../helpers/approvals.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { LEDGER_PATCH, makeRemediationWorld, recordsOf, type RemediationWorld } from '../helpers/remediation.js';
import { signTrust } from '../helpers/world.js';

const worlds: RemediationWorld[] = [];
const mounts: string[] = [];
afterEach(() => {
  for (const mount of mounts.splice(0)) spawnSync('umount', ['-l', mount]);
  for (const w of worlds.splice(0)) w.cleanup();
});
const CAPS = { maxBytes: 8 << 20, maxEntries: 1000 };
const isRoot = process.getuid?.() === 0;

function world(): RemediationWorld {
  const w = makeRemediationWorld();
  worlds.push(w);
  return w;
}

function propose(
  w: RemediationWorld,
  change: Record<string, unknown> = { patch: 'fix.diff' },
  files: Record<string, string> = { 'fix.diff': LEDGER_PATCH },
) {
  const { result, json } = w.exec(w.remediate(change, files));
  expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
  return { bundle: String(json!.bundle), evidence: String(json!.evidenceDigest) };
}

type Outcome = { approvals: Array<{ status: string; code?: string }>; change: { state: string; code?: string } | null };
const approve = (w: RemediationWorld, ...files: string[]) => {
  const { result, json } = w.change(['approve', ...files]);
  expect(json, `${result.stdout}${result.stderr}`).toBeDefined();
  return { status: result.status, out: json as unknown as Outcome };
};

/** Whether a 1 MiB tmpfs can be mounted here (root, and mount allowed). */
function canMountTmpfs(): boolean {
  if (!isRoot) return false;
  return spawnSync('sh', ['-c', 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d" && umount "$d"; s=$?; rmdir "$d"; exit $s']).status === 0;
}

describe.skipIf(!existsSync(CLI_ENTRY))('governed remediation holes (needs dist/)', () => {
  it.runIf(canMountTmpfs())(
    'rolls back (STATE_DISK_FULL) to the pre-state digest when the target file system fills in the middle of an apply',
    () => {
      const w = world();
      // The target on a 1 MiB tmpfs of its own; its files moved there.
      const small = join(w.dir, 'small');
      mkdirSync(small);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
      mounts.push(small);
      execFileSync('cp', ['-a', `${w.target}/.`, small]);
      const config = JSON.parse(readFileSync(w.configPath, 'utf8')) as { targets: { config: { path: string } } };
      config.targets.config.path = small;
      writeFileSync(w.configPath, JSON.stringify(config));
      const before = readTree(small, CAPS).digest;
      const big = 'x'.repeat(2 << 20);
      const p = propose(
        w,
        { patch: 'fix.diff', files: [{ path: 'ledger/zz-big.bin', action: 'add', from: 'big.bin' }] },
        { 'fix.diff': LEDGER_PATCH, 'big.bin': big },
      );
      const { status, out } = approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
      expect(status).toBe(1);
      expect(out.change!.state).toBe('rolled-back');
      expect(out.change!.code).toBe('STATE_DISK_FULL');
      expect(readTree(small, CAPS).digest).toBe(before);
      expect(readFileSync(join(small, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=floor\n');
    },
  );

  it.each([
    ['4,097 files', Array.from({ length: 4097 }, (_, i) => `--- /dev/null\n+++ b/many/f${i}.txt\n@@ -0,0 +1 @@\n+x\n`).join('')],
    ['a path of 1,026 characters', `--- /dev/null\n+++ b/${Array.from({ length: 5 }, () => 'd'.repeat(204)).join('/')}/x\n@@ -0,0 +1 @@\n+x\n`],
  ])('rejects a change whose footprint the evidence cannot carry (%s) with CHANGE_FOOTPRINT_TOO_LARGE before the nonce burns', (_name, patch) => {
    const w = world();
    const { result, json } = w.exec(w.remediate({ patch: 'fix.diff' }, { 'fix.diff': patch }));
    expect(result.status, result.stderr).toBe(3);
    expect(json!.code).toBe('CHANGE_FOOTPRINT_TOO_LARGE');
    expect(recordsOf(w).filter((r) => r.kind === 'capsule.accepted')).toHaveLength(0);
  });

  it('proposes a change whose path is 1,024 characters, at the cap', () => {
    const w = world();
    const path = Array.from({ length: 5 }, () => 'd'.repeat(204)).join('/');
    expect(path).toHaveLength(1024);
    const { result } = w.exec(w.remediate({ patch: 'fix.diff' }, { 'fix.diff': `--- /dev/null\n+++ b/${path}\n@@ -0,0 +1 @@\n+x\n` }));
    expect(result.status, result.stderr).toBe(0);
  });

  it('waits (RUN_DISK_RESERVE) to apply an authorized change while the state disk is below its reserve, and applies it at the next open once there is room', () => {
    const w = world();
    const p = propose(w);
    const config = readFileSync(w.configPath, 'utf8');
    writeFileSync(w.configPath, JSON.stringify({ ...(JSON.parse(config) as object), store: { reserveBytes: 1e15 } }));
    const { status, out } = approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
    expect(status).toBe(0);
    expect(out.change).toMatchObject({ state: 'proposed', code: 'RUN_DISK_RESERVE' });
    expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=floor\n');
    writeFileSync(w.configPath, config);
    const resumed = w.change(['resume']);
    expect((resumed.json!.changes as Array<{ state: string }>)[0]!.state).toBe('verified');
    expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=half-even\n');
  });

  it('refuses a change whose policy changed since it was proposed (CHANGE_POLICY_CHANGED): old approvals do not count under a new policy', () => {
    const w = world();
    const p = propose(w);
    const v2 = { ...w.trustBody, version: 2, policy: { ...w.trustBody.policy, remediation: { ...TEST_POLICY, default: { approvals: 2 } } } };
    const file = join(w.dir, 'trust-v2.dsse.json');
    writeFileSync(file, signTrust(v2, [w.root]));
    const updated = runCli(['trust', 'update', file, '--state', w.stateDir], { env: w.env });
    expect(updated.status, updated.stderr).toBe(0);
    const { status, out } = approve(w, w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob'));
    expect(status).toBe(1);
    expect(out.change).toMatchObject({ state: 'refused', code: 'CHANGE_POLICY_CHANGED' });
    expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=floor\n');
  });

  it('applies a change once when two commands hand in its approvals at the same moment', async () => {
    const w = world();
    const p = propose(w);
    const files = [w.approve(p, w.keys.alice, 'alice'), w.approve(p, w.keys.bob, 'bob')];
    const run = () =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [CLI_ENTRY, 'change', 'approve', ...files, '--state', w.stateDir, '--json'], {
          env: w.env,
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        child.on('exit', (code) => resolve({ code, stderr }));
      });
    const ends = await Promise.all([run(), run()]);
    for (const end of ends) expect([0, 3], end.stderr).toContain(end.code);
    const records = recordsOf(w);
    expect(records.filter((r) => r.kind === 'change.applying')).toHaveLength(1);
    expect(records.filter((r) => r.kind === 'change.verified')).toHaveLength(1);
    expect(records.filter((r) => r.kind === 'approval.accepted')).toHaveLength(2);
    expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=half-even\n');
  });

  it('refuses an approval of this change digest that names another proposal bundle (APPROVAL_WRONG_PROPOSAL)', () => {
    const w = world();
    const p = propose(w);
    const { out } = approve(w, w.approve({ ...p, evidence: `sha256:${'f'.repeat(64)}` }, w.keys.alice, 'alice'));
    expect(out.approvals[0]).toMatchObject({ status: 'refused', code: 'APPROVAL_WRONG_PROPOSAL' });
  });

  it('refuses an approval file over its cap (APPROVAL_TOO_LARGE) and garbage (APPROVAL_UNPARSEABLE), each recorded once however often given', () => {
    const w = world();
    propose(w);
    const large = join(w.dir, 'large.json');
    writeFileSync(large, ' '.repeat(APPROVAL_MAX_BYTES + 1));
    const garbage = join(w.dir, 'garbage.json');
    writeFileSync(garbage, '{"payloadType": 1}');
    const first = approve(w, large, garbage);
    expect(first.status).toBe(3);
    expect(first.out.approvals.map((a) => a.code)).toEqual(['APPROVAL_TOO_LARGE', 'APPROVAL_UNPARSEABLE']);
    const again = approve(w, garbage);
    expect(again.out.approvals[0]!.status).toBe('known');
    expect(recordsOf(w).filter((r) => r.kind === 'approval.refused')).toHaveLength(2);
  });
});
