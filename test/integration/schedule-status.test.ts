/**
 * What `status` says of a schedule's next firing, against what the scheduler will do (read through
 * readStatus, the command's own reader, over a real state folder and store).
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readStatus } from '../../runner/cli/status.js';
import { Store } from '../../runner/store/store.js';
import { makeWorld, type World } from '../helpers/world.js';

const worlds: World[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});

const HOUR_MS = 3_600_000;

describe('status and a schedule whose last handled slot is ahead of the clock', () => {
  it('(the clock jumped back after slots were handled) names as next firing the first slot after that one, not one that will not fire', async () => {
    const w = makeWorld();
    worlds.push(w);
    const now = new Date();
    const hour = Math.floor(now.getTime() / HOUR_MS) * HOUR_MS;
    const digest = `sha256:${'ab'.repeat(32)}`;
    const store = Store.open(join(w.stateDir, 'runner.db'));
    try {
      store.transaction(() => {
        const record = store.appendRecord('capsule.accepted', {
          capsuleId: 'hourly',
          capsuleKind: 'validation',
          manifestDigest: digest,
          signers: ['signer-1'],
        });
        store.addSchedule({
          manifestDigest: digest,
          capsuleId: 'hourly',
          acceptedSeq: record.seq,
          acceptedAt: new Date(hour - HOUR_MS).toISOString(),
          issuedAt: new Date(hour - HOUR_MS).toISOString(),
          fileDigest: `sha256:${'00'.repeat(32)}`,
          cron: '0 * * * *',
          timezone: 'UTC',
          expiresAt: new Date(hour + 48 * HOUR_MS).toISOString(),
        });
      });
      // Handled up to three hours from now while the clock was ahead (recorded missed; slots never run twice).
      const last = new Date(hour + 3 * HOUR_MS).toISOString();
      store.recordScheduleMissed({
        capsuleId: 'hourly',
        manifestDigest: digest,
        count: 4,
        first: new Date(hour).toISOString(),
        last,
        catchUp: 'skip',
      });
    } finally {
      store.close();
    }
    const report = await readStatus(w.stateDir, { now });
    expect(report.schedules).toHaveLength(1);
    expect(report.schedules[0]!.nextFiring).toBe(new Date(hour + 4 * HOUR_MS).toISOString());
  });
});
