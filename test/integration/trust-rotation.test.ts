/**
 * Trust rotation through the real CLI (dist/runner/main.js): `edge-runner trust update NEW --state DIR`
 * applies TUF's rule (exactly one more version, a threshold of the pinned root keys and of its own, not
 * expired), records trust.updated or trust.refused before anything moves, moves the pin (trust.dsse.json and
 * runner.json's trustSha256) and keeps every version in state/trust/<version>.dsse.json. The rotation here
 * replaces a root key that leaked and a capsule signer: the old signer's capsules are refused afterwards,
 * the new signer's run, and a bundle made before still verifies against the document it was made under.
 * Then the states a crash can leave, opened by the real runner context: finished, or refused clearly.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { packCapsule } from '../../runner/capsule/pack.js';
import { openRunner } from '../../runner/agent/runner.js';
import { TrustFollower } from '../../runner/agent/trust-update.js';
import { initState } from '../../runner/state/state.js';
import { Store } from '../../runner/store/store.js';
import { verifyTrustDocument, verifyTrustUpdate, type TrustDocumentBody } from '../../runner/trust/trust.js';
import { codeOf } from '../helpers/codes.js';
import { CLI_ENTRY, runCli, type CliResult } from '../helpers/cli.js';
import { pinOf, rotatedBody, trustRecords } from '../helpers/rotation.js';
import { directSelector } from '../helpers/runner.js';
import { baseTemplate, makeTrustBody, signTrust } from '../helpers/world.js';

const built = existsSync(CLI_ENTRY);
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * A runner pinned to v1: root keys A, B, C (threshold 2), capsule signer `signer-old`. v2 takes out root A
 * (leaked) and signer-old, puts in root D and `signer-new`, and is signed by B, C and D: a threshold of the
 * v1 roots (B, C) and of its own (B, C, D).
 */
function rotationWorld(options: { v1Expires?: string } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-rotation-'));
  dirs.push(dir);
  const [rootA, rootB, rootC, rootD, signerOld, signerNew, runnerKey] = Array.from({ length: 7 }, () => PrivateKey.generate()) as [
    PrivateKey,
    PrivateKey,
    PrivateKey,
    PrivateKey,
    PrivateKey,
    PrivateKey,
    PrivateKey,
  ];
  const runnerId = 'runner-rotation-1';
  const v1Body = makeTrustBody(
    [
      { name: 'root-a', key: rootA, roles: ['root'] },
      { name: 'root-b', key: rootB, roles: ['root'] },
      { name: 'root-c', key: rootC, roles: ['root'] },
      { name: 'signer-old', key: signerOld, roles: ['capsule-signer'] },
      { name: runnerId, key: runnerKey, roles: ['runner'] },
    ],
    { root: 2 },
  );
  if (options.v1Expires) v1Body.expires = options.v1Expires;
  const v2Body = rotatedBody(v1Body, {
    remove: [rootA, signerOld],
    add: [
      { name: 'root-d', key: rootD, roles: ['root'] },
      { name: 'signer-new', key: signerNew, roles: ['capsule-signer'] },
    ],
    expires: new Date(Date.now() + 365 * 86400_000).toISOString().replace(/\.\d+Z$/, 'Z'),
  });
  const v1 = signTrust(v1Body, [rootA, rootB]);
  const v2 = signTrust(v2Body, [rootB, rootC, rootD]);
  const stateDir = join(dir, 'state');
  initState(stateDir, {
    id: runnerId,
    labels: ['test'],
    trustBytes: v1,
    now: new Date(),
    key: runnerKey,
    createDatabase: (path) => Store.open(path, { create: true }).close(),
  });
  let n = 0;
  const file = (bytes: Buffer | string, name = `file-${++n}.json`) => {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    return path;
  };
  return {
    dir,
    stateDir,
    keys: { rootA, rootB, rootC, rootD, signerOld, signerNew },
    v1Body,
    v2Body,
    v1,
    v2,
    file,
    /** A capsule file signed by `signer`, written to the world's folder. */
    capsule: (signer: PrivateKey) => file(JSON.stringify(packCapsule(baseTemplate(), new Map(), [signer])), `capsule-${++n}.capsule.json`),
    update: (path: string): CliResult => runCli(['trust', 'update', path, '--state', stateDir, '--json']),
    exec: (path: string): CliResult => runCli(['exec', path, '--state', stateDir, '--json']),
  };
}

type World = ReturnType<typeof rotationWorld>;
const json = (result: CliResult) => JSON.parse(result.stdout) as Record<string, unknown>;

