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
  const { store } = ctx;
  let verified: VerifiedApproval;
  try {
    verified = verifyApproval(bytes, ctx.state.trust);
  } catch (err) {
    if (!(err instanceof ApprovalError)) throw err;
    // Not verifiable as an approval: decided by the digest of its bytes.
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const known = store.approval(digest);
    if (known !== undefined) return { status: 'known', digest, ...(known.code !== undefined ? { code: known.code } : {}) };
    store.decideApproval({ kind: 'approval.refused', body: { digest, code: err.code } }, { digest, code: err.code, source });
    ctx.logger.warn({ digest, code: err.code, source }, 'approval refused');
    return { status: 'refused', digest, code: err.code, message: err.message };
  }
  const { digest, changeDigest, approver } = verified;
  const decision = verified.predicate.decision;
  const known = store.approval(digest);
  const again = known !== undefined && known.status === 'refused' && TIME_BOUND.has(known.code ?? '');
  if (known !== undefined && !again) {
    const change =
      known.status === 'accepted' && known.changeDigest !== undefined ? await decideIfKnown(ctx, known.changeDigest, options) : undefined;
    return {
      status: 'known',
      digest,
      ...(known.code !== undefined ? { code: known.code } : {}),
      approver,
      decision,
      changeDigest,
      ...(change ? { change } : {}),
    };
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
  // One person counts once: a second approval (another key, another expiry) of a person already accepted
  // for this change is refused, whichever digest sorts first (counting would pick one; the log says which).
  if (store.approvalsOf(changeDigest).some((a) => a.approver === approver && a.decision === decision)) {
    const outcome = refuse('APPROVAL_DUPLICATE_PERSON', `${approver} already gave an approval of this change; a person counts once.`, true);
    return { ...outcome, change: await decideChange(ctx, changeDigest, options) };
  }
  // Counted with the others already given, at the clock: refused now if it could never count (another
  // proposal, the proposer, a second approval of one person, expired, not in the group...).
  const count = countFor(ctx, row, ctx.clock(), [verified]);
  const refused = count.refused.find((r) => r.approval.digest === digest);
  if (refused !== undefined) {
    const outcome = refuse(refused.code, refused.message, true);
    return { ...outcome, change: await decideChange(ctx, changeDigest, options) };
  }
  store.decideApproval({ kind: 'approval.accepted', body: { changeDigest, digest, approver, decision } }, { ...common, changeDigest }, again);
  ctx.logger.info({ digest, approver, decision, source, changeDigest }, 'approval accepted');
  return { status: 'accepted', digest, approver, decision, changeDigest, change: await decideChange(ctx, changeDigest, options) };
}

async function decideIfKnown(ctx: RunnerContext, changeDigest: string, options: DecideOptions): Promise<ChangeOutcome | undefined> {
  return ctx.store.change(changeDigest) === undefined ? undefined : decideChange(ctx, changeDigest, options);
}

/** The contract's other name (plan11.md): the agent's coordinator delivery calls either. */
export const acceptApproval = receiveApproval;
