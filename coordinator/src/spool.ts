/**
 * The coordinator's side of the air-gapped spool (runner/protocol/spool.ts has the layout):
 *
 * - importSpool reads a runner's DIR/out/ (copied from removable media) and loads it exactly as the link
 *   would have: each bundle and rejection is verified in full as the inbox verifies it (verifyBundle,
 *   verifyRejection against the pinned trust document) and stored once by digest, so importing twice stores
 *   nothing twice; each checkpoint goes through the witness's own decision (decideAddCheckpoint, in the
 *   store's compare-and-swap), in size order, so the log is cosigned, or a fork kept as evidence. Nothing is
 *   trusted for its name: a file whose bytes are not what its name says (altered, or half-copied) is refused
 *   with SPOOL_DIGEST_MISMATCH. Every file gets an outcome and, when refused, a code.
 * - exportSpool writes the capsules published for one runner into a folder (its DIR/in/ on the media), one
 *   HEX.capsule.json each, and the approvals uploaded for its proposals, one HEX.approval.json each (the
 *   canonical envelope, HEX its approval digest), never partially visible (temporary dot-name, fsync, link,
 *   fsync of the folder).
 *
 * There is no request signature on a file: who sent a document is who signed it (the runner key enrolled in
 * the trust document), which the verification establishes.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  fsyncSync,
  linkSync,
  lstatSync,
  openSync,
  readdirSync,
  readSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { isCodedError } from '../../runner/core/errors.js';
import { verifyRejection } from '../../runner/evidence/rejection.js';
import { runnerOrigin, type NoteVerifier } from '../../runner/log/checkpoint.js';
import {
  SPOOL_OUT_FOLDERS,
  parseSpoolOutName,
  toSpoolApprovalName,
  toSpoolCapsuleName,
  toSpoolCheckpointName,
  toSpoolCosignedName,
} from '../../runner/protocol/spool.js';
import { decideAddCheckpoint, parseAddCheckpoint, signCosignature, type ParsedAddCheckpoint } from '../../runner/protocol/witness.js';
import type { PrivateKey } from '../../runner/core/ed25519.js';
import { CAPS } from '../../runner/protocol/wire.js';
import type { VerifiedTrust } from '../../runner/trust/trust.js';
import { CoordinatorError } from './errors.js';
import { bundleRow, rejectionRow, verifyBundleUnderItsTrust } from './routes.js';
import type { CoordinatorStore, StoredAnswer, WitnessWrite } from './store/store.js';

export type SpoolFileOutcome =
  | 'created'
  | 'existing'
  /** A checkpoint cosigned now (the witness advanced to it). */
  | 'cosigned'
  /** A checkpoint older than the one the witness holds: its signature verified, its consistency cannot be checked without a proof from the held size. */
  | 'superseded'
  | 'refused'
  /** A writer's temporary file (a name starting with '.'): never complete, passed over. */
  | 'temporary';

export interface SpoolFileReport {
  /** The path under the imported folder. */
  file: string;
  kind: 'bundle' | 'rejection' | 'checkpoint' | 'foreign';
  outcome: SpoolFileOutcome;
  code?: string;
  message?: string;
}

export interface SpoolImportReport {
  counts: Record<SpoolFileOutcome, number>;
  files: SpoolFileReport[];
}

export interface ImportOptions {
  dir: string;
  trust: VerifiedTrust;
  /** Every trust version this coordinator pinned, by version (bundles made before a rotation verify under theirs). */
  trustVersions: ReadonlyMap<number, Buffer>;
  store: CoordinatorStore;
  now: () => Date;
}

const FOLDER_KINDS = Object.entries(SPOOL_OUT_FOLDERS) as ['bundle' | 'rejection' | 'checkpoint', string][];

