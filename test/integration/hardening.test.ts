/** Defences added after review: each test names the attack it stops. */
import { mkdirSync, rmSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execInState } from '../helpers/runner.js';
import { sandboxLauncherSelector } from '../../runner/agent/launcher.js';
import { resolveConfig } from '../../runner/config/config.js';

const selectLauncher = sandboxLauncherSelector();
import { parseBase64 } from '../../runner/core/base64.js';
import { signEnvelope } from '../../runner/core/dsse.js';
import { CAPSULE_PAYLOAD_TYPE } from '../../runner/capsule/manifest.js';
import { MANIFEST_MAX_BYTES } from '../../runner/capsule/capsule-file.js';
import { initState } from '../../runner/state/state.js';
import { Store } from '../../runner/store/store.js';
import { BlobStore } from '../../runner/state/blobs.js';
import { runStep } from '../../runner/exec/step.js';
import { DEFAULT_STEP_LIMITS, grantWorkspaceToStep, planLaunch, probeIsolation } from '../../runner/exec/sandbox.js';
import { makeWorld, type World } from '../helpers/world.js';
import { runCli } from '../helpers/cli.js';

describe('hardening', () => {
  let world: World;
  beforeEach(() => {
    world = makeWorld();
  });
  afterEach(() => world.cleanup());

  describe('when a capsule file carries an extra, unverified signature with a long keyid', () => {
    it('keeps only verified signatures, with their true keyids, in the bundle', async () => {
      const file = world.capsule();
      const secret = 'HOSTNAME=vault-01;SECRET=hunter2';
      file.envelope.signatures.push({ keyid: secret, sig: Buffer.alloc(64, 7).toString('base64') });
      const result = await execInState(world.stateDir, Buffer.from(JSON.stringify(file)));
      expect(result.kind).toBe('completed');
      if (result.kind !== 'completed') return;
      expect(JSON.stringify(result.bundle)).not.toContain('hunter2');
      expect(result.bundle.capsule.signatures).toEqual([{ keyid: world.signers[0]!.keyid, sig: expect.any(String) }]);
    });
  });

  describe('when a step sets a variable that steers the dynamic loader', () => {
    it('rejects the capsule with CAPSULE_POLICY before anything runs', async () => {
      const file = world.capsule({ steps: [{ name: 'preload', run: ['/bin/true'], env: { LD_PRELOAD: '/tmp/evil.so' } }] });
      const result = await execInState(world.stateDir, Buffer.from(JSON.stringify(file)));
      expect(result).toMatchObject({ kind: 'rejected', code: 'CAPSULE_POLICY' });
    });
  });

  describe('when the signed manifest is too large to travel on in a bundle', () => {
    it('rejects the capsule with CAPSULE_TOO_LARGE before anything runs, so every bundle stays verifiable', async () => {
      const long = 'x'.repeat(4000);
      const steps = Array.from({ length: 64 }, (_, i) => ({ name: `s${i}`, run: ['/bin/echo', ...Array.from({ length: 20 }, () => long)] }));
      const file = world.capsule({ steps });
      expect(Buffer.from(file.envelope.payload, 'base64').length).toBeGreaterThan(MANIFEST_MAX_BYTES);
      const result = await execInState(world.stateDir, Buffer.from(JSON.stringify(file)));
      expect(result).toMatchObject({ kind: 'rejected', code: 'CAPSULE_TOO_LARGE' });
    });
  });

  describe('when an argv or env value holds a NUL byte', () => {
    it('rejects the capsule with CAPSULE_SCHEMA', async () => {
      const file = world.capsule();
      const manifest = JSON.parse(parseBase64(file.envelope.payload).toString());
      manifest.steps[0].run = ['/bin/echo', 'a\u0000b'];
      // pack refuses to sign this, so sign it by hand as a careless or hostile signer would.
      const resigned = { ...file, envelope: signEnvelope(CAPSULE_PAYLOAD_TYPE, Buffer.from(JSON.stringify(manifest)), [world.signers[0]!]) };
      const result = await execInState(world.stateDir, Buffer.from(JSON.stringify(resigned)));
      expect(result).toMatchObject({ kind: 'rejected', code: 'CAPSULE_SCHEMA' });
    });
  });

  describe('when bubblewrap is unusable and the runner is not root', () => {
    it('refuses even a best-effort capsule rather than run a step as the runner itself', () => {
      const select = sandboxLauncherSelector({ bwrapPath: '/nonexistent/bwrap', runnerUid: 1000 });
      expect(select('best-effort', { stateDir: world.stateDir, config: resolveConfig() })).toEqual({
        unavailable: expect.stringContaining('not root'),
      });
    });
  });

  describe('when a step hard-links a file from outside the workspace into a collect path', () => {
    it('records the artifact as escaped and never reads it', async () => {
      const outside = join(world.dir, 'outside-secret.txt');
      writeFileSync(outside, 'outside secret bytes');
      const file = world.capsule({
        steps: [{ name: 'link', run: ['/bin/ln', outside, 'linked.txt'] }],
        collect: [{ path: 'linked.txt', as: 'file' }],
      });
      const result = await execInState(world.stateDir, Buffer.from(JSON.stringify(file)));
      if (result.kind !== 'completed') throw new Error(`expected a completed run, got ${result.kind}`);
      expect(result.steps[0]!.status).toBe('succeeded');
      const statement = JSON.parse(Buffer.from(result.bundle.evidence.payload, 'base64').toString());
      expect(statement.predicate.artifacts).toEqual([{ path: 'linked.txt', as: 'file', status: 'escaped' }]);
      expect(result.verdict).toBe('error');
    });
  });

  describe('when the runner database has been deleted', () => {
    it('refuses to run (STORE_OPEN_FAILED) instead of recreating it and forgetting every nonce', () => {
      for (const suffix of ['', '-wal', '-shm']) rmSync(join(world.stateDir, `runner.db${suffix}`), { force: true });
      const path = world.writeCapsule(world.capsule());
      const result = runCli(['exec', path, '--state', world.stateDir]);
      expect(result.status).toBe(2);
      expect(result.stderr).toContain('STORE_OPEN_FAILED');
      expect(existsSync(join(world.stateDir, 'runner.db'))).toBe(false);
    });
  });

  describe('when the runner database has been truncated to zero bytes', () => {
    it('refuses to run (STORE_OPEN_FAILED) instead of migrating an empty file into a new log', () => {
      for (const suffix of ['-wal', '-shm']) rmSync(join(world.stateDir, `runner.db${suffix}`), { force: true });
      writeFileSync(join(world.stateDir, 'runner.db'), '');
      const result = runCli(['exec', world.writeCapsule(world.capsule()), '--state', world.stateDir]);
      expect(result.status).toBe(2);
      expect(result.stderr).toContain('STORE_OPEN_FAILED');
    });
  });

  describe('when two commands start together after a crash', () => {
    it('ends each interrupted run exactly once, and neither fails', () => {
      const path = join(world.stateDir, 'runner.db');
      const a = Store.open(path);
      const b = Store.open(path);
      a.startRun(
        { runId: 'crashed', capsuleId: 'c', manifestDigest: `sha256:${'0'.repeat(64)}`, isolation: 'none' },
        { pid: 2 ** 22 + 9, start: 'gone' },
      );
      let fromB: string[] = [];
      // B runs its recovery while A is deciding: A's transaction must keep B out until it is done.
      const fromA = a.abortInterruptedRuns((owner) => {
        try {
          fromB = b.abortInterruptedRuns();
        } catch (err) {
          fromB = [`B failed: ${(err as Error).message}`];
        }
        return owner.start !== 'gone';
      });
      expect(fromA).toEqual(['crashed']);
      expect(fromB.length === 0 || fromB[0]!.startsWith('B failed')).toBe(true);
      expect(b.abortInterruptedRuns()).toEqual([]);
      expect([...a.records()].filter((r) => r.kind === 'run.aborted')).toHaveLength(1);
      a.close();
      b.close();
    });
  });

  describe('when a run is ended twice', () => {
    it('refuses the second end and writes no second record', () => {
      const store = Store.open(join(world.stateDir, 'runner.db'));
      store.startRun({ runId: 'r1', capsuleId: 'c', manifestDigest: `sha256:${'0'.repeat(64)}`, isolation: 'none' });
      store.finishRun({ runId: 'r1', verdict: 'pass' });
      const count = store.recordCount();
      expect(() => store.abortRun({ runId: 'r1', reason: 'RUN_INTERNAL' })).toThrow(expect.objectContaining({ code: 'STORE_WRITE_FAILED' }));
      expect(store.recordCount()).toBe(count);
      store.close();
    });
  });

  describe('when the state folder exists but is empty (systemd StateDirectory=)', () => {
    it('initialises it in place', () => {
      const dir = join(world.dir, 'precreated');
      mkdirSync(dir, { mode: 0o700 });
      initState(dir, {
        id: 'runner-x',
        trustBytes: world.trustBytes,
        now: new Date(),
        createDatabase: (path) => Store.open(path, { create: true }).close(),
      });
      expect(JSON.parse(readFileSync(join(dir, 'runner.json'), 'utf8')).id).toBe('runner-x');
    });
  });

  describe.each(['none', 'bwrap'] as const)('when a step in mode %s outlives its timeout', (mode) => {
    it('receives SIGTERM itself (its trap runs) before anything is killed', async () => {
      if (mode === 'bwrap' && probeIsolation().available !== 'bwrap') {
        if (process.env.CI) throw new Error('bwrap is required in CI');
        return;
      }
      const ws = join(world.dir, `ws-${mode}`);
      mkdirSync(ws);
      grantWorkspaceToStep(ws);
      const blobs = new BlobStore(join(world.dir, `blobs-${mode}`));
      const plan = planLaunch({
        argv: ['/bin/sh', '-c', 'trap "echo got-TERM; exit 7" TERM; sleep 30 & wait'],
        env: { PATH: '/usr/bin:/bin' },
        workspace: ws,
        limits: DEFAULT_STEP_LIMITS,
        mode,
        hide: [world.stateDir],
      });
      const outcome = await runStep({ plan, timeoutMs: 1000, killGraceMs: 3000, outputCapBytes: 4096, blobs, leaderIsStep: mode !== 'bwrap' });
      expect(outcome.timedOut).toBe(true);
      expect(outcome.durationMs).toBeLessThan(3500);
      expect(readFileSync(blobs.pathOf(outcome.stdout.digest), 'utf8')).toContain('got-TERM');
    });
  });

  describe('when init sets the step user (--step-uid)', () => {
    it('runs steps as that uid when the runner is root', async () => {
      if (process.getuid?.() !== 0) return; // only a root runner changes identity for its steps
      const dir = join(world.dir, 'custom-user');
      const init = runCli([
        'init',
        '--state',
        dir,
        '--id',
        world.runnerId,
        '--trust',
        world.trustPath,
        '--label',
        'test',
        '--step-uid',
        '12345',
        '--step-gid',
        '12346',
      ]);
      expect(init.status).toBe(0);
      expect(JSON.parse(readFileSync(join(dir, 'runner.json'), 'utf8')).stepUser).toEqual({ uid: 12345, gid: 12346 });
      const file = world.capsule({ steps: [{ name: 'whoami', run: ['/bin/sh', '-c', 'echo "$(id -u):$(id -g)"'] }] });
      const result = await execInState(dir, Buffer.from(JSON.stringify(file)), { launcher: selectLauncher });
      if (result.kind !== 'completed') throw new Error(`expected a completed run, got ${result.kind}`);
      const out = result.steps[0]!.stdout!.digest.replace(':', '-');
      expect(readFileSync(join(dir, 'evidence', 'blobs', out), 'utf8').trim()).toBe('12345:12346');
    });

    it('refuses uid 0 as a step user, as a usage error', () => {
      const dir = join(world.dir, 'root-user');
      const init = runCli(['init', '--state', dir, '--id', world.runnerId, '--trust', world.trustPath, '--step-uid', '0']);
      expect(init.status).toBe(2);
      expect(init.stderr).toContain('USAGE');
      expect(existsSync(dir)).toBe(false);
    });
  });

  describe('when base64 mixes the standard and URL-safe alphabets', () => {
    it('is refused, so one value has one encoding', () => {
      expect(() => parseBase64('Y+_a')).toThrow(/not valid base64/);
      expect(parseBase64('Y+/a')).toEqual(parseBase64('Y-_a'));
    });
  });
});
