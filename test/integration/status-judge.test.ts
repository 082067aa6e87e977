/**
 * judgeStatus (runner/cli/status.ts), the pure part of `edge-runner status`: each condition at its boundary,
 * with the clock and the disk passed in (no files; the CLI and its reads are in status.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { judgeStatus, OUTBOX_STALE_MS, SCHEDULE_BEHIND_MS, TRUST_WARNING_DAYS, WITNESS_STALE_MS } from '../../runner/cli/status.js';
import type { StateView } from '../../runner/cli/state-view.js';
import type { StatusSnapshot } from '../../runner/store/status.js';

const NOW = new Date('2026-12-02T12:00:00.000Z');
const DAY_MS = 86_400_000;
const MiB = 1024 * 1024;

function view(expiresInMs: number): StateView {
  return {
    layout: { dir: '/var/lib/edge-runner', config: '', trust: '', trustHistory: '', database: '', blobs: '' },
    identity: { apiVersion: 'edge-runner.dev/state/v1', id: 'r1', labels: [], keyid: 'k', createdAt: '', trustSha256: '' },
    trust: { version: 3, expires: new Date(NOW.getTime() + expiresInMs).toISOString() },
  };
}

function snapshot(patch: Partial<StatusSnapshot> = {}): StatusSnapshot {
  return {
    schemaVersion: 8,
    logSize: 10,
    lastCheckpoint: undefined,
    lastWitnessed: undefined,
    outbox: { queued: 0, dead: 0, oldestQueuedAt: undefined, lastAttemptCode: undefined, lastDead: undefined },
    lastError: undefined,
    schedules: [],
    headSize: undefined,
    ...patch,
  };
}

const disk = { now: NOW, freeBytes: 1024 * MiB, reserveBytes: 128 * MiB, coordinatorConfigured: true };
const codes = (report: ReturnType<typeof judgeStatus>) => report.problems.map((p) => p.code);

describe('judgeStatus', () => {
  it('warns from exactly 30 days before the trust expires, and is critical from the instant it expires', () => {
    expect(judgeStatus(view(TRUST_WARNING_DAYS * DAY_MS + 60_000), snapshot(), disk).status).toBe('ok');
    expect(codes(judgeStatus(view(TRUST_WARNING_DAYS * DAY_MS), snapshot(), disk))).toEqual(['STATUS_TRUST_EXPIRING']);
    expect(codes(judgeStatus(view(1), snapshot(), disk))).toEqual(['STATUS_TRUST_EXPIRING']);
    const expired = judgeStatus(view(0), snapshot(), disk);
    expect(expired.status).toBe('critical');
    expect(codes(expired)).toEqual(['STATUS_TRUST_EXPIRED']);
  });

  it('is critical under the reserve, warns under twice it, and is ok at twice it', () => {
    const at = (freeBytes: number) => judgeStatus(view(DAY_MS * 365), snapshot(), { ...disk, freeBytes });
    expect(codes(at(128 * MiB - 1))).toEqual(['STATUS_DISK_BELOW_RESERVE']);
    expect(codes(at(128 * MiB))).toEqual(['STATUS_DISK_LOW']);
    expect(codes(at(256 * MiB - 1))).toEqual(['STATUS_DISK_LOW']);
    expect(at(256 * MiB).status).toBe('ok');
  });

  it('warns about an answer queued for more than an hour, not at an hour, and not for a clock that jumped back', () => {
    const queued = (ageMs: number) =>
      judgeStatus(
        view(DAY_MS * 365),
        snapshot({
          outbox: {
            queued: 1,
            dead: 0,
            oldestQueuedAt: new Date(NOW.getTime() - ageMs).toISOString(),
            lastAttemptCode: undefined,
            lastDead: undefined,
          },
        }),
        disk,
      );
    expect(queued(OUTBOX_STALE_MS).status).toBe('ok');
    expect(codes(queued(OUTBOX_STALE_MS + 1000))).toEqual(['STATUS_OUTBOX_STALE']);
    expect(queued(-DAY_MS).outbox.oldestQueuedAgeSeconds).toBe(0);
  });

  it('warns about a checkpoint not cosigned for more than an hour only when a coordinator is configured', () => {
    const signedAt = new Date(NOW.getTime() - WITNESS_STALE_MS - 1000).toISOString();
    const unwitnessed = snapshot({
      lastCheckpoint: { size: 10, signedAt },
      lastWitnessed: { size: 5, witnesses: [{ name: 'w', timestamp: 0, receivedAt: signedAt }] },
    });
    expect(codes(judgeStatus(view(DAY_MS * 365), unwitnessed, disk))).toEqual(['STATUS_WITNESS_STALE']);
    expect(judgeStatus(view(DAY_MS * 365), unwitnessed, { ...disk, coordinatorConfigured: false }).status).toBe('ok');
    const witnessed = snapshot({
      lastCheckpoint: { size: 10, signedAt },
      lastWitnessed: { size: 10, witnesses: [{ name: 'w', timestamp: 0, receivedAt: signedAt }] },
    });
    expect(judgeStatus(view(DAY_MS * 365), witnessed, disk).log.lastWitnessed).toEqual({ size: 10, by: ['w'], receivedAt: signedAt });
  });

  it('gives a schedule no next firing past its expiry, and warns only for a slot more than 5 minutes late', () => {
    const row = (acceptedAt: Date, expiresAt: Date) => ({
      manifestDigest: 'sha256:00',
      capsuleId: 'c',
      acceptedSeq: 1,
      acceptedAt: acceptedAt.toISOString(),
      issuedAt: acceptedAt.toISOString(),
      fileDigest: 'sha256:00',
      cron: '0 * * * *',
      timezone: 'UTC',
      expiresAt: expiresAt.toISOString(),
    });
    const hourly = (acceptedAgoMs: number, expiresInMs: number) =>
      judgeStatus(
        view(DAY_MS * 365),
        snapshot({ schedules: [row(new Date(NOW.getTime() - acceptedAgoMs), new Date(NOW.getTime() + expiresInMs))] }),
        disk,
      );
    // Accepted at 11:55; its slot at 12:00 is due now, not late.
    expect(hourly(SCHEDULE_BEHIND_MS, DAY_MS).status).toBe('ok');
    expect(hourly(SCHEDULE_BEHIND_MS, DAY_MS).schedules[0]!.nextFiring).toBe('2026-12-02T13:00:00.000Z');
    // Accepted at 11:50 with the 12:00 slot unhandled at 12:00: not yet 5 minutes late either.
    expect(hourly(10 * 60_000, DAY_MS).status).toBe('ok');
    // Accepted at 10:30: the 11:00 slot is an hour late.
    expect(codes(hourly(90 * 60_000, DAY_MS))).toEqual(['STATUS_SCHEDULE_BEHIND']);
    // Expiring at 12:30: no next firing.
    expect(hourly(60_000, 30 * 60_000).schedules[0]!.nextFiring).toBeNull();
  });

  it('is critical when the log is smaller than its high-water mark', () => {
    expect(codes(judgeStatus(view(DAY_MS * 365), snapshot({ logSize: 9, headSize: 10 }), disk))).toEqual(['STATUS_LOG_ROLLED_BACK']);
    expect(judgeStatus(view(DAY_MS * 365), snapshot({ logSize: 10, headSize: 10 }), disk).status).toBe('ok');
  });
});
