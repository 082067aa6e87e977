/**
 * What the routes need from storage, and nothing of how it is kept. The SQLite store (sqlite.ts) implements
 * it; a PostgreSQL store can follow without touching a route, because:
 *   - every method returns a Promise (a network database answers later), though SQLite answers at once;
 *   - every write that must be atomic is one method (publish, put, the witness compare-and-swap), so a
 *     transaction never spans an `await` in a route;
 *   - the witness decision is a pure, synchronous callback the store runs inside its transaction, between
 *     reading the held checkpoint (SELECT ... FOR UPDATE in PostgreSQL) and writing the new one;
 *   - idempotence is by primary key (INSERT ... ON CONFLICT DO NOTHING, in both dialects).
 * Times are RFC 3339 strings in UTC with milliseconds (they sort as text); digests are `sha256:HEX`.
 * The coordinator only ever holds what verified documents carry: capsule files, bundles, rejections,
 * checkpoints and the numbers of status reports. No row holds raw data, because none is ever received.
 */
import type { RunnerStatusReport, WorkItem } from '../../../runner/protocol/wire.js';

/**
 * 'conflict': the runner already sent another document (other bytes) answering the same record of its log.
 * A runner answers each record once (the outbox keeps the bytes it first built), so a second, different
 * document for one log index is either a re-signed duplicate or two logs under one key; it is not stored.
 */
export type StoredAnswer = 'created' | 'existing' | 'conflict';

/** Fork evidence kept per log (distinct submissions); one is enough to prove a fork. */
export const FORK_EVIDENCE_PER_LOG = 16;

export interface NewCapsule {
  /** `sha256:HEX` of the capsule file bytes (its address). */
  digest: string;
  bytes: Buffer;
  capsuleId: string;
  manifestDigest: string;
  kind: string;
  expiresAt: string;
  targetRunners: readonly string[];
  targetLabels: readonly string[];
  publishedAt: string;
}

export interface PublishedCapsule {
  cursor: number;
  stored: 'created' | 'existing';
}

export interface NewBundle {
  digest: string;
  bytes: Buffer;
  runner: string;
  capsuleId: string;
  manifestDigest: string;
  verdict: string;
  evidenceDigest: string;
  logIndex: number;
  receivedAt: string;
}

export interface BundleEntry {
  digest: string;
  runner: string;
  capsuleId: string;
  manifestDigest: string;
  verdict: string;
  receivedAt: string;
}

export interface BundleFilter {
  runner?: string;
  /** A capsule id, or a `sha256:HEX` manifest digest. */
  capsule?: string;
  verdict?: string;
  /** Received at or after this time (RFC 3339). */
  since?: string;
  limit: number;
}

export interface NewRejection {
  digest: string;
  bytes: Buffer;
  runner: string;
  stage: string;
  code: string;
  capsuleId: string | null;
  manifestDigest: string | null;
  fileDigest: string | null;
  logIndex: number;
  receivedAt: string;
}

export interface RejectionEntry {
  digest: string;
  runner: string;
  stage: string;
  code: string;
  capsuleId: string | null;
  manifestDigest: string | null;
  fileDigest: string | null;
  receivedAt: string;
}

export interface RejectionFilter {
  runner?: string;
  /** A capsule id, or a `sha256:HEX` manifest or file digest. */
  capsule?: string;
  limit: number;
}

export interface NewApproval {
  /** The approval digest (plan: SHA-256 of the canonical JSON of the verified envelope), which is also the SHA-256 of `bytes`. */
  digest: string;
  /** The canonical JSON of the verified envelope: what runners are served, byte for byte. */
  bytes: Buffer;
  /** The evidence digest of the proposal bundle the approval answers. */
  proposal: string;
  /** The runner that made the proposal (the stored bundle's, never the approval's word). */
  runner: string;
  change: string;
  target: string;
  approver: string;
  keyid: string;
  decision: 'approve' | 'reject';
  signedAt: string;
  notAfter: string;
  receivedAt: string;
}

export interface ApprovalEntry {
  cursor: number;
  digest: string;
  proposal: string;
  runner: string;
  change: string;
  target: string;
  approver: string;
  decision: 'approve' | 'reject';
  signedAt: string;
  notAfter: string;
  receivedAt: string;
  /** Bytes of the approval as served. */
  size: number;
}

export interface ApprovalFilter {
  proposal?: string;
  runner?: string;
  limit: number;
}

/**
 * 'full': the proposal already has MAX_APPROVALS_PER_PROPOSAL approvals here (nothing stored). Each one is
 * signed by an approver key, but one approver re-signing in a loop could otherwise fill the disk.
 */
export type StoredApproval = { stored: 'created' | 'existing'; cursor: number; runner: string } | { stored: 'full' } | { stored: 'person-full' };

/** Approvals kept per proposal; a bundle carries at most 32, and a person counts once. */
export const MAX_APPROVALS_PER_PROPOSAL = 64;

