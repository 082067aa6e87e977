/**
 * Counting approvals for one change at one decision time (the "Authorize" rules). Verified
 * approvals in, what counts and why each other one does not out; the same inputs in any order give the
 * same answer. Pure: the decision time is a value the caller read once.
 */
import { DEFAULT_CLOCK_SKEW_MS } from '../capsule/verify.js';
import { toPrintableExcerpt } from '../core/printable.js';
import type { VerifiedTrust } from '../trust/trust.js';
import type { VerifiedApproval } from './approval.js';
import type { ApprovalErrorCode } from './errors.js';
import { byCodeUnit } from './surfaces.js';
import type { Requirement, Tier } from './types.js';

/** The longest an approval may be valid when the policy does not say (approvalMaxSeconds): 7 days. */
export const DEFAULT_APPROVAL_MAX_SECONDS = 7 * 24 * 3600;

export interface CountInput {
  approvals: readonly VerifiedApproval[];
  /** The change digest the approvals must be bound to. */
  changeDigest: string;
  /** The proposal bundle's evidence digest they must name. */
  proposal: string;
  /**
   * What the proposal was: the runner that made it (its name), the change target, the capsule. An approval
   * whose predicate names another is refused, though its digests bind it here: a person read those fields.
   */
  proposed?: { runner: string; target: string; capsule: { id: string; digest: string } };
  tier: Tier;
  /** Keyids that signed the capsule: their persons (by name, any of their keys) may not approve. */
  capsuleSigners: readonly string[];
  trust: VerifiedTrust;
  /** The decision time: a `change.applying` or `change.refused` record's `at`, or the clock read once. */
  decisionTime: Date;
  /** Default: the policy's approvalMaxSeconds, else DEFAULT_APPROVAL_MAX_SECONDS. */
  maxLifetimeSeconds?: number;
  /** How far an approver's clock may run ahead of the decision time (signedAt after it). Default 60 s, as for capsules. */
  clockSkewMs?: number;
}

export interface RefusedApproval {
  approval: VerifiedApproval;
  code: ApprovalErrorCode;
  message: string;
}

export interface ApprovalCount {
  /** One `approve` per person, sorted by person (personOf the approver name). */
  counted: VerifiedApproval[];
  /** Every other approval with its code, sorted by digest. */
  refused: RefusedApproval[];
  /** One `reject` per person who rejected the change and could have approved it, sorted by person. */
  vetoes: VerifiedApproval[];
  /** Enough counted persons for every requirement, change control met, and no veto. */
  satisfied: boolean;
  /** Each requirement not yet met, with the number of persons still needed. */
  missing: Requirement[];
  /** The tier needs no change control, or a counted approval carries a change ticket. */
  changeControlMet: boolean;
}

/**
 * Counts, for each approval in digest order: the key still holds the approver role under the name the
 * approval gives (APPROVAL_SIGNATURE), it is bound to this change digest (APPROVAL_WRONG_CHANGE) and
 * proposal (APPROVAL_WRONG_PROPOSAL) and names the proposal's target, runner and capsule (the same codes),
 * it was signed by the decision time plus the skew
 * (APPROVAL_NOT_YET_VALID) and expires after it (APPROVAL_EXPIRED), it is valid no longer than the policy
 * allows (APPROVAL_TOO_LONG), its person signed no part of the capsule (APPROVAL_SELF: by name, so another
 * key of the same person is refused too), the person is in a required group when every requirement names
 * one (APPROVAL_GROUP), and with change control it carries a ticket (APPROVAL_CHANGE_TICKET). Then once
 * per person (APPROVAL_DUPLICATE_PERSON; a person is a key name without case, personOf): a person's reject is a veto and outweighs their approvals;
 * among a person's approvals the one with the smallest digest counts.
 */
export function countApprovals(input: CountInput): ApprovalCount {
  const { tier, trust } = input;
  const refused: RefusedApproval[] = [];
  const refuse = (approval: VerifiedApproval, code: ApprovalErrorCode, message: string) => refused.push({ approval, code, message });

  const seen = new Set<string>();
  const eligible = new Map<string, VerifiedApproval[]>();
  for (const approval of [...input.approvals].sort((a, b) => byCodeUnit(a.digest, b.digest))) {
    if (seen.has(approval.digest)) {
      refuse(approval, 'APPROVAL_DUPLICATE_PERSON', 'The same approval was given twice; it counts once.');
      continue;
    }
    seen.add(approval.digest);
    const problem = checkOne(approval, input);
    if (problem) {
      refuse(approval, ...problem);
      continue;
    }
    const person = personOf(approval.approver);
    eligible.set(person, [...(eligible.get(person) ?? []), approval]);
  }

  const counted: VerifiedApproval[] = [];
  const vetoes: VerifiedApproval[] = [];
  for (const [, theirs] of [...eligible.entries()].sort(([a], [b]) => byCodeUnit(a, b))) {
    const rejects = theirs.filter((approval) => approval.predicate.decision === 'reject');
    const kept = rejects[0] ?? theirs[0]!;
    (rejects.length > 0 ? vetoes : counted).push(kept);
    const who = toPrintableExcerpt(theirs[0]!.approver);
    for (const other of theirs) {
      if (other === kept) continue;
      refuse(
        other,
        'APPROVAL_DUPLICATE_PERSON',
        rejects.length > 0
          ? `${who} rejected this change; their other decisions do not count.`
          : `${who} already approved this change; a person counts once.`,
      );
    }
  }

  const missing: Requirement[] = [];
  for (const requirement of tier.requirements) {
    const members = requirement.group === undefined ? undefined : groupMembers(trust, requirement.group);
    const have = counted.filter((approval) => members === undefined || members.has(approval.approver)).length;
    if (have < requirement.approvals) {
      missing.push({ ...(requirement.group === undefined ? {} : { group: requirement.group }), approvals: requirement.approvals - have });
    }
  }
  // The tier's total is the largest requirement when derived; a tier given otherwise still needs it.
  if (missing.length === 0 && counted.length < tier.approvals) missing.push({ approvals: tier.approvals - counted.length });
  const changeControlMet = !tier.changeControl || counted.some((approval) => approval.predicate.changeTicket !== undefined);
  return {
    counted,
    refused: refused.sort((a, b) => byCodeUnit(a.approval.digest, b.approval.digest)),
    vetoes,
    satisfied: missing.length === 0 && changeControlMet && vetoes.length === 0,
    missing,
    changeControlMet,
  };
}

