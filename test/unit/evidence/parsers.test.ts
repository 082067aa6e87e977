/** Result parsers as plug-ins: one registry, names that match the schemas, and parsers that never throw. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import manifestSchema from '../../../runner/capsule/manifest.schema.json' with { type: 'json' };
import predicateSchema from '../../../runner/evidence/predicate.schema.json' with { type: 'json' };
import { RESULT_PARSERS, parserFor } from '../../../runner/evidence/parsers/index.js';

/** Every `enum` in a JSON schema that lists the collect parsers (it contains "file"). */
function collectEnums(schema: unknown): string[][] {
  const found: string[][] = [];
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(visit);
    else if (node !== null && typeof node === 'object') {
      const record = node as Record<string, unknown>;
      if (Array.isArray(record.enum) && record.enum.includes('file')) found.push(record.enum as string[]);
      Object.values(record).forEach(visit);
    }
  };
  visit(schema);
  return found;
}

describe('the result parser registry', () => {
  it('names each parser by its key, with a versioned summary type and a positive byte cap', () => {
    for (const [key, parser] of Object.entries(RESULT_PARSERS)) {
      expect(parser.name).toBe(key);
      expect(parser.summaryType).toMatch(/^https:\/\/edge-runner\.dev\/summary\/[a-z0-9-]+\/v\d+$/);
      expect(parser.maxBytes).toBeGreaterThan(0);
    }
  });

  it('knows exactly the parsers the manifest and predicate schemas allow, besides plain file digests', () => {
    const names = Object.keys(RESULT_PARSERS).sort();
    for (const allowed of [...collectEnums(manifestSchema), ...collectEnums(predicateSchema)]) {
      expect(allowed.filter((name) => name !== 'file').sort()).toEqual(names);
    }
  });

  it('has no parser for file (digest only), nor for names inherited from Object', () => {
    expect(parserFor('file')).toBeUndefined();
    expect(parserFor('__proto__')).toBeUndefined();
    expect(parserFor('toString')).toBeUndefined();
    expect(parserFor('junit')).toBe(RESULT_PARSERS.junit);
  });

  describe('when a step writes arbitrary bytes where a report should be', () => {
    it('every parser returns a summary of its own format and never throws', () => {
      for (const parser of Object.values(RESULT_PARSERS)) {
        fc.assert(
          fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
            const summary = parser.parse(bytes);
            expect(summary.format).toBe(parser.name);
            expect(['parsed', 'malformed']).toContain(summary.status);
          }),
          { numRuns: 300 },
        );
      }
    });
  });
});
