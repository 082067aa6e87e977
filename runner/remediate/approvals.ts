/**
 * Approvals in (issue 11, "Authorize"): from a file (`edge-runner change approve`), the coordinator's work
 * feed or a spool. Each is verified (runner/policy/approval.ts), decided once by its digest and recorded
 * (`approval.accepted`, or `approval.refused` with its code) before it counts; then the change it names is
 * decided again (runner/remediate/machine.ts): applied, verified and rolled back as needed before this
 * resolves. The caller runs it inside the agent's run lane (runner/agent/lane.ts), or the CLI's own context.
 */
import { createHash } from 'node:crypto';
import { toCanonicalJson } from '../core/canonical-json.js';
import { ApprovalError } from '../policy/errors.js';
import { verifyApproval, type VerifiedApproval } from '../policy/approval.js';
import type { ApprovalSource } from '../store/approvals.js';
import type { RunnerContext } from '../agent/runner.js';
import { personOf } from '../policy/count.js';
import { countFor, decideChange, type ChangeOutcome, type DecideOptions } from './machine.js';

export interface ApprovalOutcome {
  /** `known`: this digest was decided before (nothing recorded again). */
  status: 'accepted' | 'refused' | 'known';
  digest: string;
  /** The refusal's code (for `known`, the first decision's). */
  code?: string;
  message?: string;
  approver?: string;
  decision?: 'approve' | 'reject';
  changeDigest?: string;
  /** What the change became once this approval was decided (absent when it names no change here). */
  change?: ChangeOutcome;
}

/** Refusals that time may undo: the same approval given again later is decided again. */
const TIME_BOUND = new Set(['APPROVAL_NOT_YET_VALID']);

export async function receiveApproval(
  ctx: RunnerContext,
  bytes: Buffer,
  source: ApprovalSource,
  options: DecideOptions = {},
): Promise<ApprovalOutcome> {
  // Verified outside the lock (pure); decided under it, so two processes given one approval decide it once.
  let verified: VerifiedApproval | ApprovalError;
  try {
    verified = verifyApproval(bytes, ctx.state.trust);
  } catch (err) {
    if (!(err instanceof ApprovalError)) throw err;
    verified = err;
  }
  const input = verified;
  const outcome = ctx.store.transaction(() => decideApprovalNow(ctx, bytes, input, source));
  // The change it names is decided again (it may now be authorized, or vetoed), outside the transaction.
  const digest = outcome.changeDigest;
  const decide = outcome.status !== 'refused' || outcome.code !== 'APPROVAL_WRONG_CHANGE';
  if (digest === undefined || !decide || ctx.store.change(digest) === undefined) return outcome;
  return { ...outcome, change: await decideChange(ctx, digest, options) };
}

/** The approval's decision, recorded (or found recorded): in the caller's transaction. */
function decideApprovalNow(ctx: RunnerContext, bytes: Buffer, verified: VerifiedApproval | ApprovalError, source: ApprovalSource): ApprovalOutcome {
  const { store } = ctx;
  if (verified instanceof ApprovalError) {
    // Not verifiable as an approval: decided by the digest of its bytes.
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const known = store.approval(digest);
    if (known !== undefined) return { status: 'known', digest, ...(known.code !== undefined ? { code: known.code } : {}) };
    store.decideApproval({ kind: 'approval.refused', body: { digest, code: verified.code } }, { digest, code: verified.code, source });
    ctx.logger.warn({ digest, code: verified.code, source }, 'approval refused');
    return { status: 'refused', digest, code: verified.code, message: verified.message };
  }
  const { digest, changeDigest, approver } = verified;
  const decision = verified.predicate.decision;
  const known = store.approval(digest);
  const again = known !== undefined && known.status === 'refused' && TIME_BOUND.has(known.code ?? '');
  if (known !== undefined && !again) {
    const named = known.status === 'accepted' ? { changeDigest } : {};
    return { status: 'known', digest, ...(known.code !== undefined ? { code: known.code } : {}), approver, decision, ...named };
  }
  const row = store.change(changeDigest);
  const common = { digest, keyid: verified.keyid, approver, decision, source, envelope: toCanonicalJson(verified.envelope) };
  const refuse = (code: string, message: string, changeKnown: boolean): ApprovalOutcome => {
    store.decideApproval(
      { kind: 'approval.refused', body: { digest, code, approver, ...(changeKnown ? { changeDigest } : {}) } },
      { ...common, code, ...(changeKnown ? { changeDigest } : {}) },
      again,
    );
    ctx.logger.warn({ digest, code, approver, source }, 'approval refused');
    return { status: 'refused', digest, code, message, approver, decision, changeDigest };
  };
  if (row === undefined) return refuse('APPROVAL_WRONG_CHANGE', 'The approval names a change that was never proposed on this runner.', false);
  // An approval after the decision changes nothing; recorded as accepted, the log would say it counted.
  if (row.state !== 'proposed') {
    return refuse('APPROVAL_CHANGE_DECIDED', `The change was already decided (${row.state}); an approval no longer counts for it.`, true);
  }
  // One person counts once: a second approval (another key, another expiry) of a person already accepted
  // for this change is refused, whichever digest sorts first (counting would pick one; the log says which).
  if (
    store.approvalsOf(changeDigest).some((a) => a.approver !== undefined && personOf(a.approver) === personOf(approver) && a.decision === decision)
  ) {
    return refuse('APPROVAL_DUPLICATE_PERSON', `${approver} already gave an approval of this change; a person counts once.`, true);
  }
  // Counted with the others already given, at the clock: refused now if it could never count (another
  // proposal, the proposer, expired, too long, not in the group, no change ticket...).
  const count = countFor(ctx, row, ctx.clock(), [verified]);
  const refused = count.refused.find((r) => r.approval.digest === digest);
  if (refused !== undefined) return refuse(refused.code, refused.message, true);
  store.decideApproval({ kind: 'approval.accepted', body: { changeDigest, digest, approver, decision } }, { ...common, changeDigest }, again);
  ctx.logger.info({ digest, approver, decision, source, changeDigest }, 'approval accepted');
  return { status: 'accepted', digest, approver, decision, changeDigest };
}

/** The contract's other name (plan11.md): the agent's coordinator delivery calls either. */
export const acceptApproval = receiveApproval;
