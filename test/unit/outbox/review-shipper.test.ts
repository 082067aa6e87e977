/**
 * A hostile review of the shipper and its classification (issue 9): a clock that jumps, a disk that fills
 * under the shipper, and refusals that are about the request or come from a hop on the way rather than
 * from the coordinator's judgement of the document. Real store, injected clock and sleep, a fake client.
 */
import { createHash, randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { checkpointNow } from '../../../runner/agent/log.js';
import { silentLogger } from '../../../runner/agent/logger.js';
import { classifyResponse, type Answer, type Expectation, type ResponseFacts } from '../../../runner/outbox/classify.js';
import { Shipper } from '../../../runner/outbox/shipper.js';
import { parseInboxAck, type InboxAck } from '../../../runner/protocol/wire.js';
import { StoreError } from '../../../runner/store/errors.js';
import { Store } from '../../../runner/store/store.js';
import { layoutOf } from '../../../runner/state/state.js';
import { makeLinkWorld, type LinkWorld } from '../../helpers/agent-link.js';

const YEAR = 365 * 24 * 3_600_000;
const open: { world: LinkWorld; store: Store }[] = [];
afterEach(() => {
  for (const { world, store } of open.splice(0)) {
    store.close();
    world.cleanup();
  }
});

/** A store with `rows` queued bundles. */
function storeWithBundles(rows: number): Store {
  const world = makeLinkWorld();
  const store = Store.open(layoutOf(world.stateDir).database);
  open.push({ world, store });
  const checkpoint = checkpointNow(store, { runnerId: world.runnerId, key: world.runnerKey });
  store.transaction(() => {
    for (let i = 0; i < rows; i++) {
      const digest = `sha256:${createHash('sha256').update(`e${i}`).digest('hex')}`;
      store.recordEvidence({ runId: randomUUID(), evidenceDigest: digest }, () => ({
        bundle: Buffer.from(`bundle ${i}`),
        checkpoint: { size: checkpoint.size, note: checkpoint.note },
      }));
    }
  });
  return store;
}

const ack = (digest: string, seen: boolean): Answer<InboxAck> => ({
  kind: 'ok',
  status: seen ? 200 : 201,
  value: { digest, stored: seen ? 'existing' : 'created' },
});

function shipperOver(store: Store, put: (digest: string) => Answer<InboxAck>, clock: { now: number }, capMs = 300_000): Shipper {
  const send = async (digest: string) => put(digest);
  return new Shipper({
    store,
    client: { putBundle: send, putRejection: send },
    buildRejection: () => {
      throw new Error('no rejections here');
    },
    backoff: { baseMs: 1000, capMs, random: () => 0.5 },
    now: () => clock.now,
    sleep: async (ms) => {
      clock.now += ms;
      await new Promise((resolve) => setImmediate(resolve));
    },
    logger: silentLogger,
  });
}

describe('review: clock jumps under the shipper', () => {
  it('attack clock-back: rows put off while the clock was a year ahead are shipped once it jumps back, not a year later', async () => {
    const store = storeWithBundles(3);
    const clock = { now: Date.now() + YEAR }; // a clock a year ahead (a bad RTC, a wrong NTP answer)
    let down = true;
    const received: string[] = [];
    const shipper = shipperOver(
      store,
      (digest) => {
        if (down) return { kind: 'retry', code: 'API_NETWORK' };
        received.push(digest);
        return ack(digest, false);
      },
      clock,
    );
    // Each row fails once while the clock is ahead: each is put off to "a year from now" plus a backoff.
    for (let i = 0; i < 3; i++) {
      await shipper.shipOne();
      clock.now = Math.max(clock.now, shipper.backingOffUntil);
    }
    expect(store.outboxStats().queued).toBe(3);
    // NTP corrects the clock; the coordinator is back.
    clock.now = Date.now();
    down = false;
    await shipper.flush(clock.now + 60_000);
    expect(store.outboxStats()).toMatchObject({ queued: 0, acked: 3, dead: 0 });
    expect(new Set(received).size).toBe(3);
  });
});

describe('review: a full disk under the shipper', () => {
  it('attack full disk: a store that refuses to record an ack does not stop the shipper; the row is sent again and acked as existing', async () => {
    const store = storeWithBundles(2);
    const clock = { now: Date.now() };
    const seen = new Map<string, number>();
    const realAck = store.outboxAck.bind(store);
    let refusals = 1;
    store.outboxAck = (id, stored) => {
      if (refusals-- > 0) throw new StoreError('STORE_WRITE_FAILED', 'The database or disk is full.');
      realAck(id, stored);
    };
    const shipper = shipperOver(
      store,
      (digest) => {
        const n = seen.get(digest) ?? 0;
        seen.set(digest, n + 1);
        return ack(digest, n > 0);
      },
      clock,
    );
    const stop = new AbortController();
    const running = shipper.run(stop.signal);
    const started = Date.now();
    let rejected: unknown;
    running.catch((err: unknown) => (rejected = err));
    while (store.outboxStats().queued > 0 && rejected === undefined && Date.now() - started < 10_000) await new Promise((r) => setTimeout(r, 10));
    stop.abort();
    await running.catch(() => {});
    expect(rejected).toBeUndefined();
    expect(store.outboxStats()).toMatchObject({ queued: 0, acked: 2, dead: 0 });
    // The row whose ack was lost was sent again; the coordinator said it had it.
    expect([...seen.values()].sort()).toEqual([1, 2]);
    const acked = [...store.records()].filter((r) => r.kind === 'outbox.acked').map((r) => JSON.parse(r.leaf.toString('utf8')).status);
    expect(acked.sort()).toEqual(['created', 'existing']);
  });
});

describe('review: refusals that are not the coordinator judging the document', () => {
  const inbox: Expectation<InboxAck> = { statuses: [200, 201], parse: (r) => parseInboxAck(r.body) };
  const facts = (status: number, body = '', headers: Record<string, string> = {}): ResponseFacts => ({ status, headers, body: Buffer.from(body) });
  const error = (code: string) => JSON.stringify({ code, message: 'Refused.' });

  it.each([
    ['PROTOCOL_CREATED_FUTURE', 'the runner clock ahead of the coordinator'],
    ['PROTOCOL_EXPIRED', 'the runner clock behind'],
    ['PROTOCOL_UNKNOWN_KEY', 'a coordinator whose older trust document does not enrol this runner yet'],
  ])('attack clock skew / older trust: a 401 %s (%s) is retried, never a dead letter', (code) => {
    expect(classifyResponse(facts(401, error(code)), inbox, Date.now())).toMatchObject({ kind: 'retry', code });
  });

  it('attack proxy block page: a 403 HTML page from a proxy, or an empty 404 from a wrong path, is retried, never a dead letter', () => {
    expect(classifyResponse(facts(403, '<html>blocked by policy</html>', { 'content-type': 'text/html' }), inbox, 0)).toMatchObject({
      kind: 'retry',
      code: 'HTTP_403',
    });
    expect(classifyResponse(facts(404), inbox, 0)).toMatchObject({ kind: 'retry', code: 'HTTP_404' });
    expect(classifyResponse(facts(421, error('PROTOCOL_MISDIRECTED')), inbox, 0)).toMatchObject({ kind: 'retry' });
  });

  it('the coordinator refusing the document with its error body is still a dead letter (422, 409, 403 with a code)', () => {
    expect(classifyResponse(facts(422, error('BUNDLE_SIGNATURE')), inbox, 0)).toMatchObject({ kind: 'permanent', code: 'BUNDLE_SIGNATURE' });
    expect(classifyResponse(facts(409, error('INBOX_RECORD_CONFLICT')), inbox, 0)).toMatchObject({ kind: 'permanent' });
    expect(classifyResponse(facts(403, error('INBOX_RUNNER_MISMATCH')), inbox, 0)).toMatchObject({ kind: 'permanent' });
  });

  it('a Retry-After of years is capped: the shipper waits at most the cap (held before the review)', async () => {
    const store = storeWithBundles(1);
    const clock = { now: Date.now() };
    const shipper = shipperOver(store, () => ({ kind: 'retry', code: 'HTTP_503', retryAfterMs: 10 * YEAR }), clock, 60_000);
    const before = clock.now;
    expect(await shipper.shipOne()).toBe('retry');
    expect(shipper.backingOffUntil - before).toBeLessThanOrEqual(60_000);
    expect(store.outboxRow(1)!.nextAttemptAt - before).toBeLessThanOrEqual(60_000);
  });
});
