/** Canonical JSON: sorted keys, no whitespace, integers only; the bytes `jq -cS` gives for our documents. */
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toCanonicalJson } from '../../../runner/core/canonical-json.js';

/** The straightforward definition: a deep copy with sorted keys, then JSON.stringify. */
function reference(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(
        Object.keys(v)
          .sort()
          .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
          .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
      );
    }
    return v;
  };
  return JSON.stringify(sort(value));
}

const jsonData = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constant(null),
    fc.boolean(),
    fc.maxSafeInteger(),
    fc.string({ unit: 'grapheme' }),
    fc.string({ unit: 'binary' }),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.string({ unit: 'binary', maxLength: 6 }), tie('value'), { maxKeys: 5 }),
  ),
})).value;

describe('toCanonicalJson', () => {
  it('equals the sort-then-stringify definition on any JSON data', () => {
    fc.assert(
      fc.property(jsonData, (value) => {
        expect(toCanonicalJson(value)).toBe(reference(value));
      }),
      { numRuns: 2000 },
    );
  });

  it('orders keys by UTF-16 code units and leaves out undefined members', () => {
    // a (0x61) < b (0x62) < é (0xE9) < 😀 (0xD83D 0xDE00) < U+FFFF: code units, not code points.
    expect(toCanonicalJson({ '\uFFFF': 3, b: 1, a: [true, null], é: 'x', Z: undefined, '\u{1F600}': 2 })).toBe(
      '{"a":[true,null],"b":1,"é":"x","\u{1F600}":2,"\uFFFF":3}',
    );
  });

  it.each([
    ['a quote', 'say "hi"'],
    ['a backslash', 'C:\\path'],
    ['control characters', 'tab\tnl\nnul\u0000del\u007f'],
    ['a lone surrogate', 'x\ud800y'],
    ['an emoji (a surrogate pair)', 'ok \u{1F600}'],
    ['line and paragraph separators', 'a\u2028b\u2029c'],
  ])('escapes a string with %s exactly as JSON.stringify does, in values and in keys', (_what, text) => {
    expect(toCanonicalJson({ [text]: text })).toBe(`{${JSON.stringify(text)}:${JSON.stringify(text)}}`);
  });

  it.each([
    ['a fraction', 1.5],
    ['an unsafe integer', 2 ** 53],
    ['NaN', Number.NaN],
    ['a bigint', 1n],
    ['a function', () => 1],
    ['a symbol', Symbol('s')],
  ])('refuses %s', (_what, value) => {
    expect(() => toCanonicalJson({ value })).toThrow(TypeError);
  });

  it.runIf(spawnSync('jq', ['--version']).status === 0)('gives the bytes jq -cS gives', () => {
    const value = { runId: 'r', seq: 7, nested: { z: [1, 2, { y: 'é\n"' }], a: null }, v: 1 };
    const jq = spawnSync('jq', ['-cS', '.'], { input: JSON.stringify(value), encoding: 'utf8' });
    expect(toCanonicalJson(value)).toBe(jq.stdout.trimEnd());
  });
});
