/**
 * `edge-runner exec` with a recurring capsule, through the built CLI: accepted and kept (exit 0, status
 * `scheduled`, the first slot), nothing run now; the same file again is a replay (exit 3). The agent on the
 * state folder fires it (test/integration/schedule-agent-e2e.test.ts).
 */
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { makeWorld } from '../helpers/world.js';

const world = makeWorld();
afterAll(() => world.cleanup());

describe.skipIf(!existsSync(CLI_ENTRY))('edge-runner exec with a recurring capsule (needs dist/: npx tsc -p tsconfig.build.json)', () => {
  it('accepts and keeps it, runs nothing now, prints the schedule and its first slot; again it is a replay', () => {
    const path = world.writeCapsule(world.capsule({ schedule: { cron: '*/10 * * * *', timezone: 'Europe/London' } }));
    const first = runCli(['exec', path, '--state', world.stateDir, '--json']);
    expect(first.status, first.stderr).toBe(0);
    const printed = JSON.parse(first.stdout) as Record<string, unknown>;
    expect(printed).toMatchObject({ status: 'scheduled', cron: '*/10 * * * *', timezone: 'Europe/London', replaced: [] });
    expect(Date.parse(printed.firstSlot as string)).toBeGreaterThan(Date.now());
    expect(new Date(printed.firstSlot as string).getUTCMinutes() % 10).toBe(0);
    const human = runCli(['exec', path, '--state', world.stateDir]);
    expect(human.status).toBe(3);
    expect(human.stderr).toContain('CAPSULE_REPLAY');
  });
});
