/**
 * Issue 8, disk and writes (points 3, 4, 5, 14a, 14b): each attack through the built CLI on real file
 * systems. Tests that mount a small tmpfs (root) unmount it in afterAll/finally and are skipped visibly
 * otherwise.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statfsSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initState } from '../../runner/state/state.js';
import { Store } from '../../runner/store/store.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { column, withRawDb } from '../helpers/raw-db.js';
import { makeWorld, type World } from '../helpers/world.js';

const isRoot = process.getuid?.() === 0;
const PATH_ENV = { PATH: '/usr/bin:/bin' };
const MiB = 1024 * 1024;

const sleepMs = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function mountTmpfs(dir: string, bytes: number): void {
  mkdirSync(dir, { recursive: true });
  const result = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0700`, 'tmpfs', dir], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`mount failed: ${result.stderr}`);
}

function unmount(dir: string): void {
  spawnSync('umount', [dir]);
  spawnSync('umount', ['-l', dir]);
}

const freeBytes = (dir: string) => {
  const s = statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
};

/** Fills the file system of `dir` to the brim with `name`, then gives back `leave` bytes (page-aligned). */
function fillLeaving(dir: string, name: string, leave: number): string {
  const path = join(dir, name);
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(MiB);
  let size = 0;
  try {
    for (;;) {
      try {
        size += writeSync(fd, chunk, 0, chunk.length);
      } catch {
        break;
      }
    }
    ftruncateSync(fd, Math.max(0, size - leave));
  } finally {
    closeSync(fd);
  }
  return path;
}

function records(stateDir: string): { kind: string; body: Record<string, unknown> }[] {
  return withRawDb(
    join(stateDir, 'runner.db'),
    (db) =>
      column<Uint8Array>(db, 'SELECT leaf FROM records_v1 ORDER BY seq').map((leaf) => {
        const value = JSON.parse(Buffer.from(leaf).toString('utf8')) as Record<string, unknown>;
        return { kind: value.kind as string, body: value };
      }),
    { readOnly: true },
  );
}

const blobTemporaries = (stateDir: string) => readdirSync(join(stateDir, 'evidence', 'blobs')).filter((name) => name.startsWith('.tmp-'));
const runFolders = (stateDir: string) => readdirSync(join(stateDir, 'runs'));

/** A CLI failure is one coded sentence: never a stack trace. */
function expectCodedFailure(result: { status: number | null; stderr: string }, code: string): void {
  expect(result.status, result.stderr).toBe(2);
  expect(result.stderr).toMatch(new RegExp(`^edge-runner: ${code}: `, 'm'));
  expect(result.stderr).not.toMatch(/^\s+at /m);
}

/** A world whose state folder is a tmpfs of `bytes` bytes, mounted by the test. */
function worldOnTmpfs(bytes: number): World {
  const world = makeWorld({ init: false });
  mountTmpfs(world.stateDir, bytes);
  initState(world.stateDir, {
    id: world.runnerId,
    labels: ['test'],
    trustBytes: world.trustBytes,
    now: new Date(),
    key: world.runnerKey,
    createDatabase: (path) => Store.open(path, { create: true }).close(),
  });
  return world;
}

function exportAndVerify(world: World): void {
  const out = join(world.dir, `log-${randomBytes(4).toString('hex')}.jsonl`);
  const exported = runCli(['log', 'export', '--state', world.stateDir, '--out', out], { env: PATH_ENV });
  expect(exported.status, exported.stderr).toBe(0);
  const verified = runCli(['log', 'verify', out, '--trust', world.trustPath], { env: PATH_ENV });
  expect(verified.status, verified.stdout + verified.stderr).toBe(0);
}

