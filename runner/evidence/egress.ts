/**
 * The egress guard (DESIGN.md rule 3, "Nothing raw leaves"). Every outbound document is checked against a
 * closed schema — enums, digests, integers, timestamps — and every remaining string is checked for
 * provenance: it must be a value the signed capsule or the runner's own identity supplied. Nothing that a
 * step printed, a file held or the host environment contained can pass.
 */
import { checkSchema } from '../core/schema.js';
import { LogError } from '../log/errors.js';
import { parseRecordLeaf, RECORD_FIELDS, type LogRecord } from '../log/record.js';
import type { Manifest } from '../capsule/manifest.js';
import { EvidenceError } from './errors.js';
import { statementSchema, type Statement } from './statement.js';
import bundleSchema from './bundle.schema.json' with { type: 'json' };

export interface EgressContext {
  manifest: Manifest;
  runner: { id: string; keyid: string };
}

export function guardStatement(statement: Statement, context: EgressContext): void {
  const problem = checkSchema(statementSchema, statement);
  if (problem) {
    throw new EvidenceError('EGRESS_SCHEMA', `The evidence does not match the closed outbound schema at ${problem.path}: ${problem.message}.`);
  }
  const { predicate } = statement;
  const stepNames = new Set(context.manifest.steps.map((step) => step.name));
  const collectPaths = new Set(context.manifest.collect.map((rule) => rule.path));
  const provenance = (ok: boolean, what: string) => {
    if (!ok) throw new EvidenceError('EGRESS_PROVENANCE', `The evidence ${what} did not come from the signed capsule or the runner identity.`);
  };
  provenance(predicate.runner.id === context.runner.id && predicate.runner.keyid === context.runner.keyid, 'runner identity');
  provenance(predicate.capsule.id === context.manifest.id && predicate.capsule.kind === context.manifest.kind, 'capsule identity');
  for (const step of predicate.steps) provenance(stepNames.has(step.name), 'step name');
  for (const artifact of predicate.artifacts) provenance(collectPaths.has(artifact.path), 'artifact path');
  const allowedSubjects = new Set([`capsule/${context.manifest.id}`, ...[...collectPaths].map((path) => `artifact/${path}`)]);
  for (const subject of statement.subject) provenance(allowedSubjects.has(subject.name), 'subject name');
}

/**
 * The whole bundle as it is about to be written: a closed schema over every member (envelopes rebuilt from
 * verified signatures, canonical base64, the checkpoint note's exact shape), and the log leaf decoded and
 * checked to be the evidence record and nothing else: a record exactly as runner/log/record.ts encodes it
 * (parseRecordLeaf), of kind evidence.signed, with the members RECORD_FIELDS gives that kind, each in its
 * format. The statement inside was guarded before signing.
 */
export function guardBundle(bundle: unknown): void {
  const problem = checkSchema(bundleSchema, bundle);
  if (problem) {
    throw new EvidenceError('EGRESS_SCHEMA', `The bundle does not match the closed outbound schema at ${problem.path}: ${problem.message}.`);
  }
  const notTheRecord = (cause?: unknown) =>
    new EvidenceError(
      'EGRESS_PROVENANCE',
      "The bundle's log leaf is not exactly the evidence record.",
      {},
      cause === undefined ? undefined : { cause },
    );
  let record: LogRecord;
  try {
    record = parseRecordLeaf(Buffer.from((bundle as { log: { leaf: string } }).log.leaf, 'base64'));
  } catch (cause) {
    if (!(cause instanceof LogError)) throw cause;
    throw notTheRecord(cause);
  }
  if (record.kind !== 'evidence.signed') throw notTheRecord();
  const { required, optional } = RECORD_FIELDS['evidence.signed'];
  const allowed: readonly string[] = [...required, ...optional];
  const members = Object.keys(record.body);
  if (!members.every((member) => allowed.includes(member)) || !required.every((member) => members.includes(member))) throw notTheRecord();
  const { runId, evidenceDigest } = record.body;
  const ok =
    /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(record.at) &&
    typeof runId === 'string' &&
    /^[0-9a-f-]{36}$/.test(runId) &&
    typeof evidenceDigest === 'string' &&
    /^sha256:[0-9a-f]{64}$/.test(evidenceDigest);
  if (!ok) throw notTheRecord();
}
