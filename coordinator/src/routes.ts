/**
 * The /v1 endpoints (docs/protocol.md). Runner endpoints are signed (auth.ts); operator endpoints take a
 * bearer token. Every body is read under its cap from runner/protocol/wire.ts CAPS before it is parsed, and
 * every document is verified against the coordinator's trust document before anything of it is stored.
 */
import { sha256Hex } from '../../runner/core/digest.js';
import { CAPSULE_MAX_BYTES } from '../../runner/capsule/capsule-file.js';
import { verifyPublishable } from '../../runner/capsule/verify.js';
import { verifyBundle, type VerifiedBundle } from '../../runner/evidence/bundle.js';
import { isCodedError } from '../../runner/core/errors.js';
import { verifyTrustDocument, type VerifiedTrust } from '../../runner/trust/trust.js';
import { verifyRejection, type VerifiedRejection } from '../../runner/evidence/rejection.js';
import { runnerOrigin } from '../../runner/log/checkpoint.js';
import { ProtocolError } from '../../runner/protocol/errors.js';
import { decideAddCheckpoint, formatTlogSize, parseAddCheckpoint, signCosignature, type WitnessDecision } from '../../runner/protocol/witness.js';
import {
  CAPS,
  formatInboxAck,
  formatWorkFeed,
  parseStatusReport,
  WORK_FEED_MAX_APPROVALS,
  type ApprovalItem,
  type WorkItem,
} from '../../runner/protocol/wire.js';
import { getApproval, listApprovals, putApproval } from './approvals.js';
import type { App } from './app.js';
import { authenticateOperator, authenticateRunner, authenticateRunnerBody, hasBearer, refuseExpiredTrust } from './auth.js';
import { HttpError } from './errors.js';
import { readBody, Router, send, sendBytes, sendEmpty, sendJson, type RouteContext } from './http.js';
import { badQuery, onlyParams, queryInteger, textParam } from './query.js';
import type { NewBundle, NewRejection, StoredAnswer, WitnessWrite } from './store/store.js';

/** At most this many capsules per work feed answer (docs/protocol.md). */
export const FEED_MAX_ITEMS = 100;
export const FEED_MAX_WAIT_SECONDS = 60;
export const FEED_DEFAULT_WAIT_SECONDS = 30;
export const LIST_DEFAULT_LIMIT = 100;
export const LIST_MAX_LIMIT = 1000;

/**
 * A runner id as the trust document spells key names, never percent-encoded: the id routed is the very
 * string in the signed @target-uri, so no second spelling of one runner's paths exists.
 */
const RUNNER = '(?<id>[A-Za-z0-9][A-Za-z0-9._@-]{0,127})';
const HEX = '(?<hex>[0-9a-f]{64})';
const path = (pattern: string) => new RegExp(`^${pattern}$`);

export function buildRouter(app: App): Router {
  return new Router()
    .add('GET', path('/v1/trust'), (ctx) => getTrust(app, ctx))
    .add('GET', path('/v1/trust/(?<version>[1-9][0-9]{0,14})'), (ctx) => getTrustVersion(app, ctx))
    .add('GET', path(`/v1/runners/${RUNNER}/work`), (ctx) => getWork(app, ctx))
    .add('PUT', path(`/v1/runners/${RUNNER}/status`), (ctx) => putStatus(app, ctx))
    .add('POST', path(`/v1/runners/${RUNNER}/add-checkpoint`), (ctx) => addCheckpoint(app, ctx))
    .add('GET', path('/v1/runners'), (ctx) => getFleet(app, ctx))
    .add('POST', path('/v1/capsules'), (ctx) => publishCapsule(app, ctx))
    .add('GET', path(`/v1/capsules/${HEX}`), (ctx) => getCapsule(app, ctx))
    .add('PUT', path(`/v1/bundles/${HEX}`), (ctx) => putBundle(app, ctx))
    .add('GET', path(`/v1/bundles/${HEX}`), (ctx) => getStored(app, ctx, 'bundle'))
    .add('GET', path('/v1/bundles'), (ctx) => listBundles(app, ctx))
    .add('PUT', path(`/v1/rejections/${HEX}`), (ctx) => putRejection(app, ctx))
    .add('GET', path(`/v1/rejections/${HEX}`), (ctx) => getStored(app, ctx, 'rejection'))
    .add('GET', path('/v1/rejections'), (ctx) => listRejections(app, ctx))
    .add('PUT', path(`/v1/approvals/${HEX}`), (ctx) => putApproval(app, ctx))
    .add('GET', path(`/v1/approvals/${HEX}`), (ctx) => getApproval(app, ctx))
    .add('GET', path('/v1/approvals'), (ctx) => listApprovals(app, ctx));
}

