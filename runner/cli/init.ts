import { TRUST_MAX_BYTES } from '../trust/trust.js';
import { readFileCapped } from './files.js';
import { Command } from 'commander';
import { DEFAULT_CONFIG, isStepId } from '../config/config.js';
import { initState, isRunnerId } from '../state/state.js';
import { readPrivateKeyFile } from '../state/keyfile.js';
import { Store } from '../store/store.js';
import { verifierKeyOf } from '../agent/log.js';
import { inRunner } from './context.js';
import { collectOption } from './options.js';
import { UsageError, printJson } from './output.js';

export function initCommand(): Command {
  return new Command('init')
    .description("Create the runner's state folder: key pair, SQLite database, pinned trust document.")
    .requiredOption('--state <dir>', 'the state folder to create (never overwritten)')
    .requiredOption('--id <runner-id>', "the runner's id, as enrolled in the trust document")
    .requiredOption('--trust <trust-dsse-json>', 'the signed trust document to pin')
    .option('--key <runner-key>', 'use this runner private key (made by keygen) instead of generating one')
    .option('--step-uid <uid>', 'when the runner is root, steps run as this uid (default 65534)')
    .option('--step-gid <gid>', 'and this gid (default: the step uid, or 65534)')
    .option('--label <label>', 'a label capsules can target (repeatable)', collectOption, [])
    .option('--json', 'print a machine-readable summary')
    .action(
      async (opts: {
        state: string;
        id: string;
        trust: string;
        key?: string;
        stepUid?: string;
        stepGid?: string;
        label: string[];
        json?: boolean;
      }) => {
        if (!isRunnerId(opts.id)) throw new UsageError(`--id "${opts.id}" is not a plain name (letters, digits, . _ -, at most 128).`);
        const stepUser = opts.stepUid !== undefined || opts.stepGid !== undefined ? toStepUser(opts.stepUid, opts.stepGid) : undefined;
        initState(opts.state, {
          id: opts.id,
          labels: opts.label,
          trustBytes: readFileCapped(opts.trust, TRUST_MAX_BYTES).bytes,
          now: new Date(),
          ...(opts.key ? { key: readPrivateKeyFile(opts.key) } : {}),
          ...(stepUser ? { stepUser } : {}),
          createDatabase: (path) => Store.open(path, { create: true }).close(),
        });
        // The new state folder opens as every command opens it: the runner context.
        const { layout, identity, key, trust } = await inRunner(opts.state, ({ state }) => state);
        const config = identity;
        const verifierKey = verifierKeyOf({ runnerId: config.id, key });
        const enrolled = trust.keyByName(config.id, 'runner')?.keyid === key.keyid;
        if (opts.json) {
          printJson({
            state: layout.dir,
            id: config.id,
            keyid: key.keyid,
            publicKey: key.publicKey.toPem(),
            verifierKey,
            enrolled,
            trustSha256: config.trustSha256,
          });
          return;
        }
        process.stdout.write(
          [
            `runner ${config.id} initialised in ${layout.dir}`,
            `keyid ${key.keyid}`,
            'public key (enrol it in the trust document under the runner role, named after the runner id):',
            key.publicKey.toPem().trimEnd(),
            `log verifier key ${verifierKey}`,
            // The pin: trust.dsse.json must keep exactly these bytes (compare with what trust sign printed).
            `pinned trust document sha256 ${config.trustSha256}`,
            enrolled ? 'this key is already enrolled in the pinned trust document' : 'not yet enrolled: its evidence will not verify until it is',
          ].join('\n') + '\n',
        );
      },
    );
}

function toStepUser(uid: string | undefined, gid: string | undefined): { uid: number; gid: number } {
  const parse = (text: string, what: string) => {
    const id = /^\d{1,10}$/.test(text) ? Number(text) : NaN;
    if (!isStepId(id)) throw new UsageError(`${what} "${text}" is not an ordinary numeric id (not 0, not root).`);
    return id;
  };
  const u = uid !== undefined ? parse(uid, '--step-uid') : DEFAULT_CONFIG.stepUser.uid;
  return { uid: u, gid: gid !== undefined ? parse(gid, '--step-gid') : uid !== undefined ? u : DEFAULT_CONFIG.stepUser.gid };
}
