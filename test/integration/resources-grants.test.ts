/**
 * Operator-granted resources (issue 10, "What a step may reach"), with real services on loopback and the
 * production launcher (bwrap, the step user when the runner is root): a step reads a granted folder,
 * queries a granted PostgreSQL through its unix socket (psql), and a granted HTTP service through the tcp
 * grant's forwarder; it cannot reach what is not granted (another folder, another socket, another port, the
 * granted port itself over tcp). A capsule needing an ungranted name is refused before anything runs, with
 * a signed rejection; the evidence names the resources and never their paths or addresses.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sandboxLauncherSelector } from '../../runner/agent/launcher.js';
import { withRunner } from '../../runner/agent/runner.js';
import { runCapsule } from '../../runner/agent/run-capsule.js';
import { rejectionFor } from '../../runner/agent/answers.js';
import type { CapsuleOutcome } from '../../runner/agent/run-capsule.js';
import type { ConfigOverrides, Resource } from '../../runner/config/config.js';
import { verifyRejection } from '../../runner/evidence/rejection.js';
import type { EvidencePredicate, StepRecord } from '../../runner/evidence/statement.js';
import { probeIsolation } from '../../runner/exec/sandbox.js';
import { guardStatement } from '../../runner/evidence/egress.js';
import type { Statement } from '../../runner/evidence/statement.js';
import type { Manifest } from '../../runner/capsule/manifest.js';
import { codeOf } from '../helpers/codes.js';
import { SYSCALL_FILTER, SYSCALL_FILTER_UNIX } from '../../runner/exec/seccomp.js';
import { parseRecordLeaf } from '../../runner/log/record.js';
import { Store, type OutboxRow } from '../../runner/store/store.js';
import type { ManifestTemplate } from '../../runner/capsule/pack.js';
import { loadState } from '../../runner/state/state.js';
import { postgresUnavailable, startPostgres, type PostgresCluster } from '../helpers/postgres.js';
import { directSelector, execInState } from '../helpers/runner.js';
import { makeWorld, type World } from '../helpers/world.js';

type Completed = Extract<CapsuleOutcome, { kind: 'completed' }>;

const bwrapUsable = probeIsolation().available === 'bwrap';
const noPostgres = postgresUnavailable();
const skipReason = !bwrapUsable ? 'bwrap cannot run here' : noPostgres;

let world: World;
let pg: PostgresCluster;
let dataDir: string;
let otherDir: string;
let web: HttpServer;
let webPort: number;
let otherWeb: HttpServer;
let otherWebPort: number;
let otherSocket: NetServer;
let otherSocketPath: string;
let abstractSocket: NetServer;
const abstractName = `edge-runner-test-${process.pid}`;
let webHits = 0;

const listen = (server: HttpServer) =>
  new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));

beforeAll(async () => {
  world = makeWorld();
  dataDir = join(world.dir, 'extract');
  mkdirSync(join(dataDir, 'nested'), { recursive: true });
  writeFileSync(join(dataDir, 'accounts.csv'), 'id,balance\n1,100\n2,250\n');
  writeFileSync(join(dataDir, 'nested', 'deep.txt'), 'deep\n');
  otherDir = join(world.dir, 'not-granted');
  mkdirSync(otherDir);
  writeFileSync(join(otherDir, 'secret.txt'), 'ungranted-secret\n');
  web = createHttpServer((req, res) => {
    webHits += 1;
    res.end(`granted-web ${req.method} ${req.url}\n`);
  });
  webPort = await listen(web);
  otherWeb = createHttpServer((_req, res) => res.end('ungranted-web\n'));
  otherWebPort = await listen(otherWeb);
  otherSocketPath = join(world.dir, 'other.sock');
  otherSocket = createNetServer((socket) => socket.end('ungranted-socket\n'));
  await new Promise<void>((resolve) => otherSocket.listen(otherSocketPath, () => resolve()));
  // An abstract unix socket of the host: no file to hide, reachable only from the host's network namespace.
  abstractSocket = createNetServer((socket) => socket.end('ungranted-abstract\n'));
  await new Promise<void>((resolve) => abstractSocket.listen(`\0${abstractName}`, () => resolve()));
  if (!skipReason) {
    pg = startPostgres();
    pg.sql('create table accounts (id int primary key, balance int); insert into accounts values (1, 100), (2, 250);');
  }
}, 120_000);

afterAll(async () => {
  pg?.stop();
  await Promise.all([web, otherWeb, otherSocket, abstractSocket].map((server) => new Promise((resolve) => server?.close(resolve))));
  world?.cleanup();
});

function grants(): Record<string, Resource> {
  return {
    extract: { path: dataDir },
    'not-needed': { path: otherDir },
    db: { socket: pg.socketPath },
    web: { tcp: `127.0.0.1:${webPort}` },
  };
}

async function run(patch: Partial<ManifestTemplate>, flags: ConfigOverrides = { resources: grants() }): Promise<CapsuleOutcome> {
  const capsule = world.capsule({ isolation: 'required', ...patch });
  return execInState(world.stateDir, Buffer.from(JSON.stringify(capsule)), {
    launcher: sandboxLauncherSelector(),
    flags: { exec: { killGraceMs: 300 }, ...flags },
  });
}

async function completed(patch: Partial<ManifestTemplate>, flags?: ConfigOverrides): Promise<Completed> {
  const result = await run(patch, flags);
  if (result.kind !== 'completed') throw new Error(`not run: ${JSON.stringify(result)}`);
  return result;
}

const blobOf = (digest: string) => readFileSync(join(world.stateDir, 'evidence', 'blobs', digest.replace(':', '-')), 'utf8');
function out(result: Completed, name: string): { step: StepRecord; stdout: string; stderr: string } {
  const step = result.steps.find((s) => s.name === name)!;
  return { step, stdout: step.stdout ? blobOf(step.stdout.digest) : '', stderr: step.stderr ? blobOf(step.stderr.digest) : '' };
}
const predicateOf = (result: Completed) =>
  (JSON.parse(Buffer.from(result.bundle.evidence.payload, 'base64').toString('utf8')) as { predicate: EvidencePredicate }).predicate;
const sh = (name: string, script: string) => ({ name, run: ['/bin/sh', '-c', script], continueOnFailure: true });

function recordsOf(kind: string): Record<string, unknown>[] {
  const store = Store.open(join(world.stateDir, 'runner.db'));
  try {
    return [...store.records()]
      .map((r) => parseRecordLeaf(r.leaf, r.seq))
      .filter((r) => r.kind === kind)
      .map((r) => r.body as Record<string, unknown>);
  } finally {
    store.close();
  }
}

describe.skipIf(skipReason !== undefined)(`granted resources in the sandbox (${skipReason ?? 'bwrap and PostgreSQL here'})`, () => {
  it('a step reads a granted folder at /resources/<name>, read-only, and finds its variable', async () => {
    const result = await completed({
      needs: ['extract'],
      steps: [
        sh('read', 'cat /resources/extract/accounts.csv && cat "$EDGE_RUNNER_RESOURCE_EXTRACT/nested/deep.txt"'),
        sh('write', 'echo x > /resources/extract/new.txt'),
        sh('list', 'ls -a /resources'),
        sh('mount', "grep ' /resources/extract ' /proc/self/mountinfo"),
      ],
    });
    expect(out(result, 'read').stdout).toBe('id,balance\n1,100\n2,250\ndeep\n');
    expect(out(result, 'write').step.status).toBe('failed');
    expect(out(result, 'write').stderr).toMatch(/Read-only file system/);
    expect(existsSync(join(dataDir, 'new.txt'))).toBe(false);
    // Only what the capsule needs shows, granted or not: not-needed, db and web are granted, not needed.
    expect(out(result, 'list').stdout.split('\n').filter(Boolean).sort()).toEqual(['.', '..', 'extract']);
    // Read-only, and no setuid program or device node in a granted folder counts (bwrap binds nosuid, nodev).
    const options = out(result, 'mount').stdout.split(' ')[5]!.split(',');
    expect(options).toEqual(expect.arrayContaining(['ro', 'nosuid', 'nodev']));
  });

  it('a step queries the granted PostgreSQL through its unix socket with psql', async () => {
    const result = await completed({
      needs: ['db'],
      steps: [
        sh('query', `psql -h /resources/db -p ${pg.port} -U ${pg.user} -d postgres -X -A -t -c 'select sum(balance) from accounts'`),
        sh('variable', 'echo "$EDGE_RUNNER_RESOURCE_DB"'),
      ],
    });
    expect(out(result, 'query').stderr).toBe('');
    expect(out(result, 'query').stdout).toBe('350\n');
    expect(out(result, 'variable').stdout).toBe(`/resources/db/.s.PGSQL.${pg.port}\n`);
    expect(predicateOf(result).run.sandbox?.syscallFilter).toBe(SYSCALL_FILTER_UNIX);
  });

  it('a step reaches the granted HTTP service through the tcp grant (a forwarder socket), and the forwarder is gone after the run', async () => {
    const before = webHits;
    const forwarders = () => readdirSync(tmpdir()).filter((name) => name.startsWith('edge-runner-fwd-')).length;
    const already = forwarders();
    const result = await completed({
      needs: ['web'],
      steps: [
        sh('get', 'curl -sS --max-time 10 --unix-socket "$EDGE_RUNNER_RESOURCE_WEB" http://web/health'),
        sh('twice', 'curl -sS --max-time 10 --unix-socket /resources/web/socket http://web/a http://web/b'),
      ],
    });
    expect(out(result, 'get').stdout).toBe('granted-web GET /health\n');
    expect(out(result, 'twice').stdout).toBe('granted-web GET /a\ngranted-web GET /b\n');
    expect(webHits - before).toBe(3);
    expect(forwarders()).toBe(already);
  });

  it('a step cannot reach what is not granted: another folder, another socket, another port, the granted port over tcp', async () => {
    const result = await completed({
      needs: ['extract', 'db', 'web'],
      steps: [
        sh('other-folder', `cat ${join(otherDir, 'secret.txt')}`),
        sh('other-socket', `python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.connect('${otherSocketPath}'); print(s.recv(100))"`),
        sh('abstract-socket', `python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.connect('\\0${abstractName}'); print(s.recv(100))"`),
        sh('host-pg-socket', `psql -h ${pg.socketDir} -p ${pg.port} -U ${pg.user} -d postgres -X -A -t -c 'select 1'`),
        sh('other-port', `curl -sS --max-time 5 http://127.0.0.1:${otherWebPort}/`),
        sh('granted-port-direct', `curl -sS --max-time 5 http://127.0.0.1:${webPort}/`),
        sh('not-needed', 'ls /resources/not-needed'),
      ],
    });
    for (const name of ['other-folder', 'other-socket', 'abstract-socket', 'host-pg-socket', 'other-port', 'granted-port-direct', 'not-needed']) {
      const { step, stdout } = out(result, name);
      expect(step.status, name).toBe('failed');
      expect(stdout, name).not.toMatch(/ungranted|granted-web|^1$/m);
    }
    expect(out(result, 'other-socket').stderr).toMatch(/FileNotFoundError|No such file/);
    expect(out(result, 'abstract-socket').stderr).toMatch(/ConnectionRefusedError|Connection refused/);
    expect(out(result, 'other-port').stderr).toMatch(/Couldn't connect|Failed to connect|Network is unreachable/);
  });

  it('run.started and the evidence carry the needed names only: no path, socket path or address leaves', async () => {
    const result = await completed({ needs: ['web', 'extract', 'db'], steps: [sh('noop', 'true')] });
    const predicate = predicateOf(result);
    expect(predicate.run.resources).toEqual(['db', 'extract', 'web']);
    const started = recordsOf('run.started').find((body) => body.runId === result.runId)!;
    expect(started.resources).toEqual(['db', 'extract', 'web']);
    const bundleText = readFileSync(result.bundlePath, 'utf8');
    const payload = Buffer.from(result.bundle.evidence.payload, 'base64').toString('utf8');
    for (const hostDetail of [dataDir, pg.socketDir, pg.socketPath, `127.0.0.1:${webPort}`, String(webPort), '/resources']) {
      expect(bundleText).not.toContain(hostDetail);
      expect(payload).not.toContain(hostDetail);
    }
  });

  it('the egress guard lets out only names the signed capsule needs: another name or a path is refused', async () => {
    const result = await completed({ needs: ['extract'], steps: [sh('noop', 'true')] });
    const statement = JSON.parse(Buffer.from(result.bundle.evidence.payload, 'base64').toString('utf8')) as Statement;
    const manifest = JSON.parse(Buffer.from(result.bundle.capsule.payload, 'base64').toString('utf8')) as Manifest;
    const context = { manifest, runner: { id: statement.predicate.runner.id, keyid: statement.predicate.runner.keyid } };
    expect(codeOf(() => guardStatement(statement, context))).toBeUndefined();
    const withRun = (resources: string[]) => ({
      ...statement,
      predicate: { ...statement.predicate, run: { ...statement.predicate.run, resources } },
    });
    expect(codeOf(() => guardStatement(withRun(['extract', 'db']), context))).toBe('EGRESS_PROVENANCE');
    expect(codeOf(() => guardStatement(withRun([dataDir]), context))).toBe('EGRESS_SCHEMA');
  });

  it('a path-only grant keeps the filter without AF_UNIX: the step cannot even make a unix socket', async () => {
    const result = await completed({
      needs: ['extract'],
      steps: [sh('unix', `python3 -c "import socket; socket.socket(socket.AF_UNIX)"`)],
    });
    expect(predicateOf(result).run.sandbox?.syscallFilter).toBe(SYSCALL_FILTER);
    expect(out(result, 'unix').step.status).toBe('failed');
    expect(out(result, 'unix').stderr).toMatch(/Address family not supported/);
  });

  it('the runner sets the resource variables: a step cannot point them elsewhere', async () => {
    const result = await completed({
      needs: ['extract'],
      steps: [{ name: 'env', run: ['/bin/sh', '-c', 'echo "$EDGE_RUNNER_RESOURCE_EXTRACT"'], env: { EDGE_RUNNER_RESOURCE_EXTRACT: '/etc' } }],
    });
    expect(out(result, 'env').stdout).toBe('/resources/extract\n');
  });
});

describe.skipIf(!bwrapUsable)(`refusal before anything runs (${bwrapUsable ? 'bwrap here' : 'bwrap cannot run here'})`, () => {
  // A step of a refused capsule would be a run: run.started is what must not appear (bwrap hides host paths,
  // so a marker file on the host could not tell).
  const runsStarted = () => recordsOf('run.started').length;
  const mark = { name: 'mark', run: ['/bin/true'] };

  it.each([
    ['a name the configuration does not grant', 'nope'],
    ["a name that is an Object member, not a grant ('constructor')", 'constructor'],
  ])('%s: CAPSULE_RESOURCE_UNGRANTED, recorded, a signed rejection queued, no run, nonce not burnt', async (_what, name) => {
    const capsule = world.capsule({ isolation: 'required', needs: [name], steps: [mark] });
    const bytes = Buffer.from(JSON.stringify(capsule));
    const startedBefore = runsStarted();
    const result = await execInState(world.stateDir, bytes, {
      launcher: sandboxLauncherSelector(),
      flags: { resources: { extract: { path: dataDir } } },
    });
    expect(result.kind).toBe('rejected');
    if (result.kind !== 'rejected') return;
    expect(result.code).toBe('CAPSULE_RESOURCE_UNGRANTED');
    expect(result.message).toContain(`"${name}"`);
    expect(result.message).not.toContain(dataDir);
    expect(runsStarted()).toBe(startedBefore);
    expect(recordsOf('capsule.rejected').at(-1)).toMatchObject({ code: 'CAPSULE_RESOURCE_UNGRANTED' });
    // The answer the coordinator gets (the store queues one for every capsule.rejected): signed, with the code.
    const state = loadState(world.stateDir, new Date());
    const store = Store.open(join(world.stateDir, 'runner.db'));
    try {
      const seq = [...store.records()].filter((r) => parseRecordLeaf(r.leaf, r.seq).kind === 'capsule.rejected').at(-1)!.seq;
      const { bytes: rejection } = rejectionFor(store, { runnerId: state.identity.id, key: state.key }, { recordSeq: seq } as OutboxRow);
      expect(verifyRejection(rejection, world.trust)).toMatchObject({ code: 'CAPSULE_RESOURCE_UNGRANTED' });
    } finally {
      store.close();
    }
    // Granted later, the very same capsule runs: the refusal burnt no nonce.
    const again = await execInState(world.stateDir, bytes, {
      launcher: sandboxLauncherSelector(),
      flags: { resources: { [name]: { path: dataDir } } },
    });
    expect(again).toMatchObject({ kind: 'completed', verdict: 'pass' });
    expect(runsStarted()).toBe(startedBefore + 1);
  });

  it.each([
    ['is missing on the host', () => ({ path: join(world.dir, 'gone') }), 'is not there on this host'],
    ['is a socket grant naming a plain file', () => ({ socket: join(dataDirOrMake(), 'accounts.csv') }), 'is not a unix socket'],
    ['would show the state folder', () => ({ path: world.dir }), "would show the runner's state folder"],
    ['lies inside the state folder', () => ({ path: join(world.stateDir, 'evidence') }), "would show the runner's state folder"],
  ])('a grant that %s: CAPSULE_RESOURCE_UNGRANTED, and the message names no path', async (_what, grant, why) => {
    const before = runsStarted();
    const result = await run({ needs: ['x'], steps: [mark] }, { resources: { x: grant() } });
    expect(result).toMatchObject({ kind: 'rejected', code: 'CAPSULE_RESOURCE_UNGRANTED' });
    if (result.kind === 'rejected') {
      expect(result.message).toContain(why);
      expect(result.message).not.toContain(world.dir);
    }
    expect(runsStarted()).toBe(before);
  });

  it('a grant that would show the spool folder (capsules waiting, answers written): CAPSULE_RESOURCE_UNGRANTED', async () => {
    const media = join(world.dir, 'media');
    mkdirSync(join(media, 'spool', 'in'), { recursive: true });
    const before = runsStarted();
    const result = await run({ needs: ['x'], steps: [mark] }, { resources: { x: { path: media } }, spool: { dir: join(media, 'spool') } });
    expect(result).toMatchObject({ kind: 'rejected', code: 'CAPSULE_RESOURCE_UNGRANTED' });
    if (result.kind === 'rejected') expect(result.message).toContain("would show the runner's spool folder");
    expect(runsStarted()).toBe(before);
  });

  it('a grant gone between acceptance and the run start: run.aborted CAPSULE_RESOURCE_UNGRANTED, the step never runs', async () => {
    const folder = join(world.dir, 'vanishing');
    mkdirSync(folder);
    const capsule = world.capsule({ isolation: 'required', needs: ['v'], steps: [mark] });
    const stepsBefore = recordsOf('step.finished').length;
    const outcome = withRunner(
      world.stateDir,
      { launcher: sandboxLauncherSelector(), config: { flags: { resources: { v: { path: folder } } } } },
      (ctx) => runCapsule(ctx, Buffer.from(JSON.stringify(capsule)), { decided: () => renameSync(folder, `${folder}.gone`) }),
    );
    await expect(outcome).rejects.toMatchObject({ code: 'CAPSULE_RESOURCE_UNGRANTED' });
    expect(recordsOf('run.aborted').at(-1)).toMatchObject({ reason: 'CAPSULE_RESOURCE_UNGRANTED' });
    expect(recordsOf('step.finished').length).toBe(stepsBefore);
  });

  it('two needed names giving the same variable are refused', async () => {
    const result = await run({ needs: ['a-b', 'a.b'] }, { resources: { 'a-b': { path: dataDirOrMake() }, 'a.b': { path: dataDirOrMake() } } });
    expect(result).toMatchObject({ kind: 'rejected', code: 'CAPSULE_RESOURCE_UNGRANTED' });
  });

  it('a capsule with needs on a launcher without bwrap: CAPSULE_ISOLATION_UNAVAILABLE, even when best-effort', async () => {
    const before = runsStarted();
    const capsule = world.capsule({ isolation: 'best-effort', needs: ['extract'], steps: [mark] });
    const result = await execInState(world.stateDir, Buffer.from(JSON.stringify(capsule)), {
      launcher: directSelector,
      flags: { resources: { extract: { path: dataDirOrMake() } } },
    });
    expect(result).toMatchObject({ kind: 'rejected', code: 'CAPSULE_ISOLATION_UNAVAILABLE' });
    expect(runsStarted()).toBe(before);
  });
});

function dataDirOrMake(): string {
  if (!existsSync(dataDir)) mkdirSync(dataDir, { recursive: true });
  return dataDir;
}
