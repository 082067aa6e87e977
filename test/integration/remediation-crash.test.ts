/**
 * SIGKILL of the real CLI (`edge-runner change approve`, which applies the change once authorized) in the
 * middle of an apply, of a verification and of a rollback: a preload (--require) wraps fs.renameSync and
 * kills the process itself at the Nth rename into the change target (writePlan and restorePlan rename each
 * file into place; they name folders through /proc/self/fd, so the preload resolves the folder). The next
 * open (`change resume`) rolls back or restores again, or verifies a change every file of which was written;
 * the log holds one change.applying: never applied twice.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readTree } from '../../runner/remediate/tree.js';
import { openRunner } from '../../runner/agent/runner.js';
import { currentProcess } from '../../runner/state/process.js';
import { CLI_ENTRY } from '../helpers/cli.js';
import { withRawDb } from '../helpers/raw-db.js';
import { directSelector } from '../helpers/runner.js';
import { auditLog, makeRemediationWorld, recordsOf, type RemediationWorld, type RemediationWorldOptions } from '../helpers/remediation.js';

const worlds: RemediationWorld[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});
const CAPS = { maxBytes: 1 << 20, maxEntries: 1000 };

/** Three files: docs/readme.md and ledger/rounding.txt modified, ledger/added.txt added (renames in path order). */
const PATCH = [
  '--- a/docs/readme.md',
  '+++ b/docs/readme.md',
  '@@ -1 +1 @@',
  '-# ledger',
  '+# ledger (half-even)',
  '--- a/ledger/rounding.txt',
  '+++ b/ledger/rounding.txt',
  '@@ -1 +1 @@',
  '-mode=floor',
  '+mode=half-even',
  '',
].join('\n');

function preload(dir: string): string {
  const path = join(dir, 'kill-at-target-rename.cjs');
  writeFileSync(
    path,
    [
      "const fs = require('node:fs');",
      "const { syncBuiltinESMExports } = require('node:module');",
      "const [count, when] = process.env.KILL_AT.split(':');",
      'const target = process.env.KILL_TARGET;',
      'const real = fs.renameSync;',
      'let seen = 0;',
      'fs.renameSync = function (from, to) {',
      '  let folder = "";',
      '  const m = /^\\/proc\\/(?:self|\\d+)\\/fd\\/(\\d+)\\//.exec(String(to));',
      '  try { folder = m ? fs.readlinkSync(`/proc/self/fd/${m[1]}`) : String(to); } catch {}',
      "  const hit = (folder === target || folder.startsWith(target + '/')) && ++seen === Number(count);",
      "  if (hit && when === 'before') process.kill(process.pid, 'SIGKILL');",
      '  const result = real.apply(this, arguments);',
      "  if (hit && when === 'after') process.kill(process.pid, 'SIGKILL');",
      '  return result;',
      '};',
      'syncBuiltinESMExports();',
    ].join('\n'),
  );
  return path;
}

function setUp(options: RemediationWorldOptions = {}) {
  const w = makeRemediationWorld(options);
  worlds.push(w);
  const before = readTree(w.target, CAPS).digest;
  const { result, json } = w.exec(
    w.remediate(
      { patch: 'fix.diff', files: [{ path: 'ledger/added.txt', action: 'add', from: 'added.txt' }] },
      { 'fix.diff': PATCH, 'added.txt': 'new\n' },
    ),
  );
  expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
  const proposal = { bundle: String(json!.bundle), evidence: String(json!.evidenceDigest) };
  const approvals = [w.approve(proposal, w.keys.alice, 'alice'), w.approve(proposal, w.keys.bob, 'bob')];
  const postState = w.remediationOf(proposal.bundle).remediation.postState;
  return { w, before, postState, approvals };
}

function killedApprove(w: RemediationWorld, approvals: string[], at: string, folder = w.target) {
  const env = { NODE_OPTIONS: `--require ${preload(w.dir)}`, KILL_AT: at, KILL_TARGET: folder };
  const killed = w.change(['approve', ...approvals], env);
  expect(killed.result.status, `${killed.result.stdout}${killed.result.stderr}`).toBeNull();
  expect(killed.result.stderr).toBe('');
}

const changeKinds = (w: RemediationWorld) =>
  recordsOf(w)
    .filter((r) => r.kind.startsWith('change.') && r.kind !== 'change.staged' && r.kind !== 'change.proposed')
    .map((r) => r.kind);
const stateOf = (w: RemediationWorld) => {
  const resumed = w.change(['resume']);
  expect(resumed.result.status, `${resumed.result.stdout}${resumed.result.stderr}`).toBe(0);
  return (resumed.json!.changes as Array<{ state: string; code?: string }>)[0]!;
};