describe.skipIf(!isRoot)('point 3: a full disk (64 MiB tmpfs as the state folder; needs root)', () => {
  let world: World;
  beforeAll(() => {
    world = worldOnTmpfs(64 * MiB);
  });
  afterAll(() => {
    unmount(world.stateDir);
    world.cleanup();
  });
  const env = { ...PATH_ENV, EDGE_RUNNER_RESERVE_BYTES: String(MiB) };

  it('attack 3: a step that writes into its workspace until ENOSPC ends the run with RUN_DISK_FULL, recorded, workspace freed, no stack trace', () => {
    const file = world.writeCapsule(world.capsule({ steps: [{ name: 'fill', run: ['/bin/sh', '-c', 'head -c 100M /dev/zero > fill'] }] }));
    const result = runCli(['exec', file, '--state', world.stateDir], { env, timeoutMs: 120_000 });
    expectCodedFailure(result, 'RUN_DISK_FULL');
    const last = records(world.stateDir).at(-1)!;
    expect(last.kind).toBe('run.aborted');
    expect(last.body.reason).toBe('RUN_DISK_FULL');
    expect(runFolders(world.stateDir)).toEqual([]);
    expect(blobTemporaries(world.stateDir)).toEqual([]);
  });

  it('attack 3: a step that floods stdout onto a full disk does not crash the runner: RUN_DISK_FULL, recorded, no temporary blob left', () => {
    const filler = fillLeaving(world.stateDir, 'filler', 3 * MiB);
    try {
      const file = world.writeCapsule(world.capsule({ steps: [{ name: 'flood', run: ['/usr/bin/head', '-c', '100M', '/dev/zero'] }] }));
      const result = runCli(['exec', file, '--state', world.stateDir], { env, timeoutMs: 120_000 });
      expectCodedFailure(result, 'RUN_DISK_FULL');
      const last = records(world.stateDir).at(-1)!;
      expect(last.kind).toBe('run.aborted');
      expect(last.body.reason).toBe('RUN_DISK_FULL');
      expect(runFolders(world.stateDir)).toEqual([]);
      expect(blobTemporaries(world.stateDir)).toEqual([]);
    } finally {
      unlinkSync(filler);
    }
  });

  it('attack 3: below the reserve no run starts (RUN_DISK_RESERVE, a capsule.rejected record), and the same capsule runs once there is room', () => {
    const filler = fillLeaving(world.stateDir, 'filler', 4 * MiB);
    const file = world.writeCapsule(world.capsule({ steps: [{ name: 'ok', run: ['/bin/true'] }] }));
    const reserveEnv = { ...PATH_ENV, EDGE_RUNNER_RESERVE_BYTES: String(16 * MiB) };
    try {
      expect(freeBytes(world.stateDir)).toBeLessThan(16 * MiB);
      const before = records(world.stateDir).length;
      const refused = runCli(['exec', file, '--state', world.stateDir], { env: reserveEnv });
      expectCodedFailure(refused, 'RUN_DISK_RESERVE');
      const added = records(world.stateDir).slice(before);
      expect(added.map((r) => r.kind)).toEqual(['capsule.rejected']);
      expect(added[0]!.body.code).toBe('RUN_DISK_RESERVE');
    } finally {
      unlinkSync(filler);
    }
    const again = runCli(['exec', file, '--state', world.stateDir], { env: reserveEnv });
    expect(again.status, again.stderr).toBe(0);
  });

  it('after a full disk: once space is back the next exec works, and an export of the whole log verifies', () => {
    const file = world.writeCapsule(world.capsule({ steps: [{ name: 'echo', run: ['/bin/echo', 'space is back'] }] }));
    const result = runCli(['exec', file, '--state', world.stateDir], { env });
    expect(result.status, result.stderr).toBe(0);
    expect(runFolders(world.stateDir)).toEqual([]);
    exportAndVerify(world);
  });
});

