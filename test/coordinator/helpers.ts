/**
 * A coordinator for tests: a trust document with a witness key and two runners, a state folder made by the
 * real `init`, the real `serve` as a child process on 127.0.0.1 port 0, and a small HTTP client (node:http,
 * so a test can send exactly the headers and bytes it means, a lying Content-Length included).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { signRequest } from '../../runner/protocol/http-signature.js';
import { verifyTrustDocument, type VerifiedTrust } from '../../runner/trust/trust.js';
import { makeTrustBody, makeWorld, signTrust, type NamedKey, type World } from '../helpers/world.js';

export const COORDINATOR_ENTRY = fileURLToPath(new URL('../../dist/coordinator/src/main.js', import.meta.url));

export interface CoordinatorWorld {
  world: World;
  witnessKey: PrivateKey;
  witnessName: string;
  /** A second enrolled runner. */
  otherRunnerKey: PrivateKey;
  otherRunnerId: string;
  trustBytes: Buffer;
  trust: VerifiedTrust;
  trustPath: string;
  witnessKeyPath: string;
  token: string;
  tokenPath: string;
  stateDir: string;
  /** More enrolled runners (makeCoordinatorWorld's extraRunners), ids `runner-sim-N`. */
  extraRunners: { id: string; key: PrivateKey }[];
  /** Keys with the approver role (makeCoordinatorWorld's approvers), names `approver-N`. */
  approvers: { name: string; key: PrivateKey }[];
}

/** The test world's keys plus a witness key and a second runner, in one trust document signed by its root. */
export function makeCoordinatorWorld(options: { extraRunners?: number; approvers?: number } = {}): CoordinatorWorld {
  const world = makeWorld();
  const witnessKey = PrivateKey.generate();
  const otherRunnerKey = PrivateKey.generate();
  const extraRunners = Array.from({ length: options.extraRunners ?? 0 }, (_, i) => ({ id: `runner-sim-${i + 1}`, key: PrivateKey.generate() }));
  const approvers = Array.from({ length: options.approvers ?? 0 }, (_, i) => ({ name: `approver-${i + 1}`, key: PrivateKey.generate() }));
  const keys: NamedKey[] = [
    { name: 'root-1', key: world.root, roles: ['root'] },
    ...world.signers.map((key, i) => ({ name: `signer-${i + 1}`, key, roles: ['capsule-signer' as const] })),
    { name: world.runnerId, key: world.runnerKey, roles: ['runner'] },
    { name: 'runner-test-2', key: otherRunnerKey, roles: ['runner'] },
    { name: 'coordinator-witness', key: witnessKey, roles: ['witness'] },
    ...extraRunners.map(({ id, key }) => ({ name: id, key, roles: ['runner' as const] })),
    ...approvers.map(({ name, key }) => ({ name, key, roles: ['approver' as const] })),
  ];
  const body = makeTrustBody(keys);
  (body.roles as Record<string, { threshold: number }>).witness = { threshold: 1 };
  const trustBytes = signTrust(body, [world.root]);
  const trustPath = join(world.dir, 'coordinator-trust.dsse.json');
  writeFileSync(trustPath, trustBytes);
  const witnessKeyPath = join(world.dir, 'witness.key.pem');
  writeFileSync(witnessKeyPath, witnessKey.toPem(), { mode: 0o600 });
  const token = randomBytes(32).toString('base64url');
  const tokenPath = join(world.dir, 'operator.token');
  writeFileSync(tokenPath, `${token}\n`, { mode: 0o600 });
  return {
    world,
    witnessKey,
    witnessName: 'coordinator-witness',
    otherRunnerKey,
    otherRunnerId: 'runner-test-2',
    trustBytes,
    trust: verifyTrustDocument(trustBytes, { now: new Date() }),
    trustPath,
    witnessKeyPath,
    token,
    tokenPath,
    stateDir: join(world.dir, 'coordinator'),
    extraRunners,
    approvers,
  };
}

export function runCoordinatorCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  if (!existsSync(COORDINATOR_ENTRY)) throw new Error(`${COORDINATOR_ENTRY} is missing: run \`npx tsc -p tsconfig.build.json\``);
  const result = spawnSync(process.execPath, [COORDINATOR_ENTRY, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

export function initCoordinator(cw: CoordinatorWorld, extra: string[] = []): void {
  const result = runCoordinatorCli([
    'init',
    '--state',
    cw.stateDir,
    '--trust',
    cw.trustPath,
    '--witness-key',
    cw.witnessKeyPath,
    '--operator-token-file',
    cw.tokenPath,
    ...extra,
  ]);
  if (result.status !== 0) throw new Error(`init failed: ${result.stderr}`);
}

export interface RunningCoordinator {
  url: string;
  proc: ChildProcess;
  stderr: () => string;
  /** SIGTERM, then the exit code (bounded wait). */
  stop(): Promise<number | null>;
}

/** Starts `serve` and resolves when it prints where it listens (at most 15 s). */
export function startCoordinator(stateDir: string, extra: string[] = []): Promise<RunningCoordinator> {
  const proc = spawn(process.execPath, [COORDINATOR_ENTRY, 'serve', '--state', stateDir, '--listen', '127.0.0.1:0', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`the coordinator did not start: ${err}`));
    }, 15_000);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the coordinator exited with ${code}: ${err}`));
    });
    proc.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split('\n')[0];
      if (!out.includes('\n') || line === undefined) return;
      clearTimeout(timer);
      const { listening } = JSON.parse(line) as { listening: string };
      resolve({
        url: listening,
        proc,
        stderr: () => err,
        async stop() {
          if (proc.exitCode !== null) return proc.exitCode;
          proc.kill('SIGTERM');
          const timeout = new Promise<null>((r) => setTimeout(() => r(null), 15_000));
          const code = await Promise.race([exited, timeout]);
          if (code === null) proc.kill('SIGKILL');
          return code;
        },
      });
    });
  });
}

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  json: () => any;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  ca?: Buffer;
  timeoutMs?: number;
}

/** One HTTP(S) request with exactly these headers and body. Rejects on a socket error (or after timeoutMs). */
export function call(url: string, options: RequestOptions = {}): Promise<Answer> {
  const target = new URL(url);
  const body = options.body === undefined ? undefined : Buffer.from(options.body);
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  if (body !== undefined && headers['content-length'] === undefined && headers['transfer-encoding'] === undefined) {
    headers['content-length'] = String(body.length);
  }
  const make = target.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = make(target, { method: options.method ?? 'GET', headers, ...(options.ca ? { ca: options.ca } : {}), agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        resolve({ status: res.statusCode!, headers: res.headers, body: bytes, json: () => JSON.parse(bytes.toString('utf8')) });
      });
      res.on('error', reject);
    });
    req.setTimeout(options.timeoutMs ?? 20_000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** A request signed as the runner with `key` (RFC 9421), at `now` (default the real clock). */
export async function signedCall(
  url: string,
  key: PrivateKey,
  options: RequestOptions & { now?: Date; nonce?: string; ttlSeconds?: number } = {},
): Promise<Answer> {
  const method = options.method ?? 'GET';
  const body = options.body === undefined ? undefined : Buffer.from(options.body);
  const signature = await signRequest({ method, url, ...(body ? { body } : {}) }, key, {
    now: options.now ?? new Date(),
    ...(options.nonce ? { nonce: options.nonce } : {}),
    ...(options.ttlSeconds ? { ttlSeconds: options.ttlSeconds } : {}),
  });
  return call(url, { ...options, method, ...(body ? { body } : {}), headers: { ...(options.headers ?? {}), ...signature } });
}

export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}
