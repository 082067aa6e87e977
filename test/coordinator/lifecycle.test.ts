/**
 * The coordinator's life outside the routes: `init` and what it refuses, the pinned trust document, TLS with
 * a CA and certificate made by openssl at test time, plain HTTP only on loopback, slow clients cut by the
 * header timeout, SIGTERM (waiting polls end with 204, exit 0), and the rejection inbox with a real signed
 * rejection of a real refused capsule.
 */
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../runner/core/digest.js';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { buildRejection } from '../../runner/evidence/rejection.js';
import { parseRecordLeaf } from '../../runner/log/record.js';
import { bundleLogFor } from '../../runner/agent/log.js';
import { Store } from '../../runner/store/store.js';
import { RUNNER_VERSION } from '../../runner/version.js';
import { makeTlsMaterial } from '../helpers/agent-link.js';
import { execInState } from '../helpers/runner.js';
import {
  bearer,
  call,
  initCoordinator,
  makeCoordinatorWorld,
  runCoordinatorCli,
  signedCall,
  startCoordinator,
  type CoordinatorWorld,
  type RunningCoordinator,
} from './helpers.js';

const errorOf = (stderr: string) => JSON.parse(stderr.trim().split('\n').at(-1)!).error as { code: string; message: string };

describe('init', () => {
  let cw: CoordinatorWorld;
  beforeAll(() => {
    cw = makeCoordinatorWorld();
  });
  afterAll(() => cw.world.cleanup());

  it('writes a readable coordinator.json that pins the trust document by SHA-256 and names the witness key', () => {
    initCoordinator(cw);
    const config = JSON.parse(readFileSync(join(cw.stateDir, 'coordinator.json'), 'utf8'));
    expect(config).toMatchObject({
      format: 'edge-runner-coordinator/v1',
      database: 'coordinator.db',
      trust: { file: 'trust.dsse.json', sha256: sha256Hex(cw.trustBytes), version: 1 },
      witness: { keyFile: cw.witnessKeyPath, keyid: cw.witnessKey.keyid, name: 'coordinator-witness' },
      operators: [{ name: 'operator', tokenSha256: sha256Hex(Buffer.from(cw.token)) }],
      listen: '127.0.0.1:8443',
      publicUrl: null,
      tls: null,
    });
    expect(readFileSync(join(cw.stateDir, 'trust.dsse.json')).equals(cw.trustBytes)).toBe(true);
  });

  it('refuses a state folder that is initialised already (COORDINATOR_CONFIG)', () => {
    const again = runCoordinatorCli(['init', '--state', cw.stateDir, '--trust', cw.trustPath, '--witness-key', cw.witnessKeyPath]);
    expect(again.status).toBe(2);
    expect(errorOf(again.stderr).code).toBe('COORDINATOR_CONFIG');
  });

  it('refuses a witness key that the trust document does not enrol under the witness role (COORDINATOR_CONFIG)', () => {
    const stray = join(cw.world.dir, 'stray.key.pem');
    writeFileSync(stray, PrivateKey.generate().toPem(), { mode: 0o600 });
    const result = runCoordinatorCli(['init', '--state', join(cw.world.dir, 'other'), '--trust', cw.trustPath, '--witness-key', stray]);
    expect(result.status).toBe(2);
    expect(errorOf(result.stderr)).toMatchObject({ code: 'COORDINATOR_CONFIG', message: expect.stringMatching(/witness role/) });
  });

  it('refuses a witness key file that group or others can read (COORDINATOR_CONFIG)', () => {
    const open = join(cw.world.dir, 'open.key.pem');
    writeFileSync(open, cw.witnessKey.toPem());
    chmodSync(open, 0o644);
    const result = runCoordinatorCli(['init', '--state', join(cw.world.dir, 'other2'), '--trust', cw.trustPath, '--witness-key', open]);
    expect(result.status).toBe(2);
    expect(errorOf(result.stderr).message).toMatch(/mode 0600/);
  });

  it('makes an operator token when none is given, in a 0600 file, and stores only its hash', () => {
    const dir = join(cw.world.dir, 'made-token');
    const result = runCoordinatorCli(['init', '--state', dir, '--trust', cw.trustPath, '--witness-key', cw.witnessKeyPath]);
    expect(result.status).toBe(0);
    const { operatorTokenFile } = JSON.parse(result.stdout);
    const token = readFileSync(operatorTokenFile, 'utf8').trim();
    expect(token.length).toBeGreaterThanOrEqual(43);
    const config = readFileSync(join(dir, 'coordinator.json'), 'utf8');
    expect(config).not.toContain(token);
    expect(JSON.parse(config).operators[0].tokenSha256).toBe(sha256Hex(Buffer.from(token)));
  });

  it('serve refuses a trust document changed behind its back (COORDINATOR_CONFIG)', async () => {
    const dir = join(cw.world.dir, 'tampered');
    expect(runCoordinatorCli(['init', '--state', dir, '--trust', cw.trustPath, '--witness-key', cw.witnessKeyPath]).status).toBe(0);
    writeFileSync(join(dir, 'trust.dsse.json'), cw.world.trustBytes);
    const result = runCoordinatorCli(['serve', '--state', dir, '--listen', '127.0.0.1:0']);
    expect(result.status).toBe(2);
    expect(errorOf(result.stderr)).toMatchObject({ code: 'COORDINATOR_CONFIG', message: expect.stringMatching(/pinned/) });
  });

  it('serve refuses plain HTTP on an address that is not loopback (COORDINATOR_CONFIG)', () => {
    const result = runCoordinatorCli(['serve', '--state', cw.stateDir, '--listen', '0.0.0.0:0']);
    expect(result.status).toBe(2);
    expect(errorOf(result.stderr)).toMatchObject({ code: 'COORDINATOR_CONFIG', message: expect.stringMatching(/loopback/) });
  });
});

