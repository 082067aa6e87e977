/** The result parsers the runner knows, by the name a manifest's collect rule gives (`as`). */
import { junitParser, type JunitSummary } from './junit.js';
import type { ResultParser } from './parser.js';
import { tapParser, type TapSummary } from './tap.js';

export type { ResultParser };

/** Every summary a parser can produce; the evidence predicate carries one per parsed artifact. */
export type ResultSummary = JunitSummary | TapSummary;

export const RESULT_PARSERS = {
  junit: junitParser,
  tap: tapParser,
} as const satisfies Record<string, ResultParser<ResultSummary>>;

export type ParserName = keyof typeof RESULT_PARSERS;

/** The parser for a collect rule's `as`, or undefined for `file` (digest only). */
export function parserFor(name: string): ResultParser<ResultSummary> | undefined {
  return Object.hasOwn(RESULT_PARSERS, name) ? RESULT_PARSERS[name as ParserName] : undefined;
}

/** Whether a summary shows tests that did not pass, asked of the parser that made it. */
export function summaryFailed(summary: ResultSummary): boolean {
  return parserFor(summary.format)?.failed(summary) ?? true;
}