/**
 * Approvals kept per person for one proposal ('person-full' past it): an approve, a reject, a re-signing
 * with a later expiry. Without it one approver re-signing could take all MAX_APPROVALS_PER_PROPOSAL places
 * and keep everyone else's approvals of that proposal out.
 */
export const MAX_APPROVALS_PER_PERSON = 4;

/** What an approval upload needs to know of the stored proposal bundle. */
export interface StoredProposal {
  runner: string;
  bytes: Buffer;
}

export interface RunnerEntry {
  id: string;
  keyid: string;
  lastSeen: string;
  status: (RunnerStatusReport & { reportedAt: string }) | null;
  forks: number;
}

export interface HeldCheckpoint {
  origin: string;
  runner: string;
  size: number;
  rootHash: Buffer;
  note: string;
  cosignedAt: string;
}

/** What the witness decided to write, inside the compare-and-swap. */
export type WitnessWrite =
  | { kind: 'advance'; size: number; rootHash: Buffer; note: string; at: string }
  | { kind: 'fork'; reason: string; submitted: Buffer; at: string }
  | { kind: 'none' };

export interface CoordinatorStore {
  /** Stores a verified capsule once by digest, with its targets; the cursor is its place in the feed. */
  publishCapsule(capsule: NewCapsule): Promise<PublishedCapsule>;
  capsuleBytes(digest: string): Promise<Buffer | undefined>;
  /** The cursor of the last capsule published (0 when none): no feed cursor this store handed out is larger. */
  lastCursor(): Promise<number>;
  /** Capsules after `after` addressed to this runner by id, or by a label it last reported, in cursor order. */
  workFor(runner: string, after: number, limit: number): Promise<WorkItem[]>;

  /** Stores a verified bundle once by digest, in one transaction: 'existing' when it was already there. */
  putBundle(bundle: NewBundle): Promise<StoredAnswer>;
  bundleRunner(digest: string): Promise<string | undefined>;
  bundleBytes(digest: string): Promise<Buffer | undefined>;
  listBundles(filter: BundleFilter): Promise<BundleEntry[]>;

  putRejection(rejection: NewRejection): Promise<StoredAnswer>;
  rejectionRunner(digest: string): Promise<string | undefined>;
  rejectionBytes(digest: string): Promise<Buffer | undefined>;
  listRejections(filter: RejectionFilter): Promise<RejectionEntry[]>;

  /** The bundle whose evidence digest (SHA-256 of its signed statement) is this, with its runner. */
  bundleByEvidence(evidenceDigest: string): Promise<StoredProposal | undefined>;
  /** The bytes of the bundles `runner` sent for the capsule of this manifest digest (at most `limit`). */
  bundlesOfCapsule(runner: string, manifestDigest: string, limit: number): Promise<Buffer[]>;

  /**
   * Stores a verified approval once by digest, in one transaction: 'existing' (with the first cursor) when it
   * was already there, 'full' when its proposal has MAX_APPROVALS_PER_PROPOSAL, 'person-full' when it has
   * MAX_APPROVALS_PER_PERSON of this approver. The cursor is its place in
   * the approvals feed, shared by all runners (each sees only those of its own proposals).
   */
  putApproval(approval: NewApproval): Promise<StoredApproval>;
  approval(digest: string): Promise<{ cursor: number; runner: string; bytes: Buffer } | undefined>;
  /** The cursor of the last approval stored (0 when none). */
  lastApprovalCursor(): Promise<number>;
  /** Approvals after `after` of proposals `runner` made, in cursor order. */
  approvalsFor(runner: string, after: number, limit: number): Promise<ApprovalEntry[]>;
  listApprovals(filter: ApprovalFilter): Promise<ApprovalEntry[]>;

  /**
   * Admits one signed request, in one transaction: records its nonce until the signature expires (seconds
   * since the epoch) and marks the runner seen (its row is made on first contact). False, and nothing
   * written, when the nonce was seen before and has not expired. Prunes nonces whose time has passed.
   */
  admitRequest(request: { keyid: string; nonce: string; expiresAt: number; nowSeconds: number; runner: string; at: string }): Promise<boolean>;

  saveStatus(id: string, keyid: string, report: RunnerStatusReport, at: string): Promise<void>;
  runnerLabels(id: string): Promise<string[]>;
  runners(): Promise<RunnerEntry[]>;
  /** Witnessed size per runner id, for the fleet view (the largest cosigned size over its origins). */
  witnessedSizes(): Promise<Map<string, number>>;

  /**
   * The witness compare-and-swap: reads the checkpoint held for `origin`, calls `decide` (pure, synchronous),
   * and writes what it returns, all in one transaction. Two submissions for one log never both advance it.
   */
  witness<T>(origin: string, runner: string, decide: (held: HeldCheckpoint | undefined) => { write: WitnessWrite; value: T }): Promise<T>;

  close(): void;
}
