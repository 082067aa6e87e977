/**
 * The runner's state folder: its identity, key pair, pinned trust document, SQLite database, local evidence
 * store and run workspaces. Created once by `init`; never overwritten.
 */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { isStepId, type ConfigOverrides, type StepUser } from '../config/config.js';
import { PrivateKey, verifyKeyPair } from '../core/ed25519.js';
import { sha256Hex } from '../core/digest.js';
import { isCodedError } from '../core/errors.js';
import { parseJson } from '../core/json.js';
import { TRUST_MAX_BYTES, verifyTrustDocument, verifyTrustUpdate, type VerifiedTrust } from '../trust/trust.js';
import { writeFileAtomic } from './files.js';
import { BlobStore } from './blobs.js';
import { StateError } from './errors.js';
import { readPrivateKeyFile, writeKeyPair } from './keyfile.js';
import { verifyAncestors, verifyStateFolderOwner, verifyStatePermissions } from './permissions.js';

export const STATE_API_VERSION = 'edge-runner.dev/state/v1';

/** runner.json: who this runner is, and the settings its operator pinned in the state folder. */
export interface RunnerIdentity {
  apiVersion: typeof STATE_API_VERSION;
  id: string;
  labels: string[];
  keyid: string;
  createdAt: string;
  /**
   * Lowercase hex SHA-256 of trust.dsse.json, exactly the bytes `init` pinned (what `trust sign` and
   * `trust show` print). The trust file must have this digest whenever the state is opened; only a verified
   * trust update may change both together.
   */
  trustSha256: string;
  /** When the runner is root, steps run as this uid/gid (default 65534, nobody/nogroup). */
  stepUser?: StepUser;
  /** Settings over the defaults (runner/config/config.ts); the environment and flags override them. */
  settings?: ConfigOverrides;
}

export interface StateLayout {
  dir: string;
  config: string;
  privateKey: string;
  publicKey: string;
  trust: string;
  /** Every trust document this runner has pinned, by version (`trust/<version>.dsse.json`), kept for audits. */
  trustHistory: string;
  database: string;
  blobs: string;
  bundles: string;
  runs: string;
}

export function layoutOf(dir: string): StateLayout {
  const root = resolve(dir);
  return {
    dir: root,
    config: join(root, 'runner.json'),
    privateKey: join(root, 'runner.key'),
    publicKey: join(root, 'runner.pub'),
    trust: join(root, 'trust.dsse.json'),
    trustHistory: join(root, 'trust'),
    database: join(root, 'runner.db'),
    blobs: join(root, 'evidence', 'blobs'),
    bundles: join(root, 'evidence', 'bundles'),
    runs: join(root, 'runs'),
  };
}

const RUNNER_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface InitOptions {
  id: string;
  labels?: string[];
  trustBytes: Buffer;
  now: Date;
  /** An existing runner key (made with keygen and enrolled beforehand); a new one is generated otherwise. */
  key?: PrivateKey;
  stepUser?: StepUser;
  /** Creates the runner database at this path; called while the folder is still being staged. */
  createDatabase(path: string): void;
}

/** The uid whose files the state folder may hold (besides root's): the one the runner runs as. */
function runnerUid(): number {
  return process.geteuid?.() ?? 0;
}

export function isRunnerId(id: string): boolean {
  return RUNNER_ID.test(id);
}

/**
 * Creates the state folder. Builds everything, the database included, in a temporary folder and renames it
 * into place, so a failed init leaves nothing half-written and an existing folder is never touched.
 */
