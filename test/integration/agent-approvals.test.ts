/**
 * Approvals through the coordinator, end to end with real processes on 127.0.0.1: the reference coordinator
 * (behind a recording proxy) and `edge-runner agent` with a change target. A remediate capsule is published;
 * the agent stages it, proposes, and ships the proposal bundle. Approvers upload approvals to the
 * coordinator (`PUT /v1/approvals/{hex}` with the operator token); the work feed delivers them to the agent,
 * which fetches each by digest and decides it: the capsule signer's is refused (APPROVAL_SELF), two
 * ledger owners' are counted, the change is applied and verified, and the final bundle reaches the inbox
 * carrying the two approvals. The agent is restarted between uploads: its approvals cursor survives, nothing
 * is fetched twice, and nothing is counted twice.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_ENTRY } from '../helpers/cli.js';
import { killAll, spawnAgent, startProxiedCoordinator, waitForAsync, type RecordingProxy } from '../helpers/link.js';
import { column, withRawDb } from '../helpers/raw-db.js';
import { makeRemediationLinkWorld, readHeldBundle, type HeldProposal, type RemediationLinkWorld } from '../helpers/remediation-link.js';
import { COORDINATOR_ENTRY } from '../coordinator/helpers.js';

const built = existsSync(COORDINATOR_ENTRY) && existsSync(CLI_ENTRY);

const worlds: RemediationLinkWorld[] = [];
const proxies: RecordingProxy[] = [];
afterAll(async () => {
  await killAll();
  for (const proxy of proxies) await proxy.stop();
  for (const w of worlds) w.world.cleanup();
});

type HeldBundle = HeldProposal & { digest: string };

describe.runIf(built)('approvals through the coordinator (real agent, real coordinator; needs dist/)', () => {
  it('a proposal shipped, approvals uploaded by approvers, delivered by the feed across a restart, counted once each, applied, final bundle in the inbox', async () => {
    const w = makeRemediationLinkWorld();
    worlds.push(w);
    const { world, target, config } = w;

    const { proxy, coordinator } = await startProxiedCoordinator(world);
    proxies.push(proxy);
    let agent = spawnAgent(world, proxy.url, {}, 'agent', config);

    const published = await coordinator.operator('/v1/capsules', { method: 'POST', body: w.capsule() });
    expect(published.status).toBe(201);

    const bundlesOf = async (): Promise<HeldBundle[]> => {
      const items = (await coordinator.operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as { digest: string }[];
      const held: HeldBundle[] = [];
      for (const item of items) {
        const bytes = (await coordinator.operator(`/v1/bundles/${item.digest.slice(7)}`)).body;
        held.push({ digest: item.digest, ...readHeldBundle(bytes) });
      }
      return held;
    };
    const phaseOf = (b: HeldBundle) => b.statement.predicate.remediation?.phase;
    let proposal: HeldBundle | undefined;
    await waitForAsync(
      async () => (proposal = (await bundlesOf()).find((b) => phaseOf(b) === 'proposed')) !== undefined,
      `the proposal at the coordinator\n${agent.stderr().slice(-3000)}`,
      60_000,
    );
    const remediationMember = proposal!.statement.predicate.remediation!;
    expect(remediationMember.tier.approvals).toBe(2);

    const upload = async (approval: { digest: string; bytes: string }) => {
      const answer = await coordinator.operator(`/v1/approvals/${approval.digest.slice(7)}`, { method: 'PUT', body: approval.bytes });
      expect(answer.status).toBe(201);
      expect(answer.json()).toMatchObject({ approval: approval.digest, stored: 'created', runner: world.runnerId });
    };
    const fetchesOf = (approval: { digest: string }) => proxy.to('GET', `/v1/approvals/${approval.digest.slice(7)}`).length;
    const decided = (a: typeof agent) => a.lines.filter((line) => line.msg === 'approval decided').length;

    // The capsule signer's approval: delivered, fetched, refused by the runner (the coordinator does not count).
    const own = w.approve(proposal!, 'signer-1');
    await upload(own);
    await waitForAsync(() => decided(agent) === 1, `the first approval decided\n${agent.stderr().slice(-3000)}`, 30_000);
    await agent.stop();

    // A restart: the approvals cursor is kept; the refused approval is not fetched again.
    agent = spawnAgent(world, proxy.url, {}, 'agent', config);
    const first = w.approve(proposal!, 'alice');
    const second = w.approve(proposal!, 'bob');
    await upload(first);
    await upload(second);
    let final: HeldBundle | undefined;
    await waitForAsync(
      async () => (final = (await bundlesOf()).find((b) => phaseOf(b) === 'applied')) !== undefined,
      `the final bundle at the coordinator\n${agent.stderr().slice(-3000)}`,
      90_000,
    );
    await agent.stop();

    expect(readFileSync(join(target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=half-even\n');
    const counted = final!.statement.predicate.remediation!.approvals!.counted.map((c) => c.approver).sort();
    expect(counted).toEqual(['alice', 'bob']);
    expect(final!.statement.predicate.remediation!.proposal).toBe(proposal!.evidence);
    // Each approval fetched once over both agents, and decided once.
    expect([own, first, second].map(fetchesOf)).toEqual([1, 1, 1]);
    expect(decided(agent)).toBe(2);
    withRawDb(
      join(world.stateDir, 'runner.db'),
      (db) => {
        expect(column(db, "SELECT kind FROM records_v1 WHERE kind LIKE 'approval.%' ORDER BY seq")).toEqual([
          'approval.refused',
          'approval.accepted',
          'approval.accepted',
        ]);
        expect(column(db, 'SELECT code FROM approvals_v1 WHERE status = ?', 'refused')).toEqual(['APPROVAL_SELF']);
        const cursors = column<string>(db, 'SELECT coordinator FROM feed_cursor_v1 ORDER BY coordinator');
        expect(cursors).toContain(`approvals ${proxy.url}`);
      },
      { readOnly: true },
    );
  }, 240_000);
});
