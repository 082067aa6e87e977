/**
 * `kill -9` of the built agent while a scheduled run goes, against the stand-in coordinator: at the next start
 * the interrupted run is recorded aborted (RUN_RUNNER_RESTARTED) and answered with a signed rejection; its
 * slot, handled with its run.started, is never run again; the schedule goes on at later slots.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseRecordLeaf, type LogRecord } from '../../runner/log/record.js';
import { Store } from '../../runner/store/store.js';
import { makeLinkWorld, StandInCoordinator, waitFor } from '../helpers/agent-link.js';
import { CLI_ENTRY } from '../helpers/cli.js';
import { killAll, spawnAgent } from '../helpers/link.js';
import { value, withRawDb } from '../helpers/raw-db.js';
import { existsSync } from 'node:fs';

const world = makeLinkWorld();
const coordinator = new StandInCoordinator(world);
afterAll(async () => {
  await killAll();
  await coordinator.stop();
  world.cleanup();
});

const database = join(world.stateDir, 'runner.db');
const count = (sql: string) => withRawDb(database, (db) => Number(value(db, sql) ?? 0), { readOnly: true });

describe.skipIf(!existsSync(CLI_ENTRY))('kill -9 of the agent during a scheduled run (needs dist/)', () => {
  it('aborts the run at the next start, answers it, never runs its slot again, and goes on at the next slots', async () => {
    await coordinator.start();
    coordinator.publish(
      world.capsule({
        target: { runners: [world.runnerId] },
        schedule: { cron: '*/2 * * * * *' },
        steps: [{ name: 'slow', run: ['/bin/sleep', '1.5'] }],
      }),
    );
    const first = spawnAgent(world, coordinator.url);
    await waitFor(() => count("SELECT count(*) FROM runs_v1 WHERE status = 'running'") === 1, 'a scheduled run going', 30_000);
    first.child.kill('SIGKILL');
    await first.exit;

    const second = spawnAgent(world, coordinator.url);
    await waitFor(() => count("SELECT count(*) FROM runs_v1 WHERE status = 'finished'") >= 2, 'two firings after the restart', 30_000);
    await waitFor(() => coordinator.rejections.size === 1, 'the aborted run answered', 20_000);
    second.child.kill('SIGKILL');
    await second.exit;

    const store = Store.open(database);
    let records: LogRecord[];
    try {
      records = [...store.records()].map((r) => parseRecordLeaf(r.leaf, r.seq));
    } finally {
      store.close();
    }
    expect(records.filter((r) => r.kind === 'capsule.accepted')).toHaveLength(1);
    const aborted = records.flatMap((r) => (r.kind === 'run.aborted' ? [r.body] : []));
    expect(aborted[0]).toMatchObject({ reason: 'RUN_RUNNER_RESTARTED' });
    const slots = records.flatMap((r) => (r.kind === 'run.started' ? [r.body.scheduledFor!] : []));
    expect(slots.length).toBeGreaterThanOrEqual(3);
    expect(new Set(slots).size).toBe(slots.length); // no slot ran twice
    expect([...slots].sort()).toEqual(slots); // in slot order
  }, 90_000);
});
