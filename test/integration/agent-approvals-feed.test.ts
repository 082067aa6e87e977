/**
 * The agent's approvals feed against a stand-in coordinator on 127.0.0.1 (test/helpers/agent-link.ts): real
 * HTTP and request signatures, a real state folder and store. What the agent does with what the feed says
 * of approvals: a coordinator older than them, a cursor the coordinator never handed out, an approval it
 * will not serve, one served with other bytes than its digest, and the cursor across a restart. The approvals
 * offered here are genuine but of changes never proposed here (the runner refuses them, APPROVAL_WRONG_CHANGE,
 * and records that): what is tested is delivery; a real approval's whole way is
 * test/integration/agent-approvals.test.ts, and what the feed serves that is not an approval,
 * approvals-link-holes.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { APPROVALS_CURSOR_PREFIX, RunnerAgent } from '../../runner/agent/daemon.js';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import { approverKeys, madeUpApproval, makeLinkWorld, StandInCoordinator, waitFor, type LinkWorld } from '../helpers/agent-link.js';
import { directSelector } from '../helpers/runner.js';

interface Running {
  ctx: RunnerContext;
  agent: RunnerAgent;
  done: Promise<void>;
}

const worlds: { world: LinkWorld; coordinator: StandInCoordinator }[] = [];
const agents: Running[] = [];

afterEach(async () => {
  for (const r of agents.splice(0)) await stop(r);
  for (const { world, coordinator } of worlds.splice(0)) {
    await coordinator.stop();
    world.cleanup();
  }
});

async function setUp(): Promise<{ world: LinkWorld; coordinator: StandInCoordinator }> {
  const world = makeLinkWorld({ extraKeys: approvers });
  const coordinator = new StandInCoordinator(world);
  await coordinator.start();
  worlds.push({ world, coordinator });
  return { world, coordinator };
}

function start(world: LinkWorld, coordinator: StandInCoordinator, before?: (ctx: RunnerContext) => void): Running {
  const ctx = openRunner(world.stateDir, {
    launcher: directSelector,
    config: {
      flags: {
        coordinator: { url: coordinator.url, pollWaitSeconds: 1, backoffBaseMs: 20, backoffCapMs: 300, requestTimeoutMs: 5000, flushMs: 2000 },
      },
    },
  });
  before?.(ctx);
  const agent = new RunnerAgent(ctx);
  const running = { ctx, agent, done: agent.run() };
  agents.push(running);
  return running;
}

async function stop(r: Running): Promise<void> {
  r.agent.stop();
  await r.done.catch(() => {});
  r.ctx.close();
  const at = agents.indexOf(r);
  if (at >= 0) agents.splice(at, 1);
}

const PROPOSAL = `sha256:${'1'.repeat(64)}`;
const approvers = approverKeys();
/** An approval for this runner, of a change it never proposed. */
const ours = (world: LinkWorld) => madeUpApproval(approvers[0]!, world.runnerId);
const approvalsCursor = (r: Running) => r.ctx.store.feedCursor(`${APPROVALS_CURSOR_PREFIX}${r.agent.client.baseUrl}`);
const refusedApprovals = (r: Running) => (digest: string) => r.ctx.store.approval(digest);
const workQueries = (coordinator: StandInCoordinator) => coordinator.exchanges.filter((e) => e.route === 'work').map((e) => e.query);
const fetches = (coordinator: StandInCoordinator, digest: string) =>
  coordinator.exchanges.filter((e) => e.route === 'approval' && e.path.endsWith(digest.slice(7))).length;

