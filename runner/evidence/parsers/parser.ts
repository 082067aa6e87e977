/**
 * Result parsers are plug-ins, after go-witness's attestors: one file each, with the name a manifest's
 * `collect[].as` uses, the versioned shape of the summary it produces, a byte cap, and a pure `parse`. A
 * parser never throws on what a step wrote: a report it cannot read is a `malformed` summary. Adding one
 * (SARIF) is one file plus a line in index.ts, its name in the manifest schema's collect `as` enum, and the
 * summary shape in predicate.schema.json.
 */
export interface ResultParser<Summary extends { format: string; status: string }> {
  /** The `as` value in a manifest's collect rule, and the summary's `format`. */
  readonly name: Summary['format'];
  /** The summary's shape and version, for readers of the evidence. */
  readonly summaryType: string;
  /** Reports larger than this are summarised as malformed without being parsed, in bytes. */
  readonly maxBytes: number;
  parse(bytes: Uint8Array): Summary;
  /** Whether a parsed summary shows tests that did not pass (the run's verdict is then `fail`). */
  failed(summary: Summary): boolean;
}
