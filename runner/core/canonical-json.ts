/**
 * Canonical JSON for bytes that are hashed or signed by us: object keys sorted by UTF-16 code units,
 * no insignificant whitespace, integers only (RFC 8785 restricted to the values we emit). Auditors can
 * recompute it with `jq -cS`, which produces the same bytes for these documents.
 */
export function toCanonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const child = (value as Record<string, unknown>)[key];
      if (child !== undefined) out[key] = sortKeys(child);
    }
    return out;
  }
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new TypeError('canonical JSON carries integers only');
  }
  return value;
}
