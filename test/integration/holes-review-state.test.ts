/**
 * A second review's variant of attack 12: a `--state` path that goes through a symlink another user owns
 * (in a sticky folder anyone can write), flipped by that user between the real state folder and a whole
 * state folder of their own (their key, trust document, runner.json and database). The permission check
 * passed on the real folder and the reads that followed went through the symlink again, to theirs. The
 * state folder is now resolved once and read only through its real path.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isCodedError } from '../../runner/core/errors.js';
import { loadState } from '../../runner/state/state.js';
import { TRUST_MAX_BYTES } from '../../runner/trust/trust.js';
import { makeWorld, type World } from '../helpers/world.js';

const isRoot = process.getuid?.() === 0;
const PYTHON = '/usr/bin/python3';
const worlds: World[] = [];
let linkDir: string | undefined;
afterAll(() => {
  for (const w of worlds) w.cleanup();
  if (linkDir) rmSync(linkDir, { recursive: true, force: true });
});

describe('review variant of attack 12: a state path through a symlink someone else flips', () => {
  it.runIf(isRoot && existsSync(PYTHON))(
    "never loads the other user's state folder, whatever the symlink points at when (needs root)",
    async () => {
      const real = makeWorld({ runnerId: 'runner-real-1' });
      const evil = makeWorld({ runnerId: 'runner-evil-9' });
      worlds.push(real, evil);
      expect(spawnSync('chown', ['-R', '65534:65534', evil.dir]).status).toBe(0);
      linkDir = mkdtempSync(join(tmpdir(), 'edge-runner-flip-'));
      chmodSync(linkDir, 0o1777);
      const link = join(linkDir, 'via');
      // As nobody: point `via` at the real world's folder and at their own, back and forth, for at most 30 s.
      const flip = `import os, time
t, l = ${JSON.stringify(join(linkDir, '.via-tmp'))}, ${JSON.stringify(link)}
end = time.time() + 30
while time.time() < end:
    for target in (${JSON.stringify(real.dir)}, ${JSON.stringify(evil.dir)}):
        try: os.unlink(t)
        except FileNotFoundError: pass
        os.symlink(target, t); os.rename(t, l)
        time.sleep(0.0002)`;
      const flipper = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', PYTHON, '-c', flip], { stdio: 'ignore' });
      try {
        for (let i = 0; i < 100 && !existsSync(link); i++) await new Promise((resolve) => setTimeout(resolve, 20));
        const seen = new Map<string, number>();
        for (let i = 0; i < 300; i++) {
          let outcome: string;
          try {
            outcome = loadState(join(link, 'state'), new Date()).identity.id;
          } catch (err) {
            if (!isCodedError(err)) throw err;
            outcome = err.code;
          }
          seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
        }
        expect(seen.has('runner-evil-9'), JSON.stringify([...seen])).toBe(false);
        expect(seen.get('runner-real-1') ?? 0, 'the real folder still loads through the link').toBeGreaterThan(0);
        expect([...seen.keys()].filter((k) => k !== 'runner-real-1').every((k) => k === 'STATE_PERMISSIONS')).toBe(true);
      } finally {
        flipper.kill('SIGKILL');
      }
    },
    60_000,
  );
});

describe('the pinned trust document is read under its cap', () => {
  it('a trust file over TRUST_MAX_BYTES is refused (STATE_TRUST_INVALID, TRUST_TOO_LARGE) before it is read whole', () => {
    const w = makeWorld();
    worlds.push(w);
    writeFileSync(join(w.stateDir, 'trust.dsse.json'), Buffer.alloc(TRUST_MAX_BYTES + 1, 0x20));
    expect(() => loadState(w.stateDir, new Date())).toThrow(
      expect.objectContaining({ code: 'STATE_TRUST_INVALID', details: { trustCode: 'TRUST_TOO_LARGE' } }),
    );
  });
});
