/**
 * The coordinator as a C2SP tlog-witness for each runner's log: add-checkpoint through the real server, the
 * compare-and-swap on the held size (409 text/x.tlog.size), cosignatures that verify with the witness key of
 * the trust document, and fork evidence kept (and the runner flagged) when a validly signed checkpoint does
 * not follow from the one cosigned.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PrivateKey } from '../../runner/core/ed25519.js';
import { runnerOrigin, signCheckpoint } from '../../runner/log/checkpoint.js';
import { consistencyProof, hashLeaf, nodeReaderFromLeafHashes, rootFromLeafHashes } from '../../runner/log/merkle.js';
import { formatAddCheckpoint, verifyCosignatures } from '../../runner/protocol/witness.js';
import {
  bearer,
  call,
  initCoordinator,
  makeCoordinatorWorld,
  signedCall,
  startCoordinator,
  type CoordinatorWorld,
  type RunningCoordinator,
} from './helpers.js';

let cw: CoordinatorWorld;
let coordinator: RunningCoordinator;
let origin: string;

/** A log of random leaves, as the runner's: roots, proofs and signed checkpoints at any size. */
function makeLog(leafCount: number) {
  const hashes = Array.from({ length: leafCount }, () => hashLeaf(randomBytes(40)));
  return {
    root: (size: number) => rootFromLeafHashes(hashes.slice(0, size)),
    proof: (from: number, to: number) => (from === 0 || from === to ? [] : consistencyProof(from, to, nodeReaderFromLeafHashes(hashes.slice(0, to)))),
    note: (size: number, key: PrivateKey = cw.world.runnerKey, name = origin) =>
      signCheckpoint({ origin, size, rootHash: rootFromLeafHashes(hashes.slice(0, size)), extensions: [] }, name, key),
  };
}

let log: ReturnType<typeof makeLog>;

const add = (oldSize: number, proof: Buffer[], note: string, key = cw.world.runnerKey, id = cw.world.runnerId) =>
  signedCall(`${coordinator.url}/v1/runners/${id}/add-checkpoint`, key, { method: 'POST', body: formatAddCheckpoint(oldSize, proof, note) });

const held = () => {
  const db = new DatabaseSync(join(cw.stateDir, 'coordinator.db'), { readOnly: true });
  try {
    const state = db.prepare('SELECT size FROM witness_state WHERE origin = ?').get(origin) as { size: number } | undefined;
    const forks = db.prepare('SELECT reason, held_size FROM forks WHERE origin = ? ORDER BY id').all(origin) as {
      reason: string;
      held_size: number;
    }[];
    return { size: state?.size, forks: forks.map((f) => ({ reason: f.reason, heldSize: f.held_size })) };
  } finally {
    db.close();
  }
};

beforeAll(async () => {
  cw = makeCoordinatorWorld();
  origin = runnerOrigin(cw.world.runnerId, cw.world.runnerKey.keyid);
  log = makeLog(20);
  initCoordinator(cw);
  coordinator = await startCoordinator(cw.stateDir);
});

afterAll(async () => {
  await coordinator?.stop();
  cw?.world.cleanup();
});

