/**
 * TAP (the Test Anything Protocol, versions 12 to 14: Perl's prove and Test::More, node --test, Bats, pytest-tap)
 * to counts. Hand-written, line by line, in one pass: TAP is line-oriented and needs no library.
 *
 * What is read (https://testanything.org/tap-version-14-specification.html): an optional `TAP version 13|14`
 * first line; one plan `1..N` (`1..0 # reason` to skip all; in TAP 13 the reason must begin with SKIP, as TAP::Parser reads it) first or last at each level; test points
 * `ok`/`not ok` with an optional number, description and `# SKIP`/`# TODO` directive (`\#` escapes);
 * `Bail out!`; subtests, indented four spaces per level and closed by their parent's test point; YAML
 * diagnostics after a test point (indented two more spaces, `---` to `...`, in a report that opens with its
 * version line), skipped unread but for a `Bail out!` in them (malformed). Comments,
 * pragmas and any line that is not TAP are ignored, as the spec says.
 *
 * Counts are the top-level test points, as prove counts them. A report says pass only when nothing in it
 * could be read another way, so these make it `malformed` (and the run's verdict `error`): no plan, two
 * plans, a plan in the middle, a test point after a trailing plan, a test number out of sequence, a
 * version line that is not the first line or names another version, a TAP line indented by other than a
 * multiple of four spaces (or with a tab), a subtest level skipped, a subtest without its closing test
 * point, a YAML start (`---`) that does not follow a test point, a subtest that did not pass (a failure, its plan unmet or absent) under a parent point that says
 * `ok` (a reader counting every level would see a failure), an unterminated YAML block, a carriage return that does not end a line (another
 * reader splits on it), a point whose number, directive or very being a point hangs on Unicode whitespace
 * or a letter glued to `ok` or `TODO` (readers of TAP part there: readPoint), bytes that are not UTF-8, and the caps: TAP_MAX_BYTES, TAP_MAX_DEPTH subtest
 * levels, TAP_MAX_LINES lines, numbers above TAP_MAX_COUNT. A plan that the test points do not meet, or a
 * bail out, is a `parsed` report that failed.
 */
import type { ResultParser } from './parser.js';

export const TAP_MAX_BYTES = 16 * 1024 * 1024;
/** Subtests nested deeper than this (the top level is depth 0) make the report malformed. */
export const TAP_MAX_DEPTH = 64;
/** Reports with more lines than this are malformed: counts past it would not be checked. */
export const TAP_MAX_LINES = 2_000_000;
/** A plan or a test number above this is malformed (no report holds that many points under the byte cap). */
export const TAP_MAX_COUNT = 10_000_000;

export type TapSummary =
  | {
      format: 'tap';
      status: 'parsed';
      /** The plan's count at the top level. */
      planned: number;
      /** Top-level test points seen. */
      tests: number;
      /** `not ok` without a TODO directive (a SKIP does not excuse a `not ok`: see countPoint). */
      failures: number;
      skipped: number;
      todo: number;
      bailedOut: boolean;
    }
  | { format: 'tap'; status: 'malformed' };

class Malformed extends Error {}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

const VERSION = /^TAP version (\d+)$/;
/**
 * Whitespace in TAP's syntax is ASCII: prove reads bytes, where `\s` is ASCII, or decodes TAP 13 as UTF-8,
 * where it is not; JavaScript's `\s` takes U+00A0, U+3000 and the like. Where the readings part (a number or a
 * directive after such a space, a letter glued to `ok` or `TODO`) the report is malformed (see readPoint).
 */
const SPACE = '[\\t\\v\\f ]';
/** `1..N`; a `# reason` only on `1..0` (skip all): TAP::Parser reads `1..3 # x` as no plan at all. */
const PLAN = new RegExp(`^1\\.\\.(\\d+)${SPACE}*(#.*)?$`);
/**
 * A test point's start as TAP::Parser reads one: `ok` ending a word (`ok- x` and `ok, done` are points,
 * `okay` is not), then digits after any whitespace are its number (`ok 7- x`, `ok\t7`). Nothing after the
 * digits is matched by the expression, so nothing backtracks (`(.*)$` after `\s*` took quadratic time on a
 * long line that held a U+2028).
 */
const POINT = new RegExp(`^(not )?ok\\b(${SPACE}*)(\\d*)`);
const BAIL_OUT = /^Bail out!/;
/** SKIP or TODO as a whole word, any case (TAP::Parser: `# SKIPPED` is no directive, `# skip:` is one). */
const DIRECTIVE = new RegExp(`^${SPACE}*(skip|todo)(?![A-Za-z0-9_])`, 'i');
/** A directive word after any whitespace, Unicode's too: `#\u00a0TODO` is a directive to prove decoding TAP 13. */
const UNICODE_DIRECTIVE = /^(\s*)(skip|todo)/i;
const NON_ASCII = /[\u0080-\uffff]/;
/** Leading whitespace as any reader may take it: JavaScript's \s and Perl's, which adds U+0085. */
const LEADING_SPACE = /^[\s\u0085]+/;
/** Lines that are TAP whatever their indentation, so a bad indentation of one is malformed, not ignored. */
const TAP_LINE = /^(?:not\s+ok\b|ok\b|1\.\.|Bail out!|TAP version\s)/;