export function initState(
  dir: string,
  options: InitOptions,
): { layout: StateLayout; identity: RunnerIdentity; key: PrivateKey; trust: VerifiedTrust } {
  const layout = layoutOf(dir);
  if (!RUNNER_ID.test(options.id)) {
    throw new StateError('STATE_INIT_INVALID', `The runner id "${options.id}" is not a plain name (letters, digits, . _ -).`);
  }
  if (options.stepUser && !(isStepId(options.stepUser.uid) && isStepId(options.stepUser.gid))) {
    throw new StateError('STATE_INIT_INVALID', 'The step user must be an ordinary uid and gid (not 0).');
  }
  if (existsSync(layout.dir) && readdirSync(layout.dir).length > 0) {
    throw new StateError('STATE_EXISTS', `The state folder ${layout.dir} already exists and is never overwritten.`);
  }
  // Nobody else may be able to replace the folder we are about to make (or fill) and pin, or own it.
  verifyAncestors(layout.dir, { uid: runnerUid() });
  if (existsSync(layout.dir)) verifyStateFolderOwner(layout.dir, { uid: runnerUid() });
  let trust: VerifiedTrust;
  try {
    trust = verifyTrustDocument(options.trustBytes, { now: options.now });
  } catch (err) {
    const code = isCodedError(err) ? err.code : 'TRUST_UNPARSEABLE';
    throw new StateError('STATE_TRUST_INVALID', `The trust document cannot be pinned (${code}).`, { trustCode: code }, { cause: err });
  }
  if (options.key) verifyRunnerKeyRoles(trust, options.key);
  // An existing empty folder (systemd's StateDirectory=, a mount point) is filled from a staging folder
  // inside it, so every rename stays on its file system; otherwise the staging folder is a sibling that is
  // renamed into place whole. runner.json goes last: a folder without it is not a state folder.
  const inPlace = existsSync(layout.dir);
  if (!inPlace) mkdirSync(dirname(layout.dir), { recursive: true, mode: 0o700 });
  // A fresh folder with a random name (mkdtemp: mkdir 0700, never an existing name, no symlink followed),
  // so nobody can plant or swap it beforehand.
  const staging = mkdtempSync(inPlace ? join(layout.dir, '.init-') : `${layout.dir}.init-`);
  try {
    const staged = layoutOf(staging);
    const key = options.key ?? PrivateKey.generate();
    verifyKeyPair(key);
    writeKeyPair(join(staging, 'runner'), key);
    writeFileSync(staged.trust, options.trustBytes, { mode: 0o644, flag: 'wx' });
    mkdirSync(staged.trustHistory, { mode: 0o700 });
    writeFileSync(historyPath(staged, trust.body.version), options.trustBytes, { mode: 0o644, flag: 'wx' });
    const identity: RunnerIdentity = {
      apiVersion: STATE_API_VERSION,
      id: options.id,
      labels: options.labels ?? [],
      keyid: key.keyid,
      createdAt: options.now.toISOString(),
      trustSha256: sha256Hex(options.trustBytes),
      ...(options.stepUser ? { stepUser: options.stepUser } : {}),
    };
    for (const folder of [staged.blobs, staged.bundles, staged.runs]) mkdirSync(folder, { recursive: true, mode: 0o700 });
    // The database is made (and closed) here, inside the staging folder: a failure leaves nothing behind.
    options.createDatabase(staged.database);
    writeFileSync(staged.config, `${JSON.stringify(identity, null, 2)}\n`, { mode: 0o644, flag: 'wx' });
    if (inPlace) {
      chmodSync(layout.dir, 0o700);
      const names = readdirSync(staging).sort((a, b) => Number(a === 'runner.json') - Number(b === 'runner.json'));
      for (const name of names) renameSync(join(staging, name), join(layout.dir, name));
      rmdirSync(staging);
    } else {
      renameSync(staging, layout.dir);
    }
    return { layout, identity, key, trust };
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw err;
  }
}

export interface RunnerState {
  layout: StateLayout;
  identity: RunnerIdentity;
  key: PrivateKey;
  /** The pinned trust document; a verified update replaces it in place (moveTrustPin), live. */
  trust: VerifiedTrust;
  blobs: BlobStore;
  /**
   * trust.dsse.json is the pinned document's verified successor while runner.json still pins the pinned one:
   * a trust update cut short between its two renames. The log decides (runner/agent/trust-update.ts): finished
   * when it recorded trust.updated for these bytes, refused otherwise. `trust` is the pinned document.
   */
  pendingTrust?: { bytes: Buffer; trust: VerifiedTrust };
}

export interface LoadStateOptions {
  /**
   * `ignore`: open with a pinned trust document that has expired (a trust update may bring the runner back;
   * TUF checks expiry on the new root only). Everything that acts still refuses an expired pin.
   */
  trustExpiry?: 'enforce' | 'ignore';
}

/** runner.json is a few hundred bytes; anything past this cap is not one. */
const RUNNER_JSON_MAX_BYTES = 64 * 1024;

/**
 * Loads a state folder: permissions first (nobody else can have changed what follows), then config, private
 * key (mode checked), and the trust document, which must be the one runner.json pins and valid at `now`.
 */
