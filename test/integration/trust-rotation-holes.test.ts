/**
 * Trust rotation under attack (a hostile review): a coordinator that serves another refused document at every
 * feed answer must not make the agent record without bound or fetch at every poll; the runner's own key left
 * out of the next version; and the states a crash or a local user can leave, opened by the real runner
 * context.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { openRunner } from '../../runner/agent/runner.js';
import { TrustFollower } from '../../runner/agent/trust-update.js';
import { RunLane } from '../../runner/agent/lane.js';
import { initState } from '../../runner/state/state.js';
import { Store } from '../../runner/store/store.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { pinOf, rotatedBody, trustRecords } from '../helpers/rotation.js';
import { directSelector } from '../helpers/runner.js';
import { makeTrustBody, signTrust } from '../helpers/world.js';
import { CoordinatorClient } from '../../runner/api/client.js';
import { DEFAULT_CONFIG } from '../../runner/config/config.js';
import { makeLinkWorld, type LinkWorld } from '../helpers/agent-link.js';
import { killAll, startLinkCoordinator } from '../helpers/link.js';
import { COORDINATOR_ENTRY } from '../coordinator/helpers.js';

const dirs: string[] = [];
const linkWorlds: LinkWorld[] = [];
afterAll(async () => {
  await killAll();
  for (const world of linkWorlds) world.cleanup();
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

describe('a slow coordinator does not hold the run lane while the trust follower fetches', () => {
  it('a run waiting for the lane goes while the fetch hangs; the update itself is decided in the lane', async () => {
    const w = world();
    const ctx = openRunner(w.stateDir, { launcher: directSelector });
    try {
      const lane = new RunLane();
      let release: (() => void) | undefined;
      const fetched = new Promise<void>((resolve) => (release = resolve));
      let asked = false;
      const busyWhenUpdated: boolean[] = [];
      const follower = new TrustFollower({
        target: ctx,
        client: {
          trust: async () => {
            asked = true;
            await fetched; // a coordinator dripping the document for the whole request timeout
            return { kind: 'ok' as const, status: 200, value: w.v2 };
          },
        },
        logger: ctx.logger,
        clock: () => new Date(),
        exclusive: (decide) => lane.exclusive(decide),
        onUpdated: () => busyWhenUpdated.push(lane.busy),
      });
      const following = follower.follow(2, new AbortController().signal);
      while (!asked) await new Promise((resolve) => setImmediate(resolve));
      // A scheduled firing wanting the lane now is not held up by the fetch.
      expect(await lane.exclusive(() => 'ran')).toBe('ran');
      release!();
      expect(await following).toBe(2);
      expect(busyWhenUpdated).toEqual([true]);
    } finally {
      ctx.close();
    }
  });
});

/**
 * SIGKILL of the real CLI inside `trust update`, at each rename it makes in the state folder (the kept v2, then
 * trust.dsse.json, then runner.json), before and after it: a preload (--require) wraps fs.renameSync and kills
 * the process itself there. Whatever is left, the next open finishes or discards it: the pin is v1 with no
 * trust.updated or v2 with exactly one, the two files agree, and `trust update` again ends at v2, recorded once.
 */
describe.skipIf(!existsSync(CLI_ENTRY))('kill -9 of edge-runner trust update at each rename (needs dist/)', () => {
  const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
  const preload = (dir: string) => {
    const path = join(dir, 'kill-at-rename.cjs');
    writeFileSync(
      path,
      [
        "const fs = require('node:fs');",
        "const { syncBuiltinESMExports } = require('node:module');",
        'const [name, when] = process.env.KILL_AT.split(":");',
        'const real = fs.renameSync;',
        'fs.renameSync = function (from, to) {',
        '  const hit = String(to).endsWith(name);',
        "  if (hit && when === 'before') process.kill(process.pid, 'SIGKILL');",
        '  const result = real.apply(this, arguments);',
        "  if (hit && when === 'after') process.kill(process.pid, 'SIGKILL');",
        '  return result;',
        '};',
        'syncBuiltinESMExports();',
      ].join('\n'),
    );
    return path;
  };
  const points = ['trust/2.dsse.json', 'trust.dsse.json', 'runner.json'].flatMap((name) => [`${name}:before`, `${name}:after`]);

  it.each(points)('killed at %s: the next open leaves v1 unrecorded or v2 recorded once, and the update can be made again', (point) => {
    const w = world();
    const file = join(w.dir, 'v2.dsse.json');
    writeFileSync(file, w.v2);
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_OPTIONS: `--require ${preload(w.dir)}`, KILL_AT: point };
    const killed = runCli(['trust', 'update', file, '--state', w.stateDir, '--json'], { env });
    expect(killed.status, `${killed.stdout}${killed.stderr}`).toBeNull();
    const ctx = openRunner(w.stateDir, { launcher: directSelector });
    const version = ctx.state.trust.body.version;
    ctx.close();
    // Killed before the record (around keeping v2): v1, the kept file discarded; after it: v2, finished.
    expect(version).toBe(point.startsWith('trust/') ? 1 : 2);
    const pin = pinOf(w.stateDir);
    expect(sha256(pin.trust)).toBe(pin.trustSha256);
    const updates = () => trustRecords(w.stateDir).filter((r) => r.kind === 'trust.updated');
    expect(updates()).toHaveLength(version - 1);
    if (version === 2) expect(readFileSync(join(w.stateDir, 'trust', '2.dsse.json')).equals(w.v2)).toBe(true);
    else expect(existsSync(join(w.stateDir, 'trust', '2.dsse.json'))).toBe(false);
    const again = runCli(['trust', 'update', file, '--state', w.stateDir, '--json']);
    expect(again.status, again.stderr).toBe(0);
    expect(pinOf(w.stateDir).trustSha256).toBe(sha256(w.v2));
    expect(updates()).toHaveLength(1);
  });
});