/** The update is refused with `code`, exit 1, recorded as trust.refused, and the pin did not move. */
function expectRefused(w: World, path: string, code: string, toVersion?: number) {
  const before = pinOf(w.stateDir);
  const recordsBefore = trustRecords(w.stateDir).length;
  const result = w.update(path);
  expect(result.status, result.stderr).toBe(1);
  expect(json(result)).toMatchObject({ outcome: 'refused', code });
  const records = trustRecords(w.stateDir);
  expect(records.length).toBe(recordsBefore + 1);
  expect(records.at(-1)).toEqual({
    kind: 'trust.refused',
    body: { code, trustDigest: `sha256:${sha256(readFileSync(path))}`, source: 'file', ...(toVersion !== undefined ? { toVersion } : {}) },
  });
  const after = pinOf(w.stateDir);
  expect(after.trustSha256).toBe(before.trustSha256);
  expect(after.trust.equals(before.trust)).toBe(true);
}

describe.skipIf(!built)('edge-runner trust update: a rotation that replaces a leaked root key and a capsule signer (needs dist/)', () => {
  const w = built ? rotationWorld() : (undefined as unknown as World);
  let before: { bundle: string; verdict: string };

  it('before the rotation, the old signer’s capsule runs and leaves a bundle', () => {
    const result = w.exec(w.capsule(w.keys.signerOld));
    expect(result.status, result.stderr).toBe(0);
    before = json(result) as { bundle: string; verdict: string };
    expect(before.verdict).toBe('pass');
  });

  it('the leaked root key alone cannot sign the next version (TRUST_SIGNATURE, recorded, pin kept)', () => {
    expectRefused(w, w.file(signTrust(w.v2Body, [w.keys.rootA])), 'TRUST_SIGNATURE', 2);
  });

  it('a next version signed by a threshold of the old roots but not of its own (A + B: B is the only v2 root) is refused (TRUST_SIGNATURE)', () => {
    expectRefused(w, w.file(signTrust(w.v2Body, [w.keys.rootA, w.keys.rootB])), 'TRUST_SIGNATURE', 2);
  });

  it('a next version that has expired is refused (TRUST_EXPIRED)', () => {
    const expired = { ...w.v2Body, expires: '2020-01-01T00:00:00Z' };
    expectRefused(w, w.file(signTrust(expired, [w.keys.rootB, w.keys.rootC, w.keys.rootD])), 'TRUST_EXPIRED', 2);
  });

  it('a skipped version (v3 on a v1 pin, signed by the v1 roots) is refused (TRUST_VERSION_SKIP)', () => {
    const v3 = rotatedBody(w.v2Body, { version: 3 });
    expectRefused(w, w.file(signTrust(v3, [w.keys.rootB, w.keys.rootC, w.keys.rootD])), 'TRUST_VERSION_SKIP', 3);
  });

  it('an unreadable document is refused (TRUST_UNPARSEABLE) and recorded without a version', () => {
    expectRefused(w, w.file('{"payloadType": 1}'), 'TRUST_UNPARSEABLE');
  });

  it('v2 is applied: exit 0, trust.updated recorded, runner.json and trust.dsse.json pin v2, v1 and v2 kept in state/trust/', () => {
    const result = w.update(w.file(w.v2, 'v2.dsse.json'));
    expect(result.status, result.stderr).toBe(0);
    expect(json(result)).toMatchObject({ outcome: 'updated', fromVersion: 1, toVersion: 2, trustDigest: `sha256:${sha256(w.v2)}` });
    expect(trustRecords(w.stateDir).at(-1)).toEqual({
      kind: 'trust.updated',
      body: { fromVersion: 1, toVersion: 2, trustDigest: `sha256:${sha256(w.v2)}`, source: 'file' },
    });
    const pin = pinOf(w.stateDir);
    expect(pin.trustSha256).toBe(sha256(w.v2));
    expect(pin.trust.equals(w.v2)).toBe(true);
    expect(readFileSync(join(w.stateDir, 'trust', '1.dsse.json')).equals(w.v1)).toBe(true);
    expect(readFileSync(join(w.stateDir, 'trust', '2.dsse.json')).equals(w.v2)).toBe(true);
  });

  it('the same document again changes nothing (exit 0, no record)', () => {
    const count = trustRecords(w.stateDir).length;
    const result = w.update(w.file(w.v2));
    expect(result.status, result.stderr).toBe(0);
    expect(json(result)).toMatchObject({ outcome: 'unchanged', version: 2 });
    expect(trustRecords(w.stateDir).length).toBe(count);
  });

  it('after the rotation the old signer’s capsule is refused (nothing runs) and the new signer’s runs', () => {
    const old = w.exec(w.capsule(w.keys.signerOld));
    expect(old.status, old.stdout).toBe(3);
    expect(json(old).code).toMatch(/^CAPSULE_SIGN/);
    const fresh = w.exec(w.capsule(w.keys.signerNew));
    expect(fresh.status, fresh.stderr).toBe(0);
    expect(json(fresh).verdict).toBe('pass');
  });

  it('the bundle made before the rotation verifies against the document it was made under (state/trust/1.dsse.json), not against v2', () => {
    const underV1 = runCli(['verify', before.bundle, '--trust', join(w.stateDir, 'trust', '1.dsse.json')]);
    expect(underV1.status, underV1.stderr).toBe(0);
    const underV2 = runCli(['verify', before.bundle, '--trust', join(w.stateDir, 'trust.dsse.json')]);
    expect(underV2.status, 'signer-old is no capsule signer in v2').toBe(1);
  });

  it('the leaked root key cannot sign v3 even with a current root (A + B: A counts for nothing in v2) (TRUST_SIGNATURE)', () => {
    const v3 = rotatedBody(w.v2Body, { version: 3 });
    expectRefused(w, w.file(signTrust(v3, [w.keys.rootA, w.keys.rootB])), 'TRUST_SIGNATURE', 3);
  });

  it('a rollback is refused: v1 re-signed by the current roots, and another document of version 2 (TRUST_ROLLBACK)', () => {
    const roots = [w.keys.rootB, w.keys.rootC, w.keys.rootD];
    expectRefused(w, w.file(signTrust({ ...w.v2Body, version: 1 }, roots)), 'TRUST_ROLLBACK', 1);
    expectRefused(w, w.file(signTrust({ ...w.v2Body, policy: { allowedKinds: ['reproduce'] } }, roots)), 'TRUST_ROLLBACK', 2);
  });

  it('the original v1 file itself, offered again, is refused (its signers A and B are not a threshold of v2’s roots)', () => {
    expectRefused(w, w.file(w.v1), 'TRUST_SIGNATURE', 1);
  });
});

