/**
 * status against a database that changes while it reads. With no WAL file status reads the main file as
 * immutable, which promises SQLite the file does not change; a short-lived writer (a command that opens the
 * database, writes, checkpoints and closes, deleting its WAL) can break that promise within one read. The
 * reader must notice and read again, never report what it read from a file changing under it.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ScheduleTable } from '../../runner/store/schedules.js';
import { StatusReader } from '../../runner/store/status.js';
import { Store } from '../../runner/store/store.js';
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
