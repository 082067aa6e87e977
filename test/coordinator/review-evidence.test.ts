/**
 * Review attacks on what the coordinator keeps, through the real `serve`: a hostile runner (its enrolled key
 * signs anything) sending a second, re-proven document for a record it already answered, flooding the witness
 * with fork evidence, or slipping free text into a checkpoint for the witness to keep and cosign; a trust
 * document that expires while the coordinator runs; and a full disk under a PUT.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../runner/core/digest.js';
import type { PrivateKey } from '../../runner/core/ed25519.js';
import { formatBundle, type Bundle } from '../../runner/evidence/bundle.js';
import { buildRejection } from '../../runner/evidence/rejection.js';
import { bundleLogFor } from '../../runner/agent/log.js';
import { runnerOrigin, signCheckpoint } from '../../runner/log/checkpoint.js';
import { consistencyProof, hashLeaf, nodeReaderFromLeafHashes, rootFromLeafHashes } from '../../runner/log/merkle.js';
import { parseRecordLeaf } from '../../runner/log/record.js';
import { formatAddCheckpoint } from '../../runner/protocol/witness.js';
import { Store } from '../../runner/store/store.js';
import { RUNNER_VERSION } from '../../runner/version.js';
import { makeTrustBody, signTrust } from '../helpers/world.js';
import { execInState } from '../helpers/runner.js';
import { initCoordinator, makeCoordinatorWorld, signedCall, startCoordinator, type CoordinatorWorld, type RunningCoordinator } from './helpers.js';

const countRows = (stateDir: string, sql: string, ...params: (string | number)[]) => {
  const db = new DatabaseSync(join(stateDir, 'coordinator.db'), { readOnly: true });
  try {
    return Number((db.prepare(sql).get(...params) as { n: number }).n);
  } finally {
    db.close();
  }
};

/** The signed rejection of the runner's last capsule.rejected record, proved under the log as it is now. */
function rejectionOfLastRefusal(cw: CoordinatorWorld): { bytes: Buffer; index: number } {
  const store = Store.open(join(cw.world.stateDir, 'runner.db'));
  try {
    const record = [...store.records()].filter((r) => r.kind === 'capsule.rejected').at(-1)!;
    const body = parseRecordLeaf(record.leaf).body as {
      code: string;
      capsuleId?: string;
      manifestDigest?: string;
      fileDigest?: string;
      fileSize?: number;
    };
    const log = bundleLogFor(store, { runnerId: cw.world.runnerId, key: cw.world.runnerKey }, record.seq, record.leaf);
    const built = buildRejection(
      {
        runner: { id: cw.world.runnerId, keyid: cw.world.runnerKey.keyid, version: RUNNER_VERSION },
        stage: 'acceptance',
        code: body.code,
        capsule: {
          ...(body.capsuleId ? { id: body.capsuleId } : {}),
          ...(body.manifestDigest ? { manifestDigest: body.manifestDigest } : {}),
          ...(body.fileDigest ? { fileDigest: body.fileDigest } : {}),
          ...(body.fileSize !== undefined ? { fileSize: body.fileSize } : {}),
        },
        record: { index: record.seq, kind: 'capsule.rejected' },
      },
      log,
      cw.world.runnerKey,
    );
    return { bytes: built.bytes, index: record.seq };
  } finally {
    store.close();
  }
}

/** The same bundle with its evidence record proved again under the log's current checkpoint (other bytes). */
function reprovenBundle(cw: CoordinatorWorld, bundle: Bundle): Buffer {
  const store = Store.open(join(cw.world.stateDir, 'runner.db'));
  try {
    const record = [...store.records()].find((r) => r.seq === bundle.log!.index)!;
    const log = bundleLogFor(store, { runnerId: cw.world.runnerId, key: cw.world.runnerKey }, record.seq, record.leaf);
    return Buffer.from(formatBundle({ ...bundle, log }));
  } finally {
    store.close();
  }
}

