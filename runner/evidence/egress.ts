/**
 * The egress guard (DESIGN.md rule 3, "Nothing raw leaves"). Every outbound document is checked against a
 * closed schema — enums, digests, integers, timestamps — and every remaining string is checked for
 * provenance: it must be a value the signed capsule or the runner's own identity supplied. Nothing that a
 * step printed, a file held or the host environment contained can pass.
 */
import { toCanonicalJson } from '../core/canonical-json.js';
import { JsonError, parseJson } from '../core/json.js';
import { checkSchema } from '../core/schema.js';
import { LogError } from '../log/errors.js';
import { parseRecordLeaf, RECORD_FIELDS, type LogRecord } from '../log/record.js';
import type { Manifest } from '../capsule/manifest.js';
import { EvidenceError } from './errors.js';
import { approvalSchema } from '../policy/approval.js';
import { FINAL_PHASES } from './remediation.js';
import { statementSchema, type Statement } from './statement.js';
import bundleSchema from './bundle.schema.json' with { type: 'json' };
import rejectionSchema from './rejection.schema.json' with { type: 'json' };

export interface EgressContext {
  manifest: Manifest;
  runner: { id: string; keyid: string };
  /** A remediation's evidence: where each of its strings may come from (runner/remediate/machine.ts). */
  remediation?: RemediationEgress;
}

/**
 * The provenance of a remediation member's strings: the target is the signed change's; footprint paths are
 * those of the plan derived from the signed change; surfaces and groups are the signed policy's names;
 * approvers are key names of the trust document.
 */
export interface RemediationEgress {
  paths: ReadonlySet<string>;
  policyNames: ReadonlySet<string>;
  approvers: ReadonlySet<string>;
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
  // Resource names only, and only those the signed capsule needs: never a path or an address of a grant.
  const needs = new Set(context.manifest.needs ?? []);
  for (const name of predicate.run.resources ?? []) provenance(needs.has(name), 'resource name');
  const allowedSubjects = new Set([`capsule/${context.manifest.id}`, ...[...collectPaths].map((path) => `artifact/${path}`)]);
  for (const subject of statement.subject) provenance(allowedSubjects.has(subject.name), 'subject name');
  if (predicate.remediation !== undefined) guardRemediation(predicate.remediation, context, provenance);
}

/** Every string of a remediation member is the signed change's, the signed policy's or the trust document's. */
function guardRemediation(
  remediation: NonNullable<Statement['predicate']['remediation']>,
  context: EgressContext,
  provenance: (ok: boolean, what: string) => void,
): void {
  const egress = context.remediation;
  provenance(egress !== undefined && remediation.target === context.manifest.change?.target, 'change target');
  const { paths, policyNames, approvers } = egress!;
  for (const file of remediation.footprint.files) provenance(paths.has(file.path), 'footprint path');
  for (const surface of [...remediation.footprint.surfaces, ...remediation.footprint.dependents]) provenance(policyNames.has(surface), 'surface');
  for (const rule of remediation.tier.rules) {
    provenance(policyNames.has(rule.surface) && (rule.group === undefined || policyNames.has(rule.group)), 'tier rule');
  }
  for (const requirement of remediation.tier.requirements) provenance(requirement.group === undefined || policyNames.has(requirement.group), 'group');
  for (const approval of remediation.approvals?.counted ?? []) provenance(approvers.has(approval.approver), 'approver');
  const reproductions = new Set(context.manifest.change?.reproductions ?? []);
  // The cited ones are the signed change's; those run again after an apply are the runner's own (digests).
  for (const ref of remediation.reproductions ?? []) provenance(reproductions.has(ref.evidence), 'reproduction');
}

/** Why a bundle is not one the runner would write: a member outside the closed schema, or a log leaf that is more than the record. */
export type ClosedBundleProblem = { kind: 'schema'; path: string; message: string } | { kind: 'leaf'; cause?: unknown };

/**
 * The whole bundle as it is about to be written (guardBundle) or as `verify` reads it (verifyBundle): the
 * one closed check both apply, so a gate that trusts `verify` lets out exactly what the runner writes. A
 * closed schema over every member (envelopes of at most one evidence and 32 capsule signatures with keyids
 * that are keyids, canonical base64 within caps, approvals only in the bundle of a decided change, each once and each an approval statement, the checkpoint
 * note's exact shape), and the log leaf decoded and checked to be the evidence record and nothing else: a
 * record exactly as runner/log/record.ts encodes it (parseRecordLeaf), of kind evidence.signed, with the
 * members RECORD_FIELDS gives that kind, each in its format. Returns undefined when the bundle passes.
 */
