/**
 * `edge-runner status --state DIR [--json]` through the built CLI: every item of the report, the exit codes a
 * monitoring check uses (0 ok, 1 warning, 2 critical), and that it reads without writing: no file of the
 * state folder changes, it answers while another process holds the database's write lock, and it answers
 * with the whole file system read-only (bwrap), where any write would fail.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { initState, layoutOf } from '../../runner/state/state.js';
import { stateViewLayoutOf } from '../../runner/cli/state-view.js';
import { Store } from '../../runner/store/store.js';
import { probeIsolation } from '../../runner/exec/sandbox.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { withRawDb } from '../helpers/raw-db.js';
import { makeTrustBody, makeWorld, signTrust, WITNESS_NAME, type World } from '../helpers/world.js';

const worlds: World[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});

function world(options: Parameters<typeof makeWorld>[0] = {}): World {
  const w = makeWorld(options);
  worlds.push(w);
  return w;
}

const ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
const HOUR_MS = 3_600_000;

function status(w: World, env: Record<string, string> = {}, extra: string[] = []) {
  const result = runCli(['status', '--state', w.stateDir, '--json', ...extra], { env: { ...ENV, ...env } });
  return { ...result, report: JSON.parse(result.stdout || '{}') as Record<string, any> };
}

function withStore<T>(w: World, fn: (store: Store) => T, now?: () => Date): T {
  const store = Store.open(join(w.stateDir, 'runner.db'), now ? { now } : {});
  try {
    return fn(store);
  } finally {
    store.close();
  }
}

/** Every file below `dir` with its bytes' digest and its mtime. */
function fingerprint(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (folder: string) => {
    for (const name of readdirSync(folder, { withFileTypes: true })) {
      const path = join(folder, name.name);
      if (name.isDirectory()) walk(path);
      else out[path] = `${createHash('sha256').update(readFileSync(path)).digest('hex')} ${statSync(path).mtimeMs}`;
    }
  };
  walk(dir);
  return out;
}

