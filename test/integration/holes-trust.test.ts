/**
 * Issue 8, points 10-12, through the built CLI (dist/runner/main.js in a child process): small-order keys,
 * trust documents that cannot be satisfied or are ambiguous, and a state folder someone else can change.
 *
 * "Nothing ran" is checked as exec-rejections.test.ts does: the capsule's first step echoes a random token,
 * and a run leaves that token's stdout blob in STATE/evidence/blobs whatever the isolation; a positive
 * control shows the blob appearing when the capsule is accepted.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { toBase64 } from '../../runner/core/base64.js';
import { sha256Hex } from '../../runner/core/digest.js';
import { PrivateKey } from '../../runner/core/ed25519.js';
import type { CapsuleFile } from '../../runner/capsule/capsule-file.js';
import { packCapsule } from '../../runner/capsule/pack.js';
import type { Role, TrustDocumentBody } from '../../runner/trust/trust.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { IDENTITY, IDENTITY_FORGERY, keyidOfRaw, pemOfRaw } from '../helpers/small-order.js';
import { baseTemplate, makeTrustBody, makeWorld, signTrust, type NamedKey, type World } from '../helpers/world.js';

const isRoot = process.getuid?.() === 0;

let world: World;
beforeEach(() => {
  world = makeWorld();
});
afterEach(() => {
  chmodSync(world.dir, 0o700);
  world.cleanup();
});

interface Traced {
  file: string;
  /** The stdout blob `echo TOKEN` leaves in the evidence store when the capsule runs. */
  blob: string;
}

function traced(capsule: (steps: { name: string; run: string[] }[]) => CapsuleFile): Traced {
  const token = `ran-${randomBytes(12).toString('hex')}`;
  const file = world.writeCapsule(capsule([{ name: 'trace', run: ['/bin/echo', token] }]));
  return { file, blob: join(world.stateDir, 'evidence', 'blobs', `sha256-${sha256Hex(Buffer.from(`${token}\n`))}`) };
}

const exec = (file: string, stateDir = world.stateDir): CliResult => runCli(['exec', file, '--state', stateDir, '--json']);

/** A capsule the world's signer signed, which must run (the positive control). */
function goodCapsule(): Traced {
  return traced((steps) => world.capsule({ steps }));
}

function writeKey(key: PrivateKey, name: string): string {
  const path = join(world.dir, `${name}.key`);
  writeFileSync(path, key.toPem(), { mode: 0o600 });
  return path;
}

function writeBody(body: TrustDocumentBody, name = 'trust.json'): string {
  const path = join(world.dir, name);
  writeFileSync(path, JSON.stringify(body));
  return path;
}

/** The world's keys, plus entries written straight into the body (as a hostile or careless author can). */
function worldKeys(): NamedKey[] {
  return [
    { name: 'root-1', key: world.root, roles: ['root'] },
    ...world.signers.map((key, i) => ({ name: `signer-${i + 1}`, key, roles: ['capsule-signer'] as Role[] })),
    { name: world.runnerId, key: world.runnerKey, roles: ['runner'] },
  ];
}

function enrollingIdentity(): TrustDocumentBody {
  const body = makeTrustBody(worldKeys());
  body.keys[keyidOfRaw(IDENTITY)] = { publicKey: pemOfRaw(IDENTITY), name: 'mallory', roles: ['capsule-signer'] };
  return body;
}

function trustSign(body: TrustDocumentBody, keys: PrivateKey[] = [world.root]): { result: CliResult; out: string } {
  const out = join(world.dir, `signed-${randomBytes(4).toString('hex')}.dsse.json`);
  const args = ['trust', 'sign', writeBody(body), ...keys.flatMap((key, i) => ['--key', writeKey(key, `k${i}`)]), '--out', out];
  return { result: runCli(args), out };
}

/** Replaces the pinned trust file and, as the code before the pin did not check it, re-pins runner.json to it. */
function plantTrust(bytes: Buffer, { repin }: { repin: boolean }): void {
  writeFileSync(join(world.stateDir, 'trust.dsse.json'), bytes);
  if (repin) {
    const path = join(world.stateDir, 'runner.json');
    writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), trustSha256: sha256Hex(bytes) }));
  }
}

