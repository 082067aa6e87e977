/**
 * The TAP parser against a second, independent reader: Perl's TAP::Parser (Test::Harness, what prove
 * uses). Wherever ours says `parsed`, TAP::Parser must read the same counts and find nothing wrong but an
 * unmet plan; where the two could disagree, ours must say `malformed`. Skipped visibly without perl.
 */
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseTap, tapParser } from '../../../runner/evidence/parsers/tap.js';

/** Reads JSON lines of TAP documents on stdin; prints one JSON line of what TAP::Parser read per document. */
const READER = String.raw`
use strict; use warnings; use JSON::PP; use TAP::Parser;
my $json = JSON::PP->new->canonical;
binmode STDIN, ':raw'; binmode STDOUT, ':raw';
while (my $line = <STDIN>) {
  my $tap = $json->decode($line);
  my $p = TAP::Parser->new({ tap => $tap });
  my ($bail, $skippedOk) = (0, 0);
  while (my $r = $p->next) {
    $bail = 1 if $r->is_bailout;
    $skippedOk++ if $r->is_test && $r->has_skip && $r->is_actual_ok;
  }
  print $json->encode({
    tests => $p->tests_run + 0, failures => scalar(my @f = $p->failed), todo => scalar(my @t = $p->todo),
    skipped => $skippedOk, planned => (defined $p->tests_planned ? $p->tests_planned + 0 : undef), bail => $bail, errors => [$p->parse_errors],
  }), "\n";
}
`;

interface PerlReading {
  tests: number;
  failures: number;
  todo: number;
  skipped: number;
  planned: number | null;
  bail: number;
  errors: string[];
}

const perl = spawnSync('/usr/bin/perl', ['-MTAP::Parser', '-MJSON::PP', '-e', '1'], { encoding: 'utf8' });
const noPerl = perl.status === 0 ? undefined : 'no perl with TAP::Parser and JSON::PP here';

function readWithPerl(documents: string[]): PerlReading[] {
  const result = spawnSync('/usr/bin/perl', ['-e', READER], {
    input: documents.map((d) => JSON.stringify(d)).join('\n') + '\n',
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: 120_000,
  });
  if (result.status !== 0) throw new Error(`perl: ${result.stderr}`);
  return result.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as PerlReading);
}

/** TAP-shaped lines: the grammar's pieces, near misses of each, subtests, YAML and noise. */
const description = fc.constantFrom(
  '',
  ' - fine',
  ' - a # SKIP no db',
  ' - a \\# SKIP not one',
  ' # TODO later',
  ' # skip',
  ' # todo',
  ' # SKIPPED',
  ' - x # TODOs',
  ' #TODO',
  ' - 1 2',
  '- dash',
  ' # Skip  x',
  ' #\u00a0TODO x',
  ' # TODO\u00e9',
  ' # TODO\u00a0x',
  ' - caf\u00e9 # TODO',
  '\u00e9 # TODO',
  '\u00a0# TODO',
  ' \u00a07 - x',
);
const point = fc
  .tuple(fc.constantFrom('ok', 'not ok'), fc.constantFrom('', ' 1', ' 2', ' 3', ' 01', ' 7'), description)
  .map(([ok, n, d]) => `${ok}${n}${d}`);
