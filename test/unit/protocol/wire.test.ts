/** The JSON bodies of the coordinator link: caps before parsing, strict JSON, closed schemas, canonical output. */
import { describe, expect, it } from 'vitest';
import {
  CAPS,
  formatErrorBody,
  formatInboxAck,
  formatStatusReport,
  formatWorkFeed,
  parseErrorBody,
  parseInboxAck,
  parseStatusReport,
  parseWorkFeed,
  type RunnerStatusReport,
  type WorkFeed,
} from '../../../runner/protocol/wire.js';
import { BUNDLE_MAX_BYTES } from '../../../runner/evidence/bundle.js';
import { CAPSULE_MAX_BYTES } from '../../../runner/capsule/capsule-file.js';
import { codeOf } from '../../helpers/codes.js';

const digest = `sha256:${'ab'.repeat(32)}`;
const feed: WorkFeed = {
  items: [
    { cursor: 4, capsule: digest, size: 1234 },
    { cursor: 7, capsule: `sha256:${'cd'.repeat(32)}`, size: 99 },
  ],
  cursor: 7,
  trust: { version: 3 },
};
const status: RunnerStatusReport = {
  version: '0.1.0',
  labels: ['linux', 'bank-eu'],
  trustVersion: 3,
  logSize: 120,
  witnessedSize: 118,
  outboxDepth: 2,
  oldestQueuedSeconds: 31,
  deadLetters: 0,
};
const text = (value: unknown) => Buffer.from(JSON.stringify(value));

describe('CAPS', () => {
  it('names the caps of the plan, in bytes', () => {
    expect(CAPS).toEqual({
      bundleBytes: BUNDLE_MAX_BYTES,
      rejectionBytes: 65536,
      capsuleBytes: CAPSULE_MAX_BYTES,
      addCheckpointBytes: 16384,
      cosignatureResponseBytes: 8192,
      workFeedBytes: 262144,
      statusReportBytes: 8192,
      inboxAckBytes: 4096,
      errorBodyBytes: 4096,
      approvalBytes: 16384,
    });
  });
});

describe('round trips in canonical JSON', () => {
  it('the work feed, the status report, the inbox answer and the error body parse back to what was formatted', () => {
    expect(parseWorkFeed(formatWorkFeed(feed))).toEqual(feed);
    expect(parseStatusReport(formatStatusReport(status))).toEqual(status);
    expect(parseInboxAck(formatInboxAck({ digest, stored: 'created' }))).toEqual({ digest, stored: 'created' });
    expect(parseErrorBody(formatErrorBody({ code: 'INBOX_DIGEST_MISMATCH', message: 'The digest does not match.' }))).toEqual({
      code: 'INBOX_DIGEST_MISMATCH',
      message: 'The digest does not match.',
    });
  });

  it('is canonical: sorted members, no whitespace', () => {
    expect(formatInboxAck({ stored: 'existing', digest } as never).toString()).toBe(`{"digest":"${digest}","stored":"existing"}`);
  });

  it('an empty work feed is allowed and keeps its cursor', () => {
    expect(parseWorkFeed(text({ items: [], cursor: 12, trust: { version: 1 } }))).toEqual({ items: [], cursor: 12, trust: { version: 1 } });
  });
});

