/** The evidence statement: in-toto Statement v1 with the edge-runner evidence predicate v1. */
import type { CapsuleKind } from '../trust/trust.js';
import type { CollectParser } from '../capsule/manifest.js';
import type { Footprint, Tier } from '../policy/types.js';
import { summaryFailed, type ResultSummary } from './parsers/index.js';
import statementSchema from './predicate.schema.json' with { type: 'json' };

export { statementSchema };

export const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
export const EVIDENCE_PREDICATE_TYPE = 'https://edge-runner.dev/evidence/v1';
export const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';

export type Verdict = 'pass' | 'fail' | 'error';
export type IsolationUsed = 'none' | 'bwrap';
export type StepStatus = 'succeeded' | 'failed' | 'timed-out' | 'spawn-failed' | 'skipped';
export type LimitReason = 'timeout' | 'cpu-limit' | 'memory-limit' | 'process-limit' | 'file-limit' | 'output-limit';
/**
 * What bounded a step's memory as a whole: its own memory cgroup (v2 charges everything, socket buffers
 * included; v1 charges TCP buffers under a limit of their own and never UDP ones), or per-process rlimits.
 */
export type MemoryBound = 'cgroup-v2' | 'cgroup-v1' | 'rlimit';

/** How the steps were confined, beyond the isolation mode: configured names and enumerated values only. */
export interface SandboxUsed {
  /** bwrap only: the system folders the runner's configuration shows to steps, by name (its own list). */
  systemFolders?: string[];
  memoryBound: MemoryBound;
  /** bwrap only: the seccomp filter the steps ran under, by version (runner/exec/seccomp.ts says what it refuses). */
  syscallFilter?: string;
}

export interface StreamRecord {
  digest: string;
  size: number;
  totalSize: number;
  truncated: boolean;
}

export interface StepRecord {
  name: string;
  status: StepStatus;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  durationMs: number;
  spawnFailure?: 'not-found' | 'permission-denied' | 'spawn-failed';
  /** A limit the runner knows ended the step: its timer, SIGXCPU it saw, an OOM kill in the step's cgroup. */
  limit?: LimitReason;
  /** A limit that only the step's exit code or its stderr points at: a guess, never a fact. */
  limitInferred?: LimitReason;
  stdout?: StreamRecord;
  stderr?: StreamRecord;
}

export type ArtifactStatus = 'collected' | 'missing' | 'escaped' | 'not-a-file' | 'too-large';

export interface ArtifactRecord {
  path: string;
  as: CollectParser;
  status: ArtifactStatus;
  digest?: string;
  size?: number;
  summary?: ResultSummary;
}

export interface EvidencePredicate {
  runner: { id: string; keyid: string; version: string };
  capsule: { id: string; kind: CapsuleKind; digest: string; signers: string[] };
  run: {
    id: string;
    startedAt: string;
    endedAt: string;
    isolation: IsolationUsed;
    sandbox?: SandboxUsed;
    verdict: Verdict;
    /** A recurring capsule's run: the slot it fired for (RFC 3339 UTC). */
    scheduledFor?: string;
    /** The operator-granted resources bound into the steps, by name only (never a path or an address). */
    resources?: string[];
  };
  steps: StepRecord[];
  artifacts: ArtifactRecord[];
  /**
   * `read-only-kind`: reproduce and validate. `staged-change`: a remediate proposal (its steps ran on the
   * staged copy). `approved-change` / `autonomous-change`: the final bundle of a change applied (or rolled
   * back, or refused) on approvals, or with none because the policy let it.
   */
  policy: { decision: 'allowed'; rule: 'read-only-kind' | 'staged-change' | 'approved-change' | 'autonomous-change'; trustVersion: number };
  /** A remediate capsule's run: its proposal, or what became of the change (runner/remediate/). */
  remediation?: RemediationEvidence;
}

/** A reproduction cited by a remediate capsule: a bundle of this runner's own log, by evidence digest. */
export interface ReproductionRef {
  evidence: string;
  capsule: string;
  verdict: Verdict;
  runId?: string;
}

/** The operator's health check after an apply, as the step records are: codes and durations only. */
export interface HealthCheckRecord {
  status: 'succeeded' | 'failed' | 'timed-out' | 'spawn-failed';
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  durationMs: number;
}

/**
 * `proposed`: the steps ran against the staged copy; an approver decides on this. `applied`: the change is
 * on the real target and passed the post-apply validation (the steps, against the applied target) and the
 * health check. `rolled-back`: it was applied and undone (`outcome.code` says why). `refused`: never applied.
 */
export interface RemediationEvidence {
  phase: 'proposed' | 'applied' | 'rolled-back' | 'refused';
  target: string;
  /** The change digest (runner/policy/change-digest.ts): what approvals are bound to. */
  change: string;
  preState: string;
  postState: string;
  /** SHA-256 of the canonical JSON of the trust document's policy the tier was derived from. */
  policy: string;
  footprint: Footprint;
  tier: Tier;
  /** The reproductions the capsule cited, as this runner's log has them. */
  reproductions?: ReproductionRef[];
  /** Final phases: the proposal's evidence digest. */
  proposal?: string;
  /** Final phases: the time approvals were counted at (the `change.applying` or `change.refused` record's `at`). */
  decidedAt?: string;
  /** Final phases: the approvals counted (the bundle carries their envelopes), or none because none were required. */
  approvals?: { counted: Array<{ digest: string; approver: string }>; autonomous: boolean };
  /** Final phases: the target's digest at the end, the code of a rollback or refusal, the checks after apply. */
  outcome?: { code?: string; targetDigest: string; healthCheck?: HealthCheckRecord; reproductions?: ReproductionRef[] };
}

export interface Statement {
  _type: typeof STATEMENT_TYPE;
  subject: Array<{ name: string; digest: { sha256: string } }>;
  predicateType: typeof EVIDENCE_PREDICATE_TYPE;
  predicate: EvidencePredicate;
}

/** Subjects: the capsule (digest of the verified manifest bytes) and every collected artifact. */
export function buildStatement(predicate: EvidencePredicate): Statement {
  const hex = (ref: string) => ref.slice('sha256:'.length);
  const subject = [
    { name: `capsule/${predicate.capsule.id}`, digest: { sha256: hex(predicate.capsule.digest) } },
    ...predicate.artifacts
      .filter((artifact) => artifact.status === 'collected' && artifact.digest)
      .map((artifact) => ({ name: `artifact/${artifact.path}`, digest: { sha256: hex(artifact.digest!) } })),
  ];
  return { _type: STATEMENT_TYPE, subject, predicateType: EVIDENCE_PREDICATE_TYPE, predicate };
}

/** The verdict of a run, from its steps and parsed artifacts. */
export function decideVerdict(steps: readonly StepRecord[], artifacts: readonly ArtifactRecord[], continueOnFailure: ReadonlySet<string>): Verdict {
  if (steps.some((step) => step.status === 'spawn-failed')) return 'error';
  if (artifacts.some((a) => a.status !== 'collected' || a.summary?.status === 'malformed')) return 'error';
  const failedStep = steps.some((step) => (step.status === 'failed' || step.status === 'timed-out') && !continueOnFailure.has(step.name));
  const failedTests = artifacts.some((a) => a.summary?.status === 'parsed' && summaryFailed(a.summary));
  return failedStep || failedTests ? 'fail' : 'pass';
}