/** Loads a spool's out/ folder: every file verified, stored once, reported with its outcome. */
export async function importSpool(options: ImportOptions): Promise<SpoolImportReport> {
  const { dir } = options;
  folderOrFail(dir);
  const files: SpoolFileReport[] = [];
  for (const entry of readdirSync(dir).sort()) {
    if (FOLDER_KINDS.some(([, folder]) => folder === entry)) continue;
    files.push(entry.startsWith('.') ? { file: entry, kind: 'foreign', outcome: 'temporary' } : foreign(entry));
  }
  // Names only until each is handled: a spool of many checkpoints is not held in memory at once.
  const checkpoints: { file: string; path: string; size: number; rootPrefix: string; from?: number }[] = [];
  for (const [kind, folder] of FOLDER_KINDS) {
    const path = join(dir, folder);
    const held = kindFolder(path);
    if (held === 'absent') continue;
    if (held === 'not-folder') {
      // A symlink or a file where the folder should be: said, not passed over in silence.
      files.push(
        refused(folder, kind, 'SPOOL_FILE_NOT_REGULAR', 'Not a folder (a symlink or a file where the folder of its kind should be); not read.'),
      );
      continue;
    }
    for (const name of readdirSync(path).sort()) {
      const file = `${folder}/${name}`;
      if (name.startsWith('.')) {
        files.push({ file, kind, outcome: 'temporary' });
        continue;
      }
      const parsed = parseSpoolOutName(folder, name);
      if (parsed.kind === 'foreign') {
        files.push(foreign(file));
        continue;
      }
      if (parsed.kind === 'checkpoint') {
        checkpoints.push({ file, path: join(path, name), ...parsed });
        continue;
      }
      const read = readCapped(join(path, name), parsed.kind === 'bundle' ? CAPS.bundleBytes : CAPS.rejectionBytes);
      if ('code' in read) {
        files.push({ file, kind, outcome: 'refused', ...read });
        continue;
      }
      // The name is the address of the bytes: anything else was altered or cut short on the way.
      if (`sha256:${createHash('sha256').update(read.bytes).digest('hex')}` !== parsed.digest) {
        files.push(
          refused(file, parsed.kind, 'SPOOL_DIGEST_MISMATCH', 'The file is not the bytes whose SHA-256 its name gives (altered or cut short).'),
        );
        continue;
      }
      files.push(await importAnswer(options, file, parsed.kind, parsed.digest, read.bytes));
    }
  }
  // In size order: each checkpoint's proof starts where the previous one spooled ended.
  // A size's own chain file before its catch-up files (SIZE-ROOT16.from-OLD: proved from an older size).
  checkpoints.sort((a, b) => a.size - b.size || (a.from ?? Infinity) - (b.from ?? Infinity) || (a.file < b.file ? -1 : 1));
  const verifiers = runnerVerifiers(options.trust);
  for (const checkpoint of checkpoints) {
    const read = readCapped(checkpoint.path, CAPS.addCheckpointBytes);
    files.push(
      'code' in read
        ? { file: checkpoint.file, kind: 'checkpoint', outcome: 'refused', ...read }
        : await importCheckpoint(options, verifiers, { ...checkpoint, bytes: read.bytes }),
    );
  }
  const counts: Record<SpoolFileOutcome, number> = { created: 0, existing: 0, cosigned: 0, superseded: 0, refused: 0, temporary: 0 };
  for (const file of files) counts[file.outcome] += 1;
  return { counts, files };
}

async function importAnswer(
  options: ImportOptions,
  file: string,
  kind: 'bundle' | 'rejection',
  digest: string,
  bytes: Buffer,
): Promise<SpoolFileReport> {
  const { store, trust } = options;
  // Stored already: these very bytes verified when they were first stored (the inbox's rule).
  if ((kind === 'bundle' ? await store.bundleRunner(digest) : await store.rejectionRunner(digest)) !== undefined) {
    return { file, kind, outcome: 'existing' };
  }
  const receivedAt = options.now().toISOString();
  let stored: StoredAnswer;
  try {
    if (kind === 'bundle') {
      // As the inbox judges it: the pinned trust, or the older kept version its predicate names (routes.ts).
      const verified = verifyBundleUnderItsTrust(options, bytes);
      stored = await store.putBundle(bundleRow(verified, digest, bytes, receivedAt));
    } else {
      const verified = verifyRejection(bytes, trust);
      stored = await store.putRejection(rejectionRow(verified, digest, bytes, receivedAt));
    }
  } catch (err) {
    if (!isCodedError(err) || err.code === 'COORDINATOR_STORAGE_FULL') throw err;
    return refused(file, kind, err.code, err.message);
  }
  if (stored === 'conflict')
    return refused(file, kind, 'INBOX_RECORD_CONFLICT', 'This runner already sent other evidence for the same record of its log.');
  return { file, kind, outcome: stored };
}

