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

/** Why a bundle is not one the runner would write: a member outside the closed schema, or a log leaf that is more than the record. */
export type ClosedBundleProblem = { kind: 'schema'; path: string; message: string } | { kind: 'leaf'; cause?: unknown };

/**
 * The whole bundle as it is about to be written (guardBundle) or as `verify` reads it (verifyBundle): the
 * one closed check both apply, so a gate that trusts `verify` lets out exactly what the runner writes. A
 * closed schema over every member (envelopes of at most one evidence and 32 capsule signatures with keyids
 * that are keyids, canonical base64 within caps, `approvals` empty until approvals exist, the checkpoint
 * note's exact shape), and the log leaf decoded and checked to be the evidence record and nothing else: a
 * record exactly as runner/log/record.ts encodes it (parseRecordLeaf), of kind evidence.signed, with the
 * members RECORD_FIELDS gives that kind, each in its format. Returns undefined when the bundle passes.
 */
export function checkClosedBundle(bundle: unknown): ClosedBundleProblem | undefined {
  const problem = checkSchema(bundleSchema, bundle);
  if (problem) return { kind: 'schema', ...problem };
  let record: LogRecord;
  try {
    record = parseRecordLeaf(Buffer.from((bundle as { log: { leaf: string } }).log.leaf, 'base64'));
  } catch (cause) {
    if (!(cause instanceof LogError)) throw cause;
    return { kind: 'leaf', cause };
  }
  return isEvidenceRecord(record) ? undefined : { kind: 'leaf' };
}

/**
 * The bundle as it is about to be written: checkClosedBundle, refusing with EGRESS_SCHEMA or
 * EGRESS_PROVENANCE. The statement inside was guarded before signing.
 */
export function guardBundle(bundle: unknown): void {
  const problem = checkClosedBundle(bundle);
  if (problem === undefined) return;
  if (problem.kind === 'schema') {
    throw new EvidenceError('EGRESS_SCHEMA', `The bundle does not match the closed outbound schema at ${problem.path}: ${problem.message}.`);
  }
  throw new EvidenceError(
    'EGRESS_PROVENANCE',
    "The bundle's log leaf is not exactly the evidence record.",
    {},
    problem.cause === undefined ? undefined : { cause: problem.cause },
  );
}

/** An evidence.signed record with exactly its members, each in its format (an at, a run id, a digest). */
function isEvidenceRecord(record: LogRecord): boolean {
  if (record.kind !== 'evidence.signed') return false;
  const { required, optional } = RECORD_FIELDS['evidence.signed'];
  const allowed: readonly string[] = [...required, ...optional];
  const members = Object.keys(record.body);
  if (!members.every((member) => allowed.includes(member)) || !required.every((member) => members.includes(member))) return false;
  const { runId, evidenceDigest } = record.body;
  return (
    /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(record.at) &&
    typeof runId === 'string' &&
    /^[0-9a-f-]{36}$/.test(runId) &&
    typeof evidenceDigest === 'string' &&
    /^sha256:[0-9a-f]{64}$/.test(evidenceDigest)
  );
}
