/**
 * The runner's store: the only module that opens SQLite, one facade over a module per table (records and
 * the Merkle tree over them, nonces, runs, checkpoints; outbox, schedules, approvals and changes join here).
 * Every decision the runner makes is a record, appended in the same transaction as the state change it
 * describes and before that decision takes effect ("no record, no run"). No database handle leaves this
 * folder; rows come out as typed values.
 */
import { DEFAULT_CONFIG } from '../config/config.js';
import { existsSync } from 'node:fs';
import { encodeRecordLeaf, type RecordBodies, type RecordKind } from '../log/record.js';
import { sha256Hex } from '../core/digest.js';
import { APPROVALS_SCHEMA_SQL, ApprovalTable, type ApprovalRow, type ApprovalSource } from './approvals.js';
import { ChangeTable, CHANGES_SCHEMA_SQL, type ChangeRow, type ChangeState, type ChangeUpdate, type NewChange } from './changes.js';
import { CheckpointTable, CHECKPOINTS_SCHEMA_SQL, type StoredCheckpoint } from './checkpoints.js';
import { COSIGNATURES_SCHEMA_SQL, CosignatureTable, type StoredCosignature } from './cosignatures.js';
import { FEED_CURSOR_SCHEMA_SQL, FeedCursorTable } from './feed.js';
import { OUTBOX_SCHEMA_SQL, OutboxTable, type OutboxKind, type OutboxRow, type OutboxStats } from './outbox.js';
import { StoreError } from './errors.js';
import { headPathOf, LOG_HEAD_SQL, missingHead, readLogHead, recordedHeadSize, recordHeadSize, verifyLogHead, writeLogHead } from './head.js';
import { verifyStoreIntegrity } from './integrity.js';
import { MerkleTable } from './merkle.js';
import { NONCES_SCHEMA_SQL, NonceTable } from './nonces.js';
import { RecordTable, RECORDS_SCHEMA_SQL, type StoredRecord } from './records.js';
import { currentProcess, isProcessAlive, type ProcessIdentity } from '../state/process.js';
import { RunTable, RUNS_OWNER_SQL, RUNS_SCHEMA_SQL, type RunRow, type RunStatus } from './runs.js';
import { SCHEDULES_SCHEMA_SQL, ScheduleTable, type ScheduleRow } from './schedules.js';
import { SPOOL_INBOX_SCHEMA_SQL, SpoolTable } from './spool.js';
import { RECORD_ERRORS_INDEX_SQL } from './status.js';
import { SqliteDatabase } from './sqlite.js';
import { buildMerkleNodesV1, MERKLE_NODES_V1_SQL, moveTreeIntoRecords } from './tree-migrations.js';

export type { OutboxKind, OutboxRow, OutboxStats, ProcessIdentity, RunRow, RunStatus, StoredCheckpoint, StoredCosignature, StoredRecord };
export type { ScheduleRow };
export type { ApprovalRow, ApprovalSource, ChangeRow, ChangeState, ChangeUpdate, NewChange };

/** The records that move a change's state machine (runner/remediate/machine.ts). */
export type ChangeRecordKind = Extract<RecordKind, `change.${string}`>;

/** Records that answer for a capsule on their own: each gets an outbox row (a rejection) in its transaction. */
const REJECTION_KINDS: ReadonlySet<RecordKind> = new Set(['capsule.rejected', 'run.aborted']);

/** What sealing a run's evidence gives the store: the bundle's bytes and the checkpoint its log proof is under. */
export interface SealedBundle {
  bundle: Buffer;
  /** Signed for the log as it is with the evidence record: kept last, after the bundle's outbox row. */
  checkpoint: { size: number; note: string };
}
export { currentProcess };

export interface StoreOptions {
  /** How long a write waits for another process's lock before failing, in milliseconds. */
  busyTimeoutMs?: number;
  /** Create the database when it is missing (init only). A missing database is otherwise an error: a
   * silently recreated one would forget every nonce and restart the log at leaf 0. */
  create?: boolean;
  /** Clock for record timestamps; injected by tests. */
  now?: () => Date;
}

