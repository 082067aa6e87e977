/**
 * A state folder as `status` and `config check` see it: read, never written, and without the private key.
 * loadState (runner/state/state.ts) is the runner's own opening, which refuses an expired trust document;
 * a monitoring check must instead say that it expired (exit 2), and must not need the key a run signs with.
 *
 * The checks: the folder's permissions first (as loadState), runner.json under its cap and strictly parsed,
 * and the trust file byte for byte the one runner.json pins (its SHA-256). Its signatures are not checked
 * again: the pin is what makes it the runner's trust (they were checked when it was pinned, by init or a
 * trust update, and anyone with a key can sign a document; only the pin says it is this one), and status
 * reads two members of it, `version` and `expires`. So this file imports neither state.ts nor trust.ts, and
 * through them neither ajv nor tweetnacl: loading those is most of a command's start (about 250 ms here),
 * and status is run by monitoring every minute (goal: 100 ms for the whole command). trust.ts is loaded
 * only to tell a trust update cut short (the file the verified successor of the pinned one in the history)
 * from a swapped file.
 */
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ConfigOverrides } from '../config/config.js';
import { sha256Hex } from '../core/digest.js';
import { parseEnvelope } from '../core/dsse.js';
import { parseJson } from '../core/json.js';
import { StateError } from '../state/errors.js';
import { verifyStatePermissions } from '../state/permissions.js';
import type { RunnerIdentity, StateLayout } from '../state/state.js';

const RUNNER_JSON_MAX_BYTES = 64 * 1024;
/** trust/trust.ts TRUST_MAX_BYTES (not imported: see above). */
const TRUST_MAX_BYTES = 512 * 1024;
const STATE_API_VERSION = 'edge-runner.dev/state/v1';
const TRUST_PAYLOAD_TYPE = 'application/vnd.edge-runner.trust.v1+json';
const RUNNER_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The paths status reads (named as state.ts's layoutOf names them; a test holds the two equal). */
export type StateViewLayout = Pick<StateLayout, 'dir' | 'config' | 'trust' | 'trustHistory' | 'database' | 'blobs'>;

export interface StateView {
  layout: StateViewLayout;
  identity: RunnerIdentity;
  /** The pinned trust document's version and expiry (RFC 3339). */
  trust: { version: number; expires: string };
  /**
   * trust.dsse.json is not the pinned document, which is in the history (state/trust/<version>.dsse.json):
   * a trust update cut short between its steps. The runner finishes it (or refuses it) when it next opens;
   * status reports the pinned one and this, the version trust.dsse.json holds.
   */
  pendingTrustVersion?: number;
}

export function stateViewLayoutOf(root: string): StateViewLayout {
  return {
    dir: root,
    config: join(root, 'runner.json'),
    trust: join(root, 'trust.dsse.json'),
    trustHistory: join(root, 'trust'),
    database: join(root, 'runner.db'),
    blobs: join(root, 'evidence', 'blobs'),
  };
}

export async function readStateView(dir: string): Promise<StateView> {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    throw new StateError('STATE_MISSING', `${dir} is not a runner state folder; create one with edge-runner init.`);
  }
  const layout = stateViewLayoutOf(real);
  if (!existsSync(layout.config)) {
    throw new StateError('STATE_MISSING', `${layout.dir} is not a runner state folder; create one with edge-runner init.`);
  }
  verifyStatePermissions(layout, { uid: process.geteuid?.() ?? 0 });
  const identity = readIdentity(layout);
  if (statSync(layout.trust).size > TRUST_MAX_BYTES) {
    throw new StateError('STATE_TRUST_INVALID', `The pinned trust document is larger than ${TRUST_MAX_BYTES} bytes.`, {
      trustCode: 'TRUST_TOO_LARGE',
    });
  }
  const bytes = readFileSync(layout.trust);
  const actual = sha256Hex(bytes);
  if (identity.trustSha256 !== actual) {
    // A trust update cut short: the pinned bytes are in the history and the file is their verified successor
    // (TUF's rule, as loadState checks it). Only then: trust.ts (ajv, tweetnacl) is loaded on this path alone.
    const pinned = identity.trustSha256 === undefined ? undefined : pinnedFromHistory(layout, identity.trustSha256);
    if (pinned !== undefined && (await isSuccessor(pinned, bytes))) {
      return { layout, identity, trust: readPinnedTrust(pinned), pendingTrustVersion: readPinnedTrust(bytes).version };
    }
    throw new StateError(
      'STATE_TRUST_MISMATCH',
      `${layout.trust} is not the trust document this runner pinned (sha256 ${actual}, pinned ${identity.trustSha256 ?? 'none'}).`,
      { pinned: identity.trustSha256 ?? '', actual },
    );
  }
  return { layout, identity, trust: readPinnedTrust(bytes) };
}