describe.skipIf(!isRoot)('point 4: short writes (small tmpfs; needs root)', () => {
  let world: World;
  let outDir: string;
  beforeAll(() => {
    world = makeWorld();
    outDir = join(world.dir, 'out-fs');
    mountTmpfs(outDir, MiB);
  });
  afterAll(() => {
    unmount(outDir);
    world.cleanup();
  });

  it('attack 4: exec --out onto a nearly full file system fails with STATE_DISK_FULL and leaves neither a cut-off bundle nor a temporary file', () => {
    // Room for one page: the bundle (well over 4 KiB here) can only be written in part.
    const steps = Array.from({ length: 12 }, (_, i) => ({ name: `step-${i}-${'x'.repeat(40)}`, run: ['/bin/true'] }));
    const filler = fillLeaving(outDir, 'filler', 4096);
    const out = join(outDir, 'run.bundle.json');
    const result = runCli(['exec', world.writeCapsule(world.capsule({ steps })), '--state', world.stateDir, '--out', out], { env: PATH_ENV });
    expectCodedFailure(result, 'STATE_DISK_FULL');
    expect(readdirSync(outDir)).toEqual(['filler']);
    // The bundle was bigger than the room left: the test would not show a cut-off file otherwise.
    const kept = readdirSync(join(world.stateDir, 'evidence', 'bundles'));
    expect(kept.length).toBe(1);
    expect(lstatSync(join(world.stateDir, 'evidence', 'bundles', kept[0]!)).size).toBeGreaterThan(8192);
    unlinkSync(filler);
  });
});

/**
 * The pid a spawned CLI will get can be steered as root (/proc/sys/kernel/ns_last_pid): the test plants
 * `NAME.tmp-PID` symlinks (the old temporary name) for the pids the CLI can get, pointing at a victim file
 * outside, sets the next pid, runs the command, and checks that the CLI really had one of those pids.
 */
const NS_LAST_PID = '/proc/sys/kernel/ns_last_pid';
const PID_RANGE = 400;
const canSteerPids = isRoot && existsSync(NS_LAST_PID);

function spawnCliWithPlantedTemps(
  target: string,
  args: string[],
  victim: string,
  options: { names?: (pid: number) => string[] } = {},
): { status: number | null; stderr: string; pid: number; planted: string[] } {
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  let base = Number(readFileSync(NS_LAST_PID, 'utf8')) + 100;
  if (base + PID_RANGE >= pidMax) base = 1000;
  const planted: string[] = [];
  for (let pid = base; pid < base + PID_RANGE; pid++) {
    for (const name of options.names?.(pid) ?? [`${target}.tmp-${pid}`]) {
      symlinkSync(victim, name);
      planted.push(name);
    }
  }
  writeFileSync(NS_LAST_PID, String(base - 1));
  const result = spawnSync(process.execPath, [CLI_ENTRY, ...args], { encoding: 'utf8', env: PATH_ENV, timeout: 60_000 });
  return { status: result.status, stderr: result.stderr, pid: result.pid ?? -1, planted };
}

