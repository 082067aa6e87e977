/** The evidence statement: in-toto Statement v1 with the edge-runner evidence predicate v1. */
import type { CapsuleKind } from '../trust/trust.js';
import type { CollectParser } from '../capsule/manifest.js';
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
  policy: { decision: 'allowed'; rule: 'read-only-kind'; trustVersion: number };
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
