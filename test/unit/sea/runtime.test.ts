import { describe, expect, it } from 'vitest';

import { isSea, parseSeaBuildInfo, seaVersionInfo, verifyRuntimeEnvironment } from '../../../runner/sea/runtime.js';

function expectCode(fn: () => unknown, code: string): void {
  expect(fn).toThrow(expect.objectContaining({ code }) as Error);
}

describe('outside the single binary', () => {
  it('is not a SEA and has no build information', () => {
    expect(isSea()).toBe(false);
    expect(seaVersionInfo()).toBeUndefined();
  });

  it('accepts NODE_OPTIONS (plain node was asked for) but not NODE_TLS_REJECT_UNAUTHORIZED=0', () => {
    expect(() => verifyRuntimeEnvironment({ NODE_OPTIONS: '--require x' })).not.toThrow();
    expect(() => verifyRuntimeEnvironment({ NODE_TLS_REJECT_UNAUTHORIZED: '1' })).not.toThrow();
    expectCode(() => verifyRuntimeEnvironment({ NODE_TLS_REJECT_UNAUTHORIZED: '0' }), 'RUNTIME_TLS_VERIFY_DISABLED');
  });
});

describe('parseSeaBuildInfo', () => {
  const good = { codeSha256: 'a'.repeat(64), node: 'v24.22.3', esbuild: '0.28.2' };

  it('reads what the build script writes', () => {
    expect(parseSeaBuildInfo(JSON.stringify(good))).toEqual(good);
  });

  it('ignores fields it does not know, such as an older build’s addon digest', () => {
    expect(parseSeaBuildInfo(JSON.stringify({ ...good, addonSha256: 'b'.repeat(64) }))).toEqual(good);
  });

  it('rejects anything else with SEA_BUILD_INFO_INVALID', () => {
    const bad = [
      '',
      'null',
      '[]',
      JSON.stringify({ ...good, codeSha256: 'A'.repeat(64) }),
      JSON.stringify({ ...good, codeSha256: 'a'.repeat(63) }),
      JSON.stringify({ ...good, node: '24.22.3' }),
      JSON.stringify({ codeSha256: good.codeSha256, node: good.node }),
    ];
    for (const text of bad) expectCode(() => parseSeaBuildInfo(text), 'SEA_BUILD_INFO_INVALID');
  });
});