describe.skipIf(!canSteerPids)('point 5: planted symlinks at the temporary name (root, ns_last_pid)', () => {
  let world: World;
  beforeAll(() => {
    world = makeWorld();
  });
  afterAll(() => world.cleanup());

  const VICTIM_TEXT = 'the victim file, which no command may overwrite\n';

  function check(command: string, target: string, args: string[], options: { names?: (pid: number) => string[] } = {}): void {
    const victim = join(world.dir, `victim-${command}-${randomBytes(4).toString('hex')}`);
    writeFileSync(victim, VICTIM_TEXT, { mode: 0o644 });
    const result = spawnCliWithPlantedTemps(target, args, victim, options);
    try {
      expect(result.pid, 'the CLI ran with a pid the test planted a name for').toBeGreaterThanOrEqual(0);
      const plantedForIt = result.planted.some((name) => name.includes(String(result.pid)));
      expect(plantedForIt, `pid ${result.pid} not among the planted names`).toBe(true);
      expect(result.status, result.stderr).toBe(0);
      expect(readFileSync(victim, 'utf8')).toBe(VICTIM_TEXT);
      // Every planted name is still the attacker's symlink, untouched.
      for (const name of result.planted) expect(readlinkSync(name)).toBe(victim);
      expect(lstatSync(target).isSymbolicLink()).toBe(false);
    } finally {
      for (const name of result.planted) rmSync(name, { force: true });
    }
  }

  it('attack 5: exec --out never follows a symlink planted at NAME.tmp-PID', () => {
    const out = join(world.dir, 'exec.bundle.json');
    check('exec', out, ['exec', world.writeCapsule(world.capsule()), '--state', world.stateDir, '--out', out]);
    expect(JSON.parse(readFileSync(out, 'utf8')).mediaType).toBe('application/vnd.edge-runner.bundle.v1+json');
  });

  it('attack 5: capsule pack never follows a symlink planted at NAME.tmp-PID', () => {
    const dir = join(world.dir, 'pack-src');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'capsule.json'),
      JSON.stringify({ kind: 'validate', id: 'pack-test', target: { labels: ['test'] }, steps: [{ name: 'ok', run: ['/bin/true'] }] }),
    );
    const keyPath = join(world.dir, 'signer.key');
    if (!existsSync(keyPath)) writeFileSync(keyPath, world.signers[0]!.toPem(), { mode: 0o600 });
    const out = join(world.dir, 'packed.capsule.json');
    check('pack', out, ['capsule', 'pack', dir, '--key', keyPath, '--out', out]);
    expect(JSON.parse(readFileSync(out, 'utf8')).envelope).toBeDefined();
  });

  it('attack 5: trust sign never follows a symlink planted at NAME.tmp-PID', () => {
    const rootKey = join(world.dir, 'root.key');
    writeFileSync(rootKey, world.root.toPem(), { mode: 0o600 });
    const body = join(world.dir, 'trust-body.json');
    writeFileSync(body, JSON.stringify(world.trustBody));
    const out = join(world.dir, 'signed.trust.json');
    check('trust', out, ['trust', 'sign', body, '--key', rootKey, '--out', out]);
    expect(JSON.parse(readFileSync(out, 'utf8')).payloadType).toBe('application/vnd.edge-runner.trust.v1+json');
  });

  it('attack 5: log export never follows a symlink planted at its temporary names', () => {
    const out = join(world.dir, 'log.jsonl');
    check('log', out, ['log', 'export', '--state', world.stateDir, '--out', out], {
      names: (pid) => [`${out}.tmp-${pid}`, join(world.dir, `.log.jsonl.${pid}.tmp`)],
    });
    expect(readFileSync(out, 'utf8').split('\n').length).toBeGreaterThan(2);
  });

  it('attack 5: keygen never follows a symlink planted at its names or temporary names', () => {
    const prefix = join(world.dir, 'newkey');
    check('keygen', `${prefix}.key`, ['keygen', '--out', prefix], { names: (pid) => [`${prefix}.key.tmp-${pid}`, `${prefix}.pub.tmp-${pid}`] });
    expect(lstatSync(`${prefix}.key`).mode & 0o777).toBe(0o600);
    expect(readFileSync(`${prefix}.key`, 'utf8')).toContain('PRIVATE KEY');
  });
});

