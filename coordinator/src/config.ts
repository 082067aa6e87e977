/**
 * The coordinator's state folder, and its one configuration file, `coordinator.json`, written so an ops person
 * can read and edit it:
 *
 *   {
 *     "format": "edge-runner-coordinator/v1",
 *     "database": "coordinator.db",                       // SQLite file, relative to the state folder
 *     "trust": { "file": "trust.dsse.json", "sha256": "…", "version": 3 },   // the pinned trust document
 *     "trustHistory": [ { "file": …, "sha256": …, "version": 1 }, …, the pinned one ],  // every version pinned
 *     "witness": { "keyFile": "/etc/…/witness.key.pem", "keyid": "…", "name": "coordinator-witness" },
 *     "operators": [ { "name": "ops", "tokenSha256": "…" } ],               // bearer tokens, hashed
 *     "listen": "127.0.0.1:8443",
 *     "publicUrl": "https://coordinator.example:8443",   // or null: scheme://Host of each request
 *     "tls": { "certFile": "…", "keyFile": "…" },          // or null: plain HTTP (loopback only)
 *     "timeouts": { "headersSeconds": 15, "requestSeconds": 300, "keepAliveSeconds": 5 },
 *     "signatures": { "maxFutureSeconds": 30, "maxTtlSeconds": 300 }
 *   }
 *
 * Relative paths are read from the state folder. The trust document's bytes are pinned by their SHA-256: a
 * file changed behind the coordinator's back is refused at start. Operator tokens are never stored, only
 * their SHA-256 (a token is 32 random bytes, so a plain hash is enough: there is nothing to guess).
 * Every trust document the coordinator has pinned is kept and listed in `trustHistory` (oldest first, the
 * pinned one last), each pinned by its SHA-256 and checked at start as a chain under TUF's rule, so runners
 * behind can fetch each version in turn (`GET /v1/trust/{version}`). A configuration written before the
 * history existed lists the pinned document only.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { sha256Hex } from '../../runner/core/digest.js';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { parseJson } from '../../runner/core/json.js';
import { verifyTrustDocument, verifyTrustUpdate, type VerifiedTrust } from '../../runner/trust/trust.js';
import { CoordinatorError } from './errors.js';

export const CONFIG_FORMAT = 'edge-runner-coordinator/v1';
export const CONFIG_FILE = 'coordinator.json';
const CONFIG_MAX_BYTES = 256 * 1024;

export interface CoordinatorConfig {
  format: typeof CONFIG_FORMAT;
  database: string;
  trust: TrustEntry;
  /** Every trust document pinned so far, oldest first, ending with `trust` (absent: `trust` alone). */
  trustHistory?: TrustEntry[];
  witness: { keyFile: string; keyid: string; name: string };
  operators: { name: string; tokenSha256: string }[];
  listen: string;
  publicUrl: string | null;
  tls: { certFile: string; keyFile: string } | null;
  timeouts: { headersSeconds: number; requestSeconds: number; keepAliveSeconds: number };
  signatures: { maxFutureSeconds: number; maxTtlSeconds: number };
}

export interface TrustEntry {
  file: string;
  sha256: string;
  version: number;
}

export const DEFAULTS = {
  listen: '127.0.0.1:8443',
  timeouts: { headersSeconds: 15, requestSeconds: 300, keepAliveSeconds: 5 },
  signatures: { maxFutureSeconds: 30, maxTtlSeconds: 300 },
} as const;

/** What `serve` needs, loaded and checked once. */
export interface LoadedState {
  dir: string;
  config: CoordinatorConfig;
  trust: VerifiedTrust;
  trustBytes: Buffer;
  /** Every kept version's bytes, by version (the pinned one included). */
  trustVersions: Map<number, Buffer>;
  witness: { name: string; key: PrivateKey };
  databasePath: string;
  operatorTokenHashes: Buffer[];
}

const fail = (message: string): never => {
  throw new CoordinatorError('COORDINATOR_CONFIG', message);
};

export function inState(dir: string, file: string): string {
  return isAbsolute(file) ? file : join(dir, file);
}

export function hashToken(token: string): string {
  return sha256Hex(Buffer.from(token, 'utf8'));
}

/** A private key file that group or others can read is refused (DESIGN.md, Keys). */
export function loadPrivateKey(path: string): PrivateKey {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch {
    return fail(`The key file ${path} cannot be read.`);
  }
  if ((mode & 0o077) !== 0) fail(`The key file ${path} can be read by group or others; make it mode 0600.`);
  try {
    return PrivateKey.fromPem(readFileSync(path, 'utf8'));
  } catch {
    return fail(`The key file ${path} is not an Ed25519 private key in PKCS#8 PEM.`);
  }
}

