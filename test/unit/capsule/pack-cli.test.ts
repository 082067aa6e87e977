/** `capsule pack` through the built CLI on a real folder: folders and globs expanded, symlinks and oversize refused. */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { linkSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseCapsuleFile } from '../../../runner/capsule/capsule-file.js';
import { parseBase64 } from '../../../runner/core/base64.js';
import { parseManifest } from '../../../runner/capsule/manifest.js';
import { PACK_MAX_FILES } from '../../../runner/capsule/pack.js';
import { runCli } from '../../helpers/cli.js';
import { makeWorld, readFileSync, type World } from '../../helpers/world.js';

let world: World;
let dir: string;
let keyPath: string;

beforeEach(() => {
  world = makeWorld({ init: false });
  dir = join(world.dir, 'capsule');
  mkdirSync(dir);
  keyPath = join(world.dir, 'signer.key');
  writeFileSync(keyPath, world.signers[0]!.toPem(), { mode: 0o600 });
});
afterEach(() => world.cleanup());

function template(inputs: unknown[]): void {
  writeFileSync(
    join(dir, 'capsule.json'),
    JSON.stringify({ kind: 'validate', id: 'pack-cli', target: { labels: ['test'] }, steps: [{ name: 'ok', run: ['/bin/true'] }], inputs }),
  );
}

function write(path: string, content = path): void {
  mkdirSync(join(dir, path, '..'), { recursive: true });
  writeFileSync(join(dir, path), content);
}

function pack() {
  return runCli(['capsule', 'pack', dir, '--key', keyPath, '--out', join(world.dir, 'out.capsule.json')]);
}

function packedInputs() {
  const file = parseCapsuleFile(readFileSync(join(world.dir, 'out.capsule.json')));
  return parseManifest(parseBase64(file.envelope.payload)).inputs;
}

describe('capsule pack with folders and glob patterns', () => {
  it('signs the explicit list: every file, sorted, once, with its digest, size and executable flag', () => {
    for (const path of ['t/02.main.t', 't/01.compile.t', 't/data/test.conf', 'lib/Config/Tiny.pm', 'LICENSE', 'run.sh', 'notes/x.md']) write(path);
    template([
      { path: 'lib' },
      { path: 't/**/*.t' },
      { path: 't/data' },
      { path: 'LICENSE' },
      { path: 'run.sh', executable: true },
      { path: 't/*.t' },
    ]);
    const result = pack();
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('packed pack-cli (validate, 6 input(s), 1 signature(s))');
    const inputs = packedInputs();
    expect(inputs.map((i) => i.path)).toEqual(['LICENSE', 'lib/Config/Tiny.pm', 'run.sh', 't/01.compile.t', 't/02.main.t', 't/data/test.conf']);
    expect(inputs.find((i) => i.path === 'run.sh')).toMatchObject({ executable: true, size: 6 });
    expect(inputs.filter((i) => i.executable)).toHaveLength(1);
    expect(inputs.find((i) => i.path === 'LICENSE')?.sha256).toBe(createHash('sha256').update('LICENSE').digest('hex'));
  });

  it('packs the same folder to the same input list every time', () => {
    for (let i = 0; i < 40; i++) write(`suite/${(i * 7919) % 101}.t`);
    template([{ path: 'suite/*.t' }]);
    expect(pack().status).toBe(0);
    const first = packedInputs();
    expect(pack().status).toBe(0);
    expect(packedInputs()).toEqual(first);
  });

  it('refuses a symlink (to a file outside, or to a folder) anywhere it walks, exit 2, naming it; nothing is written', () => {
    write('suite/a.t');
    writeFileSync(join(world.dir, 'secret.txt'), 'outside the capsule folder');
    symlinkSync(join(world.dir, 'secret.txt'), join(dir, 'suite', 'b.t'));
    template([{ path: 'suite/*.t' }]);
    let result = pack();
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('USAGE: The input "suite/b.t" is a symlink; capsule pack takes regular files only.');
    template([{ path: 'suite/b.t' }]);
    expect(pack().stderr).toContain('"suite/b.t" is a symlink');
    mkdirSync(join(world.dir, 'elsewhere'));
    writeFileSync(join(world.dir, 'elsewhere', 'c.t'), 'x');
    symlinkSync(join(world.dir, 'elsewhere'), join(dir, 'linked'));
    template([{ path: 'linked' }]);
    result = pack();
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('"linked" is a symlink');
    expect(() => readFileSync(join(world.dir, 'out.capsule.json'))).toThrow();
  });

  it('refuses an input below a symlinked folder (a file, a folder, a pattern), exit 2, naming the link; nothing is written', () => {
    mkdirSync(join(world.dir, 'elsewhere', 'sub'), { recursive: true });
    writeFileSync(join(world.dir, 'elsewhere', 'id_rsa'), 'outside the capsule folder');
    writeFileSync(join(world.dir, 'elsewhere', 'sub', 'key.pem'), 'outside too');
    symlinkSync(join(world.dir, 'elsewhere'), join(dir, 'linked'));
    for (const path of ['linked/id_rsa', 'linked/sub', 'linked/sub/*.pem']) {
      template([{ path }]);
      const result = pack();
      expect(result.status, path).toBe(2);
      expect(result.stderr, path).toContain('USAGE: The input "linked" is a symlink; capsule pack takes regular files only.');
    }
    expect(() => readFileSync(join(world.dir, 'out.capsule.json'))).toThrow();
  });

  it('refuses to pack the signing key when it lies in the capsule folder (under a folder or a pattern, or hard-linked)', () => {
    write('suite/a.t');
    mkdirSync(join(dir, 'keys'));
    const inside = join(dir, 'keys', 'signer.key');
    writeFileSync(inside, world.signers[0]!.toPem(), { mode: 0o600 });
    template([{ path: 'suite' }, { path: 'keys' }]);
    let result = runCli(['capsule', 'pack', dir, '--key', inside, '--out', join(world.dir, 'out.capsule.json')]);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`USAGE: The input "keys/signer.key" is the signing key ${inside}; a capsule carries its inputs to every runner.`);
    rmSync(inside);
    linkSync(keyPath, join(dir, 'suite', 'b.key'));
    template([{ path: 'suite/*' }]);
    result = pack();
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('"suite/b.key" is the signing key');
    expect(() => readFileSync(join(world.dir, 'out.capsule.json'))).toThrow();
  });

  it('refuses a fifo instead of blocking on it', () => {
    write('d/a');
    execFileSync('mkfifo', [join(dir, 'd', 'pipe')]);
    template([{ path: 'd' }]);
    const result = pack();
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('"d/pipe" is not a regular file or folder');
  });

  it(`refuses ${PACK_MAX_FILES + 1} files with the count in the message`, () => {
    mkdirSync(join(dir, 'many'));
    for (let i = 0; i <= PACK_MAX_FILES; i++) writeFileSync(join(dir, 'many', `${i}.t`), '');
    template([{ path: 'many' }]);
    const result = pack();
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`The inputs expand to ${PACK_MAX_FILES + 1} files; a capsule holds at most ${PACK_MAX_FILES}.`);
  });

  it('refuses a pattern that matches nothing and a path outside the folder', () => {
    write('a.t');
    template([{ path: '*.pl' }]);
    expect(pack().stderr).toContain('The input pattern "*.pl" matches no file.');
    template([{ path: '../*' }]);
    expect(pack().stderr).toContain('must be a relative path inside the capsule folder');
  });
});
