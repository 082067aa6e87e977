/**
 * The parts of operator-granted resources below the run (exec/resources.ts, exec/forward.ts, sandbox.ts):
 * how grants are resolved on the host, what bwrap is told to bind (and what a request may not make it
 * bind), the AF_UNIX filter variant, and the tcp forwarder with real sockets on loopback (bytes both ways,
 * half-close, an upstream that is down, the connection bound, everything closed at the end).
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_CONNECTIONS, startForwarders } from '../../runner/exec/forward.js';
import {
  openResourceMounts,
  resolveGrants,
  resourceEnvName,
  toResourceEnv,
  toResourceMounts,
  type ResolvedGrant,
} from '../../runner/exec/resources.js';
import { DEFAULT_STEP_LIMITS, planLaunch, probeIsolation, startLaunch, toSpawnStdio } from '../../runner/exec/sandbox.js';
import { spawn } from 'node:child_process';
import { renameSync } from 'node:fs';
import { findTool } from '../../runner/exec/sandbox.js';
import { toSeccompProgram } from '../../runner/exec/seccomp.js';
import { codeOf } from '../helpers/codes.js';

let dir: string;
let unixServer: Server;
let socketPath: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edge-runner-res-'));
  mkdirSync(join(dir, 'data'));
  writeFileSync(join(dir, 'data', 'f.txt'), 'x');
  mkdirSync(join(dir, 'state'));
  mkdirSync(join(dir, 'ws'));
  symlinkSync(join(dir, 'data'), join(dir, 'link'));
  socketPath = join(dir, 'svc.sock');
  unixServer = createServer((s) => s.end());
  await new Promise<void>((resolve) => unixServer.listen(socketPath, resolve));
});

afterAll(async () => {
  await new Promise((resolve) => unixServer.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

const state = () => join(dir, 'state');

describe('resolveGrants', () => {
  it('resolves each needed name once, in name order, to where the contract puts it', () => {
    const resolution = resolveGrants(
      ['web', 'data', 'svc', 'data'],
      { data: { path: join(dir, 'link') }, svc: { socket: socketPath }, web: { tcp: '[::1]:8080' } },
      state(),
    );
    expect(resolution).toEqual({
      grants: [
        { name: 'data', kind: 'path', source: join(dir, 'data'), target: '/resources/data', envName: 'EDGE_RUNNER_RESOURCE_DATA' },
        {
          name: 'svc',
          kind: 'socket',
          source: socketPath,
          target: '/resources/svc/svc.sock',
          folder: '/resources/svc',
          envName: 'EDGE_RUNNER_RESOURCE_SVC',
        },
        {
          name: 'web',
          kind: 'tcp',
          target: '/resources/web/socket',
          folder: '/resources/web',
          envName: 'EDGE_RUNNER_RESOURCE_WEB',
          upstream: { host: '::1', port: 8080 },
        },
      ],
    });
  });

  it('names the variable in capitals with every other character as _', () => {
    expect(resourceEnvName('config-repo.v2')).toBe('EDGE_RUNNER_RESOURCE_CONFIG_REPO_V2');
  });

  it.each([
    ['an ungranted name', ['nope'], () => ({}), 'is not granted'],
    ['a name inherited from Object', ['toString'], () => ({}), 'is not granted'],
    ['__proto__', ['__proto__'], () => ({}), 'is not granted'],
    ['a missing path', ['x'], () => ({ x: { path: '/nonexistent/edge-runner' } }), 'is not there'],
    ['a socket grant on a folder', ['x'], () => ({ x: { socket: '/usr' } }), 'is not a unix socket'],
    ['a path grant on a device', ['x'], () => ({ x: { path: '/dev/null' } }), 'neither a file nor a folder'],
    ['the state folder by a detour', ['x'], () => ({ x: { path: join(dir, 'data', '..', 'state') } }), 'state folder'],
    ['a parent of the state folder', ['x'], () => ({ x: { path: dir } }), 'state folder'],
    ['a tcp name too long for sun_path', ['n'.repeat(100)], () => ({ ['n'.repeat(100)]: { tcp: '127.0.0.1:1' } }), 'too long'],
  ] as const)('refuses %s', (_what, needs, resources, why) => {
    const resolution = resolveGrants(needs, resources() as never, state());
    expect('refused' in resolution && resolution.refused.why).toContain(why);
  });
});

describe('planLaunch with resources', () => {
  const bwrap = findTool('bwrap') && findTool('prlimit');
  const base = () => ({ argv: ['/bin/true'], env: {}, workspace: join(dir, 'ws'), limits: { ...DEFAULT_STEP_LIMITS }, mode: 'bwrap' as const });
  const grants = (): ResolvedGrant[] => {
    const resolution = resolveGrants(['data', 'svc'], { data: { path: join(dir, 'data') }, svc: { socket: socketPath } }, state());
    if (!('grants' in resolution)) throw new Error('not granted');
    return resolution.grants;
  };

  it.skipIf(!bwrap)('binds each grant read-only at its target, after the workspace and before the root goes read-only', () => {
    const plan = planLaunch({ ...base(), resources: toResourceMounts(grants()) }, { runnerUid: 1000 });
    const args = plan.args.join(' ');
    expect(args).toContain(
      `--perms 0755 --dir /resources --ro-bind ${join(dir, 'data')} /resources/data --perms 0755 --dir /resources/svc --ro-bind ${socketPath} /resources/svc/svc.sock`,
    );
    expect(args.indexOf('/resources')).toBeGreaterThan(args.indexOf(`--bind ${join(dir, 'ws')}`));
    expect(args.indexOf('/resources')).toBeLessThan(args.indexOf('--remount-ro /'));
    expect(args).toContain('--unshare-net');
  });

  it.skipIf(!bwrap)('a socket grant switches the filter to the AF_UNIX variant, a path grant does not', () => {
    const [data] = toResourceMounts(grants());
    const pathOnly = planLaunch({ ...base(), resources: [data!] }, { runnerUid: 1000 }).fdInputs![0]!;
    const withSocket = planLaunch({ ...base(), resources: toResourceMounts(grants()) }, { runnerUid: 1000 }).fdInputs![0]!;
    const none = planLaunch(base(), { runnerUid: 1000 }).fdInputs![0]!;
    expect(pathOnly.equals(none)).toBe(true);
    expect(withSocket.equals(none)).toBe(false);
  });

  it.skipIf(!bwrap).each([
    ['a target outside /resources', { kind: 'path', source: '/etc', target: '/usr/bin' }],
    ['a target over /resources itself', { kind: 'path', source: '/etc', target: '/resources' }],
    ['a dot-dot target', { kind: 'path', source: '/etc', target: '/resources/../usr' }],
    ['a socket not in its own folder', { kind: 'socket', source: '/tmp/x.sock', target: '/resources/a/b', folder: '/resources/c' }],
    ['a socket at dot-dot', { kind: 'socket', source: '/tmp/x.sock', target: '/resources/a/..', folder: '/resources/a' }],
    ['a relative source', { kind: 'path', source: 'etc', target: '/resources/a' }],
  ] as const)('refuses %s (EXEC_SANDBOX_REQUEST_INVALID)', (_what, mount) => {
    expect(codeOf(() => planLaunch({ ...base(), resources: [mount as never] }, { runnerUid: 1000 }))).toBe('EXEC_SANDBOX_REQUEST_INVALID');
  });

  it.skipIf(!bwrap)('refuses two mounts of one name, resources without bwrap, and a system folder that would cover them', () => {
    const twice = [
      { kind: 'path' as const, source: '/etc', target: '/resources/a' },
      { kind: 'path' as const, source: '/usr', target: '/resources/a' },
    ];
    expect(codeOf(() => planLaunch({ ...base(), resources: twice }, { runnerUid: 1000 }))).toBe('EXEC_SANDBOX_REQUEST_INVALID');
    expect(codeOf(() => planLaunch({ ...base(), mode: 'none', resources: toResourceMounts(grants()) }, { runnerUid: 1000 }))).toBe(
      'EXEC_SANDBOX_REQUEST_INVALID',
    );
    expect(
      codeOf(() => planLaunch({ ...base(), resources: toResourceMounts(grants()) }, { runnerUid: 1000, systemFolders: ['/usr', '/resources'] })),
    ).toBe('EXEC_SANDBOX_REQUEST_INVALID');
  });

  it("a tcp grant without its forwarder running is the caller's bug, not an empty bind", () => {
    const resolution = resolveGrants(['w'], { w: { tcp: '127.0.0.1:9' } }, state());
    if (!('grants' in resolution)) throw new Error('not granted');
    expect(() => toResourceMounts(resolution.grants)).toThrow(/not running/);
    expect(toResourceMounts(resolution.grants, new Map([['w', '/tmp/x.sock']]))).toEqual([
      { kind: 'tcp', source: '/tmp/x.sock', target: '/resources/w/socket', folder: '/resources/w' },
    ]);
    expect(toResourceEnv(resolution.grants)).toEqual({ EDGE_RUNNER_RESOURCE_W: '/resources/w/socket' });
  });
});

describe('pinned sources', () => {
  const usable = probeIsolation().available === 'bwrap';

  /** Runs a plan to its end and returns its stdout (bounded by the test's timeout). */
  function runPlan(plan: ReturnType<typeof planLaunch>): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = spawn(plan.file, plan.args, {
        cwd: plan.cwd,
        env: plan.env,
        stdio: toSpawnStdio(plan),
        ...(plan.uid !== undefined ? { uid: plan.uid, gid: plan.gid } : {}),
      });
      const chunks: Buffer[] = [];
      child.stdout!.on('data', (chunk: Buffer) => chunks.push(chunk));
      child.on('error', reject);
      child.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
      startLaunch(plan, child);
    });
  }

  it('a source changed between resolving and pinning is refused, naming the resource only', () => {
    const folder = join(dir, 'swap-early');
    mkdirSync(folder);
    const resolution = resolveGrants(['early'], { early: { path: folder } }, state());
    if (!('grants' in resolution)) throw new Error('not granted');
    renameSync(folder, `${folder}.away`);
    symlinkSync('/', folder);
    expect(() => openResourceMounts(resolution.grants)).toThrow(/"early" changed on the host/);
    expect(codeOf(() => openResourceMounts(resolution.grants))).toBe('EXEC_RESOURCE_CHANGED');
  });

  it.skipIf(!usable)('a source swapped for a symlink to / after pinning: the step still sees what was checked', async () => {
    const folder = join(dir, 'swap-late');
    mkdirSync(folder);
    writeFileSync(join(folder, 'checked.txt'), 'checked\n');
    const resolution = resolveGrants(['late'], { late: { path: folder } }, state());
    if (!('grants' in resolution)) throw new Error('not granted');
    const pinned = openResourceMounts(resolution.grants);
    try {
      renameSync(folder, `${folder}.away`);
      symlinkSync('/', folder);
      const workspace = mkdtempSync(join(tmpdir(), 'edge-runner-res-ws-'));
      const plan = planLaunch({
        argv: ['/bin/ls', '/resources/late'],
        env: { PATH: '/usr/bin:/bin' },
        workspace,
        limits: { ...DEFAULT_STEP_LIMITS },
        mode: 'bwrap',
        resources: pinned.mounts,
      });
      expect(plan.args.join(' ')).toContain('--ro-bind-fd 4 /resources/late');
      expect(await runPlan(plan)).toBe('checked.txt\n');
      rmSync(workspace, { recursive: true, force: true });
    } finally {
      pinned.close();
    }
  });
});

