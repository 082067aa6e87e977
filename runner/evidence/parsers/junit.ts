/**
 * JUnit XML to counts, with a real XML parser (fast-xml-parser). Counts come from the <testcase> elements
 * themselves rather than the suite attributes, which tools fill in inconsistently. Entities are not
 * expanded (no billion-laughs); a malformed report is a result, never a crash.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { ResultParser } from './parser.js';

export const JUNIT_MAX_BYTES = 16 * 1024 * 1024;

export type JunitSummary =
  { format: 'junit'; status: 'parsed'; tests: number; failures: number; errors: number; skipped: number } | { format: 'junit'; status: 'malformed' };

const parser = new XMLParser({
  ignoreAttributes: true,
  processEntities: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  isArray: (name) => ['testsuite', 'testcase', 'failure', 'error', 'skipped'].includes(name),
});

export function parseJunit(xml: Uint8Array): JunitSummary {
  const malformed: JunitSummary = { format: 'junit', status: 'malformed' };
  if (xml.length > JUNIT_MAX_BYTES) return malformed;
  const text = Buffer.from(xml).toString('utf8');
  if (XMLValidator.validate(text) !== true) return malformed;
  let doc: Record<string, unknown>;
  try {
    doc = parser.parse(text) as Record<string, unknown>;
  } catch {
    return malformed;
  }
  // Exactly one root element: fast-xml-parser's validator lets `<testsuites/><testsuite>…` through, and a
  // second root must not hide a failing suite behind an empty first one.
  const roots = Object.keys(doc).filter((key) => !key.startsWith('?') && key !== '#text');
  if (roots.length !== 1 || asArray(doc[roots[0]!]).length !== 1) return malformed;
  const suites = rootSuites(doc);
  if (!suites) return malformed;
  const counts = { tests: 0, failures: 0, errors: 0, skipped: 0 };
  const visit = (suite: unknown, depth: number) => {
    if (depth > 64 || typeof suite !== 'object' || suite === null) return;
    const record = suite as Record<string, unknown>;
    for (const testcase of asArray(record.testcase)) {
      counts.tests++;
      const tc = (typeof testcase === 'object' && testcase !== null ? testcase : {}) as Record<string, unknown>;
      if (asArray(tc.error).length > 0) counts.errors++;
      else if (asArray(tc.failure).length > 0) counts.failures++;
      else if (asArray(tc.skipped).length > 0) counts.skipped++;
    }
    for (const child of asArray(record.testsuite)) visit(child, depth + 1);
  };
  for (const suite of suites) visit(suite, 0);
  return { format: 'junit', status: 'parsed', ...counts };
}

export const junitParser: ResultParser<JunitSummary> = {
  name: 'junit',
  summaryType: 'https://edge-runner.dev/summary/junit/v1',
  maxBytes: JUNIT_MAX_BYTES,
  parse: parseJunit,
};

function rootSuites(doc: Record<string, unknown>): unknown[] | undefined {
  if ('testsuites' in doc) {
    const root = doc.testsuites;
    if (root === '' || root === null) return [];
    if (typeof root !== 'object') return undefined;
    return asArray((root as Record<string, unknown>).testsuite);
  }
  if ('testsuite' in doc) return asArray(doc.testsuite);
  return undefined;
}

function asArray(value: unknown): unknown[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}