/** The note verifier of every enrolled runner's log, by its origin line. */
function runnerVerifiers(trust: VerifiedTrust): Map<string, { runner: string; verifier: NoteVerifier }> {
  const out = new Map<string, { runner: string; verifier: NoteVerifier }>();
  for (const key of trust.keys) {
    const name = trust.nameOf(key.keyid);
    if (!key.roles.includes('runner') || name === undefined) continue;
    let origin: string;
    try {
      origin = runnerOrigin(name, key.keyid);
    } catch {
      continue; // a name no log can carry
    }
    out.set(origin, { runner: name, verifier: { name: origin, publicKey: key.publicKey } });
  }
  return out;
}

async function importCheckpoint(
  options: ImportOptions,
  verifiers: Map<string, { runner: string; verifier: NoteVerifier }>,
  checkpoint: { file: string; bytes: Buffer; size: number; rootPrefix: string; from?: number },
): Promise<SpoolFileReport> {
  const { file } = checkpoint;
  let request: ParsedAddCheckpoint;
  try {
    request = parseAddCheckpoint(checkpoint.bytes);
  } catch (err) {
    if (!isCodedError(err)) throw err;
    return refused(file, 'checkpoint', err.code, err.message);
  }
  const origin = request.note.slice(0, Math.max(0, request.note.indexOf('\n')));
  const log = verifiers.get(origin);
  if (log === undefined) return refused(file, 'checkpoint', 'WITNESS_UNKNOWN_LOG', 'The checkpoint is not of a log this coordinator knows.');
  const all = [...verifiers.values()].map((v) => v.verifier);
  // First the checkpoint alone (its signature, its shape), as if nothing were held.
  const alone = decideAddCheckpoint({ ...request, oldSize: 0, proof: [] }, undefined, all);
  if (alone.kind === 'error') return refused(file, 'checkpoint', alone.code, alone.message);
  if (alone.kind !== 'cosign') return refused(file, 'checkpoint', 'WITNESS_BODY_MALFORMED', 'The checkpoint is not well formed.');
  const { size, rootHash } = alone.checkpoint;
  if (toSpoolCheckpointName(size, rootHash, checkpoint.from) !== file.slice(file.indexOf('/') + 1)) {
    return refused(file, 'checkpoint', 'SPOOL_NAME_MISMATCH', 'The checkpoint is not of the tree size and root its name gives.');
  }
  if (checkpoint.from !== undefined && request.oldSize !== checkpoint.from) {
    return refused(file, 'checkpoint', 'SPOOL_NAME_MISMATCH', 'The checkpoint is not proved from the size its name gives.');
  }
  const at = options.now().toISOString();
  type Decided = { outcome: 'existing' | 'superseded' | 'cosigned' } | { code: string; held?: number; unsigned?: true };
  const outcome = await options.store.witness<Decided>(origin, log.runner, (held) => {
    const none: WitnessWrite = { kind: 'none' };
    if (held !== undefined && held.size > size) return { write: none, value: { outcome: 'superseded' } };
    // The held tree itself (imported before): the same root is nothing new; another root is a fork.
    const effective = held !== undefined && held.size === size ? { ...request, oldSize: size, proof: [] } : request;
    const decision = decideAddCheckpoint(effective, held && { size: held.size, rootHash: held.rootHash }, [log.verifier]);
    switch (decision.kind) {
      case 'cosign':
        if (held !== undefined && held.size === size) return { write: none, value: { outcome: 'existing' } };
        return {
          write: { kind: 'advance', size, rootHash: decision.checkpoint.rootHash, note: request.note, at } satisfies WitnessWrite,
          value: { outcome: 'cosigned' },
        };
      case 'fork':
        // Evidence only when the runner's signatures alone make it: another signed root at the held size.
        // A proof that fails proves nothing against the runner here: on a file nobody signs its proof lines
        // (online, the request signature does), so a carrier could forge the accusation.
        if (decision.reason !== 'WITNESS_ROOT_CONFLICT') return { write: none, value: { code: decision.reason, unsigned: true } };
        return {
          write: { kind: 'fork', reason: decision.reason, submitted: checkpoint.bytes, at } satisfies WitnessWrite,
          value: { code: decision.reason },
        };
      case 'conflict':
        // A catch-up file the chain already went past (nothing was lost after all): nothing to do.
        if (checkpoint.from !== undefined && held !== undefined && held.size > checkpoint.from) {
          return { write: none, value: { outcome: 'superseded' } };
        }
        return { write: none, value: { code: 'WITNESS_CONFLICT', held: decision.size } };
      case 'error':
        return { write: none, value: { code: decision.code } };
    }
  });
  if ('outcome' in outcome) return { file, kind: 'checkpoint', outcome: outcome.outcome };
  const message = outcome.unsigned
    ? 'The consistency proof does not verify from the checkpoint this witness cosigned; a proof on a file is signed by no one, so it is not kept as fork evidence.'
    : outcome.code === 'WITNESS_CONFLICT'
      ? `The checkpoint proves consistency from another size than the ${outcome.held ?? 0} this witness holds; import the spool's earlier checkpoints first.`
      : outcome.code === 'WITNESS_ROOT_CONFLICT' || outcome.code === 'WITNESS_CONSISTENCY'
        ? 'The checkpoint is not consistent with the one this witness cosigned; it is kept as fork evidence.'
        : 'The witness refused the checkpoint.';
  return refused(file, 'checkpoint', outcome.code, message);
}