const subtest = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.boolean(), fc.constantFrom('ok', 'not ok', 'ok # TODO')).map(([n, failing, closing]) => {
  const inner = Array.from({ length: n }, (_, i) => `    ${failing && i === 0 ? 'not ok' : 'ok'} ${i + 1}`);
  return ['# Subtest: s', `    1..${n}`, ...inner, closing].join('\n');
});
const line = fc.oneof(
  { weight: 8, arbitrary: point },
  { weight: 2, arbitrary: fc.constantFrom('1..0', '1..1', '1..2', '1..3', '1..4', '1..2 # SKIP all', '1..', '1..x', '1..2 trailing') },
  {
    weight: 2,
    arbitrary: fc.constantFrom('# a comment', 'program output', 'okay', 'not okay', 'ok\t1', 'not  ok 1', '  ok 1', '    ok 1', '', 'pragma +strict'),
  },
  { weight: 1, arbitrary: fc.constantFrom('Bail out!', 'Bail out! reason', 'TAP version 13', '  ---', '  message: x', '  ...') },
  { weight: 2, arbitrary: subtest },
);
const noise = fc.constantFrom('# a comment', 'program output', 'okay', '', '    # Subtest: x');
/** Mostly well-formed: unnumbered points and subtests with noise between, a plan of about their count first or last. */
const shaped = fc
  .tuple(
    fc.array(
      fc.oneof(
        { weight: 6, arbitrary: fc.tuple(fc.constantFrom('ok', 'not ok'), description).map(([o, d]) => `${o}${d}`) },
        { weight: 2, arbitrary: noise },
        { weight: 2, arbitrary: subtest },
      ),
      {
        maxLength: 10,
      },
    ),
    fc.boolean(),
    fc.constantFrom(0, 0, 0, 1, -1),
    fc.boolean(),
  )
  .map(([body, planFirst, off, version]) => {
    const points = body.filter((l) => /^(not )?ok/.test(l) || /\n(not )?ok/.test(l)).length;
    const plan = `1..${Math.max(0, points + off)}`;
    return `${[...(version ? ['TAP version 13'] : []), ...(planFirst ? [plan, ...body] : [...body, plan])].join('\n')}\n`;
  });
const documents = fc.oneof(
  fc.array(line, { maxLength: 12 }).map((lines) => `${lines.join('\n')}\n`),
  shaped,
);

/**
 * Both ways prove reads a stream: bytes (ASCII \s and \w), and decoded from UTF-8 (what it does once a
 * stream says TAP version 13: Unicode \s and \w). Prints, per document, whether each reading passes.
 */
const TWO_READINGS = String.raw`
use strict; use warnings; use JSON::PP; use TAP::Parser;
my $json = JSON::PP->new->canonical->utf8;
binmode STDIN, ':raw'; binmode STDOUT, ':raw';
while (my $line = <STDIN>) {
  my $chars = $json->decode($line);
  my $bytes = $chars; utf8::encode($bytes);
  my @passed;
  for my $tap ($bytes, $chars) {
    my $p = TAP::Parser->new({ tap => $tap }); my $bail = 0;
    while (my $r = $p->next) { $bail = 1 if $r->is_bailout; }
    push @passed, ($p->has_problems || $bail || !defined $p->tests_planned) ? 0 : 1;
  }
  print $json->encode(\@passed), "
";
}
`;

/** Lines glued from TAP's pieces and the characters readers disagree on (Unicode spaces, U+0085, \v, \f, a BOM). */
const glued = fc
  .array(
    fc.constantFrom(
      ...['ok', 'not ok', ' ', '    ', '\t', '#', ' # ', 'TODO', 'SKIP', '1', '1..1', '1..0', 'Bail out!', '---', '...', '\\', '-', 'x'],
      ...['\u00a0', '\u00e9', '\u2028', '\u0085', '\f', '\v', '\u3000', '\ufeff', 'TAP version 13', '# Subtest: s'],
    ),
    { minLength: 1, maxLength: 5 },
  )
  .map((atoms) => atoms.join(''));
const gluedDocuments = fc.oneof(
  fc
    .tuple(fc.constantFrom('', 'TAP version 13\n'), fc.constantFrom('1..1\n', '1..2\n', ''), fc.array(glued, { maxLength: 6 }))
    .map(([version, plan, rows]) => `${version}${plan}${rows.join('\n')}\n`),
  fc
    .tuple(fc.constantFrom('1..1\nok 1\n', '1..2\nok\nok\n', 'TAP version 13\n1..1\nok 1\n'), fc.integer({ min: 0, max: 3 }), glued)
    .map(([document, at, row]) => {
      const rows = document.split('\n');
      rows.splice(at, 0, row);
      return rows.join('\n');
    }),
);

