/**
 * A hostile review of approvals through the coordinator (its real CLI, `serve` on 127.0.0.1, a real SQLite
 * file), from the side of an operator-token holder and of approvers: what would make an approval that was
 * stored (201) never count, or keep other people's approvals out.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteCoordinatorStore } from '../../coordinator/src/store/sqlite.js';
import { DEFAULT_CLOCK_SKEW_MS } from '../../runner/capsule/verify.js';
import { bearer, call, initCoordinator, makeCoordinatorWorld, startCoordinator, type CoordinatorWorld, type RunningCoordinator } from './helpers.js';
import { approvalFixtures } from './approval-fixtures.js';
import { MAX_APPROVALS_PER_PERSON } from '../../coordinator/src/store/store.js';

let cw: CoordinatorWorld;
let coordinator: RunningCoordinator;
const { rows, holdProposal, approvalFor } = approvalFixtures(() => cw);

const upload = (hex: string, body: Buffer) => call(`${coordinator.url}/v1/approvals/${hex}`, { method: 'PUT', headers: bearer(cw.token), body });

beforeAll(async () => {
  cw = makeCoordinatorWorld({ approvers: 2 });
  initCoordinator(cw);
  coordinator = await startCoordinator(cw.stateDir);
});

afterAll(async () => {
  await coordinator?.stop();
  cw?.world.cleanup();
});

describe('approvals the coordinator must not take', () => {
  it(`one approver re-signing cannot fill a proposal's approvals: past ${MAX_APPROVALS_PER_PERSON} of one person, 409 INBOX_APPROVER_FULL, and another person still gets in`, async () => {
    const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
    const [mallory, alice] = cw.approvers as [CoordinatorWorld['approvers'][0], CoordinatorWorld['approvers'][0]];
    const signedAt = (i: number) => new Date(Date.now() - 60_000 - i * 1000).toISOString();
    for (let i = 0; i < MAX_APPROVALS_PER_PERSON; i++) {
      const approval = approvalFor(proposal, mallory, { signedAt: signedAt(i) });
      expect((await upload(approval.hex, approval.bytes)).status).toBe(201);
    }
    const more = approvalFor(proposal, mallory, { signedAt: signedAt(99) });
    const refused = await upload(more.hex, more.bytes);
    expect(refused.status).toBe(409);
    expect(refused.json().code).toBe('INBOX_APPROVER_FULL');
    const theirs = approvalFor(proposal, alice);
    expect((await upload(theirs.hex, theirs.bytes)).status).toBe(201);
    expect(rows('SELECT approver FROM approvals WHERE proposal = ? AND approver = ?', proposal.evidence, mallory.name)).toHaveLength(
      MAX_APPROVALS_PER_PERSON,
    );
  });

  it('signed later than the coordinator clock allows (beyond the skew): 422 APPROVAL_NOT_YET_VALID, not stored (the runner would refuse it and the feed never brings it again)', async () => {
    const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
    const ahead = new Date(Date.now() + DEFAULT_CLOCK_SKEW_MS + 10 * 60_000);
    const approval = approvalFor(proposal, cw.approvers[0]!, {
      signedAt: ahead.toISOString(),
      notAfter: new Date(ahead.getTime() + 86_400_000).toISOString(),
    });
    const answer = await upload(approval.hex, approval.bytes);
    expect(answer.status).toBe(422);
    expect(answer.json().code).toBe('APPROVAL_NOT_YET_VALID');
    expect(rows('SELECT digest FROM approvals WHERE digest = ?', approval.digest)).toHaveLength(0);
    // Within the skew it is taken, as the runner takes it.
    const within = approvalFor(proposal, cw.approvers[1]!, { signedAt: new Date(Date.now() + 5_000).toISOString() });
    expect((await upload(within.hex, within.bytes)).status).toBe(201);
  });

  it('for a proposal whose change its runner already decided (a final bundle held: applied, rolled back, refused): 409 INBOX_CHANGE_DECIDED, not stored', async () => {
    for (const phase of ['applied', 'rolled-back', 'refused']) {
      const proposal = holdProposal(cw.world.runnerId, cw.world.runnerKey);
      holdProposal(cw.world.runnerId, cw.world.runnerKey, phase, proposal);
      const approval = approvalFor(proposal, cw.approvers[0]!);
      const answer = await upload(approval.hex, approval.bytes);
      expect(answer.status, phase).toBe(409);
      expect(answer.json().code).toBe('INBOX_CHANGE_DECIDED');
      expect(rows('SELECT digest FROM approvals WHERE proposal = ?', proposal.evidence)).toHaveLength(0);
    }
  });
});

describe('the coordinator database of another schema', () => {
  it('a newer schema is refused before anything is written to it (this binary does not put back the tables a later one dropped)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'coordinator-schema-'));
    try {
      const path = join(dir, 'coordinator.db');
      SqliteCoordinatorStore.open(path, { create: true }).close();
      const db = new DatabaseSync(path);
      db.exec("UPDATE coordinator_meta SET value = '3' WHERE name = 'schema_version'; DROP TABLE approvals; DROP INDEX bundles_by_evidence;");
      db.close();
      expect(() => SqliteCoordinatorStore.open(path)).toThrow(/schema version 3/);
      const after = new DatabaseSync(path, { readOnly: true });
      try {
        const names = after.prepare("SELECT name FROM sqlite_master WHERE name IN ('approvals', 'bundles_by_evidence')").all();
        expect(names).toEqual([]);
      } finally {
        after.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
