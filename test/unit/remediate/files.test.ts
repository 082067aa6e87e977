/**
 * Issue 11, writing a change to a real folder (runner/remediate/files.ts): readPlanned never goes through a
 * symlink, writePlan and restorePlan rename each file into place, re-check every folder at write time (a
 * folder swapped for a symlink after the plan is refused, and a swap racing the write never lands outside),
 * leave no temporary file, are idempotent, and a full disk leaves a tree restorePlan brings back exactly.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Change } from '../../../runner/capsule/manifest.js';
import { readPlanned, restorePlan, snapshotPlan, TEMP_PREFIX, tempNameOf, writePlan } from '../../../runner/remediate/files.js';
import { planChange, type FilePlan } from '../../../runner/remediate/patch.js';
import { readTree, type TreeCaps } from '../../../runner/remediate/tree.js';
import { codeOf } from '../../helpers/codes.js';

const CAPS: TreeCaps = { maxBytes: 64 * 1024 * 1024, maxEntries: 100_000 };
const isRoot = process.getuid?.() === 0;
const sleepMs = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Every name below `root` (recursively, symlinks not followed). */
function namesBelow(root: string): string[] {
  return readTree(root, CAPS).entries.map((e) => e.path);
}

describe('the change files', () => {
  let dir: string;
  let root: string;
  let outside: string;
  let snap: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-runner-change-files-'));
    root = join(dir, 'target');
    outside = join(dir, 'outside');
    snap = join(dir, 'snapshot');
    mkdirSync(join(root, 'conf'), { recursive: true });
    mkdirSync(outside);
    writeFileSync(join(root, 'conf', 'app.ini'), 'rounding = half-up\n');
    writeFileSync(join(root, 'conf', 'secret'), 'token\n');
    chmodSync(join(root, 'conf', 'secret'), 0o600);
    writeFileSync(join(root, 'old.txt'), 'to be deleted\n');
    writeFileSync(join(outside, 'app.ini'), 'OUTSIDE\n');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** The plan of a whole-files change against the real folder. */
  function planOf(files: Change['files'], inputs: Record<string, string>): FilePlan[] {
    const bytes = new Map(Object.entries(inputs).map(([k, v]) => [k, Buffer.from(v)]));
    return planChange({ target: 't', files }, bytes, (path) => readPlanned(root, path));
  }

  const PLAN_FILES: Change['files'] = [
    { path: 'conf/app.ini', action: 'replace', from: 'in/app.ini' },
    { path: 'conf/secret', action: 'replace', from: 'in/secret' },
    { path: 'old.txt', action: 'delete' },
    { path: 'new/deep/tool.sh', action: 'add', from: 'in/tool', executable: true },
  ];
  const PLAN_INPUTS = { 'in/app.ini': 'rounding = half-even\n', 'in/secret': 'new token\n', 'in/tool': '#!/bin/sh\n' };

  describe('readPlanned', () => {
    it('reads a plain file with its mode, and says absent for a missing file or folder', () => {
      expect(readPlanned(root, 'conf/secret')).toEqual({ bytes: Buffer.from('token\n'), mode: 0o600 });
      expect(readPlanned(root, 'conf/none')).toBe('absent');
      expect(readPlanned(root, 'none/x')).toBe('absent');
    });

    it('says not-a-file for a symlink, a symlink on the way, a folder, a file on the way, and a fifo (without hanging on it)', () => {
      symlinkSync(join(outside, 'app.ini'), join(root, 'link'));
      symlinkSync(outside, join(root, 'dirlink'));
      expect(spawnSync('mkfifo', [join(root, 'pipe')]).status).toBe(0);
      expect(readPlanned(root, 'link')).toBe('not-a-file');
      expect(readPlanned(root, 'dirlink/app.ini')).toBe('not-a-file');
      expect(readPlanned(root, 'conf')).toBe('not-a-file');
      expect(readPlanned(root, 'old.txt/x')).toBe('not-a-file');
      expect(readPlanned(root, 'pipe')).toBe('not-a-file');
      expect(readPlanned(root, '../outside/app.ini')).toBe('not-a-file');
    });

    it('makes planChange reject with CHANGE_PATH_ESCAPE a change through a symlink inside the target pointing outside', () => {
      symlinkSync(outside, join(root, 'shared'));
      const code = codeOf(() => planOf([{ path: 'shared/app.ini', action: 'replace', from: 'in' }], { in: 'pwned\n' }));
      expect(code).toBe('CHANGE_PATH_ESCAPE');
      expect(readFileSync(join(outside, 'app.ini'), 'utf8')).toBe('OUTSIDE\n');
    });
  });

  describe('writePlan', () => {
    it('writes every file, creates missing folders 0755 whatever the umask, keeps modes, deletes, and leaves no temporary file', () => {
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      const umask = process.umask(0o077);
      try {
        writePlan(root, plan);
      } finally {
        process.umask(umask);
      }
      expect(readFileSync(join(root, 'conf', 'app.ini'), 'utf8')).toBe('rounding = half-even\n');
      expect(statSync(join(root, 'conf', 'secret')).mode & 0o7777).toBe(0o600);
      expect(existsSync(join(root, 'old.txt'))).toBe(false);
      expect(statSync(join(root, 'new')).mode & 0o7777).toBe(0o755);
      expect(statSync(join(root, 'new', 'deep')).mode & 0o7777).toBe(0o755);
      expect(statSync(join(root, 'new', 'deep', 'tool.sh')).mode & 0o7777).toBe(0o755);
      expect(namesBelow(root).filter((name) => name.includes(TEMP_PREFIX))).toEqual([]);
    });

    it('is idempotent: a second writePlan leaves the tree as the first one did', () => {
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      writePlan(root, plan);
      const once = readTree(root, CAPS).digest;
      writePlan(root, plan);
      expect(readTree(root, CAPS).digest).toBe(once);
    });

    it('rejects with CHANGE_TARGET_CHANGED, and never overwrites, a file someone changed or made since the plan', () => {
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      writeFileSync(join(root, 'conf', 'app.ini'), 'the operator edited this\n');
      expect(codeOf(() => writePlan(root, plan))).toBe('CHANGE_TARGET_CHANGED');
      expect(readFileSync(join(root, 'conf', 'app.ini'), 'utf8')).toBe('the operator edited this\n');
      writeFileSync(join(root, 'conf', 'app.ini'), 'rounding = half-up\n');
      mkdirSync(join(root, 'new', 'deep'), { recursive: true });
      writeFileSync(join(root, 'new', 'deep', 'tool.sh'), 'someone else made this\n');
      expect(codeOf(() => writePlan(root, plan))).toBe('CHANGE_TARGET_CHANGED');
      expect(readFileSync(join(root, 'new', 'deep', 'tool.sh'), 'utf8')).toBe('someone else made this\n');
    });

    it('gives the same tree on a copy and on the real folder (the post-state a proposal names is what apply writes)', () => {
      const copy = join(dir, 'copy');
      spawnSync('cp', ['-a', root, copy]);
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      writePlan(copy, plan);
      writePlan(root, plan);
      expect(readTree(root, CAPS).digest).toBe(readTree(copy, CAPS).digest);
    });

    it('rejects with CHANGE_PATH_ESCAPE a folder swapped for a symlink after the plan, and writes nothing outside', () => {
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      rmSync(join(root, 'conf'), { recursive: true });
      symlinkSync(outside, join(root, 'conf'));
      expect(codeOf(() => writePlan(root, plan))).toBe('CHANGE_PATH_ESCAPE');
      expect(readdirSync(outside)).toEqual(['app.ini']);
      expect(readFileSync(join(outside, 'app.ini'), 'utf8')).toBe('OUTSIDE\n');
    });

    it('rejects with CHANGE_PATH_ESCAPE a file swapped for a symlink, or for a folder, after the plan', () => {
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      rmSync(join(root, 'conf', 'app.ini'));
      symlinkSync(join(outside, 'app.ini'), join(root, 'conf', 'app.ini'));
      expect(codeOf(() => writePlan(root, plan))).toBe('CHANGE_PATH_ESCAPE');
      expect(readFileSync(join(outside, 'app.ini'), 'utf8')).toBe('OUTSIDE\n');
      rmSync(join(root, 'conf', 'app.ini'));
      mkdirSync(join(root, 'conf', 'app.ini'));
      expect(codeOf(() => writePlan(root, plan))).toBe('CHANGE_PATH_ESCAPE');
    });

    it('rejects with CHANGE_PATH_ESCAPE a new folder a local user made a symlink first', () => {
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      symlinkSync(outside, join(root, 'new'));
      expect(codeOf(() => writePlan(root, plan))).toBe('CHANGE_PATH_ESCAPE');
      expect(readdirSync(outside)).toEqual(['app.ini']);
    });

    it('rejects with CHANGE_PATH_ESCAPE a plan read back with a path or digest that leaves the target or the snapshot', () => {
      const bytes = Buffer.from('pwned\n');
      const escaping: FilePlan = {
        path: '../outside/x',
        action: 'add',
        after: { bytes, sha256: 'a'.repeat(64), mode: 0o644 },
        linesAdded: 1,
        linesRemoved: 0,
      };
      expect(codeOf(() => writePlan(root, [escaping]))).toBe('CHANGE_PATH_ESCAPE');
      const [file] = planOf([{ path: 'conf/app.ini', action: 'delete' }], {});
      const forged: FilePlan = { ...file!, before: { ...file!.before!, sha256: '../../outside/app.ini' } };
      expect(codeOf(() => snapshotPlan(root, [forged], snap))).toBe('CHANGE_PATH_ESCAPE');
      expect(codeOf(() => restorePlan(root, [forged], snap))).toBe('CHANGE_PATH_ESCAPE');
      expect(readdirSync(outside)).toEqual(['app.ini']);
    });

    it('never writes outside while a local user swaps a folder for a symlink and back as fast as they can', async () => {
      const plan = planOf([{ path: 'conf/app.ini', action: 'replace', from: 'in' }], { in: 'changed\n' });
      // The swapper: conf <-> a symlink to outside, in a loop, until killed.
      const swapper = spawn(
        'bash',
        [
          '-c',
          // Self-healing: a conf folder writePlan made in a gap (conf missing) is removed before the real one comes back.
          `cd "${root}" && while :; do mv -T conf conf.real && ln -sT "${outside}" conf && rm -f conf; rm -rf conf; mv -T conf.real conf; done`,
        ],
        { stdio: 'ignore' },
      );
      const outcomes = { written: 0, refused: 0, other: 0 };
      const otherCodes = new Set<string>();
      try {
        await sleepMs(50);
        // Until the race was met a few times (a loaded machine may starve the swapper for a while), bounded.
        const deadline = Date.now() + 10_000;
        while (Date.now() < deadline && outcomes.refused + outcomes.other < 5) {
          const code = codeOf(() => writePlan(root, plan));
          if (code === undefined) outcomes.written += 1;
          else if (code === 'CHANGE_PATH_ESCAPE') outcomes.refused += 1;
          else {
            outcomes.other += 1;
            otherCodes.add(code);
          }
        }
      } finally {
        swapper.kill('SIGKILL');
        await new Promise((resolve) => swapper.once('exit', resolve));
      }
      // What matters: nothing was written outside. The swap met writePlan (a symlink found on the way, or the
      // folder missing mid-swap: which one depends on the machine's timing), so the race was exercised.
      expect(readdirSync(outside)).toEqual(['app.ini']);
      expect(readFileSync(join(outside, 'app.ini'), 'utf8')).toBe('OUTSIDE\n');
      expect(outcomes.refused + outcomes.other, JSON.stringify({ ...outcomes, otherCodes: [...otherCodes] })).toBeGreaterThan(0);
    });
  });

  describe('snapshotPlan and restorePlan', () => {
    it('put back every planned path after a writePlan: the digest equals the pre-state, owners and modes too', () => {
      chmodSync(join(root, 'conf', 'app.ini'), 0o4750);
      const pre = readTree(root, CAPS).digest;
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      snapshotPlan(root, plan, snap);
      writePlan(root, plan);
      expect(readTree(root, CAPS).digest).not.toBe(pre);
      restorePlan(root, plan, snap);
      expect(readTree(root, CAPS).digest).toBe(pre);
      expect(existsSync(join(root, 'new'))).toBe(false);
      restorePlan(root, plan, snap);
      expect(readTree(root, CAPS).digest).toBe(pre);
    });

    it('keeps a folder the plan created when something else was put in it since (the digest check then fails)', () => {
      const pre = readTree(root, CAPS).digest;
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      snapshotPlan(root, plan, snap);
      writePlan(root, plan);
      writeFileSync(join(root, 'new', 'deep', 'someone-else'), '');
      restorePlan(root, plan, snap);
      expect(existsSync(join(root, 'new', 'deep', 'someone-else'))).toBe(true);
      expect(existsSync(join(root, 'new', 'deep', 'tool.sh'))).toBe(false);
      expect(readTree(root, CAPS).digest).not.toBe(pre);
    });

    it("keeps the first snapshot when snapshotPlan runs again after the write began, and refuses another plan's", () => {
      const pre = readTree(root, CAPS).digest;
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      snapshotPlan(root, plan, snap);
      writePlan(root, plan);
      snapshotPlan(root, plan, snap); // a resumed apply: the target is the post-state now
      restorePlan(root, plan, snap);
      expect(readTree(root, CAPS).digest).toBe(pre);
      const other = planOf([{ path: 'conf/app.ini', action: 'delete' }], {});
      expect(codeOf(() => snapshotPlan(root, other, snap))).toBe('CHANGE_RESTORE_FAILED');
    });

    it('does nothing without a snapshot index (snapshotPlan never finished, so writePlan never began), even to a file someone else changed', () => {
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      writeFileSync(join(root, 'conf', 'app.ini'), 'edited by the operator\n');
      const before = readTree(root, CAPS).digest;
      restorePlan(root, plan, join(dir, 'no-snapshot'));
      expect(readTree(root, CAPS).digest).toBe(before);
      expect(readFileSync(join(root, 'conf', 'app.ini'), 'utf8')).toBe('edited by the operator\n');
    });

    it('rejects with CHANGE_TARGET_CHANGED a target that changed since the plan, and with CHANGE_RESTORE_FAILED a snapshot that was altered', () => {
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      writeFileSync(join(root, 'conf', 'app.ini'), 'edited by someone\n');
      expect(codeOf(() => snapshotPlan(root, plan, snap))).toBe('CHANGE_TARGET_CHANGED');
      writeFileSync(join(root, 'conf', 'app.ini'), 'rounding = half-up\n');
      snapshotPlan(root, plan, snap);
      writePlan(root, plan);
      const kept = plan.find((p) => p.path === 'conf/app.ini')!.before!.sha256;
      writeFileSync(join(snap, kept), 'tampered\n');
      expect(codeOf(() => restorePlan(root, plan, snap))).toBe('CHANGE_RESTORE_FAILED');
    });

    it('removes the temporary files a killed write left beside the files, and only those', () => {
      const plan = planOf(PLAN_FILES, PLAN_INPUTS);
      snapshotPlan(root, plan, snap);
      writePlan(root, plan);
      // What writes killed between their create and their rename leave: the plan's own fixed names.
      for (const file of plan) {
        const folder = join(root, file.path, '..');
        mkdirSync(folder, { recursive: true });
        writeFileSync(join(folder, tempNameOf(file.path)), 'half a file');
      }
      writeFileSync(join(root, 'conf', `${TEMP_PREFIX}someone-elses`), '');
      const pre = readTree(root, CAPS).entries.filter((e) => !e.path.includes(TEMP_PREFIX) || e.path.endsWith('someone-elses'));
      restorePlan(root, plan, snap);
      expect(namesBelow(root).filter((name) => name.includes(TEMP_PREFIX))).toEqual([`conf/${TEMP_PREFIX}someone-elses`]);
      expect(pre.length).toBeGreaterThan(0);
    });

    it.runIf(isRoot)("restores the owner of a file the write replaced, and a new file takes its folder's owner (root only)", () => {
      spawnSync('chown', ['1234:2345', join(root, 'conf', 'app.ini')]);
      spawnSync('chown', ['3456:4567', join(root, 'conf')]);
      const plan = planOf(
        [
          { path: 'conf/app.ini', action: 'replace', from: 'in' },
          { path: 'conf/new', action: 'add', from: 'in' },
        ],
        { in: 'x\n' },
      );
      snapshotPlan(root, plan, snap);
      writePlan(root, plan);
      expect([statSync(join(root, 'conf', 'app.ini')).uid, statSync(join(root, 'conf', 'app.ini')).gid]).toEqual([1234, 2345]);
      expect([statSync(join(root, 'conf', 'new')).uid, statSync(join(root, 'conf', 'new')).gid]).toEqual([3456, 4567]);
      restorePlan(root, plan, snap);
      expect([statSync(join(root, 'conf', 'app.ini')).uid, statSync(join(root, 'conf', 'app.ini')).gid]).toEqual([1234, 2345]);
    });
  });

  describe.runIf(isRoot)('on a full disk (a 1 MiB tmpfs as the target; needs root)', () => {
    let mounted = false;
    beforeEach(() => {
      rmSync(root, { recursive: true, force: true });
      mkdirSync(root);
      const result = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'tmpfs', root], { encoding: 'utf8' });
      if (result.status !== 0) throw new Error(`mount failed: ${result.stderr}`);
      mounted = true;
      mkdirSync(join(root, 'conf'));
      for (let i = 0; i < 20; i++) writeFileSync(join(root, 'conf', `f${String(i).padStart(2, '0')}`), `before ${i}\n`);
    });
    afterEach(() => {
      if (mounted) spawnSync('umount', ['-l', root]);
      mounted = false;
    });

    it('fails with STATE_DISK_FULL halfway, leaves no temporary file, and restorePlan brings back the pre-state', () => {
      const pre = readTree(root, CAPS).digest;
      const files: Change['files'] = Array.from({ length: 20 }, (_, i) => ({
        path: `conf/f${String(i).padStart(2, '0')}`,
        action: 'replace' as const,
        from: i === 12 ? 'in/big' : 'in/small',
      }));
      const plan = planOf(files, { 'in/small': 'after\n', 'in/big': 'x'.repeat(2 * 1024 * 1024) });
      snapshotPlan(root, plan, snap);
      expect(codeOf(() => writePlan(root, plan))).toBe('STATE_DISK_FULL');
      const names = readdirSync(join(root, 'conf'));
      expect(names.filter((name) => name.startsWith(TEMP_PREFIX))).toEqual([]);
      // Files before the big one were written, the ones after it not: a mixed tree, which restore undoes.
      expect(readFileSync(join(root, 'conf', 'f00'), 'utf8')).toBe('after\n');
      expect(readFileSync(join(root, 'conf', 'f19'), 'utf8')).toBe('before 19\n');
      restorePlan(root, plan, snap);
      expect(readTree(root, CAPS).digest).toBe(pre);
    });
  });
});
