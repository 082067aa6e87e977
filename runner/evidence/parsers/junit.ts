/**
 * JUnit XML to counts, with a real XML parser (fast-xml-parser). Counts come from the <testcase> elements
 * themselves rather than the suite attributes, which tools fill in inconsistently. Entities are not
 * expanded (no billion-laughs); a malformed report is a result, never a crash.
 *
 * A report says pass only when every element in it is accounted for. The whole tree is walked, to a named
 * depth (JUNIT_MAX_DEPTH) and element count (JUNIT_MAX_ELEMENTS), and each element must be one the JUnit
 * format puts under its parent (JUNIT_CHILDREN): a <testcase> hidden 70 suites deep, a <testsuites> inside a
 * <testsuites> (allowed, and counted), a namespaced <x:testcase> or a default xmlns declaration (which other
 * readers may resolve differently), a DOCTYPE (whose entities other readers may expand into testcases),
 * an unknown root or an unknown element anywhere make the report `malformed`, and a malformed report makes
 * the run's verdict `error` (decideVerdict in ../statement.ts), never `pass`.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { ResultParser } from './parser.js';

export const JUNIT_MAX_BYTES = 16 * 1024 * 1024;
/** Elements nested deeper than this (the root is depth 1) make the report malformed. */
export const JUNIT_MAX_DEPTH = 64;
/** Reports with more elements than this are malformed: counts past it would not be checked. */
export const JUNIT_MAX_ELEMENTS = 1_000_000;

export type JunitSummary =
  { format: 'junit'; status: 'parsed'; tests: number; failures: number; errors: number; skipped: number } | { format: 'junit'; status: 'malformed' };

/**
 * The elements each element may hold: the Ant JUnit schema (testsuites, testsuite, properties, testcase,
 * failure, error, skipped, system-out, system-err) and Maven Surefire's rerun and flaky results. A parent
 * missing here holds text only.
 */
export const JUNIT_CHILDREN: Readonly<Record<string, readonly string[]>> = {
  testsuites: ['testsuites', 'testsuite', 'properties'],
  testsuite: ['testsuite', 'testcase', 'properties', 'system-out', 'system-err'],
  testcase: ['failure', 'error', 'skipped', 'system-out', 'system-err', 'properties', 'flakyFailure', 'flakyError', 'rerunFailure', 'rerunError'],
  properties: ['property'],
  flakyFailure: ['stackTrace', 'system-out', 'system-err'],
  flakyError: ['stackTrace', 'system-out', 'system-err'],
  rerunFailure: ['stackTrace', 'system-out', 'system-err'],
  rerunError: ['stackTrace', 'system-out', 'system-err'],
};
const ROOTS = ['testsuites', 'testsuite'];

const ATTRIBUTES = ':@';
const TEXT = '#text';

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  processEntities: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  parseTagValue: false,
  parseAttributeValue: false,
});

/** One element as the ordered parser gives it: `{ name: children, ':@'?: attributes }`; text is `{ '#text': … }`. */
type OrderedNode = Record<string, unknown>;

class Malformed extends Error {}

const UTF8 = new TextDecoder('utf-8', { fatal: true });
/** The XML declaration (only at the very start, after an optional BOM) and its encoding pseudo-attribute. */
const XML_DECLARATION = /^\uFEFF?<\?xml\s[^>]*?\bencoding\s*=\s*["']([^"']*)["']/;

export function parseJunit(xml: Uint8Array): JunitSummary {
  const malformed: JunitSummary = { format: 'junit', status: 'malformed' };
  if (xml.length > JUNIT_MAX_BYTES) return malformed;
  // UTF-8 only, checked, and so declared if declared at all: a report that says encoding="UTF-7" (or
  // anything else) is read by other tools in that encoding, where its text can spell elements, failures
  // among them, that this reader would see as text.
  let text: string;
  try {
    text = UTF8.decode(xml);
  } catch {
    return malformed;
  }
  const declared = XML_DECLARATION.exec(text);
  if (declared && declared[1] !== undefined && !/^utf-?8$/i.test(declared[1])) return malformed;
  // A DOCTYPE may declare entities another reader expands into elements this one never sees.
  if (/<!DOCTYPE/i.test(text)) return malformed;
  if (XMLValidator.validate(text) !== true) return malformed;
  let doc: unknown;
  try {
    doc = parser.parse(text);
  } catch {
    return malformed; // fast-xml-parser's own nesting limit, among others
  }
  try {
    return { format: 'junit', status: 'parsed', ...countReport(doc) };
  } catch (err) {
    if (err instanceof Malformed) return malformed;
    throw err;
  }
}

