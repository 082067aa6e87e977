/**
 * Approvals through the coordinator (docs/protocol.md, "Approvals"). An approver (with an operator token)
 * uploads an approval envelope; the coordinator verifies it against its trust document (an approver key, the
 * approval predicate's closed schema: runner/policy/approval.ts) and keeps it only when it answers a
 * proposal bundle this coordinator holds, which also says which runner it is for. That runner's work feed
 * then lists it and the runner fetches it by digest. The coordinator does not count approvals: the runner
 * does, against its own pinned trust and its own record of the proposal. What is checked here is what makes
 * delivery right (the runner) and spares an approver a silent refusal (a proposal that is not one, an
 * approval already expired).
 */
import { DEFAULT_CLOCK_SKEW_MS } from '../../runner/capsule/verify.js';
import { toCanonicalJson } from '../../runner/core/canonical-json.js';
import { sha256Hex } from '../../runner/core/digest.js';
import { parseJson } from '../../runner/core/json.js';
import { parseBundle } from '../../runner/evidence/bundle.js';
import type { Statement } from '../../runner/evidence/statement.js';
import { verifyApproval } from '../../runner/policy/approval.js';
import { CAPS } from '../../runner/protocol/wire.js';
import type { App } from './app.js';
import { authenticateOperator, authenticateRunner, hasBearer, refuseExpiredTrust } from './auth.js';
import { HttpError } from './errors.js';
import { readBody, sendBytes, sendJson, type RouteContext } from './http.js';
import { badQuery, onlyParams, queryInteger, textParam } from './query.js';
import type { StoredProposal } from './store/store.js';

export const APPROVALS_LIST_DEFAULT_LIMIT = 100;
export const APPROVALS_LIST_MAX_LIMIT = 1000;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

/**
 * `PUT /v1/approvals/{hex}`, `hex` the approval digest (SHA-256 of the canonical JSON of the envelope as
 * verified, so other whitespace in the uploaded file is the same approval). In order: the operator token, the
 * trust document's expiry, the body under its cap (413 before a byte is read when Content-Length says so),
 * verifyApproval (422 with its APPROVAL_* code), the digest, the same approval again (200, nothing more
 * checked: it verified when first stored), expiry, a signing time ahead of the clock, the proposal, whether
 * its change was decided already, and one transaction that stores it (caps per proposal and per person).
 */
export async function putApproval(app: App, ctx: RouteContext): Promise<void> {
  authenticateOperator(app, ctx);
  refuseExpiredTrust(app, app.clock());
  const body = await readBody(ctx.req, CAPS.approvalBytes);
  const verified = verifyApproval(body, app.trust);
  // What is kept and served is the envelope as verified, canonically: its SHA-256 is the approval digest,
  // so the runner checks the bytes it is served against the digest it was given, as it does capsules.
  const bytes = Buffer.from(toCanonicalJson(verified.envelope), 'utf8');
  const digest = `sha256:${sha256Hex(bytes)}`;
  if (digest !== verified.digest) throw new Error('the approval digest is not the SHA-256 of its canonical envelope');
  if (digest !== `sha256:${ctx.params.hex!}`) {
    throw new HttpError(422, 'INBOX_DIGEST_MISMATCH', "The path does not name this approval's digest (the SHA-256 of its canonical envelope).");
  }
  const known = await app.store.approval(digest);
  const { predicate } = verified;
  if (known !== undefined) {
    answer(ctx, 200, { approval: digest, stored: 'existing', runner: known.runner, proposal: predicate.proposal, cursor: known.cursor });
    return;
  }
  const now = app.clock();
  if (Date.parse(predicate.notAfter) <= now.getTime()) {
    throw new HttpError(422, 'APPROVAL_EXPIRED', `The approval expired at ${predicate.notAfter}; no runner would count it.`);
  }
  // The runner refuses an approval signed later than its clock plus the skew, and the feed brings an approval
  // once: stored here, it would be refused there and never count (its upload again is only 'existing').
  if (Date.parse(predicate.signedAt) > now.getTime() + DEFAULT_CLOCK_SKEW_MS) {
    throw new HttpError(
      422,
      'APPROVAL_NOT_YET_VALID',
      `The approval is signed at ${predicate.signedAt}, ahead of this coordinator's clock; a runner would refuse it (check the approver's clock and sign again).`,
    );
  }
  const held = await app.store.bundleByEvidence(predicate.proposal);
  if (held === undefined) {
    throw new HttpError(422, 'INBOX_PROPOSAL_UNKNOWN', 'The approval names a proposal whose bundle this coordinator does not hold.');
  }
  const proposal = proposalOf(held);
  const mismatch = [
    proposal.change !== verified.changeDigest && 'change digest',
    proposal.target !== predicate.target && 'target',
    proposal.capsule !== predicate.capsule.digest && 'capsule',
    held.runner !== predicate.runner && 'runner',
  ].filter((what): what is string => what !== false);
  if (mismatch.length > 0) {
    throw new HttpError(422, 'INBOX_PROPOSAL_MISMATCH', `The approval's ${mismatch.join(', ')} is not the proposal's.`);
  }
  if (await decidedOnItsRunner(app, held.runner, proposal)) {
    throw new HttpError(
      409,
      'INBOX_CHANGE_DECIDED',
      'The runner already decided this change (its final bundle is here: applied, rolled back or refused); an approval cannot count any more.',
    );
  }
  const stored = await app.store.putApproval({
    digest,
    bytes,
    proposal: predicate.proposal,
    runner: held.runner,
    change: verified.changeDigest,
    target: predicate.target,
    approver: verified.approver,
    keyid: verified.keyid,
    decision: predicate.decision,
    signedAt: predicate.signedAt,
    notAfter: predicate.notAfter,
    receivedAt: now.toISOString(),
  });
  if (stored.stored === 'full') {
    throw new HttpError(409, 'INBOX_APPROVALS_FULL', 'The proposal already has as many approvals as this coordinator keeps for one.');
  }
  if (stored.stored === 'person-full') {
    throw new HttpError(
      409,
      'INBOX_APPROVER_FULL',
      `${verified.approver} already has as many approvals of this proposal here as one person may (a person counts once).`,
    );
  }
  // The runner's waiting poll answers now rather than at the end of its wait.
  if (stored.stored === 'created') app.polls.notify({ runners: [stored.runner], labels: [] });
  answer(ctx, stored.stored === 'created' ? 201 : 200, {
    approval: digest,
    stored: stored.stored,
    runner: stored.runner,
    proposal: predicate.proposal,
    cursor: stored.cursor,
  });
}