describe.skipIf(noPerl !== undefined)(`TAP: ours against Perl's TAP::Parser (${noPerl ?? 'perl here'})`, () => {
  it('agrees on every document ours reads as parsed; the rest it calls malformed', () => {
    const docs = fc.sample(documents, { numRuns: 5000, seed: 20261202 });
    const extra = [
      'TAP version 13\n1..2\nok 1 - a\n  ---\n  at: x\n  ...\nnot ok 2 - b # TODO soon\n',
      '1..3\nok 1\n# Subtest: s\n    1..1\n    ok 1\nok 2 - s\nok 3 # skip\n',
      '1..2\nok 1\nnot ok 2 # SKIP says skip, is a failure\n',
      'TAP version 13\n1..3\nok 1 - montant 1\u00a0000 \u20ac\nnot ok 2 - caf\u00e9 # TODO pas encore\nok 3 - na\u00efve # SKIP \u00e9t\u00e9\n',
    ];
    const all = [...extra, ...docs];
    const perlReadings = readWithPerl(all);
    let parsedCount = 0;
    all.forEach((doc, i) => {
      const ours = parseTap(Buffer.from(doc, 'utf8'));
      if (ours.status !== 'parsed') return;
      parsedCount++;
      const theirs = perlReadings[i]!;
      const context = `document ${JSON.stringify(doc)}: perl read ${JSON.stringify(theirs)}, ours ${JSON.stringify(ours)}`;
      if (ours.bailedOut) {
        expect(theirs.bail, context).toBe(1);
        return;
      }
      expect(theirs.bail, context).toBe(0);
      expect({ tests: theirs.tests, todo: theirs.todo, skipped: theirs.skipped, planned: theirs.planned }, context).toEqual({
        tests: ours.tests,
        todo: ours.todo,
        skipped: ours.skipped,
        planned: ours.planned,
      });
      // TAP::Parser also fails the points past the plan; ours fails the whole report for the unmet plan.
      if (ours.planned >= ours.tests) expect(theirs.failures, context).toBe(ours.failures);
      else expect(theirs.failures, context).toBeGreaterThanOrEqual(ours.failures);
      const otherErrors = theirs.errors.filter((e) => !/^Bad plan\./.test(e));
      expect(otherErrors, context).toEqual([]);
      expect(theirs.errors.length > 0, context).toBe(ours.planned !== ours.tests);
    });
    // The sample must exercise the agreement, not only the refusals.
    expect(parsedCount).toBeGreaterThan(1000);
  });

  it('passes no document that prove, reading bytes or decoding UTF-8, would fail (glued TAP and Unicode noise)', () => {
    const passing = [
      ...new Set(
        fc.sample(gluedDocuments, { numRuns: 20_000, seed: 20261202 }).filter((doc) => {
          const summary = parseTap(Buffer.from(doc, 'utf8'));
          return summary.status === 'parsed' && !tapParser.failed(summary);
        }),
      ),
      // A BOM before the first line is ours to strip; TAP::Parser reading a string keeps it and misses the plan.
    ].filter((doc) => !doc.startsWith('\ufeff'));
    const result = spawnSync('/usr/bin/perl', ['-e', TWO_READINGS], {
      input: passing.map((d) => JSON.stringify(d)).join('\n') + '\n',
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
      timeout: 120_000,
    });
    if (result.status !== 0) throw new Error(`perl: ${result.stderr}`);
    const readings = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as [number, number]);
    expect(readings).toHaveLength(passing.length);
    const failedThere = passing.filter((_, i) => readings[i]![0] !== 1 || readings[i]![1] !== 1);
    expect(failedThere).toEqual([]);
    expect(passing.length).toBeGreaterThan(2000);
  });
});
