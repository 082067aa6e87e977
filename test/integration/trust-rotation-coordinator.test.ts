/**
 * The reference coordinator keeps every trust version it pinned (`init`, then `trust-update` for each next
 * one), lists them in coordinator.json's `trustHistory`, checks them at start as a chain under TUF's rule,
 * and serves each at GET /v1/trust/{version} (the latest at GET /v1/trust), so a runner that is behind can
 * walk from its pin. Real processes on 127.0.0.1.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { makeLinkWorld, type LinkWorld } from '../helpers/agent-link.js';
import { killAll, startLinkCoordinator } from '../helpers/link.js';
import { rotatedBody } from '../helpers/rotation.js';
import { signTrust } from '../helpers/world.js';
import { COORDINATOR_ENTRY, startCoordinator } from '../coordinator/helpers.js';

const built = existsSync(COORDINATOR_ENTRY);
const worlds: LinkWorld[] = [];
afterAll(async () => {
  await killAll();
  for (const world of worlds) world.cleanup();
});

describe.skipIf(!built)('the coordinator keeps and serves every trust version (needs dist/)', () => {
  it('serves v1, v2 and v3 by version and v3 as the latest; an unknown version is 404 FEED_TRUST_NOT_FOUND; coordinator.json lists the history', async () => {
    const world = makeLinkWorld();
    worlds.push(world);
    const root2 = PrivateKey.generate();
    const v2Body = rotatedBody(world.trust.body, { remove: [world.root], add: [{ name: 'root-2', key: root2, roles: ['root'] }] });
    const v2 = signTrust(v2Body, [world.root, root2]);
    const v3 = signTrust(rotatedBody(v2Body, {}), [root2]);
    const files = [v2, v3].map((bytes, i) => {
      const file = join(world.dir, `next-${i + 2}.dsse.json`);
      writeFileSync(file, bytes);
      return file;
    });
    const coordinator = await startLinkCoordinator(world, { updates: files });
    for (const [version, bytes] of [
      [1, world.trustBytes],
      [2, v2],
      [3, v3],
    ] as const) {
      const answer = await coordinator.operator(`/v1/trust/${version}`);
      expect(answer.status).toBe(200);
      expect(answer.body.equals(bytes), `version ${version} byte for byte`).toBe(true);
    }
    expect((await coordinator.operator('/v1/trust')).body.equals(v3)).toBe(true);
    const unknown = await coordinator.operator('/v1/trust/4');
    expect(unknown.status).toBe(404);
    expect(unknown.json().code).toBe('FEED_TRUST_NOT_FOUND');
    expect((await coordinator.operator('/v1/trust/0')).status).toBe(404);
    const config = JSON.parse(readFileSync(join(coordinator.stateDir, 'coordinator.json'), 'utf8'));
    expect(config.trustHistory.map((e: { version: number }) => e.version)).toEqual([1, 2, 3]);
    expect(config.trustHistory.at(-1)).toEqual(config.trust);
    await coordinator.running.stop();

    // A kept version changed behind the coordinator's back: it refuses to start.
    const first = join(coordinator.stateDir, config.trustHistory[0].file);
    const original = readFileSync(first);
    writeFileSync(
      first,
      signTrust({ ...world.trust.body }, [world.root])
        .toString()
        .replace('}', ' }'),
    );
    await expect(startCoordinator(coordinator.stateDir)).rejects.toThrow(/COORDINATOR_CONFIG|not the trust document pinned/);
    writeFileSync(first, original);

    // A configuration written before the history existed serves its pinned version only.
    delete config.trustHistory;
    writeFileSync(join(coordinator.stateDir, 'coordinator.json'), JSON.stringify(config, null, 2));
    const again = await startCoordinator(coordinator.stateDir);
    const token = readFileSync(join(coordinator.stateDir, 'operator.token'), 'utf8').trim();
    const get = (path: string) => fetch(`${again.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
    expect((await get('/v1/trust/3')).status).toBe(200);
    expect((await get('/v1/trust/1')).status).toBe(404);
    await again.stop();
  }, 90_000);
});