describe('TLS', () => {
  let cw: CoordinatorWorld;
  let coordinator: RunningCoordinator;
  let ca: Buffer;
  let otherCa: Buffer;

  beforeAll(async () => {
    cw = makeCoordinatorWorld();
    const dir = cw.world.dir;
    // A CA, and a server certificate for 127.0.0.1 it signs; a second CA that signed nothing of ours.
    const material = makeTlsMaterial(dir, 'coordinator');
    ca = readFileSync(material.caFile);
    otherCa = readFileSync(makeTlsMaterial(dir, 'other').caFile);
    initCoordinator(cw, ['--tls-cert', join(dir, 'coordinator-server.pem'), '--tls-key', join(dir, 'coordinator-server.key')]);
    coordinator = await startCoordinator(cw.stateDir);
  });
  afterAll(async () => {
    await coordinator?.stop();
    cw?.world.cleanup();
  });

  it('serves HTTPS from the certificate and key files; a client that trusts the CA connects', async () => {
    expect(coordinator.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const answer = await call(`${coordinator.url}/v1/trust`, { headers: bearer(cw.token), ca });
    expect(answer.status).toBe(200);
    expect(answer.body.equals(cw.trustBytes)).toBe(true);
  });

  it('a runner request signed for the https URL verifies over TLS', async () => {
    const answer = await signedCall(`${coordinator.url}/v1/trust`, cw.world.runnerKey, { ca });
    expect(answer.status).toBe(200);
  });

  it('a client that does not trust the CA fails the handshake', async () => {
    const error = await call(`${coordinator.url}/v1/trust`, { headers: bearer(cw.token), ca: otherCa }).then(
      () => undefined,
      (err: NodeJS.ErrnoException) => err.code,
    );
    expect(error).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT/);
  });
});