export interface ExportOptions {
  runner: string;
  dir: string;
  trust: VerifiedTrust;
  store: CoordinatorStore;
  /** The witness key: the checkpoint held for the runner's log goes back cosigned (SIZE-ROOT16.cosigned). */
  witness?: { name: string; key: PrivateKey };
  now?: () => Date;
}

/**
 * Writes the capsules published for `runner` (by id, or by a label it reported) into `dir`, the approvals
 * uploaded for its proposals (what its work feed would carry), and the checkpoint this witness holds for its
 * log with a cosignature line appended (what add-checkpoint would have answered), so an air-gapped runner
 * learns what was witnessed. `approvals` counts the approval files among `written` and `existing`.
 */
export async function exportSpool(
  options: ExportOptions,
): Promise<{ written: number; existing: number; files: string[]; approvals: number; cosigned?: number }> {
  const { runner, dir, store, trust } = options;
  const runnerKey = trust.keyByName(runner, 'runner');
  if (runnerKey === undefined) {
    throw new CoordinatorError('COORDINATOR_CONFIG', `No runner named ${runner} is enrolled in the trust document.`);
  }
  folderOrFail(dir);
  const result = { written: 0, existing: 0, files: [] as string[], approvals: 0 };
  for (let after = 0; ;) {
    const items = await store.workFor(runner, after, 500);
    if (items.length === 0) break;
    for (const item of items) {
      const bytes = await store.capsuleBytes(item.capsule);
      if (bytes === undefined) continue;
      const name = toSpoolCapsuleName(item.capsule);
      result[writeOnce(join(dir, name), bytes) ? 'written' : 'existing'] += 1;
      result.files.push(name);
      after = item.cursor;
    }
  }
  for (let after = 0; ;) {
    const items = await store.approvalsFor(runner, after, 500);
    if (items.length === 0) break;
    for (const item of items) {
      after = item.cursor;
      const held = await store.approval(item.digest);
      if (held === undefined) continue;
      const name = toSpoolApprovalName(item.digest);
      result[writeOnce(join(dir, name), held.bytes) ? 'written' : 'existing'] += 1;
      result.approvals += 1;
      result.files.push(name);
    }
  }
  if (options.witness === undefined) return result;
  const origin = runnerOrigin(runner, runnerKey.keyid);
  const held = await store.witness(origin, runner, (h) => ({ write: { kind: 'none' }, value: h }));
  if (held === undefined) return result;
  const name = toSpoolCosignedName(held.size, held.rootHash);
  // One file per cosigned size: a later export of the same size (another timestamp) leaves the first.
  if (!existsSync(join(dir, name))) {
    const seconds = Math.floor((options.now ?? (() => new Date()))().getTime() / 1000);
    writeOnce(join(dir, name), Buffer.from(held.note + signCosignature(held.note, options.witness.name, options.witness.key, seconds), 'utf8'));
    result.files.push(name);
  }
  return { ...result, cosigned: held.size };
}