describe('POST /v1/runners/{id}/add-checkpoint', () => {
  it('cosigns the first checkpoint of a log (old size 0): 200 with a cosignature/v1 line by the witness key of the trust document', async () => {
    const note = log.note(3);
    const answer = await add(0, [], note);
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toBe('text/plain; charset=utf-8');
    const cosigned = verifyCosignatures(note, answer.body.toString('utf8'), [{ name: cw.witnessName, key: cw.witnessKey.publicKey }]);
    expect(cosigned).toHaveLength(1);
    expect(cosigned[0]!.name).toBe('coordinator-witness');
    expect(Math.abs(cosigned[0]!.timestamp - Date.now() / 1000)).toBeLessThan(60);
    expect(held().size).toBe(3);
  });

  it('an old size that is not the size it holds is refused with 409, text/x.tlog.size and the held size', async () => {
    const answer = await add(0, [], log.note(5));
    expect(answer.status).toBe(409);
    expect(answer.headers['content-type']).toBe('text/x.tlog.size');
    expect(answer.body.toString()).toBe('3\n');
    expect(held().size).toBe(3);
  });

  it('advances with a consistency proof from the held size', async () => {
    const answer = await add(3, log.proof(3, 8), log.note(8));
    expect(answer.status).toBe(200);
    expect(held().size).toBe(8);
  });

  it('compare-and-swap: of two concurrent submissions from one held size, one advances and the other gets 409', async () => {
    const answers = await Promise.all([add(8, log.proof(8, 10), log.note(10)), add(8, log.proof(8, 11), log.note(11))]);
    expect(answers.map((a) => a.status).sort()).toEqual([200, 409]);
    const conflict = answers.find((a) => a.status === 409)!;
    expect(['10\n', '11\n']).toContain(conflict.body.toString());
    expect([10, 11]).toContain(held().size);
  });

  it('a validly signed checkpoint that is not consistent with the held one is kept as fork evidence (422 WITNESS_CONSISTENCY) and flags the runner', async () => {
    const size = held().size!;
    const other = makeLog(20); // another history, signed by the same runner key
    const answer = await add(size, other.proof(size, 15), other.note(15));
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('WITNESS_CONSISTENCY');
    expect(held()).toEqual({ size, forks: [{ reason: 'WITNESS_CONSISTENCY', heldSize: size }] });
    const fleet = await call(`${coordinator.url}/v1/runners`, { headers: bearer(cw.token) });
    const me = fleet.json().runners.find((r: any) => r.id === cw.world.runnerId);
    expect(me).toMatchObject({ forks: 1, witnessedSize: size });
  });

  it('a checkpoint of the held size with another root is kept as fork evidence (422 WITNESS_ROOT_CONFLICT)', async () => {
    const size = held().size!;
    const other = makeLog(20);
    const answer = await add(size, [], other.note(size));
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('WITNESS_ROOT_CONFLICT');
    expect(held().forks.map((f) => f.reason)).toEqual(['WITNESS_CONSISTENCY', 'WITNESS_ROOT_CONFLICT']);
    expect(held().size).toBe(size);
  });

  it('a checkpoint not signed by the runner key is refused with 403 WITNESS_BAD_SIGNATURE and is no fork', async () => {
    const size = held().size!;
    const answer = await add(size, log.proof(size, 12), log.note(12, cw.world.outsider));
    expect(answer.status).toBe(403);
    expect(answer.json().code).toBe('WITNESS_BAD_SIGNATURE');
    expect(held().forks).toHaveLength(2);
  });

  it("a checkpoint of another runner's log is refused with 404 WITNESS_UNKNOWN_LOG", async () => {
    const otherOrigin = runnerOrigin(cw.otherRunnerId, cw.otherRunnerKey.keyid);
    const note = signCheckpoint({ origin: otherOrigin, size: 1, rootHash: log.root(1), extensions: [] }, otherOrigin, cw.otherRunnerKey);
    const answer = await add(0, [], note);
    expect(answer.status).toBe(404);
    expect(answer.json().code).toBe('WITNESS_UNKNOWN_LOG');
  });

  it('a submission for a runner id that is not the signer is refused with 403 PROTOCOL_RUNNER_MISMATCH', async () => {
    const answer = await add(0, [], log.note(2), cw.otherRunnerKey, cw.world.runnerId);
    expect(answer.status).toBe(403);
    expect(answer.json().code).toBe('PROTOCOL_RUNNER_MISMATCH');
  });

  it('a body that is not an add-checkpoint request is refused with 400 WITNESS_BODY_MALFORMED', async () => {
    const answer = await signedCall(`${coordinator.url}/v1/runners/${cw.world.runnerId}/add-checkpoint`, cw.world.runnerKey, {
      method: 'POST',
      body: 'hello\n',
    });
    expect(answer.status).toBe(400);
    expect(answer.json().code).toBe('WITNESS_BODY_MALFORMED');
  });

  it('a body over the 16 KiB cap is refused with 413 PROTOCOL_BODY_TOO_LARGE', async () => {
    const answer = await signedCall(`${coordinator.url}/v1/runners/${cw.world.runnerId}/add-checkpoint`, cw.world.runnerKey, {
      method: 'POST',
      body: Buffer.alloc(16 * 1024 + 1, 0x41),
    });
    expect(answer.status).toBe(413);
    expect(answer.json().code).toBe('PROTOCOL_BODY_TOO_LARGE');
  });
});
