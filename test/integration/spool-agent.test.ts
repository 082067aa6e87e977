/**
 * The air-gapped agent in process, through the real runner context (real SQLite store, real child
 * processes) with an injected clock: what in/ takes and when (a copy in progress, a symlink, a file over the
 * cap, a file decided before a restart), and out/'s outbox semantics (a crash between the file and its
 * record, a file planted under an answer's address), and the schedule helper's Scheduler firing into out/.
 */
import { linkSync, mkdirSync, readdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import { runCapsule } from '../../runner/agent/run-capsule.js';
import { SpoolAgent } from '../../runner/agent/spool-agent.js';
import { CAPSULE_MAX_BYTES } from '../../runner/capsule/capsule-file.js';
import { parseRecordLeaf } from '../../runner/log/record.js';
import { SPOOL_OUT_FOLDERS, toSpoolDocumentName } from '../../runner/protocol/spool.js';
import { SpoolWriter } from '../../runner/spool/outbox.js';
import { verifyBundle } from '../../runner/evidence/bundle.js';
import { verifyRejection } from '../../runner/evidence/rejection.js';
import { makeLinkWorld, waitFor, type LinkWorld } from '../helpers/agent-link.js';
import { directSelector } from '../helpers/runner.js';
import { runCli } from '../helpers/cli.js';

let nowMs = Date.now();
const worlds: LinkWorld[] = [];
const contexts: RunnerContext[] = [];
afterEach(() => {
  for (const ctx of contexts.splice(0)) ctx.close();
  for (const w of worlds.splice(0)) w.cleanup();
});

function setup(options: { settleMs?: number } = {}) {
  nowMs = Date.now();
  const world = makeLinkWorld({ runnerId: 'runner-spool-unit' });
  worlds.push(world);
  const ctx = openRunner(world.stateDir, { launcher: directSelector, clock: () => new Date(nowMs) });
  contexts.push(ctx);
  const spool = join(world.dir, 'spool');
  const agent = new SpoolAgent(ctx, { dir: spool, now: () => nowMs, sleep: async () => {}, settleMs: options.settleMs ?? 2000 });
  const inDir = join(spool, 'in');
  const out = (kind: keyof typeof SPOOL_OUT_FOLDERS) => readdirSync(join(spool, 'out', SPOOL_OUT_FOLDERS[kind])).filter((n) => !n.startsWith('.'));
  /** A file in in/ last modified `ageMs` before the injected now. */
  const drop = (name: string, bytes: Buffer, ageMs = 60_000) => {
    writeFileSync(join(inDir, name), bytes);
    const at = new Date(nowMs - ageMs);
    utimesSync(join(inDir, name), at, at);
  };
  return { world, ctx, spool, agent, inDir, out, drop };
}

/** The spool's outbox writer over this context, as the agent makes it. */
function writerOf(ctx: RunnerContext, spool: string): SpoolWriter {
  return new SpoolWriter({
    store: ctx.store,
    identity: { runnerId: ctx.state.identity.id, key: ctx.state.key },
    outDir: join(spool, 'out'),
    now: () => nowMs,
    logger: ctx.logger,
  });
}

function kindsOf(ctx: RunnerContext): string[] {
  const kinds: string[] = [];
  for (let seq = 0; seq < ctx.store.merkle.size(); seq++) kinds.push(parseRecordLeaf(ctx.store.record(seq)!.leaf, seq).kind);
  return kinds;
}

describe('the spool agent taking files from DIR/in/', () => {
  it('leaves a file that is still being copied (modified within the settle time) and takes it once it is still', async () => {
    const { world, agent, drop, out } = setup({ settleMs: 2000 });
    drop('copying.capsule.json', world.capsule({ target: { runners: ['runner-spool-unit'] } }), 500);
    await agent.lookOnce();
    expect(agent.view.decided).toBe(0);
    nowMs += 2000;
    await agent.lookOnce();
    expect(agent.view.outcomes).toEqual([expect.objectContaining({ name: 'copying.capsule.json', outcome: 'completed' })]);
    expect(out('bundle')).toHaveLength(1);
  });

  it('never reads a temporary name, a foreign name, a symlink or a hard link, even to a valid capsule', async () => {
    const { world, agent, drop, inDir } = setup();
    const capsule = world.capsule({ target: { runners: ['runner-spool-unit'] } });
    drop('.hidden.capsule.json', capsule);
    drop('x.capsule.json.part', capsule);
    drop('x.json', capsule);
    const elsewhere = join(world.dir, 'elsewhere.capsule.json');
    writeFileSync(elsewhere, capsule);
    symlinkSync(elsewhere, join(inDir, 'link.capsule.json'));
    linkSync(elsewhere, join(inDir, 'hardlink.capsule.json')); // a file linked in, not copied
    await agent.lookOnce();
    expect(agent.view.decided).toBe(0);
  });

  it('decides a file once by its digest: the same bytes under another name, again after a restart, are passed over', async () => {
    const { world, ctx, agent, drop, spool } = setup();
    const capsule = world.capsule({ target: { runners: ['runner-spool-unit'] } });
    drop('one.capsule.json', capsule);
    await agent.lookOnce();
    drop('two.capsule.json', capsule);
    await agent.lookOnce();
    expect(agent.view.decided).toBe(1);
    // A new agent on the same store (a restart): nothing is decided again, not even a replay rejection.
    const restarted = new SpoolAgent(ctx, { dir: spool, now: () => nowMs, sleep: async () => {} });
    await restarted.lookOnce();
    expect(restarted.view.decided).toBe(0);
    expect(kindsOf(ctx).filter((kind) => kind === 'capsule.rejected')).toEqual([]);
  });

  it('refuses a file over the capsule cap by its size, read only up to the cap, and decides it once by the digest of the whole file', async () => {
    const { agent, drop, out, ctx } = setup();
    const cap = ctx.state.trust.body.policy.maxCapsuleBytes ?? CAPSULE_MAX_BYTES;
    drop('huge.capsule.json', Buffer.alloc(cap + 10, 0x20));
    await agent.lookOnce();
    await agent.lookOnce();
    expect(agent.view.outcomes).toEqual([expect.objectContaining({ outcome: 'rejected', code: 'CAPSULE_TOO_LARGE' })]);
    expect(out('rejection')).toHaveLength(1);
    expect(kindsOf(ctx).filter((kind) => kind === 'capsule.rejected')).toHaveLength(1);
  });
});

describe('the spool agent writing DIR/out/', () => {
  it('after a crash between the file and its record, finds the same bytes there and records the answer spooled once', async () => {
    const { world, ctx, spool, out } = setup();
    await runCapsule(ctx, world.capsule({ target: { runners: ['runner-spool-unit'] } }));
    const row = ctx.store.outboxNext(nowMs)!;
    const path = join(spool, 'out', 'bundles', toSpoolDocumentName('bundle', row.digest!));
    writeFileSync(path, row.body!); // the file made it to disk; the record did not
    const writer = writerOf(ctx, spool);
    expect(writer.drain()).toMatchObject({ written: 0, existing: 1, failed: 0 });
    expect(writer.drain()).toMatchObject({ written: 0, existing: 0, failed: 0 });
    expect(kindsOf(ctx).filter((kind) => kind === 'outbox.spooled')).toHaveLength(1);
    expect(out('bundle')).toHaveLength(1);
    expect(verifyBundle(readFileSync(path), world.trust).runnerName).toBe('runner-spool-unit');
  });

  it('never replaces a file planted under an answer’s address: the answer stays queued with SPOOL_OUT_CONFLICT until the name is free', async () => {
    const { world, ctx, spool } = setup();
    await runCapsule(ctx, world.capsule({ target: { runners: ['runner-spool-unit'] } }));
    const row = ctx.store.outboxNext(nowMs)!;
    const path = join(spool, 'out', 'bundles', toSpoolDocumentName('bundle', row.digest!));
    writeFileSync(path, 'planted');
    const writer = writerOf(ctx, spool);
    expect(writer.drain()).toMatchObject({ written: 0, failed: 1 });
    expect(readFileSync(path, 'utf8')).toBe('planted');
    expect(ctx.store.outboxRow(row.id)).toMatchObject({ state: 'queued', lastCode: 'SPOOL_OUT_CONFLICT' });
    writeFileSync(path, row.body!); // the operator puts the right bytes back (or removes the file)
    nowMs += 61_000;
    expect(writer.drain()).toMatchObject({ existing: 1, failed: 0 });
    expect(ctx.store.outboxRow(row.id)?.state).toBe('acked');
  });

  it('fires an accepted recurring capsule through the schedule helper’s Scheduler and writes each firing’s bundle to out/', async () => {
    const { world, agent, drop, out } = setup();
    nowMs = Math.ceil(nowMs / 60_000) * 60_000 + 1000; // just after a minute boundary
    const capsule = world.capsule({
      target: { runners: ['runner-spool-unit'] },
      schedule: { cron: '* * * * *' },
      issuedAt: new Date(nowMs - 60_000).toISOString(),
      notBefore: new Date(nowMs - 60_000).toISOString(),
      expiresAt: new Date(nowMs + 3600_000).toISOString(),
    });
    drop('every-minute.capsule.json', capsule);
    await agent.lookOnce();
    expect(agent.view.outcomes).toEqual([expect.objectContaining({ outcome: 'scheduled' })]);
    expect(out('bundle')).toHaveLength(0);
    nowMs += 60_000; // the next slot
    await agent.scheduler.lookNow();
    expect(out('bundle')).toHaveLength(1);
  });
});

describe('the spool agent stopping', () => {
  it('aborts a running capsule after its grace, answers it RUN_AGENT_STOPPED in out/, and takes no further file', async () => {
    const { world, ctx, agent, drop, out, spool } = setup();
    drop(
      'long.capsule.json',
      world.capsule({ id: 'long', target: { runners: ['runner-spool-unit'] }, steps: [{ name: 'long', run: ['/bin/sleep', '30'] }] }),
    );
    drop('next.capsule.json', world.capsule({ id: 'next', target: { runners: ['runner-spool-unit'] } }), 30_000);
    const running = agent.run();
    await waitFor(() => kindsOf(ctx).includes('run.started'), 'the long run to start', 10_000);
    agent.stop();
    agent.stop(); // a second stop: the step is aborted at once
    await running;
    expect(out('rejection')).toHaveLength(1);
    const rejection = verifyRejection(readFileSync(join(spool, 'out', 'rejections', out('rejection')[0]!)), world.trust);
    expect(rejection.code).toBe('RUN_AGENT_STOPPED');
    expect(agent.view.outcomes.map((o) => o.name)).not.toContain('next.capsule.json');
    expect(ctx.store.outboxStats().queued).toBe(0);
  });
});

describe('agent --spool through the built CLI', () => {
  it('refuses a spool and a coordinator together with SPOOL_WITH_COORDINATOR', () => {
    const world = makeLinkWorld();
    worlds.push(world);
    mkdirSync(join(world.dir, 'spool'));
    const result = runCli(['agent', '--state', world.stateDir, '--spool', join(world.dir, 'spool'), '--coordinator', 'http://127.0.0.1:9']);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('SPOOL_WITH_COORDINATOR');
  });

  it('refuses a spool path that is not a folder with SPOOL_DIR_INVALID', () => {
    const world = makeLinkWorld();
    worlds.push(world);
    writeFileSync(join(world.dir, 'a-file'), 'x');
    const result = runCli(['agent', '--state', world.stateDir, '--spool', join(world.dir, 'a-file')]);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('SPOOL_DIR_INVALID');
  });
});
