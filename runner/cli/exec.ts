import { Command } from 'commander';
import { runCapsule } from '../agent/run-capsule.js';
import { formatBundle } from '../evidence/bundle.js';
import { writeFileAtomic } from '../state/files.js';
import { CAPSULE_MAX_BYTES } from '../capsule/capsule-file.js';
import { inRunner } from './context.js';
import { readFileCapped } from './files.js';
import { EXIT, printJson, toPrintable } from './output.js';

export function execCommand(): Command {
  return new Command('exec')
    .description('Verify a capsule, run it locally, and write its signed evidence bundle.')
    .argument('<capsule>', 'NAME.capsule.json')
    .requiredOption('--state <dir>', 'the runner state folder')
    .option('--out <path>', 'also write the bundle here')
    .option('--json', 'print a machine-readable summary')
    .action(async (file: string, opts: { state: string; out?: string; json?: boolean }) => {
      const { bytes, size } = readFileCapped(file, CAPSULE_MAX_BYTES);
      const result = await inRunner(opts.state, (ctx) => runCapsule(ctx, bytes, { size }));
      if (result.kind === 'rejected') {
        if (opts.json)
          printJson({
            status: 'rejected',
            code: result.code,
            message: toPrintable(result.message),
            capsuleId: result.capsuleId ?? null,
            fileDigest: result.fileDigest ?? null,
          });
        process.stderr.write(`edge-runner: ${result.code}: ${toPrintable(result.message)}\n`);
        process.stderr.write('nothing was executed; the rejection is recorded in the runner log\n');
        process.exitCode = EXIT.rejected;
        return;
      }
      if (result.kind === 'scheduled') {
        // Accepted and kept; nothing ran now: the agent on this state folder fires it at each slot.
        if (opts.json)
          printJson({
            status: 'scheduled',
            capsuleId: result.capsuleId,
            manifestDigest: result.manifestDigest,
            cron: result.cron,
            timezone: result.timezone,
            firstSlot: result.firstSlot,
            replaced: result.replaced,
          });
        else
          process.stdout.write(
            `capsule ${result.capsuleId}: scheduled (${result.cron}, ${result.timezone}); first slot ${result.firstSlot}; the agent on this state folder runs it\n`,
          );
        process.exitCode = EXIT.ok;
        return;
      }
      if (opts.out) writeFileAtomic(opts.out, formatBundle(result.bundle));
      if (opts.json) {
        printJson({
          status: 'completed',
          runId: result.runId,
          capsuleId: result.capsuleId,
          verdict: result.verdict,
          isolation: result.isolation,
          evidenceDigest: result.evidenceDigest,
          bundle: opts.out ?? result.bundlePath,
          ...(result.change ? { change: result.change } : {}),
          steps: result.steps.map((s) => ({ name: s.name, status: s.status, exitCode: s.exitCode, signal: s.signal, durationMs: s.durationMs })),
        });
      } else {
        const lines = [
          `capsule ${result.capsuleId}: verdict ${result.verdict.toUpperCase()} (run ${result.runId}, isolation ${result.isolation})`,
          ...result.steps.map(
            (s) =>
              `  ${s.status.padEnd(12)} ${s.name}${s.exitCode !== null ? ` exit ${s.exitCode}` : ''}${s.signal ? ` ${s.signal}` : ''} ${s.durationMs} ms`,
          ),
          `evidence ${result.evidenceDigest}`,
          `bundle ${opts.out ?? result.bundlePath}`,
          // A remediate capsule's proposal: what its change needs, or what became of it (auto-apply).
          ...(result.change
            ? [
                `change ${result.change.changeDigest}: ${result.change.state}${result.change.code ? ` (${result.change.code})` : ''}, ${result.change.required} approvals required`,
              ]
            : []),
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      }
      // A remediation applied on its own (auto-apply) and rolled back or refused did not succeed either.
      const changeFailed = result.change !== undefined && ['rolled-back', 'rollback-failed', 'refused'].includes(result.change.state);
      process.exitCode = result.verdict === 'pass' && !changeFailed ? EXIT.ok : EXIT.failed;
    });
}
