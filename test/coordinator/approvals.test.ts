/**
 * Approvals through the reference coordinator (its real CLI, `serve` on 127.0.0.1, a real SQLite file):
 * `PUT /v1/approvals/{hex}` by an operator (every refusal with its code, stored once), `GET` by the runner
 * whose proposal it answers (and by no other runner), the operator's list, and the work feed that carries
 * approvals after their own cursor to the runner that asks for them.
 *
 * The proposals here are bundles written into the coordinator's database (./approval-fixtures.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../runner/core/digest.js';
import { CAPS, formatWorkFeed, parseWorkFeed } from '../../runner/protocol/wire.js';
import { SCHEMA_VERSION, SqliteCoordinatorStore } from '../../coordinator/src/store/sqlite.js';
import {
  bearer,
  call,
  initCoordinator,
  makeCoordinatorWorld,
  signedCall,
  startCoordinator,
  type CoordinatorWorld,
  type RunningCoordinator,
} from './helpers.js';
import { approvalFixtures, digestRef } from './approval-fixtures.js';

let cw: CoordinatorWorld;
let coordinator: RunningCoordinator;
let base: string;
const { rows, holdProposal, approvalFor } = approvalFixtures(() => cw);

const upload = (hex: string, body: Buffer | string, headers: Record<string, string> = bearer(cw.token)) =>
  call(`${base}/v1/approvals/${hex}`, { method: 'PUT', headers, body });
const work = (query: string, key = cw.world.runnerKey, id = cw.world.runnerId) => signedCall(`${base}/v1/runners/${id}/work?${query}`, key);

beforeAll(async () => {
  cw = makeCoordinatorWorld({ approvers: 17 });
  initCoordinator(cw);
  coordinator = await startCoordinator(cw.stateDir);
  base = coordinator.url;
});

afterAll(async () => {
  await coordinator?.stop();
  cw?.world.cleanup();
});

describe('PUT /v1/approvals/{hex}', () => {
  describe('when the approval answers a proposal the coordinator holds', () => {
    it('stores it once (201, then 200 existing for the same approval, however spelt) and names the runner it goes to', async () => {
      const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
      const approval = approvalFor(proposal, cw.approvers[0]!);
      const first = await upload(approval.hex, approval.bytes);
      expect(first.status).toBe(201);
      const ack = first.json();
      expect(ack).toEqual({
        approval: approval.digest,
        stored: 'created',
        runner: cw.world.runnerId,
        proposal: proposal.evidence,
        cursor: ack.cursor,
      });
      // Other whitespace, the same envelope: the same approval (its digest is of the canonical envelope).
      const respelt = Buffer.from(JSON.stringify(JSON.parse(approval.bytes.toString('utf8'))));
      const again = await upload(approval.hex, respelt);
      expect(again.status).toBe(200);
      expect(again.json()).toEqual({ ...ack, stored: 'existing' });
      expect(rows('SELECT digest FROM approvals WHERE digest = ?', approval.digest)).toHaveLength(1);
    });

    it('keeps the canonical envelope, whose SHA-256 is the approval digest', async () => {
      const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
      const approval = approvalFor(proposal, cw.approvers[1]!);
      expect((await upload(approval.hex, approval.bytes)).status).toBe(201);
      const [row] = rows('SELECT bytes, size FROM approvals WHERE digest = ?', approval.digest);
      const kept = Buffer.from(row!.bytes as Uint8Array);
      expect(sha256Hex(kept)).toBe(approval.hex);
      expect(row!.size).toBe(kept.length);
    });

    it('takes a reject decision as well (the runner decides what it means)', async () => {
      const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
      const veto = approvalFor(proposal, cw.approvers[2]!, { decision: 'reject' });
      expect((await upload(veto.hex, veto.bytes)).status).toBe(201);
      expect(rows('SELECT decision FROM approvals WHERE digest = ?', veto.digest)).toEqual([{ decision: 'reject' }]);
    });
  });

  describe('refusals', () => {
    it('without an operator token: 401 OPERATOR_UNAUTHORIZED, and a runner signature is no token', async () => {
      const approval = approvalFor(holdProposal(cw.world.runnerId, cw.world.runnerKey), cw.approvers[0]!);
      const none = await upload(approval.hex, approval.bytes, {});
      expect(none.status).toBe(401);
      expect(none.json().code).toBe('OPERATOR_UNAUTHORIZED');
      const wrong = await upload(approval.hex, approval.bytes, bearer('not-the-token'));
      expect(wrong.status).toBe(401);
      const signed = await signedCall(`${base}/v1/approvals/${approval.hex}`, cw.world.runnerKey, { method: 'PUT', body: approval.bytes });
      expect(signed.status).toBe(401);
      expect(signed.json().code).toBe('OPERATOR_UNAUTHORIZED');
      expect(rows('SELECT digest FROM approvals WHERE digest = ?', approval.digest)).toHaveLength(0);
    });

    it('a body over the 16 KiB cap: 413 PROTOCOL_BODY_TOO_LARGE, refused from its Content-Length before it is read', async () => {
      const answer = await upload('0'.repeat(64), Buffer.alloc(CAPS.approvalBytes + 1, 0x20));
      expect(answer.status).toBe(413);
      expect(answer.json().code).toBe('PROTOCOL_BODY_TOO_LARGE');
      expect(answer.headers.connection).toBe('close');
    });

    it('a body at the cap is read and judged (422 APPROVAL_UNPARSEABLE for padding)', async () => {
      const answer = await upload('0'.repeat(64), Buffer.alloc(CAPS.approvalBytes, 0x20));
      expect(answer.status).toBe(422);
      expect(answer.json().code).toBe('APPROVAL_UNPARSEABLE');
    });

    it('not a DSSE envelope: 422 APPROVAL_UNPARSEABLE', async () => {
      const answer = await upload('0'.repeat(64), '{"payloadType":');
      expect(answer.status).toBe(422);
      expect(answer.json().code).toBe('APPROVAL_UNPARSEABLE');
    });

    it('signed by a key without the approver role (a capsule signer, a runner): 422 APPROVAL_SIGNATURE', async () => {
      const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
      for (const [name, key] of [
        ['signer-1', cw.world.signers[0]!],
        [cw.world.runnerId, cw.world.runnerKey],
      ] as const) {
        const forged = approvalFor(proposal, { name, key });
        const answer = await upload(forged.hex, forged.bytes);
        expect(answer.status).toBe(422);
        expect(answer.json().code).toBe('APPROVAL_SIGNATURE');
      }
    });

    it('naming another person than the key that signed it: 422 APPROVAL_NAME_MISMATCH', async () => {
      const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
      const approval = approvalFor(proposal, cw.approvers[0]!, { approver: 'approver-2' });
      const answer = await upload(approval.hex, approval.bytes);
      expect(answer.status).toBe(422);
      expect(answer.json().code).toBe('APPROVAL_NAME_MISMATCH');
    });

    it('a path that is not the approval digest (the SHA-256 of the file as written, say): 422 INBOX_DIGEST_MISMATCH', async () => {
      const approval = approvalFor(holdProposal(cw.world.runnerId, cw.world.runnerKey), cw.approvers[0]!);
      const answer = await upload(sha256Hex(approval.bytes), approval.bytes);
      expect(answer.status).toBe(422);
      expect(answer.json().code).toBe('INBOX_DIGEST_MISMATCH');
      expect(rows('SELECT digest FROM approvals WHERE digest = ?', approval.digest)).toHaveLength(0);
    });

    it('already expired: 422 APPROVAL_EXPIRED', async () => {
      const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
      const approval = approvalFor(proposal, cw.approvers[0]!, {
        signedAt: new Date(Date.now() - 7200_000).toISOString(),
        notAfter: new Date(Date.now() - 3600_000).toISOString(),
      });
      const answer = await upload(approval.hex, approval.bytes);
      expect(answer.status).toBe(422);
      expect(answer.json().code).toBe('APPROVAL_EXPIRED');
    });

    it('for a proposal whose bundle the coordinator does not hold: 422 INBOX_PROPOSAL_UNKNOWN', async () => {
      const proposal = { ...holdProposal(cw.world.runnerId, cw.world.runnerKey), evidence: digestRef() };
      const approval = approvalFor(proposal, cw.approvers[0]!);
      const answer = await upload(approval.hex, approval.bytes);
      expect(answer.status).toBe(422);
      expect(answer.json().code).toBe('INBOX_PROPOSAL_UNKNOWN');
    });

    it('for a bundle that is not a proposal (a validate run; an applied change): 422 INBOX_NOT_A_PROPOSAL', async () => {
      const plain = holdProposal(cw.world.runnerId, cw.world.runnerKey, null);
      const applied = holdProposal(cw.world.runnerId, cw.world.runnerKey, 'applied');
      for (const proposal of [plain, applied]) {
        const approval = approvalFor(proposal, cw.approvers[0]!);
        const answer = await upload(approval.hex, approval.bytes);
        expect(answer.status).toBe(422);
        expect(answer.json().code).toBe('INBOX_NOT_A_PROPOSAL');
      }
    });

    it('bound to another change, target, capsule or runner than the proposal it names: 422 INBOX_PROPOSAL_MISMATCH, saying which', async () => {
      const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
      const cases: [ReturnType<typeof approvalFor>, string][] = [
        [approvalFor(proposal, cw.approvers[0]!, {}, digestRef()), 'change digest'],
        [approvalFor(proposal, cw.approvers[0]!, { target: 'payments' }), 'target'],
        [approvalFor(proposal, cw.approvers[0]!, { capsule: { id: proposal.capsule.id, digest: digestRef() } }), 'capsule'],
        [approvalFor(proposal, cw.approvers[0]!, { runner: cw.otherRunnerId }), 'runner'],
      ];
      for (const [approval, what] of cases) {
        const answer = await upload(approval.hex, approval.bytes);
        expect(answer.status).toBe(422);
        expect(answer.json()).toMatchObject({ code: 'INBOX_PROPOSAL_MISMATCH', message: expect.stringContaining(what) });
      }
      expect(rows('SELECT digest FROM approvals WHERE proposal = ?', proposal.evidence)).toHaveLength(0);
    });

    it('past 64 approvals of one proposal: 409 INBOX_APPROVALS_FULL, and nothing more is stored for it', async () => {
      const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
      // Four of each of 16 persons (one person may hold only MAX_APPROVALS_PER_PERSON: approvals-holes.test.ts).
      for (let i = 0; i < 64; i++) {
        const approval = approvalFor(proposal, cw.approvers[i % 16]!, { signedAt: new Date(Date.now() - 60_000 - i * 1000).toISOString() });
        expect((await upload(approval.hex, approval.bytes)).status).toBe(201);
      }
      const more = approvalFor(proposal, cw.approvers[16]!);
      const answer = await upload(more.hex, more.bytes);
      expect(answer.status).toBe(409);
      expect(answer.json().code).toBe('INBOX_APPROVALS_FULL');
      expect(rows('SELECT digest FROM approvals WHERE proposal = ?', proposal.evidence)).toHaveLength(64);
    });
  });
});

describe('GET /v1/approvals/{hex}', () => {
  let mine: ReturnType<typeof approvalFor>;
  beforeAll(async () => {
    mine = approvalFor(holdProposal(cw.world.runnerId, cw.world.runnerKey), cw.approvers[0]!);
    expect((await upload(mine.hex, mine.bytes)).status).toBe(201);
  });

  it('serves the runner whose proposal it answers the canonical envelope (its SHA-256 is the digest)', async () => {
    const answer = await signedCall(`${base}/v1/approvals/${mine.hex}`, cw.world.runnerKey);
    expect(answer.status).toBe(200);
    expect(sha256Hex(answer.body)).toBe(mine.hex);
    expect(answer.headers['cache-control']).toBe('no-store');
  });

  it('tells any other runner there is none (404 INBOX_NOT_FOUND)', async () => {
    const answer = await signedCall(`${base}/v1/approvals/${mine.hex}`, cw.otherRunnerKey);
    expect(answer.status).toBe(404);
    expect(answer.json().code).toBe('INBOX_NOT_FOUND');
  });

  it('serves an operator, and answers 404 INBOX_NOT_FOUND for an unknown digest', async () => {
    expect((await call(`${base}/v1/approvals/${mine.hex}`, { headers: bearer(cw.token) })).status).toBe(200);
    const unknown = await call(`${base}/v1/approvals/${'a'.repeat(64)}`, { headers: bearer(cw.token) });
    expect(unknown.status).toBe(404);
    expect(unknown.json().code).toBe('INBOX_NOT_FOUND');
  });

  it('refuses an unsigned request (401 PROTOCOL_SIGNATURE_MISSING)', async () => {
    const answer = await call(`${base}/v1/approvals/${mine.hex}`);
    expect(answer.status).toBe(401);
    expect(answer.json().code).toBe('PROTOCOL_SIGNATURE_MISSING');
  });
});

describe('GET /v1/approvals (operator list)', () => {
  it('lists the approvals of one proposal in upload order, with who decided what', async () => {
    const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
    const a = approvalFor(proposal, cw.approvers[0]!);
    const b = approvalFor(proposal, cw.approvers[1]!, { decision: 'reject' });
    for (const approval of [a, b]) expect((await upload(approval.hex, approval.bytes)).status).toBe(201);
    const answer = await call(`${base}/v1/approvals?proposal=${proposal.evidence}`, { headers: bearer(cw.token) });
    expect(answer.status).toBe(200);
    const { items } = answer.json();
    expect(items.map((item: any) => [item.digest, item.approver, item.decision, item.runner, item.change])).toEqual([
      [a.digest, 'approver-1', 'approve', cw.world.runnerId, proposal.change],
      [b.digest, 'approver-2', 'reject', cw.world.runnerId, proposal.change],
    ]);
  });

  it('refuses a query it does not know (400 OPERATOR_BAD_QUERY) and a runner without a token (401)', async () => {
    for (const query of ['proposal=abc', 'limit=0', 'colour=red']) {
      const answer = await call(`${base}/v1/approvals?${query}`, { headers: bearer(cw.token) });
      expect(answer.status).toBe(400);
      expect(answer.json().code).toBe('OPERATOR_BAD_QUERY');
    }
    expect((await signedCall(`${base}/v1/approvals`, cw.world.runnerKey)).json().code).toBe('OPERATOR_UNAUTHORIZED');
  });
});

describe('the work feed with approvals (GET /v1/runners/{id}/work?approvals=C)', () => {
  it("carries the approvals of the runner's own proposals after the cursor, and none of another runner's", async () => {
    const start = Math.max(0, ...rows('SELECT MAX(seq) AS n FROM approvals').map((row) => Number(row.n)));
    const mineProposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
    const theirs = holdProposal(cw.otherRunnerId, cw.otherRunnerKey);
    const a = approvalFor(mineProposal, cw.approvers[0]!);
    const x = approvalFor(theirs, cw.approvers[0]!);
    const b = approvalFor(mineProposal, cw.approvers[1]!);
    const cursors: number[] = [];
    for (const approval of [a, x, b]) cursors.push((await upload(approval.hex, approval.bytes)).json().cursor);
    const answer = await work(`after=0&wait=0&approvals=${start}`);
    expect(answer.status).toBe(200);
    const feed = parseWorkFeed(answer.body);
    expect(feed.items).toEqual([]);
    expect(feed.approvals).toEqual([
      { cursor: cursors[0], approval: a.digest, proposal: mineProposal.evidence, size: expect.any(Number) },
      { cursor: cursors[2], approval: b.digest, proposal: mineProposal.evidence, size: expect.any(Number) },
    ]);
    const theirFeed = parseWorkFeed((await work(`after=0&wait=0&approvals=${start}`, cw.otherRunnerKey, cw.otherRunnerId)).body);
    expect(theirFeed.approvals).toEqual([{ cursor: cursors[1], approval: x.digest, proposal: theirs.evidence, size: expect.any(Number) }]);
    // From the last one on, nothing: 204 at the end of the wait.
    expect((await work(`after=0&wait=0&approvals=${cursors[2]}`)).status).toBe(204);
  });

  it('never carries approvals to a runner that does not ask (an older runner parses the feed it always did)', async () => {
    const approval = approvalFor(holdProposal(cw.world.runnerId, cw.world.runnerKey), cw.approvers[0]!);
    expect((await upload(approval.hex, approval.bytes)).status).toBe(201);
    expect((await work('after=0&wait=0')).status).toBe(204);
  });

  it('answers a waiting poll as soon as an approval for that runner is uploaded', async () => {
    const cursor = Number(rows('SELECT MAX(seq) AS n FROM approvals')[0]!.n);
    const approval = approvalFor(holdProposal(cw.world.runnerId, cw.world.runnerKey), cw.approvers[0]!);
    const poll = work(`after=0&wait=30&approvals=${cursor}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await upload(approval.hex, approval.bytes)).status).toBe(201);
    const answer = await poll;
    expect(answer.status).toBe(200);
    expect(parseWorkFeed(answer.body).approvals?.map((item) => item.approval)).toEqual([approval.digest]);
  });

  it('refuses an approvals cursor past every approval held (409 FEED_APPROVALS_CURSOR_AHEAD) and one that is not a number (400 FEED_BAD_QUERY)', async () => {
    const last = Number(rows('SELECT MAX(seq) AS n FROM approvals')[0]!.n);
    const ahead = await work(`after=0&wait=0&approvals=${last + 1}`);
    expect(ahead.status).toBe(409);
    expect(ahead.json().code).toBe('FEED_APPROVALS_CURSOR_AHEAD');
    for (const query of ['approvals=x', 'approvals=-1', 'approvals=1&approvals=2']) {
      const bad = await work(`after=0&wait=0&${query}`);
      expect(bad.status).toBe(400);
      expect(bad.json().code).toBe('FEED_BAD_QUERY');
    }
  });
});

describe('the work feed body (runner/protocol/wire.ts)', () => {
  const approvalItem = (cursor: number) => ({ cursor, approval: digestRef(), proposal: digestRef(), size: 900 });

  it('parses a feed without approvals, and one with them', () => {
    const plain = formatWorkFeed({ items: [], cursor: 0, trust: { version: 1 } });
    expect(parseWorkFeed(plain).approvals).toBeUndefined();
    const withApprovals = formatWorkFeed({ items: [], cursor: 0, trust: { version: 1 }, approvals: [approvalItem(3), approvalItem(7)] });
    expect(parseWorkFeed(withApprovals).approvals?.map((item) => item.cursor)).toEqual([3, 7]);
  });

  it('refuses approvals out of cursor order, over 100, or over the approval cap (PROTOCOL_BODY_SCHEMA)', () => {
    const feed = (approvals: unknown[]) => Buffer.from(JSON.stringify({ items: [], cursor: 0, trust: { version: 1 }, approvals }));
    const codeOf = (bytes: Buffer) => {
      try {
        parseWorkFeed(bytes);
        return undefined;
      } catch (err) {
        return (err as { code?: string }).code;
      }
    };
    expect(codeOf(feed([approvalItem(7), approvalItem(3)]))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(feed(Array.from({ length: 101 }, (_, i) => approvalItem(i + 1))))).toBe('PROTOCOL_BODY_SCHEMA');
    expect(codeOf(feed([{ ...approvalItem(1), size: CAPS.approvalBytes + 1 }]))).toBe('PROTOCOL_BODY_SCHEMA');
  });
});

describe('the coordinator database', () => {
  it(`brings a schema 1 database to schema ${SCHEMA_VERSION} at open (the approvals table added, nothing else touched)`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'coordinator-schema-'));
    try {
      const path = join(dir, 'coordinator.db');
      SqliteCoordinatorStore.open(path, { create: true }).close();
      const db = new DatabaseSync(path);
      db.exec("DROP TABLE approvals; UPDATE coordinator_meta SET value = '1' WHERE name = 'schema_version'");
      db.close();
      SqliteCoordinatorStore.open(path).close();
      const after = new DatabaseSync(path, { readOnly: true });
      expect(after.prepare("SELECT value FROM coordinator_meta WHERE name = 'schema_version'").get()).toEqual({ value: String(SCHEMA_VERSION) });
      expect(after.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'approvals'").get()).toEqual({ name: 'approvals' });
      after.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a database of a newer schema', () => {
    const dir = mkdtempSync(join(tmpdir(), 'coordinator-schema-'));
    try {
      const path = join(dir, 'coordinator.db');
      SqliteCoordinatorStore.open(path, { create: true }).close();
      const db = new DatabaseSync(path);
      db.exec("UPDATE coordinator_meta SET value = '99' WHERE name = 'schema_version'");
      db.close();
      expect(() => SqliteCoordinatorStore.open(path)).toThrow(/schema version 99/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
