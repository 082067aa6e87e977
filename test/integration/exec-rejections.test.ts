/**
 * `edge-runner exec` refusing capsules, through the built CLI in a child process: exit code 3, the reason
 * code on stderr, a `capsule.rejected` record in SQLite, and nothing executed.
 *
 * "Nothing executed" is checked two ways. `markerStep` would touch an absolute path in the world folder;
 * but the CLI runs steps in bwrap (read-only host, private /tmp) as an unprivileged user when it can, so on
 * such a host that marker cannot appear even for an accepted capsule. The step that proves it first is
 * `traceStep`: it prints a random token, and a run leaves the token's stdout blob in the local evidence
 * store (STATE/evidence/blobs/sha256-HEX), whatever the isolation. A positive control shows the trace
 * appearing when the same steps are accepted.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { openRawDb } from '../helpers/raw-db.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signEnvelope } from '../../runner/core/dsse.js';
import { sha256Hex } from '../../runner/core/digest.js';
import type { CapsuleFile } from '../../runner/capsule/capsule-file.js';
import { CAPSULE_PAYLOAD_TYPE } from '../../runner/capsule/manifest.js';
import type { ManifestTemplate } from '../../runner/capsule/pack.js';
import { Store } from '../../runner/store/store.js';
import { runCli } from '../helpers/cli.js';
import { makeWorld, markerStep, type World } from '../helpers/world.js';

interface Trace {
  token: string;
  /** The stdout blob `echo TOKEN` leaves in the evidence store when it runs. */
  blob: string;
  /** Where markerStep would leave its file. */
  marker: string;
}

function newTrace(world: World): Trace {
  const token = `ran-${randomBytes(12).toString('hex')}`;
  return {
    token,
    blob: join(world.stateDir, 'evidence', 'blobs', `sha256-${sha256Hex(Buffer.from(`${token}\n`))}`),
    marker: join(world.dir, `marker-${token}`),
  };
}

function traceSteps(trace: Trace): ManifestTemplate['steps'] {
  return [{ name: 'trace', run: ['/bin/echo', trace.token] }, markerStep(trace.marker)];
}

interface Record {
  seq: number;
  kind: string;
  leaf: { [field: string]: unknown };
}

function readRecords(world: World): Record[] {
  const db = openRawDb(join(world.stateDir, 'runner.db'), { readOnly: true });
  try {
    return (db.prepare('SELECT seq, kind, leaf FROM records_v1 ORDER BY seq').all() as { seq: number; kind: string; leaf: Uint8Array }[]).map(
      (row) => ({
        seq: row.seq,
        kind: row.kind,
        leaf: JSON.parse(Buffer.from(row.leaf).toString('utf8')) as Record['leaf'],
      }),
    );
  } finally {
    db.close();
  }
}

const fileDigestOf = (bytes: Buffer) => `sha256:${sha256Hex(bytes)}`;
const toBytes = (file: CapsuleFile) => Buffer.from(JSON.stringify(file));

function manifestOf(file: CapsuleFile): { [field: string]: unknown } {
  return JSON.parse(Buffer.from(file.envelope.payload, 'base64').toString('utf8')) as { [field: string]: unknown };
}

/** Re-signs a manifest object as is, valid or not. */
function resigned(world: World, manifest: unknown, blobs: CapsuleFile['blobs'] = {}): CapsuleFile {
  const payload = Buffer.from(JSON.stringify(manifest));
  return {
    mediaType: 'application/vnd.edge-runner.capsule-file.v1+json',
    envelope: signEnvelope(CAPSULE_PAYLOAD_TYPE, payload, world.signers),
    blobs,
  };
}

/** A capsule file of 64 MiB + 1 bytes: a valid capsule followed by whitespace, which JSON allows. */
function capsule64MiBPlusOne(world: World): string {
  const head = toBytes(world.capsule());
  const bytes = Buffer.alloc(64 * 1024 * 1024 + 1, 0x20);
  head.copy(bytes);
  return world.writeCapsule(bytes, 'too-large.capsule.json');
}

function exec(world: World, bytes: Buffer) {
  return runCli(['exec', world.writeCapsule(bytes), '--state', world.stateDir]);
}

