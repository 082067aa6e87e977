/**
 * The tier of a change: how many distinct named people must approve it, from which groups, and whether
 * change control is required, derived from its footprint and the signed policy. The strictest surface wins;
 * the capsule's own claim is only compared. Pure.
 */
import type { RemediationPolicy } from '../trust/trust.js';
import { byCodeUnit } from './surfaces.js';
import type { Footprint, Requirement, Tier, TierRule } from './types.js';

/**
 * For every touched and dependent surface, its rule (or the policy's default): the approvals it asks,
 * raised to one when the surface is on the no-autonomy list, when it asks none but is not on the
 * auto-apply list (zero takes effect only where the policy names the surface), and when it asks none but
 * requires change control (a change ticket needs a person to carry it). The tier is the largest of them;
 * each group's requirement is the largest any surface asks of that group (no group: any approver).
 */
export function deriveTier(footprint: Footprint, policy: RemediationPolicy, declared?: { approvals: number }): Tier {
  const via = new Map<string, TierRule['via']>([
    ...footprint.dependents.map((surface) => [surface, 'dependent'] as const),
    ...footprint.surfaces.map((surface) => [surface, 'touched'] as const),
  ]);
  if (via.size === 0) throw new TypeError('A footprint without a surface has no tier: a change touches at least one file.');
  const rules = [...via.keys()].sort(byCodeUnit).map((surface) => ruleFor(surface, via.get(surface)!, policy));
  const byGroup = new Map<string | undefined, number>();
  for (const rule of rules) {
    if (rule.approvals > 0) byGroup.set(rule.group, Math.max(byGroup.get(rule.group) ?? 0, rule.approvals));
  }
  const requirements: Requirement[] = [...byGroup.entries()]
    .sort(([a], [b]) => (a === undefined ? -1 : b === undefined ? 1 : byCodeUnit(a, b)))
    .map(([group, approvals]) => (group === undefined ? { approvals } : { group, approvals }));
  const approvals = Math.max(...rules.map((rule) => rule.approvals));
  const tier: Tier = { approvals, requirements, changeControl: rules.some((rule) => rule.changeControl), rules };
  if (declared !== undefined) {
    const comparison = declared.approvals === approvals ? 'matches' : declared.approvals < approvals ? 'understated' : 'overstated';
    tier.declared = { approvals: declared.approvals, comparison };
  }
  return tier;
}

function ruleFor(surface: string, via: TierRule['via'], policy: RemediationPolicy): TierRule {
  // Own members only: `constructor` is a valid surface name, and a JSON object inherits one.
  const own = Object.hasOwn(policy.rules, surface) ? policy.rules[surface] : undefined;
  const rule = own ?? policy.default;
  const noAutonomy = (policy.noAutonomy ?? []).includes(surface);
  const autoApply = (policy.autoApply ?? []).includes(surface);
  const changeControl = rule.changeControl === true;
  const floor = noAutonomy || !autoApply || changeControl ? 1 : 0;
  return {
    surface,
    via,
    source: own === undefined ? 'default' : 'rule',
    approvals: Math.max(rule.approvals, floor),
    ...(rule.group === undefined ? {} : { group: rule.group }),
    changeControl,
    noAutonomy,
    autoApply,
  };
}
