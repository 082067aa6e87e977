/**
 * Canonical JSON for bytes that are hashed or signed by us: object keys sorted by UTF-16 code units,
 * no insignificant whitespace, integers only (RFC 8785 restricted to the values we emit). Auditors can
 * recompute it with `jq -cS`, which produces the same bytes for these documents.
 *
 * Written as one pass that builds the string (no sorted copy of the value): it is on the runner's record
 * path, once per decision. Members whose value is undefined are left out, as JSON.stringify does; values
 * that are not JSON data (functions, symbols, bigints, non-integer numbers) are refused.
 */
export function toCanonicalJson(value: unknown): string {
  const text = write(value);
  if (text === undefined) throw new TypeError('canonical JSON encodes JSON data only');
  return text;
}

/** Strings JSON.stringify would copy as they are: no quote, backslash, control character or surrogate. */
// eslint-disable-next-line no-control-regex -- control characters are exactly what must be escaped
const PLAIN_STRING = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;

function quote(text: string): string {
  return PLAIN_STRING.test(text) ? `"${text}"` : JSON.stringify(text);
}

function write(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
      return quote(value);
    case 'number':
      if (!Number.isSafeInteger(value)) throw new TypeError('canonical JSON carries integers only');
      return String(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
      return undefined;
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) out += `${i > 0 ? ',' : ''}${write(value[i]) ?? 'null'}`;
        return `${out}]`;
      }
      const record = value as Record<string, unknown>;
      // Default sort order is by UTF-16 code units, as RFC 8785 section 3.2.3 and jq -S order keys.
      const keys = Object.keys(record).sort();
      let out = '{';
      let first = true;
      for (const key of keys) {
        const member = write(record[key]);
        if (member === undefined) continue;
        out += `${first ? '' : ','}${quote(key)}:${member}`;
        first = false;
      }
      return `${out}}`;
    }
    default:
      throw new TypeError(`canonical JSON cannot encode a ${typeof value}`);
  }
}
