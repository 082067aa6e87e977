/**
 * A hostile review of approvals carried to an air-gapped runner (runner/spool/approvals.ts, the spool agent
 * in this process with an injected clock, a real state folder and store, steps run directly): what the
 * agent does with an approval that is refused only for the time.
 */
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  linkSync,
  lutimesSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import { SpoolAgent } from '../../runner/agent/spool-agent.js';
import { CAPS } from '../../runner/protocol/wire.js';
import { SpoolApprovals } from '../../runner/spool/approvals.js';
import { makeRemediationLinkWorld, readHeldBundle, type RemediationLinkWorld } from '../helpers/remediation-link.js';
import { directSelector } from '../helpers/runner.js';
import { column, withRawDb } from '../helpers/raw-db.js';

const approvalRecords = (stateDir: string) =>
  withRawDb(join(stateDir, 'runner.db'), (db) => column<string>(db, "SELECT kind FROM records_v1 WHERE kind LIKE 'approval.%' ORDER BY seq"), {
    readOnly: true,
  });

let nowMs = Date.now();
const contexts: RunnerContext[] = [];
const worlds: RemediationLinkWorld[] = [];
afterEach(() => {
  for (const ctx of contexts.splice(0)) ctx.close();
  for (const w of worlds.splice(0)) w.world.cleanup();
});

/** Writes a file last modified a minute before the injected now (settled). */
function settled(path: string, bytes: Buffer | string): void {
  writeFileSync(path, bytes);
  const at = new Date(nowMs - 60_000);
  utimesSync(path, at, at);
}

describe('approvals in a spool', () => {
  it('one refused as not yet valid (signed ahead of the runner clock) is read again once the clock reaches it, not only after a restart: the change is applied', async () => {
    nowMs = Date.now();
    const w = makeRemediationLinkWorld({ runnerId: 'runner-spool-later' });
    worlds.push(w);
    const ctx = openRunner(w.world.stateDir, {
      launcher: directSelector,
      clock: () => new Date(nowMs),
      config: { flags: { targets: w.config.targets } },
    });
    contexts.push(ctx);
    const spool = join(w.world.dir, 'spool');
    mkdirSync(join(spool, 'in'), { recursive: true });
    const agent = new SpoolAgent(ctx, { dir: spool, now: () => nowMs, sleep: async () => {} });
    settled(join(spool, 'in', 'fix.capsule.json'), w.capsule());
    await agent.lookOnce();
    const bundles = () => {
      const dir = join(spool, 'out', 'bundles');
      return existsSync(dir)
        ? readdirSync(dir)
            .filter((n) => n.endsWith('.bundle.json'))
            .map((n) => readHeldBundle(readFileSync(join(dir, n))))
        : [];
    };
    const proposal = bundles().find((b) => b.statement.predicate.remediation?.phase === 'proposed');
    expect(proposal).toBeDefined();
    // Signed two minutes ahead of the runner's clock (the approver's clock, or the runner's, is off).
    const approvals = (['alice', 'bob'] as const).map((name) => w.approve(proposal!, name, new Date(nowMs + 120_000)));
    approvals.forEach((a, i) => settled(join(spool, 'in', `${i}.approval.json`), a.bytes));
    // Alice's also in another spelling: refused for the time once, not once per file.
    settled(join(spool, 'in', '2.approval.json'), JSON.stringify(JSON.parse(approvals[0]!.bytes)));
    await agent.lookOnce();
    expect(approvals.map((a) => ctx.store.approval(a.digest)?.code)).toEqual(['APPROVAL_NOT_YET_VALID', 'APPROVAL_NOT_YET_VALID']);
    expect(approvalRecords(w.world.stateDir)).toEqual(['approval.refused', 'approval.refused']);
    nowMs += 30_000;
    await agent.lookOnce(); // not yet due: nothing decided again
    expect(approvals.map((a) => ctx.store.approval(a.digest)?.code)).toEqual(['APPROVAL_NOT_YET_VALID', 'APPROVAL_NOT_YET_VALID']);
    nowMs += 40_000;
    await agent.lookOnce();
    expect(approvals.map((a) => ctx.store.approval(a.digest)?.status)).toEqual(['accepted', 'accepted']);
    expect(ctx.store.change(proposal!.statement.predicate.remediation!.change)?.state).toBe('verified');
    const records = ctx.store.recordCount();
    nowMs += 600_000;
    await agent.lookOnce(); // decided: not read again
    expect(ctx.store.recordCount()).toBe(records);
  }, 120_000);

  it('an authorized change that waited for room on the state disk (RUN_DISK_RESERVE) is applied by the running agent once there is room', async () => {
    nowMs = Date.now();
    const w = makeRemediationLinkWorld({ runnerId: 'runner-spool-room' });
    worlds.push(w);
    const opened = openRunner(w.world.stateDir, {
      launcher: directSelector,
      clock: () => new Date(nowMs),
      config: { flags: { targets: w.config.targets } },
    });
    contexts.push(opened);
    let full = false;
    const fullConfig = { ...opened.config, store: { ...opened.config.store, reserveBytes: 2 ** 60 } };
    const ctx = new Proxy(opened, { get: (target, name) => (name === 'config' && full ? fullConfig : Reflect.get(target, name)) });
    const spool = join(w.world.dir, 'spool');
    mkdirSync(join(spool, 'in'), { recursive: true });
    const agent = new SpoolAgent(ctx, { dir: spool, now: () => nowMs, sleep: async () => {}, waitingChangesEveryMs: 1000 });
    settled(join(spool, 'in', 'fix.capsule.json'), w.capsule());
    await agent.lookOnce();
    const dir = join(spool, 'out', 'bundles');
    const proposal = readdirSync(dir)
      .map((n) => readHeldBundle(readFileSync(join(dir, n))))
      .find((b) => b.statement.predicate.remediation?.phase === 'proposed')!;
    const change = proposal.statement.predicate.remediation!.change;
    full = true;
    (['alice', 'bob'] as const).forEach((name, i) => settled(join(spool, 'in', `${i}.approval.json`), w.approve(proposal, name).bytes));
    await agent.lookOnce();
    expect(opened.store.change(change)).toMatchObject({ state: 'proposed' });
    full = false;
    nowMs += 2000;
    await agent.lookOnce();
    expect(opened.store.change(change)?.state).toBe('verified');
  }, 120_000);
});

