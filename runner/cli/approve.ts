/**
 * `edge-runner approve`: a person reads what a proposal asks of them, then signs their decision. The proposal
 * bundle is verified offline first (verifyBundle: signatures, log proof, change digest recomputed, tier
 * derived again from the signed policy), so what is printed is what the runner proved, not what a file
 * claims. Nothing is signed that the runner would refuse to count: a key that is not an approver's, a
 * capsule signer's person, a validity longer than the policy allows, an approval outside the required groups
 * or without the change ticket change control needs, an approval of a change whose staged validation failed.
 */
import { existsSync, readSync } from 'node:fs';
import { Command } from 'commander';
import { isCodedError } from '../core/errors.js';
import { BUNDLE_MAX_BYTES, verifyBundle, type VerifiedBundle } from '../evidence/bundle.js';
import type { RemediationEvidence } from '../evidence/statement.js';
import { formatApproval, signApproval, type ApprovalPredicate } from '../policy/approval.js';
import { DEFAULT_APPROVAL_MAX_SECONDS, personOf } from '../policy/count.js';
import { ApprovalError } from '../policy/errors.js';
import { surfacesOfPath } from '../policy/surfaces.js';
import type { Tier } from '../policy/types.js';
import { writeFileAtomic } from '../state/files.js';
import { readPrivateKeyFile } from '../state/keyfile.js';
import { TRUST_MAX_BYTES, verifyTrustDocument, type VerifiedTrust } from '../trust/trust.js';
import { cliConfig } from './context.js';
import { readFileCapped } from './files.js';
import { EXIT, printError, toPrintable, UsageError } from './output.js';

const DURATION = /^(\d{1,7})([smhd])$/;
const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400 } as const;
const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;

interface ApproveOptions {
  key: string;
  trust: string;
  out: string;
  notAfter: string;
  reject?: boolean;
  changeTicket?: string;
  yes?: boolean;
}

export function approveCommand(): Command {
  return new Command('approve')
    .description('Print what a remediation proposal asks, then sign your approval (or --reject) of that exact change.')
    .argument('<proposal-bundle>', 'the proposal bundle (a remediation in phase proposed)')
    .requiredOption('--key <path>', 'your approver private key (mode 0600)')
    .requiredOption('--trust <trust-dsse-json>', "the trust document the runner holds (its policy derived the proposal's tier)")
    .requiredOption('--out <path>', 'the approval file to write (never overwritten)')
    .option('--not-after <when>', 'the approval expires after this duration (30m, 24h, 7d) or at this RFC 3339 UTC time', '24h')
    .option('--reject', 'sign a reject: a veto of this change')
    .option('--change-ticket <id>', 'the change-control reference this approval is given under')
    .option('--yes', 'sign without asking for confirmation on the terminal')
    .action((file: string, opts: ApproveOptions) => {
      try {
        approve(file, opts);
      } catch (err) {
        // A proposal that does not verify, or an approval that would not count: a failed check (exit 1).
        if (!isCodedError(err) || !/^(APPROVAL_|BUNDLE_|EGRESS_|LOG_|TRUST_)/.test(err.code)) throw err;
        printError(err, { debug: cliConfig().debug });
        process.exitCode = EXIT.failed;
      }
    });
}

