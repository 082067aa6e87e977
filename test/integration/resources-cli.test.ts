/**
 * Granted resources through the built CLI (`edge-runner exec`, dist/runner/main.js) with the operator's
 * TOML file (EDGE_RUNNER_CONFIG): a step reads the granted folder and calls the granted HTTP service through
 * its tcp grant; a capsule needing an ungranted name exits 3 with CAPSULE_RESOURCE_UNGRANTED and runs
 * nothing; the bundle names the resources and holds no path or address of them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeIsolation } from '../../runner/exec/sandbox.js';
import { runCli } from '../helpers/cli.js';
import { makeWorld, type World } from '../helpers/world.js';

const bwrapUsable = probeIsolation().available === 'bwrap';

let world: World;
// The CLI runs under spawnSync, which blocks this process: the service lives in a child process of its own.
let web: ChildProcess;
let port: number;
let configPath: string;
let dataDir: string;

beforeAll(async () => {
  world = makeWorld();
  dataDir = join(world.dir, 'reference-data');
  mkdirSync(dataDir);
  writeFileSync(join(dataDir, 'rates.txt'), 'EUR 1.08\n');
  const server = `const s = require('node:http').createServer((q, r) => r.end('service says ' + q.url + '\\n'));
    s.listen(0, '127.0.0.1', () => console.log(s.address().port));`;
  web = spawn(process.execPath, ['-e', server], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await Promise.race([
    once(web.stdout!, 'data'),
    new Promise((_, reject) => setTimeout(() => reject(new Error('no port')), 20_000)),
  ])) as [Buffer];
  port = Number(line.toString('utf8').trim());
  configPath = join(world.dir, 'edge-runner.toml');
  writeFileSync(configPath, `[resources.rates]\npath = "${dataDir}"\n\n[resources.pricing]\ntcp = "127.0.0.1:${port}"\n`, { mode: 0o600 });
});

afterAll(async () => {
  web?.kill();
  world?.cleanup();
});

function exec(needs: string[], script: string) {
  const file = world.writeCapsule(world.capsule({ isolation: 'required', needs, steps: [{ name: 'use', run: ['/bin/sh', '-c', script] }] }));
  return runCli(['exec', file, '--state', world.stateDir, '--json'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', EDGE_RUNNER_CONFIG: configPath },
  });
}

describe.skipIf(!bwrapUsable)(`exec with granted resources (${bwrapUsable ? 'bwrap here' : 'bwrap cannot run here'})`, () => {
  it('a step reads the granted folder and calls the granted service; the bundle names the resources only', () => {
    const result = exec(
      ['rates', 'pricing'],
      'grep -q "EUR 1.08" /resources/rates/rates.txt && curl -sS --max-time 10 --unix-socket "$EDGE_RUNNER_RESOURCE_PRICING" http://pricing/quote | grep -q "service says /quote"',
    );
    expect(result.status, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout) as { verdict: string; bundle: string };
    expect(summary.verdict).toBe('pass');
    const bundle = readFileSync(summary.bundle, 'utf8');
    const bundleJson = JSON.parse(bundle) as { evidence: { payload: string } };
    const predicate = JSON.parse(Buffer.from(bundleJson.evidence.payload, 'base64').toString('utf8')).predicate;
    expect(predicate.run.resources).toEqual(['pricing', 'rates']);
    for (const detail of [dataDir, String(port), '127.0.0.1']) expect(bundle + JSON.stringify(predicate)).not.toContain(detail);
  });

  it('a capsule needing an ungranted name exits 3 with CAPSULE_RESOURCE_UNGRANTED and runs nothing', () => {
    const runsBefore = readdirSync(join(world.stateDir, 'runs')).length;
    const result = exec(['rates', 'ledger'], 'true');
    expect(result.status, result.stderr).toBe(3);
    expect(result.stderr).toContain('CAPSULE_RESOURCE_UNGRANTED');
    expect(result.stderr).toContain('"ledger"');
    expect(result.stderr).not.toContain(dataDir);
    expect(readdirSync(join(world.stateDir, 'runs')).length).toBe(runsBefore);
  });
});
