/** The strict JSON parser (runner/core/json.ts) and the printable escaper (runner/core/printable.ts). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { JSON_MAX_DEPTH, JsonError, parseJson } from '../../../runner/core/json.js';
import { toPrintable } from '../../../runner/core/printable.js';

const codeOfParse = (text: string | Uint8Array, options = {}): string | undefined => {
  try {
    parseJson(typeof text === 'string' ? Buffer.from(text, 'utf8') : text, options);
    return undefined;
  } catch (err) {
    if (err instanceof JsonError) return err.code;
    throw err;
  }
};

describe('parseJson', () => {
  describe('when a member name is repeated', () => {
    it.each([
      ['at the top level', '{"steps":[1],"steps":[2]}'],
      ['in a nested object', '{"envelope":{"payload":"a","payload":"b"}}'],
      ['in an object inside an array', '{"signatures":[{"sig":"a"},{"keyid":"k","sig":"b","sig":"c"}]}'],
      ['deep down', `${'{"a":'.repeat(20)}{"x":1,"y":2,"x":3}${'}'.repeat(20)}`],
      ['spelled with an escape the second time', '{"steps":1,"st\\u0065ps":2}'],
      ['as __proto__', '{"__proto__":1,"__proto__":2}'],
    ])('refuses it %s with JSON_DUPLICATE_MEMBER', (_where, text) => {
      expect(codeOfParse(text)).toBe('JSON_DUPLICATE_MEMBER');
    });

    it('still accepts the same name in two different objects', () => {
      expect(parseJson(Buffer.from('[{"a":1},{"a":2}]'))).toEqual([{ a: 1 }, { a: 2 }]);
    });
  });

  describe('when a member is named __proto__', () => {
    it('makes it an own property and never the prototype', () => {
      const value = parseJson('{"__proto__":{"polluted":true}}') as Record<string, unknown>;
      expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
      expect(Object.hasOwn(value, '__proto__')).toBe(true);
      expect((value as { polluted?: unknown }).polluted).toBeUndefined();
      expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
    });
  });

  describe('when the text is not RFC 8259 JSON', () => {
    it.each([
      ['empty', ''],
      ['a trailing comma in an array', '[1,]'],
      ['a trailing comma in an object', '{"a":1,}'],
      ['a comment', '{"a":1 /* c */}'],
      ['a leading zero', '01'],
      ['NaN', 'NaN'],
      ['a single-quoted string', "'a'"],
      ['a raw control character in a string', '"a\tb"'],
      ['an unknown escape', '"\\x41"'],
      ['a short \\u escape', '"\\u41"'],
      ['text after the value', '{} {}'],
      ['an unclosed string', '"abc'],
      ['a non-breaking space as whitespace', '{\u00a0}'],
    ])('refuses %s with JSON_SYNTAX', (_what, text) => {
      expect(codeOfParse(text)).toBe('JSON_SYNTAX');
    });

    it.each([
      ['invalid UTF-8', Buffer.from([0x22, 0xff, 0x22])],
      ['an encoded surrogate', Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22])],
      ['a byte order mark', Buffer.from('\ufeff{}', 'utf8')],
      ['a lone high surrogate escape', Buffer.from('"\\ud800"')],
      ['a lone low surrogate escape', Buffer.from('"\\udc00x"')],
      ['a high surrogate escape followed by a non-surrogate', Buffer.from('"\\ud800\\u0041"')],
    ])('refuses %s with JSON_ENCODING', (_what, bytes) => {
      expect(codeOfParse(bytes)).toBe('JSON_ENCODING');
    });

    it('refuses a string given with a lone surrogate', () => {
      expect(() => parseJson('"\ud800"')).toThrow(JsonError);
    });
  });

  describe('when the text nests deeply or is large', () => {
    it(`accepts ${JSON_MAX_DEPTH} levels and refuses ${JSON_MAX_DEPTH + 1} with JSON_TOO_DEEP`, () => {
      expect(codeOfParse(`${'['.repeat(JSON_MAX_DEPTH)}${']'.repeat(JSON_MAX_DEPTH)}`)).toBeUndefined();
      expect(codeOfParse(`${'['.repeat(JSON_MAX_DEPTH + 1)}${']'.repeat(JSON_MAX_DEPTH + 1)}`)).toBe('JSON_TOO_DEEP');
      expect(codeOfParse(`${'{"a":'.repeat(JSON_MAX_DEPTH + 1)}1${'}'.repeat(JSON_MAX_DEPTH + 1)}`)).toBe('JSON_TOO_DEEP');
      expect(codeOfParse('[[[]]]', { maxDepth: 2 })).toBe('JSON_TOO_DEEP');
    });

    it('refuses a million open brackets without exhausting the stack', () => {
      expect(codeOfParse('['.repeat(1_000_000))).toBe('JSON_TOO_DEEP');
    });

    it('checks maxBytes before parsing, at the limit and one past it', () => {
      expect(codeOfParse('[1,2]', { maxBytes: 5 })).toBeUndefined();
      expect(codeOfParse('[1,2] ', { maxBytes: 5 })).toBe('JSON_TOO_LARGE');
      expect(() => parseJson('"ééé"', { maxBytes: 7 })).toThrow(JsonError);
    });
  });

  describe('when the text is valid JSON without repeated names', () => {
    it('gives what JSON.parse gives, for any such value', () => {
      fc.assert(
        fc.property(fc.jsonValue({ maxDepth: 6 }), fc.boolean(), (value, pretty) => {
          const text = JSON.stringify(value, null, pretty ? 2 : undefined);
          expect(parseJson(Buffer.from(text, 'utf8'))).toStrictEqual(JSON.parse(text));
          expect(parseJson(text)).toStrictEqual(JSON.parse(text));
        }),
        { numRuns: 500 },
      );
    });

    it('decodes escapes and surrogate pairs as JSON.parse does', () => {
      const text = '"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00 raw é 😀"';
      expect(parseJson(text)).toBe(JSON.parse(text));
      expect(parseJson(' \t\r\n{ "a" : [ -0.5e+3 , true , false , null ] } \n')).toEqual({ a: [-500, true, false, null] });
    });
  });
});

describe('toPrintable', () => {
  it('escapes C0 and C1 controls, DEL, bidi controls, separators and lone surrogates as \\uXXXX', () => {
    expect(toPrintable('a\rb\x1b[2Kc\nd\x7fe\x9bf')).toBe('a\\u000db\\u001b[2Kc\\u000ad\\u007fe\\u009bf');
    expect(toPrintable('x\u202ey\u2066z\u2069\u200f\u061c\u2028')).toBe('x\\u202ey\\u2066z\\u2069\\u200f\\u061c\\u2028');
    expect(toPrintable('lone \ud800 and \udc00')).toBe('lone \\ud800 and \\udc00');
  });

  it('leaves printable text, non-ASCII letters and surrogate pairs as they are', () => {
    const text = 'OK  validate capsule é 日本 😀 "quoted" \\ back';
    expect(toPrintable(text)).toBe(text);
  });

  it('never returns a control character, for any string', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (text) => {
        // eslint-disable-next-line no-control-regex
        expect(toPrintable(text)).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
      }),
      { numRuns: 500 },
    );
  });
});