describe.skipIf(!built)('edge-runner trust update brings back a runner whose pinned trust has expired (needs dist/)', () => {
  it('exec refuses the expired pin; trust update (expiry is checked on the new document only) pins v2; exec runs again', async () => {
    const w = rotationWorld({ v1Expires: new Date(Date.now() + 3000).toISOString().replace(/\.\d+Z$/, 'Z') });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && runCli(['exec', w.capsule(w.keys.signerOld), '--state', w.stateDir]).status === 0) {
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const expired = w.exec(w.capsule(w.keys.signerOld));
    expect(expired.status).toBe(2);
    expect(expired.stderr).toContain('TRUST_EXPIRED');
    const result = w.update(w.file(w.v2));
    expect(result.status, result.stderr).toBe(0);
    expect(w.exec(w.capsule(w.keys.signerNew)).status).toBe(0);
  }, 30_000);
});

/** The states a crash inside an update can leave, made by hand, then opened by the real runner context. */
describe('a trust update cut short by a crash is finished or refused when the state is next opened', () => {
  const open = (w: World) => openRunner(w.stateDir, { launcher: directSelector });
  const record = (w: World, body: { fromVersion: number; toVersion: number; trustDigest: string; source: string }) => {
    const store = Store.open(join(w.stateDir, 'runner.db'));
    store.appendRecord('trust.updated', body);
    store.close();
  };
  const updated = (w: World) => ({ fromVersion: 1, toVersion: 2, trustDigest: `sha256:${sha256(w.v2)}`, source: 'file' });

  it('recorded and kept, the pin not moved yet (crash before the renames): finished at open, the context on v2', () => {
    const w = rotationWorld();
    writeFileSync(join(w.stateDir, 'trust', '2.dsse.json'), w.v2);
    record(w, updated(w));
    const ctx = open(w);
    try {
      expect(ctx.state.trust.body.version).toBe(2);
    } finally {
      ctx.close();
    }
    expect(pinOf(w.stateDir).trustSha256).toBe(sha256(w.v2));
    expect(pinOf(w.stateDir).trust.equals(w.v2)).toBe(true);
  });

  it('trust.dsse.json renamed, runner.json not (crash between the renames): finished at open', () => {
    const w = rotationWorld();
    writeFileSync(join(w.stateDir, 'trust', '2.dsse.json'), w.v2);
    record(w, updated(w));
    writeFileSync(join(w.stateDir, 'trust.dsse.json'), w.v2);
    const ctx = open(w);
    try {
      expect(ctx.state.trust.body.version).toBe(2);
      expect(ctx.state.identity.trustSha256).toBe(sha256(w.v2));
    } finally {
      ctx.close();
    }
    expect(pinOf(w.stateDir).trustSha256).toBe(sha256(w.v2));
  });

  it('trust.dsse.json replaced by a verified successor that the log never recorded: refused (STATE_TRUST_MISMATCH), nothing moved', () => {
    const w = rotationWorld();
    writeFileSync(join(w.stateDir, 'trust.dsse.json'), w.v2);
    expect(() => open(w)).toThrow(expect.objectContaining({ code: 'STATE_TRUST_MISMATCH' }));
    expect(pinOf(w.stateDir).trustSha256).toBe(sha256(w.v1));
  });

  it('trust.dsse.json replaced by a document that is no successor: refused (STATE_TRUST_MISMATCH) as before', () => {
    const w = rotationWorld();
    writeFileSync(join(w.stateDir, 'trust.dsse.json'), signTrust({ ...w.v2Body } as TrustDocumentBody, [w.keys.rootD]));
    expect(() => open(w)).toThrow(expect.objectContaining({ code: 'STATE_TRUST_MISMATCH' }));
  });

  it('kept but never recorded (crash between verifying and recording): the kept file is discarded, the pin stays v1', () => {
    const w = rotationWorld();
    writeFileSync(join(w.stateDir, 'trust', '2.dsse.json'), w.v2);
    const ctx = open(w);
    try {
      expect(ctx.state.trust.body.version).toBe(1);
    } finally {
      ctx.close();
    }
    expect(existsSync(join(w.stateDir, 'trust', '2.dsse.json'))).toBe(false);
    expect(pinOf(w.stateDir).trustSha256).toBe(sha256(w.v1));
  });

  it('a live agent finishes a move of its own that failed after the record (before its next fetch), without a second record', async () => {
    const w = rotationWorld();
    const ctx = open(w);
    try {
      // As a failed rename leaves it: kept and recorded, the pin not moved, the context still on v1.
      writeFileSync(join(w.stateDir, 'trust', '2.dsse.json'), w.v2);
      ctx.store.appendRecord('trust.updated', updated(w));
      const switched: number[] = [];
      const follower = new TrustFollower({
        target: ctx,
        // No coordinator holds a further version (what a real one answers: 404 FEED_TRUST_NOT_FOUND).
        client: { trust: async () => ({ kind: 'permanent' as const, code: 'FEED_TRUST_NOT_FOUND', status: 404 }) },
        logger: ctx.logger,
        clock: () => new Date(),
        onUpdated: (trust) => switched.push(trust.body.version),
      });
      expect(await follower.follow(Number.POSITIVE_INFINITY, new AbortController().signal)).toBe(2);
      expect(switched).toEqual([2]);
      expect(ctx.state.trust.body.version).toBe(2);
    } finally {
      ctx.close();
    }
    expect(pinOf(w.stateDir).trustSha256).toBe(sha256(w.v2));
    expect(trustRecords(w.stateDir).filter((r) => r.kind === 'trust.updated')).toHaveLength(1);
  });

  it('a record naming other bytes than the kept file does not finish it (the kept file is discarded)', () => {
    const w = rotationWorld();
    writeFileSync(join(w.stateDir, 'trust', '2.dsse.json'), w.v2);
    record(w, { ...updated(w), trustDigest: `sha256:${'0'.repeat(64)}` });
    const ctx = open(w);
    try {
      expect(ctx.state.trust.body.version).toBe(1);
    } finally {
      ctx.close();
    }
  });
});