/** The trust document's entry for the witness key: it must hold the witness role. */
function witnessEntry(trust: VerifiedTrust, key: PrivateKey): { name: string } {
  const listed = trust.keys.find((k) => k.keyid === key.keyid);
  if (!listed || !listed.roles.includes('witness')) {
    fail(`The witness key ${key.keyid.slice(0, 16)}… is not enrolled under the witness role in the trust document.`);
  }
  return { name: trust.nameOf(key.keyid)! };
}

export interface InitOptions {
  state: string;
  trustFile: string;
  witnessKeyFile: string;
  operatorName: string;
  /** A file holding the operator token; without one a token is made and written to STATE/operator.token. */
  operatorTokenFile?: string;
  listen?: string;
  publicUrl?: string;
  tlsCert?: string;
  tlsKey?: string;
  now: Date;
}

/** Makes a state folder. Returns where the operator token is (when it made one). */
export function initState(options: InitOptions): { config: CoordinatorConfig; tokenFile: string | null } {
  const dir = resolve(options.state);
  if (existsSync(join(dir, CONFIG_FILE))) fail(`${join(dir, CONFIG_FILE)} exists already; this state folder is initialised.`);
  const trustBytes = readFileSync(options.trustFile);
  const trust = verifyTrustDocument(trustBytes, { now: options.now });
  const witnessKeyFile = resolve(options.witnessKeyFile);
  const witnessKey = loadPrivateKey(witnessKeyFile);
  const { name } = witnessEntry(trust, witnessKey);
  if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) fail('TLS needs both --tls-cert and --tls-key.');

  let token: string;
  let tokenFile: string | null = null;
  if (options.operatorTokenFile !== undefined) {
    token = readFileSync(options.operatorTokenFile, 'utf8').trim();
    if (token.length < 32) fail('The operator token must be at least 32 characters long.');
  } else {
    token = randomBytes(32).toString('base64url');
    tokenFile = join(dir, 'operator.token');
  }

  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'trust.dsse.json'), trustBytes, { mode: 0o644 });
  if (tokenFile !== null) writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const pinned: TrustEntry = { file: 'trust.dsse.json', sha256: sha256Hex(trustBytes), version: trust.body.version };
  const config: CoordinatorConfig = {
    format: CONFIG_FORMAT,
    database: 'coordinator.db',
    trust: pinned,
    trustHistory: [pinned],
    witness: { keyFile: witnessKeyFile, keyid: witnessKey.keyid, name },
    operators: [{ name: options.operatorName, tokenSha256: hashToken(token) }],
    listen: options.listen ?? DEFAULTS.listen,
    publicUrl: options.publicUrl ?? null,
    tls: options.tlsCert !== undefined ? { certFile: resolve(options.tlsCert), keyFile: resolve(options.tlsKey!) } : null,
    timeouts: { ...DEFAULTS.timeouts },
    signatures: { ...DEFAULTS.signatures },
  };
  writeConfig(dir, config);
  return { config, tokenFile };
}

export function writeConfig(dir: string, config: CoordinatorConfig): void {
  const path = join(dir, CONFIG_FILE);
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o640 });
  chmodSync(tmp, 0o640);
  renameSync(tmp, path);
}

export function readConfig(dir: string): CoordinatorConfig {
  const path = join(dir, CONFIG_FILE);
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch {
    return fail(`${path} cannot be read; run "init" first.`);
  }
  let value: unknown;
  try {
    value = parseJson(bytes, { maxBytes: CONFIG_MAX_BYTES });
  } catch (err) {
    return fail(`${path} is not valid JSON: ${(err as Error).message}.`);
  }
  return checkConfig(value, path);
}

