/**
 * The trust document: the runner's root of trust, shaped after a TUF root (keys, roles with thresholds,
 * version, expiry) plus the signed policy. Pure: bytes and a clock value in, a verified document out.
 */
import { PublicKey } from '../core/ed25519.js';
import { DsseError, parseEnvelope, verifyEnvelope, type Envelope, type TrustedKey } from '../core/dsse.js';
import { JsonError, parseJson } from '../core/json.js';
import { isCodedError } from '../core/errors.js';
import { checkSchema } from '../core/schema.js';
import { TrustError } from './errors.js';
import trustSchema from './trust.schema.json' with { type: 'json' };

export const TRUST_PAYLOAD_TYPE = 'application/vnd.edge-runner.trust.v1+json';
export const TRUST_API_VERSION = 'edge-runner.dev/trust/v1';
export const TRUST_MAX_BYTES = 512 * 1024;

export type Role = 'root' | 'capsule-signer' | 'runner' | 'approver' | 'witness';
/** Roles every trust document lists; `witness` (the coordinator's cosigning key) is optional. */
export type RequiredRole = Exclude<Role, 'witness'>;
export type CapsuleKind = 'reproduce' | 'validate' | 'remediate';
/** `skip`: missed slots are recorded, not run. `latest-once`: recorded, and the latest one is run once. */
export type ScheduleCatchUp = 'skip' | 'latest-once';

export interface TrustDocumentBody {
  apiVersion: typeof TRUST_API_VERSION;
  version: number;
  expires: string;
  keys: Record<string, { publicKey: string; name: string; roles: Role[] }>;
  roles: Record<RequiredRole, { threshold: number }> & { witness?: { threshold: number } };
  policy: {
    allowedKinds: CapsuleKind[];
    maxCapsuleBytes?: number;
    /** What a recurring capsule does about slots missed while the runner was down (default `skip`). */
    schedule?: { catchUp: ScheduleCatchUp };
    /** Governed remediation (runner/policy/): without it, remediate capsules are refused. */
    remediation?: RemediationPolicy;
  };
}

/**
 * How many named people must approve a change, derived from what it touches (runner/policy/tier.ts):
 * `surfaces` map path patterns (path.matchesGlob, relative to the change target) to surface names; a path
 * matching none is on the surface `unclassified`. `dependsOn` is the system graph: `payments: [ledger]`
 * says payments depends on ledger, so a change to ledger also reaches payments. `rules` give each surface's
 * approvals (distinct persons, from `group` when set, else any approver), `default` every other surface's.
 */
export interface RemediationPolicy {
  surfaces: Record<string, string[]>;
  dependsOn?: Record<string, string[]>;
  rules: Record<string, ApprovalRule>;
  default: ApprovalRule;
  /** Approver groups: group name -> names of persons (key names holding the approver role). */
  groups?: Record<string, string[]>;
  /** Surfaces a change may never touch or reach without at least one human approval. */
  noAutonomy?: string[];
  /** Surfaces whose changes may apply with zero approvals when their rule says 0 (never a no-autonomy one). */
  autoApply?: string[];
  /** The longest an approval may be valid for, from its signing to its notAfter, in seconds (default 7 days). */
  approvalMaxSeconds?: number;
}

export interface ApprovalRule {
  /** Distinct persons who must approve (0 only takes effect on an autoApply surface). */
  approvals: number;
  /** The approver group they must belong to; absent: any key name holding the approver role. */
  group?: string;
  /** A counted approval must carry a change-control reference (a change ticket). */
  changeControl?: boolean;
}

/** The surface of a path that no pattern of the policy names. */
export const UNCLASSIFIED_SURFACE = 'unclassified';

export interface VerifiedTrust {
  body: TrustDocumentBody;
  keys: TrustedKey[];
  /** The envelope as received, so a runner can pin exactly these bytes. */
  envelope: Envelope;
  /** Root keyids whose signatures verified. */
  signers: string[];
  keyByName(name: string, role: Role): TrustedKey | undefined;
  nameOf(keyid: string): string | undefined;
}

export interface TrustVerifyOptions {
  /** One clock reading for the whole decision. Omit to skip the expiry check (offline audit of old bundles). */
  now?: Date;
}

