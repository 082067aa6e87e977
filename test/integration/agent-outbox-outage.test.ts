/**
 * The shipper through an outage of hours, with an injected clock and sleep (no real waiting): 10,000 queued
 * bundles in a real store, a coordinator that is unreachable for three hours and then comes back. Every
 * bundle arrives exactly once, retries send the same bytes, the outage costs a bounded number of requests
 * (one per backoff period, not one per row), and the shipper never holds more than one body.
 */
import { randomUUID, createHash } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { checkpointNow } from '../../runner/agent/log.js';
import { silentLogger } from '../../runner/agent/logger.js';
import type { Answer } from '../../runner/outbox/classify.js';
import { Shipper } from '../../runner/outbox/shipper.js';
import type { InboxAck } from '../../runner/protocol/wire.js';
import { Store } from '../../runner/store/store.js';
import { layoutOf } from '../../runner/state/state.js';
import { makeLinkWorld } from '../helpers/agent-link.js';

const ROWS = 10_000;
const BODY_BYTES = 8 * 1024;
const HOUR = 3_600_000;

const world = makeLinkWorld();
afterAll(() => world.cleanup());

describe('the shipper through an outage', () => {
  it(`an outage of three hours with ${ROWS} queued bundles: each arrives exactly once afterwards, with bounded requests and memory`, async () => {
    const store = Store.open(layoutOf(world.stateDir).database);
    try {
      const identity = { runnerId: world.runnerId, key: world.runnerKey };
      const checkpoint = checkpointNow(store, identity);
      // 10,000 evidence records, each with its queued bundle (bytes that name their index).
      store.transaction(() => {
        for (let i = 0; i < ROWS; i++) {
          const bundle = Buffer.alloc(BODY_BYTES, i % 251);
          bundle.write(`bundle ${i} `);
          store.recordEvidence({ runId: randomUUID(), evidenceDigest: `sha256:${createHash('sha256').update(String(i)).digest('hex')}` }, () => ({
            bundle,
            checkpoint: { size: checkpoint.size, note: checkpoint.note },
          }));
        }
      });
      expect(store.outboxStats().queued).toBe(ROWS);

      // The rows are due from their creation; the clock starts there and moves only when the shipper sleeps.
      let now = Date.now();
      const outageEnds = now + 3 * HOUR;
      const received = new Map<string, number>();
      const firstBytes = new Map<string, string>();
      let outageRequests = 0;
      let inFlight = 0;
      let maxInFlight = 0;
      let peakExternal = 0;
      const baseline = process.memoryUsage().arrayBuffers;
      const put = async (digest: string, bytes: Buffer): Promise<Answer<InboxAck>> => {
        inFlight += 1;
        maxInFlight = Math.max(maxInFlight, inFlight);
        peakExternal = Math.max(peakExternal, process.memoryUsage().arrayBuffers - baseline);
        try {
          const sha = createHash('sha256').update(bytes).digest('hex');
          expect(`sha256:${sha}`).toBe(digest);
          // A retry sends the same bytes as the first attempt.
          if (firstBytes.has(digest)) expect(firstBytes.get(digest)).toBe(sha);
          else firstBytes.set(digest, sha);
          if (now < outageEnds) {
            outageRequests += 1;
            return { kind: 'retry', code: 'API_NETWORK' };
          }
          const seen = received.get(digest) ?? 0;
          received.set(digest, seen + 1);
          return { kind: 'ok', status: seen === 0 ? 201 : 200, value: { digest, stored: seen === 0 ? 'created' : 'existing' } };
        } finally {
          inFlight -= 1;
        }
      };
      const shipper = new Shipper({
        store,
        client: { putBundle: put, putRejection: put },
        buildRejection: () => {
          throw new Error('no rejections here');
        },
        backoff: { baseMs: 1000, capMs: 300_000, random: () => 0.5 },
        now: () => now,
        sleep: async (ms) => {
          now += ms;
          await new Promise((resolve) => setImmediate(resolve)); // as a real sleep does, let timers and I/O run
        },
        logger: silentLogger,
      });
      const stop = new AbortController();
      const running = shipper.run(stop.signal);
      const wallStart = Date.now();
      while (store.outboxStats().queued > 0 && Date.now() - wallStart < 240_000) await new Promise((resolve) => setTimeout(resolve, 50));
      stop.abort();
      await running;

      expect(store.outboxStats()).toMatchObject({ queued: 0, acked: ROWS, dead: 0 });
      expect(received.size).toBe(ROWS);
      expect([...received.values()].every((count) => count === 1)).toBe(true);
      // One request per backoff period during the outage: about log2(cap/base) + 3 h / (cap/2), never per row.
      expect(outageRequests).toBeGreaterThan(10);
      expect(outageRequests).toBeLessThan(100);
      expect(maxInFlight).toBe(1);
      // 10,000 bodies are 80 MiB; the shipper holds one at a time (what is left is garbage awaiting GC).
      expect(peakExternal).toBeLessThan(48 * 1024 * 1024);
    } finally {
      store.close();
    }
  }, 300_000);
});