describe.skipIf(!existsSync(CLI_ENTRY))('kill -9 of edge-runner change approve while it applies, verifies, rolls back (needs dist/)', () => {
  it('killed between two files of the apply: the next open rolls back (CHANGE_INTERRUPTED) to the pre-state digest', () => {
    const { w, before, approvals } = setUp();
    killedApprove(w, approvals, '2:before');
    expect(readTree(w.target, CAPS).digest).not.toBe(before); // one file written, not the others
    expect(stateOf(w)).toMatchObject({ state: 'rolled-back', code: 'CHANGE_INTERRUPTED' });
    expect(readTree(w.target, CAPS).digest).toBe(before);
    expect(changeKinds(w)).toEqual(['change.applying', 'change.rolling-back', 'change.rolled-back']);
    // Resumed again: nothing more happens (final).
    expect(stateOf(w)).toMatchObject({ state: 'rolled-back' });
    expect(changeKinds(w)).toHaveLength(3);
  });

  // The kept before-bytes are renamed into <state>/changes/<digest>/ after change.applying, before any write
  // to the target: two files, then the index (renames 1..3). Killed there, nothing of the plan is written.
  it.each(['1:before', '2:after', '3:after'])(
    'killed after change.applying and before the first write to the target (the snapshot, rename %s): the next open rolls back to the pre-state, never writing forward',
    (at) => {
      const { w, before, approvals } = setUp();
      killedApprove(w, approvals, at, join(w.stateDir, 'changes'));
      expect(readTree(w.target, CAPS).digest).toBe(before);
      expect(stateOf(w)).toMatchObject({ state: 'rolled-back', code: 'CHANGE_INTERRUPTED' });
      expect(readTree(w.target, CAPS).digest).toBe(before);
      expect(changeKinds(w)).toEqual(['change.applying', 'change.rolling-back', 'change.rolled-back']);
    },
  );

  it('killed after the last file of the apply: the next open finds the post-state, records it applied and verifies it, once', () => {
    const { w, postState, approvals } = setUp();
    killedApprove(w, approvals, '3:after');
    expect(readTree(w.target, CAPS).digest).toBe(postState);
    expect(stateOf(w)).toMatchObject({ state: 'verified' });
    expect(changeKinds(w)).toEqual(['change.applying', 'change.applied', 'change.verifying', 'change.verified']);
    expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=half-even\n');
  });

  it('killed during the health check (verifying): the next open rolls the change back (CHANGE_INTERRUPTED)', () => {
    const { w, before, approvals } = setUp({ healthCheck: ['/bin/sh', '-c', 'kill -9 $PPID; sleep 5'] });
    const killed = w.change(['approve', ...approvals]);
    expect(killed.result.status).toBeNull();
    expect(stateOf(w)).toMatchObject({ state: 'rolled-back', code: 'CHANGE_INTERRUPTED' });
    expect(readTree(w.target, CAPS).digest).toBe(before);
    expect(changeKinds(w)).toEqual(['change.applying', 'change.applied', 'change.verifying', 'change.rolling-back', 'change.rolled-back']);
  });

  it('killed between two files of a rollback (a failed health check): the next open restores again, to the pre-state digest', () => {
    const { w, before, approvals } = setUp({ healthCheck: ['/bin/false'] });
    killedApprove(w, approvals, '5:before'); // renames 1-3: the apply; 4: docs/readme.md restored; 5: ledger/rounding.txt
    expect(readFileSync(join(w.target, 'ledger', 'rounding.txt'), 'utf8')).toBe('mode=half-even\n');
    expect(stateOf(w)).toMatchObject({ state: 'rolled-back', code: 'CHANGE_HEALTH_CHECK_FAILED' });
    expect(readTree(w.target, CAPS).digest).toBe(before);
    expect(changeKinds(w)).toEqual(['change.applying', 'change.applied', 'change.verifying', 'change.rolling-back', 'change.rolled-back']);
    const audit = auditLog(w);
    expect(audit.status, `${audit.stdout}${audit.stderr}`).toBe(0);
  });
});

describe.skipIf(!existsSync(CLI_ENTRY))('a change held by a live process (needs dist/)', () => {
  it('is left alone by another open, and taken on once its holder is gone', async () => {
    const { w, before } = setUp();
    const ctx = openRunner(w.stateDir, { launcher: directSelector, config: { file: JSON.parse(readFileSync(w.configPath, 'utf8')) as never } });
    const [row] = ctx.store.openChanges();
    // This test process stands in for a runner applying the change: it holds it, alive.
    ctx.store.moveChange('change.applying', { changeDigest: row!.changeDigest, approvals: [] }, 'proposed', 'applying', {
      approvals: [],
      owner: currentProcess() ?? null,
    });
    ctx.close();
    expect(stateOf(w)).toMatchObject({ state: 'applying' }); // another command's open: still held, untouched
    // The holder "dies": a process identity that is not alive.
    withRawDb(join(w.stateDir, 'runner.db'), (db) => db.prepare('UPDATE changes_v1 SET owner_pid = 999999999').run());
    expect(stateOf(w)).toMatchObject({ state: 'rolled-back', code: 'CHANGE_INTERRUPTED' });
    expect(readTree(w.target, CAPS).digest).toBe(before);
  });
});
