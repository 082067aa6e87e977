#!/usr/bin/env node
/**
 * edge-runner-coordinator: `init` makes a state folder, `serve` runs the coordinator, `trust update` pins the
 * next trust document, `import` loads an air-gapped runner's spool (DIR/out) and `export` writes capsules
 * for one (its DIR/in). Output is JSON lines on stdout (what a test or a supervisor reads: where it listens);
 * errors are one JSON line on stderr and a non-zero exit.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { Command } from 'commander';
import { isCodedError } from '../../runner/core/errors.js';
import { createApp, startServer } from './app.js';
import { initState, inState, loadState, updateTrust } from './config.js';
import { CoordinatorError } from './errors.js';
import { exportSpool, importSpool } from './spool.js';
import { SqliteCoordinatorStore } from './store/sqlite.js';

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
}

/** host:port, [v6]:port; the port may be 0 (any free port, printed once listening). */
function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new CoordinatorError('COORDINATOR_CONFIG', `The listen address ${text} is not host:port.`);
  return { host: match[1] ?? match[2]!, port };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

interface ServeFlags {
  state: string;
  listen?: string;
  publicUrl?: string;
  tlsCert?: string;
  tlsKey?: string;
}

async function serve(flags: ServeFlags): Promise<void> {
  const state = loadState(flags.state, new Date());
  const { config } = state;
  const listen = parseListen(flags.listen ?? config.listen);
  const tlsFiles =
    flags.tlsCert !== undefined || flags.tlsKey !== undefined
      ? { certFile: flags.tlsCert, keyFile: flags.tlsKey }
      : config.tls !== null
        ? { certFile: config.tls.certFile, keyFile: config.tls.keyFile }
        : null;
  if (tlsFiles !== null && (tlsFiles.certFile === undefined || tlsFiles.keyFile === undefined)) {
    throw new CoordinatorError('COORDINATOR_CONFIG', 'TLS needs both --tls-cert and --tls-key.');
  }
  // Runners send evidence and signed requests: in clear text only over loopback, never across a network.
  if (tlsFiles === null && !isLoopback(listen.host)) {
    throw new CoordinatorError(
      'COORDINATOR_CONFIG',
      `Plain HTTP is served only on loopback; give --tls-cert and --tls-key to listen on ${listen.host}.`,
    );
  }
  const publicUrl = flags.publicUrl ?? config.publicUrl;
  if (publicUrl !== null && !/^https?:\/\/[^/?#]+$/.test(publicUrl)) {
    throw new CoordinatorError('COORDINATOR_CONFIG', 'The public URL is not scheme://host[:port].');
  }
  // Without a public URL the signed @target-uri is checked against the Host header, which is trusted only
  // when it names a loopback address of this very server (auth.ts); anywhere else the URL runners use is named.
  if (publicUrl === null && !isLoopback(listen.host)) {
    throw new CoordinatorError('COORDINATOR_CONFIG', `Give --public-url (the URL runners use) to listen on ${listen.host}.`);
  }

  const tls = tlsFiles && { cert: readFileSync(tlsFiles.certFile!), key: readFileSync(tlsFiles.keyFile!) };

  const store = SqliteCoordinatorStore.open(state.databasePath);
  const app = createApp({
    trust: state.trust,
    trustBytes: state.trustBytes,
    trustVersions: state.trustVersions,
    witness: state.witness,
    store,
    operatorTokenHashes: state.operatorTokenHashes,
    publicUrl,
    signatures: config.signatures,
    log,
  });
  let running;
  try {
    running = await startServer(app, { ...listen, ...(tls ? { tls } : {}), timeouts: config.timeouts });
  } catch (err) {
    store.close();
    throw err;
  }
  print({ listening: running.url, trustVersion: state.trust.body.version, witness: state.witness.name });

  const shutdown = (signal: string) => {
    log('shutdown', { signal });
    void running.stop().then(() => {
      store.close();
      process.exit(0);
    });
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

function fail(err: unknown): never {
  const code = isCodedError(err) ? err.code : 'COORDINATOR_INTERNAL';
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`${JSON.stringify({ error: { code, message } })}\n`);
  process.exit(isCodedError(err) ? 2 : 1);
}

const program = new Command()
  .name('edge-runner-coordinator')
  .description('The reference coordinator of edge-runner: publishes capsules, verifies and keeps evidence, witnesses runner logs.')
  .showHelpAfterError();

program
  .command('init')
  .description('Make a state folder: pin the trust document, name the witness key, hash an operator token.')
  .requiredOption('--state <dir>', 'state folder to create')
  .requiredOption('--trust <file>', 'signed trust document (DSSE JSON) to pin')
  .requiredOption('--witness-key <file>', "the witness's Ed25519 private key (PKCS#8 PEM, mode 0600), enrolled under the witness role")
  .option('--operator-name <name>', 'name of the first operator token', 'operator')
  .option('--operator-token-file <file>', 'file holding the operator token (else one is made in STATE/operator.token)')
  .option('--listen <host:port>', 'default listen address')
  .option('--public-url <url>', 'scheme://host[:port] runners use to reach this coordinator')
  .option('--tls-cert <file>', 'TLS certificate chain (PEM)')
  .option('--tls-key <file>', 'TLS private key (PEM)')
  .action((o: Record<string, string | undefined>) => {
    const { config, tokenFile } = initState({
      state: o.state!,
      trustFile: o.trust!,
      witnessKeyFile: o.witnessKey!,
      operatorName: o.operatorName!,
      ...(o.operatorTokenFile !== undefined ? { operatorTokenFile: o.operatorTokenFile } : {}),
      ...(o.listen !== undefined ? { listen: o.listen } : {}),
      ...(o.publicUrl !== undefined ? { publicUrl: o.publicUrl } : {}),
      ...(o.tlsCert !== undefined ? { tlsCert: o.tlsCert } : {}),
      ...(o.tlsKey !== undefined ? { tlsKey: o.tlsKey } : {}),
      now: new Date(),
    });
    SqliteCoordinatorStore.open(inState(resolve(o.state!), config.database), { create: true }).close();
    print({ initialised: o.state, trustVersion: config.trust.version, witness: config.witness.name, operatorTokenFile: tokenFile });
  });

program
  .command('serve')
  .description('Serve the /v1 protocol until SIGTERM.')
  .requiredOption('--state <dir>', 'state folder made by init')
  .option('--listen <host:port>', 'listen address (port 0: any free port)')
  .option('--public-url <url>', 'scheme://host[:port] runners sign as their target URI')
  .option('--tls-cert <file>', 'TLS certificate chain (PEM)')
  .option('--tls-key <file>', 'TLS private key (PEM)')
  .action((o: ServeFlags) => serve(o));

program
  .command('trust-update')
  .description('Pin the next version of the trust document (exactly one more, signed by old and new root keys).')
  .requiredOption('--state <dir>', 'state folder')
  .argument('<file>', 'the next trust document')
  .action((file: string, o: { state: string }) => {
    const config = updateTrust(o.state, file, new Date());
    print({ trustVersion: config.trust.version, file: config.trust.file });
  });

program
  .command('import')
  .description("Load an air-gapped runner's spool (its DIR/out/): every bundle, rejection and checkpoint verified, each stored once.")
  .requiredOption('--state <dir>', 'state folder')
  .argument('<dir>', "the spool folder to read (a copy of the runner's DIR/out/)")
  .action(async (dir: string, o: { state: string }) => {
    const state = loadState(o.state, new Date());
    const store = SqliteCoordinatorStore.open(state.databasePath);
    try {
      const report = await importSpool({ dir: resolve(dir), trust: state.trust, trustVersions: state.trustVersions, store, now: () => new Date() });
      for (const file of report.files) print(file);
      print({ imported: resolve(dir), counts: report.counts });
      // Something refused: a monitoring script or an operator must notice (the rest was still loaded).
      if (report.counts.refused > 0) process.exitCode = 3;
    } finally {
      store.close();
    }
  });

program
  .command('export')
  .description("Write the capsules published for one runner into a folder (the runner's DIR/in/ on the media).")
  .requiredOption('--state <dir>', 'state folder')
  .requiredOption('--runner <id>', 'the runner, as enrolled in the trust document')
  .argument('<dir>', 'the folder to write (made when missing)')
  .action(async (dir: string, o: { state: string; runner: string }) => {
    const state = loadState(o.state, new Date());
    const store = SqliteCoordinatorStore.open(state.databasePath);
    try {
      mkdirSync(resolve(dir), { recursive: true });
      const result = await exportSpool({ runner: o.runner, dir: resolve(dir), trust: state.trust, store, witness: state.witness });
      print({
        exported: resolve(dir),
        runner: o.runner,
        written: result.written,
        existing: result.existing,
        approvals: result.approvals,
        ...(result.cosigned !== undefined ? { cosignedSize: result.cosigned } : {}),
      });
    } finally {
      store.close();
    }
  });

program.parseAsync(process.argv).catch(fail);
