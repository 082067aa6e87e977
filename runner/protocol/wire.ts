/**
 * The JSON bodies of the coordinator link (docs/protocol.md), owned here so that the coordinator (which
 * writes most of them) and the agent (which reads them) share one definition: the caps, the types, a strict
 * parser per body and its one canonical spelling.
 *
 * Every parser, in order: the named cap before anything is read (PROTOCOL_BODY_TOO_LARGE), the project's
 * strict JSON (runner/core/json.ts: duplicate members and lone surrogates refused; PROTOCOL_BODY_UNPARSEABLE),
 * then a closed schema (no unknown members, types, ranges; PROTOCOL_BODY_SCHEMA). Formatters write canonical
 * JSON (runner/core/canonical-json.ts) after checking the same schema, so nothing a schema would refuse is
 * ever sent. The status report is outbound from the runner: numbers, enums and names from its own
 * configuration only (DESIGN.md rule 3), as its schema says.
 */
import { toCanonicalJson } from '../core/canonical-json.js';
import { JsonError, parseJson } from '../core/json.js';
import { checkSchema } from '../core/schema.js';
import { CAPSULE_MAX_BYTES } from '../capsule/capsule-file.js';
import { BUNDLE_MAX_BYTES } from '../evidence/bundle.js';
import { APPROVAL_MAX_BYTES } from '../policy/approval.js';
import { ProtocolError } from './errors.js';

/** Every body on the link has a cap, checked before it is parsed (bytes). */
export const CAPS = {
  bundleBytes: BUNDLE_MAX_BYTES,
  rejectionBytes: 64 * 1024,
  capsuleBytes: CAPSULE_MAX_BYTES,
  addCheckpointBytes: 16 * 1024,
  cosignatureResponseBytes: 8 * 1024,
  workFeedBytes: 256 * 1024,
  statusReportBytes: 8 * 1024,
  inboxAckBytes: 4 * 1024,
  errorBodyBytes: 4 * 1024,
  /** An approval envelope (`PUT` and `GET /v1/approvals/{hex}`). */
  approvalBytes: APPROVAL_MAX_BYTES,
} as const;

/**
 * `GET /v1/trust/{version}`: the coordinator keeps every trust document it has pinned and serves each by
 * version, as signed (DSSE JSON, at most TRUST_MAX_BYTES); `GET /v1/trust` is the latest. A runner behind
 * the feed's `trust.version` fetches its pin + 1, + 2, ... and applies each under TUF's rule, at most
 * TRUST_STEPS_PER_FEED of them per feed answer (a feed that names a far version cannot keep it walking).
 */
export function trustPath(version?: number): string {
  if (version === undefined) return '/v1/trust';
  if (!Number.isSafeInteger(version) || version < 1) throw new TypeError(`not a trust version: ${version}`);
  return `/v1/trust/${version}`;
}

/** The trust versions a runner takes, one by one, from one feed answer. */
export const TRUST_STEPS_PER_FEED = 16;

/** The work feed answers at most this many items at once. */
export const WORK_FEED_MAX_ITEMS = 100;

/** The work feed answers at most this many approvals at once (beside at most WORK_FEED_MAX_ITEMS capsules). */
export const WORK_FEED_MAX_APPROVALS = 100;

/**
 * An approval uploaded to the coordinator for a proposal this runner made. Its cursor is the approvals
 * feed's own (not the capsules'): the runner asks with `approvals=CURSOR` and keeps it apart.
 */
export interface ApprovalItem {
  cursor: number;
  /** The approval digest: SHA-256 of the canonical JSON of the verified envelope, i.e. of the bytes served. */
  approval: string;
  /** The evidence digest of the proposal bundle it answers. */
  proposal: string;
  /** Bytes of the approval as served. */
  size: number;
}

export interface WorkItem {
  cursor: number;
  /** `sha256:HEX` of the capsule file. */
  capsule: string;
  /** Bytes of the capsule file. */
  size: number;
}