/**
 * Schema migrations; the schema version is SQLite's user_version, and every table name carries its own.
 * Each step runs in one transaction. A step is history: it says what that version did, in that version's
 * terms, so a database of any earlier version arrives at the same schema as a new one.
 */
const MIGRATIONS: readonly { sql?: string; after?: (db: SqliteDatabase) => void }[] = [
  { sql: `${RECORDS_SCHEMA_SQL}\n${NONCES_SCHEMA_SQL}\n${RUNS_SCHEMA_SQL}` },
  // 2: the Merkle log over records_v1 (leaf i = records_v1.leaf of seq i) and its signed checkpoints;
  // records written before the log existed become its first leaves, in order.
  { sql: `${MERKLE_NODES_V1_SQL}\n${CHECKPOINTS_SCHEMA_SQL}`, after: buildMerkleNodesV1 },
  // 3: which process owns a running run.
  { sql: RUNS_OWNER_SQL },
  // 4: no index on records_v1.run_id: nothing reads records by run (runs_v1 does), and each index is one
  // more page written by every durable commit.
  { sql: 'DROP INDEX IF EXISTS records_v1_run;' },
  // 5: the tree's hashes move into the records' rows (records_v1.tree), copied from merkle_nodes_v1, which
  // goes: appending a record is one row insert, not three.
  { after: moveTreeIntoRecords },
  // 6: the size of the log's high-water mark this database last wrote beside itself (runner/store/head.ts).
  { sql: LOG_HEAD_SQL },
  // 7: the coordinator link: the outbox (what is owed to the coordinator), the work feed's cursor, and the
  // cosignatures witnesses returned.
  { sql: `${OUTBOX_SCHEMA_SQL}\n${FEED_CURSOR_SCHEMA_SQL}\n${COSIGNATURES_SCHEMA_SQL}` },
  // 8: operations: recurring capsules and how far each fired; the spool folder's decided capsule files; the
  // error records indexed for status (a partial index: only a record of an error kind writes to it).
  { sql: `${SCHEDULES_SCHEMA_SQL}\n${SPOOL_INBOX_SCHEMA_SQL}\n${RECORD_ERRORS_INDEX_SQL}` },
  // 9: governed remediation: the changes proposed and where each is, and the approvals given for them.
  { sql: `${CHANGES_SCHEMA_SQL}\n${APPROVALS_SCHEMA_SQL}` },
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export class Store {
  /** The RFC 6962 tree whose leaves are the records; each record's row holds the hashes its leaf completes. */
  readonly merkle: MerkleTable;
  private readonly db: SqliteDatabase;
  /** runner/store/head.ts: the latest signed checkpoint's size and root, beside the database. */
  private readonly headPath: string;
  private readonly recordTable: RecordTable;
  private readonly nonces: NonceTable;
  private readonly runs: RunTable;
  private readonly checkpointTable: CheckpointTable;
  private readonly outbox: OutboxTable;
  private readonly feed: FeedCursorTable;
  private readonly cosignatureTable: CosignatureTable;
  private readonly scheduleTable: ScheduleTable;
  private readonly spoolTable: SpoolTable;
  private readonly changeTable: ChangeTable;
  private readonly approvalTable: ApprovalTable;
  /** The time of a record, as its `at`. */
  private readonly timestamp: () => string;

  private constructor(db: SqliteDatabase, path: string, options: StoreOptions) {
    this.db = db;
    this.headPath = headPathOf(path);
    const now = options.now;
    this.timestamp = now === undefined ? isoNow : () => now().toISOString();
    this.merkle = new MerkleTable(db, 'records');
    this.recordTable = new RecordTable(db);
    this.nonces = new NonceTable(db);
    this.runs = new RunTable(db);
    this.checkpointTable = new CheckpointTable(db);
    this.outbox = new OutboxTable(db);
    this.feed = new FeedCursorTable(db);
    this.cosignatureTable = new CosignatureTable(db);
    this.scheduleTable = new ScheduleTable(db);
    this.spoolTable = new SpoolTable(db);
    this.changeTable = new ChangeTable(db);
    this.approvalTable = new ApprovalTable(db);
  }

  static open(path: string, options: StoreOptions = {}): Store {
    if (!options.create && !existsSync(path)) {
      throw new StoreError(
        'STORE_OPEN_FAILED',
        `The runner database ${path} is missing; it is never recreated silently (that would forget every nonce and restart the log).`,
        { path },
      );
    }
    let db: SqliteDatabase;
    try {
      db = SqliteDatabase.open(path, { busyTimeoutMs: options.busyTimeoutMs ?? DEFAULT_CONFIG.store.busyTimeoutMs });
    } catch (cause) {
      throw new StoreError('STORE_OPEN_FAILED', `The runner database at ${path} cannot be opened.`, { path }, { cause });
    }
    try {
      if (!options.create && db.pragmaNumber('user_version') === 0) {
        // An empty file where the database was (truncated, or replaced): migrating it would be recreating it.
        throw new StoreError(
          'STORE_OPEN_FAILED',
          `The runner database ${path} is empty; it is never recreated silently (that would forget every nonce and restart the log).`,
          { path },
        );
      }
      migrate(db);
      verifyStoreIntegrity(db, path);
      const store = new Store(db, path, options);
      store.verifyHead();
      return store;
    } catch (err) {
      db.close();
      if (err instanceof StoreError) throw err;
      throw new StoreError('STORE_OPEN_FAILED', `The runner database at ${path} cannot be opened.`, { path }, { cause: err });
    }
  }

  close(): void {
    this.db.close();
  }

  /** Runs `fn` in one IMMEDIATE transaction (joining the open one, if any); SQLite failures become STORE_WRITE_FAILED. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn);
  }

  /** Runs `fn` over one consistent snapshot of the database (reads only; writers are not blocked). */
  snapshot<T>(fn: () => T): T {
    return this.db.snapshot(fn);
  }

  /** Appends one record, which is one leaf of the log, in one transaction (the caller's, when there is one). */
  appendRecord<K extends RecordKind>(kind: K, body: RecordBodies[K], runId?: string): StoredRecord {
    return this.db.transaction(() => {
      const seq = this.merkle.nextIndex();
      const at = this.timestamp();
      let leaf: Buffer;
      try {
        leaf = encodeRecordLeaf(kind, body, seq, at);
      } catch (cause) {
        throw new StoreError('STORE_WRITE_FAILED', 'The record cannot be encoded as a log leaf, so it is not written.', {}, { cause });
      }
      const record: StoredRecord = { seq, kind, at, leaf };
      // One row: the record and the tree hashes its leaf completes. If it cannot be written, neither is.
      this.merkle.appendRow(leaf, (_index, tree) => this.recordTable.insert(record, runId, tree), seq);
      // A rejection owes the coordinator an answer from the moment it is a record; its document is made
      // when it is first sent (runner/agent/answers.ts).
      if (REJECTION_KINDS.has(kind)) this.outbox.insert('rejection', seq, runId ?? runIdOf(body), undefined, at);
      return record;
    });
  }

  /** One record by its index in the log. */
  record(seq: number): StoredRecord | undefined {
    for (const record of this.recordTable.from(seq, 1)) return record.seq === seq ? record : undefined;
    return undefined;
  }

  hasSeen(capsuleId: string, nonce: string): boolean {
    return this.nonces.has(capsuleId, nonce);
  }

  /**
   * Records the acceptance, nonce included, and burns the id+nonce in one transaction; a concurrent
   * duplicate loses. The record carries the nonce so that the log itself shows a replay the table missed.
   */
  acceptCapsule(nonce: string, body: Omit<RecordBodies['capsule.accepted'], 'nonce'>): StoredRecord {
    return this.db.transaction(() => {
      if (this.nonces.has(body.capsuleId, nonce)) {
        throw new StoreError('STORE_REPLAY', `The capsule ${body.capsuleId} with this nonce was already accepted.`, { capsuleId: body.capsuleId });
      }
      const record = this.appendRecord('capsule.accepted', { ...body, nonce });
      this.nonces.burn(body.capsuleId, nonce, record.seq);
      return record;
    });
  }

  startRun(body: RecordBodies['run.started'], owner: ProcessIdentity | undefined = currentProcess()): StoredRecord {
    return this.db.transaction(() => {
      const record = this.appendRecord('run.started', body, body.runId);
      this.runs.insert({ runId: body.runId, capsuleId: body.capsuleId, manifestDigest: body.manifestDigest, startedAt: record.at, owner });
      return record;
    });
  }

  finishRun(body: RecordBodies['run.finished']): StoredRecord {
    return this.endRun('run.finished', body, 'finished', body.verdict);
  }

  abortRun(body: RecordBodies['run.aborted']): StoredRecord {
    return this.endRun('run.aborted', body, 'aborted', null);
  }

  private endRun<K extends 'run.finished' | 'run.aborted'>(
    kind: K,
    body: RecordBodies[K],
    status: 'finished' | 'aborted',
    verdict: string | null,
  ): StoredRecord {
    return this.db.transaction(() => {
      const record = this.appendRecord(kind, body, body.runId);
      // Only a run still running can end, once; anything else rolls the record back.
      if (!this.runs.finish(body.runId, status, verdict, record.at)) {
        throw new StoreError('STORE_WRITE_FAILED', `The run ${body.runId} is not running, so it cannot end again.`, { runId: body.runId });
      }
      return record;
    });
  }

  /**
   * Records a run's signed evidence and queues its bundle, in one transaction: `seal` builds the bundle for
   * the record (its log proof under a checkpoint signed for the log as it now is), the bundle's bytes become
   * the outbox row, and the checkpoint is kept last. No evidence record without its queued bundle; no bundle
   * queued whose record is not in the log.
   */
  recordEvidence(body: RecordBodies['evidence.signed'], seal: (record: StoredRecord) => SealedBundle): { record: StoredRecord; digest: string } {
    return this.db.transaction(() => {
      const record = this.appendRecord('evidence.signed', body, body.runId);
      this.runs.setEvidence(body.runId, body.evidenceDigest);
      const { bundle, checkpoint } = seal(record);
      const digest = `sha256:${sha256Hex(bundle)}`;
      this.outbox.insert('bundle', record.seq, body.runId, { digest, body: bundle }, record.at);
      this.saveCheckpoint(checkpoint.size, checkpoint.note);
      return { record, digest };
    });
  }

  // The outbox (runner/store/outbox.ts): read a row at a time, so 10,000 queued bundles are never all in memory.

  outboxNext(nowMs: number): OutboxRow | undefined {
    return this.outbox.next(nowMs);
  }

  outboxRow(id: number): OutboxRow | undefined {
    return this.outbox.get(id);
  }

  outboxNextDueAt(): number | undefined {
    return this.outbox.nextDueAt();
  }

  /** Gives a rejection's row its document, once: later calls leave the first bytes in place. */
  outboxSetBody(id: number, digest: string, body: Buffer): void {
    this.db.transaction(() => {
      this.outbox.setBody(id, digest, body);
    });
  }

  outboxRetry(id: number, nextAttemptAtMs: number, code: string): void {
    this.db.transaction(() => {
      this.outbox.retry(id, nextAttemptAtMs, code);
    });
  }

  /** The coordinator has the answer: the row is settled and the log says so, in one transaction (once). */
  outboxAck(id: number, stored: 'created' | 'existing'): void {
    this.db.transaction(() => {
      const row = this.settledRow(id, 'acked', null);
      if (row) this.appendRecord('outbox.acked', { digest: row.digest!, status: stored });
    });
  }

  /** The coordinator refused the answer for good: a dead letter, with its code, and a record (once). */
  outboxDead(id: number, code: string): void {
    this.db.transaction(() => {
      const row = this.settledRow(id, 'dead', code);
      if (row) this.appendRecord('outbox.dead', { digest: row.digest!, code });
    });
  }

  private settledRow(id: number, state: 'acked' | 'dead', code: string | null): OutboxRow | undefined {
    const row = this.outbox.get(id);
    if (row === undefined || row.digest === null) {
      throw new StoreError('STORE_WRITE_FAILED', `The outbox row ${id} has no document to settle.`, { id });
    }
    return this.outbox.settle(id, state, code) ? row : undefined;
  }

  outboxStats(): OutboxStats {
    return this.outbox.stats();
  }

  // The air-gapped spool (spool_inbox_v1, spool_checkpoints_v1: runner/store/spool.ts; runner/spool/).

  /** The answer is in the spool folder (DIR/out/): the row is settled and the log says so, in one transaction (once). */
  outboxSpooled(id: number): void {
    this.db.transaction(() => {
      const row = this.settledRow(id, 'acked', null);
      if (row) this.appendRecord('outbox.spooled', { digest: row.digest! });
    });
  }

  /** The index of the record that decided the spool file with this digest; undefined when none did. */
  spoolDecidedSeq(fileDigest: string): number | undefined {
    return this.spoolTable.decidedSeq(fileDigest);
  }

  /**
   * Call inside the transaction of the record that decides a spool file (runCapsule's `decided`): that
   * record is the last one appended. A file decided already makes the whole decision roll back.
   */
  spoolDecide(fileDigest: string): void {
    this.db.transaction(() => {
      if (this.spoolTable.decidedSeq(fileDigest) !== undefined) {
        throw new StoreError('STORE_WRITE_FAILED', `The spool file ${fileDigest} was decided already.`, {});
      }
      this.spoolTable.decide(fileDigest, this.merkle.nextIndex() - 1, this.timestamp());
    });
  }

  /** The size of the last checkpoint written to the spool folder (0: none yet). */
  spoolCheckpointSize(): number {
    return this.spoolTable.lastCheckpointSize();
  }

  spoolCheckpointWritten(size: number, fileName: string): void {
    this.db.transaction(() => this.spoolTable.addCheckpoint(size, fileName, this.timestamp()));
  }

  /** The size of the log when the outbox came; records before it are not shipped. */
  outboxStartSeq(): number {
    return this.outbox.startSeq();
  }

  /** How far this runner has read `coordinator`'s work feed (0: from the start). */
  feedCursor(coordinator: string): number {
    return this.feed.get(coordinator);
  }

  /** Call inside the transaction of the record that decided the capsule at `cursor`. */
  setFeedCursor(coordinator: string, cursor: number): void {
    this.db.transaction(() => this.feed.set(coordinator, cursor, this.timestamp()));
  }

  /** Keeps a verified cosignature (once per size and witness). */
  saveCosignature(cosignature: Omit<StoredCosignature, 'receivedAt'>): void {
    this.db.transaction(() => this.cosignatureTable.insert({ ...cosignature, receivedAt: this.timestamp() }));
  }

  cosignatures(size?: number): StoredCosignature[] {
    return this.cosignatureTable.list(size);
  }

  /** The largest checkpoint size `witness` cosigned for this runner, 0 when none. */
  witnessedSize(witness: string): number {
    return this.cosignatureTable.witnessedSize(witness);
  }

  // Recurring capsules (schedules_v1, runner/store/schedules.ts): every change rides with the record that says it.

  /** Call inside the transaction of the capsule's acceptance record (`acceptedSeq`, `acceptedAt` are that record's). */
  addSchedule(row: Omit<ScheduleRow, 'lastSlot' | 'endedSeq' | 'endedReason'>): void {
    this.db.transaction(() => this.scheduleTable.insert(row));
  }

  /** The schedules still firing, oldest acceptance first (the status command lists them with their next slot). */
  activeSchedules(): ScheduleRow[] {
    return this.scheduleTable.active();
  }

  /** The schedules of one capsule id still firing (a newer capsule with the id replaces them). */
  activeSchedulesOf(capsuleId: string): ScheduleRow[] {
    return this.scheduleTable.activeOf(capsuleId);
  }

  schedule(manifestDigest: string): ScheduleRow | undefined {
    return this.scheduleTable.get(manifestDigest);
  }

  /** Call inside the transaction of the run.started record of the slot: the slot is handled with it. */
  markScheduleSlot(manifestDigest: string, slot: string): void {
    this.db.transaction(() => {
      if (!this.scheduleTable.setSlot(manifestDigest, slot)) {
        throw new StoreError('STORE_WRITE_FAILED', `The schedule ${manifestDigest} has ended or already handled the slot ${slot}.`, {});
      }
    });
  }

  /** Slots that passed unrun: the record, and the schedule moved past the last of them, in one transaction. */
  recordScheduleMissed(body: RecordBodies['schedule.missed']): StoredRecord {
    return this.db.transaction(() => {
      const record = this.appendRecord('schedule.missed', body);
      this.markScheduleSlot(body.manifestDigest, body.last);
      return record;
    });
  }

  /**
   * A schedule stops firing: the record and the row's end in one transaction (and, when it never ran, its
   * answer queued); undefined when it had ended.
   */
  endSchedule(body: RecordBodies['schedule.ended']): StoredRecord | undefined {
    return this.db.transaction(() => {
      const row = this.scheduleTable.get(body.manifestDigest);
      if (row === undefined || row.endedSeq !== undefined) return undefined;
      const record = this.appendRecord('schedule.ended', body);
      this.scheduleTable.end(body.manifestDigest, record.seq, body.reason);
      // Every capsule gets an answer: one that ends without ever having run sent nothing yet, so its end is
      // answered as a signed rejection (stage `schedule`, runner/agent/answers.ts).
      if (!this.scheduleTable.hasRun(body.manifestDigest)) this.outbox.insert('rejection', record.seq, undefined, undefined, record.at);
      return record;
    });
  }

  /**
   * Runs left 'running' by a runner process that no longer exists (SIGKILL, power loss) are closed as
   * aborted, with a record. A run whose runner is still alive (a concurrent exec) is left alone.
   */
  abortInterruptedRuns(isAlive: (owner: ProcessIdentity) => boolean = isProcessAlive): string[] {
    // One IMMEDIATE transaction: two commands starting together after a crash cannot both end a run.
    return this.db.transaction(() => {
      const interrupted = this.runs.running().filter((run) => run.owner === null || !isAlive(run.owner));
      for (const { runId } of interrupted) this.abortRun({ runId, reason: 'RUN_RUNNER_RESTARTED' });
      return interrupted.map((run) => run.runId);
    });
  }

  run(runId: string): RunRow | undefined {
    return this.runs.get(runId);
  }

  // Governed remediation (changes_v1, approvals_v1: runner/store/changes.ts, approvals.ts; runner/remediate/).

  /** A proposal: its change.proposed record and its row, in one transaction (the caller's: the bundle's). */
  proposeChange(body: RecordBodies['change.proposed'], change: NewChange): StoredRecord {
    return this.db.transaction(() => {
      const record = this.appendRecord('change.proposed', body, body.runId);
      this.changeTable.insert(change, record.seq, record.at);
      return record;
    });
  }

  /**
   * One transition of a change's state machine: the record, then the row moved from `from` to `to`, in one
   * transaction. A row not in `from` (another process moved it) rolls the record back (STORE_WRITE_FAILED),
   * as does a second change taking a target that one holds (the unique index). change.applying and
   * change.refused set the decision time to their record's `at`.
   */
  moveChange<K extends Exclude<ChangeRecordKind, 'change.staged' | 'change.proposed'>>(
    kind: K,
    body: RecordBodies[K] & { changeDigest: string },
    from: ChangeState | readonly ChangeState[],
    to: ChangeState,
    update: ChangeUpdate = {},
  ): StoredRecord {
    return this.db.transaction(() => {
      const row = this.changeTable.get(body.changeDigest);
      const states: readonly ChangeState[] = typeof from === 'string' ? [from] : from;
      if (row === undefined || !states.includes(row.state)) {
        throw new StoreError('STORE_WRITE_FAILED', `The change ${body.changeDigest} is not ${states.join(' or ')}, so it cannot become ${to}.`, {});
      }
      const record = this.appendRecord(kind, body);
      const decided = kind === 'change.applying' || kind === 'change.refused' ? { decidedAt: record.at } : {};
      if (!this.changeTable.move(body.changeDigest, row.state, to, record.seq, record.at, { ...update, ...decided })) {
        throw new StoreError('STORE_WRITE_FAILED', `The change ${body.changeDigest} moved while it was being recorded.`, {});
      }
      return record;
    });
  }

  change(changeDigest: string): ChangeRow | undefined {
    return this.changeTable.get(changeDigest);
  }

  /** Every change proposed on this runner, oldest first. */
  changes(): ChangeRow[] {
    return this.changeTable.list();
  }

  /** Changes waiting for approvals or holding their target (the resume at open reads these). */
  openChanges(): ChangeRow[] {
    return this.changeTable.open();
  }

  /** The change holding `target` (applying, applied, verifying or rolling back), if one does. */
  changeHolding(target: string): ChangeRow | undefined {
    return this.changeTable.activeOn(target);
  }

  /** The run whose signed evidence has this digest, if this runner signed it (a cited reproduction). */
  runOfEvidence(evidenceDigest: string): ReturnType<ChangeTable['runOfEvidence']> {
    return this.changeTable.runOfEvidence(evidenceDigest);
  }

  /** The file digest a capsule was accepted with (its capsule.accepted record). */
  acceptedFileOf(manifestDigest: string): string | undefined {
    return this.changeTable.acceptedFileOf(manifestDigest);
  }

  /**
   * An approval decided: its approval.accepted or approval.refused record and its row, in one transaction.
   * `again`: a refusal of the same digest stored before is replaced (a refusal that time may undo).
   */
  decideApproval(
    decision:
      { kind: 'approval.accepted'; body: RecordBodies['approval.accepted'] } | { kind: 'approval.refused'; body: RecordBodies['approval.refused'] },
    row: Omit<ApprovalRow, 'recordSeq' | 'receivedAt' | 'status'>,
    again = false,
  ): StoredRecord {
    return this.db.transaction(() => {
      if (again) this.approvalTable.forgetRefusal(row.digest);
      const record =
        decision.kind === 'approval.accepted' ? this.appendRecord(decision.kind, decision.body) : this.appendRecord(decision.kind, decision.body);
      const status = decision.kind === 'approval.accepted' ? 'accepted' : 'refused';
      this.approvalTable.insert({ ...row, status, recordSeq: record.seq, receivedAt: record.at });
      return record;
    });
  }

  approval(digest: string): ApprovalRow | undefined {
    return this.approvalTable.get(digest);
  }

  /** The accepted approvals of a change, in the order they came. */
  approvalsOf(changeDigest: string): ApprovalRow[] {
    return this.approvalTable.acceptedOf(changeDigest);
  }

  /** Number of records, which is the size of the Merkle tree. */
  recordCount(): number {
    return this.recordTable.count();
  }

  /**
   * Keeps a checkpoint the runner signed, then moves the high-water mark beside the database up to it
   * (runner/store/head.ts): a later open of an older copy of the database is refused.
   */
  saveCheckpoint(size: number, note: string): void {
    this.db.transaction(() => {
      this.checkpointTable.insert({ size, note, signedAt: this.timestamp() });
      // Only once the checkpoint is committed: a mark written before COMMIT, by a runner killed before it
      // committed, would say the log is larger than it is and refuse the database as an older copy.
      this.db.afterCommit(() => this.raiseHeadAfterCommit(size));
    });
  }

  /**
   * Moves the mark up in a transaction of its own (the store's lock orders concurrent writers). If it fails
   * (a full disk), the mark stays behind the log, which is safe, and the next open raises it.
   */
  private raiseHeadAfterCommit(size: number): void {
    try {
      this.db.transaction(() => this.raiseHead(size));
    } catch {
      // Behind is safe: verifyHead raises it at the next open.
    }
  }

  /**
   * At open: the tree reaches the mark with the same root there, then the mark is raised to the latest
   * checkpoint (a runner that died between the two left it behind). No mark: refused if this database
   * wrote one, else (a store from before the mark) set from the latest checkpoint.
   */
  private verifyHead(): void {
    const head = readLogHead(this.headPath);
    if (head === undefined) {
      const recorded = recordedHeadSize(this.db);
      if (recorded !== undefined) throw missingHead(this.headPath, recorded);
    } else {
      verifyLogHead(this.headPath, head, this.merkle.size(), (size) => this.merkle.root(size));
    }
    const latest = this.checkpointTable.latest();
    if (latest !== undefined && latest.size <= this.merkle.size() && latest.size > (head?.size ?? -1)) {
      this.db.transaction(() => this.raiseHead(latest.size));
    }
  }

  /** Inside a write transaction (the store's lock): moves the mark up to `size`, never down. */
  private raiseHead(size: number): void {
    const current = readLogHead(this.headPath);
    if (current !== undefined && current.size >= size) return; // another process got further
    writeLogHead(this.headPath, { size, root: this.merkle.root(size).toString('base64') });
    recordHeadSize(this.db, size);
  }

  latestCheckpoint(): StoredCheckpoint | undefined {
    return this.checkpointTable.latest();
  }

  checkpoints(): StoredCheckpoint[] {
    return this.checkpointTable.all();
  }

  records(fromSeq = 0, pageSize = 1000): Generator<StoredRecord> {
    return this.recordTable.from(fromSeq, pageSize);
  }

  // records_v1, for trust rotation (runner/agent/trust-update.ts): the last trust.updated record, read only to
  // finish a trust update that a crash cut short (a walk back from the end that stops at the first match).
  lastTrustUpdated(): StoredRecord | undefined {
    const row = this.db.prepare("SELECT seq, kind, at, leaf FROM records_v1 WHERE kind = 'trust.updated' ORDER BY seq DESC LIMIT 1").get() as
      { seq: number; kind: RecordKind; at: string; leaf: Uint8Array } | undefined;
    return row === undefined ? undefined : { seq: row.seq, kind: row.kind, at: row.at, leaf: Buffer.from(row.leaf) };
  }
}

function runIdOf(body: unknown): string | undefined {
  const runId = (body as { runId?: unknown }).runId;
  return typeof runId === 'string' ? runId : undefined;
}

let isoMs = Number.NaN;
let isoText = '';

/** The time now as new Date().toISOString() gives it, formatted once per millisecond (a burst of records shares it). */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoText = new Date(ms).toISOString();
    isoMs = ms;
  }
  return isoText;
}

function migrate(db: SqliteDatabase): void {
  const current = db.pragmaNumber('user_version');
  if (current > MIGRATIONS.length) {
    throw new StoreError(
      'STORE_SCHEMA_VERSION',
      `The runner database has schema version ${current}, newer than this runner knows (${MIGRATIONS.length}).`,
      {
        found: current,
        known: MIGRATIONS.length,
      },
    );
  }
  for (let version = current; version < MIGRATIONS.length; version++) {
    const step = MIGRATIONS[version]!;
    db.transaction(() => {
      // Read again under the write lock: another runner opening the same database may have run this step
      // while this one waited for the lock.
      if (db.pragmaNumber('user_version') > version) return;
      if (step.sql !== undefined) db.exec(step.sql);
      step.after?.(db);
      db.exec(`PRAGMA user_version = ${version + 1}`);
    });
  }
}
