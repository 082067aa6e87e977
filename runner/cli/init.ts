import { TRUST_MAX_BYTES } from '../trust/trust.js';
import { readFileCapped } from './files.js';
import { Command } from 'commander';
import { initState } from '../state/state.js';
import { readPrivateKeyFile } from '../state/keyfile.js';
import { Store } from '../store/store.js';
import { verifierKeyOf } from '../agent/log.js';
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
    .action((opts: { state: string; id: string; trust: string; key?: string; stepUid?: string; stepGid?: string; label: string[]; json?: boolean }) => {
      const { layout, config, key, trust } = initState(opts.state, {
        id: opts.id,
        labels: opts.label,
        trustBytes: readFileCapped(opts.trust, TRUST_MAX_BYTES).bytes,
        now: new Date(),
        ...(opts.key ? { key: readPrivateKeyFile(opts.key) } : {}),
        ...(opts.stepUid !== undefined || opts.stepGid !== undefined ? { stepUser: toStepUser(opts.stepUid, opts.stepGid) } : {}),
      });
      Store.open(layout.database, { create: true }).close();
      const verifierKey = verifierKeyOf({ runnerId: config.id, key });
      const enrolled = trust.keyByName(config.id, 'runner')?.keyid === key.keyid;
      if (opts.json) {
        printJson({ state: layout.dir, id: config.id, keyid: key.keyid, publicKey: key.publicKey.toPem(), verifierKey, enrolled });
        return;
      }
      process.stdout.write(
        [
          `runner ${config.id} initialised in ${layout.dir}`,
          `keyid ${key.keyid}`,
          'public key (enrol it in the trust document under the runner role, named after the runner id):',
          key.publicKey.toPem().trimEnd(),
          `log verifier key ${verifierKey}`,
          enrolled ? 'this key is already enrolled in the pinned trust document' : 'not yet enrolled: its evidence will not verify until it is',
        ].join('\n') + '\n',
      );
    });
}

function toStepUser(uid: string | undefined, gid: string | undefined): { uid: number; gid: number } {
  const parse = (text: string, what: string) => {
    if (!/^\d+$/.test(text)) throw new UsageError(`${what} "${text}" is not a numeric id.`);
    return Number(text);
  };
  const u = uid !== undefined ? parse(uid, '--step-uid') : 65534;
  return { uid: u, gid: gid !== undefined ? parse(gid, '--step-gid') : uid !== undefined ? u : 65534 };
}
