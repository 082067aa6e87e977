/**
 * Two coordinators' worth of confusion, real processes on 127.0.0.1: a runner pointed at a coordinator whose
 * trust document is newer than its pin but no successor of it (a v2 signed by a root the runner does not
 * trust: the runner fetches it, refuses it with TRUST_SIGNATURE and records that) or older (the runner pins
 * v2, the coordinator still serves v1; the runner's look for v3 at start finds none). The runner says so
 * (its log, and its status report as recorded by a proxy in front of the coordinator), the fleet view shows
 * the runner's pin beside the coordinator's version, the runner keeps its own pin (runner.json's trustSha256
 * and trust.dsse.json byte for byte), and it still runs capsules valid under that pin. A real successor is
 * followed: test/integration/trust-rotation-agent.test.ts.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeLinkWorld, type LinkWorld } from '../helpers/agent-link.js';
import { CLI_ENTRY } from '../helpers/cli.js';
import { signTrust } from '../helpers/world.js';
import { rotatedBody, trustRecords } from '../helpers/rotation.js';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { COORDINATOR_ENTRY } from '../coordinator/helpers.js';
import { layoutOf } from '../../runner/state/state.js';
import { killAll, spawnAgent, startProxiedCoordinator, waitForAsync, type RecordingProxy } from '../helpers/link.js';

const built = existsSync(COORDINATOR_ENTRY) && existsSync(CLI_ENTRY);

const worlds: LinkWorld[] = [];
const proxies: RecordingProxy[] = [];
afterAll(async () => {
  await killAll();
  for (const proxy of proxies) await proxy.stop();
  for (const world of worlds) world.cleanup();
});

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** The world's trust document again with another version number, signed by its root key. */
function trustVersionFile(world: LinkWorld, version: number): string {
  const file = join(world.dir, `trust-v${version}.dsse.json`);
  writeFileSync(file, signTrust({ ...world.trust.body, version }, [world.root]));
  return file;
}

/** The world's trust document as version 2 under another root key: valid on its own, no successor of the pin. */
function foreignV2File(world: LinkWorld): string {
  const other = PrivateKey.generate();
  const body = rotatedBody(world.trust.body, { remove: [world.root], add: [{ name: 'root-other', key: other, roles: ['root'] }], version: 2 });
  const file = join(world.dir, 'trust-foreign-v2.dsse.json');
  writeFileSync(file, signTrust(body, [other]));
  return file;
}