export const junitParser: ResultParser<JunitSummary> = {
  name: 'junit',
  summaryType: 'https://edge-runner.dev/summary/junit/v1',
  maxBytes: JUNIT_MAX_BYTES,
  parse: parseJunit,
  failed: (summary) => summary.status === 'parsed' && (summary.failures > 0 || summary.errors > 0),
};

interface Counts {
  tests: number;
  failures: number;
  errors: number;
  skipped: number;
}

/** Exactly one root, a testsuites or a testsuite, then every element below it accounted for. */
function countReport(doc: unknown): Counts {
  if (!Array.isArray(doc)) throw new Malformed();
  const roots = (doc as OrderedNode[]).filter((node) => !isWhitespaceText(node));
  if (roots.length !== 1) throw new Malformed();
  const root = element(roots[0]!);
  if (!ROOTS.includes(root.name)) throw new Malformed();
  const counts: Counts = { tests: 0, failures: 0, errors: 0, skipped: 0 };
  let elements = 0;
  // Iterative, so no report can exhaust the stack; depth is checked against the named cap.
  const stack: Array<{ node: ReturnType<typeof element>; depth: number }> = [{ node: root, depth: 1 }];
  while (stack.length > 0) {
    const { node, depth } = stack.pop()!;
    if (depth > JUNIT_MAX_DEPTH || ++elements > JUNIT_MAX_ELEMENTS) throw new Malformed();
    if (node.name === 'testcase') countTestcase(node.children, counts);
    const allowed = JUNIT_CHILDREN[node.name] ?? [];
    for (const childNode of node.children) {
      if (isText(childNode)) continue;
      const child = element(childNode);
      if (!allowed.includes(child.name)) throw new Malformed();
      stack.push({ node: child, depth: depth + 1 });
    }
  }
  return counts;
}

/** A testcase's outcome: error before failure before skipped, as before. */
function countTestcase(children: readonly OrderedNode[], counts: Counts): void {
  counts.tests++;
  const names = new Set(children.filter((child) => !isText(child)).map((child) => element(child).name));
  if (names.has('error')) counts.errors++;
  else if (names.has('failure')) counts.failures++;
  else if (names.has('skipped')) counts.skipped++;
}

/**
 * The one element a node holds. A prefixed element name, or a default namespace declaration (`xmlns="…"`,
 * which puts every unprefixed element below it in a namespace a namespace-aware reader tells apart), is
 * malformed. Prefixed attributes and prefix declarations (Surefire's `xmlns:xsi`, `xsi:…SchemaLocation`) name
 * no element and stay allowed.
 */
function element(node: OrderedNode): { name: string; children: OrderedNode[] } {
  const names = Object.keys(node).filter((key) => key !== ATTRIBUTES);
  if (names.length !== 1) throw new Malformed();
  const name = names[0]!;
  const children = node[name];
  if (name.includes(':') || !Array.isArray(children)) throw new Malformed();
  const attributes = node[ATTRIBUTES];
  if (attributes !== undefined) {
    if (typeof attributes !== 'object' || attributes === null) throw new Malformed();
    for (const attribute of Object.keys(attributes)) {
      if (attribute === 'xmlns') throw new Malformed();
    }
  }
  return { name, children: children as OrderedNode[] };
}

function isText(node: OrderedNode): boolean {
  return Object.hasOwn(node, TEXT);
}

function isWhitespaceText(node: OrderedNode): boolean {
  return isText(node) && String(node[TEXT]).trim() === '';
}