/**
 * Writes a new file durably under `path` (temporary dot-name, fsync, link, folder fsync; the temporary file
 * is removed on any failure, a full medium included), or leaves the same bytes there (false); other bytes:
 * an error, and the file is left as it is.
 */
function writeOnce(path: string, bytes: Buffer): boolean {
  const existing = readCapped(path, bytes.length);
  if (!('code' in existing) && existing.bytes.equals(bytes)) return false;
  const tmp = join(path, '..', `.${path.slice(path.lastIndexOf('/') + 1)}.tmp-${randomBytes(8).toString('hex')}`);
  const fd = openSync(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW | constants.O_WRONLY, 0o644);
  try {
    try {
      for (let offset = 0; offset < bytes.length;) offset += writeSync(fd, bytes, offset);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    linkSync(tmp, path); // never replaces a file: a name taken meanwhile is an error, not an overwrite
  } catch (err) {
    const exists = (err as NodeJS.ErrnoException).code === 'EEXIST';
    throw new CoordinatorError(
      'COORDINATOR_CONFIG',
      exists ? `${path} exists and holds other bytes; it is left as it is.` : `${path} could not be written durably; nothing was written there.`,
      {},
      { cause: err },
    );
  } finally {
    unlinkSync(tmp);
  }
  const dirFd = openSync(join(path, '..'), constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(dirFd);
  } catch {
    // some file systems refuse fsync on a folder; the link itself happened
  } finally {
    closeSync(dirFd);
  }
  return true;
}

/**
 * Reads at most `cap` bytes of a regular file, never through a symlink: the descriptor's own stat is judged
 * (a name swapped for a fifo or a larger file after a look is not read), and no more than cap + 1 bytes are
 * ever read (a file that keeps growing is over its cap, not read to its end).
 */
function readCapped(path: string, cap: number): { bytes: Buffer } | { code: string; message: string } {
  const notRegular = { code: 'SPOOL_FILE_NOT_REGULAR', message: 'Not a regular file (a symlink, a folder or a device); not read.' };
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ELOOP' ? notRegular : { code: 'SPOOL_FILE_NOT_REGULAR', message: 'The file cannot be read.' };
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) return notRegular;
    if (stat.size > cap) return { code: 'SPOOL_FILE_TOO_LARGE', message: `The file is ${stat.size} bytes, over the ${cap}-byte cap of its kind.` };
    const bytes = Buffer.alloc(stat.size + 1);
    let got = 0;
    for (let n = 1; n > 0 && got < bytes.length; got += n) n = readSync(fd, bytes, got, bytes.length - got, got);
    if (got > stat.size) return { code: 'SPOOL_FILE_NOT_REGULAR', message: 'The file grew while it was read (still being written); not read.' };
    return { bytes: bytes.subarray(0, got) };
  } catch {
    return { code: 'SPOOL_FILE_NOT_REGULAR', message: 'The file cannot be read.' };
  } finally {
    closeSync(fd);
  }
}

function foreign(file: string): SpoolFileReport {
  return refused(file, 'foreign', 'SPOOL_FILE_FOREIGN', 'The file is not part of the spool layout; not read.');
}

function refused(file: string, kind: SpoolFileReport['kind'], code: string, message: string): SpoolFileReport {
  return { file, kind, outcome: 'refused', code, message };
}

function isFolder(path: string): boolean {
  return kindFolder(path) === 'folder';
}

function kindFolder(path: string): 'folder' | 'absent' | 'not-folder' {
  try {
    return lstatSync(path).isDirectory() ? 'folder' : 'not-folder';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'absent' : 'not-folder';
  }
}

function folderOrFail(dir: string): void {
  if (!isFolder(dir)) throw new CoordinatorError('SPOOL_DIR_INVALID', `${dir} is not a folder.`);
}
