/** The result parsers the runner knows, by the name a manifest's collect rule gives (`as`). */
import { junitParser, type JunitSummary } from './junit.js';
import type { ResultParser } from './parser.js';

export type { ResultParser };

/** Every summary a parser can produce; the evidence predicate carries one per parsed artifact. */
export type ResultSummary = JunitSummary;

export const RESULT_PARSERS = {
  junit: junitParser,
} as const satisfies Record<string, ResultParser<ResultSummary>>;

export type ParserName = keyof typeof RESULT_PARSERS;

/** The parser for a collect rule's `as`, or undefined for `file` (digest only). */
export function parserFor(name: string): ResultParser<ResultSummary> | undefined {
  return Object.hasOwn(RESULT_PARSERS, name) ? RESULT_PARSERS[name as ParserName] : undefined;
}