describe('one answer per log record', () => {
  let cw: CoordinatorWorld;
  let coordinator: RunningCoordinator;
  let bundle: Bundle;
  let firstBundle: Buffer;
  let firstRejection: { bytes: Buffer; index: number };

  beforeAll(async () => {
    cw = makeCoordinatorWorld();
    const run = await execInState(cw.world.stateDir, Buffer.from(JSON.stringify(cw.world.capsule())));
    if (run.kind !== 'completed') throw new Error(`setup run was ${run.kind}`);
    bundle = run.bundle;
    firstBundle = Buffer.from(formatBundle(bundle));
    const refused = await execInState(cw.world.stateDir, Buffer.from(JSON.stringify(cw.world.capsule({ target: { labels: ['elsewhere'] } }))));
    if (refused.kind !== 'rejected') throw new Error(`setup run was ${refused.kind}`);
    firstRejection = rejectionOfLastRefusal(cw);
    initCoordinator(cw);
    coordinator = await startCoordinator(cw.stateDir);
  });
  afterAll(async () => {
    await coordinator?.stop();
    cw?.world.cleanup();
  });

  const put = (kind: 'bundles' | 'rejections', bytes: Buffer) =>
    signedCall(`${coordinator.url}/v1/${kind}/${sha256Hex(bytes)}`, cw.world.runnerKey, { method: 'PUT', body: bytes });

  it('attack: a second, re-proven bundle for a record already answered is refused with 409 INBOX_RECORD_CONFLICT and not stored', async () => {
    expect((await put('bundles', firstBundle)).status).toBe(201);
    // The log grows, and the runner (hostile, or confused) proves the same evidence record again under the
    // new checkpoint: a bundle that verifies in full, other bytes, the same run.
    const more = await execInState(cw.world.stateDir, Buffer.from(JSON.stringify(cw.world.capsule({ target: { labels: ['elsewhere'] } }))));
    expect(more.kind).toBe('rejected');
    const second = reprovenBundle(cw, bundle);
    expect(second.equals(firstBundle)).toBe(false);
    const answer = await put('bundles', second);
    expect(answer.status).toBe(409);
    expect(answer.json().code).toBe('INBOX_RECORD_CONFLICT');
    expect(countRows(cw.stateDir, 'SELECT COUNT(*) AS n FROM bundles WHERE runner = ? AND log_index = ?', cw.world.runnerId, bundle.log!.index)).toBe(
      1,
    );
    // The first bytes are still answered as stored (the retry of a lost acknowledgement).
    expect((await put('bundles', firstBundle)).status).toBe(200);
  });

  it('attack: a second, re-proven rejection for a record already answered is refused with 409 INBOX_RECORD_CONFLICT and not stored', async () => {
    // firstRejection answers the first refusal; prove that record again under today's (larger) checkpoint.
    expect((await put('rejections', firstRejection.bytes)).status).toBe(201);
    const store = Store.open(join(cw.world.stateDir, 'runner.db'));
    let again: Buffer;
    try {
      const record = [...store.records()].find((r) => r.seq === firstRejection.index)!;
      const body = parseRecordLeaf(record.leaf).body as {
        code: string;
        capsuleId?: string;
        manifestDigest?: string;
        fileDigest?: string;
        fileSize?: number;
      };
      again = buildRejection(
        {
          runner: { id: cw.world.runnerId, keyid: cw.world.runnerKey.keyid, version: RUNNER_VERSION },
          stage: 'acceptance',
          code: body.code,
          capsule: {
            ...(body.capsuleId ? { id: body.capsuleId } : {}),
            ...(body.manifestDigest ? { manifestDigest: body.manifestDigest } : {}),
            ...(body.fileDigest ? { fileDigest: body.fileDigest } : {}),
            ...(body.fileSize !== undefined ? { fileSize: body.fileSize } : {}),
          },
          record: { index: record.seq, kind: 'capsule.rejected' },
        },
        bundleLogFor(store, { runnerId: cw.world.runnerId, key: cw.world.runnerKey }, record.seq, record.leaf),
        cw.world.runnerKey,
      ).bytes;
    } finally {
      store.close();
    }
    expect(again.equals(firstRejection.bytes)).toBe(false);
    const answer = await put('rejections', again);
    expect(answer.status).toBe(409);
    expect(answer.json().code).toBe('INBOX_RECORD_CONFLICT');
    expect(
      countRows(cw.stateDir, 'SELECT COUNT(*) AS n FROM rejections WHERE runner = ? AND log_index = ?', cw.world.runnerId, firstRejection.index),
    ).toBe(1);
  });

  it('a rejection of another record of the same runner is still stored (201)', async () => {
    const latest = rejectionOfLastRefusal(cw);
    expect(latest.index).not.toBe(firstRejection.index);
    expect((await put('rejections', latest.bytes)).status).toBe(201);
  });
});

