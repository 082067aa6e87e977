/**
 * A hostile review of how approvals travel to the runner through the work feed, against the stand-in
 * coordinator on 127.0.0.1 (test/helpers/agent-link.ts: real HTTP, request signatures, a real state folder
 * and store): a coordinator serving junk for ever, approvals for other runners, an approval it cannot serve,
 * and a coordinator that learns approvals (it was upgraded) while the agent runs.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { APPROVALS_CURSOR_PREFIX, APPROVALS_ASK_AGAIN_MS, RunnerAgent } from '../../runner/agent/daemon.js';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { acceptApproval } from '../../runner/remediate/approvals.js';
import { approverKeys, madeUpApproval, makeLinkWorld, StandInCoordinator, waitFor, type LinkWorld } from '../helpers/agent-link.js';
import { directSelector } from '../helpers/runner.js';
import { column, withRawDb } from '../helpers/raw-db.js';
import { makeRemediationLinkWorld, readHeldBundle } from '../helpers/remediation-link.js';

interface Running {
  ctx: RunnerContext;
  agent: RunnerAgent;
  done: Promise<void>;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

const approvers = approverKeys();

async function setUp(): Promise<{ world: LinkWorld; coordinator: StandInCoordinator }> {
  const world = makeLinkWorld({ extraKeys: approvers });
  const coordinator = new StandInCoordinator(world);
  await coordinator.start();
  cleanups.push(
    () => world.cleanup(),
    () => coordinator.stop(),
  );
  return { world, coordinator };
}

function start(world: LinkWorld, coordinator: StandInCoordinator, now?: () => number): Running {
  const ctx = openRunner(world.stateDir, {
    launcher: directSelector,
    config: {
      flags: {
        coordinator: { url: coordinator.url, pollWaitSeconds: 1, backoffBaseMs: 20, backoffCapMs: 300, requestTimeoutMs: 5000, flushMs: 2000 },
      },
    },
  });
  const agent = new RunnerAgent(ctx, now ? { now } : {});
  const running = { ctx, agent, done: agent.run() };
  cleanups.push(async () => {
    agent.stop();
    await running.done.catch(() => {});
    ctx.close();
  });
  return running;
}

const PROPOSAL = `sha256:${'1'.repeat(64)}`;
const approvalRecords = (stateDir: string) =>
  withRawDb(join(stateDir, 'runner.db'), (db) => column<string>(db, "SELECT kind FROM records_v1 WHERE kind LIKE 'approval.%' ORDER BY seq"), {
    readOnly: true,
  });
const approvalsCursor = (r: Running) => r.ctx.store.feedCursor(`${APPROVALS_CURSOR_PREFIX}${r.agent.client.baseUrl}`);
const logSize = (r: Running) => r.ctx.store.recordCount();
const fetches = (coordinator: StandInCoordinator, digest: string) =>
  coordinator.exchanges.filter((e) => e.route === 'approval' && e.path.endsWith(digest.slice(7))).length;

describe('a hostile coordinator and the approvals feed', () => {
  it('junk served as approvals (a full answer of 100, and more) is passed over without a record: the log does not grow with what a coordinator makes up', async () => {
    const { world, coordinator } = await setUp();
    const r = start(world, coordinator);
    await waitFor(() => r.agent.view.lastStatusAt !== undefined, 'the agent up');
    const before = logSize(r);
    const offered = Array.from({ length: 150 }, (_, i) => coordinator.offerApproval(Buffer.from(`{"junk":${i}}`), PROPOSAL));
    await waitFor(() => approvalsCursor(r) === offered.at(-1)!.cursor, 'the cursor past the junk', 30_000);
    expect(offered.every((o) => r.ctx.store.approval(o.digest) === undefined)).toBe(true);
    expect(logSize(r) - before).toBe(0);
    expect(r.agent.view.approvalsPassedOver).toBe(150);
  });

  it("a genuine approval of another runner's proposal is passed over without a record (not this runner's to decide)", async () => {
    const { world, coordinator } = await setUp();
    const r = start(world, coordinator);
    await waitFor(() => r.agent.view.lastStatusAt !== undefined, 'the agent up');
    const before = logSize(r);
    const offered = coordinator.offerApproval(madeUpApproval(approvers[0]!, 'runner-elsewhere'), PROPOSAL);
    await waitFor(() => approvalsCursor(r) === offered.cursor, 'the cursor past it');
    expect(logSize(r) - before).toBe(0);
    expect(r.agent.view.approvalsPassedOver).toBe(1);
  });

  it('an approval the coordinator fails to serve (500 for ever) does not hold up capsules: they run while the approval is asked for again', async () => {
    const { world, coordinator } = await setUp();
    for (let i = 0; i < 100_000; i++) coordinator.faults.push({ route: 'approval', kind: 'status', status: 500, body: '' });
    const r = start(world, coordinator);
    const stuck = coordinator.offerApproval(Buffer.from('"never served"'), PROPOSAL);
    await waitFor(() => fetches(coordinator, stuck.digest) >= 2, 'the approval asked for twice');
    coordinator.publish(world.capsule({ target: { runners: [world.runnerId] } }));
    await waitFor(() => coordinator.bundles.size === 1, 'the capsule run and its bundle shipped');
    expect(approvalsCursor(r)).toBe(0);
    expect(r.agent.view.capsulesRun).toBe(1);
  });

  it('a coordinator older than approvals (400 FEED_BAD_QUERY) is asked for them again later: one upgraded while the agent runs delivers them', async () => {
    const { world, coordinator } = await setUp();
    coordinator.refuseApprovalsParameter = true;
    let offset = 0;
    const r = start(world, coordinator, () => Date.now() + offset);
    await waitFor(() => coordinator.exchanges.some((e) => e.route === 'work' && !e.query.includes('approvals')), 'a poll without approvals');
    coordinator.refuseApprovalsParameter = false;
    const offered = coordinator.offerApproval(Buffer.from('"after the upgrade"'), PROPOSAL);
    offset = APPROVALS_ASK_AGAIN_MS + 1000;
    await waitFor(() => approvalsCursor(r) === offered.cursor, 'the approval taken after the coordinator learnt approvals');
    expect(fetches(coordinator, offered.digest)).toBe(1);
  });
});

describe('an approval refused only for the time', () => {
  it('refused as not yet valid (the runner clock behind the approver): decided again once the runner clock reaches it, though the feed brings it once; the change is applied', async () => {
    const w = makeRemediationLinkWorld();
    const coordinator = new StandInCoordinator(w.world);
    await coordinator.start();
    cleanups.push(
      () => w.world.cleanup(),
      () => coordinator.stop(),
    );
    let offset = 0;
    const ctx = openRunner(w.world.stateDir, {
      launcher: directSelector,
      clock: () => new Date(Date.now() + offset),
      config: {
        flags: {
          coordinator: { url: coordinator.url, pollWaitSeconds: 1, backoffBaseMs: 20, backoffCapMs: 300, requestTimeoutMs: 5000, flushMs: 2000 },
          targets: w.config.targets,
        },
      },
    });
    const agent = new RunnerAgent(ctx);
    const done = agent.run();
    cleanups.push(async () => {
      agent.stop();
      await done.catch(() => {});
      ctx.close();
    });
    coordinator.publish(w.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the proposal shipped', 60_000);
    const proposal = readHeldBundle([...coordinator.bundles.values()][0]!);
    // The runner's clock falls 50 s behind (its requests still verify: they expire 60 s after they are made)
    // and the approvers' runs 45 s ahead (the coordinator takes it: within its 60 s skew): to the runner the
    // approvals are signed 95 s ahead, beyond its 60 s skew.
    offset = -50_000;
    const approvals = (['alice', 'bob'] as const).map((name) => w.approve(proposal, name, new Date(Date.now() + 45_000)));
    const offered = approvals.map((a) => coordinator.offerApproval(Buffer.from(a.bytes), proposal.evidence));
    await waitFor(() => approvals.every((a) => ctx.store.approval(a.digest)?.code === 'APPROVAL_NOT_YET_VALID'), 'both refused for the time');
    offset = 0; // the clock put right
    await waitFor(() => coordinator.bundles.size === 2, 'the final bundle shipped', 60_000);
    expect(approvals.map((a) => ctx.store.approval(a.digest)?.status)).toEqual(['accepted', 'accepted']);
    expect(offered.map((o) => fetches(coordinator, o.digest))).toEqual([1, 1]);
    expect(ctx.store.change(proposal.statement.predicate.remediation!.change)?.state).toBe('verified');
  }, 120_000);
});

describe('a crash between deciding an approval and moving the cursor', () => {
  it('the approval comes again and is known: no second record, the cursor moves past it', async () => {
    const { world, coordinator } = await setUp();
    const bytes = madeUpApproval(approvers[0]!, world.runnerId);
    const offered = coordinator.offerApproval(bytes, PROPOSAL);
    // What the agent did before it died: the decision recorded, the cursor not yet moved.
    const before = openRunner(world.stateDir, { launcher: directSelector });
    const decided = await acceptApproval(before, bytes, 'coordinator');
    expect(decided.status).toBe('refused');
    before.close();
    const r = start(world, coordinator);
    await waitFor(() => approvalsCursor(r) === offered.cursor, 'the cursor past it');
    expect(approvalRecords(world.stateDir)).toEqual(['approval.refused']);
    expect(r.agent.view.approvalsTaken).toBe(1);
  });
});

describe('an approval signed by a key of a trust version the runner has not pinned yet', () => {
  it('is not passed over while the coordinator names a newer trust version than the pin (the runner catches up first): asked for again, capsules still run; passed over once the versions agree', async () => {
    const { world, coordinator } = await setUp();
    coordinator.trustVersion = world.trust.body.version + 1; // and GET /v1/trust/{that} is not served: the pin stays behind
    const r = start(world, coordinator);
    const newcomer = { name: 'approver-3', key: PrivateKey.generate(), roles: ['approver' as const] };
    const offered = coordinator.offerApproval(madeUpApproval(newcomer, world.runnerId), PROPOSAL);
    await waitFor(() => fetches(coordinator, offered.digest) >= 3, 'the approval asked for again');
    coordinator.publish(world.capsule({ target: { runners: [world.runnerId] } }));
    await waitFor(() => coordinator.bundles.size === 1, 'the capsule run meanwhile');
    expect(approvalsCursor(r)).toBe(0);
    expect(r.agent.view.approvalsPassedOver).toBe(0);
    coordinator.trustVersion = world.trust.body.version;
    await waitFor(() => approvalsCursor(r) === offered.cursor, 'passed over once the versions agree');
    expect(r.ctx.store.approval(offered.digest)).toBeUndefined();
  });
});

describe('an approval refused for the time, served again and again', () => {
  it('the same approval (signed ahead) under 20 spellings is refused once: a refusal for the time is not recorded again before its time', async () => {
    const w = makeRemediationLinkWorld();
    const coordinator = new StandInCoordinator(w.world);
    await coordinator.start();
    cleanups.push(
      () => w.world.cleanup(),
      () => coordinator.stop(),
    );
    const ctx = openRunner(w.world.stateDir, {
      launcher: directSelector,
      config: {
        flags: {
          coordinator: { url: coordinator.url, pollWaitSeconds: 1, backoffBaseMs: 20, backoffCapMs: 300, requestTimeoutMs: 5000, flushMs: 2000 },
          targets: w.config.targets,
        },
      },
    });
    const agent = new RunnerAgent(ctx);
    const done = agent.run();
    cleanups.push(async () => {
      agent.stop();
      await done.catch(() => {});
      ctx.close();
    });
    coordinator.publish(w.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the proposal shipped', 60_000);
    const proposal = readHeldBundle([...coordinator.bundles.values()][0]!);
    const ahead = w.approve(proposal, 'alice', new Date(Date.now() + 3_600_000));
    const spellings = Array.from({ length: 20 }, (_, i) => Buffer.from(JSON.stringify(JSON.parse(ahead.bytes), null, i + 1)));
    const offered = spellings.map((bytes) => coordinator.offerApproval(bytes, proposal.evidence));
    await waitFor(() => approvalsCursor({ ctx, agent, done }) === offered.at(-1)!.cursor, 'the cursor past every spelling');
    expect(ctx.store.approval(ahead.digest)?.code).toBe('APPROVAL_NOT_YET_VALID');
    expect(approvalRecords(w.world.stateDir)).toEqual(['approval.refused']);
  }, 120_000);
});

describe('an authorized change that waits', () => {
  it('waiting for room on the state disk (RUN_DISK_RESERVE) when its approvals came, is applied by the running agent once there is room, not only at its next start', async () => {
    const w = makeRemediationLinkWorld();
    const coordinator = new StandInCoordinator(w.world);
    await coordinator.start();
    cleanups.push(
      () => w.world.cleanup(),
      () => coordinator.stop(),
    );
    const opened = openRunner(w.world.stateDir, {
      launcher: directSelector,
      config: {
        flags: {
          coordinator: { url: coordinator.url, pollWaitSeconds: 1, backoffBaseMs: 20, backoffCapMs: 300, requestTimeoutMs: 5000, flushMs: 2000 },
          targets: w.config.targets,
        },
      },
    });
    // The disk fills up and frees again while the agent runs: the context's reserve says so.
    let full = false;
    const fullConfig = { ...opened.config, store: { ...opened.config.store, reserveBytes: 2 ** 60 } };
    const ctx = new Proxy(opened, { get: (target, name) => (name === 'config' && full ? fullConfig : Reflect.get(target, name)) });
    const agent = new RunnerAgent(ctx, { waitingChangesEveryMs: 200 });
    const done = agent.run();
    cleanups.push(async () => {
      agent.stop();
      await done.catch(() => {});
      opened.close();
    });
    coordinator.publish(w.capsule());
    await waitFor(() => coordinator.bundles.size === 1, 'the proposal shipped', 60_000);
    const proposal = readHeldBundle([...coordinator.bundles.values()][0]!);
    const change = proposal.statement.predicate.remediation!.change;
    full = true;
    const approvals = (['alice', 'bob'] as const).map((name) => w.approve(proposal, name));
    for (const a of approvals) coordinator.offerApproval(Buffer.from(a.bytes), proposal.evidence);
    await waitFor(() => approvals.every((a) => opened.store.approval(a.digest)?.status === 'accepted'), 'both approvals accepted');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(opened.store.change(change)?.state).toBe('proposed');
    full = false; // room again
    await waitFor(() => opened.store.change(change)?.state === 'verified', 'the change applied and verified', 60_000);
    await waitFor(() => coordinator.bundles.size === 2, 'the final bundle shipped', 30_000);
  }, 120_000);
});
