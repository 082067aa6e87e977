/**
 * A descriptor the runner inherited (a supervisor's socket, a shell's pipe) must not reach a step: Node
 * passes inherited descriptors without close-on-exec to every child, and bubblewrap does not close them.
 * Through the built CLI, started by a shell that leaves a file open on a high descriptor, and a sandboxed
 * step that tries to read it.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_ENTRY } from '../helpers/cli.js';
import { makeWorld, type World } from '../helpers/world.js';

let world: World | undefined;
afterAll(() => world?.cleanup());

const SECRET = 'inherited-descriptor-secret-7f3a';

describe('a descriptor the runner inherited', () => {
  it('is not open in a step: reading it fails inside the sandbox, and its content is nowhere in the step output', () => {
    const w = (world = makeWorld());
    const secretFile = join(w.dir, 'secret.txt');
    writeFileSync(secretFile, SECRET);
    const capsule = w.writeCapsule(
      w.capsule({ steps: [{ name: 'read-fd-200', run: ['/bin/bash', '-c', 'ls /proc/self/fd; cat <&200'] }], isolation: 'best-effort' }),
    );
    const out = join(w.dir, 'bundle.json');
    // The shell opens the file on descriptor 200 without close-on-exec and execs the CLI with it open.
    const result = spawnSync(
      '/bin/bash',
      [
        '-c',
        'exec 200<"$1"; exec "$2" "$3" exec "$4" --state "$5" --out "$6"',
        'sh',
        secretFile,
        process.execPath,
        CLI_ENTRY,
        capsule,
        w.stateDir,
        out,
      ],
      {
        encoding: 'utf8',
        env: { PATH: '/usr/bin:/bin' },
      },
    );
    expect(result.status, result.stderr).toBe(1); // the step fails: verdict fail
    const bundle = JSON.parse(readFileSync(out, 'utf8')) as { evidence: { payload: string } };
    const statement = JSON.parse(Buffer.from(bundle.evidence.payload, 'base64').toString('utf8')) as {
      predicate: { steps: { status: string; stdout: { digest: string } }[] };
    };
    const [step] = statement.predicate.steps;
    expect(step!.status).toBe('failed');
    const stdout = readFileSync(join(w.stateDir, 'evidence', 'blobs', step!.stdout.digest.replace(':', '-')), 'utf8');
    expect(stdout.split('\n')).not.toContain('200');
    expect(stdout).not.toContain(SECRET);
  });
});
