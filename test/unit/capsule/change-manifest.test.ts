/**
 * A remediate capsule's `change`, as the manifest parser checks it (runner/capsule/manifest.ts verifyChange):
 * only remediate capsules carry one and they must; the bytes it names are inputs; its paths stay inside the
 * target, once each; it never recurs; its inputs stay out of the staged target's folder.
 */
import { describe, expect, it } from 'vitest';
import { parseManifest, type Manifest } from '../../../runner/capsule/manifest.js';

const SHA = 'ab'.repeat(32);
function manifest(
  patch: Record<string, unknown> = {},
  change: unknown = { target: 'ledger-service', patch: 'change/fix.diff' },
): Record<string, unknown> {
  return {
    apiVersion: 'edge-runner.dev/capsule/v1',
    kind: 'remediate',
    id: 'fix-rounding',
    issuedAt: '2026-12-01T00:00:00Z',
    notBefore: '2026-12-01T00:00:00Z',
    expiresAt: '2026-12-08T00:00:00Z',
    nonce: 'c'.repeat(32),
    target: { labels: ['demo'] },
    steps: [{ name: 'check', run: ['/bin/true'] }],
    inputs: [
      { path: 'change/fix.diff', sha256: SHA, size: 10 },
      { path: 'files/new.conf', sha256: SHA, size: 10 },
    ],
    collect: [],
    ...(change === null ? {} : { change }),
    ...patch,
  };
}
const parse = (value: Record<string, unknown>): Manifest => parseManifest(Buffer.from(JSON.stringify(value)));
function refusal(value: Record<string, unknown>): string {
  try {
    parse(value);
  } catch (err) {
    return `${(err as { code: string }).code}: ${(err as Error).message}`;
  }
  return 'parsed';
}

describe("a remediate capsule's change in its manifest", () => {
  it('parses a patch, whole files, a declared tier and cited reproductions', () => {
    const change = {
      target: 'ledger-service',
      patch: 'change/fix.diff',
      files: [
        { path: 'config/new.conf', action: 'add', from: 'files/new.conf', executable: true },
        { path: 'config/old.conf', action: 'delete' },
      ],
      declaredTier: { approvals: 2 },
      reproductions: [`sha256:${SHA}`],
    };
    expect(parse(manifest({}, change)).change).toEqual(change);
  });

  it.each<[string, Record<string, unknown>, unknown, RegExp]>([
    [
      'a validate capsule carrying a change',
      { kind: 'validate' },
      { target: 't', patch: 'change/fix.diff' },
      /^CAPSULE_SCHEMA: A validate capsule carries no change/,
    ],
    ['a remediate capsule without one', {}, null, /^CAPSULE_SCHEMA: A remediate capsule names no change/],
    ['a recurring remediate capsule', { schedule: { cron: '0 2 * * *' } }, { target: 't', patch: 'change/fix.diff' }, /cannot recur/],
    ['a change with neither a patch nor files', {}, { target: 't' }, /neither a patch nor files/],
    ['a patch that is not an input', {}, { target: 't', patch: 'change/other.diff' }, /not one of the capsule's inputs/],
    [
      'a file whose bytes are not an input',
      {},
      { target: 't', files: [{ path: 'a', action: 'add', from: 'nope' }] },
      /not one of the capsule's inputs/,
    ],
    ['an added file without bytes', {}, { target: 't', files: [{ path: 'a', action: 'add' }] }, /without naming the input/],
    [
      'a deleted file with bytes',
      {},
      { target: 't', files: [{ path: 'a', action: 'delete', from: 'files/new.conf' }] },
      /deletes "a" and also gives it bytes/,
    ],
    ['a deleted file with a mode', {}, { target: 't', files: [{ path: 'a', action: 'delete', executable: true }] }, /also sets its mode/],
    [
      'one path twice',
      {},
      {
        target: 't',
        files: [
          { path: 'a', action: 'delete' },
          { path: 'a', action: 'delete' },
        ],
      },
      /lists "a" twice/,
    ],
    ['a path with ..', {}, { target: 't', files: [{ path: 'a/../../etc/passwd', action: 'delete' }] }, /^CAPSULE_PATH_ESCAPE: /],
    ['an absolute path', {}, { target: 't', files: [{ path: '/etc/passwd', action: 'delete' }] }, /^CAPSULE_PATH_ESCAPE: /],
  ])('refuses %s', (_, patch, change, expected) => {
    expect(refusal(manifest(patch, change))).toMatch(expected);
  });

  it('refuses an input in target/, where the staged copy of the change target goes', () => {
    const value = manifest();
    (value.inputs as unknown[]).push({ path: 'target/config/ledger.conf', sha256: SHA, size: 1 });
    expect(refusal(value)).toMatch(/^CAPSULE_SCHEMA: The input "target\/config\/ledger.conf" is in target\//);
  });

  it('refuses a change naming an input whose name holds a control character (jq would digest it otherwise)', () => {
    const value = manifest({}, { target: 't', patch: 'change/fix\u007f.diff' });
    (value.inputs as unknown[]).push({ path: 'change/fix\u007f.diff', sha256: SHA, size: 1 });
    expect(refusal(value)).toMatch(/whose name holds a control character/);
  });
});
