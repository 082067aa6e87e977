/**
 * Interop: golang.org/x/mod/sumdb/note and .../tlog (an implementation that owes nothing to this project)
 * check the verifier key, signed checkpoints, inclusion and consistency proofs the runner produces.
 *
 * Needs Go and the x/mod sources offline: Debian packages `golang-go` and `golang-golang-x-mod-dev`, which
 * put the sources under /usr/share/gocode (override with EDGE_RUNNER_GOPATH). The checker is built in
 * GOPATH mode with GOPROXY=off, so nothing is downloaded. Without Go this suite fails when CI is set and is
 * skipped otherwise.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { runnerOrigin, signCheckpoint, toVerifierKey } from '../../runner/log/checkpoint.js';
import { MerkleTable } from '../../runner/store/merkle.js';
import { SqliteDatabase } from '../../runner/store/sqlite.js';

const GOPATH = process.env['EDGE_RUNNER_GOPATH'] ?? '/usr/share/gocode';
const CHECKER_SOURCE = fileURLToPath(new URL('../interop/go/main.go', import.meta.url));
const hasGo = spawnSync('go', ['version'], { encoding: 'utf8' }).status === 0;
const hasXMod = existsSync(join(GOPATH, 'src/golang.org/x/mod/sumdb/note/note.go'));
const available = hasGo && hasXMod;
const missing = !hasGo
  ? 'the `go` command is not installed (apt-get install -y golang-go golang-golang-x-mod-dev)'
  : `golang.org/x/mod is not under ${GOPATH}/src (apt-get install -y golang-golang-x-mod-dev, or set EDGE_RUNNER_GOPATH)`;

if (!available && process.env['CI']) {
  describe('Go interop (golang.org/x/mod/sumdb)', () => {
    it('has Go and golang.org/x/mod available on CI', () => {
      expect.fail(`Go interop cannot run: ${missing}.`);
    });
  });
}

interface CheckRequest {
  verifierKey: string;
  note: string;
  leafIndex: number;
  leafData?: string;
  leafHash: string;
  inclusionProof: string[];
  oldSize?: number;
  oldRoot?: string;
  consistencyProof?: string[];
}

interface CheckResponse {
  ok: boolean;
  step?: string;
  error?: string;
  origin?: string;
  size?: number;
  root?: string;
}

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
const leafData = (i: number): Buffer => Buffer.from(`{"seq":${i},"kind":"run.started","runId":"r-${i}"}`);

describe.skipIf(!available)('Go interop (golang.org/x/mod/sumdb)', () => {
  let dir: string;
  let checker: string;
  let db: SqliteDatabase;
  let store: MerkleTable;
  const key = PrivateKey.generate();
  const origin = runnerOrigin('runner-interop', key.keyid);
  const verifierKey = toVerifierKey(origin, key.publicKey);

  const check = (request: CheckRequest): CheckResponse => {
    const result = spawnSync(checker, [], { input: JSON.stringify(request), encoding: 'utf8' });
    if (result.status !== 0 && result.status !== 1) throw new Error(`checker crashed: ${result.stderr}`);
    return JSON.parse(result.stdout) as CheckResponse;
  };

  const requestFor = (index: number, size: number, extra: Partial<CheckRequest> = {}): CheckRequest => ({
    verifierKey,
    note: signCheckpoint({ origin, size, rootHash: store.root(size), extensions: [] }, origin, key),
    leafIndex: index,
    leafData: b64(leafData(index)),
    leafHash: b64(store.leafHash(index)),
    inclusionProof: store.inclusionProof(index, size).map(b64),
    ...extra,
  });

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'go-interop-'));
    checker = join(dir, 'interop');
    const build = spawnSync('go', ['build', '-o', checker, CHECKER_SOURCE], {
      cwd: dir,
      encoding: 'utf8',
      env: {
        ...process.env,
        GO111MODULE: 'off',
        GOPATH,
        GOCACHE: join(dir, 'gocache'),
        GOPROXY: 'off',
        GOFLAGS: '',
        CGO_ENABLED: '0',
        GOTOOLCHAIN: 'local',
      },
    });
    if (build.status !== 0) throw new Error(`go build of the interop checker failed:\n${build.stderr}`);
    db = SqliteDatabase.open(join(dir, 'state.db'), { busyTimeoutMs: 5000 });
    store = new MerkleTable(db);
    store.migrate();
    store.appendBatch(Array.from({ length: 1000 }, (_, i) => leafData(i)));
  }, 120_000);

  afterAll(() => {
    db?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe('when given the runner`s verifier key and a signed checkpoint with an inclusion proof', () => {
    it.each([
      [0, 1],
      [0, 2],
      [1, 2],
      [2, 3],
      [5, 8],
      [6, 7],
      [999, 1000],
      [511, 1000],
      [512, 1000],
      [123, 777],
    ])('accepts leaf %i in the tree of %i leaves', (index, size) => {
      const response = check(requestFor(index, size));
      expect(response).toEqual({ ok: true, origin, size, root: b64(store.root(size)) });
    });
  });

  describe('when also given a consistency proof from an earlier checkpoint', () => {
    it.each([
      [1, 1000],
      [7, 8],
      [8, 1000],
      [333, 1000],
      [1000, 1000],
    ])('accepts the step from %i to %i leaves', (oldSize, size) => {
      const response = check(
        requestFor(0, size, {
          oldSize,
          oldRoot: b64(store.root(oldSize)),
          consistencyProof: store.consistencyProof(oldSize, size).map(b64),
        }),
      );
      expect(response.ok).toBe(true);
    });
  });

  describe('when the inclusion proof has one bit flipped', () => {
    it('is rejected by tlog.CheckRecord', () => {
      const request = requestFor(42, 1000);
      const proof = request.inclusionProof.map((h) => Buffer.from(h, 'base64'));
      proof[3]![0]! ^= 1;
      expect(check({ ...request, inclusionProof: proof.map(b64) })).toMatchObject({ ok: false, step: 'inclusion-proof' });
    });
  });

  describe('when the consistency proof comes from a rewritten history', () => {
    it('is rejected by tlog.CheckTree', () => {
      const request = requestFor(0, 1000, {
        oldSize: 300,
        oldRoot: b64(Buffer.alloc(32, 9)),
        consistencyProof: store.consistencyProof(300, 1000).map(b64),
      });
      expect(check(request)).toMatchObject({ ok: false, step: 'consistency-proof' });
    });
  });

  describe('when the checkpoint is signed by another key under the same name', () => {
    it('is rejected by note.Open', () => {
      const other = PrivateKey.generate();
      const note = signCheckpoint({ origin, size: 10, rootHash: store.root(10), extensions: [] }, origin, other);
      expect(check({ ...requestFor(3, 10), note })).toMatchObject({ ok: false, step: 'note' });
    });
  });

  describe('when the checkpoint text was changed after signing', () => {
    it('is rejected by note.Open', () => {
      const request = requestFor(3, 10);
      expect(check({ ...request, note: request.note.replace('\n10\n', '\n11\n') })).toMatchObject({ ok: false, step: 'note' });
    });
  });
});