/** Parses and verifies a signed trust document against its own root keys (a pinned or first root). */
export function verifyTrustDocument(bytes: Uint8Array, options: TrustVerifyOptions = {}): VerifiedTrust {
  const envelope = parseTrustEnvelope(bytes);
  const body = parseTrustBody(Buffer.from(envelope.payload, 'base64'));
  const keys = toTrustedKeys(body);
  verifyRoles(body);
  const verified = verifyAgainst(envelope, keys, body.roles.root.threshold);
  // The payload we keep is the verified one; re-parse from it so nothing unverified is used.
  const verifiedBody = parseTrustBody(verified.payload);
  checkExpiry(verifiedBody, options.now);
  return makeVerified(verifiedBody, toTrustedKeys(verifiedBody), envelope, verified.signers);
}

/** What the caller knows about an update besides its bytes. */
export interface TrustUpdateOptions {
  /**
   * The version the document was offered as (a coordinator's `GET /v1/trust/{version}`): a document that
   * carries a higher version than it was offered as is a fast-forward (TRUST_FAST_FORWARD), not a step.
   */
  offeredVersion?: number;
}

/**
 * TUF client workflow 5.3 applied to our trust document: a new version is accepted only if it is exactly
 * one more than the trusted one, is signed by a threshold of the old root keys and of its own root keys,
 * and has not expired. Never goes back to a lower version. The trusted document itself may have expired
 * (TUF checks expiry on the final root only): that is how an expired runner is brought back. `now`
 * undefined skips the expiry check (finishing an update the log already recorded, auditing a chain).
 */
export function verifyTrustUpdate(
  current: VerifiedTrust,
  nextBytes: Uint8Array,
  now: Date | undefined,
  options: TrustUpdateOptions = {},
): VerifiedTrust {
  const envelope = parseTrustEnvelope(nextBytes);
  // 5.3.4: signed by a threshold of the trusted root keys.
  const old = verifyAgainst(envelope, current.keys, current.body.roles.root.threshold);
  const body = parseTrustBody(old.payload);
  // 5.3.5: rollback protection.
  if (body.version <= current.body.version) {
    throw new TrustError('TRUST_ROLLBACK', `Trust document version ${body.version} is not newer than the pinned version ${current.body.version}.`, {
      version: body.version,
      pinned: current.body.version,
    });
  }
  if (options.offeredVersion !== undefined && body.version > options.offeredVersion) {
    throw new TrustError(
      'TRUST_FAST_FORWARD',
      `The trust document offered as version ${options.offeredVersion} carries version ${body.version}; versions are taken one at a time.`,
      { version: body.version, offered: options.offeredVersion, pinned: current.body.version },
    );
  }
  if (body.version !== current.body.version + 1) {
    throw new TrustError(
      'TRUST_VERSION_SKIP',
      `Trust document version ${body.version} skips past ${current.body.version + 1}; apply ${current.body.version + 1} first.`,
      {
        version: body.version,
        pinned: current.body.version,
      },
    );
  }
  const keys = toTrustedKeys(body);
  verifyRoles(body);
  const own = verifyAgainst(envelope, keys, body.roles.root.threshold);
  checkExpiry(body, now);
  return makeVerified(body, keys, envelope, own.signers);
}

/** The version a trust document claims, read without verifying anything (for a refusal's record only). */
export function claimedTrustVersion(bytes: Uint8Array): number | undefined {
  try {
    const body = parseTrustBody(Buffer.from(parseTrustEnvelope(bytes).payload, 'base64'));
    return body.version;
  } catch {
    return undefined;
  }
}

function parseTrustEnvelope(bytes: Uint8Array): Envelope {
  if (bytes.length > TRUST_MAX_BYTES) {
    throw new TrustError('TRUST_TOO_LARGE', `The trust document is larger than ${TRUST_MAX_BYTES} bytes.`);
  }
  try {
    // One parser for every outside document: a member name used twice (two payloads) is refused.
    return parseEnvelope(parseJson(bytes));
  } catch (cause) {
    const why = cause instanceof JsonError ? `: ${cause.message}` : '';
    throw new TrustError('TRUST_UNPARSEABLE', `The trust document is not a DSSE envelope in JSON${why}.`, {}, { cause });
  }
}