/** Operator token when the request has an Authorization header, else a runner signature. */
async function runnerOrOperator(app: App, ctx: RouteContext): Promise<void> {
  if (hasBearer(ctx)) authenticateOperator(app, ctx);
  else await authenticateRunner(app, ctx);
}

// ---------------------------------------------------------------------------------------------------------
// Runner side

async function getTrust(app: App, ctx: RouteContext): Promise<void> {
  await runnerOrOperator(app, ctx);
  sendBytes(ctx.res, 200, app.trustBytes);
}

/** One kept version of the trust document, as signed: a runner behind walks the chain one version at a time. */
async function getTrustVersion(app: App, ctx: RouteContext): Promise<void> {
  await runnerOrOperator(app, ctx);
  const bytes = app.trustVersions.get(Number(ctx.params.version));
  if (bytes === undefined) throw new HttpError(404, 'FEED_TRUST_NOT_FOUND', 'The coordinator keeps no trust document of that version.');
  sendBytes(ctx.res, 200, bytes);
}

/**
 * The long poll: answers at once when capsules after `after` are addressed to the runner (or, when it asks
 * with `approvals`, approvals after that cursor answer its proposals), else waits (at most `wait` seconds)
 * for a publish that targets it or an approval for it, then 204. The poll registers before it first asks
 * the store, so a publish between the two is never missed.
 */
async function getWork(app: App, ctx: RouteContext): Promise<void> {
  const after = queryInteger(ctx, 'after', 0, Number.MAX_SAFE_INTEGER, 0, 'FEED_BAD_QUERY');
  const wait = queryInteger(ctx, 'wait', 0, FEED_MAX_WAIT_SECONDS, FEED_DEFAULT_WAIT_SECONDS, 'FEED_BAD_QUERY');
  // Absent: the runner does not take approvals (one older than them), and its answers never carry the member.
  const approvalsAfter = ctx.query.has('approvals') ? queryInteger(ctx, 'approvals', 0, Number.MAX_SAFE_INTEGER, 0, 'FEED_BAD_QUERY') : undefined;
  onlyParams(ctx, ['after', 'wait', 'approvals'], 'FEED_BAD_QUERY');
  const who = await authenticateRunner(app, ctx, { pathRunner: ctx.params.id! });
  const runner = who.name;
  // A cursor past every capsule published here was not handed out by this database (it was restored from an
  // older copy, or replaced): the capsules it publishes next would get cursors the runner believes it has
  // passed, and be skipped in silence. Said instead, so the runner (and its operator) can see it.
  if (after > (await app.store.lastCursor())) {
    throw new HttpError(409, 'FEED_CURSOR_AHEAD', 'The cursor is past every capsule this coordinator has published.');
  }
  // Likewise for approvals; a runner may start its approvals over from 0 (it keeps each approval once).
  if (approvalsAfter !== undefined && approvalsAfter > (await app.store.lastApprovalCursor())) {
    throw new HttpError(409, 'FEED_APPROVALS_CURSOR_AHEAD', 'The approvals cursor is past every approval this coordinator holds.');
  }
  const labels = await app.store.runnerLabels(runner);
  const answer = (items: WorkItem[], approvals: ApprovalItem[]) =>
    sendBytes(
      ctx.res,
      200,
      formatWorkFeed({
        items,
        cursor: items.at(-1)?.cursor ?? after,
        trust: { version: app.trust.body.version },
        ...(approvalsAfter !== undefined ? { approvals } : {}),
      }),
    );

  await new Promise<void>((resolve, reject) => {
    let done = false;
    let looking = false;
    let lookAgain = false;
    const finish = () => {
      done = true;
      clearTimeout(timer);
      app.polls.remove(waiter);
      ctx.res.off('close', onClose);
      resolve();
    };
    const look = async (): Promise<void> => {
      if (done) return;
      if (looking) {
        lookAgain = true;
        return;
      }
      looking = true;
      try {
        do {
          lookAgain = false;
          const items = await app.store.workFor(runner, after, FEED_MAX_ITEMS);
          const approvals = approvalsAfter === undefined ? [] : await approvalItems(app, runner, approvalsAfter);
          if (done) return;
          if (items.length > 0 || approvals.length > 0) {
            finish();
            answer(items, approvals);
            return;
          }
        } while (lookAgain);
        if (wait === 0 || app.stopping) end();
      } catch (err) {
        finish();
        reject(err);
      } finally {
        looking = false;
      }
    };
    const end = () => {
      if (done) return;
      finish();
      sendEmpty(ctx.res, 204);
    };
    const onClose = () => {
      if (!done) finish();
    };
    const waiter = { runner, labels, wake: () => void look(), end };
    const timer = setTimeout(end, wait * 1000);
    ctx.res.on('close', onClose);
    app.polls.add(waiter);
    void look();
  });
}