function approve(file: string, opts: ApproveOptions): void {
  const now = new Date();
  if (existsSync(opts.out)) throw new UsageError(`${opts.out} exists; an approval file is never overwritten.`);
  const trust = verifyTrustDocument(readFileCapped(opts.trust, TRUST_MAX_BYTES).bytes, { now });
  const key = readPrivateKeyFile(opts.key);
  const trusted = trust.keys.find((candidate) => candidate.keyid === key.keyid);
  if (trusted === undefined || !trusted.roles.includes('approver')) {
    throw new ApprovalError('APPROVAL_SIGNATURE', `The key ${key.keyid} is not an approver key of this trust document; nothing was signed.`);
  }
  const approver = trust.nameOf(key.keyid)!;

  // 1. The proposal, verified offline as an auditor would.
  const verified = verifyBundle(readFileCapped(file, BUNDLE_MAX_BYTES).bytes, trust);
  const remediation = verified.remediation?.evidence;
  if (remediation === undefined || remediation.phase !== 'proposed') {
    throw new ApprovalError('APPROVAL_NOT_PROPOSAL', 'The bundle is not a remediation proposal; only a proposed change can be approved.');
  }
  const decision = opts.reject ? 'reject' : 'approve';

  // 2. Nothing is signed that would not count.
  const signerNames = new Set(
    verified.capsuleSigners.flatMap((keyid) => (trust.nameOf(keyid) === undefined ? [] : [personOf(trust.nameOf(keyid)!)])),
  );
  if (signerNames.has(personOf(approver))) {
    throw new ApprovalError('APPROVAL_SELF', `${toPrintable(approver)} signed this capsule; the proposer cannot authorize their own change.`);
  }
  const verdict = verified.statement.predicate.run.verdict;
  if (verdict !== 'pass' && decision === 'approve') {
    throw new ApprovalError(
      'APPROVAL_STAGED_FAILED',
      `The staged validation's verdict is ${verdict}, not pass; only --reject can be signed for this proposal.`,
    );
  }
  const groups = remediation.tier.requirements.map((requirement) => requirement.group);
  const members = trust.body.policy.remediation?.groups ?? {};
  if (
    groups.length > 0 &&
    groups.every((group) => group !== undefined) &&
    !groups.some((group) => Object.hasOwn(members, group) && members[group]!.includes(approver))
  ) {
    throw new ApprovalError(
      'APPROVAL_GROUP',
      `${toPrintable(approver)} is in none of the groups this change needs approvals from (${groups.join(', ')}).`,
    );
  }
  if (remediation.tier.changeControl && decision === 'approve' && opts.changeTicket === undefined) {
    throw new ApprovalError('APPROVAL_CHANGE_TICKET', 'This change requires change control: give the change ticket with --change-ticket.');
  }
  const maxSeconds = trust.body.policy.remediation?.approvalMaxSeconds ?? DEFAULT_APPROVAL_MAX_SECONDS;
  const notAfter = notAfterOf(opts.notAfter, now);
  if (notAfter.getTime() - now.getTime() > maxSeconds * 1000) {
    throw new ApprovalError(
      'APPROVAL_TOO_LONG',
      `The policy lets an approval be valid for at most ${maxSeconds} seconds; choose an earlier --not-after.`,
    );
  }

  // 3. What the person approves, then their confirmation.
  const predicate: ApprovalPredicate = {
    proposal: verified.evidenceDigest,
    runner: verified.runnerName,
    target: remediation.target,
    capsule: { id: verified.manifest.id, digest: verified.statement.predicate.capsule.digest },
    approver,
    decision,
    signedAt: now.toISOString(),
    notAfter: notAfter.toISOString(),
    ...(opts.changeTicket === undefined ? {} : { changeTicket: opts.changeTicket }),
  };
  process.stdout.write(describeProposal(verified, remediation, trust));
  process.stdout.write(
    `\nYou sign as ${toPrintable(approver)} (key ${key.keyid}): ${decision.toUpperCase()} change ${remediation.change}, valid until ${predicate.notAfter}` +
      `${opts.changeTicket === undefined ? '' : `, change ticket ${toPrintable(opts.changeTicket)}`}.\n`,
  );
  if (!opts.yes && !confirmed(decision)) {
    process.stderr.write('edge-runner: not signed.\n');
    process.exitCode = EXIT.failed;
    return;
  }
  const signed = signApproval(remediation.change, predicate, key);
  writeFileAtomic(opts.out, formatApproval(signed.envelope), { mode: 0o644, replace: false });
  process.stdout.write(`signed ${decision} ${signed.digest}: ${toPrintable(opts.out)}\n`);
  process.exitCode = EXIT.ok;
}

function notAfterOf(text: string, now: Date): Date {
  const duration = DURATION.exec(text);
  const at = duration
    ? new Date(now.getTime() + Number(duration[1]) * UNIT_SECONDS[duration[2] as keyof typeof UNIT_SECONDS] * 1000)
    : RFC3339_UTC.test(text)
      ? new Date(text)
      : undefined;
  // Date rolls 2026-11-31 over to December 1: only a real calendar time is signed as typed.
  const real = at !== undefined && !Number.isNaN(at.getTime()) && (duration !== null || at.toISOString().slice(0, 19) === text.slice(0, 19));
  if (at === undefined || !real) {
    throw new UsageError(`--not-after "${toPrintable(text)}" is neither a duration such as 30m, 24h or 7d nor an RFC 3339 UTC time.`);
  }
  if (at.getTime() <= now.getTime()) throw new UsageError(`--not-after ${at.toISOString()} is not in the future.`);
  return at;
}

