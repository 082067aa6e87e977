/**
 * Text from outside made safe to print or log. A capsule, a bundle, a trust document or a log export is
 * written by someone else: a member name or a path in it may hold a carriage return, an ANSI escape that
 * erases the line, or a bidi override that reorders what a person reads, and printed raw it can forge an
 * `OK ... verdict pass` line on an auditor's terminal. Every such string goes through toPrintable before
 * it reaches stdout, stderr or the ops log (the CLI's describeError and printError do it for every error
 * message; `verify` for every field it prints).
 *
 * What is escaped, as `\uXXXX` (so the line stays one line, and the reader still sees that something was
 * there): C0 controls and DEL (U+0000–U+001F, U+007F), C1 controls (U+0080–U+009F, CSI among them), the bidi
 * controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), the line and paragraph separators
 * (U+2028, U+2029), and lone surrogates. Everything else is printed as it is. The escaping is for display,
 * not an encoding: a backslash is not doubled.
 */

const UNPRINTABLE =
  // eslint-disable-next-line no-control-regex
  /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** `text` with every control, bidi override and lone surrogate replaced by its `\uXXXX` escape. */
export function toPrintable(text: string): string {
  UNPRINTABLE.lastIndex = 0;
  if (!UNPRINTABLE.test(text)) return text;
  UNPRINTABLE.lastIndex = 0;
  return text.replace(UNPRINTABLE, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** What JSON.stringify leaves raw and a terminal acts on: DEL, C1 controls, bidi controls, line separators. */
const UNPRINTABLE_IN_JSON = /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * JSON text (as JSON.stringify writes it: C0 controls and lone surrogates already escaped) with the rest
 * of what toPrintable escapes written as `\uXXXX` escapes too: the same JSON value, safe on a terminal.
 * Such characters can only stand inside string literals there, where `\uXXXX` means the same character.
 */
export function toPrintableJson(json: string): string {
  return json.replace(UNPRINTABLE_IN_JSON, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** toPrintable, cut to `max` characters with an ellipsis: for an untrusted value quoted in a sentence. */
export function toPrintableExcerpt(text: string, max = 64): string {
  const printable = toPrintable(text.length > max * 6 ? text.slice(0, max * 6) : text);
  return printable.length > max ? `${printable.slice(0, max)}…` : printable;
}
