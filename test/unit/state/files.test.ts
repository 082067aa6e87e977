/**
 * Issue 8, points 4, 5 and 14a at the mechanism: writeFileAtomic / AtomicFileWriter (random O_EXCL|O_NOFOLLOW
 * temporary files, checked writes, removal on failure) and the blob store (named by a digest only when
 * whole; temporaries of dead writers removed on open).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BlobStore } from '../../../runner/state/blobs.js';
import { AtomicFileWriter, EXCLUSIVE_CREATE_FLAGS, writeFileAtomic } from '../../../runner/state/files.js';

const isRoot = process.getuid?.() === 0;
const VICTIM = 'a file elsewhere that must not change\n';

describe('writeFileAtomic', () => {
  let dir: string;
  let victim: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-runner-files-'));
    victim = join(dir, 'victim');
    writeFileSync(victim, VICTIM);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('attack 5: a symlink planted at the old temporary name NAME.tmp-PID is not followed', () => {
    const target = join(dir, 'out.json');
    symlinkSync(victim, `${target}.tmp-${process.pid}`);
    writeFileAtomic(target, 'the new content\n');
    expect(readFileSync(victim, 'utf8')).toBe(VICTIM);
    expect(readFileSync(target, 'utf8')).toBe('the new content\n');
    expect(readlinkSync(`${target}.tmp-${process.pid}`)).toBe(victim);
  });

  it('attack 5: the temporary file has a random name, mode 0600 until renamed, then the final mode', () => {
    const target = join(dir, 'out.json');
    const a = new AtomicFileWriter(target, { mode: 0o644 });
    const b = new AtomicFileWriter(target, { mode: 0o644 });
    const temps = readdirSync(dir).filter((name) => name.includes('.tmp-'));
    expect(temps).toHaveLength(2);
    for (const name of temps) {
      expect(name).toMatch(/^\.out\.json\.tmp-[0-9a-f]{24}$/);
      expect(name).not.toContain(String(process.pid));
      expect(lstatSync(join(dir, name)).mode & 0o777).toBe(0o600);
    }
    a.write('a');
    a.commit();
    b.abort();
    expect(lstatSync(target).mode & 0o777).toBe(0o644);
    expect(readdirSync(dir).sort()).toEqual(['out.json', 'victim']);
  });

  it('attack 5: the create flags refuse a planted symlink (to a file or dangling) and create nothing through it', () => {
    const planted = join(dir, 'planted');
    symlinkSync(victim, planted);
    expect(() => openSync(planted, EXCLUSIVE_CREATE_FLAGS, 0o600)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    const dangling = join(dir, 'dangling');
    const nowhere = join(dir, 'would-be-created');
    symlinkSync(nowhere, dangling);
    expect(() => openSync(dangling, EXCLUSIVE_CREATE_FLAGS, 0o600)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(existsSync(nowhere)).toBe(false);
    expect(readFileSync(victim, 'utf8')).toBe(VICTIM);
  });

  it('a planted symlink at the target itself is replaced, never written through', () => {
    const target = join(dir, 'out.json');
    symlinkSync(victim, target);
    writeFileAtomic(target, 'new\n');
    expect(lstatSync(target).isSymbolicLink()).toBe(false);
    expect(readFileSync(victim, 'utf8')).toBe(VICTIM);
  });

  it('a rename that fails ends with STATE_WRITE_FAILED and leaves no temporary file', () => {
    const target = join(dir, 'busy');
    mkdirSync(join(target, 'inside'), { recursive: true });
    expect(() => writeFileAtomic(target, 'x')).toThrow(expect.objectContaining({ code: 'STATE_WRITE_FAILED' }));
    expect(readdirSync(dir).sort()).toEqual(['busy', 'victim']);
  });

  it('replace: false never overwrites an existing file (STATE_WRITE_FAILED) and leaves no temporary file', () => {
    const target = join(dir, 'k.key');
    writeFileSync(target, 'old');
    expect(() => writeFileAtomic(target, 'new', { mode: 0o600, replace: false })).toThrow(expect.objectContaining({ code: 'STATE_WRITE_FAILED' }));
    expect(readFileSync(target, 'utf8')).toBe('old');
    expect(readdirSync(dir).sort()).toEqual(['k.key', 'victim']);
    writeFileAtomic(join(dir, 'new.key'), 'fresh', { mode: 0o600, replace: false });
    expect(lstatSync(join(dir, 'new.key')).mode & 0o777).toBe(0o600);
  });
});

describe.skipIf(!isRoot)('on a full file system (1 MiB tmpfs; needs root)', () => {
  let mount: string;
  let mounted = false;
  beforeAll(() => {
    mount = mkdtempSync(join(tmpdir(), 'edge-runner-fullfs-'));
    mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', mount]).status === 0;
  });
  afterAll(() => {
    // Lazily if need be: a writer that leaked its descriptor (the old code did on ENOSPC) keeps it busy.
    if (mounted && spawnSync('umount', [mount]).status !== 0) spawnSync('umount', ['-l', mount]);
    rmSync(mount, { recursive: true, force: true });
  });

  it('attack 4: writeFileAtomic of more than fits fails with STATE_DISK_FULL and leaves neither a cut-off file nor a temporary file', () => {
    expect(mounted).toBe(true);
    const dir = join(mount, 'a');
    mkdirSync(dir);
    expect(() => writeFileAtomic(join(dir, 'big.json'), Buffer.alloc(2 * 1024 * 1024, 0x61))).toThrow(
      expect.objectContaining({ code: 'STATE_DISK_FULL' }),
    );
    expect(readdirSync(dir)).toEqual([]);
    rmSync(dir, { recursive: true });
  });

  it('attack 4: a blob store filled to the brim never holds a file whose content differs from its digest name, nor a temporary file', () => {
    expect(mounted).toBe(true);
    const store = new BlobStore(join(mount, 'blobs'));
    let failure: unknown;
    for (let i = 0; i < 400 && failure === undefined; i++) {
      try {
        // Sizes that are not page multiples, so a write can stop in the middle of one.
        store.put(randomBytes(10_000 + ((i * 7919) % 30_000)));
      } catch (err) {
        failure = err;
      }
    }
    expect(failure).toMatchObject({ code: 'STATE_DISK_FULL' });
    const names = readdirSync(store.dir);
    expect(names.length).toBeGreaterThan(5);
    for (const name of names) {
      expect(name).toMatch(/^sha256-[0-9a-f]{64}$/);
      expect(
        `sha256-${createHash('sha256')
          .update(readFileSync(join(store.dir, name)))
          .digest('hex')}`,
      ).toBe(name);
    }
    rmSync(store.dir, { recursive: true });
  });
});

describe('BlobStore.removeDeadTemporaries', () => {
  let dir: string;
  const children: ReturnType<typeof spawn>[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-runner-blobs-'));
  });
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  const startTicks = (pid: number) => {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
  };
  const tempOf = (pid: number, ticks: string) => `.tmp-${pid}-${ticks}-${randomBytes(12).toString('hex')}`;

  it.skipIf(!existsSync('/proc/self/stat'))(
    "attack 14a: removes the temporaries of dead writers, keeps this process's and a live runner's, and old unowned ones only when old",
    async () => {
      const store = new BlobStore(dir);
      const open = store.writer(1024);
      open.write(Buffer.from('still being written'));
      const live = spawn('/bin/sleep', ['30'], { stdio: 'ignore' });
      children.push(live);
      await new Promise((resolve) => live.once('spawn', resolve));
      const liveName = tempOf(live.pid!, startTicks(live.pid!));
      // A dead writer: a process that has exited (its pid and start no longer match anything alive).
      const gone = spawnSync('/bin/true');
      const deadName = tempOf(gone.pid!, '12345');
      // A reused pid: our own pid with another start time is not us.
      const reusedName = tempOf(process.pid, '1');
      const oldUnowned = `.tmp-${randomBytes(8).toString('hex')}`;
      const freshUnowned = `.tmp-${randomBytes(8).toString('hex')}`;
      for (const name of [liveName, deadName, reusedName, oldUnowned, freshUnowned]) closeSync(openSync(join(dir, name), 'w'));
      const hoursAgo = new Date(Date.now() - 2 * 3600_000);
      utimesSync(join(dir, oldUnowned), hoursAgo, hoursAgo);
      writeFileSync(join(dir, 'sha256-not-a-temporary'), 'x');

      const removed = store.removeDeadTemporaries();
      expect(removed.sort()).toEqual([deadName, reusedName, oldUnowned].sort());
      const left = readdirSync(dir);
      expect(left).toContain(liveName);
      expect(left).toContain(freshUnowned);
      expect(left).toContain('sha256-not-a-temporary');
      expect(left.filter((name) => name.startsWith(`.tmp-${process.pid}-`))).toHaveLength(1); // the open writer's
      expect(open.finish().size).toBe('still being written'.length);
    },
  );
});
