import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { sha256Hex } from '../core/digest.js';
import { signEnvelope } from '../core/dsse.js';
import { readPrivateKeyFile } from '../state/keyfile.js';
import {
  claimedTrustVersion,
  TRUST_MAX_BYTES,
  TRUST_PAYLOAD_TYPE,
  verifyTrustDocument,
  verifyTrustUpdate,
  type VerifiedTrust,
} from '../trust/trust.js';
import { readFileCapped } from './files.js';
import { writeFileAtomic } from '../state/files.js';
import { collectOption } from './options.js';
import { EXIT, printError, printJson } from './output.js';
import { applyTrustUpdate, RUNNER_NOT_ENROLLED } from '../agent/trust-update.js';
import { sandboxLauncherSelector } from '../agent/launcher.js';
import { createLogger } from '../agent/logger.js';
import { withRunner } from '../agent/runner.js';
import { historyPath } from '../state/state.js';
import { TrustError } from '../trust/errors.js';
import { cliConfig } from './context.js';

export function trustCommand(): Command {
  const trust = new Command('trust').description('Sign and inspect trust documents.');
  trust
    .command('sign')
    .description('Sign a trust document with root keys, then verify the result before writing it.')
    .argument('<trust-json>', 'the trust document body (JSON)')
    .requiredOption('--key <path>', 'a root private key (repeat for a threshold)', collectOption, [])
    .requiredOption('--out <path>', 'where to write the signed envelope')
    .action((file: string, opts: { key: string[]; out: string }) => {
      const payload = readFileSync(file);
      const keys = opts.key.map(readPrivateKeyFile);
      const envelope = signEnvelope(TRUST_PAYLOAD_TYPE, payload, keys);
      const bytes = Buffer.from(`${JSON.stringify(envelope, null, 2)}\n`);
      const verified = verifyTrustDocument(bytes, { now: new Date() });
      writeFileAtomic(opts.out, bytes);
      process.stdout.write(`signed trust document version ${verified.body.version} by ${verified.signers.length} root key(s): ${opts.out}\n`);
      process.stdout.write(`sha256 ${sha256Hex(bytes)}\n`);
    });
  trust
    .command('show')
    .description('Verify a signed trust document against its own root keys and print it.')
    .argument('<trust-dsse-json>')
    .option('--json', 'print the verified document as JSON')
    .action((file: string, opts: { json?: boolean }) => {
      const bytes = readFileCapped(file, TRUST_MAX_BYTES).bytes;
      const verified = verifyTrustDocument(bytes, { now: new Date() });
      if (opts.json) {
        printJson({ sha256: sha256Hex(bytes), signers: verified.signers, document: verified.body });
        return;
      }
      const body = verified.body;
      const lines = [
        `trust document version ${body.version}, expires ${body.expires}`,
        `sha256 ${sha256Hex(bytes)} (compare out of band before pinning)`,
        `signed by ${verified.signers.length} of ${Object.values(body.keys).filter((k) => k.roles.includes('root')).length} root key(s), threshold ${body.roles.root.threshold}`,
        'roles:',
        ...(['root', 'capsule-signer', 'runner', 'approver'] as const).map((role) => {
          const names = Object.values(body.keys)
            .filter((k) => k.roles.includes(role))
            .map((k) => k.name);
          return `  ${role.padEnd(15)} threshold ${body.roles[role].threshold}  ${names.join(', ') || '(none)'}`;
        }),
        'keys:',
        ...Object.entries(body.keys).map(([keyid, k]) => `  ${keyid}  ${k.name}  [${k.roles.join(', ')}]`),
        `policy: allowed kinds ${body.policy.allowedKinds.join(', ')}`,
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
      process.exitCode = EXIT.ok;
    });
  trust
    .command('update')
    .description(
      "Move the runner's pin to the next trust document (TUF: exactly one more version, signed by a threshold of the pinned and of its own root keys, not expired).",
    )
    .argument('<trust-dsse-json>', 'the next trust document (DSSE JSON)')
    .requiredOption('--state <dir>', 'the runner state folder')
    .option('--json', 'print the outcome as JSON')
    .action(async (file: string, opts: { state: string; json?: boolean }) => {
      const bytes = readFileCapped(file, TRUST_MAX_BYTES).bytes;
      // An expired pin is opened: a trust update is how such a runner is brought back.
      const options = { launcher: sandboxLauncherSelector(), logger: createLogger(cliConfig().logLevel), trustExpiry: 'ignore' as const };
      await withRunner(opts.state, options, (ctx) => {
        let result;
        try {
          result = applyTrustUpdate(ctx, bytes, { source: 'file', now: ctx.clock() });
        } catch (err) {
          // Refused under TUF's rule (and recorded as trust.refused): the pin stays; exit 1.
          if (!(err instanceof TrustError)) throw err;
          if (opts.json) printJson({ outcome: 'refused', code: err.code, message: err.message, trustVersion: ctx.state.trust.body.version });
          else printError(err);
          process.exitCode = EXIT.failed;
          return;
        }
        const kept = historyPath(ctx.state.layout, ctx.state.trust.body.version);
        if (opts.json) {
          printJson(result.kind === 'updated' ? { outcome: 'updated', ...result, kept } : { outcome: 'unchanged', ...result });
        } else if (result.kind === 'updated') {
          process.stdout.write(
            `trust updated from version ${result.fromVersion} to ${result.toVersion} (${result.trustDigest}); recorded as trust.updated, kept in ${kept}\n`,
          );
        } else {
          process.stdout.write(`trust document version ${result.version} is already pinned (${result.trustDigest}); nothing changed\n`);
        }
        // The roots took this runner out (or renamed it): accepted, but nothing it signs verifies any more.
        if (result.kind === 'updated' && !result.runnerEnrolled) process.stderr.write(`warning: ${RUNNER_NOT_ENROLLED}\n`);
        process.exitCode = EXIT.ok;
      });
    });
  trust
    .command('chain')
    .description(
      'Verify kept trust documents (state/trust/*.dsse.json) as one chain, each the successor of the one before, and print each version and sha256: the last must be the pin you know.',
    )
    .argument('<trust-dsse-json...>', 'the documents, in any order (one per version)')
    .option('--json', 'print the chain as JSON')
    .action((files: string[], opts: { json?: boolean }) => {
      const links = verifyChain(files);
      if (opts.json) printJson(links);
      else {
        for (const link of links) process.stdout.write(`version ${link.version}  sha256 ${link.sha256}  ${link.file}\n`);
        const head = links.at(-1)!;
        process.stdout.write(`chain of ${links.length} verified; compare version ${head.version} sha256 ${head.sha256} with the pin you know\n`);
      }
      process.exitCode = EXIT.ok;
    });
  return trust;
}

/**
 * A kept document verifies against its own root keys: anyone can sign one, so on its own it says nothing
 * (a history file swapped for a forgery would let a forged bundle "verify"). As a link of the chain that ends
 * at the pin, each signed by a threshold of the previous one's roots, it is the document that was pinned.
 * Expiry is not checked (old versions have expired); a gap is TRUST_VERSION_SKIP.
 */
function verifyChain(files: string[]): { version: number; sha256: string; file: string }[] {
  const docs = files.map((file) => {
    const bytes = readFileCapped(file, TRUST_MAX_BYTES).bytes;
    return { file, bytes, version: claimedTrustVersion(bytes) ?? 0 };
  });
  docs.sort((a, b) => a.version - b.version);
  let previous: VerifiedTrust | undefined;
  return docs.map(({ file, bytes }) => {
    try {
      previous = previous === undefined ? verifyTrustDocument(bytes) : verifyTrustUpdate(previous, bytes, undefined);
    } catch (err) {
      if (err instanceof TrustError) throw new TrustError(err.code, `${file}: ${err.message}`, err.details, { cause: err });
      throw err;
    }
    return { version: previous.body.version, sha256: sha256Hex(bytes), file };
  });
}