describe('point 14: leftovers', () => {
  let world: World;
  beforeAll(() => {
    world = makeWorld();
  });
  afterAll(() => world.cleanup());

  it('attack 14a: kill -9 during a run leaves a temporary blob of step output, which the next open removes', async () => {
    const marker = `partial-output-${randomBytes(6).toString('hex')}`;
    const file = world.writeCapsule(
      world.capsule({ steps: [{ name: 'talk', run: ['/bin/sh', '-c', `echo ${marker}; exec sleep 30`], timeoutSeconds: 60 }] }),
    );
    const child = spawn(process.execPath, [CLI_ENTRY, 'exec', file, '--state', world.stateDir], { env: PATH_ENV, stdio: 'ignore' });
    const blobs = join(world.stateDir, 'evidence', 'blobs');
    let leftover: string[] = [];
    try {
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline) {
        leftover = blobTemporaries(world.stateDir).filter((name) => {
          try {
            return readFileSync(join(blobs, name), 'utf8').includes(marker);
          } catch {
            return false;
          }
        });
        if (leftover.length > 0) break;
        await sleepMs(50);
      }
    } finally {
      child.kill('SIGKILL');
    }
    await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));
    expect(leftover.length, 'the step output reached a temporary blob before the kill').toBe(1);
    expect(existsSync(join(blobs, leftover[0]!))).toBe(true);
    const next = runCli(['exec', world.writeCapsule(world.capsule()), '--state', world.stateDir], { env: PATH_ENV });
    expect(next.status, next.stderr).toBe(0);
    expect(blobTemporaries(world.stateDir)).toEqual([]);
    expect(runFolders(world.stateDir)).toEqual([]);
  }, 60_000);

  it("a second runner opening the same state folder leaves a live run's workspace and temporary blobs alone", async () => {
    const file = world.writeCapsule(world.capsule({ steps: [{ name: 'wait', run: ['/bin/sh', '-c', 'echo started; sleep 8; echo done'] }] }));
    const first = spawn(process.execPath, [CLI_ENTRY, 'exec', file, '--state', world.stateDir], { env: PATH_ENV, stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => first.once('exit', (code) => resolve(code)));
    const deadline = Date.now() + 20_000;
    while ((runFolders(world.stateDir).length === 0 || blobTemporaries(world.stateDir).length === 0) && Date.now() < deadline) await sleepMs(25);
    const liveFolders = runFolders(world.stateDir);
    const liveTemps = blobTemporaries(world.stateDir);
    expect(liveFolders).toHaveLength(1);
    expect(liveTemps.length).toBeGreaterThan(0);
    const second = runCli(['exec', world.writeCapsule(world.capsule()), '--state', world.stateDir], { env: PATH_ENV });
    expect(second.status, second.stderr).toBe(0);
    expect(runFolders(world.stateDir)).toEqual(expect.arrayContaining(liveFolders));
    expect(blobTemporaries(world.stateDir)).toEqual(expect.arrayContaining(liveTemps));
    expect(await exited).toBe(0);
    expect(runFolders(world.stateDir)).toEqual([]);
  }, 60_000);

  it.skipIf(!existsSync('/usr/bin/prlimit'))(
    'attack 14b: a workspace with 3000 nested folders (a file in the deepest) is removed, even under a 1024 open-files limit',
    () => {
      const deep = 'for (1..3000) { mkdir "d" or die "mkdir: $!"; chdir "d" or die "chdir: $!" } open F, ">deep" or die; print F "x"; close F';
      for (const limited of [false, true]) {
        const file = world.writeCapsule(world.capsule({ steps: [{ name: 'deep', run: ['/usr/bin/perl', '-e', deep] }] }));
        const argv = [CLI_ENTRY, 'exec', file, '--state', world.stateDir, '--json'];
        const result = limited
          ? spawnSync('/usr/bin/prlimit', ['--nofile=1024:1024', '--', process.execPath, ...argv], {
              encoding: 'utf8',
              env: { ...PATH_ENV, EDGE_RUNNER_LOG_LEVEL: 'warn' },
            })
          : spawnSync(process.execPath, argv, { encoding: 'utf8', env: { ...PATH_ENV, EDGE_RUNNER_LOG_LEVEL: 'warn' } });
        expect(result.status, result.stderr).toBe(0);
        expect(JSON.parse(result.stdout).steps[0].status).toBe('succeeded');
        expect(result.stderr).not.toContain('workspace not removed');
        expect(runFolders(world.stateDir), limited ? 'under a 1024 open-files limit' : 'without a limit').toEqual([]);
      }
    },
    120_000,
  );
});
