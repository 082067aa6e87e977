/**
 * A local user who may write the spool folder, against the air-gapped agent (real runner context, real
 * SQLite store, injected clock): in/ or out/ themselves swapped for a symlink after the start, a sparse
 * file of a terabyte under a capsule name, and many files at the capsule cap in one look.
 */
import { mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import { SpoolAgent } from '../../runner/agent/spool-agent.js';
import { SpoolInbox } from '../../runner/spool/inbox.js';
import { makeLinkWorld, type LinkWorld } from '../helpers/agent-link.js';
import { directSelector } from '../helpers/runner.js';

let nowMs = Date.now();
const worlds: LinkWorld[] = [];
const contexts: RunnerContext[] = [];
const temps: string[] = [];
afterEach(() => {
  for (const ctx of contexts.splice(0)) ctx.close();
  for (const w of worlds.splice(0)) w.cleanup();
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

function setup() {
  nowMs = Date.now();
  const world = makeLinkWorld({ runnerId: 'runner-spool-holes' });
  worlds.push(world);
  const ctx = openRunner(world.stateDir, { launcher: directSelector, clock: () => new Date(nowMs) });
  contexts.push(ctx);
  const spool = join(world.dir, 'spool');
  const agent = new SpoolAgent(ctx, { dir: spool, now: () => nowMs, sleep: async () => {} });
  const capsule = () => world.capsule({ target: { runners: ['runner-spool-holes'] } });
  return { world, ctx, spool, agent, capsule };
}

/** Writes a file last modified a minute before the injected now (settled). */
function settled(path: string, bytes: Buffer | string): void {
  writeFileSync(path, bytes);
  const at = new Date(nowMs - 60_000);
  utimesSync(path, at, at);
}

/** The files in the answer folders under `dir`. */
const filesUnder = (dir: string): string[] => ['bundles', 'rejections', 'checkpoints'].flatMap((sub) => readdirSync(join(dir, sub)));

describe('a spool folder swapped after the agent started', () => {
  it('takes no file while out/ is a symlink, and writes no answer through out/ swapped while a capsule runs: it stays queued until out/ is a folder again', async () => {
    const { world, ctx, spool, agent, capsule } = setup();
    const elsewhere = join(spool, '..', 'elsewhere');
    for (const sub of ['bundles', 'rejections', 'checkpoints']) mkdirSync(join(elsewhere, sub), { recursive: true });
    const out = join(spool, 'out');
    const real = join(spool, 'out-real');
    renameSync(out, real);
    symlinkSync(elsewhere, out);
    settled(join(spool, 'in', 'a.capsule.json'), capsule());
    await agent.lookOnce();
    expect(agent.view.decided).toBe(0);
    rmSync(out);
    renameSync(real, out);
    await agent.lookOnce();
    expect(agent.view.decided).toBe(1);
    // Now the swap happens while a capsule runs (its step is the local user's hand).
    const swap = `mv '${out}' '${real}' && ln -s '${elsewhere}' '${out}'`;
    settled(
      join(spool, 'in', 'b.capsule.json'),
      world.capsule({ id: 'swap', target: { runners: ['runner-spool-holes'] }, steps: [{ name: 'swap', run: ['/bin/sh', '-c', swap] }] }),
    );
    await agent.lookOnce();
    expect(agent.view.decided).toBe(2);
    expect(filesUnder(elsewhere)).toEqual([]);
    expect(ctx.store.outboxStats().queued).toBe(1);
    rmSync(out);
    renameSync(real, out);
    nowMs += 120_000;
    await agent.lookOnce();
    expect(readdirSync(join(out, 'bundles')).filter((n) => !n.startsWith('.'))).toHaveLength(2);
    expect(ctx.store.outboxStats().queued).toBe(0);
  });

  it('reads nothing through in/ swapped for a symlink to another folder', async () => {
    const { spool, agent, capsule } = setup();
    const other = join(spool, '..', 'other');
    mkdirSync(other);
    settled(join(other, 'b.capsule.json'), capsule());
    renameSync(join(spool, 'in'), join(spool, 'in-real'));
    symlinkSync(other, join(spool, 'in'));
    await agent.lookOnce();
    expect(agent.view.decided).toBe(0);
  });
});

describe('a spool agent short of disk', () => {
  it('leaves files in in/ while the state is below its reserve and takes them once there is room (they were decided refused for ever)', async () => {
    const { ctx, spool, capsule } = setup();
    const tight = { ...ctx, config: { ...ctx.config, store: { ...ctx.config.store, reserveBytes: 2 ** 52 } } };
    const short = new SpoolAgent(tight, { dir: spool, now: () => nowMs, sleep: async () => {} });
    settled(join(spool, 'in', 'c.capsule.json'), capsule());
    await short.lookOnce();
    expect(short.view.decided).toBe(0);
    const roomy = new SpoolAgent(ctx, { dir: spool, now: () => nowMs, sleep: async () => {} });
    await roomy.lookOnce();
    expect(roomy.view.outcomes).toEqual([expect.objectContaining({ name: 'c.capsule.json', outcome: 'completed' })]);
  });
});

describe('what one look at in/ costs', () => {
  function inboxOver(cap: number) {
    const dir = mkdtempSync(join(tmpdir(), 'spool-holes-'));
    temps.push(dir);
    const decided = new Set<string>();
    const inbox = new SpoolInbox({ inDir: dir, capBytes: () => cap, isDecided: (d) => decided.has(d), now: () => nowMs, settleMs: 0 });
    return { dir, inbox, decided };
  }

  it('passes over a sparse file of a terabyte as too-large without reading it to its end (it would hold the agent for hours)', () => {
    nowMs = Date.now();
    const { dir, inbox } = inboxOver(1000);
    writeFileSync(join(dir, 'sparse.capsule.json'), '');
    truncateSync(join(dir, 'sparse.capsule.json'), 2 ** 40);
    const { ready, passedOver } = inbox.look();
    expect(ready).toEqual([]);
    expect(passedOver).toEqual([{ name: 'sparse.capsule.json', reason: 'too-large' }]);
  });

  it('holds at most one cap of capsule bytes per look: files at the cap are taken one look each, all of them in the end', () => {
    nowMs = Date.now() + 10_000;
    const { dir, inbox, decided } = inboxOver(1000);
    for (let i = 0; i < 5; i++) writeFileSync(join(dir, `f${i}.capsule.json`), Buffer.alloc(900, 0x30 + i));
    const taken: string[] = [];
    for (let look = 0; look < 5; look++) {
      const { ready } = inbox.look();
      expect(ready).toHaveLength(1);
      for (const file of ready) {
        decided.add(file.digest);
        taken.push(file.name);
      }
    }
    expect(taken.sort()).toEqual(['f0', 'f1', 'f2', 'f3', 'f4'].map((n) => `${n}.capsule.json`));
    expect(inbox.look().ready).toEqual([]);
  });

  it('takes a file whose modification time is ahead of this clock once it has stood still for the settle time (it waited for ever)', () => {
    nowMs = Date.now();
    const dir = mkdtempSync(join(tmpdir(), 'spool-holes-'));
    temps.push(dir);
    const inbox = new SpoolInbox({ inDir: dir, capBytes: () => 1000, isDecided: () => false, now: () => nowMs, settleMs: 2000 });
    writeFileSync(join(dir, 'ahead.capsule.json'), '{}');
    const ahead = new Date(nowMs + 365 * 86_400_000); // copied with the times of a machine a year ahead
    utimesSync(join(dir, 'ahead.capsule.json'), ahead, ahead);
    expect(inbox.look().passedOver).toEqual([{ name: 'ahead.capsule.json', reason: 'settling' }]);
    nowMs += 1000;
    expect(inbox.look().ready).toEqual([]);
    nowMs += 1000;
    expect(inbox.look().ready.map((f) => f.name)).toEqual(['ahead.capsule.json']);
  });

  it('says which capsule-looking names it will never read (a space, a non-ASCII letter, a name of 250 characters), once shortened', () => {
    nowMs = Date.now() + 10_000;
    const dir = mkdtempSync(join(tmpdir(), 'spool-holes-'));
    temps.push(dir);
    const inbox = new SpoolInbox({ inDir: dir, capBytes: () => 1000, isDecided: () => false, now: () => nowMs, settleMs: 0 });
    const long = `${'a'.repeat(237)}.capsule.json`;
    for (const name of ['my capsule.capsule.json', 'prüfung.capsule.json', long, '.hidden.capsule.json', 'x.capsule.json.part']) {
      writeFileSync(join(dir, name), '{}');
    }
    const said = inbox.look().passedOver.filter((p) => p.reason === 'bad-name');
    expect(said.map((p) => p.name).sort()).toEqual(
      ['my capsule.capsule.json', 'prüfung.capsule.json', `${'a'.repeat(100)}…${long.slice(-19)}`].sort(),
    );
  });

  it('never blocks on a fifo named *.capsule.json (nobody writes into it): passed over as not a regular file', () => {
    nowMs = Date.now() + 10_000;
    const dir = mkdtempSync(join(tmpdir(), 'spool-holes-'));
    temps.push(dir);
    execFileSync('mkfifo', [join(dir, 'blocking.capsule.json')]);
    const inbox = new SpoolInbox({ inDir: dir, capBytes: () => 1000, isDecided: () => false, now: () => nowMs, settleMs: 0 });
    expect(inbox.look()).toEqual({ ready: [], passedOver: [{ name: 'blocking.capsule.json', reason: 'not-regular' }] });
  });

  it('looks at a bounded number of names per look in a folder of many files, and still takes every one of them round the folder', () => {
    nowMs = Date.now() + 10_000;
    const dir = mkdtempSync(join(tmpdir(), 'spool-holes-'));
    temps.push(dir);
    const decided = new Set<string>();
    const inbox = new SpoolInbox({
      inDir: dir,
      capBytes: () => 1000,
      isDecided: (d) => decided.has(d),
      now: () => nowMs,
      settleMs: 0,
      namesPerLook: 10,
    });
    for (let i = 0; i < 25; i++) writeFileSync(join(dir, `m${i}.capsule.json`), `${i}`);
    const taken = new Set<string>();
    for (let look = 0; look < 3; look++) {
      const { ready, passedOver } = inbox.look();
      expect(ready.length + passedOver.length).toBeLessThanOrEqual(10);
      for (const file of ready) {
        decided.add(file.digest);
        taken.add(file.name);
      }
    }
    expect(taken.size).toBe(25);
    for (let look = 0; look < 3; look++) expect(inbox.look().ready).toEqual([]);
  });
});
