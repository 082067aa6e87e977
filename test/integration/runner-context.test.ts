/**
 * The runner context a long-running service holds: built once (state, one open store, config, clock,
 * launcher, logger), capsule after capsule through it, and nothing unsafe by default.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openRunner } from '../../runner/agent/runner.js';
import { runCapsule } from '../../runner/agent/run-capsule.js';
import { initState } from '../../runner/state/state.js';
import { Store } from '../../runner/store/store.js';
import { runCli } from '../helpers/cli.js';
import { codeOf } from '../helpers/codes.js';
import { directSelector } from '../helpers/runner.js';
import { makeWorld, type World } from '../helpers/world.js';

let world: World;
beforeEach(() => {
  world = makeWorld();
});
afterEach(() => world.cleanup());

const bytesOf = (value: unknown) => Buffer.from(JSON.stringify(value));

describe('openRunner', () => {
  it('refuses to open without a launcher: there is no default that runs steps unsandboxed', () => {
    expect(() => openRunner(world.stateDir, {} as never)).toThrow(/needs a launcher/);
  });

  it('takes capsule after capsule through one open store, and refuses a replay it has seen in the same life', async () => {
    const ctx = openRunner(world.stateDir, { launcher: directSelector });
    try {
      const first = world.capsule();
      const a = await runCapsule(ctx, bytesOf(first));
      const b = await runCapsule(ctx, bytesOf(world.capsule()));
      expect([a.kind, b.kind]).toEqual(['completed', 'completed']);
      const replay = await runCapsule(ctx, bytesOf(first));
      expect(replay).toMatchObject({ kind: 'rejected', code: 'CAPSULE_REPLAY' });
      const kinds = [...ctx.store.records()].map((r) => r.kind);
      expect(kinds.filter((k) => k === 'evidence.signed')).toHaveLength(2);
      expect(kinds.at(-1)).toBe('capsule.rejected');
      expect(ctx.store.merkle.size()).toBe(ctx.store.recordCount());
    } finally {
      ctx.close();
    }
  });

  it('closes, with a record, the runs a dead runner left behind before anything new is appended', () => {
    const store = Store.open(join(world.stateDir, 'runner.db'));
    store.startRun(
      { runId: '00000000-0000-4000-8000-000000000000', capsuleId: 'c', manifestDigest: `sha256:${'0'.repeat(64)}`, isolation: 'none' },
      { pid: 2 ** 22 + 3, start: 'gone' },
    );
    store.close();
    const ctx = openRunner(world.stateDir, { launcher: directSelector });
    try {
      expect(ctx.abortedOnOpen).toEqual(['00000000-0000-4000-8000-000000000000']);
      expect([...ctx.store.records()].at(-1)?.kind).toBe('run.aborted');
    } finally {
      ctx.close();
    }
  });

  describe('when the pinned trust document expires while the context is open', () => {
    it('accepts nothing more (STATE_TRUST_INVALID) and writes no record', async () => {
      let now = new Date();
      const ctx = openRunner(world.stateDir, { launcher: directSelector, clock: () => now });
      try {
        const before = ctx.store.recordCount();
        now = new Date(Date.parse(world.trustBody.expires) + 1000);
        const error = await runCapsule(ctx, bytesOf(world.capsule())).catch((err: unknown) => err);
        expect(
          codeOf(() => {
            throw error;
          }),
        ).toBe('STATE_TRUST_INVALID');
        expect(ctx.store.recordCount()).toBe(before);
      } finally {
        ctx.close();
      }
    });
  });

  it('is closed once, whatever the number of close calls', () => {
    const ctx = openRunner(world.stateDir, { launcher: directSelector });
    ctx.close();
    expect(() => ctx.close()).not.toThrow();
  });
});

describe('the configuration a context runs with', () => {
  const setSettings = (settings: unknown) => {
    const path = join(world.stateDir, 'runner.json');
    writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), settings }));
  };
  const sleeper = () => world.capsule({ steps: [{ name: 'sleep', run: ['/bin/sleep', '5'] }] });

  it('takes runner.json settings over the defaults (a 1 s default step timeout ends a 5 s step)', async () => {
    setSettings({ exec: { defaultStepTimeoutSeconds: 1, killGraceMs: 100 } });
    const ctx = openRunner(world.stateDir, { launcher: directSelector });
    try {
      expect(ctx.config.exec.defaultStepTimeoutSeconds).toBe(1);
      const outcome = await runCapsule(ctx, bytesOf(sleeper()));
      expect(outcome.kind === 'completed' && outcome.steps[0]!.status).toBe('timed-out');
    } finally {
      ctx.close();
    }
  });

  it('lets the environment override runner.json, and refuses a bad runner.json setting with CONFIG_INVALID', () => {
    setSettings({ exec: { defaultStepTimeoutSeconds: 1 } });
    const ctx = openRunner(world.stateDir, { launcher: directSelector, config: { env: { EDGE_RUNNER_STEP_TIMEOUT_SECONDS: '7' } } });
    expect(ctx.config.exec.defaultStepTimeoutSeconds).toBe(7);
    ctx.close();
    setSettings({ exec: { defaultStepTimeoutSeconds: -1 } });
    expect(codeOf(() => openRunner(world.stateDir, { launcher: directSelector }))).toBe('CONFIG_INVALID');
  });

  it('makes the CLI say CONFIG_INVALID and exit 2 for a bad environment value, before anything is recorded', () => {
    const file = world.writeCapsule(world.capsule());
    const result = runCli(['exec', file, '--state', world.stateDir], { env: { PATH: '/usr/bin:/bin', EDGE_RUNNER_LOG_LEVEL: 'loud' } });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('CONFIG_INVALID');
    const store = Store.open(join(world.stateDir, 'runner.db'));
    expect(store.recordCount()).toBe(0);
    store.close();
  });
});

describe('initState', () => {
  describe('when creating the database fails', () => {
    it('leaves nothing behind: no state folder, no staging folder', () => {
      const dir = join(world.dir, 'fresh');
      expect(() =>
        initState(dir, {
          id: 'runner-x',
          trustBytes: world.trustBytes,
          now: new Date(),
          createDatabase: () => {
            throw new Error('disk full');
          },
        }),
      ).toThrow('disk full');
      expect(existsSync(dir)).toBe(false);
      expect(existsSync(`${dir}.init-${process.pid}`)).toBe(false);
    });
  });

  it('creates the database inside the folder it stages, so the state folder appears with its database', () => {
    const dir = join(world.dir, 'fresh');
    const seen: string[] = [];
    initState(dir, {
      id: 'runner-x',
      trustBytes: world.trustBytes,
      now: new Date(),
      createDatabase: (path) => {
        seen.push(path);
        expect(existsSync(dir)).toBe(false);
        Store.open(path, { create: true }).close();
      },
    });
    // The staging folder has a random name (mkdtemp), beside the state folder.
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatch(new RegExp(`^${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.init-[A-Za-z0-9]{6}/runner\\.db$`));
    expect(existsSync(join(dir, 'runner.db'))).toBe(true);
    expect(existsSync(join(dir, 'runner.json'))).toBe(true);
  });
});
