/**
 * Approvals to an air-gapped runner, real processes: `edge-runner agent --spool DIR` with a change target
 * takes a remediate capsule from DIR/in/ and writes its proposal to DIR/out/; the reference coordinator
 * `import`s it, approvers upload approvals (`PUT /v1/approvals/{hex}`), and `export` writes them into DIR/in/
 * beside the capsules (HEX.approval.json, the canonical envelope). The spool agent decides each: the capsule
 * signer's refused (APPROVAL_SELF), two counted, the change applied, the final bundle in DIR/out/. Exported
 * again and read again by a restarted agent, nothing is recorded twice.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_ENTRY } from '../helpers/cli.js';
import { killAll, spawnSpoolAgent, startLinkCoordinator, waitForAsync } from '../helpers/link.js';
import { column, withRawDb } from '../helpers/raw-db.js';
import { makeRemediationLinkWorld, readHeldBundle, type HeldProposal, type RemediationLinkWorld } from '../helpers/remediation-link.js';
import { COORDINATOR_ENTRY, runCoordinatorCli } from '../coordinator/helpers.js';

const built = existsSync(COORDINATOR_ENTRY) && existsSync(CLI_ENTRY);
const worlds: RemediationLinkWorld[] = [];
afterAll(async () => {
  await killAll();
  for (const w of worlds) w.world.cleanup();
});

describe.runIf(built)('approvals through the spool (real spool agent, real coordinator import and export; needs dist/)', () => {
  it('a proposal imported, approvals uploaded and exported into in/, decided once each (also after a restart), applied, final bundle in out/', async () => {
    const w = makeRemediationLinkWorld({ runnerId: 'runner-airgap-approvals' });
    worlds.push(w);
    const { world } = w;
    const coordinator = await startLinkCoordinator(world);
    const spool = join(world.dir, 'spool');
    mkdirSync(join(spool, 'in'), { recursive: true });
    let agent = spawnSpoolAgent(world, spool, {}, 'spool-agent', w.config);
    writeFileSync(join(spool, 'in', '.fix.tmp'), w.capsule());
    renameSync(join(spool, 'in', '.fix.tmp'), join(spool, 'in', 'fix.capsule.json'));

    const outBundles = (): HeldProposal[] => {
      const dir = join(spool, 'out', 'bundles');
      if (!existsSync(dir)) return [];
      return readdirSync(dir)
        .filter((name) => name.endsWith('.bundle.json'))
        .map((name) => readHeldBundle(readFileSync(join(dir, name))));
    };
    const phaseOf = (b: HeldProposal) => b.statement.predicate.remediation?.phase;
    let proposal: HeldProposal | undefined;
    await waitForAsync(
      () => (proposal = outBundles().find((b) => phaseOf(b) === 'proposed')) !== undefined,
      `the proposal in out/\n${agent.stderr().slice(-3000)}`,
      60_000,
    );

    const imported = runCoordinatorCli(['import', '--state', coordinator.stateDir, join(spool, 'out')]);
    expect(imported.status, imported.stderr).toBe(0);
    const approvals = (['signer-1', 'alice', 'bob'] as const).map((name) => w.approve(proposal!, name));
    for (const approval of approvals) {
      const answer = await coordinator.operator(`/v1/approvals/${approval.digest.slice(7)}`, { method: 'PUT', body: approval.bytes });
      expect(answer.status, answer.body.toString()).toBe(201);
    }
    const exported = runCoordinatorCli(['export', '--state', coordinator.stateDir, '--runner', world.runnerId, join(spool, 'in')]);
    expect(exported.status, exported.stderr).toBe(0);
    expect(JSON.parse(exported.stdout)).toMatchObject({ approvals: 3 });
    for (const approval of approvals) expect(existsSync(join(spool, 'in', `${approval.digest.slice(7)}.approval.json`))).toBe(true);

    let final: HeldProposal | undefined;
    await waitForAsync(
      () => (final = outBundles().find((b) => phaseOf(b) === 'applied')) !== undefined,
      `the final bundle in out/\n${agent.stderr().slice(-3000)}`,
      90_000,
    );
    await agent.stop();
    expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=half-even\n');
    expect(final!.statement.predicate.remediation!.approvals!.counted.map((c) => c.approver).sort()).toEqual(['alice', 'bob']);

    const records = () =>
      withRawDb(
        join(world.stateDir, 'runner.db'),
        (db) => ({
          kinds: column<string>(db, "SELECT kind FROM records_v1 WHERE kind LIKE 'approval.%' ORDER BY seq"),
          rows: column<string>(db, "SELECT status || ' ' || COALESCE(code, '-') || ' ' || source FROM approvals_v1 ORDER BY received_at, digest"),
        }),
        { readOnly: true },
      );
    const before = records();
    // In file-name order (the digests'), so in any order of persons.
    expect([...before.kinds].sort()).toEqual(['approval.accepted', 'approval.accepted', 'approval.refused']);
    expect([...before.rows].sort()).toEqual(['accepted - spool', 'accepted - spool', 'refused APPROVAL_SELF spool']);

    // Exported again (nothing new written), and read again by a restarted agent: nothing recorded twice.
    const again = runCoordinatorCli(['export', '--state', coordinator.stateDir, '--runner', world.runnerId, join(spool, 'in')]);
    expect(JSON.parse(again.stdout)).toMatchObject({ written: 0, approvals: 3 });
    agent = spawnSpoolAgent(world, spool, {}, 'spool-agent', w.config);
    await waitForAsync(
      () => agent.lines.filter((line) => line.msg === 'spool approval decided').length === 3,
      `the approvals read again\n${agent.stderr().slice(-3000)}`,
      30_000,
    );
    expect(agent.lines.filter((line) => line.msg === 'spool approval decided').map((line) => line.status)).toEqual(['known', 'known', 'known']);
    await agent.stop();
    expect(records()).toEqual(before);
  }, 240_000);
});