describe('edge-runner exec', () => {
  let world: World; // capsule-signer threshold 2

  beforeAll(() => {
    world = makeWorld({ signerThreshold: 2 });
  });

  afterAll(() => {
    world.cleanup();
  });

  describe('when the same steps come in an accepted capsule (positive control)', () => {
    it('runs them: the trace blob appears and a run.started record is written', () => {
      const trace = newTrace(world);
      const bytes = toBytes(world.capsule({ steps: traceSteps(trace) }));
      const result = exec(world, bytes);
      expect([0, 1], result.stderr).toContain(result.status);
      expect(existsSync(trace.blob)).toBe(true);
      const records = readRecords(world);
      const accepted = records.find((r) => r.kind === 'capsule.accepted' && r.leaf.fileDigest === fileDigestOf(bytes));
      expect(accepted).toBeDefined();
      expect(records.some((r) => r.kind === 'run.started' && r.seq > accepted!.seq)).toBe(true);
    });
  });

  type Case = [string, string, (world: World, steps: ManifestTemplate['steps']) => CapsuleFile | Buffer];
  const cases: Case[] = [
    ['the file is not JSON', 'CAPSULE_UNPARSEABLE', (_w, steps) => Buffer.from(`{"steps": ${JSON.stringify(steps)}`)],
    ['it is signed by an outsider', 'CAPSULE_SIGNATURE_INVALID', (w, steps) => w.capsule({ steps }, {}, [w.outsider, w.outsider])],
    ['one of two required signers signed it', 'CAPSULE_SIGNATURE_THRESHOLD', (w, steps) => w.capsule({ steps }, {}, [w.signers[0]!])],
    [
      'it has expired',
      'CAPSULE_EXPIRED',
      (w, steps) => {
        const hourAgo = Date.now() - 3600_000;
        return w.capsule({
          steps,
          issuedAt: new Date(hourAgo - 60_000).toISOString(),
          notBefore: new Date(hourAgo - 60_000).toISOString(),
          expiresAt: new Date(hourAgo).toISOString(),
        });
      },
    ],
    ['it is addressed to another runner', 'CAPSULE_TARGET', (w, steps) => w.capsule({ steps, target: { runners: ['runner-elsewhere'] } })],
    [
      'its id and nonce were accepted before',
      'CAPSULE_REPLAY',
      (w, steps) => {
        const file = w.capsule({ steps });
        const manifest = manifestOf(file) as { id: string; nonce: string };
        const store = Store.open(join(w.stateDir, 'runner.db'));
        try {
          store.acceptCapsule(manifest.nonce, {
            capsuleId: manifest.id,
            capsuleKind: 'validate',
            manifestDigest: `sha256:${'0'.repeat(64)}`,
            signers: [],
          });
        } finally {
          store.close();
        }
        return file;
      },
    ],
    [
      'an input blob does not match its digest',
      'CAPSULE_INPUT_DIGEST',
      (w, steps) => {
        const file = w.capsule({ steps }, { 'input.txt': 'the signed bytes' });
        const [ref] = Object.keys(file.blobs) as [string];
        return { ...file, blobs: { [ref]: Buffer.from('other bytes').toString('base64') } };
      },
    ],
    [
      'a collect path leaves the workspace',
      'CAPSULE_PATH_ESCAPE',
      (w, steps) => resigned(w, { ...manifestOf(w.capsule({ steps })), collect: [{ path: '../../runner.key', as: 'file' }] }),
    ],
    [
      'its manifest has a field the schema does not know',
      'CAPSULE_SCHEMA',
      (w, steps) => resigned(w, { ...manifestOf(w.capsule({ steps })), shell: true }),
    ],
  ];

  describe.each(cases)('when %s', (_what, code, build) => {
    it(`exits 3 with ${code}, records the rejection, and runs nothing`, () => {
      const trace = newTrace(world);
      const built = build(world, traceSteps(trace));
      const bytes = Buffer.isBuffer(built) ? built : toBytes(built);
      const runsBefore = readdirSync(join(world.stateDir, 'runs')).length;
      const result = exec(world, bytes);

      expect(result.status, result.stderr).toBe(3);
      expect(result.stderr).toContain(code);
      expect(existsSync(trace.marker)).toBe(false);
      expect(existsSync(trace.blob)).toBe(false);
      expect(readdirSync(join(world.stateDir, 'runs')).length).toBe(runsBefore);

      const records = readRecords(world).filter((r) => r.leaf.fileDigest === fileDigestOf(bytes));
      expect(records.map((r) => [r.kind, r.leaf.code])).toEqual([['capsule.rejected', code]]);
    });
  });

  describe('when the capsule file is over the 64 MiB size cap', () => {
    it('exits 3 with CAPSULE_TOO_LARGE and records the rejection', () => {
      const rejectedBefore = readRecords(world).filter((r) => r.kind === 'capsule.rejected' && r.leaf.code === 'CAPSULE_TOO_LARGE').length;
      const file = capsule64MiBPlusOne(world);
      const result = runCli(['exec', file, '--state', world.stateDir]);
      rmSync(file);
      expect(result.status, result.stderr).toBe(3);
      expect(result.stderr).toContain('CAPSULE_TOO_LARGE');
      const rejectedAfter = readRecords(world).filter((r) => r.kind === 'capsule.rejected' && r.leaf.code === 'CAPSULE_TOO_LARGE').length;
      expect(rejectedAfter).toBe(rejectedBefore + 1);
    });
  });

  describe('when a capsule runs to the end', () => {
    it('writes accepted, run started, each step, run finished and evidence signed, in that order, all for one run', () => {
      const runWorld = makeWorld();
      try {
        const steps = [
          { name: 'first', run: ['/bin/true'] },
          { name: 'second', run: ['/bin/true'] },
        ];
        const result = runCli(['exec', runWorld.writeCapsule(runWorld.capsule({ steps })), '--state', runWorld.stateDir, '--json']);
        expect(result.status, result.stderr).toBe(0);
        const { runId, evidenceDigest } = JSON.parse(result.stdout) as { runId: string; evidenceDigest: string };
        const records = readRecords(runWorld);
        expect(records.map((r) => r.kind)).toEqual([
          'capsule.accepted',
          'run.started',
          'step.finished',
          'step.finished',
          'run.finished',
          'evidence.signed',
        ]);
        expect(records.slice(1).map((r) => r.leaf.runId)).toEqual(Array(5).fill(runId));
        expect(records.filter((r) => r.kind === 'step.finished').map((r) => [r.leaf.name, r.leaf.status])).toEqual([
          ['first', 'succeeded'],
          ['second', 'succeeded'],
        ]);
        expect(records.at(-1)!.leaf.evidenceDigest).toBe(evidenceDigest);
        expect(records.map((r) => r.seq)).toEqual([0, 1, 2, 3, 4, 5]);
      } finally {
        runWorld.cleanup();
      }
    });
  });

  describe('when a capsule that ran is presented again to a restarted runner', () => {
    it('exits 3 with CAPSULE_REPLAY and does not run it a second time', () => {
      const replayWorld = makeWorld();
      try {
        const trace = newTrace(replayWorld);
        // Only the trace step: the first run must pass (markerStep cannot write here under bwrap).
        const file = replayWorld.writeCapsule(replayWorld.capsule({ steps: [{ name: 'trace', run: ['/bin/echo', trace.token] }] }));

        const first = runCli(['exec', file, '--state', replayWorld.stateDir]);
        expect(first.status, first.stderr).toBe(0);
        expect(existsSync(trace.blob)).toBe(true);
        rmSync(trace.blob);

        const second = runCli(['exec', file, '--state', replayWorld.stateDir]);
        expect(second.status, second.stderr).toBe(3);
        expect(second.stderr).toContain('CAPSULE_REPLAY');
        expect(existsSync(trace.blob)).toBe(false);

        const kinds = readRecords(replayWorld).map((r) => [r.kind, r.leaf.code ?? null]);
        expect(kinds.filter(([kind]) => kind === 'capsule.accepted' || kind === 'capsule.rejected')).toEqual([
          ['capsule.accepted', null],
          ['capsule.rejected', 'CAPSULE_REPLAY'],
        ]);
        expect(kinds.filter(([kind]) => kind === 'run.started')).toHaveLength(1);
      } finally {
        replayWorld.cleanup();
      }
    });
  });

  describe('when the runner database cannot be written', () => {
    it('exits 2 with STORE_WRITE_FAILED and runs nothing', () => {
      const lockedWorld = makeWorld();
      const db = openRawDb(join(lockedWorld.stateDir, 'runner.db'));
      try {
        const trace = newTrace(lockedWorld);
        const file = lockedWorld.writeCapsule(lockedWorld.capsule({ steps: traceSteps(trace) }));
        db.exec('BEGIN EXCLUSIVE');
        // The CLI waits out its 5 s busy timeout, then must refuse to act.
        const result = runCli(['exec', file, '--state', lockedWorld.stateDir], { timeoutMs: 20_000 });
        db.exec('ROLLBACK');

        expect(result.status, result.stderr).toBe(2);
        expect(result.stderr).toContain('STORE_WRITE_FAILED');
        expect(existsSync(trace.marker)).toBe(false);
        expect(existsSync(trace.blob)).toBe(false);
        expect(readRecords(lockedWorld).map((r) => r.kind)).not.toContain('run.started');
      } finally {
        db.close();
        lockedWorld.cleanup();
      }
    }, 30_000);
  });
});
