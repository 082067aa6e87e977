// Helpers for scripts/bench/link.mjs. In a folder of its own, not beside it: bench.mjs imports every
// scripts/bench/*.mjs as a topic and calls its run().
// A signed trust document, a reference coordinator process (`init` then `serve` on 127.0.0.1 port 0), an
// `edge-runner agent` process, a no-op loopback inbox, resident set sizes from /proc, and small statistics.
// Every child started here is remembered and killed by killAll(), which link.mjs calls in its finally.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

export const load = (dist, path) => import(pathToFileURL(resolve(dist, path)).href);

export const round = (value, digits = 2) => Number(value.toFixed(digits));

export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** VmRSS of a process, in bytes. */
export function rssOf(pid) {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/**
 * Anonymous (private, not file-backed) memory of a process, in bytes, from /proc/PID/smaps_rollup: what VmRSS
 * holds beyond the pages of the node binary and libraries, which every node process shares.
 */
export function anonymousOf(pid) {
  const match = /^Anonymous:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  if (!match) throw new Error(`no Anonymous in smaps_rollup for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** The median of `samples` RSS readings `everyMs` apart (one reading can land on a GC or an allocation burst). */
export async function settledRss(pid, samples = 5, everyMs = 200) {
  const values = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(everyMs);
    values.push(rssOf(pid));
  }
  return median(values);
}

/** Waits (bounded) until `check` returns a truthy value; throws with `what` after `timeoutMs`. */
export async function until(what, check, timeoutMs = 30_000, everyMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`bench link: timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

const children = new Set();

/** SIGKILLs every child still running (started by this module) and waits for each to exit. */
export async function killAll() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    }
  }
  children.clear();
}

/** A long-running child whose stderr's last lines are kept (for an error message), stdout lines handed to onLine. */
function startChild(file, args, { env, onLine } = {}) {
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? { PATH: '/usr/bin:/bin' } });
  children.add(child);
  const tail = [];
  let rest = '';
  child.stderr.setEncoding('utf8').on('data', (chunk) => {
    const parts = (rest + chunk).split('\n');
    rest = parts.pop();
    tail.push(...parts);
    if (tail.length > 40) tail.splice(0, tail.length - 40);
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk) => {
    const parts = (out + chunk).split('\n');
    out = parts.pop();
    for (const line of parts) onLine?.(line);
  });
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return {
    child,
    pid: child.pid,
    exited,
    stderrTail: () => tail.join('\n'),
    /** SIGTERM, then SIGKILL after graceMs. */
    async stop(graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      children.delete(child);
    },
  };
}

/**
 * A signed trust document (DSSE JSON bytes): `entries` are { name, key, roles }; thresholds 1 (approver 2),
 * the witness role present when a key has it.
 */
export async function signedTrust(dist, entries) {
  const { signEnvelope } = await load(dist, 'runner/core/dsse.js');
  const { TRUST_PAYLOAD_TYPE } = await load(dist, 'runner/trust/trust.js');
  const body = {
    apiVersion: 'edge-runner.dev/trust/v1',
    version: 1,
    expires: new Date(Date.now() + 86400_000).toISOString().replace(/\.\d+Z$/, 'Z'),
    keys: Object.fromEntries(entries.map(({ name, key, roles }) => [key.keyid, { publicKey: key.publicKey.toPem(), name, roles }])),
    roles: {
      root: { threshold: 1 },
      'capsule-signer': { threshold: 1 },
      runner: { threshold: 1 },
      approver: { threshold: 2 },
      ...(entries.some((e) => e.roles.includes('witness')) ? { witness: { threshold: 1 } } : {}),
    },
    policy: { allowedKinds: ['validate'] },
  };
  const root = entries.filter((e) => e.roles.includes('root')).map((e) => e.key);
  return Buffer.from(JSON.stringify(signEnvelope(TRUST_PAYLOAD_TYPE, Buffer.from(JSON.stringify(body)), root)));
}

/**
 * The reference coordinator as a process: `init` in `dir` with the trust document and witness key, then
 * `serve --listen 127.0.0.1:0`. Resolves once it prints where it listens.
 */
export async function startCoordinator(dist, dir, { trustBytes, witnessKey }) {
  const entry = resolve(dist, 'coordinator/src/main.js');
  mkdirSync(dir, { recursive: true });
  const trustPath = join(dir, 'trust.dsse.json');
  const witnessPath = join(dir, 'witness.key.pem');
  writeFileSync(trustPath, trustBytes);
  writeFileSync(witnessPath, witnessKey.toPem(), { mode: 0o600 });
  const state = join(dir, 'coordinator');
  const init = spawnSync(process.execPath, [entry, 'init', '--state', state, '--trust', trustPath, '--witness-key', witnessPath], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (init.status !== 0) throw new Error(`bench link: coordinator init failed: ${init.stderr}`);
  const token = readFileSync(join(state, 'operator.token'), 'utf8').trim();
  let announce;
  const listening = new Promise((r) => (announce = r));
  const proc = startChild(process.execPath, [entry, 'serve', '--state', state, '--listen', '127.0.0.1:0'], {
    onLine: (line) => {
      try {
        const parsed = JSON.parse(line);
        if (parsed.listening) announce(parsed.listening);
      } catch {
        // not a JSON line: ignored
      }
    },
  });
  let timer;
  const url = await Promise.race([
    listening,
    proc.exited.then(({ code }) => {
      throw new Error(`bench link: the coordinator exited with ${code}: ${proc.stderrTail()}`);
    }),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('bench link: the coordinator did not start within 30 s')), 30_000);
    }),
  ]).finally(() => clearTimeout(timer));
  const base = url.replace(/\/$/, '');
  return {
    ...proc,
    url: base,
    token,
    /** An operator request (bearer token); the body read whole, within 20 s. */
    async operator(method, path, body) {
      const exchange = async () => {
        const response = await fetch(`${base}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
          ...(body ? { body } : {}),
        });
        return { status: response.status, text: await response.text() };
      };
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`bench link: ${method} ${path} was not answered within 20 s`)), 20_000);
      });
      const { status, text } = await Promise.race([exchange(), timeout]).finally(() => clearTimeout(timer));
      let json;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status, text, json };
    },
  };
}

/** `edge-runner agent` on `stateDir`, pointed at `url`, with the settings in `configFile`. */
export function startAgent(dist, { stateDir, configFile, url, home }) {
  return startChild(process.execPath, [resolve(dist, 'runner/main.js'), 'agent', '--state', stateDir, '--config', configFile, '--coordinator', url], {
    env: { PATH: '/usr/bin:/bin', HOME: home },
  });
}

/** A bare node process that only keeps itself alive: the reference for the agent's RSS. */
export function startBareNode() {
  return startChild(process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
}

/**
 * A loopback inbox that does nothing: reads the body whole and answers 201 with a valid acknowledgement for
 * the digest the path names (runner/protocol/wire.ts formatInboxAck), without hashing or verifying anything.
 * The same server answers the raw undici reference and the shipper, so both pay the same server cost.
 */
export async function startNoopInbox(formatInboxAck) {
  const server = createServer((req, res) => {
    req.on('data', () => {});
    req.on('end', () => {
      const hex = /^\/v1\/bundles\/([0-9a-f]{64})$/.exec(req.url ?? '')?.[1];
      if (!hex) {
        res.writeHead(404).end();
        return;
      }
      const body = formatInboxAck({ digest: `sha256:${hex}`, stored: 'created' });
      res.writeHead(201, { 'content-type': 'application/json', 'content-length': body.length }).end(body);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
