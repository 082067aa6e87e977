/** The digests approvals are bound to, recomputed here the way an auditor would (sha256 of `jq -cS` bytes). */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { changeDigestOf, changeSpecDigest, policyDigest } from '../../../runner/policy/change-digest.js';
import type { Manifest } from '../../../runner/capsule/manifest.js';
import { TEST_POLICY } from '../../helpers/approvals.js';

const sha = (text: string) => `sha256:${createHash('sha256').update(text, 'utf8').digest('hex')}`;
const d = (c: string) => `sha256:${c.repeat(64)}`;

describe('changeDigestOf', () => {
  const parts = { target: 'config', preState: d('1'), postState: d('2'), capsule: d('3'), change: d('4'), policy: d('5') };

  it('is the SHA-256 of the canonical JSON of the typed parts', () => {
    const json =
      `{"_type":"https://edge-runner.dev/change/v1","capsule":"${d('3')}","change":"${d('4')}","policy":"${d('5')}",` +
      `"postState":"${d('2')}","preState":"${d('1')}","target":"config"}`;
    expect(changeDigestOf(parts)).toBe(sha(json));
  });

  it.each(['target', 'preState', 'postState', 'capsule', 'change', 'policy'] as const)('changes when %s changes', (part) => {
    expect(changeDigestOf({ ...parts, [part]: part === 'target' ? 'other' : d('9') })).not.toBe(changeDigestOf(parts));
  });
});

describe('policyDigest', () => {
  it('is the SHA-256 of the canonical JSON of the whole policy, whatever the member order', () => {
    const policy = { allowedKinds: ['remediate' as const], remediation: { default: { approvals: 1 }, rules: {}, surfaces: { a: ['a/**'] } } };
    const json = '{"allowedKinds":["remediate"],"remediation":{"default":{"approvals":1},"rules":{},"surfaces":{"a":["a/**"]}}}';
    expect(policyDigest(policy)).toBe(sha(json));
    expect(policyDigest({ remediation: policy.remediation, allowedKinds: policy.allowedKinds })).toBe(sha(json));
    expect(policyDigest({ ...policy, remediation: TEST_POLICY })).not.toBe(sha(json));
  });
});

describe('changeSpecDigest', () => {
  const manifest = (inputs: Manifest['inputs'], change: Manifest['change']) => ({ kind: 'remediate', inputs, change }) as Manifest;
  const patch = { path: 'fix.diff', sha256: '1'.repeat(64), size: 10 };
  const script = { path: 'bin/tool', sha256: '2'.repeat(64), size: 20, executable: true };
  const unrelated = { path: 'check/test.sh', sha256: '3'.repeat(64), size: 30 };
  const change = { target: 'config', patch: 'fix.diff', files: [{ path: 'tool', action: 'add' as const, from: 'bin/tool', executable: true }] };

  it('covers the change and the inputs it names, sorted by path, and no other input', () => {
    const json =
      '{"change":{"files":[{"action":"add","executable":true,"from":"bin/tool","path":"tool"}],"patch":"fix.diff","target":"config"},' +
      `"inputs":[{"executable":true,"path":"bin/tool","sha256":"${'2'.repeat(64)}","size":20},{"path":"fix.diff","sha256":"${'1'.repeat(64)}","size":10}]}`;
    expect(changeSpecDigest(manifest([unrelated, patch, script], change))).toBe(sha(json));
    expect(changeSpecDigest(manifest([script, patch], change))).toBe(sha(json));
  });

  it('changes when the bytes of a named input change', () => {
    expect(changeSpecDigest(manifest([{ ...patch, sha256: '9'.repeat(64) }, script], change))).not.toBe(
      changeSpecDigest(manifest([patch, script], change)),
    );
  });

  it('refuses a manifest without a change', () => {
    expect(() => changeSpecDigest({ kind: 'validate', inputs: [] } as unknown as Manifest)).toThrow(TypeError);
  });
});
