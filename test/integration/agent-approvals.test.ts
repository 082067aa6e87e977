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
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../runner/core/digest.js';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { packCapsule } from '../../runner/capsule/pack.js';
import type { Statement } from '../../runner/evidence/statement.js';
import { signApproval } from '../../runner/policy/approval.js';
import type { RemediationPolicy } from '../../runner/trust/trust.js';
import { makeLinkWorld, type LinkWorld } from '../helpers/agent-link.js';
import { CLI_ENTRY } from '../helpers/cli.js';
import { killAll, spawnAgent, startProxiedCoordinator, waitForAsync, type RecordingProxy } from '../helpers/link.js';
import { column, withRawDb } from '../helpers/raw-db.js';
import { baseTemplate } from '../helpers/world.js';
import { COORDINATOR_ENTRY } from '../coordinator/helpers.js';

const built = existsSync(COORDINATOR_ENTRY) && existsSync(CLI_ENTRY);
/** The remediation pipeline (propose, accept an approval, apply) of runner/remediate/. */
const remediation = existsSync(new URL('../../runner/remediate/approvals.ts', import.meta.url));

const worlds: LinkWorld[] = [];
const proxies: RecordingProxy[] = [];
afterAll(async () => {
  await killAll();
  for (const proxy of proxies) await proxy.stop();
  for (const world of worlds) world.cleanup();
});

const POLICY: RemediationPolicy = {
  surfaces: { ledger: ['ledger/**'] },
  rules: { ledger: { approvals: 2, group: 'ledger-owners' } },
  default: { approvals: 1 },
  groups: { 'ledger-owners': ['alice', 'bob', 'signer-1'] },
  noAutonomy: ['ledger'],
};
const PATCH = ['--- a/ledger/rounding.txt', '+++ b/ledger/rounding.txt', '@@ -1 +1 @@', '-mode=floor', '+mode=half-even', ''].join('\n');

interface HeldBundle {
  digest: string;
  statement: Statement;
  evidence: string;
}

describe.runIf(built)('approvals through the coordinator (real agent, real coordinator)', () => {
  it.skipIf(!remediation)(
    'a proposal shipped, approvals uploaded by approvers, delivered by the feed across a restart, counted once each, applied, final bundle in the inbox',
    async () => {
      const alice = PrivateKey.generate();
      const bob = PrivateKey.generate();
      // The capsule signer also holds an approver key under the same name: separation of duties refuses it.
      const signerApprover = PrivateKey.generate();
      const world = makeLinkWorld({
        extraKeys: [
          { name: 'alice', key: alice, roles: ['approver'] },
          { name: 'bob', key: bob, roles: ['approver'] },
          { name: 'signer-1', key: signerApprover, roles: ['approver'] },
        ],
        policy: { allowedKinds: ['reproduce', 'validate', 'remediate'], remediation: POLICY },
      });
      worlds.push(world);
      const target = join(world.dir, 'ledger-service');
      mkdirSync(join(target, 'ledger'), { recursive: true });
      writeFileSync(join(target, 'ledger', 'rounding.txt'), 'mode=floor\n');
      const config = { targets: { ledger: { path: target } } };

      const { proxy, coordinator } = await startProxiedCoordinator(world);
      proxies.push(proxy);
      let agent = spawnAgent(world, proxy.url, {}, 'agent', config);

      const capsule = packCapsule(
        baseTemplate({
          kind: 'remediate',
          target: { runners: [world.runnerId] },
          change: { target: 'ledger', patch: 'fix.diff' },
          steps: [{ name: 'staged-is-half-even', run: ['/bin/sh', '-c', 'grep -qx mode=half-even "$EDGE_RUNNER_TARGET/ledger/rounding.txt"'] }],
          inputs: [{ path: 'fix.diff' }],
        }),
        new Map([['fix.diff', Buffer.from(PATCH)]]),
        [world.signer],
      );
      const published = await coordinator.operator('/v1/capsules', { method: 'POST', body: JSON.stringify(capsule) });
      expect(published.status).toBe(201);

      const bundlesOf = async (): Promise<HeldBundle[]> => {
        const items = (await coordinator.operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as { digest: string }[];
        const held: HeldBundle[] = [];
        for (const item of items) {
          const bytes = (await coordinator.operator(`/v1/bundles/${item.digest.slice(7)}`)).body;
          const payload = Buffer.from(JSON.parse(bytes.toString('utf8')).evidence.payload, 'base64');
          held.push({ digest: item.digest, statement: JSON.parse(payload.toString('utf8')) as Statement, evidence: `sha256:${sha256Hex(payload)}` });
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

      const approve = (name: string, key: PrivateKey) => {
        const signedAt = new Date(Date.now() - 5_000);
        const signed = signApproval(
          remediationMember.change,
          {
            proposal: proposal!.evidence,
            runner: world.runnerId,
            target: 'ledger',
            capsule: { id: proposal!.statement.predicate.capsule.id, digest: proposal!.statement.predicate.capsule.digest },
            approver: name,
            decision: 'approve',
            signedAt: signedAt.toISOString(),
            notAfter: new Date(signedAt.getTime() + 3600_000).toISOString(),
          },
          key,
        );
        return { digest: signed.digest, bytes: JSON.stringify(signed.envelope, null, 2) };
      };
      const upload = async (approval: { digest: string; bytes: string }) => {
        const answer = await coordinator.operator(`/v1/approvals/${approval.digest.slice(7)}`, { method: 'PUT', body: approval.bytes });
        expect(answer.status).toBe(201);
        expect(answer.json()).toMatchObject({ approval: approval.digest, stored: 'created', runner: world.runnerId });
      };
      const fetchesOf = (approval: { digest: string }) => proxy.to('GET', `/v1/approvals/${approval.digest.slice(7)}`).length;
      const decided = (a: typeof agent) => a.lines.filter((line) => line.msg === 'approval decided').length;

      // The capsule signer's approval: delivered, fetched, refused by the runner (the coordinator does not count).
      const own = approve('signer-1', signerApprover);
      await upload(own);
      await waitForAsync(() => decided(agent) === 1, `the first approval decided\n${agent.stderr().slice(-3000)}`, 30_000);
      await agent.stop();

      // A restart: the approvals cursor is kept; the refused approval is not fetched again.
      agent = spawnAgent(world, proxy.url, {}, 'agent', config);
      const first = approve('alice', alice);
      const second = approve('bob', bob);
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
    },
    240_000,
  );
});