describe('attack 10: small-order Ed25519 keys forge signatures', () => {
  it('attack 10: trust sign refuses a document enrolling the identity point as a capsule signer with TRUST_KEY_INVALID, and writes nothing', () => {
    const { result, out } = trustSign(enrollingIdentity());
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('TRUST_KEY_INVALID');
    expect(result.stderr).toContain('small-order');
    expect(existsSync(out)).toBe(false);
  });

  it('attack 10: init refuses a planted trust document enrolling the identity point (STATE_TRUST_INVALID, TRUST_KEY_INVALID), and makes no state folder', () => {
    const planted = join(world.dir, 'planted.dsse.json');
    writeFileSync(planted, signTrust(enrollingIdentity(), [world.root]));
    const state = join(world.dir, 'state-2');
    const result = runCli(['init', '--state', state, '--id', 'runner-test-2', '--trust', planted]);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('STATE_TRUST_INVALID');
    expect(result.stderr).toContain('TRUST_KEY_INVALID');
    expect(existsSync(state)).toBe(false);
  });

  it('attack 10: a capsule "signed" by the identity key with R = identity, S = 0 does not run from a state folder whose pinned trust enrols that key', () => {
    const control = goodCapsule();
    expect(exec(control.file).status).toBe(0);
    expect(existsSync(control.blob)).toBe(true);

    plantTrust(signTrust(enrollingIdentity(), [world.root]), { repin: true });
    const forged = traced((steps) => {
      const file = world.capsule({ steps });
      return { ...file, envelope: { ...file.envelope, signatures: [{ keyid: keyidOfRaw(IDENTITY), sig: toBase64(IDENTITY_FORGERY) }] } };
    });
    const result = exec(forged.file);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('STATE_TRUST_INVALID');
    expect(result.stderr).toContain('TRUST_KEY_INVALID');
    expect(existsSync(forged.blob)).toBe(false);
  });

  const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  const openssl30 = openssl.status === 0 && /^OpenSSL 3\.0\./.test(openssl.stdout);
  it.runIf(openssl30)(
    'what a standard tool does alone: openssl 3.0 pkeyutl accepts the identity key with R = identity, S = 0 for any message (why the runner checks keys itself)',
    () => {
      const pub = join(world.dir, 'identity.pub');
      writeFileSync(pub, pemOfRaw(IDENTITY));
      writeFileSync(join(world.dir, 'msg'), 'transfer everything');
      writeFileSync(join(world.dir, 'sig'), IDENTITY_FORGERY);
      const args = ['pkeyutl', '-verify', '-pubin', '-inkey', pub, '-rawin', '-in', join(world.dir, 'msg'), '-sigfile', join(world.dir, 'sig')];
      const result = spawnSync('openssl', args, { encoding: 'utf8' });
      expect(result.stdout).toContain('Signature Verified Successfully');
    },
  );
});

