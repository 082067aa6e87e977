/** TAP to counts: prove/Test::More and node --test output, subtests, directives, YAML, and hostile reports. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decideVerdict, type ArtifactRecord } from '../../../runner/evidence/statement.js';
import { parseTap, tapParser, TAP_MAX_BYTES, TAP_MAX_DEPTH, TAP_MAX_LINES, type TapSummary } from '../../../runner/evidence/parsers/tap.js';

const tap = (text: string) => parseTap(Buffer.from(text, 'utf8'));
const lines = (...rows: string[]) => `${rows.join('\n')}\n`;
const parsed = (planned: number, tests: number, failures = 0, skipped = 0, todo = 0, bailedOut = false): TapSummary => ({
  format: 'tap',
  status: 'parsed',
  planned,
  tests,
  failures,
  skipped,
  todo,
  bailedOut,
});
const MALFORMED = { format: 'tap', status: 'malformed' };
const verdictOf = (summary: TapSummary) =>
  decideVerdict([], [{ path: 'r.tap', as: 'tap', status: 'collected', summary } as ArtifactRecord], new Set());

/** What Test::More (perl 5.36) prints for a file with a nested subtest, a skip, a TODO and an escaped '#'. */
const TEST_MORE = lines(
  'ok 1 - first',
  '# Subtest: inner',
  '    1..2',
  '    ok 1 - a',
  '    # Subtest: deeper',
  '        ok 1 - x',
  '        1..1',
  '    ok 2 - deeper',
  'ok 2 - inner',
  'ok 3 # skip no db',
  'not ok 4 - todo one # TODO later',
  "#   Failed (TODO) test 'todo one'",
  '#   at st.t line 5.',
  'ok 5 - hash \\# in name',
  '1..5',
);

/** What node --test --test-reporter=tap prints: TAP 13, YAML diagnostics, a failing nested subtest. */
const NODE_TEST = lines(
  'TAP version 13',
  '# Subtest: a',
  'ok 1 - a',
  '  ---',
  '  duration_ms: 2.48523',
  '  ...',
  '# Subtest: b',
  '    # Subtest: c',
  '    not ok 1 - c',
  '      ---',
  "      failureType: 'testCodeFailure'",
  '      stack: |-',
  '        not ok 99 - inside YAML, never counted',
  '        ...',
  '      ...',
  '    1..1',
  'not ok 2 - b',
  '  ---',
  "  error: '1 subtest failed'",
  '  ...',
  '1..2',
  '# tests 3',
  '# fail 2',
);

