/**
 * status against a database that changes while it reads. With no WAL file status reads the main file as
 * immutable, which promises SQLite the file does not change; a short-lived writer (a command that opens the
 * database, writes, checkpoints and closes, deleting its WAL) can break that promise within one read. The
 * reader must notice and read again, never report what it read from a file changing under it.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ScheduleTable } from '../../runner/store/schedules.js';
import { StatusReader } from '../../runner/store/status.js';
import { Store } from '../../runner/store/store.js';
import { runCli } from '../helpers/cli.js';
import { makeWorld, type World } from '../helpers/world.js';

const worlds: World[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  for (const w of worlds.splice(0)) w.cleanup();
});

function appendFinished(path: string, count: number): void {
  const store = Store.open(path);
  try {
    for (let i = 0; i < count; i++) {
      store.appendRecord('run.finished', { runId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, verdict: 'pass' });
    }
  } finally {
    store.close();
  }
}

describe('status reading a database that changes under it', () => {
  it('reads again when a writer opened, wrote, checkpointed and closed during an immutable read (its WAL gone again)', () => {
    const w = makeWorld();
    worlds.push(w);
    const db = join(w.stateDir, 'runner.db');
    appendFinished(db, 3);
    expect(existsSync(`${db}-wal`)).toBe(false);
    const before = StatusReader.readSnapshot(db, { busyTimeoutMs: 1000 }).logSize;
    const active = ScheduleTable.prototype.active;
    let writes = 0;
    // The last query of a snapshot: the writer comes and goes between it and the ones before.
    vi.spyOn(ScheduleTable.prototype, 'active').mockImplementation(function (this: ScheduleTable) {
      if (writes++ === 0) appendFinished(db, 5);
      return active.call(this);
    });
    expect(existsSync(`${db}-wal`)).toBe(false);
    const snapshot = StatusReader.readSnapshot(db, { busyTimeoutMs: 1000 });
    expect(writes).toBeGreaterThanOrEqual(2);
    expect(existsSync(`${db}-wal`)).toBe(false); // the WAL the writer made is gone: only the file's change tells
    expect(snapshot.logSize).toBe(before + 5);
  });

  it('gives up with STORE_OPEN_FAILED (critical) when the file changes under every read, rather than answer from one', () => {
    const w = makeWorld();
    worlds.push(w);
    const db = join(w.stateDir, 'runner.db');
    appendFinished(db, 1);
    const active = ScheduleTable.prototype.active;
    vi.spyOn(ScheduleTable.prototype, 'active').mockImplementation(function (this: ScheduleTable) {
      appendFinished(db, 1);
      return active.call(this);
    });
    expect(() => StatusReader.readSnapshot(db, { busyTimeoutMs: 1000 })).toThrow(expect.objectContaining({ code: 'STORE_OPEN_FAILED' }));
  });
});

describe('status says what it judged by', () => {
  it('names the configuration file it read (the reserve and the coordinator come from it), or that it read none', () => {
    const w = makeWorld();
    worlds.push(w);
    const file = join(w.dir, 'agent.toml');
    writeFileSync(file, '[store]\nreserveBytes = 1_000_000_000_000_000\n', { mode: 0o600 });
    const ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
    const without = runCli(['status', '--state', w.stateDir, '--json'], { env: ENV });
    expect(JSON.parse(without.stdout).config).toEqual({ file: null });
    expect(without.status).toBe(0);
    expect(runCli(['status', '--state', w.stateDir], { env: ENV }).stdout).toMatch(/^config +no configuration file .*--config/m);
    // The agent's file has a reserve no disk here meets: judged by it, status is critical, as the agent's runs are refused.
    const withFile = runCli(['status', '--state', w.stateDir, '--json', '--config', file], { env: ENV });
    expect(JSON.parse(withFile.stdout).config).toEqual({ file });
    expect(withFile.status).toBe(2);
    expect(JSON.parse(withFile.stdout).problems.map((p: { code: string }) => p.code)).toContain('STATUS_DISK_BELOW_RESERVE');
  });
});