describe('refusals', () => {
  it('a body over its cap is refused with PROTOCOL_BODY_TOO_LARGE before it is parsed (not valid JSON either)', () => {
    expect(codeOf(() => parseWorkFeed(Buffer.alloc(CAPS.workFeedBytes + 1, 0x20)))).toBe('PROTOCOL_BODY_TOO_LARGE');
    expect(codeOf(() => parseStatusReport(Buffer.alloc(CAPS.statusReportBytes + 1, 0x7b)))).toBe('PROTOCOL_BODY_TOO_LARGE');
    expect(codeOf(() => parseInboxAck(Buffer.alloc(CAPS.inboxAckBytes + 1, 0x7b)))).toBe('PROTOCOL_BODY_TOO_LARGE');
    expect(codeOf(() => parseErrorBody(Buffer.alloc(CAPS.errorBodyBytes + 1, 0x7b)))).toBe('PROTOCOL_BODY_TOO_LARGE');
  });

  it('a body at its cap is parsed (padded with whitespace to exactly the cap)', () => {
    const body = formatInboxAck({ digest, stored: 'created' });
    const padded = Buffer.concat([body, Buffer.alloc(CAPS.inboxAckBytes - body.length, 0x20)]);
    expect(parseInboxAck(padded).stored).toBe('created');
  });

  it('a member named twice is refused with PROTOCOL_BODY_UNPARSEABLE', () => {
    expect(codeOf(() => parseInboxAck(Buffer.from(`{"digest":"${digest}","stored":"created","stored":"existing"}`)))).toBe(
      'PROTOCOL_BODY_UNPARSEABLE',
    );
    expect(codeOf(() => parseWorkFeed(Buffer.from('{"items":[],"cursor":1,"cursor":2,"trust":{"version":1}}')))).toBe('PROTOCOL_BODY_UNPARSEABLE');
  });

  it('an HTML page where JSON was expected is refused with PROTOCOL_BODY_UNPARSEABLE', () => {
    expect(codeOf(() => parseInboxAck(Buffer.from('<html><body>Proxy says hello</body></html>')))).toBe('PROTOCOL_BODY_UNPARSEABLE');
  });

  it('an unknown member is refused with PROTOCOL_BODY_SCHEMA', () => {
    expect(codeOf(() => parseStatusReport(text({ ...status, hostname: 'db-01.bank.internal' })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseWorkFeed(text({ ...feed, extra: 1 })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseInboxAck(text({ digest, stored: 'created', note: 'x' })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseErrorBody(text({ code: 'X_Y_Z', message: 'm', stack: 'at ...' })))).toBe('PROTOCOL_BODY_SCHEMA');
  });

  it('a member of the wrong type or format is refused with PROTOCOL_BODY_SCHEMA', () => {
    expect(codeOf(() => parseStatusReport(text({ ...status, logSize: '120' })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseStatusReport(text({ ...status, outboxDepth: -1 })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseStatusReport(text({ ...status, oldestQueuedSeconds: 1.5 })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseStatusReport(text({ ...status, labels: ['has space'] })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseStatusReport(text({ ...status, version: 'built on db-01' })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseInboxAck(text({ digest: 'sha256:XYZ', stored: 'created' })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseInboxAck(text({ digest, stored: 'maybe' })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseErrorBody(text({ code: 'lowercase', message: 'm' })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseWorkFeed(text({ ...feed, items: [{ cursor: 1, capsule: digest, size: 0 }], cursor: 1 })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseWorkFeed(text([feed])))).toBe('PROTOCOL_BODY_SCHEMA');
  });

  it('a work feed out of cursor order, or whose cursor is not its last item, is refused with PROTOCOL_BODY_SCHEMA', () => {
    expect(codeOf(() => parseWorkFeed(text({ ...feed, items: [...feed.items].reverse() })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => parseWorkFeed(text({ ...feed, cursor: 9 })))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(() => formatWorkFeed({ ...feed, cursor: 4 }))).toBe('PROTOCOL_BODY_SCHEMA');
  });

  it('a work feed of more than 100 items is refused with PROTOCOL_BODY_SCHEMA', () => {
    const items = Array.from({ length: 101 }, (_, i) => ({ cursor: i + 1, capsule: digest, size: 10 }));
    expect(codeOf(() => parseWorkFeed(text({ items, cursor: 101, trust: { version: 1 } })))).toBe('PROTOCOL_BODY_SCHEMA');
  });

  it('formatting refuses what parsing would refuse (a status report carrying a host name)', () => {
    expect(codeOf(() => formatStatusReport({ ...status, hostname: 'db-01' } as RunnerStatusReport))).toBe('PROTOCOL_BODY_SCHEMA');
  });
});
