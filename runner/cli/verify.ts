import { Command } from 'commander';
import { isCodedError } from '../core/errors.js';
import { BUNDLE_MAX_BYTES, verifyBundle } from '../evidence/bundle.js';
import type { VerifiedRemediation } from '../evidence/remediation.js';
import { TRUST_MAX_BYTES, verifyTrustDocument } from '../trust/trust.js';
import { readFileCapped } from './files.js';
import { EXIT, describeError, printJson, toPrintable } from './output.js';

export function verifyCommand(): Command {
  return new Command('verify')
    .description('Verify evidence bundles offline against a trust document.')
    .argument('<bundle...>', 'one or more bundle files')
    .requiredOption('--trust <trust-dsse-json>', 'the trust document to verify against')
    .option('--json', 'print machine-readable results')
    .action((files: string[], opts: { trust: string; json?: boolean }) => {
      // Offline audit: the trust document's own signatures are checked; its expiry is not, so archived
      // bundles stay verifiable after the document they were made under has been superseded.
      const trust = verifyTrustDocument(readFileCapped(opts.trust, TRUST_MAX_BYTES).bytes);
      const results = files.map((file) => {
        try {
          const verified = verifyBundle(readFileCapped(file, BUNDLE_MAX_BYTES).bytes, trust);
          const p = verified.statement.predicate;
          return {
            file,
            ok: true as const,
            runner: p.runner.id,
            capsule: p.capsule.id,
            kind: p.capsule.kind,
            verdict: p.run.verdict,
            runId: p.run.id,
            evidence: verified.evidenceDigest,
            ...(verified.remediation === undefined ? {} : { remediation: remediationSummary(verified.remediation) }),
          };
        } catch (err) {
          if (!isCodedError(err) && !(err as NodeJS.ErrnoException).code) throw err;
          return { file, ok: false as const, ...describeError(err) };
        }
      });
      if (opts.json) printJson(results);
      else {
        // Every field is printable: the file name is the caller's, the rest came out of the bundle, and a
        // raw carriage return or ANSI escape in either could overwrite this line with a forged OK.
        const p = toPrintable;
        for (const r of results) {
          if (r.ok)
            process.stdout.write(
              `OK    ${p(r.file)}: ${p(r.kind)} capsule ${p(r.capsule)} on runner ${p(r.runner)}, verdict ${p(r.verdict)}${describeRemediation(r.remediation)}\n`,
            );
          else process.stdout.write(`FAIL  ${p(r.file)}: ${r.code}: ${r.message}\n`);
        }
      }
      process.exitCode = results.every((r) => r.ok) ? EXIT.ok : EXIT.failed;
    });
}

/** What `verify` shows of a remediation: its phase, the tier derived again, and who was counted (again, at its decision time). */
function remediationSummary({ evidence, count }: VerifiedRemediation) {
  return {
    phase: evidence.phase,
    target: evidence.target,
    change: evidence.change,
    tier: evidence.tier.approvals,
    ...(evidence.approvals === undefined
      ? {}
      : { approvers: evidence.approvals.counted.map((a) => a.approver), autonomous: evidence.approvals.autonomous }),
    ...(count === undefined ? {} : { vetoes: count.vetoes.map((a) => a.approver) }),
    ...(evidence.outcome?.code === undefined ? {} : { code: evidence.outcome.code }),
  };
}

function describeRemediation(summary: ReturnType<typeof remediationSummary> | undefined): string {
  if (summary === undefined) return '';
  const p = toPrintable;
  const who =
    summary.approvers === undefined
      ? ''
      : summary.autonomous && summary.approvers.length === 0
        ? ', no human required'
        : `, approved by ${summary.approvers.map(p).join(', ') || 'nobody'}`;
  const vetoes = summary.vetoes !== undefined && summary.vetoes.length > 0 ? `, vetoed by ${summary.vetoes.map(p).join(', ')}` : '';
  return `; change ${p(summary.target)} ${summary.phase}${summary.code === undefined ? '' : ` (${summary.code})`}, tier ${summary.tier}${who}${vetoes}`;
}