async function approvalItems(app: App, runner: string, after: number): Promise<ApprovalItem[]> {
  const rows = await app.store.approvalsFor(runner, after, WORK_FEED_MAX_APPROVALS);
  return rows.map((row) => ({ cursor: row.cursor, approval: row.digest, proposal: row.proposal, size: row.size }));
}

async function putStatus(app: App, ctx: RouteContext): Promise<void> {
  const { who, body } = await authenticateRunnerBody(app, ctx, { cap: CAPS.statusReportBytes, pathRunner: ctx.params.id! });
  const report = protocolBody(() => parseStatusReport(body));
  await app.store.saveStatus(who.name, who.keyid, report, app.clock().toISOString());
  sendEmpty(ctx.res, 204);
}

/**
 * Evidence inbox. Idempotent by digest: the same bytes again are 200 without a second verification (they
 * verified when first stored, and the digest is of these very bytes); a first arrival is verified in full
 * against the trust document (the log member included) and stored in one transaction, so two concurrent PUTs
 * of one bundle store it once (the loser answers 200).
 */
async function putBundle(app: App, ctx: RouteContext): Promise<void> {
  const { who, body } = await authenticateRunnerBody(app, ctx, { cap: CAPS.bundleBytes });
  const digest = checkDigest(body, ctx.params.hex!);
  const holder = await app.store.bundleRunner(digest);
  if (holder !== undefined) {
    if (holder !== who.name) throw runnerMismatch('bundle');
    sendBytes(ctx.res, 200, formatInboxAck({ digest, stored: 'existing' }));
    return;
  }
  const verified = verifyBundleUnderItsTrust(app, body);
  if (verified.runnerName !== who.name) throw runnerMismatch('bundle');
  const stored = await app.store.putBundle(bundleRow(verified, digest, body, app.clock().toISOString()));
  answerStored(app, ctx, digest, stored, who.name);
}

/** Kept trust versions, verified once per App (each was checked as a link of the chain at start). */
const keptTrust = new WeakMap<TrustSet, Map<number, VerifiedTrust>>();

/** What judging a bundle needs of the App: the pinned trust and every kept version (the spool import passes its own). */
export type TrustSet = Pick<App, 'trust' | 'trustVersions'>;

function keptVersion(app: TrustSet, version: number): VerifiedTrust | undefined {
  const bytes = app.trustVersions.get(version);
  if (bytes === undefined) return undefined;
  let cache = keptTrust.get(app);
  if (cache === undefined) keptTrust.set(app, (cache = new Map()));
  let trust = cache.get(version);
  if (trust === undefined) cache.set(version, (trust = verifyTrustDocument(bytes)));
  return trust;
}

/**
 * A bundle is judged by the pinned trust document, or, when that refuses its signatures, by the older kept
 * version its signed predicate names (policy.trustVersion): evidence made before a rotation (a capsule of a
 * signer who has since left, still in a runner's outbox) is still the evidence it was. Only a version this
 * coordinator pinned itself is used, the bundle must verify against it in full, and the verified predicate
 * must name it; anything else keeps the pinned document's refusal.
 */
export function verifyBundleUnderItsTrust(app: TrustSet, body: Buffer): VerifiedBundle {
  try {
    return verifyBundle(body, app.trust);
  } catch (err) {
    if (!isCodedError(err) || (err.code !== 'BUNDLE_CAPSULE_SIGNATURE' && err.code !== 'BUNDLE_EVIDENCE_SIGNATURE')) throw err;
    const version = claimedTrustVersion(body);
    const kept = version !== undefined && version < app.trust.body.version ? keptVersion(app, version) : undefined;
    if (kept === undefined) throw err;
    const verified = verifyBundle(body, kept);
    if (verified.statement.predicate.policy.trustVersion !== version) throw err;
    return verified;
  }
}