export interface WorkFeed {
  /** In cursor order; `cursor` is the last item's. */
  items: WorkItem[];
  cursor: number;
  trust: { version: number };
  /**
   * Only when the runner asked (`approvals=CURSOR`), in approval cursor order: a runner that never asks (one
   * older than approvals) gets the feed it always parsed, and a feed without the member parses here too.
   */
  approvals?: ApprovalItem[];
}

/** The path of one approval (`sha256:HEX`): PUT by operators, GET by the runner whose proposal it answers. */
export function approvalPath(digest: string): string {
  const match = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!match) throw new TypeError(`not a sha256 digest: ${digest.slice(0, 80)}`);
  return `/v1/approvals/${match[1]}`;
}

export interface RunnerStatusReport {
  version: string;
  labels: string[];
  trustVersion: number;
  logSize: number;
  witnessedSize: number;
  outboxDepth: number;
  oldestQueuedSeconds: number;
  deadLetters: number;
  /**
   * The trust document version the coordinator's work feed last named, when the runner has read it: a
   * coordinator whose version differs from `trustVersion` (the runner's pin, which it keeps) is told so.
   */
  coordinatorTrustVersion?: number;
}

export interface InboxAck {
  digest: string;
  stored: 'created' | 'existing';
}

export interface ErrorBody {
  code: string;
  message: string;
}

const count = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } as const;
const digest = { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' } as const;

const workFeedSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['items', 'cursor', 'trust'],
  properties: {
    items: {
      type: 'array',
      maxItems: WORK_FEED_MAX_ITEMS,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['cursor', 'capsule', 'size'],
        properties: { cursor: { ...count, minimum: 1 }, capsule: digest, size: { type: 'integer', minimum: 1, maximum: CAPSULE_MAX_BYTES } },
      },
    },
    cursor: count,
    trust: {
      type: 'object',
      additionalProperties: false,
      required: ['version'],
      properties: { version: { ...count, minimum: 1 } },
    },
    approvals: {
      type: 'array',
      maxItems: WORK_FEED_MAX_APPROVALS,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['cursor', 'approval', 'proposal', 'size'],
        properties: {
          cursor: { ...count, minimum: 1 },
          approval: digest,
          proposal: digest,
          size: { type: 'integer', minimum: 1, maximum: CAPS.approvalBytes },
        },
      },
    },
  },
} as const;

const statusReportSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['version', 'labels', 'trustVersion', 'logSize', 'witnessedSize', 'outboxDepth', 'oldestQueuedSeconds', 'deadLetters'],
  properties: {
    // A semantic version of the runner binary, nothing free-form.
    version: { type: 'string', pattern: '^[0-9]{1,6}\\.[0-9]{1,6}\\.[0-9]{1,6}(-[0-9A-Za-z.-]{1,32})?$' },
    // Labels from the runner's configuration, in the capsule manifest's name format.
    labels: { type: 'array', maxItems: 64, uniqueItems: true, items: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' } },
    trustVersion: { ...count, minimum: 1 },
    logSize: count,
    witnessedSize: count,
    outboxDepth: count,
    oldestQueuedSeconds: count,
    deadLetters: count,
    coordinatorTrustVersion: { ...count, minimum: 1 },
  },
} as const;

const inboxAckSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['digest', 'stored'],
  properties: { digest, stored: { enum: ['created', 'existing'] } },
} as const;

const errorBodySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['code', 'message'],
  properties: {
    code: { type: 'string', pattern: '^[A-Z][A-Z0-9_]{2,63}$' },
    message: { type: 'string', minLength: 1, maxLength: 1024 },
  },
} as const;

export function parseWorkFeed(bytes: Uint8Array): WorkFeed {
  const feed = parseBody<WorkFeed>(bytes, CAPS.workFeedBytes, workFeedSchema, 'work feed');
  checkFeedOrder(feed);
  return feed;
}