describe('verifyTrustUpdate (pure): the version a document was offered as, and the expiry', () => {
  const w = rotationWorld();
  const current = verifyTrustDocument(w.v1);
  const roots = [w.keys.rootB, w.keys.rootC, w.keys.rootD];

  it('a document offered as version 2 that carries version 3 is a fast-forward (TRUST_FAST_FORWARD); given as a file it is a skip', () => {
    const v3 = signTrust(rotatedBody(w.v2Body, { version: 3 }), roots);
    expect(codeOf(() => verifyTrustUpdate(current, v3, new Date(), { offeredVersion: 2 }))).toBe('TRUST_FAST_FORWARD');
    expect(codeOf(() => verifyTrustUpdate(current, v3, new Date()))).toBe('TRUST_VERSION_SKIP');
  });

  it('a document offered as version 2 that carries version 1 is a rollback (TRUST_ROLLBACK)', () => {
    expect(codeOf(() => verifyTrustUpdate(current, w.v1, new Date(), { offeredVersion: 2 }))).toBe('TRUST_ROLLBACK');
  });

  it('checks the new document’s expiry only when given a clock (finishing a recorded update, auditing a chain)', () => {
    const expired = signTrust({ ...w.v2Body, expires: '2020-01-01T00:00:00Z' }, roots);
    expect(codeOf(() => verifyTrustUpdate(current, expired, new Date()))).toBe('TRUST_EXPIRED');
    expect(verifyTrustUpdate(current, expired, undefined).body.version).toBe(2);
  });
});