export function loadState(dir: string, now: Date, options: LoadStateOptions = {}): RunnerState {
  // Resolved once: every later read goes through the real path, whose folders the permission check
  // covers, never again through a symlink on the way that someone else could point elsewhere meanwhile
  // (a second review swapped a whole state folder in between the check and the reads that way).
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    throw new StateError('STATE_MISSING', `${resolve(dir)} is not a runner state folder; create one with edge-runner init.`);
  }
  const layout = layoutOf(real);
  if (!existsSync(layout.config)) {
    throw new StateError('STATE_MISSING', `${layout.dir} is not a runner state folder; create one with edge-runner init.`);
  }
  verifyStatePermissions(layout, { uid: runnerUid() });
  let identity: RunnerIdentity;
  try {
    // The strict parser, under a cap: a second `stepUser` or `settings` member is a corrupt file, not a choice.
    identity = parseJson(readFileSync(layout.config), { maxBytes: RUNNER_JSON_MAX_BYTES }) as RunnerIdentity;
    if (identity.apiVersion !== STATE_API_VERSION || !RUNNER_ID.test(identity.id)) throw new Error('bad config');
    if (!Array.isArray(identity.labels) || !identity.labels.every((label) => typeof label === 'string')) throw new Error('bad labels');
    if (identity.stepUser !== undefined && !(isStepId(identity.stepUser.uid) && isStepId(identity.stepUser.gid))) throw new Error('bad stepUser');
    if (identity.settings !== undefined && (typeof identity.settings !== 'object' || identity.settings === null)) throw new Error('bad settings');
    if (identity.trustSha256 !== undefined && !(typeof identity.trustSha256 === 'string' && /^[0-9a-f]{64}$/.test(identity.trustSha256))) {
      throw new Error('bad trustSha256');
    }
  } catch (cause) {
    throw new StateError('STATE_CORRUPT', `The runner configuration ${layout.config} is unreadable.`, {}, { cause });
  }
  const key = readPrivateKeyFile(layout.privateKey);
  if (key.keyid !== identity.keyid) {
    throw new StateError('STATE_CORRUPT', 'The runner key does not match the keyid in runner.json.');
  }
  // Under its cap before it is read whole (verifyTrustDocument checks the same cap on the bytes).
  if (statSync(layout.trust).size > TRUST_MAX_BYTES) {
    throw new StateError('STATE_TRUST_INVALID', `The pinned trust document is larger than ${TRUST_MAX_BYTES} bytes.`, {
      trustCode: 'TRUST_TOO_LARGE',
    });
  }
  let trustBytes: Buffer = readFileSync(layout.trust);
  let pendingBytes: Buffer | undefined;
  if (identity.trustSha256 !== undefined && identity.trustSha256 !== sha256Hex(trustBytes)) {
    // Either an update cut short between its renames (the pinned bytes are in the history, and the file is
    // their verified successor), or a file swapped behind the runner's back (refused below).
    const pinned = pinnedFromHistory(layout, identity.trustSha256);
    if (pinned !== undefined && isSuccessor(pinned, trustBytes)) {
      pendingBytes = trustBytes;
      trustBytes = pinned;
    }
  }
  verifyTrustPin(layout, identity, trustBytes);
  let trust: VerifiedTrust;
  try {
    trust = verifyTrustDocument(trustBytes);
  } catch (err) {
    const code = isCodedError(err) ? err.code : 'TRUST_UNPARSEABLE';
    throw new StateError('STATE_TRUST_INVALID', `The pinned trust document is not valid now (${code}).`, { trustCode: code }, { cause: err });
  }
  if (options.trustExpiry !== 'ignore') assertTrustCurrent(trust, now);
  verifyRunnerKeyRoles(trust, key);
  const state: RunnerState = { layout, identity, key, trust, blobs: new BlobStore(layout.blobs) };
  if (pendingBytes !== undefined) state.pendingTrust = { bytes: pendingBytes, trust: verifyTrustUpdate(trust, pendingBytes, undefined) };
  return state;
}

/** Refuses a pinned trust document that has expired at `now` (STATE_TRUST_INVALID, trustCode TRUST_EXPIRED). */
export function assertTrustCurrent(trust: VerifiedTrust, now: Date): void {
  if (Date.parse(trust.body.expires) <= now.getTime()) {
    throw new StateError('STATE_TRUST_INVALID', `The pinned trust document is not valid now (TRUST_EXPIRED): it expired at ${trust.body.expires}.`, {
      trustCode: 'TRUST_EXPIRED',
    });
  }
}

/** Where the trust document of `version` is kept: `trust/<version>.dsse.json`. */
export function historyPath(layout: StateLayout, version: number): string {
  return join(layout.trustHistory, `${version}.dsse.json`);
}

/** The kept document of `version`, if there is one and it is not over the cap. */
export function readTrustHistory(layout: StateLayout, version: number): Buffer | undefined {
  const path = historyPath(layout, version);
  const stats = statSync(path, { throwIfNoEntry: false });
  if (!stats?.isFile() || stats.size > TRUST_MAX_BYTES) return undefined;
  return readFileSync(path);
}