describe('the AF_UNIX filter variant', () => {
  it('differs from the default only by the AF_UNIX branch', () => {
    for (const arch of ['x64', 'arm64'] as const) {
      const plain = toSeccompProgram(arch);
      const unix = toSeccompProgram(arch, { unix: true });
      expect(unix.length).toBe(plain.length + 4);
    }
  });
});

/** Reads everything until the peer ends; bounded by the test's own timeout. */
function readAll(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.on('error', reject);
  });
}

describe('the tcp forwarder', () => {
  let upstream: Server;
  let port: number;
  let upstreamOpen = 0;

  beforeAll(async () => {
    // An echo service that answers once its client has half-closed: needs the half-close passed on.
    upstream = createServer({ allowHalfOpen: true }, (socket) => {
      upstreamOpen += 1;
      socket.on('close', () => (upstreamOpen -= 1));
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('end', () => socket.end(`echo:${Buffer.concat(chunks).toString('utf8')}`));
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    port = (upstream.address() as { port: number }).port;
  });

  afterAll(async () => {
    await new Promise((resolve) => upstream.close(resolve));
  });

  it('joins each connection to the granted address, bytes both ways and the half-close, in a 0700 folder, a 0600 socket', async () => {
    const forwarders = await startForwarders([{ name: 'web', host: '127.0.0.1', port }]);
    try {
      const path = forwarders.sockets.get('web')!;
      expect(statSync(join(path, '..')).mode & 0o777).toBe(0o700);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      const big = 'y'.repeat(3 * 1024 * 1024);
      const answers = await Promise.all(
        ['a', big].map(async (payload) => {
          const client = connect(path);
          const got = readAll(client);
          client.end(payload);
          return got;
        }),
      );
      expect(answers[0]).toBe('echo:a');
      expect(answers[1]!.length).toBe(big.length + 5);
      expect(forwarders.accepted.get('web')).toBe(2);
    } finally {
      await forwarders.close();
    }
    expect(existsSync(forwarders.sockets.get('web')!)).toBe(false);
  });

  it('an upstream that is down: the client is closed, the runner stays up', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadPort = (closed.address() as { port: number }).port;
    await new Promise((resolve) => closed.close(resolve));
    const forwarders = await startForwarders([{ name: 'gone', host: '127.0.0.1', port: deadPort }]);
    try {
      const client = connect(forwarders.sockets.get('gone')!);
      const ended = await new Promise<string>((resolve) => {
        client.on('close', () => resolve('closed'));
        client.on('error', () => {});
        client.write('hello');
      });
      expect(ended).toBe('closed');
    } finally {
      await forwarders.close();
    }
  });

  it(`holds at most ${MAX_CONNECTIONS} connections at once, and close() ends whatever is still open`, async () => {
    const forwarders = await startForwarders([{ name: 'web', host: '127.0.0.1', port }]);
    const clients: Socket[] = [];
    const closedCount = { n: 0 };
    try {
      for (let i = 0; i < MAX_CONNECTIONS + 8; i += 1) {
        const client = connect(forwarders.sockets.get('web')!);
        client.on('error', () => {});
        client.on('close', () => (closedCount.n += 1));
        clients.push(client);
      }
      // The ones past the bound are closed by the server at once; wait (bounded) for them.
      const deadline = Date.now() + 10_000;
      while (closedCount.n < 8 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(closedCount.n).toBe(8);
      while (upstreamOpen < MAX_CONNECTIONS && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(upstreamOpen).toBe(MAX_CONNECTIONS);
    } finally {
      await forwarders.close();
    }
    const deadline = Date.now() + 10_000;
    while ((closedCount.n < clients.length || upstreamOpen > 0) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(closedCount.n).toBe(clients.length);
    expect(upstreamOpen).toBe(0);
  });
});
