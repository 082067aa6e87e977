/**
 * Review attacks on the coordinator's front door, through the real `serve` on 127.0.0.1: what an
 * unauthenticated client on its port, a client that lies in its Host header, and an enrolled (hostile) runner
 * with many connections can make it do before any document is judged.
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signRequest } from '../../runner/protocol/http-signature.js';
import {
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
let base: URL;
const sockets: Socket[] = [];

beforeAll(async () => {
  cw = makeCoordinatorWorld();
  initCoordinator(cw);
  coordinator = await startCoordinator(cw.stateDir);
  base = new URL(coordinator.url);
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await coordinator?.stop();
  cw?.world.cleanup();
});

/** Opens a raw connection, writes `head` (and `body`), and resolves with what came back within `waitMs`. */
function raw(head: string, body: Buffer = Buffer.alloc(0), waitMs = 3000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    let text = '';
    let closed = false;
    const socket = connect(Number(base.port), base.hostname, () => {
      socket.write(head);
      if (body.length > 0) socket.write(body);
    });
    sockets.push(socket);
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    socket.on('close', () => {
      closed = true;
      resolve({ text, closed });
    });
    socket.on('error', reject);
    setTimeout(() => resolve({ text, closed }), waitMs);
  });
}

/** Request head lines for a PUT of `length` bytes, with extra header lines. */
const putHead = (path: string, length: number, headers: Record<string, string> = {}) =>
  `PUT ${path} HTTP/1.1\r\nHost: ${base.host}\r\nContent-Length: ${length}\r\n${Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('')}\r\n`;

describe('bodies are read only for requests whose signature verified', () => {
  it('attack: an unsigned PUT that promises 8 MiB and sends 1 KiB is refused at once with 401, and its connection closed', async () => {
    // On the old code the coordinator read (and held) the body before it looked at the signature, so this
    // client got no answer until it had sent the 8 MiB or the 300 s request timeout passed.
    const path = `/v1/bundles/${'a'.repeat(64)}`;
    const answer = await raw(putHead(path, 8 * 1024 * 1024 - 1), Buffer.alloc(1024, 0x20), 3000);
    expect(answer.text).toMatch(/^HTTP\/1\.1 401 /);
    expect(answer.text).toContain('"code":"PROTOCOL_SIGNATURE_MISSING"');
    expect(answer.text.toLowerCase()).toContain('connection: close');
  });

  it('attack: a PUT signed by a key the trust document does not list is refused before its body is read (401 PROTOCOL_UNKNOWN_KEY)', async () => {
    const { PrivateKey } = await import('../../runner/core/ed25519.js');
    const path = `/v1/bundles/${'b'.repeat(64)}`;
    const promised = Buffer.alloc(4 * 1024 * 1024, 0x20);
    const headers = await signRequest({ method: 'PUT', url: `${coordinator.url}${path}`, body: promised }, PrivateKey.generate(), {
      now: new Date(),
    });
    const answer = await raw(putHead(path, promised.length, headers), Buffer.alloc(100, 0x20), 3000);
    expect(answer.text).toMatch(/^HTTP\/1\.1 401 /);
    expect(answer.text).toContain('"code":"PROTOCOL_UNKNOWN_KEY"');
  });

  it('a signed PUT whose body is not the one its Content-Digest names is still refused with 400 PROTOCOL_DIGEST_MISMATCH', async () => {
    const url = `${coordinator.url}/v1/runners/${cw.world.runnerId}/status`;
    const headers = await signRequest({ method: 'PUT', url, body: Buffer.from('{"a":1}') }, cw.world.runnerKey, { now: new Date() });
    const answer = await call(url, { method: 'PUT', headers, body: '{"a":2}' });
    expect(answer.status).toBe(400);
    expect(answer.json().code).toBe('PROTOCOL_DIGEST_MISMATCH');
  });

  it('attack: one runner holding 4 slow uploads open gets 503 PROTOCOL_BUSY with Retry-After for a fifth, and is served again once they end', async () => {
    const path = `/v1/bundles/${'c'.repeat(64)}`;
    const promised = Buffer.alloc(1024 * 1024, 0x20);
    const slow: Promise<{ text: string; closed: boolean }>[] = [];
    for (let i = 0; i < 4; i++) {
      const headers = await signRequest({ method: 'PUT', url: `${coordinator.url}${path}`, body: promised }, cw.world.runnerKey, { now: new Date() });
      // Headers and a few bytes: the upload stays open, its read holds a slot.
      slow.push(raw(putHead(path, promised.length, headers), Buffer.alloc(10, 0x20), 4000));
    }
    await new Promise((r) => setTimeout(r, 500));
    const fifth = await signedCall(`${coordinator.url}${path}`, cw.world.runnerKey, { method: 'PUT', body: promised });
    expect(fifth.status).toBe(503);
    expect(fifth.json().code).toBe('PROTOCOL_BUSY');
    expect(fifth.headers['retry-after']).toBe('1');
    // Another runner is not held up by this one's uploads.
    const other = await signedCall(`${coordinator.url}${path}`, cw.otherRunnerKey, { method: 'PUT', body: promised });
    expect(other.status).toBe(422);
    expect(other.json().code).toBe('INBOX_DIGEST_MISMATCH');
    for (const socket of sockets.splice(0)) socket.destroy();
    await Promise.all(slow);
    await new Promise((r) => setTimeout(r, 200));
    const again = await signedCall(`${coordinator.url}${path}`, cw.world.runnerKey, { method: 'PUT', body: promised });
    expect(again.json().code).toBe('INBOX_DIGEST_MISMATCH');
  });
});