function parseTrustBody(payload: Buffer): TrustDocumentBody {
  let value: unknown;
  try {
    value = parseJson(payload);
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    throw new TrustError('TRUST_UNPARSEABLE', `The trust document payload is not valid JSON: ${cause.message}.`, {}, { cause });
  }
  const problem = checkSchema(trustSchema, value);
  if (problem) {
    throw new TrustError('TRUST_SCHEMA', `The trust document does not match its schema at ${problem.path}: ${problem.message}.`);
  }
  return value as TrustDocumentBody;
}

function toTrustedKeys(body: TrustDocumentBody): TrustedKey[] {
  return Object.entries(body.keys).map(([keyid, entry]) => {
    let publicKey: PublicKey;
    try {
      publicKey = PublicKey.fromPem(entry.publicKey);
    } catch (cause) {
      // PublicKey refuses small-order points and non-canonical encodings (DESIGN.md, Keys): enrolling the
      // identity point as a capsule signer would let anyone sign capsules.
      const reason = isCodedError(cause) && typeof cause.details.reason === 'string' ? cause.details.reason : 'unreadable';
      throw new TrustError(
        'TRUST_KEY_INVALID',
        `The key named ${entry.name} is not a usable Ed25519 public key (${reason}).`,
        { keyid, reason },
        { cause },
      );
    }
    if (publicKey.keyid !== keyid) {
      throw new TrustError('TRUST_KEYID_MISMATCH', `The keyid listed for ${entry.name} is not the SHA-256 of its public key.`, { keyid });
    }
    return { keyid, publicKey, roles: entry.roles };
  });
}

/**
 * A document that cannot be satisfied or that is ambiguous is refused, whoever signed it (TUF leaves this
 * to the repository; we check it on both sides, `trust sign` and every load, since the same function runs):
 * - every role's threshold is reachable. Keys are counted once per key, and approvers once per name,
 *   because approvals are counted once per person (DESIGN.md, governed remediation). A role other than root
 *   that no key holds is not in use: nothing signed for it is accepted (runners are enrolled after `init`,
 *   approvals are not built yet, an auditor's document may list only runners); root must always be reachable;
 * - a runner key holds only the runner role: evidence, capsules and trust updates are signed by different
 *   keys, so a runner (a key on a host) can never sign its own work or its own trust;
 * - a runner's name (its runner id, what evidence is attributed to) belongs to that one key alone.
 * Two keyids for one key cannot occur: each keyid must be the SHA-256 of its key's canonical SPKI encoding
 * (TRUST_KEYID_MISMATCH), non-canonical encodings are refused (TRUST_KEY_INVALID), and a keyid listed twice
 * is a duplicate JSON member (TRUST_UNPARSEABLE).
 */
function verifyRoles(body: TrustDocumentBody): void {
  const entries = Object.entries(body.keys);
  for (const [keyid, entry] of entries) {
    // A witness key (the coordinator's cosigning key) holds only its own role too: a cosignature is a
    // statement about a runner's log, never a signature on capsules, trust or evidence.
    for (const sole of ['runner', 'witness'] as const) {
      if (entry.roles.includes(sole) && entry.roles.length > 1) {
        const others = entry.roles.filter((role) => role !== sole).join(', ');
        throw new TrustError(
          'TRUST_ROLE_CONFLICT',
          `The ${sole} key ${entry.name} also holds the ${others} role; a ${sole} key holds only the ${sole} role.`,
          { keyid },
        );
      }
    }
    if (entry.roles.includes('runner')) {
      const namesake = entries.find(([other, e]) => other !== keyid && e.name === entry.name);
      if (namesake) {
        throw new TrustError('TRUST_NAME_DUPLICATE', `Two keys are named ${entry.name}; a runner's name belongs to one key only.`, {
          keyids: [keyid, namesake[0]].sort(),
        });
      }
    }
  }
  verifyRemediationPolicy(body);
  for (const role of ['root', 'capsule-signer', 'runner', 'approver', 'witness'] as const) {
    const holders = entries.filter(([, entry]) => entry.roles.includes(role));
    const count = role === 'approver' ? new Set(holders.map(([, entry]) => entry.name)).size : holders.length;
    // The witness role is optional: a document without it has no cosigning key in use.
    const threshold = body.roles[role]?.threshold ?? 1;
    if (count === 0 && role !== 'root') continue;
    if (threshold > count) {
      const unit = role === 'approver' ? 'distinct approver name' : `${role} key`;
      throw new TrustError(
        'TRUST_THRESHOLD_UNSATISFIABLE',
        `The ${role} threshold is ${threshold} but the document lists ${count} ${unit}${count === 1 ? '' : 's'}.`,
        { role, threshold, actual: count },
      );
    }
  }
}