/** The trust version an (unverified) bundle's predicate names, only to choose which kept document judges it. */
function claimedTrustVersion(body: Buffer): number | undefined {
  try {
    const bundle = JSON.parse(body.toString('utf8')) as { evidence?: { payload?: unknown } };
    if (typeof bundle.evidence?.payload !== 'string') return undefined;
    const statement = JSON.parse(Buffer.from(bundle.evidence.payload, 'base64').toString('utf8')) as {
      predicate?: { policy?: { trustVersion?: unknown } };
    };
    const version = statement.predicate?.policy?.trustVersion;
    return Number.isSafeInteger(version) ? (version as number) : undefined;
  } catch {
    return undefined;
  }
}

async function putRejection(app: App, ctx: RouteContext): Promise<void> {
  const { who, body } = await authenticateRunnerBody(app, ctx, { cap: CAPS.rejectionBytes });
  const digest = checkDigest(body, ctx.params.hex!);
  const holder = await app.store.rejectionRunner(digest);
  if (holder !== undefined) {
    if (holder !== who.name) throw runnerMismatch('rejection');
    sendBytes(ctx.res, 200, formatInboxAck({ digest, stored: 'existing' }));
    return;
  }
  const verified = verifyRejection(body, app.trust);
  if (verified.runnerName !== who.name) throw runnerMismatch('rejection');
  const stored = await app.store.putRejection(rejectionRow(verified, digest, body, app.clock().toISOString()));
  answerStored(app, ctx, digest, stored, who.name);
}

/** The stored row of a verified bundle: what the inbox and a spool import keep beside its bytes. */
export function bundleRow(verified: VerifiedBundle, digest: string, bytes: Buffer, receivedAt: string): NewBundle {
  return {
    digest,
    bytes,
    runner: verified.runnerName,
    capsuleId: verified.manifest.id,
    manifestDigest: verified.statement.predicate.capsule.digest,
    verdict: verified.statement.predicate.run.verdict,
    evidenceDigest: verified.evidenceDigest,
    logIndex: verified.log.index,
    receivedAt,
  };
}

/** The stored row of a verified rejection, likewise. */
export function rejectionRow(verified: VerifiedRejection, digest: string, bytes: Buffer, receivedAt: string): NewRejection {
  return {
    digest,
    bytes,
    runner: verified.runnerName,
    stage: verified.stage,
    code: verified.code,
    capsuleId: verified.capsule.id ?? null,
    manifestDigest: verified.capsule.manifestDigest ?? null,
    fileDigest: verified.capsule.fileDigest ?? null,
    logIndex: verified.record.index,
    receivedAt,
  };
}

function answerStored(app: App, ctx: RouteContext, digest: string, stored: StoredAnswer, runner: string): void {
  if (stored === 'conflict') {
    app.log('inbox.record_conflict', { runner, digest });
    throw new HttpError(409, 'INBOX_RECORD_CONFLICT', 'This runner already sent other evidence for the same record of its log.');
  }
  sendBytes(ctx.res, stored === 'created' ? 201 : 200, formatInboxAck({ digest, stored }));
}

function checkDigest(body: Buffer, hex: string): string {
  const actual = sha256Hex(body);
  if (actual !== hex) throw new HttpError(422, 'INBOX_DIGEST_MISMATCH', 'The body is not the bytes whose SHA-256 the path names.');
  return `sha256:${actual}`;
}

function runnerMismatch(what: string): HttpError {
  return new HttpError(403, 'INBOX_RUNNER_MISMATCH', `The ${what} is signed by another runner than the one sending it.`);
}

type WitnessOutcome = { kind: 'cosigned'; line: string } | Exclude<WitnessDecision, { kind: 'cosign' }>;

/**
 * C2SP tlog-witness v1.0.0 add-checkpoint for the signing runner's log. The decision (signature by the
 * runner's note key, old size against the held size, consistency proof) is the pure decideAddCheckpoint; the
 * store runs it inside one transaction per origin (compare-and-swap). A checkpoint that is validly signed but
 * inconsistent with what this witness cosigned is kept as fork evidence (the whole request body: old size,
 * proof and note) and counts against the runner in the fleet view.
 */
