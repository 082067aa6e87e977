/** JUnit XML to counts: a real parser, counts from <testcase> elements, malformed reports are results. */
import { describe, expect, it } from 'vitest';
import { JUNIT_MAX_BYTES, parseJunit } from '../../../runner/evidence/parsers/junit.js';

const xml = (text: string) => Buffer.from(text, 'utf8');
const parsed = (tests: number, failures: number, errors: number, skipped: number) => ({
  format: 'junit',
  status: 'parsed',
  tests,
  failures,
  errors,
  skipped,
});
const MALFORMED = { format: 'junit', status: 'malformed' };

describe('parseJunit', () => {
  describe('when the root is <testsuites>', () => {
    it('counts the test cases of every suite', () => {
      const report = `<?xml version="1.0" encoding="UTF-8"?>
        <testsuites name="all" tests="99">
          <testsuite name="a"><testcase name="a1"/><testcase name="a2"><failure message="boom">trace</failure></testcase></testsuite>
          <testsuite name="b"><testcase name="b1"><skipped/></testcase><testcase name="b2"><error type="E"/></testcase><testcase name="b3"/></testsuite>
        </testsuites>`;
      expect(parseJunit(xml(report))).toEqual(parsed(5, 1, 1, 1));
    });

    it('counts from the test cases, not from the suite attributes', () => {
      const report = '<testsuites tests="10" failures="7"><testsuite tests="10" failures="7"><testcase name="only"/></testsuite></testsuites>';
      expect(parseJunit(xml(report))).toEqual(parsed(1, 0, 0, 0));
    });
  });

  describe('when the root is a single <testsuite>', () => {
    it('counts its test cases', () => {
      const report = '<testsuite name="s"><testcase name="1"/><testcase name="2"><failure/></testcase><testcase name="3"/></testsuite>';
      expect(parseJunit(xml(report))).toEqual(parsed(3, 1, 0, 0));
    });

    it('counts a lone test case', () => {
      expect(parseJunit(xml('<testsuite><testcase name="only"/></testsuite>'))).toEqual(parsed(1, 0, 0, 0));
    });
  });

  describe('when suites are nested', () => {
    it('counts the test cases at every depth', () => {
      const report = `<testsuites>
        <testsuite name="outer"><testcase name="o1"/>
          <testsuite name="inner"><testcase name="i1"><failure/></testcase>
            <testsuite name="innermost"><testcase name="x1"><skipped/></testcase><testcase name="x2"><error/></testcase></testsuite>
          </testsuite>
        </testsuite>
      </testsuites>`;
      expect(parseJunit(xml(report))).toEqual(parsed(4, 1, 1, 1));
    });
  });

  describe('when a test case has several outcomes', () => {
    it('counts an error over a failure, and a failure over a skip, once per test case', () => {
      const report = `<testsuite>
        <testcase name="both"><failure/><error/></testcase>
        <testcase name="fail-and-skip"><skipped/><failure/></testcase>
        <testcase name="two-failures"><failure/><failure/></testcase>
        <testcase name="passes"><system-out>error failure skipped</system-out></testcase>
      </testsuite>`;
      expect(parseJunit(xml(report))).toEqual(parsed(4, 2, 1, 0));
    });

    it('treats failure text in CDATA as a failure, not as markup', () => {
      const report = '<testsuite><testcase name="c"><failure><![CDATA[<error/> <testcase/>]]></failure></testcase></testsuite>';
      expect(parseJunit(xml(report))).toEqual(parsed(1, 1, 0, 0));
    });
  });

  describe('when suites are empty', () => {
    it.each([
      ['an empty <testsuites/>', '<testsuites/>'],
      ['an empty <testsuites></testsuites>', '<testsuites></testsuites>'],
      ['an empty <testsuite/>', '<testsuite name="none"/>'],
      ['a <testsuites> of empty suites', '<testsuites><testsuite name="a"/><testsuite name="b"></testsuite></testsuites>'],
    ])('reports zero tests for %s', (_what, report) => {
      expect(parseJunit(xml(report))).toEqual(parsed(0, 0, 0, 0));
    });
  });

  describe('when the report is not a well-formed JUnit document', () => {
    it.each([
      ['an empty file', ''],
      ['plain text', 'all tests passed'],
      ['an unclosed element', '<testsuite><testcase name="a"></testsuite>'],
      ['mismatched tags', '<testsuites><testsuite></testsuites></testsuite>'],
      ['two roots', '<testsuite><testcase/></testsuite><testsuite><testcase><failure/></testcase></testsuite>'],
      ['two roots, the first self-closing', '<testsuite/><testsuite/>'],
      ['another root element', '<html><body>tests</body></html>'],
      ['JSON', '{"tests": 1}'],
    ])('records %s as malformed without throwing', (_what, report) => {
      expect(parseJunit(xml(report))).toEqual(MALFORMED);
    });

    it('does not hide a failing second root behind an empty first one: the document is malformed', () => {
      // XML 1.0 section 2.1: a document has exactly one root element.
      const report = '<testsuites/><testsuite><testcase name="hidden"><failure/></testcase></testsuite>';
      expect(parseJunit(xml(report))).toEqual(MALFORMED);
    });

    it('records invalid UTF-8 bytes as malformed or parsed, without throwing', () => {
      const bytes = Buffer.concat([xml('<testsuite><testcase name="'), Buffer.from([0xff, 0xfe, 0x00]), xml('"/></testsuite>')]);
      expect(['malformed', 'parsed']).toContain(parseJunit(bytes).status);
    });
  });

  describe('when the report carries an entity-expansion payload (billion laughs)', () => {
    it('does not expand the entities: it is malformed, or counted as written, quickly', () => {
      const entities = ['<!ENTITY lol0 "lol">'];
      for (let i = 1; i <= 9; i++) entities.push(`<!ENTITY lol${i} "${`&lol${i - 1};`.repeat(10)}">`);
      const report = `<?xml version="1.0"?><!DOCTYPE lolz [${entities.join('')}]>
        <testsuite name="&lol9;"><testcase name="&lol9;"><failure message="&lol9;">&lol9;</failure></testcase></testsuite>`;
      const started = process.hrtime.bigint();
      const summary = parseJunit(xml(report));
      const elapsedMs = Number((process.hrtime.bigint() - started) / 1_000_000n);
      expect([MALFORMED, parsed(1, 1, 0, 0)]).toContainEqual(summary);
      expect(elapsedMs).toBeLessThan(1000);
    });

    it('does not let an entity inject test cases', () => {
      const report = `<?xml version="1.0"?><!DOCTYPE t [<!ENTITY cases "<testcase/><testcase/><testcase/>">]>
        <testsuite><testcase name="real"/>&cases;</testsuite>`;
      expect([MALFORMED, parsed(1, 0, 0, 0)]).toContainEqual(parseJunit(xml(report)));
    });
  });

  describe('when the report is over JUNIT_MAX_BYTES', () => {
    it('records it as malformed without parsing it', () => {
      const head = xml('<testsuite><testcase name="a"/>');
      const tail = xml('</testsuite>');
      const padding = Buffer.alloc(JUNIT_MAX_BYTES + 1 - head.length - tail.length, 0x20);
      const report = Buffer.concat([head, padding, tail]);
      expect(report.length).toBe(JUNIT_MAX_BYTES + 1);
      expect(parseJunit(report)).toEqual(MALFORMED);
    });

    it('still parses a report of exactly JUNIT_MAX_BYTES', () => {
      // Padding inside a comment keeps this fast; whitespace between elements costs seconds at 16 MiB.
      const head = xml('<testsuite><testcase name="a"/><!--');
      const tail = xml('--></testsuite>');
      const padding = Buffer.alloc(JUNIT_MAX_BYTES - head.length - tail.length, 0x61);
      const report = Buffer.concat([head, padding, tail]);
      expect(report.length).toBe(JUNIT_MAX_BYTES);
      expect(parseJunit(report)).toEqual(parsed(1, 0, 0, 0));
    });
  });

  describe('when the report starts with a UTF-8 byte-order mark', () => {
    it('parses it like the same report without one', () => {
      const report = Buffer.concat([
        Buffer.from([0xef, 0xbb, 0xbf]),
        xml('<?xml version="1.0" encoding="UTF-8"?><testsuite><testcase name="a"><failure/></testcase></testsuite>'),
      ]);
      expect(parseJunit(report)).toEqual(parsed(1, 1, 0, 0));
    });
  });
});

