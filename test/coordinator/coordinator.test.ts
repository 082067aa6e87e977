/**
 * The reference coordinator through its real CLI: `init` a state folder, `serve` on 127.0.0.1 port 0 with a
 * real SQLite file, and every /v1 route's answers (success and each refusal with its code), with requests
 * signed as the runner (RFC 9421) and operator bearer tokens.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../runner/core/digest.js';
import { signEnvelope } from '../../runner/core/dsse.js';
import { formatBundle, type Bundle } from '../../runner/evidence/bundle.js';
import { IN_TOTO_PAYLOAD_TYPE } from '../../runner/evidence/statement.js';
import { signRequest } from '../../runner/protocol/http-signature.js';
import { execInState } from '../helpers/runner.js';
import {
  bearer,
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
let base: string;
const bundles: Buffer[] = [];

const capsuleBytes = (patch: Parameters<CoordinatorWorld['world']['capsule']>[0] = {}) => Buffer.from(JSON.stringify(cw.world.capsule(patch)));
const hexOf = (bytes: Buffer) => sha256Hex(bytes);
const db = () => new DatabaseSync(join(cw.stateDir, 'coordinator.db'), { readOnly: true });
const count = (sql: string, ...params: string[]) => {
  const d = db();
  try {
    return Number((d.prepare(sql).get(...params) as { n: number }).n);
  } finally {
    d.close();
  }
};
const publish = (bytes: Buffer) => call(`${base}/v1/capsules`, { method: 'POST', headers: bearer(cw.token), body: bytes });
const statusReport = (labels: string[]) =>
  JSON.stringify({ version: '0.1.0', labels, trustVersion: 1, logSize: 4, witnessedSize: 0, outboxDepth: 2, oldestQueuedSeconds: 7, deadLetters: 0 });

beforeAll(async () => {
  cw = makeCoordinatorWorld();
  // Three real bundles from the real runner (a completed run each).
  for (let i = 0; i < 3; i++) {
    const outcome = await execInState(cw.world.stateDir, capsuleBytes());
    if (outcome.kind !== 'completed') throw new Error(`setup run was ${outcome.kind}`);
    bundles.push(Buffer.from(formatBundle(outcome.bundle)));
  }
  initCoordinator(cw);
  coordinator = await startCoordinator(cw.stateDir);
  base = coordinator.url;
});

afterAll(async () => {
  await coordinator?.stop();
  cw?.world.cleanup();
});

describe('routing', () => {
  it('answers an unknown path with 404 PROTOCOL_NOT_FOUND', async () => {
    const answer = await call(`${base}/v1/nothing-here`);
    expect(answer.status).toBe(404);
    expect(answer.json()).toMatchObject({ code: 'PROTOCOL_NOT_FOUND' });
  });

  it('answers HEAD and unknown methods with 405 PROTOCOL_METHOD_NOT_ALLOWED and the allowed methods', async () => {
    const head = await call(`${base}/v1/trust`, { method: 'HEAD' });
    expect(head.status).toBe(405);
    expect(head.headers.allow).toBe('GET');
    const del = await call(`${base}/v1/bundles/${'0'.repeat(64)}`, { method: 'DELETE' });
    expect(del.status).toBe(405);
    expect(del.json()).toMatchObject({ code: 'PROTOCOL_METHOD_NOT_ALLOWED' });
    expect(del.headers.allow).toBe('PUT, GET');
  });

  it('serves the trust document to a signed runner and to an operator, byte for byte', async () => {
    const signed = await signedCall(`${base}/v1/trust`, cw.world.runnerKey);
    expect(signed.status).toBe(200);
    expect(signed.body.equals(cw.trustBytes)).toBe(true);
    const operator = await call(`${base}/v1/trust`, { headers: bearer(cw.token) });
    expect(operator.body.equals(cw.trustBytes)).toBe(true);
  });
});

describe('runner request signatures', () => {
  it('a request without a signature is refused with 401 PROTOCOL_SIGNATURE_MISSING', async () => {
    const answer = await call(`${base}/v1/trust`);
    expect(answer.status).toBe(401);
    expect(answer.json()).toMatchObject({ code: 'PROTOCOL_SIGNATURE_MISSING' });
  });

  it('a request whose nonce was seen before is refused with PROTOCOL_NONCE_REPLAYED', async () => {
    const nonce = 'AAAAAAAAAAAAAAAAAAAAAAreplay';
    const first = await signedCall(`${base}/v1/trust`, cw.world.runnerKey, { nonce });
    expect(first.status).toBe(200);
    const second = await signedCall(`${base}/v1/trust`, cw.world.runnerKey, { nonce });
    expect(second.status).toBe(401);
    expect(second.json()).toMatchObject({ code: 'PROTOCOL_NONCE_REPLAYED' });
  });

  it('a replayed request (same headers, byte for byte) is refused with PROTOCOL_NONCE_REPLAYED', async () => {
    const url = `${base}/v1/trust`;
    const { signRequest } = await import('../../runner/protocol/http-signature.js');
    const headers = await signRequest({ method: 'GET', url }, cw.world.runnerKey, { now: new Date() });
    expect((await call(url, { headers })).status).toBe(200);
    const again = await call(url, { headers });
    expect(again.status).toBe(401);
    expect(again.json().code).toBe('PROTOCOL_NONCE_REPLAYED');
  });

  it('a runner id in the path that is not the signing key name is refused with 403 PROTOCOL_RUNNER_MISMATCH', async () => {
    const answer = await signedCall(`${base}/v1/runners/${cw.otherRunnerId}/work?wait=0`, cw.world.runnerKey);
    expect(answer.status).toBe(403);
    expect(answer.json()).toMatchObject({ code: 'PROTOCOL_RUNNER_MISMATCH' });
  });

  it('a key the trust document does not list is refused with 401 PROTOCOL_UNKNOWN_KEY', async () => {
    const answer = await signedCall(`${base}/v1/trust`, cw.world.outsider);
    expect(answer.status).toBe(401);
    expect(answer.json().code).toBe('PROTOCOL_UNKNOWN_KEY');
  });

  it('a capsule-signer key signing as a runner is refused with 403 PROTOCOL_KEY_ROLE', async () => {
    const answer = await signedCall(`${base}/v1/trust`, cw.world.signers[0]!);
    expect(answer.status).toBe(403);
    expect(answer.json().code).toBe('PROTOCOL_KEY_ROLE');
  });

  it('a signature that has expired is refused with 401 PROTOCOL_EXPIRED', async () => {
    const answer = await signedCall(`${base}/v1/trust`, cw.world.runnerKey, { now: new Date(Date.now() - 120_000) });
    expect(answer.status).toBe(401);
    expect(answer.json().code).toBe('PROTOCOL_EXPIRED');
  });

  it('a signature made for another coordinator URL is refused with 401 PROTOCOL_SIGNATURE_INVALID', async () => {
    const { signRequest } = await import('../../runner/protocol/http-signature.js');
    const headers = await signRequest({ method: 'GET', url: 'https://elsewhere.example/v1/trust' }, cw.world.runnerKey, { now: new Date() });
    const answer = await call(`${base}/v1/trust`, { headers });
    expect(answer.status).toBe(401);
    expect(answer.json().code).toBe('PROTOCOL_SIGNATURE_INVALID');
  });

  it('a body that is not the one the Content-Digest names is refused with 400 PROTOCOL_DIGEST_MISMATCH', async () => {
    const { signRequest } = await import('../../runner/protocol/http-signature.js');
    const url = `${base}/v1/runners/${cw.world.runnerId}/status`;
    const headers = await signRequest({ method: 'PUT', url, body: Buffer.from(statusReport(['test'])) }, cw.world.runnerKey, { now: new Date() });
    const answer = await call(url, { method: 'PUT', headers, body: statusReport(['other']) });
    expect(answer.status).toBe(400);
    expect(answer.json().code).toBe('PROTOCOL_DIGEST_MISMATCH');
  });
});

describe('operator credentials', () => {
  it('an operator endpoint without a token is refused with 401 OPERATOR_UNAUTHORIZED and a Bearer challenge', async () => {
    const answer = await call(`${base}/v1/runners`);
    expect(answer.status).toBe(401);
    expect(answer.json().code).toBe('OPERATOR_UNAUTHORIZED');
    expect(answer.headers['www-authenticate']).toMatch(/^Bearer /);
  });

  it('a wrong token is refused with 401 OPERATOR_UNAUTHORIZED', async () => {
    const answer = await call(`${base}/v1/runners`, { headers: bearer(`${cw.token}x`) });
    expect(answer.status).toBe(401);
    expect(answer.json().code).toBe('OPERATOR_UNAUTHORIZED');
  });

  it('a runner signature does not open an operator endpoint (401 OPERATOR_UNAUTHORIZED)', async () => {
    const answer = await signedCall(`${base}/v1/bundles`, cw.world.runnerKey);
    expect(answer.status).toBe(401);
    expect(answer.json().code).toBe('OPERATOR_UNAUTHORIZED');
  });

  it('the token itself is nowhere in coordinator.json, only its SHA-256', () => {
    const config = readFileSync(join(cw.stateDir, 'coordinator.json'), 'utf8');
    expect(config).not.toContain(cw.token);
    expect(JSON.parse(config).operators[0].tokenSha256).toBe(sha256Hex(Buffer.from(cw.token)));
  });
});

describe('publishing capsules (POST /v1/capsules)', () => {
  it('stores a verified capsule (201 with its digest and cursor), 200 with the same cursor when published again', async () => {
    const bytes = capsuleBytes({ target: { runners: ['nobody'] } });
    const first = await publish(bytes);
    expect(first.status).toBe(201);
    expect(first.json()).toEqual({ capsule: `sha256:${hexOf(bytes)}`, cursor: expect.any(Number) });
    const again = await publish(bytes);
    expect(again.status).toBe(200);
    expect(again.json().cursor).toBe(first.json().cursor);
    expect(count('SELECT COUNT(*) AS n FROM capsules WHERE digest = ?', `sha256:${hexOf(bytes)}`)).toBe(1);
  });

  it('a capsule signed by a key that is not a capsule signer is refused with 422 CAPSULE_SIGNATURE_INVALID', async () => {
    const bytes = Buffer.from(JSON.stringify(cw.world.capsule({}, {}, [cw.world.outsider])));
    const answer = await publish(bytes);
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('CAPSULE_SIGNATURE_INVALID');
  });

  it('a capsule file that is not JSON is refused with 422 CAPSULE_UNPARSEABLE', async () => {
    const answer = await publish(Buffer.from('{"mediaType":'));
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('CAPSULE_UNPARSEABLE');
  });

  it('an expired capsule is refused with 422 CAPSULE_EXPIRED', async () => {
    const past = new Date(Date.now() - 3600_000).toISOString();
    const answer = await publish(capsuleBytes({ issuedAt: past, notBefore: past, expiresAt: new Date(Date.now() - 1000).toISOString() }));
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('CAPSULE_EXPIRED');
  });

  it('a capsule whose kind the trust policy does not allow is refused with 422 CAPSULE_POLICY', async () => {
    const manifest = JSON.parse(JSON.stringify(cw.world.capsule()));
    const payload = JSON.parse(Buffer.from(manifest.envelope.payload, 'base64').toString());
    payload.kind = 'remediate';
    payload.change = { target: 'ledger-service', files: [{ path: 'config/ledger.conf', action: 'delete' }] };
    const envelope = signEnvelope(manifest.envelope.payloadType, Buffer.from(JSON.stringify(payload)), [cw.world.signers[0]!]);
    const answer = await publish(Buffer.from(JSON.stringify({ ...manifest, envelope })));
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('CAPSULE_POLICY');
  });

  it('a capsule whose input bytes were altered after signing is refused with 422 CAPSULE_INPUT_DIGEST, and not stored', async () => {
    const file = JSON.parse(JSON.stringify(cw.world.capsule({}, { 'data/ledger.csv': 'account,amount\nA,2500\n' })));
    const [ref] = Object.keys(file.blobs);
    file.blobs[ref!] = Buffer.from('account,amount\nA,9500\n').toString('base64');
    const bytes = Buffer.from(JSON.stringify(file));
    const answer = await publish(bytes);
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('CAPSULE_INPUT_DIGEST');
    expect(count('SELECT COUNT(*) AS n FROM capsules WHERE digest = ?', `sha256:${hexOf(bytes)}`)).toBe(0);
  });

  it('a capsule carrying a blob no signed input names is refused with 422 CAPSULE_BLOB_UNREFERENCED', async () => {
    const file = JSON.parse(JSON.stringify(cw.world.capsule()));
    file.blobs[`sha256:${'ab'.repeat(32)}`] = Buffer.from('unsigned rider').toString('base64');
    const answer = await publish(Buffer.from(JSON.stringify(file)));
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('CAPSULE_BLOB_UNREFERENCED');
  });

  it("a capsule targeted at another runner is still published (the target is each runner's check)", async () => {
    const answer = await publish(capsuleBytes({ target: { runners: ['someone-else'] } }));
    expect(answer.status).toBe(201);
  });

  it('publishing needs an operator token (401 OPERATOR_UNAUTHORIZED)', async () => {
    const answer = await call(`${base}/v1/capsules`, { method: 'POST', body: capsuleBytes() });
    expect(answer.status).toBe(401);
    expect(answer.json().code).toBe('OPERATOR_UNAUTHORIZED');
  });

  it('serves a published capsule by digest to a signed runner and to an operator; 404 FEED_CAPSULE_NOT_FOUND otherwise', async () => {
    const bytes = capsuleBytes({ target: { runners: ['nobody'] } });
    await publish(bytes);
    const runner = await signedCall(`${base}/v1/capsules/${hexOf(bytes)}`, cw.world.runnerKey);
    expect(runner.status).toBe(200);
    expect(runner.body.equals(bytes)).toBe(true);
    const operator = await call(`${base}/v1/capsules/${hexOf(bytes)}`, { headers: bearer(cw.token) });
    expect(operator.body.equals(bytes)).toBe(true);
    const missing = await signedCall(`${base}/v1/capsules/${'a'.repeat(64)}`, cw.world.runnerKey);
    expect(missing.status).toBe(404);
    expect(missing.json().code).toBe('FEED_CAPSULE_NOT_FOUND');
  });
});

describe('status reports (PUT /v1/runners/{id}/status)', () => {
  it('stores the numbers and labels a runner reports (204), shown in the fleet view', async () => {
    const answer = await signedCall(`${base}/v1/runners/${cw.world.runnerId}/status`, cw.world.runnerKey, {
      method: 'PUT',
      body: statusReport(['test', 'eu']),
    });
    expect(answer.status).toBe(204);
    const fleet = await call(`${base}/v1/runners`, { headers: bearer(cw.token) });
    const me = fleet.json().runners.find((r: any) => r.id === cw.world.runnerId);
    expect(me).toMatchObject({
      keyid: cw.world.runnerKey.keyid,
      version: '0.1.0',
      labels: ['eu', 'test'],
      logSize: 4,
      outboxDepth: 2,
      oldestQueuedSeconds: 7,
    });
    expect(me.lastSeen).toMatch(/^\d{4}-/);
    const other = fleet.json().runners.find((r: any) => r.id === cw.otherRunnerId);
    expect(other).toMatchObject({ enrolled: true, lastSeen: null, forks: 0 });
  });

  it('a report that does not match its schema is refused with 400 PROTOCOL_BODY_SCHEMA', async () => {
    const answer = await signedCall(`${base}/v1/runners/${cw.world.runnerId}/status`, cw.world.runnerKey, {
      method: 'PUT',
      body: JSON.stringify({ version: '0.1.0', labels: [], hostname: 'db-prod-7' }),
    });
    expect(answer.status).toBe(400);
    expect(answer.json().code).toBe('PROTOCOL_BODY_SCHEMA');
  });

  it('a report over the 8 KiB cap is refused with 413 PROTOCOL_BODY_TOO_LARGE', async () => {
    const answer = await signedCall(`${base}/v1/runners/${cw.world.runnerId}/status`, cw.world.runnerKey, {
      method: 'PUT',
      body: Buffer.alloc(8 * 1024 + 1, 0x20),
    });
    expect(answer.status).toBe(413);
    expect(answer.json().code).toBe('PROTOCOL_BODY_TOO_LARGE');
  });
});

describe('the work feed (GET /v1/runners/{id}/work)', () => {
  const work = (runnerKey = cw.world.runnerKey, id = cw.world.runnerId, query = 'after=0&wait=0') =>
    signedCall(`${base}/v1/runners/${id}/work?${query}`, runnerKey);

  it('lists the capsules addressed to the runner by id or by a label it reported, in cursor order, with the trust version', async () => {
    const byLabel = capsuleBytes({ target: { labels: ['eu'] } });
    const byId = capsuleBytes({ target: { runners: [cw.world.runnerId] } });
    const notMine = capsuleBytes({ target: { labels: ['us'], runners: [cw.otherRunnerId] } });
    const cursors = [];
    for (const bytes of [byLabel, notMine, byId]) cursors.push((await publish(bytes)).json().cursor);
    const answer = await work(undefined, undefined, `after=${cursors[0] - 1}&wait=0`);
    expect(answer.status).toBe(200);
    expect(answer.json()).toEqual({
      items: [
        { cursor: cursors[0], capsule: `sha256:${hexOf(byLabel)}`, size: byLabel.length },
        { cursor: cursors[2], capsule: `sha256:${hexOf(byId)}`, size: byId.length },
      ],
      cursor: cursors[2],
      trust: { version: 1 },
    });
    const other = await work(cw.otherRunnerKey, cw.otherRunnerId, `after=${cursors[0] - 1}&wait=0`);
    expect(other.json().items.map((i: any) => i.cursor)).toEqual([cursors[1]]);
  });

  it('answers 204 at once with wait=0 when nothing is after the cursor', async () => {
    const latest = (await work()).json().cursor;
    const answer = await work(undefined, undefined, `after=${latest}&wait=0`);
    expect(answer.status).toBe(204);
  });

  it('a long poll answers within a second of a publish that targets the runner', async () => {
    const latest = (await work()).json().cursor;
    const started = Date.now();
    const poll = work(undefined, undefined, `after=${latest}&wait=20`);
    await new Promise((r) => setTimeout(r, 300));
    const bytes = capsuleBytes({ target: { runners: [cw.world.runnerId] } });
    const publishedAt = Date.now();
    await publish(bytes);
    const answer = await poll;
    expect(answer.status).toBe(200);
    expect(answer.json().items.map((i: any) => i.capsule)).toEqual([`sha256:${hexOf(bytes)}`]);
    expect(Date.now() - publishedAt).toBeLessThan(1000);
    expect(publishedAt - started).toBeGreaterThanOrEqual(250);
  });

  it('a long poll is not woken by a publish for another runner, and answers 204 at its deadline', async () => {
    const latest = (await work()).json().cursor;
    const started = Date.now();
    const poll = work(undefined, undefined, `after=${latest}&wait=2`);
    await new Promise((r) => setTimeout(r, 200));
    await publish(capsuleBytes({ target: { runners: [cw.otherRunnerId] } }));
    const answer = await poll;
    expect(answer.status).toBe(204);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(1900);
    expect(took).toBeLessThan(4000);
  });

  it('a wait over 60 seconds or a cursor that is not a number is refused with 400 FEED_BAD_QUERY', async () => {
    for (const query of ['wait=61', 'after=-1', 'after=abc', 'after=1&after=2', 'cursor=1']) {
      const answer = await work(undefined, undefined, query);
      expect(answer.status, query).toBe(400);
      expect(answer.json().code).toBe('FEED_BAD_QUERY');
    }
  });
});

describe('the evidence inbox (PUT /v1/bundles/{sha256})', () => {
  const put = (bytes: Buffer, key = cw.world.runnerKey, hex = hexOf(bytes)) =>
    signedCall(`${base}/v1/bundles/${hex}`, key, { method: 'PUT', body: bytes });

  it('stores a verified bundle once: 201 created, then 200 existing for the same bytes, one row', async () => {
    const bytes = bundles[0]!;
    const first = await put(bytes);
    expect(first.status).toBe(201);
    expect(first.json()).toEqual({ digest: `sha256:${hexOf(bytes)}`, stored: 'created' });
    const second = await put(bytes);
    expect(second.status).toBe(200);
    expect(second.json()).toEqual({ digest: `sha256:${hexOf(bytes)}`, stored: 'existing' });
    expect(count('SELECT COUNT(*) AS n FROM bundles WHERE digest = ?', `sha256:${hexOf(bytes)}`)).toBe(1);
  });

  it('two concurrent PUTs of one bundle store it once (one 201, one 200)', async () => {
    const bytes = bundles[1]!;
    const answers = await Promise.all([put(bytes), put(bytes)]);
    expect(answers.map((a) => a.status).sort()).toEqual([200, 201]);
    expect(count('SELECT COUNT(*) AS n FROM bundles WHERE digest = ?', `sha256:${hexOf(bytes)}`)).toBe(1);
  });

  it('a body whose SHA-256 is not the one in the path is refused with 422 INBOX_DIGEST_MISMATCH', async () => {
    const answer = await put(bundles[2]!, cw.world.runnerKey, 'b'.repeat(64));
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('INBOX_DIGEST_MISMATCH');
  });

  it('a bundle that does not verify against the trust document is refused with 422 and its BUNDLE_* code, and not stored', async () => {
    const bundle = JSON.parse(bundles[2]!.toString()) as Bundle;
    const statement = JSON.parse(Buffer.from(bundle.evidence.payload, 'base64').toString());
    const forged = Buffer.from(
      formatBundle({ ...bundle, evidence: signEnvelope(IN_TOTO_PAYLOAD_TYPE, Buffer.from(JSON.stringify(statement)), [cw.world.outsider]) }),
    );
    const answer = await put(forged);
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('BUNDLE_UNKNOWN_RUNNER');
    const respelt = Buffer.from(JSON.stringify(bundle));
    const second = await put(respelt);
    expect(second.status).toBe(422);
    expect(second.json().code).toBe('BUNDLE_NOT_CANONICAL');
    expect(count('SELECT COUNT(*) AS n FROM bundles WHERE digest IN (?, ?)', `sha256:${hexOf(forged)}`, `sha256:${hexOf(respelt)}`)).toBe(0);
  });

  it('a bundle sent by another runner than the one that signed it is refused with 403 INBOX_RUNNER_MISMATCH', async () => {
    const answer = await put(bundles[2]!, cw.otherRunnerKey);
    expect(answer.status).toBe(403);
    expect(answer.json().code).toBe('INBOX_RUNNER_MISMATCH');
    // Also when the bundle is already stored: another runner cannot claim it.
    const stored = await put(bundles[0]!, cw.otherRunnerKey);
    expect(stored.status).toBe(403);
    expect(stored.json().code).toBe('INBOX_RUNNER_MISMATCH');
  });

  it('a Content-Length over the 8 MiB bundle cap is refused with 413 before a byte of the body is read', async () => {
    // Headers only: the server must answer without waiting for the 8 MiB it was promised.
    const url = new URL(`${base}/v1/bundles/${'c'.repeat(64)}`);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(url.port), url.hostname, () => {
        socket.write(`PUT ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: ${8 * 1024 * 1024 + 1}\r\n\r\n`);
      });
      let text = '';
      socket.on('data', (c) => (text += c.toString()));
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
      setTimeout(() => {
        socket.destroy();
        resolve(text);
      }, 5000);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(answer).toContain('"code":"PROTOCOL_BODY_TOO_LARGE"');
  });

  it('a client that asks first (Expect: 100-continue) with a length over the cap gets 413 and no 100 Continue', async () => {
    const url = new URL(`${base}/v1/bundles/${'c'.repeat(64)}`);
    const ask = (length: number, signed: Record<string, string> = {}) =>
      new Promise<string>((resolve, reject) => {
        const extra = Object.entries(signed)
          .map(([name, value]) => `${name}: ${value}\r\n`)
          .join('');
        const socket = connect(Number(url.port), url.hostname, () => {
          socket.write(`PUT ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nExpect: 100-continue\r\nContent-Length: ${length}\r\n${extra}\r\n`);
        });
        let text = '';
        socket.on('data', (c) => {
          text += c.toString();
          if (text.startsWith('HTTP/1.1 100 ')) socket.destroy();
        });
        socket.on('close', () => resolve(text));
        socket.on('error', reject);
        setTimeout(() => socket.destroy(), 5000);
      });
    const refused = await ask(8 * 1024 * 1024 + 1);
    expect(refused).toMatch(/^HTTP\/1\.1 413 /);
    expect(refused).not.toContain('100 Continue');
    // Under the cap the route does ask for the body, once the request's signature has verified.
    const signed = await signRequest({ method: 'PUT', url: url.href, body: Buffer.alloc(1024, 0x20) }, cw.world.runnerKey, { now: new Date() });
    expect(await ask(1024, signed)).toMatch(/^HTTP\/1\.1 100 Continue/);
  });

  it('a chunked body that grows past the cap is cut there (413 or a closed connection), and nothing is stored', async () => {
    const big = Buffer.alloc(8 * 1024 * 1024 + 4096, 0x20);
    const hex = hexOf(big);
    const result = await signedCall(`${base}/v1/bundles/${hex}`, cw.world.runnerKey, {
      method: 'PUT',
      body: big,
      headers: { 'transfer-encoding': 'chunked' },
    }).then(
      (a) => a.status,
      (err: Error) => err.message,
    );
    if (typeof result === 'number') expect(result).toBe(413);
    else expect(result).toMatch(/EPIPE|ECONNRESET|socket hang up/);
    expect(count('SELECT COUNT(*) AS n FROM bundles WHERE digest = ?', `sha256:${hex}`)).toBe(0);
  });
});

describe('reading evidence (operator)', () => {
  it('lists bundles with filters on runner, capsule, verdict and since', async () => {
    const all = await call(`${base}/v1/bundles`, { headers: bearer(cw.token) });
    expect(all.status).toBe(200);
    const items = all.json().items;
    expect(items.map((i: any) => i.digest).sort()).toEqual([bundles[0]!, bundles[1]!].map((b) => `sha256:${hexOf(b)}`).sort());
    expect(items[0]).toEqual({
      digest: expect.stringMatching(/^sha256:/),
      runner: cw.world.runnerId,
      capsuleId: expect.any(String),
      manifestDigest: expect.stringMatching(/^sha256:/),
      verdict: 'pass',
      receivedAt: expect.stringMatching(/^\d{4}-/),
    });
    const q = async (query: string) => (await call(`${base}/v1/bundles?${query}`, { headers: bearer(cw.token) })).json().items.length;
    expect(await q(`runner=${cw.world.runnerId}`)).toBe(2);
    expect(await q(`runner=${cw.otherRunnerId}`)).toBe(0);
    expect(await q(`capsule=${items[0].capsuleId}`)).toBe(1);
    expect(await q(`capsule=${encodeURIComponent(items[0].manifestDigest)}`)).toBe(1);
    expect(await q('verdict=pass&limit=1')).toBe(1);
    expect(await q('verdict=fail')).toBe(0);
    expect(await q(`since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).toBe(0);
  });

  it('a list query with an unknown parameter or a bad time is refused with 400 OPERATOR_BAD_QUERY', async () => {
    for (const query of ['color=red', 'since=yesterday', 'limit=0', 'limit=1001']) {
      const answer = await call(`${base}/v1/bundles?${query}`, { headers: bearer(cw.token) });
      expect(answer.status, query).toBe(400);
      expect(answer.json().code).toBe('OPERATOR_BAD_QUERY');
    }
  });

  it('serves a stored bundle byte for byte, and 404 INBOX_NOT_FOUND for one never received', async () => {
    const answer = await call(`${base}/v1/bundles/${hexOf(bundles[0]!)}`, { headers: bearer(cw.token) });
    expect(answer.status).toBe(200);
    expect(answer.body.equals(bundles[0]!)).toBe(true);
    const missing = await call(`${base}/v1/bundles/${hexOf(bundles[2]!)}`, { headers: bearer(cw.token) });
    expect(missing.status).toBe(404);
    expect(missing.json().code).toBe('INBOX_NOT_FOUND');
  });
});