describe('the witness keeps bounded, edge-runner-shaped evidence', () => {
  let cw: CoordinatorWorld;
  let coordinator: RunningCoordinator;
  let origin: string;
  let otherOrigin: string;

  function makeLog(leafCount: number, logOrigin = () => origin, key: () => PrivateKey = () => cw.world.runnerKey) {
    const hashes = Array.from({ length: leafCount }, () => hashLeaf(randomBytes(40)));
    return {
      proof: (from: number, to: number) =>
        from === 0 || from === to ? [] : consistencyProof(from, to, nodeReaderFromLeafHashes(hashes.slice(0, to))),
      note: (size: number, extensions: string[] = []) =>
        signCheckpoint({ origin: logOrigin(), size, rootHash: rootFromLeafHashes(hashes.slice(0, size)), extensions }, logOrigin(), key()),
    };
  }
  const add = (oldSize: number, proof: Buffer[], note: string, key = cw.world.runnerKey, id = cw.world.runnerId) =>
    signedCall(`${coordinator.url}/v1/runners/${id}/add-checkpoint`, key, {
      method: 'POST',
      body: formatAddCheckpoint(oldSize, proof, note),
    });

  beforeAll(async () => {
    cw = makeCoordinatorWorld();
    origin = runnerOrigin(cw.world.runnerId, cw.world.runnerKey.keyid);
    otherOrigin = runnerOrigin(cw.otherRunnerId, cw.otherRunnerKey.keyid);
    initCoordinator(cw);
    coordinator = await startCoordinator(cw.stateDir);
  });
  afterAll(async () => {
    await coordinator?.stop();
    cw?.world.cleanup();
  });

  it('attack: a checkpoint with extension lines (free text for the witness to keep and cosign) is refused with 400 WITNESS_BODY_MALFORMED', async () => {
    const log = makeLog(4);
    const answer = await add(0, [], log.note(4, ['customer=ACME-4711 balance=1234.56']));
    expect(answer.status).toBe(400);
    expect(answer.json().code).toBe('WITNESS_BODY_MALFORMED');
    expect(countRows(cw.stateDir, 'SELECT COUNT(*) AS n FROM witness_state WHERE origin = ?', origin)).toBe(0);
  });

  it('attack: 40 distinct fork submissions and 10 repeats of one keep at most 16 rows of fork evidence, each answered 422', async () => {
    // The second runner's log, so that this test does not depend on the one before.
    const logOf = () =>
      makeLog(
        8,
        () => otherOrigin,
        () => cw.otherRunnerKey,
      );
    const addOther = (oldSize: number, proof: Buffer[], note: string) => add(oldSize, proof, note, cw.otherRunnerKey, cw.otherRunnerId);
    const log = logOf();
    expect((await addOther(0, [], log.note(4))).status).toBe(200);
    const repeat = logOf();
    for (let i = 0; i < 10; i++) {
      const answer = await addOther(4, repeat.proof(4, 8), repeat.note(8));
      expect(answer.status).toBe(422);
    }
    expect(countRows(cw.stateDir, 'SELECT COUNT(*) AS n FROM forks WHERE origin = ?', otherOrigin)).toBe(1);
    for (let i = 0; i < 40; i++) {
      const other = logOf();
      const answer = await addOther(4, other.proof(4, 8), other.note(8));
      expect(answer.status).toBe(422);
      expect(answer.json().code).toBe('WITNESS_CONSISTENCY');
    }
    expect(countRows(cw.stateDir, 'SELECT COUNT(*) AS n FROM forks WHERE origin = ?', otherOrigin)).toBe(16);
    // The held checkpoint did not move.
    expect(countRows(cw.stateDir, 'SELECT size AS n FROM witness_state WHERE origin = ?', otherOrigin)).toBe(4);
  }, 60_000);
});

