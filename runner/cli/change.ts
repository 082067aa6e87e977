/**
 * `edge-runner change`: the governed changes of a state folder (runner/remediate/). `list` and `show` say
 * where each change is; `approve` hands signed approval files to the runner, which records each (accepted, or
 * refused with its code) and, once the change is authorized, applies, verifies and rolls back before it
 * returns; `resume` takes on what a dead runner left (every command's open does, this one says what it did).
 * Exit codes: 0 done, 1 a change ended rolled back, refused or with its rollback failed, 3 an approval refused.
 */
import { Command } from 'commander';
import { APPROVAL_MAX_BYTES } from '../policy/approval.js';
import { receiveApproval, type ApprovalOutcome } from '../remediate/approvals.js';
import { detailsOf, resumeChanges, type ChangeOutcome } from '../remediate/machine.js';
import { RemediationError } from '../remediate/machine-errors.js';
import type { ChangeRow } from '../store/changes.js';
import { inRunner } from './context.js';
import { readFileCapped } from './files.js';
import { EXIT, printJson, toPrintable } from './output.js';

interface StateOptions {
  state: string;
  config?: string;
  json?: boolean;
}

const FAILED_STATES = new Set(['rolled-back', 'rollback-failed', 'refused']);

function summaryOf(row: ChangeRow) {
  const details = detailsOf(row);
  return {
    change: row.changeDigest,
    target: row.target,
    state: row.state,
    capsuleId: row.capsuleId,
    proposal: row.proposalEvidence,
    proposedAt: row.proposedAt,
    verdict: row.verdict,
    required: row.required,
    surfaces: details.evidence.footprint.surfaces,
    dependents: details.evidence.footprint.dependents,
    files: details.evidence.footprint.files.length,
    ...(row.code !== undefined ? { code: row.code } : {}),
    ...(row.decidedAt !== undefined ? { decidedAt: row.decidedAt } : {}),
    ...(row.approvals !== undefined ? { approvals: row.approvals } : {}),
    ...(row.finalEvidence !== undefined ? { finalEvidence: row.finalEvidence } : {}),
    updatedAt: row.updatedAt,
  };
}

function lineOf(outcome: ChangeOutcome): string {
  const parts = [`change ${outcome.changeDigest}: ${outcome.state}`];
  if (outcome.code !== undefined) parts.push(`(${outcome.code})`);
  if (outcome.state === 'proposed') {
    parts.push(`${outcome.counted ?? 0} of ${outcome.required} approvals counted`);
    if (outcome.busy) parts.push('(another change holds the target; it waits)');
  }
  if (outcome.bundlePath !== undefined) parts.push(`bundle ${outcome.bundlePath}`);
  return parts.join(' ');
}

function approvalLine(outcome: ApprovalOutcome): string {
  const who = outcome.approver !== undefined ? ` by ${outcome.approver}` : '';
  const what =
    outcome.status === 'refused'
      ? `refused ${outcome.code}: ${outcome.message ?? ''}`
      : outcome.status === 'known'
        ? `already decided${outcome.code ? ` (${outcome.code})` : ''}`
        : `accepted (${outcome.decision})`;
  return `approval ${outcome.digest}${who}: ${toPrintable(what)}`;
}

const stateOption = (command: Command) =>
  command
    .requiredOption('--state <dir>', 'the runner state folder')
    .option('--config <file>', 'the runner configuration file (its [targets])')
    .option('--json', 'print a machine-readable summary');

