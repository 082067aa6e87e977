/**
 * Issue 11, "a crash leaves the old or the new state, never a mix", at the mechanism: a child process
 * (the built dist/runner/remediate/files.js) writes and restores a plan of ~90 files in a loop and is
 * killed with SIGKILL at a random moment, many times. After each kill every planned file is whole (its
 * old bytes or its new ones, never cut), and restorePlan brings the tree back to the pre-state digest,
 * every time.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../runner/core/digest.js';
import { readPlanned, restorePlan, snapshotPlan, writePlan } from '../../runner/remediate/files.js';
import { planChange, type FilePlan } from '../../runner/remediate/patch.js';
import { readTree, type TreeCaps } from '../../runner/remediate/tree.js';

const FILES_ENTRY = fileURLToPath(new URL('../../dist/runner/remediate/files.js', import.meta.url));
const CAPS: TreeCaps = { maxBytes: 256 * 1024 * 1024, maxEntries: 100_000 };
/** Kills aimed at; at least MIN_KILLS must fit before the deadline (a loaded machine starts children slowly). */
const KILLS = 60;
const MIN_KILLS = 20;
const DEADLINE_MS = 90_000;
const sleepMs = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The child: writePlan, restorePlan, writePlan, ... until killed. */
const CHILD = String.raw`
import { readFileSync } from 'node:fs';
const [filesUrl, planPath, root, snap] = process.argv.slice(2);
const { writePlan, restorePlan } = await import(filesUrl);
const revive = (p) => ({ ...p, ...(p.after ? { after: { ...p.after, bytes: Buffer.from(p.after.bytes, 'base64') } } : {}) });
const plan = JSON.parse(readFileSync(planPath, 'utf8')).map(revive);
process.stdout.write('ready\n');
for (;;) {
  writePlan(root, plan);
  restorePlan(root, plan, snap);
}
`;

describe('a process killed with SIGKILL while it writes or restores a plan', () => {
  let dir: string;
  let root: string;
  let snap: string;
  let plan: FilePlan[];
  let pre: string;
  let childPath: string;
  let planPath: string;

  beforeAll(() => {
    if (!existsSync(FILES_ENTRY)) throw new Error(`${FILES_ENTRY} is missing: run \`npx tsc -p tsconfig.build.json\` (npm test does)`);
    // tmpfs when there is one: a SIGKILL does not lose the page cache, so fsync's cost buys nothing here,
    // and more kills fit in the time.
    dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'edge-runner-change-crash-'));
    root = join(dir, 'target');
    snap = join(dir, 'snapshot');
    mkdirSync(join(root, 'conf'), { recursive: true });
    mkdirSync(join(root, 'old'));
    const inputs = new Map<string, Buffer>();
    const files: NonNullable<Parameters<typeof planChange>[0]['files']> = [];
    for (let i = 0; i < 30; i++) {
      const name = `conf/f${String(i).padStart(2, '0')}`;
      writeFileSync(join(root, name), Buffer.alloc(64 * 1024 + i, `before ${i}\n`));
      inputs.set(`in/${name}`, Buffer.alloc(96 * 1024 + i, `after ${i}\n`));
      files.push({ path: name, action: 'replace', from: `in/${name}` });
      writeFileSync(join(root, 'old', `g${i}`), `to delete ${i}\n`);
      files.push({ path: `old/g${i}`, action: 'delete' });
      inputs.set(`in/new${i}`, Buffer.alloc(32 * 1024, `new ${i}\n`));
      files.push({ path: `new/${i % 3}/deep/h${i}`, action: 'add', from: `in/new${i}`, executable: i % 2 === 0 });
    }
    writeFileSync(join(root, 'conf', 'suid'), 'suid before\n');
    chmodSync(join(root, 'conf', 'suid'), 0o4750);
    inputs.set('in/suid', Buffer.from('suid after\n'));
    files.push({ path: 'conf/suid', action: 'replace', from: 'in/suid' });
    plan = planChange({ target: 't', files }, inputs, (path) => readPlanned(root, path));
    pre = readTree(root, CAPS).digest;
    snapshotPlan(root, plan, snap);
    childPath = join(dir, 'child.mjs');
    writeFileSync(childPath, CHILD);
    planPath = join(dir, 'plan.json');
    const serial = plan.map((p) => (p.after ? { ...p, after: { ...p.after, bytes: p.after.bytes.toString('base64') } } : p));
    writeFileSync(planPath, JSON.stringify(serial));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** How each planned file is now: as before, as after, or neither (a cut or foreign file: never allowed). */
  function stateOf(file: FilePlan): 'before' | 'after' | 'neither' {
    const now = readPlanned(root, file.path);
    const digest = typeof now === 'string' ? now : `${sha256Hex(now.bytes)}:${now.mode}`;
    const before = file.before === undefined ? 'absent' : `${file.before.sha256}:${file.before.mode}`;
    const after = file.after === undefined ? 'absent' : `${file.after.sha256}:${file.after.mode}`;
    return digest === before ? 'before' : digest === after ? 'after' : 'neither';
  }

  async function runAndKill(delayMs: number): Promise<void> {
    const child = spawn(process.execPath, [childPath, pathToFileURL(FILES_ENTRY).href, planPath, root, snap], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the child did not start: ${stderr}`)), 20_000);
      child.stdout.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
      void exited.then((code) => reject(new Error(`the child ended (${code}) before it was killed: ${stderr}`)));
    });
    await sleepMs(delayMs);
    child.kill('SIGKILL');
    await exited;
  }

  it(`restorePlan brings back the pre-state digest after each of up to ${KILLS} kills at random moments, and no file is ever cut`, async () => {
    // One write and one restore in this process, to spread the kills over a whole cycle of the child.
    const started = Date.now();
    writePlan(root, plan);
    restorePlan(root, plan, snap);
    const cycleMs = Math.max(20, Date.now() - started);
    expect(readTree(root, CAPS).digest).toBe(pre);

    const deadline = Date.now() + DEADLINE_MS;
    const seen = { mixed: 0, allBefore: 0, allAfter: 0 };
    let kills = 0;
    for (; kills < KILLS && Date.now() < deadline; kills++) {
      await runAndKill(Math.floor(Math.random() * cycleMs * 2));
      const states = plan.map(stateOf);
      expect(states.filter((s) => s === 'neither')).toEqual([]);
      if (states.every((s) => s === 'before')) seen.allBefore += 1;
      else if (states.every((s) => s === 'after')) seen.allAfter += 1;
      else seen.mixed += 1;
      restorePlan(root, plan, snap);
      expect(readTree(root, CAPS).digest).toBe(pre);
    }
    expect(kills).toBeGreaterThanOrEqual(MIN_KILLS);
    // The kills landed inside writes and restores, not only between them (else this proved nothing).
    expect(seen.mixed, JSON.stringify({ cycleMs, kills, ...seen })).toBeGreaterThan(kills / 4);
    expect(readFileSync(join(root, 'conf', 'suid'), 'utf8')).toBe('suid before\n');
  }, 180_000);
});