async function addCheckpoint(app: App, ctx: RouteContext): Promise<void> {
  const { who, body } = await authenticateRunnerBody(app, ctx, { cap: CAPS.addCheckpointBytes, pathRunner: ctx.params.id! });
  const parsed = (() => {
    try {
      return parseAddCheckpoint(body);
    } catch (err) {
      if (err instanceof ProtocolError) throw new HttpError(400, err.code, err.message);
      throw err;
    }
  })();
  const runnerKey = app.trust.keyByName(who.name, 'runner');
  if (runnerKey === undefined) throw new HttpError(403, 'PROTOCOL_KEY_ROLE', 'The signing key is not enrolled under the runner role.');
  const origin = runnerOrigin(who.name, runnerKey.keyid);
  const now = app.clock();
  const at = now.toISOString();
  const outcome = await app.store.witness<WitnessOutcome>(origin, who.name, (held) => {
    const decision = decideAddCheckpoint(parsed, held && { size: held.size, rootHash: held.rootHash }, [
      { name: origin, publicKey: runnerKey.publicKey },
    ]);
    let write: WitnessWrite = { kind: 'none' };
    switch (decision.kind) {
      case 'cosign': {
        const line = signCosignature(parsed.note, app.witness.name, app.witness.key, Math.floor(now.getTime() / 1000));
        write = { kind: 'advance', size: decision.checkpoint.size, rootHash: decision.checkpoint.rootHash, note: parsed.note, at };
        return { write, value: { kind: 'cosigned', line } };
      }
      case 'fork':
        write = { kind: 'fork', reason: decision.reason, submitted: body, at };
        return { write, value: decision };
      case 'conflict':
      case 'error':
        return { write, value: decision };
    }
  });
  switch (outcome.kind) {
    case 'cosigned':
      send(ctx.res, 200, outcome.line, 'text/plain; charset=utf-8');
      return;
    case 'conflict':
      send(ctx.res, 409, formatTlogSize(outcome.size), 'text/x.tlog.size');
      return;
    case 'fork':
      app.log('witness.fork', { runner: who.name, origin, reason: outcome.reason });
      throw new HttpError(422, outcome.reason.startsWith('WITNESS_') ? outcome.reason : 'WITNESS_CONSISTENCY', forkSentence(outcome.reason));
    case 'error':
      throw new HttpError(outcome.status, outcome.code, outcome.message);
  }
}

function forkSentence(reason: string): string {
  return reason === 'WITNESS_ROOT_CONFLICT'
    ? 'The checkpoint has the witnessed size but another root hash; it is kept as fork evidence.'
    : 'The checkpoint is not consistent with the one this witness cosigned; it is kept as fork evidence.';
}

// ---------------------------------------------------------------------------------------------------------
// Capsules

async function getCapsule(app: App, ctx: RouteContext): Promise<void> {
  await runnerOrOperator(app, ctx);
  const bytes = await app.store.capsuleBytes(`sha256:${ctx.params.hex!}`);
  if (bytes === undefined) throw new HttpError(404, 'FEED_CAPSULE_NOT_FOUND', 'No capsule with this digest was published.');
  sendBytes(ctx.res, 200, bytes);
}

/**
 * Publishing: every check a runner makes that does not depend on the runner (runner/capsule/verify.ts
 * verifyPublishable): size cap, parse, the capsule-signer threshold, the manifest schema, freshness, the
 * input bytes against their signed digests, no unsigned blobs, and the trust policy. Target and replay stay
 * with each runner. The target comes from the verified manifest only.
 */
async function publishCapsule(app: App, ctx: RouteContext): Promise<void> {
  authenticateOperator(app, ctx);
  refuseExpiredTrust(app, app.clock());
  const cap = Math.min(CAPS.capsuleBytes, app.trust.body.policy.maxCapsuleBytes ?? CAPSULE_MAX_BYTES);
  const bytes = await readBody(ctx.req, cap);
  const now = app.clock();
  const verified = verifyPublishable(bytes, { trust: app.trust, now, maxBytes: cap });
  const { manifest } = verified;
  const digest = `sha256:${sha256Hex(bytes)}`;
  const target = { runners: manifest.target.runners ?? [], labels: manifest.target.labels ?? [] };
  const published = await app.store.publishCapsule({
    digest,
    bytes,
    capsuleId: manifest.id,
    manifestDigest: verified.manifestDigest,
    kind: manifest.kind,
    expiresAt: manifest.expiresAt,
    targetRunners: target.runners,
    targetLabels: target.labels,
    publishedAt: now.toISOString(),
  });
  if (published.stored === 'created') app.polls.notify(target);
  sendJson(ctx.res, published.stored === 'created' ? 201 : 200, { capsule: digest, cursor: published.cursor });
}