export function changeCommand(): Command {
  const change = new Command('change').description('Governed changes: list, show, approve, resume.');

  stateOption(change.command('list').description('List the changes proposed on this runner and where each is.')).action(
    async (opts: StateOptions) => {
      const rows = await inRunner(opts.state, (ctx) => ctx.store.changes().map(summaryOf), { ...(opts.config ? { configFile: opts.config } : {}) });
      if (opts.json) printJson({ changes: rows });
      else if (rows.length === 0) process.stdout.write('no changes\n');
      else
        for (const row of rows)
          process.stdout.write(
            `${row.change} ${row.state.padEnd(15)} ${row.target} ${row.capsuleId} required ${row.required}${row.code ? ` ${row.code}` : ''}\n`,
          );
    },
  );

  stateOption(
    change
      .command('show')
      .description('One change: its proposal, footprint, tier, approvals and outcome.')
      .argument('<digest>', 'the change digest (sha256:HEX)'),
  ).action(async (digest: string, opts: StateOptions) => {
    const shown = await inRunner(
      opts.state,
      (ctx) => {
        const row = ctx.store.change(digest);
        if (row === undefined) throw new RemediationError('CHANGE_UNKNOWN', `No change ${toPrintable(digest)} was proposed on this runner.`);
        const details = detailsOf(row);
        const approvals = ctx.store
          .approvalsOf(row.changeDigest)
          .map((a) => ({ digest: a.digest, approver: a.approver, decision: a.decision, source: a.source, receivedAt: a.receivedAt }));
        return {
          ...summaryOf(row),
          preState: row.preState,
          postState: row.postState,
          footprint: details.evidence.footprint,
          tier: details.evidence.tier,
          received: approvals,
        };
      },
      { ...(opts.config ? { configFile: opts.config } : {}) },
    );
    if (opts.json) printJson(shown);
    else {
      const lines = [
        `change ${shown.change}: ${shown.state}${shown.code ? ` (${shown.code})` : ''}`,
        `  target ${shown.target}, capsule ${shown.capsuleId}, staged validation ${shown.verdict}`,
        `  pre-state ${shown.preState}`,
        `  post-state ${shown.postState}`,
        `  footprint: ${shown.footprint.files.length} file(s), +${shown.footprint.linesAdded} -${shown.footprint.linesRemoved} lines; surfaces ${shown.footprint.surfaces.join(', ') || '-'}; dependents ${shown.footprint.dependents.join(', ') || '-'}`,
        ...shown.footprint.files.map((f) => `    ${f.action.padEnd(6)} ${toPrintable(f.path)} +${f.linesAdded} -${f.linesRemoved}`),
        `  tier: ${shown.tier.approvals} approvals${shown.tier.changeControl ? ', change control' : ''}${shown.tier.declared ? ` (declared ${shown.tier.declared.approvals}: ${shown.tier.declared.comparison})` : ''}`,
        ...shown.tier.rules.map(
          (r) => `    ${r.surface} (${r.via}, ${r.source}): ${r.approvals}${r.group ? ` from ${r.group}` : ''}${r.noAutonomy ? ', no autonomy' : ''}`,
        ),
        `  approvals received: ${shown.received.length}`,
        ...shown.received.map((a) => `    ${a.digest} ${a.approver} ${a.decision} (${a.source})`),
        ...(shown.finalEvidence ? [`  final evidence ${shown.finalEvidence}`] : []),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    }
  });

  stateOption(
    change
      .command('approve')
      .description('Give the runner signed approvals (edge-runner approve writes them); the change is applied once authorized.')
      .argument('<approvals...>', 'APPROVAL.json files'),
  ).action(async (files: string[], opts: StateOptions) => {
    const outcomes = await inRunner(
      opts.state,
      async (ctx) => {
        const results: ApprovalOutcome[] = [];
        // One at a time, in the order given: each is recorded before the next is read.
        for (const file of files) results.push(await receiveApproval(ctx, readFileCapped(file, APPROVAL_MAX_BYTES).bytes, 'file'));
        return results;
      },
      { ...(opts.config ? { configFile: opts.config } : {}) },
    );
    const last = [...outcomes].reverse().find((o) => o.change !== undefined)?.change;
    if (opts.json) printJson({ approvals: outcomes.map(({ change: _change, ...rest }) => rest), change: last ?? null });
    else {
      for (const outcome of outcomes) process.stdout.write(`${approvalLine(outcome)}\n`);
      if (last) process.stdout.write(`${lineOf(last)}\n`);
    }
    process.exitCode =
      last !== undefined && FAILED_STATES.has(last.state) ? EXIT.failed : outcomes.some((o) => o.status === 'refused') ? EXIT.rejected : EXIT.ok;
  });

  stateOption(change.command('resume').description('Take on what a dead runner left of a change (every open does), and decide waiting ones.')).action(
    async (opts: StateOptions) => {
      // The open itself resumes (runner/agent/runner.ts); this asks once more and reports the changes' states.
      const outcomes = await inRunner(opts.state, (ctx) => resumeChanges(ctx).then(() => ctx.store.changes().map(summaryOf)), {
        ...(opts.config ? { configFile: opts.config } : {}),
      });
      if (opts.json) printJson({ changes: outcomes });
      else for (const row of outcomes) process.stdout.write(`${row.change} ${row.state}${row.code ? ` ${row.code}` : ''}\n`);
    },
  );
  return change;
}