describe('the agent and the approvals feed', () => {
  it('asks for approvals from its cursor, fetches each once by digest, decides it (recorded), and moves the cursor past it', async () => {
    const { world, coordinator } = await setUp();
    const r = start(world, coordinator);
    const offered = coordinator.offerApproval(ours(world), PROPOSAL);
    await waitFor(() => approvalsCursor(r) === offered.cursor, 'the approvals cursor past the approval');
    expect(workQueries(coordinator)[0]).toContain('approvals=0');
    expect(refusedApprovals(r)(offered.digest)).toMatchObject({ status: 'refused', code: 'APPROVAL_WRONG_CHANGE', source: 'coordinator' });
    expect(r.agent.view.approvalsTaken).toBe(1);
    expect(fetches(coordinator, offered.digest)).toBe(1);
  });

  it('keeps its approvals cursor across a restart: an approval decided is not fetched again', async () => {
    const { world, coordinator } = await setUp();
    const first = start(world, coordinator);
    const offered = coordinator.offerApproval(ours(world), PROPOSAL);
    await waitFor(() => approvalsCursor(first) === offered.cursor, 'the first approval decided');
    await stop(first);
    const polls = workQueries(coordinator).length;
    const second = start(world, coordinator);
    await waitFor(() => workQueries(coordinator).length >= polls + 3, 'three polls of the second agent');
    expect(
      workQueries(coordinator)
        .slice(polls)
        .every((q) => q.includes(`approvals=${offered.cursor}`)),
    ).toBe(true);
    expect(fetches(coordinator, offered.digest)).toBe(1);
    expect(second.agent.view.approvalsTaken).toBe(0);
  });

  it('reads the feed without approvals from a coordinator older than them (400 FEED_BAD_QUERY), and still runs its capsules', async () => {
    const { world, coordinator } = await setUp();
    coordinator.refuseApprovalsParameter = true;
    const r = start(world, coordinator);
    coordinator.publish(world.capsule({ target: { runners: [world.runnerId] } }));
    await waitFor(() => coordinator.bundles.size === 1, 'the bundle');
    const queries = workQueries(coordinator);
    expect(queries[0]).toContain('approvals=0');
    expect(queries.slice(1).every((q) => !q.includes('approvals'))).toBe(true);
    expect(r.agent.view.capsulesRun).toBe(1);
  });

  it('starts its approvals over from 0 when the coordinator never handed out its cursor (409 FEED_APPROVALS_CURSOR_AHEAD)', async () => {
    const { world, coordinator } = await setUp();
    const r = start(world, coordinator, (ctx) => ctx.store.setFeedCursor(`${APPROVALS_CURSOR_PREFIX}${coordinator.url}`, 50));
    const offered = coordinator.offerApproval(ours(world), PROPOSAL);
    await waitFor(() => approvalsCursor(r) === offered.cursor, 'the approval taken after the reset');
    const queries = workQueries(coordinator);
    expect(queries[0]).toContain('approvals=50');
    expect(queries.some((q) => q.includes('approvals=0'))).toBe(true);
    expect(refusedApprovals(r)(offered.digest)).toMatchObject({ status: 'refused' });
  });

  it('passes over an approval the coordinator will not serve (404), with a warning, and takes the next', async () => {
    const { world, coordinator } = await setUp();
    const r = start(world, coordinator);
    const missing = coordinator.offerApproval(ours(world), PROPOSAL, { served: false });
    const next = coordinator.offerApproval(ours(world), PROPOSAL);
    await waitFor(() => approvalsCursor(r) === next.cursor, 'the cursor past both');
    expect(fetches(coordinator, missing.digest)).toBe(1);
    expect(refusedApprovals(r)(missing.digest)).toBeUndefined();
    expect(refusedApprovals(r)(next.digest)).toMatchObject({ status: 'refused' });
  });

  it('fetches again an approval served with other bytes than its digest, and decides only the right bytes', async () => {
    const { world, coordinator } = await setUp();
    coordinator.faults.push({ route: 'approval', kind: 'status', status: 200, body: '"other bytes"' });
    const r = start(world, coordinator);
    const offered = coordinator.offerApproval(ours(world), PROPOSAL);
    await waitFor(() => approvalsCursor(r) === offered.cursor, 'the approval decided');
    expect(fetches(coordinator, offered.digest)).toBe(2);
    expect(refusedApprovals(r)(offered.digest)).toMatchObject({ status: 'refused' });
    expect(r.agent.view.approvalsTaken).toBe(1);
  });
});