describe.skipIf(!existsSync(CLI_ENTRY))('the next version and this runner’s own key (needs dist/)', () => {
  const update = (stateDir: string, file: string) => runCli(['trust', 'update', file, '--state', stateDir, '--json']);

  it('its key taken out (the roots revoke it): applied, recorded, and the CLI says nothing it signs verifies any more', () => {
    const w = world();
    const file = join(w.dir, 'v2-revoked.dsse.json');
    writeFileSync(file, signTrust(rotatedBody(w.v1Body, { remove: [w.runnerKey] }), [w.rootA, w.rootB]));
    const result = update(w.stateDir, file);
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ outcome: 'updated', toVersion: 2, runnerEnrolled: false });
    expect(result.stderr).toContain('does not enrol this runner');
    expect(trustRecords(w.stateDir).map((r) => r.kind)).toEqual(['trust.updated']);
  });

  it('its key still enrolled: runnerEnrolled true, no warning', () => {
    const w = world();
    const file = join(w.dir, 'v2.dsse.json');
    writeFileSync(file, w.v2);
    const result = update(w.stateDir, file);
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ outcome: 'updated', runnerEnrolled: true });
    expect(result.stderr).not.toContain('does not enrol');
  });

  it('its key given another role (a capsule signer alone): refused (TRUST_ROLE_CONFLICT), recorded, the pin kept', () => {
    const w = world();
    const body = rotatedBody(w.v1Body, { add: [{ name: 'runner-holes-1', key: w.runnerKey, roles: ['capsule-signer'] }] });
    const file = join(w.dir, 'v2-signer.dsse.json');
    writeFileSync(file, signTrust(body, [w.rootA, w.rootB]));
    const before = pinOf(w.stateDir).trustSha256;
    const result = update(w.stateDir, file);
    expect(result.status).toBe(1);
    expect(JSON.parse(result.stdout)).toMatchObject({ outcome: 'refused', code: 'TRUST_ROLE_CONFLICT' });
    expect(trustRecords(w.stateDir).map((r) => r.kind === 'trust.refused' && r.body.code)).toEqual(['TRUST_ROLE_CONFLICT']);
    expect(pinOf(w.stateDir).trustSha256).toBe(before);
  });
});

/**
 * An auditor handed state/trust/: each kept file verifies against its own root keys, which anyone can sign,
 * so a file swapped for a forgery (other roots, another runner key enrolled under the runner's name) would
 * let a forged bundle "verify" with `verify --trust`. `trust chain` checks the kept files as links, each
 * signed by a threshold of the previous one's roots, and prints the head to compare with the known pin.
 */
