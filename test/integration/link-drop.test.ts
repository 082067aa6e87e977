/**
 * Faults between the agent and the coordinator, real processes on 127.0.0.1, through a proxy in the test in
 * front of the coordinator (its --public-url): the coordinator stores a bundle (a rejection, a checkpoint) and the
 * connection dies before the answer reaches the agent (the proxy reads the coordinator's answer and closes
 * the agent's socket instead); and the proxy itself answers 502, or 200 with an HTML page, without the
 * request reaching the coordinator. Nothing is stored twice, nothing is marked failed, nothing is acked on
 * a page that is no acknowledgement.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeLinkWorld, type LinkWorld } from '../helpers/agent-link.js';
import { CLI_ENTRY } from '../helpers/cli.js';
import { COORDINATOR_ENTRY } from '../coordinator/helpers.js';
import { withRawDb } from '../helpers/raw-db.js';
import { layoutOf } from '../../runner/state/state.js';
import {
  firstRequests,
  killAll,
  type RecordingProxy,
  spawnAgent,
  startProxiedCoordinator,
  waitForAsync,
  type LinkCoordinator,
  type ProxiedExchange,
  type SpawnedAgent,
} from '../helpers/link.js';

const built = existsSync(COORDINATOR_ENTRY) && existsSync(CLI_ENTRY);

interface OutboxRow {
  id: number;
  kind: string;
  digest: string | null;
  state: string;
  attempts: number;
  last_code: string | null;
}

let world: LinkWorld;
let proxy: RecordingProxy;
let coordinator: LinkCoordinator;
let agent: SpawnedAgent;
let database: string;

const outbox = (): OutboxRow[] =>
  withRawDb(
    database,
    (db) => db.prepare('SELECT id, kind, digest, state, attempts, last_code FROM outbox_v1 ORDER BY id').all() as unknown as OutboxRow[],
    {
      readOnly: true,
    },
  );
/** The runner's log records of this kind whose leaf names `digest`. */
const recordsNaming = (kind: string, digest: string): number =>
  withRawDb(
    database,
    (db) =>
      (db.prepare('SELECT leaf FROM records_v1 WHERE kind = ?').all(kind) as { leaf: Uint8Array }[]).filter((r) =>
        Buffer.from(r.leaf).includes(digest),
      ).length,
    { readOnly: true },
  );
const held = async (folder: 'bundles' | 'rejections'): Promise<string[]> =>
  ((await coordinator.operator(`/v1/${folder}?runner=${world.runnerId}&limit=1000`)).json().items as { digest: string }[]).map((i) => i.digest);
const ack = (e: ProxiedExchange) => JSON.parse(e.responseBody.toString('utf8')) as { digest: string; stored: string };

afterAll(async () => {
  await killAll();
  await proxy?.stop();
  world?.cleanup();
});

