/**
 * The canary across the link, real processes on 127.0.0.1: a random canary the step computes at run
 * time (so the signed capsule does not hold it) goes to the step's stdout and stderr, a failing step's
 * output, files the step writes and collects (a file and a JUnit report), and two random secrets sit in the
 * agent's own environment (one under a secret-looking name a step would print if the environment allowlist
 * failed). Capsules run through the real agent to the real coordinator, every exchange recorded by a forward
 * proxy in front of the coordinator (its --public-url). Then neither the coordinator's state folder (its SQLite database and
 * -wal included, while it runs and after it stopped), nor any request body the agent sent, nor any response
 * the coordinator served to the agent or to an operator, holds a canary in any form (plain, hex,
 * URL-encoded, JSON-escaped, base64/base64url at any offset, also inside base64 payloads). Positive controls:
 * the canary is in the runner's own evidence blobs, the environment secrets are in the agent's environment,
 * and the scanner finds planted encodings.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeLinkWorld, type LinkWorld } from '../helpers/agent-link.js';
import { CLI_ENTRY } from '../helpers/cli.js';
import { COORDINATOR_ENTRY } from '../coordinator/helpers.js';
import { withRawDb, value } from '../helpers/raw-db.js';
import { layoutOf } from '../../runner/state/state.js';
import {
  canaryForms,
  filesUnder,
  findCanary,
  killAll,
  type RecordingProxy,
  spawnAgent,
  startProxiedCoordinator,
  waitForAsync,
  type LinkCoordinator,
  type SpawnedAgent,
} from '../helpers/link.js';

const built = existsSync(COORDINATOR_ENTRY) && existsSync(CLI_ENTRY);

/** The bytes, and the bytes of every base64 (or base64url) run of 16+ characters in them, two levels deep. */
function expand(bytes: Buffer, depth = 2): Buffer[] {
  const out = [bytes];
  if (depth === 0) return out;
  for (const run of bytes.toString('latin1').match(/[A-Za-z0-9+/_-]{16,}={0,2}/g) ?? []) {
    const decoded = Buffer.from(run.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (decoded.length >= 12) out.push(...expand(decoded, depth - 1));
  }
  return out;
}

/** The first canary form found in the bytes or in what they carry base64-encoded. */
function leak(bytes: Buffer, secrets: readonly string[]): string | undefined {
  for (const part of expand(bytes)) {
    const found = findCanary(part, secrets);
    if (found) return found;
  }
  return undefined;
}

// Two products of random 30-bit numbers: the step's shell computes them, so the capsule holds only factors.
const factors = Array.from({ length: 4 }, () => randomInt(2 ** 29, 2 ** 30));
const canary = `CANARY:${BigInt(factors[0]!) * BigInt(factors[1]!)}/${BigInt(factors[2]!) * BigInt(factors[3]!)}+z`;
const envSecret = `runner-env-canary-${randomBytes(12).toString('hex')}`;
const awsSecret = `aws/Secret+${randomBytes(15).toString('base64url')}`;
const secrets = [canary, envSecret, awsSecret];

let world: LinkWorld;
let proxy: RecordingProxy;
let coordinator: LinkCoordinator;
let agent: SpawnedAgent;
let capsuleBytes: Buffer[] = [];

afterAll(async () => {
  await killAll();
  await proxy?.stop();
  world?.cleanup();
});

describe.skipIf(!built)('the canary across the coordinator link (needs dist/: npx tsc -p tsconfig.build.json)', () => {
  beforeAll(async () => {
    world = makeLinkWorld();
    ({ proxy, coordinator } = await startProxiedCoordinator(world));
    agent = spawnAgent(world, proxy.url, { EDGE_RUNNER_TEST_SECRET: envSecret, AWS_SECRET_ACCESS_KEY: awsSecret });

    const script = [
      `canary="CANARY:$((${factors[0]} * ${factors[1]}))/$((${factors[2]} * ${factors[3]}))+z"`,
      'echo "stdout $canary"',
      'echo "stderr $canary" >&2',
      'echo "environment: [$EDGE_RUNNER_TEST_SECRET] [$AWS_SECRET_ACCESS_KEY]"',
      'mkdir -p out',
      'echo "$canary" > out/secret.txt',
      'env > out/env.txt',
      'echo "<testsuite><testcase name=\\"$canary\\"><failure message=\\"$canary\\">$canary</failure></testcase></testsuite>" > out/report.xml',
    ].join('\n');
    const run = world.capsule({
      target: { runners: [world.runnerId] },
      steps: [
        { name: 'plant', run: ['/bin/sh', '-c', script] },
        {
          name: 'fail-loudly',
          run: ['/bin/sh', '-c', `echo "failing CANARY:$((${factors[0]} * ${factors[1]}))/$((${factors[2]} * ${factors[3]}))+z" >&2; exit 7`],
          continueOnFailure: true,
        },
      ],
      collect: [
        { path: 'out/secret.txt', as: 'file' },
        { path: 'out/env.txt', as: 'file' },
        { path: 'out/report.xml', as: 'junit' },
      ],
    });
    // The same id and nonce in other bytes: a replay to the runner, so a signed rejection crosses too.
    const manifest = JSON.parse(Buffer.from(JSON.parse(run.toString('utf8')).envelope.payload, 'base64').toString('utf8'));
    const replay = world.capsule({ id: manifest.id, nonce: manifest.nonce, target: { runners: [world.runnerId] } });
    capsuleBytes = [run, replay];
    for (const bytes of capsuleBytes) {
      const published = await coordinator.operator('/v1/capsules', { method: 'POST', body: bytes });
      if (published.status !== 201) throw new Error(`publish: ${published.status} ${published.body.toString()}`);
    }

    const database = layoutOf(world.stateDir).database;
    await waitForAsync(
      async () =>
        (await coordinator.operator(`/v1/bundles?runner=${world.runnerId}`)).json().items.length === 1 &&
        (await coordinator.operator(`/v1/rejections?runner=${world.runnerId}`)).json().items.length === 1 &&
        withRawDb(database, (db) => value<number>(db, "SELECT COUNT(*) FROM outbox_v1 WHERE state <> 'acked'"), { readOnly: true }) === 0 &&
        agent.lines.some((line) => line.msg === 'checkpoint cosigned'),
      `the bundle, the rejection and a cosigned checkpoint at the coordinator\n${agent.stderr().slice(-3000)}`,
      90_000,
    );
  }, 120_000);

  it('the scanner finds each secret planted plain, hex, URL-encoded and base64 at any offset, also inside a base64 payload', () => {
    for (const secret of secrets) {
      expect(leak(Buffer.from(`x${secret}y`), [secret]), 'plain').toBeDefined();
      expect(leak(Buffer.from(Buffer.from(secret).toString('hex')), [secret]), 'hex').toBeDefined();
      expect(leak(Buffer.from(encodeURIComponent(secret)), [secret]), 'URL-encoded').toBeDefined();
      for (let prefix = 0; prefix < 3; prefix++) {
        const b64 = Buffer.from(`${'p'.repeat(prefix)}${secret}suffix`).toString('base64');
        expect(leak(Buffer.from(`{"a":"${b64}"}`), [secret]), `base64 at offset ${prefix}`).toBeDefined();
        const nested = Buffer.from(JSON.stringify({ payload: b64 })).toString('base64');
        expect(leak(Buffer.from(`{"envelope":"${nested}"}`), [secret]), `base64 in base64 at offset ${prefix}`).toBeDefined();
      }
    }
    // The URL-encoded form differs from the plain one: the canary has characters that encoding changes.
    expect(canaryForms(canary)).toContain(encodeURIComponent(canary));
    expect(encodeURIComponent(canary)).not.toBe(canary);
  });

  it('positive controls: the signed capsules hold no canary, the step produced it (it is in the runner’s own evidence blobs), and the secrets were in the agent’s environment', () => {
    for (const bytes of capsuleBytes) expect(leak(bytes, secrets), 'a capsule holds a canary: the test would prove nothing').toBeUndefined();
    const blobs = filesUnder(join(world.stateDir, 'evidence', 'blobs'));
    expect(
      blobs.some((blob) => blob.bytes.includes(Buffer.from(`stdout ${canary}`))),
      'stdout blob',
    ).toBe(true);
    expect(
      blobs.some((blob) => blob.bytes.includes(Buffer.from(`stderr ${canary}`))),
      'stderr blob',
    ).toBe(true);
    expect(
      blobs.some((blob) => blob.bytes.includes(Buffer.from(`failing ${canary}`))),
      'failing step blob',
    ).toBe(true);
    const environ = readFileSync(`/proc/${agent.child.pid}/environ`);
    expect(environ.includes(Buffer.from(`EDGE_RUNNER_TEST_SECRET=${envSecret}`)), 'the runner env secret').toBe(true);
    expect(environ.includes(Buffer.from(`AWS_SECRET_ACCESS_KEY=${awsSecret}`)), 'the secret-looking env var').toBe(true);
    // The environment allowlist held on the runner too: the step printed empty brackets.
    expect(
      blobs.some((blob) => blob.bytes.includes(Buffer.from('environment: [] []'))),
      'the step saw neither secret',
    ).toBe(true);
  });

  it('every request body the agent sent through the proxy holds no canary in any form', () => {
    const routes = new Set(proxy.exchanges.map((e) => `${e.method} ${e.path.replace(/[0-9a-f]{64}/, 'HEX').replace(/\?.*$/, '')}`));
    expect([...routes].sort()).toEqual(
      expect.arrayContaining([
        'GET /v1/capsules/HEX',
        `GET /v1/runners/${world.runnerId}/work`,
        'PUT /v1/bundles/HEX',
        'PUT /v1/rejections/HEX',
        `POST /v1/runners/${world.runnerId}/add-checkpoint`,
        `PUT /v1/runners/${world.runnerId}/status`,
      ]),
    );
    for (const exchange of proxy.exchanges) {
      const headers = Buffer.from(JSON.stringify(exchange.responseHeaders));
      expect(leak(exchange.requestBody, secrets), `${exchange.method} ${exchange.path} request body`).toBeUndefined();
      expect(leak(headers, secrets), `${exchange.method} ${exchange.path} response headers`).toBeUndefined();
    }
  });

  it('every response the coordinator served to the agent holds no canary in any form', () => {
    const answered = proxy.exchanges.filter((e) => e.status !== undefined);
    expect(answered.some((e) => e.path.startsWith('/v1/capsules/') && e.status === 200 && e.responseBody.length > 0)).toBe(true);
    for (const exchange of answered) {
      expect(leak(exchange.responseBody, secrets), `${exchange.method} ${exchange.path} → ${exchange.status}`).toBeUndefined();
    }
  });

  it('every operator endpoint (bundles, rejections, capsules, fleet, trust) serves no canary in any form', async () => {
    const bundles = (await coordinator.operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as { digest: string }[];
    const rejections = (await coordinator.operator(`/v1/rejections?runner=${world.runnerId}`)).json().items as { digest: string }[];
    const bundle = await coordinator.operator(`/v1/bundles/${bundles[0]!.digest.slice(7)}`);
    expect(bundle.status).toBe(200);
    // The bundle served is the one the agent sent (so scanning it scans what crossed).
    expect(proxy.to('PUT', `/v1/bundles/${bundles[0]!.digest.slice(7)}`)[0]!.requestBody.equals(bundle.body)).toBe(true);
    expect((await coordinator.operator(`/v1/rejections/${rejections[0]!.digest.slice(7)}`)).status).toBe(200);
    for (const path of ['/v1/bundles', '/v1/bundles?verdict=fail', '/v1/rejections', '/v1/runners', '/v1/trust']) await coordinator.operator(path);
    for (const item of (await coordinator.operator(`/v1/bundles?runner=${world.runnerId}`)).json().items as { capsuleId: string }[]) {
      expect(item.capsuleId).toBeTruthy();
    }
    for (const capsule of capsuleBytes) {
      const hex = createHash('sha256').update(capsule).digest('hex');
      expect((await coordinator.operator(`/v1/capsules/${hex}`)).status).toBe(200);
    }
    expect(coordinator.operatorBodies.length).toBeGreaterThanOrEqual(10);
    for (const { path, body } of coordinator.operatorBodies) expect(leak(body, secrets), `operator GET ${path}`).toBeUndefined();
  });

  it('the coordinator’s state folder (SQLite database, -wal, config) holds no canary in any form, while it runs and after it stops', async () => {
    await agent.stop();
    const running = filesUnder(coordinator.stateDir);
    const names = running.map((f) => f.path.slice(coordinator.stateDir.length + 1));
    expect(names).toContain('coordinator.db');
    // Positive control: the scan reads the database's real content (the capsule id is in the bundle it stored).
    const manifest = JSON.parse(Buffer.from(JSON.parse(capsuleBytes[0]!.toString('utf8')).envelope.payload, 'base64').toString('utf8'));
    expect(
      running.some((f) => f.bytes.includes(Buffer.from(manifest.id as string))),
      'the capsule id is in the database files',
    ).toBe(true);
    for (const file of running) expect(leak(file.bytes, secrets), file.path).toBeUndefined();
    expect(await coordinator.running.stop()).toBe(0);
    const stopped = filesUnder(coordinator.stateDir);
    for (const file of stopped) expect(leak(file.bytes, secrets), `${file.path} after stop`).toBeUndefined();
  }, 60_000);
});