describe('attack 11: trust documents that cannot be satisfied or are ambiguous', () => {
  it('attack 11: trust sign refuses a capsule-signer threshold above the number of capsule-signer keys with TRUST_THRESHOLD_UNSATISFIABLE', () => {
    const { result, out } = trustSign(makeTrustBody(worldKeys(), { 'capsule-signer': 3 }));
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('TRUST_THRESHOLD_UNSATISFIABLE: The capsule-signer threshold is 3 but the document lists 2 capsule-signer keys.');
    expect(existsSync(out)).toBe(false);
  });

  it('attack 11: trust sign refuses two runner keys with the same name with TRUST_NAME_DUPLICATE', () => {
    const twin = PrivateKey.generate();
    const { result, out } = trustSign(makeTrustBody([...worldKeys(), { name: world.runnerId, key: twin, roles: ['runner'] }]));
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('TRUST_NAME_DUPLICATE');
    expect(existsSync(out)).toBe(false);
  });

  it('attack 11: trust sign refuses a runner key that also holds capsule-signer with TRUST_ROLE_CONFLICT', () => {
    const keys = worldKeys().map((k) => (k.key === world.runnerKey ? { ...k, roles: ['runner', 'capsule-signer'] as Role[] } : k));
    const { result, out } = trustSign(makeTrustBody(keys));
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('TRUST_ROLE_CONFLICT');
    expect(existsSync(out)).toBe(false);
  });

  it('attack 11: init refuses a planted document whose runner key is also root (STATE_TRUST_INVALID, TRUST_ROLE_CONFLICT)', () => {
    const keys = worldKeys().map((k) => (k.key === world.runnerKey ? { ...k, roles: ['runner', 'root'] as Role[] } : k));
    const planted = join(world.dir, 'planted.dsse.json');
    writeFileSync(planted, signTrust(makeTrustBody(keys), [world.root]));
    const state = join(world.dir, 'state-2');
    const result = runCli(['init', '--state', state, '--id', world.runnerId, '--key', writeKey(world.runnerKey, 'runner'), '--trust', planted]);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('TRUST_ROLE_CONFLICT');
    expect(existsSync(state)).toBe(false);
  });

  it('attack 11: init refuses a runner key that the trust document enrols as root only (STATE_TRUST_INVALID, TRUST_ROLE_CONFLICT)', () => {
    const state = join(world.dir, 'state-2');
    const result = runCli(['init', '--state', state, '--id', 'runner-test-2', '--key', writeKey(world.root, 'root'), '--trust', world.trustPath]);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('STATE_TRUST_INVALID');
    expect(result.stderr).toContain('TRUST_ROLE_CONFLICT');
    expect(existsSync(state)).toBe(false);
  });

  it('attack 11: exec refuses a pinned document with an unsatisfiable threshold (STATE_TRUST_INVALID, TRUST_THRESHOLD_UNSATISFIABLE)', () => {
    plantTrust(signTrust(makeTrustBody(worldKeys(), { 'capsule-signer': 3 }), [world.root]), { repin: true });
    const capsule = goodCapsule();
    const result = exec(capsule.file);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('TRUST_THRESHOLD_UNSATISFIABLE');
    expect(existsSync(capsule.blob)).toBe(false);
  });
});