describe('what a local user drops into in/ as an approval', () => {
  it('a symlink, a hard link, a fifo, a folder and a file over the cap are passed over unread (with the reason), a dot-name is not looked at, a capsule name is not an approval', () => {
    nowMs = Date.now();
    const dir = mkdtempSync(join(tmpdir(), 'spool-approvals-'));
    try {
      const inDir = join(dir, 'in');
      mkdirSync(inDir);
      const secret = join(dir, 'secret.txt');
      writeFileSync(secret, 'not for the runner');
      symlinkSync(secret, join(inDir, 'link.approval.json'));
      settled(join(dir, 'original'), '{}');
      linkSync(join(dir, 'original'), join(inDir, 'hard.approval.json'));
      execFileSync('mkfifo', [join(inDir, 'fifo.approval.json')]);
      mkdirSync(join(inDir, 'folder.approval.json'));
      settled(join(inDir, 'huge.approval.json'), Buffer.alloc(CAPS.approvalBytes + 1, 0x20));
      settled(join(inDir, '.half.approval.json'), '{}');
      settled(join(inDir, 'x.approval.json.capsule.json'), '{}');
      for (const name of ['fifo.approval.json', 'folder.approval.json', 'link.approval.json']) {
        const at = new Date(nowMs - 60_000);
        lutimesSync(join(inDir, name), at, at);
      }
      const look = new SpoolApprovals({ inDir, now: () => nowMs }).look();
      expect(look.ready).toEqual([]);
      expect(Object.fromEntries(look.passedOver.map((p) => [p.name, p.reason]))).toEqual({
        'fifo.approval.json': 'not-regular',
        'folder.approval.json': 'not-regular',
        'hard.approval.json': 'linked',
        'huge.approval.json': 'too-large',
        'link.approval.json': 'not-regular',
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