describe('edge-runner status', () => {
  it('reports a fresh runner as ok (exit 0): id and labels, trust version and expiry, an empty log and outbox, the disk', () => {
    const w = world({ labels: ['bank', 'eu'] });
    const { status: code, report } = status(w);
    expect(code).toBe(0);
    expect(report.status).toBe('ok');
    expect(report.runner).toEqual({ id: w.runnerId, labels: ['bank', 'eu'], keyid: w.runnerKey.keyid });
    expect(report.trust).toMatchObject({ version: 1, expires: w.trustBody.expires });
    expect(report.trust.daysLeft).toBeGreaterThan(300);
    expect(report.log).toEqual({ size: 0, lastCheckpoint: null, lastWitnessed: null });
    expect(report.outbox).toMatchObject({ queued: 0, dead: 0, oldestQueuedAt: null, lastDead: null });
    expect(report.schedules).toEqual([]);
    expect(report.disk.freeBytes).toBeGreaterThan(0);
    expect(report.disk.reserveBytes).toBe(128 * 1024 * 1024);
    expect(report.lastError).toBeNull();
    expect(report.problems).toEqual([]);
    const human = runCli(['status', '--state', w.stateDir], { env: ENV });
    expect(human.status).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`^runner +${w.runnerId} \\(labels: bank, eu\\)`, 'm'));
    expect(human.stdout).toMatch(/^status +ok$/m);
  });

  it('shows the log size, the last checkpoint, the last witnessed size and by whom, and the last error with its code', () => {
    const w = world({ witness: true });
    // A capsule signed by nobody the trust knows: rejected, recorded, answered (its outbox row queued).
    const rejected = runCli(['exec', w.writeCapsule(w.capsule({}, {}, [w.outsider])), '--state', w.stateDir], { env: ENV });
    expect(rejected.status).toBe(3);
    withStore(w, (store) => {
      store.saveCheckpoint(1, 'note\n');
      store.saveCosignature({ size: 1, witness: WITNESS_NAME, timestamp: 1_700_000_000, line: `— ${WITNESS_NAME} AAAA\n` });
      store.appendRecord('run.finished', { runId: '00000000-0000-4000-8000-000000000001', verdict: 'pass' });
    });
    const { status: code, report } = status(w);
    expect(code).toBe(0);
    expect(report.log.size).toBe(2);
    expect(report.log.lastCheckpoint).toMatchObject({ size: 1 });
    expect(report.log.lastWitnessed).toMatchObject({ size: 1, by: [WITNESS_NAME] });
    const code0 = /edge-runner: (CAPSULE_[A-Z_]+)/.exec(rejected.stderr)?.[1];
    expect(code0).toMatch(/^CAPSULE_SIGNATURE/);
    expect(report.lastError).toMatchObject({ seq: 0, kind: 'capsule.rejected', code: code0 });
    expect(report.outbox.queued).toBe(1);
    expect(report.outbox.oldestQueuedAgeSeconds).toBeGreaterThanOrEqual(0);
  });

  it('warns (exit 1) about an answer queued for over an hour, with the last attempt code, and about a dead letter', () => {
    const w = world();
    const past = new Date(Date.now() - 2 * HOUR_MS);
    withStore(
      w,
      (store) => {
        store.appendRecord('capsule.rejected', { code: 'CAPSULE_EXPIRED' });
        store.appendRecord('capsule.rejected', { code: 'CAPSULE_NOT_TARGETED' });
        const first = store.outboxNext(Number.MAX_SAFE_INTEGER)!;
        store.outboxRetry(first.id, Date.now() + 60_000, 'OUTBOX_HTTP_RETRYABLE');
        const second = store.outboxNext(Number.MAX_SAFE_INTEGER)!;
        store.outboxSetBody(second.id, `sha256:${'ab'.repeat(32)}`, Buffer.from('{}'));
        store.outboxDead(second.id, 'PROTOCOL_BUNDLE_INVALID');
      },
      () => past,
    );
    const { status: code, report } = status(w);
    expect(code).toBe(1);
    expect(report.status).toBe('warning');
    expect(report.outbox).toMatchObject({ queued: 1, dead: 1, lastAttemptCode: 'OUTBOX_HTTP_RETRYABLE' });
    expect(report.outbox.lastDead).toMatchObject({ code: 'PROTOCOL_BUNDLE_INVALID' });
    expect(report.outbox.oldestQueuedAgeSeconds).toBeGreaterThan(3600);
    expect(report.problems.map((p: { code: string }) => p.code).sort()).toEqual(['STATUS_OUTBOX_DEAD', 'STATUS_OUTBOX_STALE']);
    expect(report.lastError).toMatchObject({ kind: 'outbox.dead', code: 'PROTOCOL_BUNDLE_INVALID' });
  });

  it('lists the schedules with their next firing, and warns when a slot is long due and not handled (agent down)', () => {
    const w = world();
    const now = Date.now();
    const schedule = (id: string, acceptedAt: Date, cron: string) =>
      withStore(w, (store) =>
        store.transaction(() => {
          const record = store.appendRecord('run.finished', { runId: '00000000-0000-4000-8000-000000000002', verdict: 'pass' });
          store.addSchedule({
            manifestDigest: `sha256:${createHash('sha256').update(id).digest('hex')}`,
            capsuleId: id,
            acceptedSeq: record.seq,
            acceptedAt: acceptedAt.toISOString(),
            issuedAt: acceptedAt.toISOString(),
            fileDigest: `sha256:${'00'.repeat(32)}`,
            cron,
            timezone: 'Europe/London',
            expiresAt: new Date(now + 30 * 86_400_000).toISOString(),
          });
        }),
      );
    schedule('nightly', new Date(now - 60_000), '0 3 * * *');
    let { status: code, report } = status(w);
    expect(code).toBe(0);
    expect(report.schedules).toHaveLength(1);
    expect(report.schedules[0]).toMatchObject({ capsuleId: 'nightly', cron: '0 3 * * *', timezone: 'Europe/London', lastSlot: null });
    expect(Date.parse(report.schedules[0].nextFiring)).toBeGreaterThan(now);
    expect(Date.parse(report.schedules[0].nextFiring) - now).toBeLessThanOrEqual(25 * HOUR_MS);
    schedule('every-minute', new Date(now - HOUR_MS), '* * * * *');
    ({ status: code, report } = status(w));
    expect(code).toBe(1);
    expect(report.problems).toEqual([expect.objectContaining({ level: 'warning', code: 'STATUS_SCHEDULE_BEHIND' })]);
  });

  it('is critical (exit 2) when free disk is under the reserve, and warns under twice it (environment or file)', () => {
    const w = world();
    const free = status(w).report.disk.freeBytes as number;
    const config = join(w.dir, 'agent.toml');
    writeFileSync(config, `[store]\nreserveBytes = ${free * 2}\n`);
    let { status: code, report } = status(w, {}, ['--config', config]);
    expect(code).toBe(2);
    expect(report.status).toBe('critical');
    expect(report.problems).toEqual([expect.objectContaining({ level: 'critical', code: 'STATUS_DISK_BELOW_RESERVE' })]);
    ({ status: code, report } = status(w, { EDGE_RUNNER_RESERVE_BYTES: String(Math.floor(free / 1.5)) }));
    expect(report).toMatchObject({ status: 'warning', problems: [expect.objectContaining({ code: 'STATUS_DISK_LOW' })] });
    expect(code).toBe(1);
  });

  it('warns inside 30 days of the trust expiry, and is critical once it expired (where the runner refuses to open)', () => {
    for (const [days, exit, problem] of [
      [10, 1, 'STATUS_TRUST_EXPIRING'],
      [-1, 2, 'STATUS_TRUST_EXPIRED'],
    ] as const) {
      const w = world({ init: false });
      const body = { ...w.trustBody, expires: new Date(Date.now() + days * 86_400_000).toISOString().replace(/\.\d+Z$/, 'Z') };
      initState(w.stateDir, {
        id: w.runnerId,
        trustBytes: signTrust(body, [w.root]),
        now: new Date(Date.now() - 2 * 86_400_000),
        key: w.runnerKey,
        createDatabase: (path) => Store.open(path, { create: true }).close(),
      });
      const { status: code, report } = status(w);
      expect(code).toBe(exit);
      expect(report.problems).toEqual([expect.objectContaining({ code: problem })]);
      expect(report.trust.expires).toBe(body.expires);
    }
  });

  it('parses its options as the rest of the command line does: --state=DIR, --help (exit 0), usage errors (exit 2)', () => {
    const w = world();
    expect(runCli(['status', `--state=${w.stateDir}`], { env: ENV }).status).toBe(0);
    const help = runCli(['status', '--help'], { env: ENV });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('--state <dir>');
    for (const args of [['status'], ['status', '--state'], ['status', '--state', w.stateDir, '--verbose']]) {
      const result = runCli(args, { env: ENV });
      expect(result.status, args.join(' ')).toBe(2);
      expect(result.stderr, args.join(' ')).toMatch(/^edge-runner: USAGE: /);
    }
    expect(runCli(['--help'], { env: ENV }).stdout).toMatch(/^ +status /m);
  });

  it('is critical (exit 2) with the code when the state cannot be read, in JSON and in words', () => {
    const w = world();
    rmSync(join(w.stateDir, 'runner.json'));
    const { status: code, report } = status(w);
    expect(code).toBe(2);
    expect(report).toEqual({ status: 'critical', error: expect.objectContaining({ code: 'STATE_MISSING' }) });
    const words = runCli(['status', '--state', w.stateDir], { env: ENV });
    expect(words.status).toBe(2);
    expect(words.stderr).toContain('STATE_MISSING');
  });

  it('warns (STATUS_TRUST_UPDATE_PENDING) about a trust update cut short, reporting the pinned version from the history', () => {
    const w = world();
    const history = join(w.stateDir, 'trust');
    mkdirSync(history, { recursive: true, mode: 0o700 });
    writeFileSync(join(history, '1.dsse.json'), w.trustBytes, { mode: 0o644 });
    const next = signTrust({ ...w.trustBody, version: 2 }, [w.root]);
    chmodSync(join(w.stateDir, 'trust.dsse.json'), 0o644);
    writeFileSync(join(w.stateDir, 'trust.dsse.json'), next); // moved, but runner.json still pins version 1
    const { status: code, report } = status(w);
    expect(code).toBe(1);
    expect(report.trust.version).toBe(1);
    expect(report.problems).toEqual([expect.objectContaining({ level: 'warning', code: 'STATUS_TRUST_UPDATE_PENDING' })]);
  });

  it('is critical when the trust file is not the pinned one (STATE_TRUST_MISMATCH)', () => {
    const w = world();
    const other = signTrust(makeTrustBody([{ name: 'root-1', key: w.root, roles: ['root'] }]), [w.root]);
    chmodSync(join(w.stateDir, 'trust.dsse.json'), 0o644);
    writeFileSync(join(w.stateDir, 'trust.dsse.json'), other);
    const { status: code, report } = status(w);
    expect(code).toBe(2);
    expect(report.error.code).toBe('STATE_TRUST_MISMATCH');
  });

  it("names the state folder's files as state.ts does (status does not import it: ajv and tweetnacl are most of a start)", () => {
    const full = layoutOf('/var/lib/edge-runner');
    const view = stateViewLayoutOf('/var/lib/edge-runner');
    for (const [name, path] of Object.entries(view)) expect(path, name).toBe(full[name as keyof typeof full]);
  });

  it('is critical when the database is an older copy than the last checkpoint signed (STATUS_LOG_ROLLED_BACK)', () => {
    const w = world();
    const db = join(w.stateDir, 'runner.db');
    const copy = join(w.dir, 'runner.db.copy');
    copyFileSync(db, copy);
    withStore(w, (store) => {
      store.appendRecord('run.finished', { runId: '00000000-0000-4000-8000-000000000003', verdict: 'pass' });
      store.saveCheckpoint(1, 'note\n');
    });
    expect(status(w).status).toBe(0);
    copyFileSync(copy, db); // the old copy put back, its mark (runner.db.head) left as it is
    const { status: code, report } = status(w);
    expect(code).toBe(2);
    expect(report.problems).toEqual([expect.objectContaining({ level: 'critical', code: 'STATUS_LOG_ROLLED_BACK' })]);
  });

  describe('reading without writing', () => {
    it('changes no file of the state folder (database, its WAL, the head mark, runner.json)', () => {
      const w = world({ witness: true });
      runCli(['exec', w.writeCapsule(w.capsule({}, {}, [w.outsider])), '--state', w.stateDir], { env: ENV });
      withStore(w, (store) => store.saveCheckpoint(1, 'note\n'));
      const before = fingerprint(w.stateDir);
      expect(status(w).status).toBe(0);
      expect(fingerprint(w.stateDir)).toEqual(before);
    });

    it('answers while another process holds the write lock, waiting for none (busy timeout 0)', () => {
      const w = world();
      runCli(['exec', w.writeCapsule(w.capsule({}, {}, [w.outsider])), '--state', w.stateDir], { env: ENV });
      withRawDb(join(w.stateDir, 'runner.db'), (db) => {
        db.exec('BEGIN IMMEDIATE');
        db.exec(`INSERT INTO checkpoints_v1 (size, note, signed_at) VALUES (1, 'uncommitted', '2026-01-01T00:00:00Z')`);
        const { status: code, report } = status(w, { EDGE_RUNNER_BUSY_TIMEOUT_MS: '0' });
        expect(code).toBe(0);
        expect(report.log.size).toBe(1);
        expect(report.log.lastCheckpoint).toBeNull(); // the other transaction's row is not committed
        db.exec('ROLLBACK');
      });
    });

    const bwrap = probeIsolation().available === 'bwrap';
    it.skipIf(!bwrap)('answers with the whole file system read-only (bwrap --ro-bind / /), where any write fails', () => {
      const w = world();
      runCli(['exec', w.writeCapsule(w.capsule({}, {}, [w.outsider])), '--state', w.stateDir], { env: ENV });
      const result = spawnSync(
        'bwrap',
        ['--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--', process.execPath, CLI_ENTRY, 'status', '--state', w.stateDir, '--json'],
        { encoding: 'utf8', env: ENV, timeout: 60_000 },
      );
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      expect(JSON.parse(result.stdout)).toMatchObject({ status: 'ok', lastError: { kind: 'capsule.rejected' } });
    });
  });
});