function answer(
  ctx: RouteContext,
  status: 200 | 201,
  body: { approval: string; stored: 'created' | 'existing'; runner: string; proposal: string; cursor: number },
): void {
  sendJson(ctx.res, status, body);
}

/**
 * `GET /v1/approvals/{hex}`: the approval's bytes, for an operator, or for the runner whose proposal it
 * answers (signed); any other runner is told there is none (404), as if it did not exist.
 */
export async function getApproval(app: App, ctx: RouteContext): Promise<void> {
  let runner: string | undefined;
  if (hasBearer(ctx)) authenticateOperator(app, ctx);
  else runner = (await authenticateRunner(app, ctx)).name;
  const row = await app.store.approval(`sha256:${ctx.params.hex!}`);
  if (row === undefined || (runner !== undefined && row.runner !== runner)) {
    throw new HttpError(404, 'INBOX_NOT_FOUND', 'No approval with this digest is held for this runner.');
  }
  sendBytes(ctx.res, 200, row.bytes);
}

/** `GET /v1/approvals?proposal=&runner=&limit=` (operator): what was uploaded, in upload order. */
export async function listApprovals(app: App, ctx: RouteContext): Promise<void> {
  authenticateOperator(app, ctx);
  onlyParams(ctx, ['proposal', 'runner', 'limit'], 'OPERATOR_BAD_QUERY');
  const proposal = ctx.query.get('proposal');
  if (proposal !== null && !DIGEST.test(proposal)) throw badQuery('proposal is not a sha256:HEX digest');
  const items = await app.store.listApprovals({
    ...(proposal !== null ? { proposal } : {}),
    ...textParam(ctx, 'runner'),
    limit: queryInteger(ctx, 'limit', 1, APPROVALS_LIST_MAX_LIMIT, APPROVALS_LIST_DEFAULT_LIMIT, 'OPERATOR_BAD_QUERY'),
  });
  sendJson(ctx.res, 200, { items });
}

/** Bundles of one capsule a runner sent: its proposal and its final bundle, a few more at most. */
const BUNDLES_OF_A_CAPSULE = 16;

/**
 * Whether the runner sent the final bundle of this change (phase applied, rolled-back or refused): the
 * bundles it sent for the proposal's capsule, read as proposalOf reads the proposal.
 */
async function decidedOnItsRunner(app: App, runner: string, proposal: { change: string; capsule: string }): Promise<boolean> {
  for (const bytes of await app.store.bundlesOfCapsule(runner, proposal.capsule, BUNDLES_OF_A_CAPSULE)) {
    const remediation = statementOf(bytes).predicate.remediation;
    if (remediation !== undefined && remediation.phase !== 'proposed' && remediation.change === proposal.change) return true;
  }
  return false;
}

function statementOf(bytes: Buffer): Statement {
  return parseJson(Buffer.from(parseBundle(bytes).evidence.payload, 'base64')) as Statement;
}

/**
 * What the stored proposal bundle says (it verified in full when the runner sent it; its signed statement
 * is read again here, not re-verified): its change digest, target and capsule, when it is a proposal.
 */
function proposalOf(held: StoredProposal): { change: string; target: string; capsule: string } {
  const statement = statementOf(held.bytes);
  const remediation = statement.predicate.remediation;
  if (remediation?.phase !== 'proposed') {
    throw new HttpError(422, 'INBOX_NOT_A_PROPOSAL', 'The bundle the approval names is not a remediation proposal.');
  }
  return { change: remediation.change, target: remediation.target, capsule: statement.predicate.capsule.digest };
}