/**
 * A remediation policy that cannot be met or says two things is refused (TRUST_POLICY_INVALID): every surface
 * it names is declared (or `unclassified`), every group it names exists and holds only approver names, a
 * rule never asks for more persons than can approve, and no surface is both auto-applied and no-autonomy.
 */
function verifyRemediationPolicy(body: TrustDocumentBody): void {
  const policy = body.policy.remediation;
  if (policy === undefined) return;
  const invalid = (why: string, details: Record<string, unknown> = {}) =>
    new TrustError('TRUST_POLICY_INVALID', `The remediation policy ${why}.`, details);
  const surfaces = new Set([...Object.keys(policy.surfaces), UNCLASSIFIED_SURFACE]);
  const named: Array<[string, string]> = [
    ...Object.entries(policy.dependsOn ?? {}).flatMap(([from, to]) => [from, ...to].map((s) => ['dependsOn', s] as [string, string])),
    ...Object.keys(policy.rules).map((s) => ['rules', s] as [string, string]),
    ...(policy.noAutonomy ?? []).map((s) => ['noAutonomy', s] as [string, string]),
    ...(policy.autoApply ?? []).map((s) => ['autoApply', s] as [string, string]),
  ];
  for (const [where, surface] of named) {
    if (!surfaces.has(surface)) throw invalid(`names the surface "${surface}" in ${where}, which no surface pattern declares`, { surface });
  }
  const both = (policy.autoApply ?? []).find((s) => (policy.noAutonomy ?? []).includes(s));
  if (both !== undefined) throw invalid(`lists "${both}" both as auto-apply and as no-autonomy`, { surface: both });
  const approverNames = new Set(
    Object.values(body.keys)
      .filter((entry) => entry.roles.includes('approver'))
      .map((entry) => entry.name),
  );
  for (const [group, members] of Object.entries(policy.groups ?? {})) {
    const stranger = members.find((name) => !approverNames.has(name));
    if (stranger !== undefined) throw invalid(`puts "${stranger}" in the group "${group}", but no approver key has that name`, { group });
  }
  for (const [surface, rule] of [...Object.entries(policy.rules), ['default', policy.default] as const]) {
    // Own members only: a group named `constructor` must not find Object's.
    const groups = policy.groups ?? {};
    const pool = rule.group === undefined ? approverNames.size : Object.hasOwn(groups, rule.group) ? groups[rule.group]!.length : undefined;
    if (pool === undefined) throw invalid(`gives "${surface}" the group "${rule.group}", which it does not define`, { surface });
    // The fewest persons the rule can need: a no-autonomy surface needs one even when its rule says 0.
    const needed = Math.max(rule.approvals, (policy.noAutonomy ?? []).includes(surface) ? 1 : 0);
    if (needed > pool) {
      throw invalid(`asks ${needed} approvals for "${surface}" from ${pool} person${pool === 1 ? '' : 's'} who can approve`, { surface });
    }
  }
}

function verifyAgainst(envelope: Envelope, keys: TrustedKey[], threshold: number) {
  try {
    return verifyEnvelope(envelope, { payloadType: TRUST_PAYLOAD_TYPE, keys, role: 'root', threshold });
  } catch (err) {
    if (err instanceof DsseError) {
      throw new TrustError('TRUST_SIGNATURE', `The trust document is not signed by enough root keys: ${err.message}`, {
        dsse: err.code,
        ...err.details,
      });
    }
    throw err;
  }
}

function checkExpiry(body: TrustDocumentBody, now: Date | undefined): void {
  if (now && Date.parse(body.expires) <= now.getTime()) {
    throw new TrustError('TRUST_EXPIRED', `The trust document expired at ${body.expires}.`);
  }
}

function makeVerified(body: TrustDocumentBody, keys: TrustedKey[], envelope: Envelope, signers: string[]): VerifiedTrust {
  return {
    body,
    keys,
    envelope,
    signers,
    keyByName: (name, role) => keys.find((key) => body.keys[key.keyid]?.name === name && key.roles.includes(role)),
    nameOf: (keyid) => body.keys[keyid]?.name,
  };
}
