/** runner/api/client.ts: capped reads, the dispatcher's configuration, and what an answer must be to count as one. */
import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, EnvHttpProxyAgent } from 'undici';
import { CoordinatorClient, dispatcherFor, readCapped } from '../../../runner/api/client.js';
import { DEFAULT_CONFIG } from '../../../runner/config/config.js';
import { PrivateKey } from '../../../runner/core/ed25519.js';
import { formatInboxAck } from '../../../runner/protocol/wire.js';
import { codeOf } from '../../helpers/codes.js';

function body(chunks: number, size: number) {
  let destroyed = false;
  let produced = 0;
  const stream = {
    async *[Symbol.asyncIterator]() {
      for (let i = 0; i < chunks; i++) {
        produced += size;
        yield Buffer.alloc(size, 1);
      }
    },
    destroy() {
      destroyed = true;
    },
  };
  return { stream, destroyed: () => destroyed, produced: () => produced };
}

describe('readCapped', () => {
  it('reads a body of exactly its cap', async () => {
    const b = body(4, 256);
    expect(await readCapped(b.stream, 1024)).toEqual({ bytes: Buffer.alloc(1024, 1), overCap: false });
    expect(b.destroyed()).toBe(false);
  });

  it('stops one chunk past the cap, destroys the stream, and keeps nothing of it', async () => {
    const b = body(1_000_000, 1024); // a gigabyte, if it were read
    const read = await readCapped(b.stream, 4096);
    expect(read).toEqual({ bytes: Buffer.alloc(0), overCap: true });
    expect(b.destroyed()).toBe(true);
    expect(b.produced()).toBe(5 * 1024);
  });
});

describe('dispatcherFor', () => {
  const settings = { ...DEFAULT_CONFIG.coordinator, url: 'https://coordinator.example' };
  it('is a plain Agent without a proxy, and an EnvHttpProxyAgent with one', async () => {
    const plain = dispatcherFor(settings);
    const proxied = dispatcherFor({ ...settings, httpsProxy: 'http://user:pw@127.0.0.1:3128', noProxy: 'localhost' });
    expect(plain).toBeInstanceOf(Agent);
    expect(proxied).toBeInstanceOf(EnvHttpProxyAgent);
    await plain.close();
    await proxied.close();
  });

  it('refuses a CA file it cannot read with API_CA_FILE', () => {
    expect(codeOf(() => dispatcherFor({ ...settings, caFile: '/nonexistent/ca.pem' }))).toBe('API_CA_FILE');
  });
});

describe('CoordinatorClient answers', () => {
  let server: Server;
  let url = '';
  const seen: { headers: IncomingHttpHeaders; body: Buffer }[] = [];
  let reply: (digest: string) => { status: number; body: string | Buffer } = () => ({ status: 500, body: '' });
  beforeAll(async () => {
    server = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      seen.push({ headers: req.headers, body: Buffer.concat(chunks) });
      const { status, body } = reply(`sha256:${req.url!.split('/').pop()}`);
      res.writeHead(status, { 'content-type': 'application/json' }).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const client = () => new CoordinatorClient({ settings: { ...DEFAULT_CONFIG.coordinator, url }, runnerId: 'runner-1', key: PrivateKey.generate() });
  const bytes = Buffer.from('{"mediaType":"application/vnd.edge-runner.bundle.v1+json"}');
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

  it('sends the same bytes and Content-Digest on every attempt, each signed with a fresh nonce', async () => {
    seen.length = 0;
    reply = () => ({ status: 503, body: '' });
    const c = client();
    expect(await c.putBundle(digest, bytes)).toMatchObject({ kind: 'retry', code: 'HTTP_503' });
    expect(await c.putBundle(digest, bytes)).toMatchObject({ kind: 'retry', code: 'HTTP_503' });
    await c.close();
    const [first, second] = seen;
    expect(first!.body.equals(bytes) && second!.body.equals(bytes)).toBe(true);
    expect(first!.headers['content-digest']).toBe(`sha-256=:${createHash('sha256').update(bytes).digest('base64')}:`);
    expect(second!.headers['content-digest']).toBe(first!.headers['content-digest']);
    const nonce = (h: IncomingHttpHeaders) => /nonce="([^"]+)"/.exec(String(h['signature-input']))?.[1];
    expect(nonce(first!.headers)).toBeDefined();
    expect(nonce(first!.headers)).not.toBe(nonce(second!.headers));
  });

  it('an ack that names another digest is no ack (retryable API_UNEXPECTED_BODY)', async () => {
    reply = () => ({ status: 201, body: formatInboxAck({ digest: `sha256:${'0'.repeat(64)}`, stored: 'created' }) });
    const c = client();
    expect(await c.putBundle(digest, bytes)).toEqual({ kind: 'retry', code: 'API_UNEXPECTED_BODY', status: 201 });
    await c.close();
  });

  it('an ack that contradicts its status (201 but "existing") is no ack', async () => {
    reply = (d) => ({ status: 201, body: formatInboxAck({ digest: d, stored: 'existing' }) });
    const c = client();
    expect(await c.putBundle(digest, bytes)).toMatchObject({ kind: 'retry', code: 'API_UNEXPECTED_BODY' });
    await c.close();
  });

  it('201 "created" and 200 "existing" for these bytes are acks', async () => {
    const c = client();
    reply = (d) => ({ status: 201, body: formatInboxAck({ digest: d, stored: 'created' }) });
    expect(await c.putBundle(digest, bytes)).toEqual({ kind: 'ok', status: 201, value: { digest, stored: 'created' } });
    reply = (d) => ({ status: 200, body: formatInboxAck({ digest: d, stored: 'existing' }) });
    expect(await c.putRejection(digest, bytes)).toEqual({ kind: 'ok', status: 200, value: { digest, stored: 'existing' } });
    await c.close();
  });

  it('a coordinator that is not listening is a retryable API_NETWORK', async () => {
    const c = new CoordinatorClient({
      settings: { ...DEFAULT_CONFIG.coordinator, url: 'http://127.0.0.1:9' },
      runnerId: 'runner-1',
      key: PrivateKey.generate(),
    });
    expect(await c.putBundle(digest, bytes)).toEqual({ kind: 'retry', code: 'API_NETWORK' });
    await c.close();
  });

  it('a request that outlives requestTimeoutMs is a retryable API_TIMEOUT', async () => {
    const slow = createServer(() => {}); // never answers
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', () => resolve()));
    const port = (slow.address() as AddressInfo).port;
    const c = new CoordinatorClient({
      settings: { ...DEFAULT_CONFIG.coordinator, url: `http://127.0.0.1:${port}`, requestTimeoutMs: 200 },
      runnerId: 'runner-1',
      key: PrivateKey.generate(),
    });
    expect(await c.putBundle(digest, bytes)).toEqual({ kind: 'retry', code: 'API_TIMEOUT' });
    await c.destroy();
    slow.closeAllConnections();
    await new Promise((resolve) => slow.close(resolve));
  });
});
