/**
 * Variants of issue 8's parsing attacks that a second review found open after the first fixes: a trust
 * document key field carrying other text or a private key, JSON output with C1 and bidi controls, and
 * error sentences that quote megabytes of a member name. Through the built CLI.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { toPrintableJson } from '../../runner/core/printable.js';
import { runCli } from '../helpers/cli.js';
import { makeWorld, type World } from '../helpers/world.js';

const world: World = makeWorld();
afterAll(() => world.cleanup());

function trustSign(body: unknown): { status: number | null; stderr: string; out: string } {
  const bodyPath = join(world.dir, `body-${Math.random().toString(16).slice(2)}.json`);
  const keyPath = join(world.dir, 'root.key');
  const out = `${bodyPath}.dsse.json`;
  writeFileSync(bodyPath, JSON.stringify(body));
  writeFileSync(keyPath, world.root.toPem(), { mode: 0o600 });
  const result = runCli(['trust', 'sign', bodyPath, '--key', keyPath, '--out', out]);
  return { status: result.status, stderr: result.stderr, out };
}

// eslint-disable-next-line no-control-regex
const RAW_CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

describe('review F5: a trust document key field holds exactly one public key PEM block', () => {
  const signer = () => Object.keys(world.trustBody.keys).find((keyid) => world.trustBody.keys[keyid]!.roles.includes('capsule-signer'))!;

  it('text around the PEM block (account numbers, a fake OK line with C1 and bidi controls) is refused with TRUST_KEY_INVALID', () => {
    const keyid = signer();
    const body = structuredClone(world.trustBody);
    const pem = body.keys[keyid]!.publicKey;
    body.keys[keyid]!.publicKey = `\u009b2J\u202eOK verdict pass ACCT 4111111111111111\n${pem}trailing words\n`;
    const result = trustSign(body);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/^edge-runner: TRUST_KEY_INVALID: /);
    expect(result.stderr).not.toMatch(RAW_CONTROLS);
    expect(existsSync(result.out)).toBe(false);
  });

  it('a private key in the publicKey field (which OpenSSL would read as its public half) is refused with TRUST_KEY_INVALID', () => {
    const keyid = signer();
    const body = structuredClone(world.trustBody);
    const index = world.signers.findIndex((key) => key.keyid === keyid);
    body.keys[keyid]!.publicKey = world.signers[index]!.toPem();
    const result = trustSign(body);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/^edge-runner: TRUST_KEY_INVALID: /);
    expect(result.stderr).not.toContain('PRIVATE KEY');
  });

  it('the PEM exactly as written by the key, with or without its final newline, is accepted', () => {
    const keyid = signer();
    const body = structuredClone(world.trustBody);
    body.keys[keyid]!.publicKey = body.keys[keyid]!.publicKey.replace(/\n$/, '');
    const result = trustSign(body);
    expect(result.status, result.stderr).toBe(0);
  });
});

describe('review F5: JSON output escapes what JSON.stringify leaves raw (C1, DEL, bidi, line separators)', () => {
  it('toPrintableJson keeps the same JSON value and leaves no raw control', () => {
    const value = { name: 'a\u009bb\u202ec\u2028d\u007fe\n', nested: ['\u2066x\u2069'] };
    const text = toPrintableJson(JSON.stringify(value, null, 2));
    expect(text).not.toMatch(RAW_CONTROLS);
    expect(JSON.parse(text)).toEqual(value);
  });
});

describe('review F6: an error sentence that quotes input is bounded', () => {
  it('a bundle whose envelope has a member name of 4 MB gets one FAIL line of bounded length', () => {
    const name = '\u0085'.repeat(1_000_000);
    const file = join(world.dir, 'bigname.bundle.json');
    writeFileSync(
      file,
      `{"mediaType":"application/vnd.edge-runner.bundle.v1+json","evidence":{"payloadType":"x","payload":"","signatures":[],${JSON.stringify(name)}:1},"capsule":{},"approvals":[]}`,
    );
    const result = runCli(['verify', file, '--trust', world.trustPath]);
    expect(result.status).toBe(1);
    expect(result.stdout.length + result.stderr.length).toBeLessThan(10_000);
    expect(result.stdout + result.stderr).not.toMatch(RAW_CONTROLS);
  });

  it('so does a capsule whose envelope has such a member (exec)', () => {
    const name = '\u0085'.repeat(1_000_000);
    const file = join(world.dir, 'bigname.capsule.json');
    writeFileSync(
      file,
      `{"mediaType":"application/vnd.edge-runner.capsule-file.v1+json","envelope":{"payloadType":"x","payload":"","signatures":[],${JSON.stringify(name)}:1},"blobs":{}}`,
    );
    const result = runCli(['exec', file, '--state', world.stateDir]);
    expect(result.status).toBe(3);
    expect(result.stdout.length + result.stderr.length).toBeLessThan(10_000);
  });
});