export function formatWorkFeed(feed: WorkFeed): Buffer {
  checkFeedOrder(feed);
  return formatBody(feed, CAPS.workFeedBytes, workFeedSchema, 'work feed');
}

export function parseStatusReport(bytes: Uint8Array): RunnerStatusReport {
  return parseBody<RunnerStatusReport>(bytes, CAPS.statusReportBytes, statusReportSchema, 'status report');
}

export function formatStatusReport(report: RunnerStatusReport): Buffer {
  return formatBody(report, CAPS.statusReportBytes, statusReportSchema, 'status report');
}

export function parseInboxAck(bytes: Uint8Array): InboxAck {
  return parseBody<InboxAck>(bytes, CAPS.inboxAckBytes, inboxAckSchema, 'inbox answer');
}

export function formatInboxAck(ack: InboxAck): Buffer {
  return formatBody(ack, CAPS.inboxAckBytes, inboxAckSchema, 'inbox answer');
}

export function parseErrorBody(bytes: Uint8Array): ErrorBody {
  return parseBody<ErrorBody>(bytes, CAPS.errorBodyBytes, errorBodySchema, 'error body');
}

export function formatErrorBody(body: ErrorBody): Buffer {
  return formatBody(body, CAPS.errorBodyBytes, errorBodySchema, 'error body');
}

/**
 * Items come in strictly increasing cursor order and the feed's cursor is the last one's (or any, when
 * empty); approvals, in increasing order of their own cursor.
 */
function checkFeedOrder(feed: WorkFeed): void {
  const increasing = (cursors: number[], what: string) => {
    let previous = 0;
    for (const cursor of cursors) {
      if (cursor <= previous) throw new ProtocolError('PROTOCOL_BODY_SCHEMA', `The work feed ${what} are not in increasing cursor order.`);
      previous = cursor;
    }
  };
  increasing(
    feed.items.map((item) => item.cursor),
    'items',
  );
  increasing(
    (feed.approvals ?? []).map((item) => item.cursor),
    'approvals',
  );
  const last = feed.items[feed.items.length - 1];
  if (last !== undefined && feed.cursor !== last.cursor) {
    throw new ProtocolError('PROTOCOL_BODY_SCHEMA', "The work feed's cursor is not its last item's.");
  }
}

function parseBody<T>(bytes: Uint8Array, cap: number, schema: object, what: string): T {
  if (bytes.length > cap) {
    throw new ProtocolError('PROTOCOL_BODY_TOO_LARGE', `The ${what} is ${bytes.length} bytes, over its ${cap}-byte cap.`, {
      bytes: bytes.length,
      cap,
    });
  }
  let value: unknown;
  try {
    value = parseJson(bytes, { maxBytes: cap });
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    throw new ProtocolError('PROTOCOL_BODY_UNPARSEABLE', `The ${what} is not valid JSON: ${cause.message}.`, { json: cause.code }, { cause });
  }
  const problem = checkSchema(schema, value);
  if (problem) {
    throw new ProtocolError('PROTOCOL_BODY_SCHEMA', `The ${what} does not match its schema at ${problem.path}: ${problem.message}.`, {
      path: problem.path,
    });
  }
  return value as T;
}

function formatBody(value: unknown, cap: number, schema: object, what: string): Buffer {
  const problem = checkSchema(schema, value);
  if (problem) {
    throw new ProtocolError('PROTOCOL_BODY_SCHEMA', `The ${what} does not match its schema at ${problem.path}: ${problem.message}.`, {
      path: problem.path,
    });
  }
  const bytes = Buffer.from(toCanonicalJson(value), 'utf8');
  if (bytes.length > cap) throw new ProtocolError('PROTOCOL_BODY_TOO_LARGE', `The ${what} is over its ${cap}-byte cap.`);
  return bytes;
}
