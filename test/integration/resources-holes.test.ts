/**
 * Hostile review of operator-granted resources: what a step, a capsule signer or a local user could do
 * with a grant beyond what the contract (exec/resources.ts) gives.
 */
import { execSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, lchownSync, linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_CONNECTIONS, startForwarders } from '../../runner/exec/forward.js';
import { openResourceMounts, resolveGrants } from '../../runner/exec/resources.js';
import { DEFAULT_STEP_LIMITS, planLaunch, probeIsolation, startLaunch, toSpawnStdio } from '../../runner/exec/sandbox.js';

const usable = probeIsolation().available === 'bwrap';
let dir: string;
let unixServer: Server;
let socketPath: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edge-runner-holes-'));
  mkdirSync(join(dir, 'data'));
  writeFileSync(join(dir, 'data', 'f.txt'), 'x');
  mkdirSync(join(dir, 'state'));
  socketPath = join(dir, 'svc.sock');
  unixServer = createServer((s) => s.end('svc\n'));
  await new Promise<void>((resolve) => unixServer.listen(socketPath, resolve));
});

afterAll(async () => {
  await new Promise((resolve) => unixServer.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

function runPlan(plan: ReturnType<typeof planLaunch>): Promise<{ out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(plan.file, plan.args, {
      cwd: plan.cwd,
      env: plan.env,
      stdio: toSpawnStdio(plan),
      ...(plan.uid !== undefined ? { uid: plan.uid, gid: plan.gid } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr!.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', () => resolve({ out: Buffer.concat(out).toString('utf8'), err: Buffer.concat(err).toString('utf8') }));
    startLaunch(plan, child);
  });
}

async function inSandbox(needs: string[], resources: Record<string, unknown>, argv: string[]) {
  const resolution = resolveGrants(needs, resources as never, join(dir, 'state'));
  if (!('grants' in resolution)) throw new Error(`not granted: ${JSON.stringify(resolution)}`);
  const pinned = openResourceMounts(resolution.grants);
  const workspace = mkdtempSync(join(tmpdir(), 'edge-runner-holes-ws-'));
  try {
    const plan = planLaunch({
      argv,
      env: { PATH: '/usr/bin:/bin' },
      workspace,
      limits: { ...DEFAULT_STEP_LIMITS },
      mode: 'bwrap',
      resources: pinned.mounts,
    });
    return await runPlan(plan);
  } finally {
    pinned.close();
    rmSync(workspace, { recursive: true, force: true });
  }
}

/** A local user's uid on the host: not root, not the runner. */
const LOCAL_USER = 4242;

describe('a local user who may write where a grant is configured', () => {
  it.skipIf(process.getuid?.() !== 0)('cannot redirect a socket grant to another host socket with a symlink of their own', async () => {
    // The operator grants the socket of a service whose folder its own user owns (like /run/postgresql).
    const theirs = join(dir, 'svc-run');
    mkdirSync(theirs);
    chownSync(theirs, LOCAL_USER, LOCAL_USER);
    // That user puts a symlink to a socket of the host's in place of the service's socket.
    symlinkSync(socketPath, join(theirs, '.s.PGSQL.5432'));
    lchownSync(join(theirs, '.s.PGSQL.5432'), LOCAL_USER, LOCAL_USER);
    const resolution = resolveGrants(['db'], { db: { socket: join(theirs, '.s.PGSQL.5432') } }, join(dir, 'state'));
    expect('refused' in resolution && resolution.refused.why).toContain('symlink');
    expect(JSON.stringify(resolution)).not.toContain(dir);
  });

  it.skipIf(process.getuid?.() !== 0)('cannot redirect a path grant to a folder below one they cannot enter', async () => {
    const closed = join(dir, 'closed');
    mkdirSync(join(closed, 'open'), { recursive: true });
    writeFileSync(join(closed, 'open', 'secret.txt'), 'behind a 0700 folder\n', { mode: 0o644 });
    chmodSync(closed, 0o700);
    const theirs = join(dir, 'share');
    mkdirSync(theirs);
    chownSync(theirs, LOCAL_USER, LOCAL_USER);
    symlinkSync(join(closed, 'open'), join(theirs, 'data'));
    lchownSync(join(theirs, 'data'), LOCAL_USER, LOCAL_USER);
    const resolution = resolveGrants(['data'], { data: { path: join(theirs, 'data') } }, join(dir, 'state'));
    expect('refused' in resolution && resolution.refused.why).toContain('symlink');
    // Nested: a symlink of theirs reached through one of root's.
    symlinkSync(theirs, join(dir, 'share-link'));
    const nested = resolveGrants(['data'], { data: { path: join(dir, 'share-link', 'data') } }, join(dir, 'state'));
    expect('refused' in nested && nested.refused.why).toContain('symlink');
  });

  it.skipIf(process.getuid?.() !== 0)('cannot give a socket grant another service by a hard link to its socket', () => {
    // Where fs.protected_hardlinks is off, anyone may link any socket they can reach into their own folder;
    // root stands in for them here (it may link whatever the setting).
    const theirs = join(dir, 'svc-linked');
    mkdirSync(theirs);
    chownSync(theirs, LOCAL_USER, LOCAL_USER);
    linkSync(socketPath, join(theirs, '.s.PGSQL.5432'));
    const resolution = resolveGrants(['db'], { db: { socket: join(theirs, '.s.PGSQL.5432') } }, join(dir, 'state'));
    expect('refused' in resolution && resolution.refused.why).toContain('hard links');
    rmSync(join(theirs, '.s.PGSQL.5432'));
  });

  it("a symlink of root's or the runner's is followed as before", () => {
    symlinkSync(join(dir, 'data'), join(dir, 'data-link'));
    symlinkSync('data-link/../data', join(dir, 'relative-link'));
    for (const path of [join(dir, 'data-link'), join(dir, 'relative-link'), join(dir, 'data-link', '.', '')]) {
      expect(resolveGrants(['data'], { data: { path } }, join(dir, 'state'))).toMatchObject({ grants: [{ source: join(dir, 'data') }] });
    }
  });
});

describe('a path grant shows what its folder holds', () => {
  // Out of reach of the runner (no mount flag stops it): documented in exec/resources.ts's contract.
  it.skipIf(!usable)('a FIFO placed in a granted folder is written to, read-only mount or not', async () => {
    const folder = join(dir, 'fifo-data');
    mkdirSync(folder);
    execSync(`mkfifo -m 666 ${join(folder, 'fifo')}`);
    const reader = spawn('/bin/cat', [join(folder, 'fifo')]);
    const got: Buffer[] = [];
    reader.stdout.on('data', (chunk: Buffer) => got.push(chunk));
    const closed = new Promise((resolve) => reader.on('close', resolve));
    const r = await inSandbox(['data'], { data: { path: folder } }, [
      '/bin/sh',
      '-c',
      'echo out > /resources/data/fifo; touch /resources/data/x 2>/dev/null || echo ro',
    ]);
    await closed;
    expect(r.out).toBe('ro\n');
    expect(Buffer.concat(got).toString()).toBe('out\n');
  });
});

describe('a path grant on a shared mount (systemd makes / shared)', () => {
  // bwrap's binds are slaves of the host's mounts: before the root runner started bwrap through unshare's
  // private mounts, this tmpfs showed inside (rw, master:N in the step's mountinfo) and the step wrote to it.
  it.skipIf(!usable || process.getuid?.() !== 0)('a mount the host makes below a granted folder during the run does not reach the step', async () => {
    const shared = mkdtempSync(join(tmpdir(), 'edge-runner-holes-shared-'));
    const sub = join(shared, 'data', 'sub');
    mkdirSync(sub, { recursive: true });
    const mounted: string[] = [];
    try {
      execSync(`mount --bind ${shared} ${shared} && mount --make-shared ${shared}`);
      mounted.push(shared);
      // The step waits (bounded) for the host's word that the mount is made, then looks and tries to write.
      const running = inSandbox(['data'], { data: { path: join(shared, 'data') } }, [
        '/bin/sh',
        '-c',
        'for i in $(seq 200); do [ -e /resources/data/mounted ] && break; sleep 0.05; done; grep " /resources/data/sub " /proc/self/mountinfo; echo w > /resources/data/sub/x 2>/dev/null && echo wrote; echo looked',
      ]);
      await new Promise((resolve) => setTimeout(resolve, 200));
      execSync(`mount -t tmpfs -o size=64k,mode=1777 tmpfs ${sub}`);
      mounted.push(sub);
      writeFileSync(join(shared, 'data', 'mounted'), '');
      expect((await running).out).toBe('looked\n');
    } finally {
      for (const mount of mounted.reverse()) execSync(`umount -l ${mount}`);
      rmSync(shared, { recursive: true, force: true });
    }
  });
});

describe('the forwarder against a hostile step', () => {
  it(`a step that hangs up at once cannot hold more than ${MAX_CONNECTIONS} connections open to the granted service`, async () => {
    // A service that keeps a connection whose client half-closed (many do: they wait for the rest).
    let open = 0;
    let peak = 0;
    const kept: Socket[] = [];
    const service = createServer({ allowHalfOpen: true }, (socket) => {
      open += 1;
      peak = Math.max(peak, open);
      kept.push(socket);
      socket.on('error', () => {});
      socket.on('close', () => (open -= 1));
    });
    await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
    const port = (service.address() as { port: number }).port;
    const forwarders = await startForwarders([{ name: 'web', host: '127.0.0.1', port }]);
    try {
      for (let i = 0; i < 3 * MAX_CONNECTIONS; i += 1) {
        const client = connect(forwarders.sockets.get('web')!);
        client.on('error', () => {});
        await new Promise<void>((resolve) => client.once('connect', () => resolve()));
        client.write('GET / HTTP/1.1\r\n\r\n');
        client.destroy();
        await new Promise((resolve) => client.once('close', resolve));
      }
      const deadline = Date.now() + 5_000;
      while (open < MAX_CONNECTIONS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 200)); // anything past the bound would have come by now
      // The slots a hung-up step left stay its own until the run ends: the service never sees more.
      expect(peak).toBe(MAX_CONNECTIONS);
    } finally {
      await forwarders.close();
      for (const socket of kept) socket.destroy();
      await new Promise((resolve) => service.close(resolve));
    }
  });
});

describe("a local user and the forwarders' folder", () => {
  it.each([
    ['others may write', 0o777],
    ['its group may write', 0o770],
  ])('refuses a parent folder %s without the sticky bit (its folder could be swapped while it listens)', async (_what, mode) => {
    const parent = mkdtempSync(join(tmpdir(), 'edge-runner-holes-parent-'));
    try {
      chmodSync(parent, mode);
      await expect(startForwarders([{ name: 'web', host: '127.0.0.1', port: 9 }], { parent })).rejects.toThrow(/not sticky/);
      chmodSync(parent, mode | 0o1000); // like /tmp: nobody renames what is not theirs
      const forwarders = await startForwarders([{ name: 'web', host: '127.0.0.1', port: 9 }], { parent });
      await forwarders.close();
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });

  it.skipIf(process.getuid?.() !== 0)('refuses a parent folder another user owns (its owner may rename what is in it)', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'edge-runner-holes-parent-'));
    try {
      chmodSync(parent, 0o1755);
      chownSync(parent, LOCAL_USER, LOCAL_USER);
      await expect(startForwarders([{ name: 'web', host: '127.0.0.1', port: 9 }], { parent })).rejects.toThrow(/another user's/);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });
});

describe('the forwarder under a step that misbehaves on purpose', () => {
  it('connections cut at every moment, half-closes both ways, writes after the end: the runner stays up and close() ends all', async () => {
    let serviceOpen = 0;
    let i = 0;
    // A service that answers in one of several rude ways, by turn.
    const service = createServer({ allowHalfOpen: true }, (socket) => {
      serviceOpen += 1;
      socket.on('close', () => (serviceOpen -= 1));
      socket.on('error', () => {});
      socket.resume(); // reads (and drops) what comes, so it sees the end
      const mode = (i += 1) % 4;
      if (mode === 0) socket.destroy();
      else if (mode === 1) socket.end('bye');
      else if (mode === 2) socket.on('data', (chunk: Buffer) => socket.write(chunk)).on('end', () => socket.end());
      else setTimeout(() => socket.resetAndDestroy(), 5);
    });
    await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
    const port = (service.address() as { port: number }).port;
    const forwarders = await startForwarders([{ name: 'web', host: '127.0.0.1', port }]);
    const clients: Promise<void>[] = [];
    let clientsOpen = 0;
    for (let n = 0; n < 120; n += 1) {
      const client = connect({ path: forwarders.sockets.get('web')!, allowHalfOpen: true });
      client.on('error', () => {});
      client.resume();
      clientsOpen += 1;
      clients.push(
        new Promise((resolve) =>
          client.on('close', () => {
            clientsOpen -= 1;
            resolve();
          }),
        ),
      );
      const how = n % 5;
      if (how === 0) client.destroy();
      else if (how === 1) client.end('x'.repeat(100_000));
      else if (how === 2) client.once('connect', () => setTimeout(() => client.destroy(), n % 7));
      else if (how === 3) client.write('y'.repeat(1_000_000), () => client.destroy());
      else client.once('connect', () => client.end());
    }
    await new Promise((r) => setTimeout(r, 500));
    await forwarders.close();
    await Promise.race([Promise.all(clients), new Promise((r) => setTimeout(r, 10_000))]);
    const deadline = Date.now() + 5_000;
    while (serviceOpen > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(serviceOpen).toBe(0);
    expect(clientsOpen).toBe(0);
    await new Promise((resolve) => service.close(resolve));
  });
});

describe("a path grant that would show the runner's own working folders", () => {
  it('refuses one that shows the spool folder (capsules waiting, answers written), or lies in it', () => {
    const spool = join(dir, 'media', 'spool');
    mkdirSync(join(spool, 'in'), { recursive: true });
    for (const path of [join(dir, 'media'), spool, join(spool, 'in')]) {
      const resolution = resolveGrants(['x'], { x: { path } }, join(dir, 'state'), { keep: [spool] });
      expect('refused' in resolution && resolution.refused.why).toContain('spool folder');
    }
    expect(resolveGrants(['x'], { x: { path: join(dir, 'data') } }, join(dir, 'state'), { keep: [spool] })).toHaveProperty('grants');
  });

  it('refuses one that shows the folder where the forwarders of every run listen', () => {
    const elsewhere = '/var/lib/edge-runner-holes-absent'; // a state folder outside the temporary folder
    const resolution = resolveGrants(['x'], { x: { path: tmpdir() } }, elsewhere);
    expect('refused' in resolution && resolution.refused.why).toContain('forwarders');
    // A folder inside it is not a parent of the forwarders' own folders: granted as before.
    expect(resolveGrants(['x'], { x: { path: join(dir, 'data') } }, join(dir, 'state'))).toHaveProperty('grants');
  });
});