describe('attack 12: a local user can swap the pinned trust', () => {
  const stateFile = (name: string) => join(world.stateDir, name);

  it('attack 12: init pins the sha256 of trust.dsse.json in runner.json, the digest trust sign prints', () => {
    const signed = trustSign(makeTrustBody(worldKeys()));
    expect(signed.result.status).toBe(0);
    const state = join(world.dir, 'state-2');
    const init = runCli(['init', '--state', state, '--id', 'runner-test-2', '--trust', signed.out]);
    expect(init.status).toBe(0);
    const pinned = (JSON.parse(readFileSync(join(state, 'runner.json'), 'utf8')) as { trustSha256: string }).trustSha256;
    expect(signed.result.stdout).toContain(`sha256 ${pinned}`);
    expect(init.stdout).toContain(`pinned trust document sha256 ${pinned}`);
    expect(pinned).toBe(sha256Hex(readFileSync(join(state, 'trust.dsse.json'))));
  });

  it('attack 12: a self-signed trust document copied over trust.dsse.json is refused with STATE_TRUST_MISMATCH, and its capsule does not run', () => {
    const control = goodCapsule();
    expect(exec(control.file).status).toBe(0);
    expect(existsSync(control.blob)).toBe(true);

    // The attacker's own root and capsule signer, enrolling this runner's key under its id so targeting works.
    const attackerRoot = PrivateKey.generate();
    const attackerSigner = PrivateKey.generate();
    const body = makeTrustBody([
      { name: 'root-1', key: attackerRoot, roles: ['root'] },
      { name: 'signer-1', key: attackerSigner, roles: ['capsule-signer'] },
      { name: world.runnerId, key: world.runnerKey, roles: ['runner'] },
    ]);
    plantTrust(signTrust(body, [attackerRoot]), { repin: false });
    const hostile = traced((steps) => packCapsule(baseTemplate({ steps }), new Map(), [attackerSigner]));
    const result = exec(hostile.file);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('STATE_TRUST_MISMATCH');
    expect(result.stderr).toContain(stateFile('trust.dsse.json'));
    expect(existsSync(hostile.blob)).toBe(false);
  });

  it('attack 12: chmod o+w on the state folder is refused with STATE_PERMISSIONS naming the folder, and nothing runs', () => {
    const control = goodCapsule();
    expect(exec(control.file).status).toBe(0);
    expect(existsSync(control.blob)).toBe(true);

    chmodSync(world.stateDir, 0o702);
    const capsule = goodCapsule();
    const result = exec(capsule.file);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`STATE_PERMISSIONS: ${world.stateDir} is writable by group or others (mode 0702)`);
    expect(existsSync(capsule.blob)).toBe(false);
    chmodSync(world.stateDir, 0o700);
    expect(exec(capsule.file).status).toBe(0);
  });

  it.each(['trust.dsse.json', 'runner.json', 'runner.db', 'runner.key', 'evidence', 'evidence/blobs', 'evidence/bundles', 'runs'])(
    'attack 12: %s writable by group is refused with STATE_PERMISSIONS naming it',
    (name) => {
      const path = stateFile(name);
      const before = statSync(path).mode & 0o7777;
      chmodSync(path, before | 0o020);
      const capsule = goodCapsule();
      const result = exec(capsule.file);
      expect(result.status).toBe(2);
      expect(result.stderr).toContain(`STATE_PERMISSIONS: ${path} is writable by group or others`);
      expect(existsSync(capsule.blob)).toBe(false);
    },
  );

  it.runIf(isRoot).each(['trust.dsse.json', 'runner.json', 'runner.db', 'runner.pub', 'evidence/blobs', 'runs', '.'])(
    'attack 12: %s owned by another uid (chown 65534; needs root) is refused with STATE_PERMISSIONS naming it',
    (name) => {
      const path = name === '.' ? world.stateDir : stateFile(name);
      chownSync(path, 65534, 65534);
      try {
        const capsule = goodCapsule();
        const result = exec(capsule.file);
        expect(result.status).toBe(2);
        expect(result.stderr).toContain(`STATE_PERMISSIONS: ${path} belongs to uid 65534`);
        expect(existsSync(capsule.blob)).toBe(false);
      } finally {
        chownSync(path, 0, 0);
      }
    },
  );

  it('attack 12: trust.dsse.json replaced by a symbolic link (to the very same bytes) is refused with STATE_PERMISSIONS', () => {
    const elsewhere = join(world.dir, 'trust-elsewhere.dsse.json');
    copyFileSync(stateFile('trust.dsse.json'), elsewhere);
    unlinkSync(stateFile('trust.dsse.json'));
    symlinkSync(elsewhere, stateFile('trust.dsse.json'));
    const result = exec(goodCapsule().file);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`STATE_PERMISSIONS: ${stateFile('trust.dsse.json')} is a symbolic link`);
  });

  it('attack 12: a folder above the state folder that others can write (no sticky bit) is refused; with the sticky bit (as /tmp) it is not', () => {
    chmodSync(world.dir, 0o777);
    const refused = exec(goodCapsule().file);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain(
      `STATE_PERMISSIONS: ${world.dir}, above the state folder, is writable by group or others without the sticky bit`,
    );
    chmodSync(world.dir, 0o1777);
    expect(exec(goodCapsule().file).status).toBe(0);
  });

  it.runIf(isRoot)(
    '(needs root) leaves run workspaces under runs/ to the step user: a workspace owned by 65534, mode 0777, does not stop the runner',
    () => {
      const workspace = stateFile('runs/left-by-a-step');
      mkdirSync(workspace);
      chmodSync(workspace, 0o777);
      chownSync(workspace, 65534, 65534);
      const capsule = goodCapsule();
      expect(exec(capsule.file).status).toBe(0);
      expect(existsSync(capsule.blob)).toBe(true);
      rmSync(workspace, { recursive: true, force: true });
    },
  );

  it('attack 12: a state folder made before the pin (runner.json without trustSha256) is refused with STATE_TRUST_UNPINNED, saying how to pin', () => {
    const path = stateFile('runner.json');
    const { trustSha256: _, ...unpinned } = JSON.parse(readFileSync(path, 'utf8')) as { trustSha256: string };
    writeFileSync(path, JSON.stringify(unpinned));
    const result = exec(goodCapsule().file);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('STATE_TRUST_UNPINNED');
    expect(result.stderr).toContain('"trustSha256"');
    expect(result.stderr).toContain('edge-runner init');
  });
});