interface Level {
  plan?: { count: number };
  /** Test points at this level. */
  points: number;
  failures: number;
  skipped: number;
  todo: number;
  /** A trailing plan was seen: nothing but the end of the level may follow. */
  closed: boolean;
  /** A subtest just ended at the level below: the next line here must be its test point. */
  subtest?: { passed: boolean };
}

const newLevel = (): Level => ({ points: 0, failures: 0, skipped: 0, todo: 0, closed: false });

export function parseTap(bytes: Uint8Array): TapSummary {
  const malformed: TapSummary = { format: 'tap', status: 'malformed' };
  if (bytes.length > TAP_MAX_BYTES) return malformed;
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    return malformed;
  }
  try {
    return readTap(text.startsWith('\uFEFF') ? text.slice(1) : text);
  } catch (err) {
    if (err instanceof Malformed) return malformed;
    throw err;
  }
}

export const tapParser: ResultParser<TapSummary> = {
  name: 'tap',
  summaryType: 'https://edge-runner.dev/summary/tap/v1',
  maxBytes: TAP_MAX_BYTES,
  parse: parseTap,
  failed: (summary) => summary.status === 'parsed' && (summary.failures > 0 || summary.bailedOut || summary.tests !== summary.planned),
};

function readTap(text: string): TapSummary {
  const levels: Level[] = [newLevel()];
  let first = true;
  /** A `TAP version` line opened the report: YAML blocks are TAP 13's, not TAP 12's. */
  let versioned = false;
  let bailedOut = false;
  /** Inside a YAML block: the indentation its lines have at least. */
  let yamlIndent: number | undefined;
  /** The indentation of the last test point, whose YAML block may follow. */
  let lastPointIndent: number | undefined;

  // Line by line without splitting first: 16 MiB of newlines must not become an array of 16 million strings.
  let lineCount = 0;
  for (let start = 0; start <= text.length;) {
    if (++lineCount > TAP_MAX_LINES) throw new Malformed();
    const newline = text.indexOf('\n', start);
    const end = newline === -1 ? text.length : newline;
    let line = text.slice(start, end);
    start = end + 1;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line.includes('\r')) throw new Malformed();
    const indent = leadingSpaces(line);
    const body = line.slice(indent);

    if (yamlIndent !== undefined) {
      if (body === '') continue;
      if (indent < yamlIndent) throw new Malformed(); // the block never ended with '...'
      if (indent === yamlIndent && body === '...') yamlIndent = undefined;
      // TAP::Parser bails out there reading TAP 12, and fails the YAML reading TAP 13: not something to pass over.
      else if (BAIL_OUT.test(body.trimStart())) throw new Malformed();
      continue;
    }
    if (body.trim() === '') continue;
    if (lastPointIndent !== undefined && indent === lastPointIndent + 2 && body === '---') {
      // Without a version line TAP::Parser reads the lines of a block as TAP 12: an indented `Bail out!` bails.
      if (!versioned) throw new Malformed();
      yamlIndent = indent;
      lastPointIndent = undefined;
      continue;
    }
    lastPointIndent = undefined;
    // A YAML start anywhere else: TAP::Parser reads on as YAML from it, this reader would not.
    if (body === '---') throw new Malformed();
    // So is `---` after any whitespace (TAP::Parser's YAML start is `^\s+---`, Unicode's \s decoding TAP 13).
    if (indent > 0 && body.startsWith('---')) throw new Malformed();
    if (!TAP_LINE.test(body)) {
      // A comment, a pragma or output that is not TAP; TAP after a tab (or U+0085, whitespace to Perl and not
      // to JavaScript) would be read differently elsewhere.
      const stripped = body.replace(LEADING_SPACE, '');
      if (stripped !== body && (TAP_LINE.test(stripped) || stripped.startsWith('---'))) throw new Malformed();
      first = false;
      continue;
    }
    if (indent % 4 !== 0) throw new Malformed();
    const depth = indent / 4;
    if (depth > TAP_MAX_DEPTH) throw new Malformed();

    const version = VERSION.exec(body);
    if (version) {
      if (!first || depth !== 0 || !['13', '14'].includes(version[1]!)) throw new Malformed();
      first = false;
      versioned = true;
      continue;
    }
    first = false;

    if (BAIL_OUT.test(body)) {
      bailedOut = true;
      break; // the spec: a harness stops reading at a bail out
    }

    // Open or close subtest levels to reach this line's depth.
    if (depth > levels.length) throw new Malformed(); // a level skipped
    if (depth === levels.length) {
      const parent = levels[levels.length - 1]!;
      if (parent.subtest || parent.closed) throw new Malformed();
      levels.push(newLevel());
    }
    while (levels.length > depth + 1) {
      const child = levels.pop()!;
      const parent = levels[levels.length - 1]!;
      if (parent.subtest) throw new Malformed(); // a subtest closed twice without its point
      parent.subtest = { passed: endLevel(child) };
    }
    const level = levels[depth]!;

    const plan = PLAN.exec(body);
    if (plan) {
      if (level.plan || level.subtest) throw new Malformed();
      const count = toCount(plan[1]!);
      if (plan[2] !== undefined && count !== 0) throw new Malformed();
      // TAP 13 to TAP::Parser: `1..0` alone or `1..0 # SKIP reason`; `1..0 # other` is no plan at all.
      if (plan[2] !== undefined && versioned && !/^#[\t\v\f ]*skip(?![A-Za-z0-9_])/i.test(plan[2])) throw new Malformed();
      level.plan = { count };
      // A plan after test points is the trailing plan: the level ends there.
      if (level.points > 0) level.closed = true;
      continue;
    }

    const { ok, number, kind } = readPoint(body);
    if (level.closed) throw new Malformed();
    level.points++;
    if (level.points > TAP_MAX_COUNT) throw new Malformed();
    if (number !== undefined && toCount(number) !== level.points) throw new Malformed();
    if (level.subtest) {
      if (ok && kind !== 'todo' && !level.subtest.passed) throw new Malformed();
      level.subtest = undefined;
    }
    countPoint(level, ok, kind);
    lastPointIndent = indent;
  }
  if (yamlIndent !== undefined) throw new Malformed();

  const root = levels[0]!;
  if (!bailedOut) {
    // The report ended inside a subtest, before its closing test point.
    if (levels.length > 1) throw new Malformed();
    if (root.subtest || root.plan === undefined) throw new Malformed();
  }
  return {
    format: 'tap',
    status: 'parsed',
    planned: root.plan?.count ?? 0,
    tests: root.points,
    failures: root.failures,
    skipped: root.skipped,
    todo: root.todo,
    bailedOut,
  };
}

