/**
 * The store's side of governed remediation (schema 9, a real SQLite file): a change's row moves only with
 * the record of its transition, in one transaction; a transition from a state the row is not in writes
 * nothing; one change holds a target at a time; approvals are decided once per digest.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SCHEMA_VERSION, Store, type NewChange } from '../../runner/store/store.js';
import { codeOf } from '../helpers/codes.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function open(): Store {
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-changes-'));
  dirs.push(dir);
  return Store.open(join(dir, 'runner.db'), { create: true });
}

const digest = (c: string) => `sha256:${c.repeat(64)}`;
const RUN = '00000000-0000-4000-8000-000000000001';

function change(d: string, target = 'config'): NewChange {
  return {
    changeDigest: d,
    target,
    capsuleId: 'fix-1',
    manifestDigest: digest('1'),
    fileDigest: digest('2'),
    proposalRunId: RUN,
    proposalEvidence: digest('3'),
    acceptedAt: '2026-12-02T10:00:00.000Z',
    preState: digest('4'),
    postState: digest('5'),
    policyDigest: digest('6'),
    verdict: 'pass',
    required: 2,
    details: '{}',
  };
}

const propose = (store: Store, d: string, target?: string) =>
  store.proposeChange({ runId: RUN, changeDigest: d, evidenceDigest: digest('3'), verdict: 'pass', required: 2 }, change(d, target));

describe('changes_v1 and approvals_v1 (schema 9)', () => {
  it('is schema 9', () => {
    expect(SCHEMA_VERSION).toBe(9);
  });

  it('writes a proposal and its change.proposed record together, and a second proposal of the same digest not at all', () => {
    const store = open();
    const record = propose(store, digest('a'));
    expect(store.change(digest('a'))).toMatchObject({ state: 'proposed', proposedSeq: record.seq, stateSeq: record.seq });
    const size = store.recordCount();
    expect(codeOf(() => propose(store, digest('a')))).toBe('STORE_WRITE_FAILED');
    expect(store.recordCount()).toBe(size);
    store.close();
  });

  it('moves a change with the record of each transition; change.applying sets the decision time to its own `at`', () => {
    const store = open();
    propose(store, digest('a'));
    const applying = store.moveChange('change.applying', { changeDigest: digest('a'), approvals: [digest('7')] }, 'proposed', 'applying', {
      approvals: [digest('7')],
    });
    expect(store.change(digest('a'))).toMatchObject({ state: 'applying', decidedAt: applying.at, approvals: [digest('7')], stateSeq: applying.seq });
    store.moveChange('change.applied', { changeDigest: digest('a'), targetDigest: digest('5') }, 'applying', 'applied');
    expect(store.changeHolding('config')?.changeDigest).toBe(digest('a'));
    store.close();
  });

  it('refuses a transition from a state the change is not in, and appends no record', () => {
    const store = open();
    propose(store, digest('a'));
    const size = store.recordCount();
    expect(codeOf(() => store.moveChange('change.applied', { changeDigest: digest('a'), targetDigest: digest('5') }, 'applying', 'applied'))).toBe(
      'STORE_WRITE_FAILED',
    );
    expect(codeOf(() => store.moveChange('change.refused', { changeDigest: digest('f'), code: 'CHANGE_STALE' }, 'proposed', 'refused'))).toBe(
      'STORE_WRITE_FAILED',
    );
    expect(store.recordCount()).toBe(size);
    expect(store.change(digest('a'))!.state).toBe('proposed');
    store.close();
  });

  it('lets one change hold a target at a time: a second change.applying on it is not recorded', () => {
    const store = open();
    propose(store, digest('a'));
    propose(store, digest('b'));
    propose(store, digest('c'), 'other');
    store.moveChange('change.applying', { changeDigest: digest('a'), approvals: [] }, 'proposed', 'applying');
    const size = store.recordCount();
    expect(codeOf(() => store.moveChange('change.applying', { changeDigest: digest('b'), approvals: [] }, 'proposed', 'applying'))).toBe(
      'STORE_WRITE_FAILED',
    );
    expect(store.recordCount()).toBe(size);
    expect(store.change(digest('b'))!.state).toBe('proposed');
    // Another target is not held.
    store.moveChange('change.applying', { changeDigest: digest('c'), approvals: [] }, 'proposed', 'applying');
    // Once the first is final, the target is free.
    store.moveChange('change.refused', { changeDigest: digest('a'), code: 'CHANGE_STALE' }, 'applying', 'refused', {
      code: 'CHANGE_STALE',
      owner: null,
    });
    store.moveChange('change.applying', { changeDigest: digest('b'), approvals: [] }, 'proposed', 'applying');
    expect(store.openChanges().map((c) => c.changeDigest)).toEqual([digest('b'), digest('c')]);
    store.close();
  });

  it('decides an approval once per digest; a refusal may be decided again only when asked', () => {
    const store = open();
    propose(store, digest('a'));
    const row = { digest: digest('9'), approver: 'alice', keyid: 'k', decision: 'approve' as const, source: 'file' as const, envelope: '{}' };
    store.decideApproval(
      { kind: 'approval.refused', body: { digest: digest('9'), code: 'APPROVAL_NOT_YET_VALID' } },
      { ...row, code: 'APPROVAL_NOT_YET_VALID' },
    );
    const size = store.recordCount();
    expect(
      codeOf(() =>
        store.decideApproval(
          { kind: 'approval.accepted', body: { changeDigest: digest('a'), digest: digest('9'), approver: 'alice', decision: 'approve' } },
          { ...row, changeDigest: digest('a') },
        ),
      ),
    ).toBe('STORE_WRITE_FAILED');
    expect(store.recordCount()).toBe(size);
    store.decideApproval(
      { kind: 'approval.accepted', body: { changeDigest: digest('a'), digest: digest('9'), approver: 'alice', decision: 'approve' } },
      { ...row, changeDigest: digest('a') },
      true,
    );
    expect(store.approval(digest('9'))).toMatchObject({ status: 'accepted', changeDigest: digest('a') });
    expect(store.approvalsOf(digest('a')).map((a) => a.digest)).toEqual([digest('9')]);
    store.close();
  });
});