// ---------------------------------------------------------------------------------------------------------
// Operator side: evidence and the fleet

async function getStored(app: App, ctx: RouteContext, what: 'bundle' | 'rejection'): Promise<void> {
  authenticateOperator(app, ctx);
  const digest = `sha256:${ctx.params.hex!}`;
  const bytes = what === 'bundle' ? await app.store.bundleBytes(digest) : await app.store.rejectionBytes(digest);
  if (bytes === undefined) throw new HttpError(404, 'INBOX_NOT_FOUND', `No ${what} with this digest was received.`);
  sendBytes(ctx.res, 200, bytes);
}

async function listBundles(app: App, ctx: RouteContext): Promise<void> {
  authenticateOperator(app, ctx);
  onlyParams(ctx, ['runner', 'capsule', 'verdict', 'since', 'limit'], 'OPERATOR_BAD_QUERY');
  const since = ctx.query.get('since');
  let sinceIso: string | undefined;
  if (since !== null) {
    const at = Date.parse(since);
    if (!/^\d{4}-\d{2}-\d{2}T/.test(since) || Number.isNaN(at)) throw badQuery('since is not an RFC 3339 time');
    sinceIso = new Date(at).toISOString();
  }
  const items = await app.store.listBundles({
    ...textParam(ctx, 'runner'),
    ...textParam(ctx, 'capsule'),
    ...textParam(ctx, 'verdict'),
    ...(sinceIso !== undefined ? { since: sinceIso } : {}),
    limit: queryInteger(ctx, 'limit', 1, LIST_MAX_LIMIT, LIST_DEFAULT_LIMIT, 'OPERATOR_BAD_QUERY'),
  });
  sendJson(ctx.res, 200, { items });
}

async function listRejections(app: App, ctx: RouteContext): Promise<void> {
  authenticateOperator(app, ctx);
  onlyParams(ctx, ['runner', 'capsule', 'limit'], 'OPERATOR_BAD_QUERY');
  const items = await app.store.listRejections({
    ...textParam(ctx, 'runner'),
    ...textParam(ctx, 'capsule'),
    limit: queryInteger(ctx, 'limit', 1, LIST_MAX_LIMIT, LIST_DEFAULT_LIMIT, 'OPERATOR_BAD_QUERY'),
  });
  sendJson(ctx.res, 200, { items });
}

/** Every runner the trust document enrols, and any other that was seen, with what it last reported. */
async function getFleet(app: App, ctx: RouteContext): Promise<void> {
  authenticateOperator(app, ctx);
  const rows = new Map((await app.store.runners()).map((row) => [row.id, row]));
  const witnessed = await app.store.witnessedSizes();
  const enrolled = new Map(app.trust.keys.filter((key) => key.roles.includes('runner')).map((key) => [app.trust.nameOf(key.keyid)!, key.keyid]));
  const ids = [...new Set([...enrolled.keys(), ...rows.keys()])].sort();
  const runners = ids.map((id) => {
    const row = rows.get(id);
    const status = row?.status ?? null;
    return {
      id,
      keyid: enrolled.get(id) ?? row?.keyid ?? null,
      enrolled: enrolled.has(id),
      lastSeen: row?.lastSeen ?? null,
      version: status?.version ?? null,
      labels: status?.labels ?? [],
      trustVersion: status?.trustVersion ?? null,
      logSize: status?.logSize ?? null,
      witnessedSize: witnessed.get(id) ?? 0,
      outboxDepth: status?.outboxDepth ?? null,
      oldestQueuedSeconds: status?.oldestQueuedSeconds ?? null,
      deadLetters: status?.deadLetters ?? null,
      // The trust version the runner last saw in this coordinator's feed (beside `trustVersion`, its own pin).
      coordinatorTrustVersion: status?.coordinatorTrustVersion ?? null,
      forks: row?.forks ?? 0,
      statusAt: status?.reportedAt ?? null,
    };
  });
  sendJson(ctx.res, 200, { runners, trust: { version: app.trust.body.version } });
}

/** A wire body that does not parse is the client's fault: 400 with the protocol's code. */
function protocolBody<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof ProtocolError) throw new HttpError(err.code === 'PROTOCOL_BODY_TOO_LARGE' ? 413 : 400, err.code, err.message);
    throw err;
  }
}