async function scenario(relation: 'newer' | 'older') {
  const pinned = relation === 'newer' ? 1 : 2;
  const served = relation === 'newer' ? 2 : 1;
  const world = makeLinkWorld(relation === 'newer' ? {} : { trustVersion: 2 });
  worlds.push(world);
  const layout = layoutOf(world.stateDir);
  const pinBefore = { runnerJson: JSON.parse(readFileSync(layout.config, 'utf8')).trustSha256 as string, trust: readFileSync(layout.trust) };
  const { proxy, coordinator } = await startProxiedCoordinator(world, {
    trustFile: relation === 'newer' ? foreignV2File(world) : trustVersionFile(world, 1),
  });
  proxies.push(proxy);
  const agent = spawnAgent(world, proxy.url);
  expect(
    (await coordinator.operator('/v1/capsules', { method: 'POST', body: world.capsule({ target: { runners: [world.runnerId] } }) })).status,
  ).toBe(201);
  type Item = { digest: string; verdict: string };
  let items: Item[] = [];
  await waitForAsync(
    async () => (items = (await coordinator.operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as Item[]).length === 1,
    `the bundle at the coordinator\n${agent.stderr().slice(-3000)}`,
    60_000,
  );
  // A status report after the feed was read (the agent reports after each poll cycle).
  const statuses = () =>
    proxy.to('PUT', `/v1/runners/${world.runnerId}/status`).map((e) => JSON.parse(e.requestBody.toString('utf8')) as Record<string, unknown>);
  await waitForAsync(() => statuses().some((s) => s.coordinatorTrustVersion !== undefined), 'a status report after the feed was read', 20_000).catch(
    () => undefined,
  );
  await agent.stop();
  const fleet = (await coordinator.operator('/v1/runners')).json() as { runners: { id: string; trustVersion: number }[]; trust: { version: number } };
  const pinAfter = { runnerJson: JSON.parse(readFileSync(layout.config, 'utf8')).trustSha256 as string, trust: readFileSync(layout.trust) };
  return { world, pinned, served, pinBefore, pinAfter, agent, items, statuses: statuses(), fleet, proxy };
}

describe.skipIf(!built)('a runner and a coordinator on different trust versions (needs dist/: npx tsc -p tsconfig.build.json)', () => {
  for (const relation of ['newer', 'older'] as const) {
    describe(`the coordinator's trust document is ${relation} than the runner's pin`, () => {
      let s: Awaited<ReturnType<typeof scenario>>;

      it(`the runner still accepts and runs a capsule valid under its own pin, and the coordinator takes its bundle`, async () => {
        s = await scenario(relation);
        expect(s.items.map((i) => i.verdict)).toEqual(['pass']);
        expect(s.fleet.trust.version, 'the coordinator serves the other version').toBe(s.served);
      }, 90_000);

      it(`the runner logs that the coordinator's trust is ${relation} than its pin and that it keeps the pin`, () => {
        const line = s.agent.lines.find((l) => l.relation === relation);
        expect(line, s.agent.stderr().slice(-2000)).toMatchObject({
          coordinatorTrustVersion: s.served,
          pinnedTrustVersion: s.pinned,
          msg: `coordinator trust is ${relation} than the pin; keeping the pin`,
        });
      });

      it(`the runner's status report names its pin (trustVersion) and the coordinator's version (coordinatorTrustVersion)`, () => {
        expect(s.statuses.length, 'status reports crossed the proxy').toBeGreaterThan(0);
        expect(new Set(s.statuses.map((r) => r.trustVersion)), 'every report names the pin').toEqual(new Set([s.pinned]));
        expect(s.statuses.at(-1), 'the last report names the coordinator’s version').toMatchObject({
          trustVersion: s.pinned,
          coordinatorTrustVersion: s.served,
        });
      });

      it(`the fleet view shows the runner's pin beside the coordinator's own version`, () => {
        const me = s.fleet.runners.find((r) => r.id === s.world.runnerId)!;
        expect([me.trustVersion, s.fleet.trust.version]).toEqual([s.pinned, s.served]);
      });

      it(`the runner keeps its own pin: runner.json's trustSha256 and trust.dsse.json unchanged`, () => {
        expect(s.pinAfter.runnerJson).toBe(s.pinBefore.runnerJson);
        expect(s.pinAfter.runnerJson).toBe(sha256(s.world.trustBytes));
        expect(s.pinAfter.trust.equals(s.pinBefore.trust)).toBe(true);
        expect(s.pinAfter.trust.equals(s.world.trustBytes)).toBe(true);
      });

      it(
        relation === 'newer'
          ? 'the runner fetched GET /v1/trust/2 and refused it (TRUST_SIGNATURE, recorded once as trust.refused)'
          : 'the runner asked for GET /v1/trust/3 at start, got 404, and recorded nothing',
        () => {
          const asked = s.pinned + 1;
          const fetched = s.proxy.to('GET', '/v1/trust');
          expect(fetched.length).toBeGreaterThan(0);
          expect(new Set(fetched.map((e) => e.path))).toEqual(new Set([`/v1/trust/${asked}`]));
          const records = trustRecords(s.world.stateDir);
          if (relation === 'newer') {
            expect(records).toEqual([
              { kind: 'trust.refused', body: expect.objectContaining({ code: 'TRUST_SIGNATURE', source: 'coordinator', toVersion: 2 }) },
            ]);
          } else {
            expect(fetched.every((e) => e.status === 404)).toBe(true);
            expect(records).toEqual([]);
          }
        },
      );
    });
  }
});