describe('the @target-uri without a public URL', () => {
  it("attack: a request signed for another coordinator, replayed here with that coordinator's Host, is refused with 421 PROTOCOL_MISDIRECTED", async () => {
    // The runner key is trusted by two coordinators; a request it signed for the other one (same port here,
    // another host name) is sent to this one with the Host header the signature expects.
    const elsewhere = `http://coordinator-b.example:${base.port}/v1/trust`;
    const headers = await signRequest({ method: 'GET', url: elsewhere }, cw.world.runnerKey, { now: new Date() });
    const answer = await call(`${coordinator.url}/v1/trust`, { headers: { ...headers, host: `coordinator-b.example:${base.port}` } });
    expect(answer.status).toBe(421);
    expect(answer.json().code).toBe('PROTOCOL_MISDIRECTED');
  });

  it('attack: a request signed for another loopback coordinator (another port) is refused with 421 PROTOCOL_MISDIRECTED', async () => {
    const otherPort = Number(base.port) === 65535 ? 65534 : Number(base.port) + 1;
    const elsewhere = `http://127.0.0.1:${otherPort}/v1/trust`;
    const headers = await signRequest({ method: 'GET', url: elsewhere }, cw.world.runnerKey, { now: new Date() });
    const answer = await call(`${coordinator.url}/v1/trust`, { headers: { ...headers, host: `127.0.0.1:${otherPort}` } });
    expect(answer.status).toBe(421);
  });

  it('a request signed for this coordinator by its loopback address or localhost verifies', async () => {
    expect((await signedCall(`${coordinator.url}/v1/trust`, cw.world.runnerKey)).status).toBe(200);
    expect((await signedCall(`http://localhost:${base.port}/v1/trust`, cw.world.runnerKey)).status).toBe(200);
  });

  it('serve refuses a non-loopback address without --public-url (COORDINATOR_CONFIG)', async () => {
    const { runCoordinatorCli } = await import('./helpers.js');
    // TLS flags are given so that only the missing public URL is wrong (serve stops before reading them).
    const result = runCoordinatorCli([
      'serve',
      '--state',
      cw.stateDir,
      '--listen',
      '0.0.0.0:0',
      '--tls-cert',
      '/nonexistent',
      '--tls-key',
      '/nonexistent',
    ]);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(/COORDINATOR_CONFIG/);
    expect(result.stderr).toMatch(/public-url/);
  });
});

describe('request targets', () => {
  it('attack: a percent-encoded runner id is not a second spelling of the runner (404, while the plain id answers)', async () => {
    const encoded = cw.world.runnerId.replace(/^r/, '%72');
    const alias = await signedCall(`${coordinator.url}/v1/runners/${encoded}/work?after=0&wait=0`, cw.world.runnerKey);
    expect(alias.status).toBe(404);
    const plain = await signedCall(`${coordinator.url}/v1/runners/${cw.world.runnerId}/work?after=0&wait=0`, cw.world.runnerKey);
    expect(plain.status).toBe(204);
  });
});

describe('long polls', () => {
  it('attack: a cursor past every capsule published (a restored or replaced database) is refused with 409 FEED_CURSOR_AHEAD, not answered 204 for ever', async () => {
    // On the old code this runner waited on cursor 5 while the next capsules published got cursors 1..5,
    // which it would never be offered: skipped in silence.
    const ahead = await signedCall(`${coordinator.url}/v1/runners/${cw.world.runnerId}/work?after=5&wait=0`, cw.world.runnerKey);
    expect(ahead.status).toBe(409);
    expect(ahead.json().code).toBe('FEED_CURSOR_AHEAD');
    const published = await call(`${coordinator.url}/v1/capsules`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cw.token}` },
      body: Buffer.from(JSON.stringify(cw.world.capsule({ target: { runners: [cw.otherRunnerId] } }))),
    });
    const { cursor } = published.json() as { cursor: number };
    const atLast = await signedCall(`${coordinator.url}/v1/runners/${cw.world.runnerId}/work?after=${cursor}&wait=0`, cw.world.runnerKey);
    expect(atLast.status).toBe(204);
  });

  it('attack: one runner opening 40 long polls keeps at most 4 waiting; the older ones are answered 204 at once', async () => {
    const url = `${coordinator.url}/v1/runners/${cw.world.runnerId}/work?after=0&wait=60`;
    const started = Date.now();
    const polls = Array.from({ length: 40 }, () => signedCall(url, cw.world.runnerKey, { timeoutMs: 70_000 }).then((a) => a.status));
    // Within 5 s at least 36 have been answered (204); on the old code all 40 waited the full 60 s.
    const early = await Promise.race([Promise.allSettled(polls), new Promise<'waiting'>((r) => setTimeout(() => r('waiting'), 5000))]);
    let answered = 0;
    for (const poll of polls) {
      const status = await Promise.race([poll, new Promise<'waiting'>((r) => setTimeout(() => r('waiting'), 10))]);
      if (status === 204) answered += 1;
    }
    expect(early === 'waiting' || Date.now() - started < 6000).toBe(true);
    expect(answered).toBeGreaterThanOrEqual(36);
    // The four still waiting are ended by the coordinator's shutdown in afterAll (or their own deadline).
  }, 20_000);
});
