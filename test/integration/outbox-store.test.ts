/**
 * The outbox, the feed cursor and the cosignatures in the runner's store (a real SQLite file): what the
 * runner owes the coordinator is written in the transaction of the record it answers for, never apart.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../runner/core/digest.js';
import { checkpointNow } from '../../runner/agent/log.js';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import { runCapsule } from '../../runner/agent/run-capsule.js';
import { Store } from '../../runner/store/store.js';
import { withRawDb } from '../helpers/raw-db.js';
import { directSelector } from '../helpers/runner.js';
import { makeWorld, type World } from '../helpers/world.js';

let world: World | undefined;
let ctx: RunnerContext | undefined;

afterEach(() => {
  ctx?.close();
  ctx = undefined;
  world?.cleanup();
  world = undefined;
});

function open(): { world: World; ctx: RunnerContext } {
  world = makeWorld();
  ctx = openRunner(world.stateDir, { launcher: directSelector });
  return { world, ctx };
}

const capsuleBytes = (w: World) => readFileSync(w.writeCapsule(w.capsule()));

describe('the outbox', () => {
  it("queues a run's bundle with the exact bytes of the bundle file, in the evidence record's transaction", async () => {
    const { world: w, ctx: c } = open();
    const outcome = await runCapsule(c, capsuleBytes(w));
    expect(outcome.kind).toBe('completed');
    if (outcome.kind !== 'completed') return;
    const row = c.store.outboxNext(Date.now() + 1000);
    expect(row).toBeDefined();
    expect(row!.kind).toBe('bundle');
    expect(row!.runId).toBe(outcome.runId);
    const file = readFileSync(outcome.bundlePath);
    expect(row!.body!.equals(file)).toBe(true);
    expect(row!.digest).toBe(`sha256:${sha256Hex(file)}`);
    // The row answers for the evidence record, and the bundle's log proof is under a checkpoint the store kept.
    const record = c.store.record(row!.recordSeq)!;
    expect(record.kind).toBe('evidence.signed');
    expect(c.store.latestCheckpoint()!.size).toBe(row!.recordSeq + 1);
  });

  it('queues an empty rejection row with every capsule.rejected record, and none for the other kinds', async () => {
    const { world: w, ctx: c } = open();
    const before = c.store.outboxStats();
    const outcome = await runCapsule(c, Buffer.from('{"not":"a capsule"}'));
    expect(outcome.kind).toBe('rejected');
    const row = c.store.outboxNext(Date.now() + 1000)!;
    expect(row.kind).toBe('rejection');
    expect(row.body).toBeNull();
    expect(row.digest).toBeNull();
    expect(c.store.record(row.recordSeq)!.kind).toBe('capsule.rejected');
    expect(c.store.outboxStats().queued).toBe(before.queued + 1);
    c.store.appendRecord('workspace.not-removed', { runId: 'r', code: 'EXEC_WORKSPACE_NOT_REMOVED' });
    expect(c.store.outboxStats().queued).toBe(before.queued + 1);
    void w;
  });

  it('queues a rejection row for a run a dead runner left running (run.aborted at the next open)', () => {
    world = makeWorld();
    const store = Store.open(`${world.stateDir}/runner.db`);
    try {
      store.startRun({ runId: 'run-1', capsuleId: 'c', manifestDigest: `sha256:${'0'.repeat(64)}`, isolation: 'none' });
      expect(store.abortInterruptedRuns(() => false)).toEqual(['run-1']);
      const row = store.outboxNext(Date.now() + 1000)!;
      expect(row.kind).toBe('rejection');
      expect(row.runId).toBe('run-1');
      expect(store.record(row.recordSeq)!.kind).toBe('run.aborted');
    } finally {
      store.close();
    }
  });

  it('writes neither the rejection record nor its row when the transaction around them fails', async () => {
    const { ctx: c } = open();
    const size = c.store.merkle.size();
    await expect(
      runCapsule(c, Buffer.from('junk'), {
        decided: () => {
          throw new Error('the cursor cannot move');
        },
      }),
    ).rejects.toThrow();
    expect(c.store.merkle.size()).toBe(size);
    expect(c.store.outboxStats().queued).toBe(0);
  });

  it('moves the feed cursor in the acceptance transaction, and an acceptance whose cursor cannot move burns no nonce', async () => {
    const { world: w, ctx: c } = open();
    const bytes = capsuleBytes(w);
    await expect(
      runCapsule(c, bytes, {
        decided: () => {
          throw new Error('no');
        },
      }),
    ).rejects.toThrow('no');
    expect(c.store.merkle.size()).toBe(0);
    const outcome = await runCapsule(c, bytes, { decided: () => c.store.setFeedCursor('https://coordinator.example', 7) });
    expect(outcome.kind).toBe('completed');
    expect(c.store.feedCursor('https://coordinator.example')).toBe(7);
    expect(c.store.feedCursor('https://other.example')).toBe(0);
  });

  it('acks a row once: one outbox.acked record, and a second ack changes nothing', async () => {
    const { world: w, ctx: c } = open();
    await runCapsule(c, capsuleBytes(w));
    const row = c.store.outboxNext(Date.now() + 1000)!;
    const size = c.store.merkle.size();
    c.store.outboxAck(row.id, 'created');
    c.store.outboxAck(row.id, 'existing');
    expect(c.store.merkle.size()).toBe(size + 1);
    const record = JSON.parse(c.store.record(size)!.leaf.toString('utf8'));
    expect(record).toMatchObject({ kind: 'outbox.acked', digest: row.digest, status: 'created' });
    expect(c.store.outboxNext(Date.now() + 1000)).toBeUndefined();
    expect(c.store.outboxStats()).toMatchObject({ queued: 0, acked: 1, dead: 0, oldestQueuedAt: null });
  });

  it('dead-letters a row with its code and a record, keeps it visible, and never hands it out again', async () => {
    const { world: w, ctx: c } = open();
    await runCapsule(c, capsuleBytes(w));
    const row = c.store.outboxNext(Date.now() + 1000)!;
    c.store.outboxDead(row.id, 'BUNDLE_SIGNATURE');
    expect(c.store.outboxRow(row.id)).toMatchObject({ state: 'dead', lastCode: 'BUNDLE_SIGNATURE' });
    expect(c.store.outboxStats()).toMatchObject({ queued: 0, dead: 1 });
    expect(c.store.outboxNext(Date.now() + 1000)).toBeUndefined();
  });

  it('refuses to settle a rejection row before it has its document', async () => {
    const { ctx: c } = open();
    await runCapsule(c, Buffer.from('junk'));
    const row = c.store.outboxNext(Date.now() + 1000)!;
    expect(() => c.store.outboxAck(row.id, 'created')).toThrow(/no document/);
  });

  it("keeps a rejection's first document: a second body for the row is ignored, so every retry sends the same bytes", async () => {
    const { ctx: c } = open();
    await runCapsule(c, Buffer.from('junk'));
    const row = c.store.outboxNext(Date.now() + 1000)!;
    c.store.outboxSetBody(row.id, 'sha256:aa', Buffer.from('first'));
    c.store.outboxSetBody(row.id, 'sha256:bb', Buffer.from('second'));
    expect(c.store.outboxRow(row.id)).toMatchObject({ digest: 'sha256:aa', body: Buffer.from('first') });
  });

  it('hands out a row retried later only when it is due, and counts the attempt', async () => {
    const { ctx: c } = open();
    await runCapsule(c, Buffer.from('junk'));
    const row = c.store.outboxNext(Date.now() + 1000)!;
    const later = Date.now() + 60_000;
    c.store.outboxRetry(row.id, later, 'NETWORK');
    expect(c.store.outboxNext(later - 1)).toBeUndefined();
    expect(c.store.outboxNext(later)).toMatchObject({ id: row.id, attempts: 1, lastCode: 'NETWORK' });
    expect(c.store.outboxNextDueAt()).toBe(later);
  });
});

describe('cosignatures', () => {
  it('keeps one per size and witness, and says the largest size each witness cosigned', () => {
    const { ctx: c } = open();
    expect(c.store.witnessedSize('w.example/1')).toBe(0);
    c.store.saveCosignature({ size: 3, witness: 'w.example/1', timestamp: 100, line: '— w.example/1 AAAA\n' });
    c.store.saveCosignature({ size: 3, witness: 'w.example/1', timestamp: 200, line: '— w.example/1 BBBB\n' });
    c.store.saveCosignature({ size: 5, witness: 'w.example/2', timestamp: 300, line: '— w.example/2 CCCC\n' });
    expect(c.store.witnessedSize('w.example/1')).toBe(3);
    expect(c.store.witnessedSize('w.example/2')).toBe(5);
    expect(c.store.cosignatures(3)).toEqual([expect.objectContaining({ size: 3, witness: 'w.example/1', timestamp: 100 })]);
    expect(c.store.cosignatures()).toHaveLength(2);
  });
});

describe('the outbox checked against the log at open', () => {
  it('refuses a store whose outbox lost the row of a rejection (STORE_CORRUPT, check outbox)', async () => {
    const { world: w, ctx: c } = open();
    await runCapsule(c, Buffer.from('junk'));
    c.close();
    ctx = undefined;
    withRawDb(`${w.stateDir}/runner.db`, (db) => db.exec('DELETE FROM outbox_v1'));
    expect(() => Store.open(`${w.stateDir}/runner.db`)).toThrow(
      expect.objectContaining({ code: 'STORE_CORRUPT', details: expect.objectContaining({ check: 'outbox', missing: 1 }) }),
    );
  });

  it('refuses a store whose outbox holds a row for a record that is no answer', async () => {
    const { world: w, ctx: c } = open();
    await runCapsule(c, readFileSync(w.writeCapsule(w.capsule())));
    c.close();
    ctx = undefined;
    withRawDb(`${w.stateDir}/runner.db`, (db) => db.exec("UPDATE outbox_v1 SET record_seq = 0 WHERE kind = 'bundle'"));
    expect(() => Store.open(`${w.stateDir}/runner.db`)).toThrow(
      expect.objectContaining({ code: 'STORE_CORRUPT', details: expect.objectContaining({ check: 'outbox' }) }),
    );
  });

  it('opens a store from before the outbox and ships none of its earlier answers', async () => {
    const { world: w, ctx: c } = open();
    await runCapsule(c, Buffer.from('junk'));
    c.close();
    ctx = undefined;
    // As a schema 6 store would be: no outbox tables (nor those of later versions), the version 6.
    withRawDb(`${w.stateDir}/runner.db`, (db) =>
      db.exec(
        'DROP TABLE outbox_v1; DROP TABLE outbox_start_v1; DROP TABLE feed_cursor_v1; DROP TABLE cosignatures_v1; DROP TABLE schedules_v1; DROP TABLE spool_inbox_v1; DROP TABLE spool_checkpoints_v1; DROP INDEX IF EXISTS records_v1_errors; DROP TABLE changes_v1; DROP TABLE approvals_v1; PRAGMA user_version = 6;',
      ),
    );
    const store = Store.open(`${w.stateDir}/runner.db`);
    try {
      expect(store.outboxStartSeq()).toBe(1);
      expect(store.outboxStats().queued).toBe(0);
    } finally {
      store.close();
    }
  });
});

describe('a run stopped by the agent (runCapsule signal)', () => {
  it('stops the running step, records run.aborted RUN_AGENT_STOPPED, and queues its rejection', async () => {
    const { world: w, ctx: c } = open();
    const controller = new AbortController();
    const bytes = readFileSync(w.writeCapsule(w.capsule({ steps: [{ name: 'long', run: ['/bin/sleep', '30'] }] })));
    const started = Date.now();
    setTimeout(() => controller.abort(), 300);
    await expect(runCapsule(c, bytes, { signal: controller.signal })).rejects.toMatchObject({ code: 'RUN_AGENT_STOPPED' });
    expect(Date.now() - started).toBeLessThan(10_000);
    const aborted = [...c.store.records(0)].map((r) => JSON.parse(r.leaf.toString('utf8'))).filter((r) => r.kind === 'run.aborted');
    expect(aborted).toEqual([expect.objectContaining({ reason: 'RUN_AGENT_STOPPED' })]);
    const row = c.store.outboxNext(Date.now() + 1000)!;
    expect(row).toMatchObject({ kind: 'rejection', runId: aborted[0].runId });
  });
});

describe('a run told to stop (runCapsule stopping)', () => {
  it('lets the running step end by itself, starts no further step, and records run.aborted RUN_AGENT_STOPPED', async () => {
    const { world: w, ctx: c } = open();
    const stopping = new AbortController();
    const steps = [
      { name: 'first', run: ['/bin/sleep', '1'] },
      { name: 'second', run: ['/bin/true'] },
    ];
    const bytes = readFileSync(w.writeCapsule(w.capsule({ steps })));
    setTimeout(() => stopping.abort(), 200);
    await expect(runCapsule(c, bytes, { stopping: stopping.signal })).rejects.toMatchObject({ code: 'RUN_AGENT_STOPPED' });
    const records = [...c.store.records(0)].map((r) => JSON.parse(r.leaf.toString('utf8')));
    expect(records.filter((r) => r.kind === 'step.finished').map((r) => [r.name, r.status])).toEqual([['first', 'succeeded']]);
    expect(records.filter((r) => r.kind === 'run.aborted')).toEqual([expect.objectContaining({ reason: 'RUN_AGENT_STOPPED' })]);
  });
});

describe('the high-water mark and a transaction that does not commit', () => {
  it('is not moved by a checkpoint whose transaction rolls back, so the database opens again (no STORE_ROLLED_BACK)', async () => {
    const { world: w, ctx: c } = open();
    await runCapsule(c, readFileSync(w.writeCapsule(w.capsule())));
    const head = readFileSync(`${w.stateDir}/runner.db.head`, 'utf8');
    expect(() =>
      c.store.transaction(() => {
        c.store.appendRecord('capsule.rejected', { code: 'CAPSULE_UNPARSEABLE', fileSize: 1 });
        checkpointNow(c.store, { runnerId: w.runnerId, key: c.state.key });
        // A runner killed here, before COMMIT, is what this stands for.
        throw new Error('killed before commit');
      }),
    ).toThrow('killed before commit');
    expect(readFileSync(`${w.stateDir}/runner.db.head`, 'utf8')).toBe(head);
    c.close();
    ctx = undefined;
    expect(() => Store.open(`${w.stateDir}/runner.db`).close()).not.toThrow();
  });

  it('moves once the checkpoint is committed', async () => {
    const { world: w, ctx: c } = open();
    await runCapsule(c, readFileSync(w.writeCapsule(w.capsule())));
    c.store.appendRecord('capsule.rejected', { code: 'CAPSULE_UNPARSEABLE', fileSize: 1 });
    const checkpoint = checkpointNow(c.store, { runnerId: w.runnerId, key: c.state.key });
    expect(JSON.parse(readFileSync(`${w.stateDir}/runner.db.head`, 'utf8')).size).toBe(checkpoint.size);
  });
});
