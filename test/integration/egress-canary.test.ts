/**
 * Nothing raw leaves: a canary secret planted in step stdout, stderr, a collected file, a failing step's
 * output and the runner's own environment appears in the bundle's bytes in no form (plain, base64 at any
 * alignment, hex).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeWorld, type World } from '../helpers/world.js';
import { runCli } from '../helpers/cli.js';

function encodings(secret: string): string[] {
  const bytes = Buffer.from(secret);
  const forms = [secret, bytes.toString('hex'), bytes.toString('hex').toUpperCase()];
  // base64 of the secret at each of the three byte alignments it can have inside a longer encoding.
  for (let shift = 0; shift < 3; shift++) {
    const padded = Buffer.concat([Buffer.alloc(shift, 0x20), bytes]);
    const b64 = padded.toString('base64');
    const start = Math.ceil((shift * 4) / 3) + 1;
    forms.push(b64.slice(start, start + Math.floor((bytes.length * 4) / 3) - 4));
    forms.push(
      b64
        .slice(start, start + Math.floor((bytes.length * 4) / 3) - 4)
        .replace(/\+/g, '-')
        .replace(/\//g, '_'),
    );
  }
  return forms.filter((form) => form.length >= 12);
}

describe('the egress guard, given a canary secret planted everywhere a step can reach', () => {
  let world: World;
  let bundleBytes: Buffer;
  let texts: string[];
  // The step computes this value at run time, so the signed capsule itself does not contain it.
  const computed = String(982451653n * 961748941n);
  const runnerSecret = `runner-env-canary-${randomBytes(12).toString('hex')}`;

  beforeAll(() => {
    world = makeWorld();
    const script = [
      'canary=CANARY-$((982451653 * 961748941))',
      'echo "stdout $canary"',
      'echo "stderr $canary" >&2',
      'mkdir -p out',
      'echo "<testsuite><testcase name=\\"$canary\\"><failure message=\\"$canary\\"/></testcase></testsuite>" > out/report.xml',
      'echo "$canary" > out/secret.txt',
      'env > out/env.txt',
    ].join('\n');
    const capsule = world.capsule(
      {
        steps: [
          { name: 'plant', run: ['/bin/sh', 'plant.sh'] },
          {
            name: 'fail-loudly',
            run: ['/bin/sh', '-c', 'echo "failing CANARY-$((982451653 * 961748941))"; echo "$EDGE_TEST_RUNNER_SECRET" >&2; exit 7'],
            continueOnFailure: true,
          },
        ],
        collect: [
          { path: 'out/secret.txt', as: 'file' },
          { path: 'out/env.txt', as: 'file' },
          { path: 'out/report.xml', as: 'junit' },
        ],
      },
      { 'plant.sh': script },
    );
    const capsuleText = JSON.stringify(capsule);
    expect(capsuleText).not.toContain(computed);
    const file = world.writeCapsule(capsule);
    const out = join(world.dir, 'bundle.json');
    const result = runCli(['exec', file, '--state', world.stateDir, '--out', out, '--json'], {
      env: { PATH: '/usr/bin:/bin', EDGE_TEST_RUNNER_SECRET: runnerSecret, HOME: world.dir },
    });
    expect(result.stderr).toBe('');
    expect(JSON.parse(result.stdout).status).toBe('completed');
    bundleBytes = readFileSync(out);
    const bundle = JSON.parse(bundleBytes.toString()) as { evidence: { payload: string }; capsule: { payload: string } };
    texts = [
      bundleBytes.toString('utf8'),
      Buffer.from(bundle.evidence.payload, 'base64').toString('utf8'),
      Buffer.from(bundle.capsule.payload, 'base64').toString('utf8'),
    ];
  });

  afterAll(() => world.cleanup());

  it('has a detector that finds the canary base64-encoded at any offset (so the checks below can fail)', () => {
    const secret = `CANARY-${computed}`;
    for (let prefix = 0; prefix < 3; prefix++) {
      const encoded = Buffer.from(`${'p'.repeat(prefix)}${secret}suffix`).toString('base64');
      expect(encodings(secret).some((form) => encoded.includes(form))).toBe(true);
    }
    expect(encodings(secret).some((form) => Buffer.from(secret).toString('hex').includes(form))).toBe(true);
  });

  it('ran the planting steps, so the canary really was produced', () => {
    const statement = JSON.parse(texts[1]!) as {
      predicate: { steps: Array<{ name: string; exitCode: number; stdout: { digest: string } }>; artifacts: Array<{ status: string }> };
    };
    expect(statement.predicate.steps.map((s) => s.exitCode)).toEqual([0, 7]);
    expect(statement.predicate.artifacts.every((a) => a.status === 'collected')).toBe(true);
    // The raw output stays inside, in the local evidence store, addressed by the digest the bundle carries.
    const local = readFileSync(join(world.stateDir, 'evidence', 'blobs', statement.predicate.steps[0]!.stdout.digest.replace(':', '-')), 'utf8');
    expect(local).toContain(`CANARY-${computed}`);
  });

  it.each([
    ['the computed canary from stdout, stderr, files and the failing step', `CANARY-${computed}`],
    ['the canary in the runner environment', runnerSecret],
  ])('keeps %s out of the bundle in every encoding', (_what, secret) => {
    for (const form of encodings(secret)) {
      for (const text of texts) expect(text).not.toContain(form);
    }
  });
});