/**
 * A test point line: `ok` or `not ok`, its number if any, its directive if any. Malformed where readers
 * part: a non-ASCII character right after `ok` or after the directive word (a letter there ends no word to
 * Perl decoding UTF-8, or reading it as Latin-1, and does to JavaScript), Unicode whitespace before digits
 * (their number to one reader, description to another) or before a directive word, and a U+2028 or
 * U+2029 (a line break to some readers).
 */
function readPoint(body: string): { ok: boolean; number: string | undefined; kind: 'skip' | 'todo' | undefined } {
  const point = POINT.exec(body);
  if (!point) throw new Malformed(); // TAP_LINE matched a shape none of the rules reads
  const after = body.charAt(point[1] === undefined ? 2 : 6);
  if (NON_ASCII.test(after)) throw new Malformed();
  const rest = body.slice(point[0].length);
  if (/[\u2028\u2029]/.test(rest)) throw new Malformed();
  if (point[3] === '' && /^\s+\d/.test(rest)) throw new Malformed();
  const comment = afterHash(rest) ?? '';
  const directive = DIRECTIVE.exec(comment);
  if (directive) {
    if (NON_ASCII.test(comment.charAt(directive[0].length))) throw new Malformed();
  } else if (NON_ASCII.test(UNICODE_DIRECTIVE.exec(comment)?.[1] ?? '')) throw new Malformed();
  const kind = directive ? (directive[1]!.toLowerCase() === 'todo' ? 'todo' : 'skip') : undefined;
  return { ok: point[1] === undefined, number: point[3] === '' ? undefined : point[3], kind };
}

/**
 * One test point. `not ok # TODO` is an expected failure. A skip is counted as skipped only on an `ok`:
 * `not ok # SKIP` counts as a failure, as the reading that hides nothing (harnesses disagree on it).
 */
function countPoint(level: Level, ok: boolean, kind: 'skip' | 'todo' | undefined): void {
  if (kind === 'todo') level.todo++;
  else if (!ok) level.failures++;
  else if (kind === 'skip') level.skipped++;
}

/**
 * A subtest level's own result: planned, met and free of failures. A level still waiting for the closing
 * point of its own subtest is malformed; one without a plan has not passed (a test file that died early is
 * then a failure under its parent's `not ok`, and malformed under an `ok`).
 */
function endLevel(level: Level): boolean {
  if (level.subtest) throw new Malformed();
  return level.plan !== undefined && level.failures === 0 && level.points === level.plan.count;
}

function toCount(digits: string): number {
  if (digits.length > 9) throw new Malformed();
  const value = Number(digits);
  if (value > TAP_MAX_COUNT) throw new Malformed();
  return value;
}

function leadingSpaces(line: string): number {
  let n = 0;
  while (n < line.length && line.charCodeAt(n) === 0x20) n++;
  return n;
}

/** The text after the description's first unescaped '#', or undefined when it has none. */
function afterHash(rest: string): string | undefined {
  for (let i = 0; i < rest.length; i++) {
    const c = rest[i];
    if (c === '\\') i++;
    else if (c === '#') return rest.slice(i + 1);
  }
  return undefined;
}