describe('slow clients and shutdown', () => {
  let cw: CoordinatorWorld;
  let coordinator: RunningCoordinator;

  beforeAll(async () => {
    cw = makeCoordinatorWorld();
    initCoordinator(cw);
    // The header timeout, set short for this test through coordinator.json (what an operator would edit).
    const path = join(cw.stateDir, 'coordinator.json');
    const config = JSON.parse(readFileSync(path, 'utf8'));
    config.timeouts.headersSeconds = 1;
    writeFileSync(path, JSON.stringify(config, null, 2));
    coordinator = await startCoordinator(cw.stateDir);
  });
  afterAll(async () => {
    await coordinator?.stop();
    cw?.world.cleanup();
  });

  it('a client that sends its headers slower than headersTimeout is cut off (408, connection closed)', async () => {
    const url = new URL(coordinator.url);
    const started = Date.now();
    const text = await new Promise<string>((resolve) => {
      const socket = connect(Number(url.port), url.hostname, () => socket.write('GET /v1/trust HTTP/1.1\r\nHost: x\r\n'));
      let received = '';
      socket.on('data', (c) => (received += c.toString()));
      socket.on('close', () => resolve(received));
      socket.on('error', () => resolve(received));
      setTimeout(() => socket.destroy(), 8000);
    });
    expect(Date.now() - started).toBeLessThan(6000);
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('SIGTERM ends a waiting long poll with 204, stops, and exits 0', async () => {
    const poll = signedCall(`${coordinator.url}/v1/runners/${cw.world.runnerId}/work?after=0&wait=30`, cw.world.runnerKey);
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    const code = coordinator.stop();
    const answer = await poll;
    expect(answer.status).toBe(204);
    expect(await code).toBe(0);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe('the rejection inbox (PUT /v1/rejections/{sha256})', () => {
  let cw: CoordinatorWorld;
  let coordinator: RunningCoordinator;
  let rejection: { bytes: Buffer; digest: string };

  beforeAll(async () => {
    cw = makeCoordinatorWorld();
    // A real refusal: a capsule for a label this runner does not have, then the signed rejection of its record.
    const refused = await execInState(cw.world.stateDir, Buffer.from(JSON.stringify(cw.world.capsule({ target: { labels: ['elsewhere'] } }))));
    if (refused.kind !== 'rejected') throw new Error(`setup run was ${refused.kind}`);
    const store = Store.open(join(cw.world.stateDir, 'runner.db'));
    try {
      const record = [...store.records()].filter((r) => r.kind === 'capsule.rejected').at(-1)!;
      const body = parseRecordLeaf(record.leaf).body as {
        code: string;
        capsuleId?: string;
        manifestDigest?: string;
        fileDigest?: string;
        fileSize?: number;
      };
      const log = bundleLogFor(store, { runnerId: cw.world.runnerId, key: cw.world.runnerKey }, record.seq, record.leaf);
      rejection = buildRejection(
        {
          runner: { id: cw.world.runnerId, keyid: cw.world.runnerKey.keyid, version: RUNNER_VERSION },
          stage: 'acceptance',
          code: body.code,
          capsule: {
            ...(body.capsuleId ? { id: body.capsuleId } : {}),
            ...(body.manifestDigest ? { manifestDigest: body.manifestDigest } : {}),
            ...(body.fileDigest ? { fileDigest: body.fileDigest } : {}),
            ...(body.fileSize !== undefined ? { fileSize: body.fileSize } : {}),
          },
          record: { index: record.seq, kind: 'capsule.rejected' },
        },
        log,
        cw.world.runnerKey,
      );
    } finally {
      store.close();
    }
    initCoordinator(cw);
    coordinator = await startCoordinator(cw.stateDir);
  });
  afterAll(async () => {
    await coordinator?.stop();
    cw?.world.cleanup();
  });

  const put = (bytes: Buffer, key = cw.world.runnerKey, hex = sha256Hex(bytes)) =>
    signedCall(`${coordinator.url}/v1/rejections/${hex}`, key, { method: 'PUT', body: bytes });

  it('stores a verified rejection once: 201, then 200 for the same bytes, listed with its code', async () => {
    const first = await put(rejection.bytes);
    expect(first.status, first.body.toString()).toBe(201);
    expect(first.json()).toEqual({ digest: rejection.digest, stored: 'created' });
    const second = await put(rejection.bytes);
    expect(second.status).toBe(200);
    expect(second.json().stored).toBe('existing');
    const list = await call(`${coordinator.url}/v1/rejections?runner=${cw.world.runnerId}`, { headers: bearer(cw.token) });
    expect(list.json().items).toEqual([
      expect.objectContaining({ digest: rejection.digest, runner: cw.world.runnerId, stage: 'acceptance', code: 'CAPSULE_TARGET' }),
    ]);
    const fetched = await call(`${coordinator.url}/v1/rejections/${rejection.digest.slice(7)}`, { headers: bearer(cw.token) });
    expect(fetched.body.equals(rejection.bytes)).toBe(true);
    const d = new DatabaseSync(join(cw.stateDir, 'coordinator.db'), { readOnly: true });
    expect((d.prepare('SELECT COUNT(*) AS n FROM rejections').get() as { n: number }).n).toBe(1);
    d.close();
  });

  it('a rejection that does not verify is refused with 422 and its REJECTION_* code', async () => {
    const doc = JSON.parse(rejection.bytes.toString());
    doc.log.index += 1;
    const tampered = Buffer.from(JSON.stringify(doc));
    const answer = await put(tampered);
    expect(answer.status).toBe(422);
    expect(answer.json().code).toMatch(/^(REJECTION|LOG)_/);
  });

  it('a rejection sent by another runner than its signer is refused with 403 INBOX_RUNNER_MISMATCH', async () => {
    const answer = await put(rejection.bytes, cw.otherRunnerKey);
    expect(answer.status).toBe(403);
    expect(answer.json().code).toBe('INBOX_RUNNER_MISMATCH');
  });

  it('a rejection over the 64 KiB cap is refused with 413 PROTOCOL_BODY_TOO_LARGE', async () => {
    const answer = await put(Buffer.alloc(64 * 1024 + 1, 0x20));
    expect(answer.status).toBe(413);
    expect(answer.json().code).toBe('PROTOCOL_BODY_TOO_LARGE');
  });
});

describe('--public-url', () => {
  let cw: CoordinatorWorld;
  let coordinator: RunningCoordinator;
  const publicUrl = 'https://coordinator.example:9443';

  beforeAll(async () => {
    cw = makeCoordinatorWorld();
    initCoordinator(cw);
    coordinator = await startCoordinator(cw.stateDir, ['--public-url', publicUrl]);
  });
  afterAll(async () => {
    await coordinator?.stop();
    cw?.world.cleanup();
  });

  it('checks signatures against the public URL (what runners are configured with), not the Host header', async () => {
    const { signRequest } = await import('../../runner/protocol/http-signature.js');
    const asPublic = await signRequest({ method: 'GET', url: `${publicUrl}/v1/trust` }, cw.world.runnerKey, { now: new Date() });
    expect((await call(`${coordinator.url}/v1/trust`, { headers: asPublic })).status).toBe(200);
    const asLocal = await signedCall(`${coordinator.url}/v1/trust`, cw.world.runnerKey);
    expect(asLocal.status).toBe(401);
    expect(asLocal.json().code).toBe('PROTOCOL_SIGNATURE_INVALID');
  });
});

describe('trust-update', () => {
  let cw: CoordinatorWorld;
  afterAll(() => cw?.world.cleanup());

  it('pins the next trust version (signed by the old root), which serve then hands out; a rollback is refused with TRUST_ROLLBACK', async () => {
    cw = makeCoordinatorWorld();
    initCoordinator(cw);
    const body = JSON.parse(Buffer.from(JSON.parse(cw.trustBytes.toString()).payload, 'base64').toString());
    const { signTrust } = await import('../helpers/world.js');
    const next = signTrust({ ...body, version: 2 }, [cw.world.root]);
    const nextPath = join(cw.world.dir, 'trust-v2.dsse.json');
    writeFileSync(nextPath, next);
    const updated = runCoordinatorCli(['trust-update', '--state', cw.stateDir, nextPath]);
    expect(updated.status, updated.stderr).toBe(0);
    expect(JSON.parse(updated.stdout)).toEqual({ trustVersion: 2, file: 'trust-v2.dsse.json' });
    const rollback = runCoordinatorCli(['trust-update', '--state', cw.stateDir, cw.trustPath]);
    expect(rollback.status).toBe(2);
    expect(errorOf(rollback.stderr).code).toBe('TRUST_ROLLBACK');
    const coordinator = await startCoordinator(cw.stateDir);
    try {
      const answer = await call(`${coordinator.url}/v1/trust`, { headers: bearer(cw.token) });
      expect(answer.body.equals(next)).toBe(true);
    } finally {
      await coordinator.stop();
    }
  });
});
