import { Command } from 'commander';
import { toBase64 } from '../core/base64.js';
import { checkpointNow, originOf, verifierKeyOf } from '../agent/log.js';
import type { RunnerState } from '../state/state.js';
import type { Store } from '../store/store.js';
import { LogError } from '../log/errors.js';
import { inRunner } from './context.js';
import { addLogExportCommands } from './log-export.js';
import { UsageError, printJson } from './output.js';

function withStore<T>(stateDir: string, fn: (store: Store, state: RunnerState) => T): Promise<T> {
  return inRunner(stateDir, (ctx) => fn(ctx.store, ctx.state));
}

function parseSize(text: string, what: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw new UsageError(`${what} "${text}" is not a non-negative integer.`);
  return Number(text);
}

export function logCommand(): Command {
  const log = new Command('log').description("The runner's tamper-evident log: checkpoints, proofs, export and audit.");
  log
    .command('key')
    .description("Print the runner's note verifier key (name+hash+base64(0x01||key)), as golang.org/x/mod/sumdb/note reads it.")
    .requiredOption('--state <dir>', 'the runner state folder')
    .action(async (opts: { state: string }) => {
      await withStore(opts.state, (_store, state) => {
        process.stdout.write(`${verifierKeyOf({ runnerId: state.identity.id, key: state.key })}\n`);
      });
    });
  log
    .command('checkpoint')
    .description('Print the latest signed checkpoint (C2SP tlog-checkpoint as a signed note), signing one if the log grew.')
    .requiredOption('--state <dir>', 'the runner state folder')
    .action(async (opts: { state: string }) => {
      await withStore(opts.state, (store, state) => {
        process.stdout.write(checkpointNow(store, { runnerId: state.identity.id, key: state.key }).note);
      });
    });
  log
    .command('prove')
    .description('Print an RFC 9162 inclusion proof for leaf INDEX in the tree of size SIZE (default: the latest checkpoint).')
    .requiredOption('--state <dir>', 'the runner state folder')
    .requiredOption('--index <n>', 'the leaf index (the record seq)')
    .option('--size <m>', 'the tree size to prove against')
    .action(async (opts: { state: string; index: string; size?: string }) => {
      await withStore(opts.state, (store, state) => {
        const index = parseSize(opts.index, '--index');
        const size =
          opts.size !== undefined ? parseSize(opts.size, '--size') : checkpointNow(store, { runnerId: state.identity.id, key: state.key }).size;
        if (size > store.merkle.size()) throw new LogError('LOG_SIZE_OUT_OF_RANGE', `The log has ${store.merkle.size()} leaves, fewer than ${size}.`);
        const proof = store.merkle.inclusionProof(index, size);
        printJson({
          origin: originOf({ runnerId: state.identity.id, key: state.key }),
          index,
          size,
          leafHash: toBase64(store.merkle.leafHash(index)),
          root: toBase64(store.merkle.root(size)),
          proof: proof.map(toBase64),
        });
      });
    });
  log
    .command('consistency')
    .description('Print an RFC 9162 consistency proof between tree sizes FROM and TO (default: the current size).')
    .requiredOption('--state <dir>', 'the runner state folder')
    .requiredOption('--from <size1>', 'the earlier tree size')
    .option('--to <size2>', 'the later tree size')
    .action(async (opts: { state: string; from: string; to?: string }) => {
      await withStore(opts.state, (store, state) => {
        const size1 = parseSize(opts.from, '--from');
        const size2 = opts.to !== undefined ? parseSize(opts.to, '--to') : store.merkle.size();
        if (size2 > store.merkle.size())
          throw new LogError('LOG_SIZE_OUT_OF_RANGE', `The log has ${store.merkle.size()} leaves, fewer than ${size2}.`);
        printJson({
          origin: originOf({ runnerId: state.identity.id, key: state.key }),
          size1,
          size2,
          root1: toBase64(store.merkle.root(size1)),
          root2: toBase64(store.merkle.root(size2)),
          proof: store.merkle.consistencyProof(size1, size2).map(toBase64),
        });
      });
    });
  addLogExportCommands(log);
  return log;
}
