/**
 * The one JSON parser for documents that come from outside (capsule files and their manifests, trust
 * documents, bundles and the statements inside, log exports, runner.json, capsule templates).
 *
 * JSON.parse keeps the last of two members with the same name; other readers keep the first, or both. A
 * signed manifest with two `steps` members then runs one list while a reviewer reads the other (RFC 8259
 * section 4: "The names within an object SHOULD be unique", and implementations differ when they are not).
 * This parser is RFC 8259 with every SHOULD made a MUST, so that one byte string has one meaning for every
 * reader:
 *   - a member name repeated in an object, at any depth, is refused (JSON_DUPLICATE_MEMBER);
 *   - the input is UTF-8 without a byte order mark (RFC 8259 section 8.1), and a `\u` escape never leaves a
 *     lone surrogate (section 8.2), so every string is well-formed Unicode (JSON_ENCODING);
 *   - nesting is capped (JSON_TOO_DEEP, default JSON_MAX_DEPTH) and so is the input (JSON_TOO_LARGE, when the
 *     caller gives maxBytes; every caller also caps before reading);
 *   - anything else the grammar does not allow is JSON_SYNTAX (trailing commas, comments, NaN, leading
 *     zeros, raw control characters in strings, text after the value).
 * Objects are plain objects; a member named `__proto__` becomes an own property (as JSON.parse makes it), never
 * the object's prototype. Numbers are JavaScript numbers (schemas bound them where it matters).
 *
 * Hand-written rather than a dependency: the npm parsers that report duplicate names build an AST first
 * (@humanwhocodes/momoa) or patch JSON.parse, and this one is ~250 lines, pure, and within a small factor of
 * JSON.parse on the documents the runner reads (a 64 MiB capsule file is mostly base64 strings, scanned by a
 * regular expression). Log records have their own byte-exact recogniser (runner/log/record.ts).
 */
import { CodedError } from './errors.js';
import { toPrintableExcerpt } from './printable.js';

export type JsonErrorCode = 'JSON_SYNTAX' | 'JSON_DUPLICATE_MEMBER' | 'JSON_TOO_DEEP' | 'JSON_ENCODING' | 'JSON_TOO_LARGE';

/**
 * A parse failure. Its message is a clause without a final period ("two members are named "steps""), for
 * the caller to place in its own sentence under its own code (CAPSULE_UNPARSEABLE, TRUST_UNPARSEABLE, ...).
 */
export class JsonError extends CodedError<JsonErrorCode, { offset?: number }> {}

/** Objects and arrays nested deeper than this are refused. Every format the runner reads nests under 16. */
export const JSON_MAX_DEPTH = 64;