describe('parseTap', () => {
  describe('real harness output', () => {
    it('reads Test::More: top-level points counted, subtests checked, skip and todo counted', () => {
      expect(tap(TEST_MORE)).toEqual(parsed(5, 5, 0, 1, 1));
      expect(verdictOf(tap(TEST_MORE) as TapSummary)).toBe('pass');
    });

    it('reads node --test: YAML blocks skipped unread, a failing subtest under not ok', () => {
      expect(tap(NODE_TEST)).toEqual(parsed(2, 2, 1));
      expect(verdictOf(tap(NODE_TEST) as TapSummary)).toBe('fail');
    });

    it('reads a plain failing Test::More file with a leading plan', () => {
      expect(tap(lines('1..3', 'ok 1', 'not ok 2 - wrong', '#   Failed test', 'ok 3'))).toEqual(parsed(3, 3, 1));
    });

    it('accepts TAP version 14 and 13, CRLF line ends, a BOM, and no final newline', () => {
      expect(tap('TAP version 14\n1..1\nok 1\n')).toEqual(parsed(1, 1));
      expect(tap('TAP version 13\r\n1..2\r\nok 1\r\nok 2\r\n')).toEqual(parsed(2, 2));
      expect(tap('\uFEFF1..1\nok')).toEqual(parsed(1, 1));
    });
  });

  describe('plans, points and directives', () => {
    it('treats a skip-all plan with no points as planned and met', () => {
      const summary = tap(lines('1..0 # SKIP no database here'));
      expect(summary).toEqual(parsed(0, 0));
      expect(verdictOf(summary as TapSummary)).toBe('pass');
    });

    it('reads directives as whole words in any case, after the first unescaped # (SKIPPED is none)', () => {
      expect(
        tap(
          lines(
            '1..6',
            'ok 1 # SKIP',
            'ok 2 - x # skip: later',
            'ok 3 # Todo soon',
            'not ok 4 # TODO',
            'ok 5 - a \\# SKIP not a directive',
            'ok 6 # SKIPPED',
          ),
        ),
      ).toEqual(parsed(6, 6, 0, 2, 2));
    });

    it('counts not ok # SKIP as a failure: the reading that hides nothing', () => {
      expect(tap(lines('1..1', 'not ok 1 # SKIP really'))).toEqual(parsed(1, 1, 1));
    });

    it('reports a plan the points do not meet as parsed but failed (fewer, or more)', () => {
      const fewer = tap(lines('1..3', 'ok 1', 'ok 2'));
      expect(fewer).toEqual(parsed(3, 2));
      expect(verdictOf(fewer as TapSummary)).toBe('fail');
      expect(verdictOf(tap(lines('ok 1', 'ok 2', '1..1')) as TapSummary)).toBe('fail');
    });

    it('stops at Bail out! and fails the run, whatever follows', () => {
      const summary = tap(lines('1..3', 'ok 1', 'Bail out! database gone', 'ok 2', 'ok 3', 'garbage', '1..9'));
      expect(summary).toEqual(parsed(3, 1, 0, 0, 0, true));
      expect(verdictOf(summary as TapSummary)).toBe('fail');
      expect(tap(lines('ok 1', '# Subtest: s', '    Bail out! nested'))).toEqual(parsed(0, 1, 0, 0, 0, true));
    });

    it('reads ok ending a word as a test point, as TAP::Parser does (ok- x, not ok, done)', () => {
      expect(tap(lines('1..3', 'ok- dash', 'not ok, done', 'ok\t3'))).toEqual(parsed(3, 3, 1));
    });

    it('ignores comments, pragmas and lines that are not TAP', () => {
      expect(tap(lines('pragma +strict', '# hello', 'okay then', 'some program output', '1..1', 'ok 1 - fine', 'not okay'))).toEqual(parsed(1, 1));
    });

    it('numbers are optional but, when given, must run in sequence', () => {
      expect(tap(lines('1..3', 'ok', 'ok 2', 'ok'))).toEqual(parsed(3, 3));
      expect(tap(lines('1..2', 'ok 2', 'ok 1'))).toEqual(MALFORMED);
      expect(tap(lines('1..2', 'ok 1', 'ok 1'))).toEqual(MALFORMED);
    });
  });

  describe('malformed reports (the run is then an error, never a pass)', () => {
    const cases: Record<string, string> = {
      'no plan': lines('ok 1', 'ok 2'),
      'two plans': lines('1..1', 'ok 1', '1..1'),
      'a plan in the middle': lines('ok 1', '1..2', 'ok 2'),
      'a plan that is not a number': lines('1..x', 'ok 1'),
      'a plan beyond the count cap': lines('1..99999999999', 'ok 1'),
      'a version line that is not first': lines('1..1', 'TAP version 14', 'ok 1'),
      'a version line after a comment': lines('# hi', 'TAP version 14', '1..1', 'ok 1'),
      'an unknown version': lines('TAP version 15', '1..1', 'ok 1'),
      'a TAP line indented by three spaces': lines('1..2', 'ok 1', '   not ok 2'),
      'a TAP line after a tab': lines('1..2', 'ok 1', '\tnot ok 2'),
      '"not  ok" with two spaces': lines('1..1', 'not  ok 1'),
      'ok, a tab, and a number out of sequence': lines('1..1', 'ok\t2'),
      'a lone carriage return splitting a line': '1..2\nok 1\rnot ok 2\n',
      'a subtest level skipped': lines('1..1', '        ok 1', 'ok 1'),
      'a subtest without its closing point at the end': lines('1..1', '    1..1', '    ok 1'),
      'a subtest followed by a plan instead of its point': lines('    1..1', '    ok 1', '1..1'),
      'a subtest without a plan': lines('1..1', '    ok 1', 'ok 1'),
      'a failing subtest under a parent that says ok': lines('1..1', '    1..1', '    not ok 1', 'ok 1 - all good'),
      'a subtest short of its plan under ok': lines('1..1', '    1..2', '    ok 1', 'ok 1'),
      'an unterminated YAML block': lines('1..1', 'ok 1', '  ---', '  message: x', 'ok 2'),
      'a YAML block that never ends at the end': lines('1..1', 'ok 1', '  ---', '  message: x'),
      'a TAP line hidden in YAML-looking text': lines('1..1', 'ok 1', '  message: x', '  not ok 2'),
      'bytes that are not UTF-8': '1..1\nok 1 - \xff\n',
      'a test point after a trailing plan': lines('ok 1', '1..1', 'ok 2'),
    };
    for (const [what, text] of Object.entries(cases)) {
      it(`${what}`, () => {
        const bytes = what === 'bytes that are not UTF-8' ? Buffer.from(text, 'latin1') : Buffer.from(text, 'utf8');
        expect(parseTap(bytes)).toEqual(MALFORMED);
      });
    }

    it('a directive, a number or a point that only some readers see, through Unicode whitespace or a letter glued on', () => {
      // Each hides a failure from one reader: prove reads bytes (ASCII \\s) or decodes TAP 13 (Unicode \\s and \\w),
      // a Latin-1 reading sees a letter in every UTF-8 lead byte; JavaScript's \\s and \\b say otherwise again.
      const documents = [
        lines('1..1', 'not ok 1 #\u00a0TODO later'),
        lines('1..1', 'not ok 1 #\u3000TODO'),
        lines('1..1', 'not ok 1 # \u2003 TODO'),
        lines('1..1', 'not ok 1 # TODO\u00e9'),
        lines('1..1', 'not ok 1 # TODO\u00a0later'),
        lines('1..1', 'not ok\u00a01 # TODO'),
        lines('1..2', 'ok 1', 'ok\u00e9'),
        lines('1..2', 'ok 1', 'ok \u00a07'),
        lines('1..2\u00a0', 'ok', 'ok'),
        lines('1..1', 'ok 1 - a\u2028not ok 2'),
      ];
      for (const document of documents) expect(tap(document), JSON.stringify(document)).toEqual(MALFORMED);
    });

    it('Unicode in descriptions and reasons is read as before', () => {
      expect(
        tap(
          lines(
            '1..4',
            'ok 1 - montant 1\u00a0000\u00a0\u20ac',
            'not ok 2 - caf\u00e9 # TODO pas encore',
            'ok 3 - na\u00efve # SKIP \u00e9t\u00e9',
            'ok 4 \u00e9',
          ),
        ),
      ).toEqual(parsed(4, 4, 0, 1, 1));
    });

    it('a YAML block without a version line, or a Bail out! inside one (TAP::Parser bails out, or fails the YAML)', () => {
      expect(tap(lines('1..1', 'ok 1', '  ---', '  Bail out!', '  ...'))).toEqual(MALFORMED);
      expect(tap(lines('1..1', 'ok 1', '  ---', '  message: x', '  ...'))).toEqual(MALFORMED);
      expect(tap(lines('TAP version 13', '1..1', 'ok 1', '  ---', '  x: |', '     Bail out! db gone', '  ...'))).toEqual(MALFORMED);
      expect(tap(lines('TAP version 13', '1..1', 'ok 1', '  ---', '  message: x', '  ...'))).toEqual(parsed(1, 1));
    });

    it('lines TAP::Parser reads as a YAML start, a bail out or no plan, where this reader would see a comment or a skip-all', () => {
      const documents = [
        // `^\s+---` starts YAML to TAP::Parser (and its reader then fails, or swallows the points after it).
        lines('TAP version 13', '1..1', 'ok 1', '\t---'),
        lines('TAP version 13', '1..1', 'ok 1', '  --- x'),
        lines('TAP version 13', '\u3000---', '1..1', 'ok 1'),
        lines('TAP version 13', '1..1', '    ---\v', 'ok 1'),
        // U+0085 is whitespace to Perl decoding TAP 13 (`^\s*Bail out!`), not to JavaScript.
        lines('1..2', 'ok', 'ok', '\u0085Bail out!'),
        // TAP 13's plan is `1..0` or `1..0 # SKIP ...`: `1..0 # other` is no plan to TAP::Parser.
        lines('TAP version 13', '1..0 # nothing here'),
        lines('TAP version 13', '1..0#'),
      ];
      for (const document of documents) expect(tap(document), JSON.stringify(document)).toEqual(MALFORMED);
      expect(tap(lines('TAP version 13', '1..0 # SKIP no database'))).toEqual(parsed(0, 0));
      expect(tap(lines('TAP version 13', '1..0'))).toEqual(parsed(0, 0));
      expect(tap(lines('1..0 # nothing here'))).toEqual(parsed(0, 0));
    });

    it('a subtest that died before its plan, under not ok, is a failure (a test file that crashed)', () => {
      expect(tap(lines('1..2', '# Subtest: t/a.t', '    ok 1 - started', 'not ok 1 - t/a.t', 'ok 2 - t/b.t'))).toEqual(parsed(2, 2, 1));
    });

    it('a failing subtest under not ok, or under ok # TODO, is fine', () => {
      expect(tap(lines('1..2', '    1..1', '    not ok 1', 'not ok 1', '    1..1', '    not ok 1', 'ok 2 # TODO'))).toEqual(parsed(2, 2, 1, 0, 1));
    });
  });

  describe('hostile input', () => {
    it(`is malformed over ${TAP_MAX_BYTES} bytes without reading it`, () => {
      const huge = Buffer.alloc(TAP_MAX_BYTES + 1, 0x20);
      expect(parseTap(huge)).toEqual(MALFORMED);
    });

    it('reads a report just under the byte cap, in one pass', () => {
      const point = 'ok - a test point of some length to fill the report\n';
      const count = Math.floor((TAP_MAX_BYTES - 32) / point.length);
      const text = `1..${count}\n${point.repeat(count)}`;
      expect(Buffer.byteLength(text)).toBeLessThanOrEqual(TAP_MAX_BYTES);
      expect(tap(text)).toEqual(parsed(count, count));
    });

    it(`is malformed over ${TAP_MAX_LINES} lines (blank lines count too)`, () => {
      expect(tap(`1..1\nok 1\n${'\n'.repeat(TAP_MAX_LINES)}`)).toEqual(MALFORMED);
    });

    it(`reads subtests nested ${TAP_MAX_DEPTH} deep and refuses one level more`, () => {
      const build = (depth: number) => {
        const rows = ['1..1'];
        for (let d = 1; d <= depth; d++) rows.push(`${'    '.repeat(d)}1..1`);
        rows.push(`${'    '.repeat(depth)}ok 1`);
        for (let d = depth - 1; d >= 0; d--) rows.push(`${'    '.repeat(d)}ok 1`);
        return rows.join('\n');
      };
      expect(tap(build(TAP_MAX_DEPTH))).toEqual(parsed(1, 1));
      expect(tap(build(TAP_MAX_DEPTH + 1))).toEqual(MALFORMED);
    });

    it('reads a long point line holding a U+2028 in one pass (no backtracking over its whitespace)', () => {
      // `\\s*(\\d+)?(.*)$` backtracked through every space for every position: hours for a line this long.
      expect(tap(`1..1\nok${' '.repeat(4_000_000)}x\u2028\n`)).toEqual(MALFORMED);
      expect(tap(`1..1\nok ${'1'.repeat(4_000_000)}\u2028\n`)).toEqual(MALFORMED);
      expect(tap(`1..1\nok 1${' '.repeat(4_000_000)}- fine\n`)).toEqual(parsed(1, 1));
    });

    it('refuses a million levels of indentation without recursion or a crash', () => {
      expect(tap(`1..1\n${' '.repeat(4_000_000)}ok 1\nok 1\n`)).toEqual(MALFORMED);
    });

    it('handles a huge line, a huge YAML block and a megabyte of backslashes in one pass', () => {
      expect(tap(`1..1\nok 1 - ${'x'.repeat(8_000_000)}\n`)).toEqual(parsed(1, 1));
      expect(tap(`TAP version 13\n1..1\nok 1\n  ---\n${'  k: v\n'.repeat(500_000)}  ...\n`)).toEqual(parsed(1, 1));
      // An even run of backslashes escapes the backslashes only: the '#' starts a directive; an odd run escapes it.
      expect(tap(`1..1\nok 1 - ${'\\'.repeat(1_000_000)}# SKIP\n`)).toEqual(parsed(1, 1, 0, 1));
      expect(tap(`1..1\nok 1 - ${'\\'.repeat(1_000_001)}# SKIP\n`)).toEqual(parsed(1, 1));
    });

    it('never throws and always answers in its own format on arbitrary bytes and on TAP-shaped noise', () => {
      const tapLine = fc.oneof(
        fc.constantFrom('ok', 'not ok', 'ok 1', '1..1', '1..0', 'Bail out!', 'TAP version 14', '---', '...', '# SKIP', '# TODO', '# Subtest: x', ''),
        fc.string({ maxLength: 12 }),
      );
      const indented = fc.tuple(fc.integer({ min: 0, max: 10 }), tapLine).map(([n, line]) => `${' '.repeat(n)}${line}`);
      fc.assert(
        fc.property(fc.array(indented, { maxLength: 40 }), (rows) => {
          const summary = tap(rows.join('\n'));
          expect(summary.format).toBe('tap');
          if (summary.status === 'parsed') expect(summary.tests).toBeGreaterThanOrEqual(summary.failures + summary.skipped);
        }),
        { numRuns: 2000 },
      );
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 1024 }), (bytes) => {
          expect(['parsed', 'malformed']).toContain(parseTap(bytes).status);
        }),
        { numRuns: 500 },
      );
    });
  });

  describe('the plug-in', () => {
    it('says a parsed summary failed on failures, a bail out, or an unmet plan, and never for malformed', () => {
      expect(tapParser.failed(parsed(2, 2))).toBe(false);
      expect(tapParser.failed(parsed(2, 2, 1))).toBe(true);
      expect(tapParser.failed(parsed(2, 1))).toBe(true);
      expect(tapParser.failed(parsed(2, 2, 0, 0, 0, true))).toBe(true);
      expect(tapParser.failed({ format: 'tap', status: 'malformed' })).toBe(false);
      expect(verdictOf({ format: 'tap', status: 'malformed' })).toBe('error');
    });
  });
});