function checkConfig(value: unknown, path: string): CoordinatorConfig {
  const bad = (what: string): never => fail(`${path}: ${what}.`);
  const c = value as Partial<CoordinatorConfig> | null;
  if (typeof c !== 'object' || c === null || Array.isArray(c)) return bad('not a JSON object');
  if (c.format !== CONFIG_FORMAT) bad(`format is not ${CONFIG_FORMAT}`);
  const text = (v: unknown) => typeof v === 'string' && v.length > 0;
  const hex64 = (v: unknown) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
  const seconds = (v: unknown) => Number.isSafeInteger(v) && (v as number) > 0 && (v as number) <= 3600;
  if (!text(c.database)) bad('database is not a file name');
  if (!c.trust || !text(c.trust.file) || !hex64(c.trust.sha256)) bad('trust needs file and sha256 (64 hex digits)');
  const entry = (e: TrustEntry | undefined) => !!e && text(e.file) && hex64(e.sha256) && Number.isSafeInteger(e.version) && e.version >= 1;
  if (c.trustHistory !== undefined) {
    const history = c.trustHistory;
    if (!Array.isArray(history) || history.length === 0 || !history.every(entry)) bad('trustHistory is not a list of {file, sha256, version}');
    if (!history.every((e, i) => i === 0 || e.version === history[i - 1]!.version + 1)) bad('trustHistory versions do not follow one another');
    if (history.at(-1)!.sha256 !== c.trust!.sha256) bad('trustHistory does not end with the pinned trust document');
  }
  if (!c.witness || !text(c.witness.keyFile) || !hex64(c.witness.keyid) || !text(c.witness.name)) bad('witness needs keyFile, keyid and name');
  if (!Array.isArray(c.operators) || !c.operators.every((o) => o && text(o.name) && hex64(o.tokenSha256))) {
    bad('operators is not a list of {name, tokenSha256}');
  }
  if (!text(c.listen)) bad('listen is not host:port');
  if (c.publicUrl !== null && c.publicUrl !== undefined && !/^https?:\/\/[^/?#]+$/.test(c.publicUrl)) bad('publicUrl is not scheme://host[:port]');
  if (c.tls !== null && c.tls !== undefined && (!text(c.tls.certFile) || !text(c.tls.keyFile))) bad('tls needs certFile and keyFile');
  const timeouts = { ...DEFAULTS.timeouts, ...(c.timeouts ?? {}) };
  if (!Object.values(timeouts).every(seconds)) bad('timeouts are not whole seconds between 1 and 3600');
  if (timeouts.headersSeconds > timeouts.requestSeconds) bad('timeouts.headersSeconds is longer than timeouts.requestSeconds');
  const signatures = { ...DEFAULTS.signatures, ...(c.signatures ?? {}) };
  if (!Object.values(signatures).every(seconds)) bad('signatures limits are not whole seconds between 1 and 3600');
  return { ...(c as CoordinatorConfig), publicUrl: c.publicUrl ?? null, tls: c.tls ?? null, timeouts, signatures };
}

/** Reads the state folder for `serve`: the pinned trust document (bytes checked), the witness key, tokens. */
export function loadState(dirArg: string, now: Date): LoadedState {
  const dir = resolve(dirArg);
  const config = readConfig(dir);
  const trustVersions = loadTrustHistory(dir, config);
  const trustBytes = trustVersions.get(config.trust.version)!;
  const trust = verifyTrustDocument(trustBytes, { now });
  const key = loadPrivateKey(inState(dir, config.witness.keyFile));
  if (key.keyid !== config.witness.keyid) fail(`The witness key file holds another key than the keyid in ${CONFIG_FILE}.`);
  const { name } = witnessEntry(trust, key);
  return {
    dir,
    config,
    trust,
    trustBytes,
    trustVersions,
    witness: { name, key },
    databasePath: inState(dir, config.database),
    operatorTokenHashes: config.operators.map((o) => Buffer.from(o.tokenSha256, 'hex')),
  };
}

/**
 * Every kept trust document, each byte for byte the one its entry pins, the first verified against its own
 * root keys and each next one as its successor under TUF's rule (expiry aside: old versions have expired).
 */
function loadTrustHistory(dir: string, config: CoordinatorConfig): Map<number, Buffer> {
  const versions = new Map<number, Buffer>();
  let previous: VerifiedTrust | undefined;
  for (const entry of config.trustHistory ?? [config.trust]) {
    const path = inState(dir, entry.file);
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch {
      return fail(`The trust document ${path} listed in ${CONFIG_FILE} cannot be read.`);
    }
    if (sha256Hex(bytes) !== entry.sha256) fail(`${path} is not the trust document pinned in ${CONFIG_FILE} (its SHA-256 differs).`);
    const verified = previous === undefined ? verifyTrustDocument(bytes) : verifyTrustUpdate(previous, bytes, undefined);
    if (verified.body.version !== entry.version) fail(`${path} is version ${verified.body.version}, not ${entry.version} as ${CONFIG_FILE} says.`);
    versions.set(entry.version, bytes);
    previous = verified;
  }
  return versions;
}

/**
 * Replaces the pinned trust document with its next version, under the runner's own rule (TUF 5.3: exactly one
 * more, signed by a threshold of the old and of the new root keys, not expired). The running coordinator picks
 * it up at its next start.
 */
export function updateTrust(dirArg: string, nextFile: string, now: Date): CoordinatorConfig {
  const state = loadState(dirArg, now);
  const nextBytes = readFileSync(nextFile);
  const next = verifyTrustUpdate(state.trust, nextBytes, now);
  witnessEntry(next, state.witness.key);
  const file = `trust-v${next.body.version}.dsse.json`;
  writeFileSync(join(state.dir, file), nextBytes, { mode: 0o644 });
  const pinned: TrustEntry = { file, sha256: sha256Hex(nextBytes), version: next.body.version };
  // The earlier versions stay, in the history and on disk: runners behind fetch each in turn.
  const config = { ...state.config, trust: pinned, trustHistory: [...(state.config.trustHistory ?? [state.config.trust]), pinned] };
  writeConfig(state.dir, config);
  return config;
}