describe.skipIf(!built)('faults between the agent and the coordinator (needs dist/: npx tsc -p tsconfig.build.json)', () => {
  beforeAll(async () => {
    world = makeLinkWorld();
    database = layoutOf(world.stateDir).database;
    ({ proxy, coordinator } = await startProxiedCoordinator(world));
    // The first bundle, rejection and checkpoint: forwarded, answered by the coordinator, answer dropped.
    proxy.rules.push(
      firstRequests('PUT', '/v1/bundles/', 1, { kind: 'drop-answer' }),
      firstRequests('PUT', '/v1/rejections/', 1, { kind: 'drop-answer' }),
      firstRequests('POST', `/v1/runners/${world.runnerId}/add-checkpoint`, 1, { kind: 'drop-answer' }),
    );
    agent = spawnAgent(world, proxy.url);
    const run = world.capsule({ target: { runners: [world.runnerId] } });
    const manifest = JSON.parse(Buffer.from(JSON.parse(run.toString('utf8')).envelope.payload, 'base64').toString('utf8'));
    const replay = world.capsule({ id: manifest.id, nonce: manifest.nonce, target: { runners: [world.runnerId] } });
    for (const bytes of [run, replay]) expect((await coordinator.operator('/v1/capsules', { method: 'POST', body: bytes })).status).toBe(201);
    await waitForAsync(
      () => {
        const rows = outbox();
        return rows.length === 2 && rows.every((r) => r.state !== 'queued') && agent.lines.some((l) => l.msg === 'checkpoint cosigned');
      },
      `both answers settled and a checkpoint cosigned\n${agent.stderr().slice(-3000)}`,
      60_000,
    );
  }, 90_000);

  it('a bundle the coordinator stored whose answer was dropped: the retry gets 200 "existing", the coordinator holds it once, the row is acked with one outbox.acked record', async () => {
    const [first, ...rest] = proxy.to('PUT', '/v1/bundles/');
    expect(first!.action, 'the first PUT reached the coordinator and its answer was dropped').toBe('dropped');
    expect([first!.status, ack(first!).stored], 'the coordinator stored it on the first PUT').toEqual([201, 'created']);
    const retries = rest.filter((e) => e.path === first!.path);
    expect(
      retries.map((e) => [e.action, e.status, ack(e).stored]),
      'exactly one retry, answered 200 existing',
    ).toEqual([['forwarded', 200, 'existing']]);
    expect(retries[0]!.requestBody.equals(first!.requestBody), 'the retry sent the same bytes').toBe(true);
    const digest = ack(first!).digest;
    expect(
      (await held('bundles')).filter((d) => d === digest),
      'held once by the coordinator',
    ).toHaveLength(1);
    const rows = outbox().filter((r) => r.digest === digest);
    expect(
      rows.map((r) => [r.kind, r.state]),
      'one outbox row, acked (not dead)',
    ).toEqual([['bundle', 'acked']]);
    expect(rows[0]!.attempts, 'two sends counted: the dropped one and the acked retry').toBe(2);
    expect(recordsNaming('outbox.acked', digest), 'exactly one outbox.acked record').toBe(1);
    expect(recordsNaming('outbox.dead', digest), 'no outbox.dead record').toBe(0);
  });

  it('a rejection the coordinator stored whose answer was dropped: the retry gets 200 "existing", held once, acked once', async () => {
    const [first, ...rest] = proxy.to('PUT', '/v1/rejections/');
    expect([first!.action, first!.status, ack(first!).stored]).toEqual(['dropped', 201, 'created']);
    const retries = rest.filter((e) => e.path === first!.path);
    expect(retries.map((e) => [e.action, e.status, ack(e).stored])).toEqual([['forwarded', 200, 'existing']]);
    expect(retries[0]!.requestBody.equals(first!.requestBody), 'the retry sent the same rejection bytes').toBe(true);
    const digest = ack(first!).digest;
    expect((await held('rejections')).filter((d) => d === digest)).toHaveLength(1);
    expect(
      outbox()
        .filter((r) => r.digest === digest)
        .map((r) => [r.kind, r.state]),
    ).toEqual([['rejection', 'acked']]);
    expect(recordsNaming('outbox.acked', digest)).toBe(1);
    expect(recordsNaming('outbox.dead', digest)).toBe(0);
  });

  it('a checkpoint the witness cosigned whose answer was dropped: the runner learns the held size (409) and is cosigned after, with no fork', async () => {
    const submissions = proxy.to('POST', `/v1/runners/${world.runnerId}/add-checkpoint`);
    expect([submissions[0]!.action, submissions[0]!.status], 'the first submission was cosigned and its answer dropped').toEqual(['dropped', 200]);
    const droppedSize = Number(submissions[0]!.requestBody.toString('utf8').split('\n\n')[1]!.split('\n')[1]);
    const conflict = submissions.slice(1).find((e) => e.status === 409);
    expect(conflict, 'a later submission from the old size is answered 409').toBeDefined();
    expect(conflict!.responseBody.toString('utf8'), 'the 409 names the size the witness kept from the dropped submission').toBe(`${droppedSize}\n`);
    await waitForAsync(async () => {
      const me = (await coordinator.operator('/v1/runners')).json().runners.find((r: { id: string }) => r.id === world.runnerId);
      return me.witnessedSize > droppedSize || agent.lines.some((l) => l.msg === 'checkpoint cosigned');
    }, 'a cosignature after the drop');
    const me = (await coordinator.operator('/v1/runners')).json().runners.find((r: { id: string }) => r.id === world.runnerId);
    expect(me.forks, 'no fork evidence').toBe(0);
    const stored = withRawDb(database, (db) => db.prepare('SELECT MAX(size) AS size FROM cosignatures_v1').get() as { size: number }, {
      readOnly: true,
    });
    expect(stored.size, 'the runner kept a cosignature').toBeGreaterThanOrEqual(droppedSize);
  });

  it.each([
    ['502 from the proxy', { status: 502, headers: { 'content-type': 'text/html' }, body: '<html><body><h1>502 Bad Gateway</h1></body></html>' }],
    [
      '200 with an HTML page from the proxy',
      { status: 200, headers: { 'content-type': 'text/html' }, body: '<html><body>Welcome to the proxy</body></html>' },
    ],
  ])(
    '%s for the first attempts: retried, not acked while it lasts, then delivered once',
    async (_what, page) => {
      let faulting = true;
      const from = proxy.exchanges.length;
      proxy.rules.unshift((r) => (faulting && r.method === 'PUT' && r.path.startsWith('/v1/bundles/') ? { kind: 'answer', ...page } : undefined));
      expect(
        (await coordinator.operator('/v1/capsules', { method: 'POST', body: world.capsule({ target: { runners: [world.runnerId] } }) })).status,
      ).toBe(201);
      const faulted = () =>
        proxy.exchanges.slice(from).filter((e) => e.method === 'PUT' && e.path.startsWith('/v1/bundles/') && e.action === 'proxy');
      await waitForAsync(() => faulted().length >= 3, 'three attempts answered by the proxy', 30_000);
      const digest = `sha256:${faulted()[0]!.path.slice('/v1/bundles/'.length)}`;
      const during = outbox().filter((r) => r.digest === digest);
      expect(
        during.map((r) => r.state),
        'the row is still queued during the fault',
      ).toEqual(['queued']);
      expect(during[0]!.attempts, 'each faulted attempt was counted').toBeGreaterThanOrEqual(2);
      expect(during[0]!.last_code, 'with the retry code').toBeTruthy();
      expect(recordsNaming('outbox.acked', digest), 'no outbox.acked record during the fault').toBe(0);
      expect(await held('bundles'), 'the coordinator has not seen it').not.toContain(digest);

      faulting = false;
      await waitForAsync(
        () => outbox().find((r) => r.digest === digest)?.state === 'acked',
        `the row acked after the fault\n${agent.stderr().slice(-2000)}`,
      );
      const forwarded = proxy.exchanges.slice(from).filter((e) => e.path === `/v1/bundles/${digest.slice(7)}` && e.action !== 'proxy');
      expect(
        forwarded.map((e) => [e.action, e.status, ack(e).stored]),
        'one PUT reached the coordinator: 201 created',
      ).toEqual([['forwarded', 201, 'created']]);
      expect((await held('bundles')).filter((d) => d === digest)).toHaveLength(1);
      expect(recordsNaming('outbox.acked', digest)).toBe(1);
      expect(recordsNaming('outbox.dead', digest)).toBe(0);
    },
    60_000,
  );

  it('after everything: every outbox row is acked, once each, and the coordinator holds exactly the runner’s answers', async () => {
    await agent.stop();
    const rows = outbox();
    expect(rows.every((r) => r.state === 'acked')).toBe(true);
    expect(new Set(rows.map((r) => r.digest)).size).toBe(rows.length);
    for (const row of rows) expect(recordsNaming('outbox.acked', row.digest!), row.digest!).toBe(1);
    const all = [...(await held('bundles')), ...(await held('rejections'))];
    expect(all.sort()).toEqual(rows.map((r) => r.digest).sort());
  }, 30_000);
});
