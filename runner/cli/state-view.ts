/**
 * A state folder as `status` and `config check` see it: read, never written, and without the private key.
 * loadState (runner/state/state.ts) is the runner's own opening, which refuses an expired trust document;
 * a monitoring check must instead say that it expired (exit 2), and must not need the key a run signs with.
 * The same checks otherwise: the folder's permissions first, runner.json under its cap and strictly parsed,
 * the trust file byte for byte the pinned one and signed by its root keys (its expiry reported, not applied).
 */
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { sha256Hex } from '../core/digest.js';
import { isCodedError } from '../core/errors.js';
import { parseJson } from '../core/json.js';
import { StateError } from '../state/errors.js';
import { verifyStatePermissions } from '../state/permissions.js';
import { isRunnerId, layoutOf, STATE_API_VERSION, type RunnerIdentity, type StateLayout } from '../state/state.js';
import type { ConfigOverrides } from '../config/config.js';
import { TRUST_MAX_BYTES, verifyTrustDocument, type VerifiedTrust } from '../trust/trust.js';

const RUNNER_JSON_MAX_BYTES = 64 * 1024;

export interface StateView {
  layout: StateLayout;
  identity: RunnerIdentity;
  /** Verified against its own root keys, its expiry not applied (the caller compares it with its clock). */
  trust: VerifiedTrust;
}

export function readStateView(dir: string): StateView {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    throw new StateError('STATE_MISSING', `${dir} is not a runner state folder; create one with edge-runner init.`);
  }
  const layout = layoutOf(real);
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
    throw new StateError(
      'STATE_TRUST_MISMATCH',
      `${layout.trust} is not the trust document this runner pinned (sha256 ${actual}, pinned ${identity.trustSha256 ?? 'none'}).`,
      { pinned: identity.trustSha256 ?? '', actual },
    );
  }
  let trust: VerifiedTrust;
  try {
    trust = verifyTrustDocument(bytes);
  } catch (err) {
    const code = isCodedError(err) ? err.code : 'TRUST_UNPARSEABLE';
    throw new StateError('STATE_TRUST_INVALID', `The pinned trust document does not verify (${code}).`, { trustCode: code }, { cause: err });
  }
  return { layout, identity, trust };
}

/** The state folder's configuration layer: runner.json's `settings` and `stepUser` (as runner.ts's configOf). */
export function stateSettings(identity: RunnerIdentity): ConfigOverrides {
  return { ...identity.settings, ...(identity.stepUser ? { stepUser: identity.stepUser } : {}) };
}

function readIdentity(layout: StateLayout): RunnerIdentity {
  let identity: RunnerIdentity;
  try {
    identity = parseJson(readFileSync(layout.config), { maxBytes: RUNNER_JSON_MAX_BYTES }) as RunnerIdentity;
    if (identity.apiVersion !== STATE_API_VERSION || !isRunnerId(identity.id)) throw new Error('bad identity');
    if (!Array.isArray(identity.labels) || !identity.labels.every((label) => typeof label === 'string')) throw new Error('bad labels');
    if (identity.settings !== undefined && (typeof identity.settings !== 'object' || identity.settings === null)) throw new Error('bad settings');
  } catch (cause) {
    const missing = (cause as NodeJS.ErrnoException).code === 'ENOENT';
    throw missing
      ? new StateError('STATE_MISSING', `${layout.dir} is not a runner state folder; create one with edge-runner init.`)
      : new StateError('STATE_CORRUPT', `The runner configuration ${layout.config} is unreadable.`, {}, { cause });
  }
  return identity;
}
