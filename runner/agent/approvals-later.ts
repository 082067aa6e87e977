/**
 * Approvals refused only for the time (APPROVAL_NOT_YET_VALID: signed ahead of the runner's clock plus the
 * skew), for the agents that take approvals (the feed's, the spool's): when one may count, and whether one
 * the store already refused for the time is still early. runner/remediate/approvals.ts decides such a
 * refusal again whenever the approval comes again, recording a refusal each time it is still early: a
 * coordinator serving one approval under ever new spellings, or a file rewritten, would make a record of
 * each. The agents hand it over only once its time has come.
 */
import { DEFAULT_CLOCK_SKEW_MS } from '../capsule/verify.js';
import type { VerifiedApproval } from '../policy/approval.js';
import type { RunnerContext } from './runner.js';

/** By the runner's clock (ms): the first moment the approval is not early (its signing time less the skew, a second after). */
export function validFrom(verified: VerifiedApproval): number {
  return Date.parse(verified.predicate.signedAt) - DEFAULT_CLOCK_SKEW_MS + 1000;
}

/** `validFrom` when the store refused this approval for the time and that moment has not come; else undefined. */
export function earlyUntil(ctx: RunnerContext, verified: VerifiedApproval): number | undefined {
  const known = ctx.store.approval(verified.digest);
  if (known?.status !== 'refused' || known.code !== 'APPROVAL_NOT_YET_VALID') return undefined;
  const at = validFrom(verified);
  return ctx.clock().getTime() < at ? at : undefined;
}
