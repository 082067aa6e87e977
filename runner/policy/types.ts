/**
 * The vocabulary of governed remediation, shared by the policy (what a change needs), the remediation state
 * machine (what happened to it) and the evidence (what an approver and an auditor read). Pure types.
 */

/** What a change does to one file of its target: paths come from the signed change. */
export type FileAction = 'add' | 'modify' | 'delete';

export interface FootprintFile {
  /** Relative to the change target, '/'-separated. */
  path: string;
  action: FileAction;
  linesAdded: number;
  linesRemoved: number;
}

/** Everything a change touches, derived from the change and the signed policy, never from the capsule's words. */
export interface Footprint {
  /** Sorted by path (code-unit order), one entry per path. */
  files: FootprintFile[];
  linesAdded: number;
  linesRemoved: number;
  /** The surfaces the files belong to (a path matching no pattern is on `unclassified`), sorted. */
  surfaces: string[];
  /** The surfaces that depend on a touched one through the policy's system graph, transitively, not touched themselves; sorted. */
  dependents: string[];
}

/** One surface's contribution to the tier: which rule applied, and why it is in the footprint. */
export interface TierRule {
  surface: string;
  via: 'touched' | 'dependent';
  /** `rule`: the policy's rule for that surface; `default`: the policy's default rule. */
  source: 'rule' | 'default';
  /** The approvals this surface needs once no-autonomy and auto-apply are taken into account. */
  approvals: number;
  group?: string;
  changeControl: boolean;
  noAutonomy: boolean;
  autoApply: boolean;
}

/** k distinct persons from a group (or from every approver, `group` absent). */
export interface Requirement {
  group?: string;
  approvals: number;
}

/** What the change needs: the strictest of its surfaces' rules. */
export interface Tier {
  /** Distinct persons required in all: the largest of the requirements (0: the change may apply on its own). */
  approvals: number;
  /** Each must be met by distinct persons of its group; one person may count toward several. Sorted by group. */
  requirements: Requirement[];
  /** A counted approval must carry a change ticket. */
  changeControl: boolean;
  /** Every surface's rule, in surface order. */
  rules: TierRule[];
  /** The capsule's own claim (`change.declaredTier`), compared with the derived tier; the derived one always wins. */
  declared?: { approvals: number; comparison: 'matches' | 'understated' | 'overstated' };
}

export type ApprovalDecision = 'approve' | 'reject';
