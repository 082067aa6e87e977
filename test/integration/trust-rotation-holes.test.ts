/**
 * Trust rotation under attack (a hostile review): a coordinator that serves another refused document at every
 * feed answer must not make the agent record without bound or fetch at every poll; the runner's own key left
 * out of the next version; and the states a crash or a local user can leave, opened by the real runner
 * context.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { openRunner } from '../../runner/agent/runner.js';
import { TrustFollower } from '../../runner/agent/trust-update.js';
import { initState } from '../../runner/state/state.js';
import { Store } from '../../runner/store/store.js';
import { rotatedBody, trustRecords } from '../helpers/rotation.js';
import { directSelector } from '../helpers/runner.js';
import { makeTrustBody, signTrust } from '../helpers/world.js';

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A runner pinned to v1 (roots A, B, threshold 2); v2 signed by both. */
function world() {
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-rotation-holes-'));
  dirs.push(dir);
  const [rootA, rootB, signer, runnerKey] = Array.from({ length: 4 }, () => PrivateKey.generate()) as [
    PrivateKey,
    PrivateKey,
    PrivateKey,
    PrivateKey,
  ];
  const runnerId = 'runner-holes-1';
  const v1Body = makeTrustBody(
    [
      { name: 'root-a', key: rootA, roles: ['root'] },
      { name: 'root-b', key: rootB, roles: ['root'] },
      { name: 'signer', key: signer, roles: ['capsule-signer'] },
      { name: runnerId, key: runnerKey, roles: ['runner'] },
    ],
    { root: 2 },
  );
  const v2Body = rotatedBody(v1Body, {});
  const stateDir = join(dir, 'state');
  initState(stateDir, {
    id: runnerId,
    trustBytes: signTrust(v1Body, [rootA, rootB]),
    now: new Date(),
    key: runnerKey,
    createDatabase: (path) => Store.open(path, { create: true }).close(),
  });
  return { dir, stateDir, rootA, rootB, runnerKey, v1Body, v2Body, v2: signTrust(v2Body, [rootA, rootB]) };
}

describe('a hostile coordinator cannot make the trust follower record or fetch without bound', () => {
  it('another refused document at every feed answer: one trust.refused per code for the version (not one per answer); the real v2 is then applied at once', async () => {
    const w = world();
    const ctx = openRunner(w.stateDir, { launcher: directSelector });
    try {
      let now = Date.now();
      let served = 0;
      let real = false;
      const follower = new TrustFollower({
        target: ctx,
        client: {
          // Each answer other bytes: v2 signed by root A alone (TRUST_SIGNATURE), with a fresh policy each time.
          trust: async () => {
            served += 1;
            if (real) return { kind: 'ok' as const, status: 200, value: w.v2 };
            const body = { ...w.v2Body, policy: { ...w.v2Body.policy, maxCapsuleBytes: 1000 + served } };
            return { kind: 'ok' as const, status: 200, value: signTrust(body, [w.rootA]) };
          },
        },
        logger: ctx.logger,
        clock: () => new Date(now),
        onUpdated: () => undefined,
      });
      const signal = new AbortController().signal;
      // Fifty feed answers, a second apart, each naming version 2.
      for (let i = 0; i < 50; i++) {
        expect(await follower.follow(2, signal)).toBe(1);
        now += 1000;
      }
      // Each feed answer asks again (the feed paces it, at most once a second), but the log holds one refusal.
      expect(served).toBe(50);
      expect(trustRecords(w.stateDir).map((r) => r.kind === 'trust.refused' && r.body.code)).toEqual(['TRUST_SIGNATURE']);
      // Another reason for the same version is a new decision: recorded, once.
      const unparseable = async () => ({ kind: 'ok' as const, status: 200, value: Buffer.from(`{"junk": ${served++}}`) });
      const other = new TrustFollower({
        target: ctx,
        client: { trust: unparseable },
        logger: ctx.logger,
        clock: () => new Date(now),
        onUpdated: () => undefined,
      });
      for (let i = 0; i < 5; i++) await other.follow(2, signal);
      expect(trustRecords(w.stateDir).map((r) => r.kind === 'trust.refused' && r.body.code)).toEqual(['TRUST_SIGNATURE', 'TRUST_UNPARSEABLE']);
      // The real document is taken at the next answer.
      real = true;
      expect(await follower.follow(2, signal)).toBe(2);
      expect(trustRecords(w.stateDir).map((r) => r.kind)).toEqual(['trust.refused', 'trust.refused', 'trust.updated']);
    } finally {
      ctx.close();
    }
  });
});