/** The kept document whose digest runner.json pins (a handful of files: one per version ever pinned). */
function pinnedFromHistory(layout: StateLayout, digest: string): Buffer | undefined {
  let names: string[];
  try {
    names = readdirSync(layout.trustHistory);
  } catch {
    return undefined;
  }
  for (const name of names) {
    const match = /^([1-9][0-9]{0,15})\.dsse\.json$/.exec(name);
    if (!match) continue;
    const bytes = readTrustHistory(layout, Number(match[1]));
    if (bytes !== undefined && sha256Hex(bytes) === digest) return bytes;
  }
  return undefined;
}

function isSuccessor(pinnedBytes: Buffer, nextBytes: Buffer): boolean {
  try {
    verifyTrustUpdate(verifyTrustDocument(pinnedBytes), nextBytes, undefined);
    return true;
  } catch {
    return false;
  }
}

/**
 * Keeps a trust document in the history under its version (written whole, or not at all). A kept file with
 * other bytes is replaced only when `replace` says so: an update verified but never recorded left it.
 */
export function keepTrustHistory(layout: StateLayout, version: number, bytes: Uint8Array): void {
  mkdirSync(layout.trustHistory, { recursive: true, mode: 0o700 });
  const kept = readTrustHistory(layout, version);
  if (kept !== undefined && kept.equals(bytes)) return;
  writeFileAtomic(historyPath(layout, version), bytes, { mode: 0o644 });
}

/**
 * Moves the pin to a verified successor the log has already recorded (trust.updated): trust.dsse.json first,
 * then runner.json (each written to a temporary name, synced, renamed, folder synced), then the live state.
 * A crash between the two renames leaves trust.dsse.json one verified step ahead of runner.json, which
 * loadState reports as `pendingTrust` and the next open finishes; a crash before the first leaves the pin as
 * it was, with the record and the kept document saying where it was going (finished at the next open too).
 */
export function moveTrustPin(state: RunnerState, bytes: Buffer, next: VerifiedTrust): void {
  const { layout } = state;
  writeFileAtomic(layout.trust, bytes, { mode: 0o644 });
  const identity: RunnerIdentity = { ...state.identity, trustSha256: sha256Hex(bytes) };
  writeFileAtomic(layout.config, `${JSON.stringify(identity, null, 2)}\n`, { mode: 0o644 });
  state.identity = identity;
  state.trust = next;
  delete state.pendingTrust;
}

/**
 * The runner's own key signs evidence and checkpoints only. Enrolled as a root or a capsule signer, a
 * compromised runner host could sign its own capsules or its own trust; the trust document refuses a key
 * that holds the runner role and another (TRUST_ROLE_CONFLICT), and this refuses a runner key enrolled under
 * another role alone.
 */
function verifyRunnerKeyRoles(trust: VerifiedTrust, key: PrivateKey): void {
  const roles = trust.body.keys[key.keyid]?.roles.filter((role) => role !== 'runner') ?? [];
  if (roles.length > 0) {
    throw new StateError(
      'STATE_TRUST_INVALID',
      `The runner key is enrolled in the trust document as ${roles.join(', ')} (TRUST_ROLE_CONFLICT); a runner key holds only the runner role.`,
      { trustCode: 'TRUST_ROLE_CONFLICT', keyid: key.keyid },
    );
  }
}

/**
 * The trust file must be byte for byte the one `init` pinned: a trust document that verifies against its own
 * root keys proves only that someone signed it, and anyone with a key can sign one. A state folder made before
 * the pin existed is refused rather than pinned on first sight, since what is there now may already be swapped.
 */
function verifyTrustPin(layout: StateLayout, identity: RunnerIdentity, trustBytes: Buffer): void {
  const actual = sha256Hex(trustBytes);
  if (identity.trustSha256 === undefined) {
    throw new StateError(
      'STATE_TRUST_UNPINNED',
      `${layout.config} pins no trust document; compare the sha256 that edge-runner trust show prints for ${layout.trust} with the one you signed, then add it as "trustSha256", or create a new state folder with edge-runner init.`,
      { actual },
    );
  }
  if (identity.trustSha256 !== actual) {
    throw new StateError(
      'STATE_TRUST_MISMATCH',
      `${layout.trust} is not the trust document this runner pinned (sha256 ${actual}, pinned ${identity.trustSha256}).`,
      { pinned: identity.trustSha256, actual },
    );
  }
}