export interface JsonParseOptions {
  /** Refuse input longer than this many bytes (UTF-8), before parsing. */
  maxBytes?: number;
  /** Refuse objects and arrays nested deeper than this. Default JSON_MAX_DEPTH. */
  maxDepth?: number;
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Parses one JSON text (bytes as UTF-8, or a string) under the rules above; throws JsonError. */
export function parseJson(input: Uint8Array | string, options: JsonParseOptions = {}): unknown {
  let text: string;
  if (typeof input === 'string') {
    // A UTF-16 unit is at most 3 UTF-8 bytes: short strings skip the count.
    if (options.maxBytes !== undefined && input.length * 3 > options.maxBytes && Buffer.byteLength(input, 'utf8') > options.maxBytes) {
      throw new JsonError('JSON_TOO_LARGE', `it is over the ${options.maxBytes}-byte cap`);
    }
    if (LONE_SURROGATE.test(input)) throw new JsonError('JSON_ENCODING', 'it holds a lone surrogate');
    text = input;
  } else {
    if (options.maxBytes !== undefined && input.length > options.maxBytes) {
      throw new JsonError('JSON_TOO_LARGE', `it is over the ${options.maxBytes}-byte cap`);
    }
    try {
      text = fatalUtf8.decode(input);
    } catch {
      throw new JsonError('JSON_ENCODING', 'it is not UTF-8');
    }
  }
  if (text.charCodeAt(0) === 0xfeff) throw new JsonError('JSON_ENCODING', 'it starts with a byte order mark', { offset: 0 });
  return new Parser(text, options.maxDepth ?? JSON_MAX_DEPTH).parseText();
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
/** A run of string characters that need no attention: not `"`, `\` or a control. */
// eslint-disable-next-line no-control-regex
const PLAIN_RUN = /[^"\\\u0000-\u001f]*/y;
/** RFC 8259 section 6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const SHORT_ESCAPES: Readonly<Record<string, string>> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

class Parser {
  private readonly s: string;
  private readonly maxDepth: number;
  private p = 0;

  constructor(text: string, maxDepth: number) {
    this.s = text;
    this.maxDepth = maxDepth;
  }

  parseText(): unknown {
    this.skipSpace();
    if (this.p >= this.s.length) throw this.syntax('it is empty');
    const value = this.parseValue(0);
    this.skipSpace();
    if (this.p < this.s.length) throw this.syntax('there is text after the value');
    return value;
  }

  private parseValue(depth: number): unknown {
    const c = this.s.charCodeAt(this.p);
    switch (c) {
      case 0x7b: // {
        return this.parseObject(depth + 1);
      case 0x5b: // [
        return this.parseArray(depth + 1);
      case 0x22: // "
        return this.parseString();
      case 0x74: // t
        return this.parseWord('true', true);
      case 0x66: // f
        return this.parseWord('false', false);
      case 0x6e: // n
        return this.parseWord('null', null);
      default:
        return this.parseNumber();
    }
  }

  private parseObject(depth: number): Record<string, unknown> {
    if (depth > this.maxDepth) throw new JsonError('JSON_TOO_DEEP', `it nests deeper than ${this.maxDepth} levels`, { offset: this.p });
    this.p += 1;
    const object: Record<string, unknown> = {};
    this.skipSpace();
    if (this.s.charCodeAt(this.p) === 0x7d) {
      this.p += 1;
      return object;
    }
    for (;;) {
      if (this.s.charCodeAt(this.p) !== 0x22) throw this.syntax('a member name is not a string');
      const at = this.p;
      const name = this.parseString();
      if (Object.hasOwn(object, name)) {
        throw new JsonError('JSON_DUPLICATE_MEMBER', `two members of one object are named "${toPrintableExcerpt(name)}"`, { offset: at });
      }
      this.skipSpace();
      if (this.s.charCodeAt(this.p) !== 0x3a) throw this.syntax('a member name is not followed by ":"');
      this.p += 1;
      this.skipSpace();
      const value = this.parseValue(depth);
      // A plain assignment of `__proto__` would set the prototype: define it as an own property instead.
      if (name === '__proto__') Object.defineProperty(object, name, { value, writable: true, enumerable: true, configurable: true });
      else object[name] = value;
      this.skipSpace();
      const c = this.s.charCodeAt(this.p);
      this.p += 1;
      if (c === 0x2c) {
        this.skipSpace();
        continue;
      }
      if (c === 0x7d) return object;
      this.p -= 1;
      throw this.syntax('an object member is not followed by "," or "}"');
    }
  }

  private parseArray(depth: number): unknown[] {
    if (depth > this.maxDepth) throw new JsonError('JSON_TOO_DEEP', `it nests deeper than ${this.maxDepth} levels`, { offset: this.p });
    this.p += 1;
    const array: unknown[] = [];
    this.skipSpace();
    if (this.s.charCodeAt(this.p) === 0x5d) {
      this.p += 1;
      return array;
    }
    for (;;) {
      array.push(this.parseValue(depth));
      this.skipSpace();
      const c = this.s.charCodeAt(this.p);
      this.p += 1;
      if (c === 0x2c) {
        this.skipSpace();
        continue;
      }
      if (c === 0x5d) return array;
      this.p -= 1;
      throw this.syntax('an array element is not followed by "," or "]"');
    }
  }

  private parseString(): string {
    const s = this.s;
    let p = this.p + 1;
    let out = '';
    for (;;) {
      PLAIN_RUN.lastIndex = p;
      PLAIN_RUN.test(s);
      const runEnd = PLAIN_RUN.lastIndex;
      const c = s.charCodeAt(runEnd);
      if (c === 0x22) {
        this.p = runEnd + 1;
        return out + s.slice(p, runEnd);
      }
      out += s.slice(p, runEnd);
      if (c !== 0x5c) {
        this.p = runEnd;
        throw this.syntax(Number.isNaN(c) ? 'a string is not closed' : 'a string holds a raw control character');
      }
      const e = s[runEnd + 1];
      if (e === 'u') {
        const unit = this.hex4(runEnd + 2);
        p = runEnd + 6;
        if (unit >= 0xd800 && unit <= 0xdbff) {
          const low = s.charCodeAt(p) === 0x5c && s.charCodeAt(p + 1) === 0x75 ? this.hex4(p + 2) : -1;
          if (low < 0xdc00 || low > 0xdfff) throw this.encoding('a \\u escape leaves a lone surrogate', runEnd);
          out += String.fromCharCode(unit, low);
          p += 6;
        } else if (unit >= 0xdc00 && unit <= 0xdfff) {
          throw this.encoding('a \\u escape leaves a lone surrogate', runEnd);
        } else {
          out += String.fromCharCode(unit);
        }
      } else {
        const decoded = e === undefined ? undefined : SHORT_ESCAPES[e];
        if (decoded === undefined) {
          this.p = runEnd;
          throw this.syntax('a string holds an escape JSON does not have');
        }
        out += decoded;
        p = runEnd + 2;
      }
    }
  }

  /** The four hex digits at `at` as a number; a syntax error when they are not four hex digits. */
  private hex4(at: number): number {
    let n = 0;
    for (let i = at; i < at + 4; i++) {
      const c = this.s.charCodeAt(i);
      const d = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;
      if (d < 0) {
        this.p = at;
        throw this.syntax('a \\u escape does not have four hex digits');
      }
      n = n * 16 + d;
    }
    return n;
  }

  private parseNumber(): number {
    NUMBER.lastIndex = this.p;
    if (!NUMBER.test(this.s) || NUMBER.lastIndex === this.p) throw this.syntax('a value is not JSON');
    const value = Number(this.s.slice(this.p, NUMBER.lastIndex));
    this.p = NUMBER.lastIndex;
    return value;
  }

  private parseWord<T>(word: string, value: T): T {
    if (!this.s.startsWith(word, this.p)) throw this.syntax('a value is not JSON');
    this.p += word.length;
    return value;
  }

  /** RFC 8259 section 2: insignificant whitespace is space, tab, line feed and carriage return only. */
  private skipSpace(): void {
    const s = this.s;
    let p = this.p;
    for (;;) {
      const c = s.charCodeAt(p);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) p += 1;
      else break;
    }
    this.p = p;
  }

  private syntax(why: string): JsonError {
    return new JsonError('JSON_SYNTAX', `${why} (at character ${this.p})`, { offset: this.p });
  }

  private encoding(why: string, at: number): JsonError {
    return new JsonError('JSON_ENCODING', `${why} (at character ${at})`, { offset: at });
  }
}