function checkOne(approval: VerifiedApproval, input: CountInput): [ApprovalErrorCode, string] | undefined {
  const { trust, tier, decisionTime } = input;
  const { predicate } = approval;
  const at = decisionTime.getTime();
  const key = trust.keys.find((candidate) => candidate.keyid === approval.keyid);
  if (key === undefined || !key.roles.includes('approver') || trust.nameOf(approval.keyid) !== approval.approver) {
    return ['APPROVAL_SIGNATURE', 'The approval is not signed by an approver key of this trust document under the name it gives.'];
  }
  if (approval.changeDigest !== input.changeDigest) return ['APPROVAL_WRONG_CHANGE', 'The approval is for another change.'];
  if (predicate.proposal !== input.proposal) return ['APPROVAL_WRONG_PROPOSAL', 'The approval names another proposal bundle.'];
  const { proposed } = input;
  if (proposed !== undefined) {
    if (predicate.target !== proposed.target) return ['APPROVAL_WRONG_CHANGE', 'The approval names another change target.'];
    if (predicate.runner !== proposed.runner)
      return ['APPROVAL_WRONG_PROPOSAL', 'The approval names another runner than the one that proposed the change.'];
    if (predicate.capsule.id !== proposed.capsule.id || predicate.capsule.digest !== proposed.capsule.digest) {
      return ['APPROVAL_WRONG_PROPOSAL', 'The approval names another capsule than the one the change was proposed by.'];
    }
  }
  const signedAt = Date.parse(predicate.signedAt);
  const notAfter = Date.parse(predicate.notAfter);
  if (signedAt > at + (input.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS)) {
    return ['APPROVAL_NOT_YET_VALID', `The approval was signed at ${predicate.signedAt}, after the decision time ${decisionTime.toISOString()}.`];
  }
  if (notAfter <= at) {
    return ['APPROVAL_EXPIRED', `The approval expired at ${predicate.notAfter}, before the decision time ${decisionTime.toISOString()}.`];
  }
  const maxSeconds = input.maxLifetimeSeconds ?? trust.body.policy.remediation?.approvalMaxSeconds ?? DEFAULT_APPROVAL_MAX_SECONDS;
  if (notAfter - signedAt > maxSeconds * 1000) {
    return ['APPROVAL_TOO_LONG', `The approval is valid for longer than the ${maxSeconds} seconds the policy allows.`];
  }
  const signerNames = new Set(input.capsuleSigners.flatMap((keyid) => (trust.nameOf(keyid) === undefined ? [] : [personOf(trust.nameOf(keyid)!)])));
  if (input.capsuleSigners.includes(approval.keyid) || signerNames.has(personOf(approval.approver))) {
    return ['APPROVAL_SELF', `${toPrintableExcerpt(approval.approver)} signed the capsule; the proposer cannot authorize their own change.`];
  }
  const groups = tier.requirements.map((requirement) => requirement.group);
  if (groups.length > 0 && groups.every((group) => group !== undefined)) {
    if (!groups.some((group) => groupMembers(trust, group).has(approval.approver))) {
      return [
        'APPROVAL_GROUP',
        `${toPrintableExcerpt(approval.approver)} is in none of the groups this change needs approvals from (${groups.join(', ')}).`,
      ];
    }
  }
  if (tier.changeControl && predicate.decision === 'approve' && predicate.changeTicket === undefined) {
    return ['APPROVAL_CHANGE_TICKET', 'This change requires change control and the approval carries no change ticket.'];
  }
  return undefined;
}

/**
 * The person a trust document's key name stands for: the name without case (names are ASCII: letters,
 * digits, `._@-`). Names are often addresses, and Alice@Example.com is alice@example.com: a root that
 * enrolled one person's two keys under two spellings must not give them two approvals, or let one spelling
 * approve what the other signed. Group membership stays exact (a spelling the group does not list is out).
 */
export function personOf(name: string): string {
  return name.toLowerCase();
}

/** The persons of a policy group (own members only: `constructor` is a valid group name). */
function groupMembers(trust: VerifiedTrust, group: string): ReadonlySet<string> {
  const groups = trust.body.policy.remediation?.groups ?? {};
  return new Set(Object.hasOwn(groups, group) ? groups[group] : []);
}