describe.skipIf(!existsSync(CLI_ENTRY))('trust chain: the kept history checked as a chain ending at the pin (needs dist/)', () => {
  const rotated = () => {
    const w = world();
    const v2 = join(w.dir, 'v2.dsse.json');
    writeFileSync(v2, w.v2);
    expect(runCli(['trust', 'update', v2, '--state', w.stateDir]).status).toBe(0);
    const v3Bytes = signTrust(rotatedBody(w.v2Body, {}), [w.rootA, w.rootB]);
    const v3 = join(w.dir, 'v3.dsse.json');
    writeFileSync(v3, v3Bytes);
    expect(runCli(['trust', 'update', v3, '--state', w.stateDir]).status).toBe(0);
    const kept = [3, 1, 2].map((version) => join(w.stateDir, 'trust', `${version}.dsse.json`));
    return { w, kept };
  };

  it('the kept v1, v2, v3 verify as a chain whose head is the pin runner.json holds', () => {
    const { w, kept } = rotated();
    const result = runCli(['trust', 'chain', ...kept, '--json']);
    expect(result.status, result.stderr).toBe(0);
    const links = JSON.parse(result.stdout) as { version: number; sha256: string }[];
    expect(links.map((l) => l.version)).toEqual([1, 2, 3]);
    expect(links.at(-1)!.sha256).toBe(pinOf(w.stateDir).trustSha256);
  });

  it('a kept v1 swapped for a forgery signed by other roots: trust show accepts it on its own, trust chain refuses it (TRUST_SIGNATURE)', () => {
    const { w, kept } = rotated();
    const [forgerRoot, forgerRunner] = [PrivateKey.generate(), PrivateKey.generate()];
    const forged = makeTrustBody(
      [
        { name: 'root-forger', key: forgerRoot, roles: ['root'] },
        { name: 'runner-holes-1', key: forgerRunner, roles: ['runner'] },
      ],
      {},
    );
    writeFileSync(join(w.stateDir, 'trust', '1.dsse.json'), signTrust(forged, [forgerRoot]));
    expect(runCli(['trust', 'show', join(w.stateDir, 'trust', '1.dsse.json')]).status).toBe(0);
    const result = runCli(['trust', 'chain', ...kept]);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('TRUST_SIGNATURE');
    expect(result.stderr).toContain('2.dsse.json');
  });

  it('a version missing from the middle is a gap (TRUST_VERSION_SKIP)', () => {
    const { kept } = rotated();
    const result = runCli(['trust', 'chain', kept[0]!, kept[1]!]);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('TRUST_VERSION_SKIP');
  });
});

/**
 * The coordinator judges a bundle its pinned trust refuses by the older kept version the bundle names. A
 * runner the new version takes out cannot use that to get bundles stored: every request is authenticated under
 * the pinned version (its key is no runner there), and the bundle's runner must be the requester. A runner
 * whose key was replaced under the same name (the old key leaked): a thief holding the old key cannot send,
 * and a bundle signed by the old key is not stored even when the new key sends it.
 */
describe.skipIf(!existsSync(CLI_ENTRY) || !existsSync(COORDINATOR_ENTRY))(
  'the coordinator, a bundle naming the older kept version, and a runner taken out of the new one (needs dist/)',
  () => {
    const setup = async (change: (world: LinkWorld, replacement: PrivateKey) => Parameters<typeof rotatedBody>[1]) => {
      const world = makeLinkWorld();
      linkWorlds.push(world);
      const capsule = join(world.dir, 'c.capsule.json');
      writeFileSync(capsule, world.capsule({ target: { runners: [world.runnerId] } }));
      const made = runCli(['exec', capsule, '--state', world.stateDir, '--json']);
      expect(made.status, made.stderr).toBe(0);
      const bundle = readFileSync((JSON.parse(made.stdout) as { bundle: string }).bundle);
      const replacement = PrivateKey.generate();
      const v2 = join(world.dir, 'trust-v2.dsse.json');
      writeFileSync(v2, signTrust(rotatedBody(world.trust.body, change(world, replacement)), [world.root]));
      const coordinator = await startLinkCoordinator(world, { updates: [v2] });
      const put = async (key: PrivateKey) => {
        const client = new CoordinatorClient({ settings: { ...DEFAULT_CONFIG.coordinator, url: coordinator.url }, runnerId: world.runnerId, key });
        try {
          return await client.putBundle(`sha256:${createHash('sha256').update(bundle).digest('hex')}`, bundle);
        } finally {
          await client.close();
        }
      };
      const stored = async () => ((await coordinator.operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as unknown[]).length;
      return { world, replacement, put, stored, coordinator };
    };

    it('its key removed: the bundle made under v1, sent with that key, is refused (401) and not stored', async () => {
      const { world, put, stored, coordinator } = await setup((w) => ({ remove: [w.runnerKey] }));
      const answer = await put(world.runnerKey);
      expect(answer).toMatchObject({ status: 401, code: 'PROTOCOL_UNKNOWN_KEY' });
      expect(await stored()).toBe(0);
      await coordinator.running.stop();
    }, 90_000);

    it('its key replaced under the same name (the old one leaked): the old key is refused, and its bundle sent with the new key is not stored', async () => {
      const { world, replacement, put, stored, coordinator } = await setup((w, next) => ({
        remove: [w.runnerKey],
        add: [{ name: w.runnerId, key: next, roles: ['runner'] }],
      }));
      expect(await put(world.runnerKey)).toMatchObject({ status: 401, code: 'PROTOCOL_UNKNOWN_KEY' });
      expect(await stored()).toBe(0);
      // Sent with the new key, evidence signed by the replaced (leaked) key is not stored either: the kept version
      // is consulted for signatures on capsules and evidence the pinned one refuses, never for a runner key it
      // dropped (a thief could have signed it after the leak; the runner's own outbox holds the new key's).
      expect(await put(replacement)).toMatchObject({ status: 422, code: 'BUNDLE_UNKNOWN_RUNNER' });
      expect(await stored()).toBe(0);
      await coordinator.running.stop();
    }, 90_000);
  },
);