/** The state folder's configuration layer: runner.json's `settings` and `stepUser` (as runner.ts's configOf). */
export function stateSettings(identity: RunnerIdentity): ConfigOverrides {
  return { ...identity.settings, ...(identity.stepUser ? { stepUser: identity.stepUser } : {}) };
}

async function isSuccessor(pinned: Buffer, next: Buffer): Promise<boolean> {
  const { verifyTrustDocument, verifyTrustUpdate } = await import('../trust/trust.js');
  try {
    verifyTrustUpdate(verifyTrustDocument(pinned), next, undefined);
    return true;
  } catch {
    return false;
  }
}

/** The history's document with the pinned digest, if any (runner/state/state.ts keeps one per version). */
function pinnedFromHistory(layout: StateViewLayout, digest: string): Buffer | undefined {
  let names: string[];
  try {
    names = readdirSync(layout.trustHistory);
  } catch {
    return undefined;
  }
  for (const name of names) {
    if (!/^[1-9][0-9]{0,15}\.dsse\.json$/.test(name)) continue;
    const path = join(layout.trustHistory, name);
    const stats = lstatSync(path);
    if (!stats.isFile() || stats.size > TRUST_MAX_BYTES) continue;
    const bytes = readFileSync(path);
    if (sha256Hex(bytes) === digest) return bytes;
  }
  return undefined;
}

/** `version` and `expires` of the pinned trust document's payload. */
function readPinnedTrust(bytes: Buffer): { version: number; expires: string } {
  try {
    const envelope = parseEnvelope(parseJson(bytes, { maxBytes: TRUST_MAX_BYTES }));
    if (envelope.payloadType !== TRUST_PAYLOAD_TYPE) throw new Error('not a trust document');
    const body = parseJson(Buffer.from(envelope.payload, 'base64')) as { version?: unknown; expires?: unknown };
    if (!Number.isSafeInteger(body.version) || typeof body.expires !== 'string' || Number.isNaN(Date.parse(body.expires))) {
      throw new Error('no version or expiry');
    }
    return { version: body.version as number, expires: body.expires };
  } catch (cause) {
    throw new StateError(
      'STATE_TRUST_INVALID',
      'The pinned trust document cannot be read (TRUST_UNPARSEABLE).',
      { trustCode: 'TRUST_UNPARSEABLE' },
      { cause },
    );
  }
}

function readIdentity(layout: StateViewLayout): RunnerIdentity {
  let identity: RunnerIdentity;
  try {
    identity = parseJson(readFileSync(layout.config), { maxBytes: RUNNER_JSON_MAX_BYTES }) as RunnerIdentity;
    if (identity.apiVersion !== STATE_API_VERSION || !RUNNER_ID.test(identity.id)) throw new Error('bad identity');
    if (!Array.isArray(identity.labels) || !identity.labels.every((label) => typeof label === 'string')) throw new Error('bad labels');
    if (identity.settings !== undefined && (typeof identity.settings !== 'object' || identity.settings === null)) throw new Error('bad settings');
  } catch (cause) {
    throw new StateError('STATE_CORRUPT', `The runner configuration ${layout.config} is unreadable.`, {}, { cause });
  }
  return identity;
}