export function checkClosedBundle(bundle: unknown): ClosedBundleProblem | undefined {
  const problem = checkSchema(bundleSchema, bundle) ?? approvalsProblem(bundle as { evidence: { payload: string }; approvals: unknown[] });
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
 * Approvals ride only in the final bundle of a change decided on them (phase applied, rolled-back or
 * refused), each once: a proposal or a read-only run's bundle carrying one would let anything signed ride out.
 * Who signed them and whether they count is verifyBundle's question (it has the trust document).
 */
function approvalsProblem(bundle: { evidence: { payload: string }; approvals: unknown[] }): { path: string; message: string } | undefined {
  if (bundle.approvals.length === 0) return undefined;
  let phase: unknown;
  try {
    const statement = parseJson(Buffer.from(bundle.evidence.payload, 'base64')) as { predicate?: { remediation?: { phase?: unknown } } } | null;
    phase = statement?.predicate?.remediation?.phase;
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
  }
  if (!FINAL_PHASES.has(phase as never)) return { path: '/approvals', message: 'only the bundle of a decided change carries approvals' };
  // Each is an approval statement (the closed approval schema), so nothing else signed rides out as one.
  for (const [i, approval] of bundle.approvals.entries()) {
    if (!isApprovalStatement((approval as { payload: string }).payload)) {
      return { path: `/approvals/${i}`, message: 'the payload is not an approval statement' };
    }
  }
  const seen = new Set(bundle.approvals.map((approval) => toCanonicalJson(approval)));
  return seen.size === bundle.approvals.length ? undefined : { path: '/approvals', message: 'an approval is carried twice' };
}

function isApprovalStatement(payload: string): boolean {
  try {
    return checkSchema(approvalSchema, parseJson(Buffer.from(payload, 'base64'))) === undefined;
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    return false;
  }
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

// ---------------------------------------------------------------------------------------------------------
// Rejections (runner/evidence/rejection.ts): digests, codes, ids and counts, nothing else.

const rejectionStatementSchema = { ...rejectionSchema, $ref: '#/definitions/statement' };
const rejectionDocumentSchema = { ...rejectionSchema, $id: `${rejectionSchema.$id}#document`, $ref: '#/definitions/document' };

/**
 * The rejection statement before it is signed: the closed schema (a code in the code format, digests,
 * the capsule id in the manifest's name format, a run id that is a UUID, counts), and the runner identity
 * the runner's own. Throws EGRESS_SCHEMA or EGRESS_PROVENANCE.
 */
export function guardRejectionStatement(statement: unknown, runner: { id: string; keyid: string }): void {
  const problem = checkSchema(rejectionStatementSchema, statement);
  if (problem) {
    throw new EvidenceError('EGRESS_SCHEMA', `The rejection does not match the closed outbound schema at ${problem.path}: ${problem.message}.`);
  }
  const predicate = (statement as { predicate: { runner: { id: string; keyid: string } } }).predicate;
  if (predicate.runner.id !== runner.id || predicate.runner.keyid !== runner.keyid) {
    throw new EvidenceError('EGRESS_PROVENANCE', 'The rejection runner identity is not the runner identity.');
  }
}

/**
 * The whole rejection document as it is about to be queued (guardRejection) or as verifyRejection reads it:
 * the closed schema over every member, and the log leaf decoded and checked to be a capsule.rejected or
 * run.aborted record with exactly its members, each in its format. Undefined when it passes.
 */
export function checkClosedRejection(document: unknown): ClosedBundleProblem | undefined {
  const problem = checkSchema(rejectionDocumentSchema, document);
  if (problem) return { kind: 'schema', ...problem };
  let record: LogRecord;
  try {
    record = parseRecordLeaf(Buffer.from((document as { log: { leaf: string } }).log.leaf, 'base64'));
  } catch (cause) {
    if (!(cause instanceof LogError)) throw cause;
    return { kind: 'leaf', cause };
  }
  return isRejectionRecord(record) ? undefined : { kind: 'leaf' };
}

/** checkClosedRejection, refusing with EGRESS_SCHEMA or EGRESS_PROVENANCE. */
export function guardRejection(document: unknown): void {
  const problem = checkClosedRejection(document);
  if (problem === undefined) return;
  if (problem.kind === 'schema') {
    throw new EvidenceError('EGRESS_SCHEMA', `The rejection does not match the closed outbound schema at ${problem.path}: ${problem.message}.`);
  }
  throw new EvidenceError(
    'EGRESS_PROVENANCE',
    "The rejection's log leaf is not exactly a capsule.rejected, run.aborted or schedule.ended record.",
    {},
    problem.cause === undefined ? undefined : { cause: problem.cause },
  );
}

const CODE = /^[A-Z][A-Z0-9_]{2,63}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const RUN_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const AT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** A capsule.rejected, run.aborted or schedule.ended record with exactly the members RECORD_FIELDS gives it, each in its format. */
function isRejectionRecord(record: LogRecord): boolean {
  if (record.kind !== 'capsule.rejected' && record.kind !== 'run.aborted' && record.kind !== 'schedule.ended') return false;
  const { required, optional } = RECORD_FIELDS[record.kind];
  const allowed: readonly string[] = [...required, ...optional];
  const members = Object.keys(record.body);
  if (!members.every((member) => allowed.includes(member)) || !required.every((member) => members.includes(member))) return false;
  if (!AT.test(record.at)) return false;
  const formats: Record<string, (value: unknown) => boolean> = {
    code: (v) => typeof v === 'string' && CODE.test(v),
    // A schedule ends `expired`, `replaced`, or with a code.
    reason: (v) => typeof v === 'string' && (CODE.test(v) || (record.kind === 'schedule.ended' && (v === 'expired' || v === 'replaced'))),
    runId: (v) => typeof v === 'string' && RUN_ID.test(v),
    capsuleId: (v) => typeof v === 'string' && NAME.test(v),
    manifestDigest: (v) => typeof v === 'string' && DIGEST.test(v),
    fileDigest: (v) => typeof v === 'string' && DIGEST.test(v),
    fileSize: (v) => Number.isSafeInteger(v) && (v as number) >= 0,
  };
  const body = record.body as Record<string, unknown>;
  return members.every((member) => formats[member]?.(body[member]) === true);
}