/** Everything the decision rests on, every string from the bundle made printable. */
function describeProposal(verified: VerifiedBundle, r: RemediationEvidence, trust: VerifiedTrust): string {
  const p = toPrintable;
  const { predicate } = verified.statement;
  const policy = trust.body.policy.remediation!;
  const signers = verified.capsuleSigners.map((keyid) => p(trust.nameOf(keyid) ?? keyid)).join(', ');
  const lines = [
    `Proposal ${verified.evidenceDigest}`,
    `  runner ${p(verified.runnerName)}, run ${predicate.run.id}, ${predicate.run.startedAt}`,
    `  capsule ${p(verified.manifest.id)} (${predicate.capsule.digest}), signed by ${signers}`,
    ...(verified.manifest.description === undefined ? [] : [`  description: ${p(verified.manifest.description)}`]),
    `Target ${p(r.target)}`,
    `  change digest ${r.change}`,
    `  pre-state  ${r.preState}`,
    `  post-state ${r.postState}`,
    `  policy     ${r.policy} (trust document version ${predicate.policy.trustVersion})`,
    `Staged validation: verdict ${predicate.run.verdict} (isolation ${predicate.run.isolation})`,
    ...predicate.steps.map(
      (step) =>
        `  step ${p(step.name)}: ${step.status}${step.exitCode === null ? '' : `, exit ${step.exitCode}`}${step.signal === null ? '' : `, ${step.signal}`}, ${step.durationMs} ms`,
    ),
    ...predicate.artifacts.map((a) => `  artifact ${p(a.path)}: ${a.status}${a.summary ? ` ${JSON.stringify(a.summary)}` : ''}`),
    `Footprint: ${r.footprint.files.length} file${r.footprint.files.length === 1 ? '' : 's'}, +${r.footprint.linesAdded} -${r.footprint.linesRemoved} lines`,
    ...r.footprint.files.map(
      (f) => `  ${f.action.padEnd(6)} ${p(f.path)}  +${f.linesAdded} -${f.linesRemoved}  [${surfacesOfPath(f.path, policy).join(', ')}]`,
    ),
    `  surfaces touched: ${r.footprint.surfaces.join(', ')}`,
    `  dependents (they depend on a touched surface): ${r.footprint.dependents.join(', ') || 'none'}`,
    ...describeTier(r.tier),
    ...(r.reproductions === undefined || r.reproductions.length === 0
      ? ['Reproductions: none cited']
      : [
          'Reproductions cited (bundles of this runner that showed the defect; run again after apply, must then pass):',
          ...r.reproductions.map((ref) => `  ${ref.evidence}: verdict ${ref.verdict}${ref.runId === undefined ? '' : `, run ${ref.runId}`}`),
        ]),
  ];
  return `${lines.join('\n')}\n`;
}

function describeTier(tier: Tier): string[] {
  const who = (approvals: number, group?: string) => `${approvals} from ${group === undefined ? 'any approver' : group}`;
  const declared = tier.declared;
  return [
    `Tier: ${tier.approvals} approval${tier.approvals === 1 ? '' : 's'} by distinct persons${tier.approvals === 0 ? ' (may apply on its own)' : ''}`,
    ...tier.rules.map(
      (rule) =>
        `  ${rule.surface} (${rule.via}, ${rule.source === 'rule' ? 'its rule' : 'the default rule'}): ${who(rule.approvals, rule.group)}` +
        `${rule.noAutonomy ? ', no autonomy' : ''}${rule.autoApply ? ', auto-apply' : ''}${rule.changeControl ? ', change control' : ''}`,
    ),
    `  requirements: ${tier.requirements.map((r) => who(r.approvals, r.group)).join('; ') || 'none'}`,
    `  change control: ${tier.changeControl ? 'required (a change ticket)' : 'not required'}`,
    declared === undefined
      ? '  declared by the capsule: nothing'
      : `  declared by the capsule: ${declared.approvals} approval${declared.approvals === 1 ? '' : 's'}, ${declared.comparison}` +
        `${declared.comparison === 'understated' ? ' (the declaration was wrong; the derived tier applies)' : ''}`,
  ];
}

/** Asks on stderr and reads one line from stdin: only `yes` signs. */
function confirmed(decision: string): boolean {
  process.stderr.write(`Sign this ${decision}? Type yes to sign: `);
  const line = readLine();
  return line.trim() === 'yes';
}

function readLine(): string {
  const bytes: number[] = [];
  const one = Buffer.alloc(1);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, one, 0, 1, null);
    } catch (err) {
      // A non-blocking stdin with nothing yet: wait a little and read again.
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
        continue;
      }
      if ((err as NodeJS.ErrnoException).code === 'EOF') return '';
      throw err;
    }
    if (n === 0 || one[0] === 0x0a || bytes.length >= 64) break;
    bytes.push(one[0]!);
  }
  return Buffer.from(bytes).toString('utf8');
}