describe('parseJunit and the declared encoding (a second review: UTF-7 hid a failing testcase in text)', () => {
  const body = '<testsuite name="s" tests="1"><testcase name="a"/>+ADw-testcase name="b"+AD4APA-failure/+AD4APA-/testcase+AD4-</testsuite>';

  it('a report that declares an encoding other than UTF-8 is malformed', () => {
    for (const encoding of ['UTF-7', 'utf-16', 'ISO-8859-1', 'x-whatever']) {
      expect(parseJunit(Buffer.from(`<?xml version="1.0" encoding="${encoding}"?>${body}`)), encoding).toEqual({
        format: 'junit',
        status: 'malformed',
      });
    }
  });

  it('bytes that are not UTF-8 are malformed', () => {
    const bytes = Buffer.concat([
      Buffer.from('<testsuite name="'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('" tests="1"><testcase name="a"/></testsuite>'),
    ]);
    expect(parseJunit(bytes)).toEqual({ format: 'junit', status: 'malformed' });
  });

  it('UTF-8 declared in any usual spelling, or nothing declared, is read', () => {
    const report = '<testsuite name="s" tests="1"><testcase name="a"/></testsuite>';
    for (const declaration of ['<?xml version="1.0" encoding="UTF-8"?>', "<?xml version='1.0' encoding='utf8'?>", '<?xml version="1.0"?>', '']) {
      expect(parseJunit(Buffer.from(`${declaration}${report}`)), declaration).toMatchObject({ status: 'parsed', tests: 1, failures: 0 });
    }
  });
});