describe('a trust document that expires while the coordinator runs', () => {
  let cw: CoordinatorWorld;
  let coordinator: RunningCoordinator;
  let expiresAt: number;

  beforeAll(async () => {
    cw = makeCoordinatorWorld();
    // The same keys, in a trust document that expires a few seconds from now (whole seconds, as the schema says).
    const keys = [
      { name: 'root-1', key: cw.world.root, roles: ['root' as const] },
      ...cw.world.signers.map((key, i) => ({ name: `signer-${i + 1}`, key, roles: ['capsule-signer' as const] })),
      { name: cw.world.runnerId, key: cw.world.runnerKey, roles: ['runner' as const] },
      { name: cw.witnessName, key: cw.witnessKey, roles: ['witness' as const] },
    ];
    const body = makeTrustBody(keys);
    expiresAt = (Math.floor(Date.now() / 1000) + 6) * 1000;
    body.expires = new Date(expiresAt).toISOString().replace(/\.\d+Z$/, 'Z');
    writeFileSync(cw.trustPath, signTrust(body, [cw.world.root]));
    initCoordinator(cw);
    coordinator = await startCoordinator(cw.stateDir);
  });
  afterAll(async () => {
    await coordinator?.stop();
    cw?.world.cleanup();
  });

  it('attack: once it has expired, runner requests are refused with 503 COORDINATOR_TRUST_EXPIRED and Retry-After (evidence stays queued)', async () => {
    const work = `${coordinator.url}/v1/runners/${cw.world.runnerId}/work?after=0&wait=0`;
    expect((await signedCall(work, cw.world.runnerKey)).status).toBe(204);
    await new Promise((r) => setTimeout(r, Math.max(0, expiresAt - Date.now()) + 1200));
    const answer = await signedCall(work, cw.world.runnerKey);
    expect(answer.status).toBe(503);
    expect(answer.json().code).toBe('COORDINATOR_TRUST_EXPIRED');
    expect(Number(answer.headers['retry-after'])).toBeGreaterThan(0);
    const bundle = Buffer.from('{}');
    const put = await signedCall(`${coordinator.url}/v1/bundles/${sha256Hex(bundle)}`, cw.world.runnerKey, { method: 'PUT', body: bundle });
    expect(put.status).toBe(503);
  }, 20_000);
});

const isRoot = process.getuid?.() === 0;

describe('a full disk under the coordinator', () => {
  let cw: CoordinatorWorld;
  let coordinator: RunningCoordinator | undefined;
  let mount: string;
  let bundleBytes: Buffer;

  beforeAll(async () => {
    if (!isRoot) return;
    cw = makeCoordinatorWorld();
    const run = await execInState(cw.world.stateDir, Buffer.from(JSON.stringify(cw.world.capsule())));
    if (run.kind !== 'completed') throw new Error(`setup run was ${run.kind}`);
    bundleBytes = Buffer.from(formatBundle(run.bundle));
    mount = mkdtempSync(join(tmpdir(), 'review-coord-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mount]);
    cw.stateDir = join(mount, 'state');
    initCoordinator(cw);
    coordinator = await startCoordinator(cw.stateDir);
  });
  afterAll(async () => {
    await coordinator?.stop();
    if (mount !== undefined) {
      try {
        execFileSync('umount', [mount]);
      } finally {
        rmSync(mount, { recursive: true, force: true });
      }
    }
    cw?.world.cleanup();
  });

  it.skipIf(!isRoot)(
    'attack: a PUT while the disk is full is a retryable 5xx (507 COORDINATOR_STORAGE_FULL) storing nothing; the retry after space is freed is 201',
    async () => {
      const url = `${coordinator!.url}/v1/bundles/${sha256Hex(bundleBytes)}`;
      // Fill the file system to the last byte.
      const filler = join(mount, 'filler');
      mkdirSync(mount, { recursive: true });
      try {
        writeFileSync(filler, Buffer.alloc(8 * 1024 * 1024));
      } catch {
        // ENOSPC: what fitted is written.
      }
      expect(existsSync(filler)).toBe(true);
      const refused = await signedCall(url, cw.world.runnerKey, { method: 'PUT', body: bundleBytes });
      expect(refused.status).toBe(507);
      expect(refused.json().code).toBe('COORDINATOR_STORAGE_FULL');
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
      expect(countRows(cw.stateDir, 'SELECT COUNT(*) AS n FROM bundles')).toBe(0);
      rmSync(filler);
      const stored = await signedCall(url, cw.world.runnerKey, { method: 'PUT', body: bundleBytes });
      expect(stored.status).toBe(201);
      expect(countRows(cw.stateDir, 'SELECT COUNT(*) AS n FROM bundles')).toBe(1);
      const db = new DatabaseSync(join(cw.stateDir, 'coordinator.db'), { readOnly: true });
      try {
        expect((db.prepare('PRAGMA integrity_check').get() as { integrity_check: string }).integrity_check).toBe('ok');
        const row = db.prepare('SELECT bytes FROM bundles').get() as { bytes: Uint8Array };
        expect(Buffer.from(row.bytes).equals(bundleBytes)).toBe(true);
      } finally {
        db.close();
      }
    },
  );
});
