/**
 * An auditor checks a produced evidence envelope with openssl alone: the PAE is rebuilt here from the DSSE
 * spec (no code of ours), and `openssl pkeyutl -verify -rawin` checks the Ed25519 signature against the
 * runner's SPKI PEM as listed in the trust document.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeWorld, type World } from '../helpers/world.js';
import { runCli } from '../helpers/cli.js';

interface Envelope {
  payloadType: string;
  payload: string;
  signatures: Array<{ keyid: string; sig: string }>;
}

function paeBySpec(type: string, body: Buffer): Buffer {
  const t = Buffer.from(type);
  return Buffer.concat([Buffer.from(`DSSEv1 ${t.length} `), t, Buffer.from(` ${body.length} `), body]);
}

function opensslVerify(dir: string, publicPem: string, message: Buffer, signature: Buffer): { status: number | null; out: string } {
  writeFileSync(join(dir, 'pub.pem'), publicPem);
  writeFileSync(join(dir, 'pae.bin'), message);
  writeFileSync(join(dir, 'sig.bin'), signature);
  const r = spawnSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', 'pub.pem', '-rawin', '-in', 'pae.bin', '-sigfile', 'sig.bin'], {
    cwd: dir,
    encoding: 'utf8',
  });
  return { status: r.status, out: r.stdout + r.stderr };
}

describe('an evidence envelope checked with openssl and no code of ours', () => {
  let world: World;
  let envelope: Envelope;
  let runnerPem: string;

  beforeAll(() => {
    world = makeWorld();
    const file = world.writeCapsule(world.capsule());
    const out = join(world.dir, 'bundle.json');
    expect(runCli(['exec', file, '--state', world.stateDir, '--out', out]).status).toBe(0);
    envelope = (JSON.parse(readFileSync(out, 'utf8')) as { evidence: Envelope }).evidence;
    runnerPem = world.trustBody.keys[envelope.signatures[0]!.keyid]!.publicKey;
  });
  afterAll(() => world.cleanup());

  it('verifies with openssl pkeyutl -verify -rawin over the PAE', () => {
    const pae = paeBySpec(envelope.payloadType, Buffer.from(envelope.payload, 'base64'));
    const result = opensslVerify(world.dir, runnerPem, pae, Buffer.from(envelope.signatures[0]!.sig, 'base64'));
    expect(result.out).toContain('Signature Verified Successfully');
    expect(result.status).toBe(0);
  });

  it('fails with openssl when one byte of the payload changes', () => {
    const payload = Buffer.from(envelope.payload, 'base64');
    payload[10] = payload[10]! ^ 0x01;
    const result = opensslVerify(world.dir, runnerPem, paeBySpec(envelope.payloadType, payload), Buffer.from(envelope.signatures[0]!.sig, 'base64'));
    expect(result.status).not.toBe(0);
  });

  it('names the runner key by the SHA-256 of its SPKI DER, which openssl computes the same way', () => {
    writeFileSync(join(world.dir, 'runner.pem'), runnerPem);
    const der = spawnSync('openssl', ['pkey', '-pubin', '-in', 'runner.pem', '-outform', 'DER'], { cwd: world.dir });
    const sha = spawnSync('sha256sum', [], { input: der.stdout, encoding: 'utf8' });
    expect(sha.stdout.slice(0, 64)).toBe(envelope.signatures[0]!.keyid);
  });
});
