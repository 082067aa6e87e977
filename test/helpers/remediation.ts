/**
 * A runner world for governed remediation through the real CLI: the test world (world.ts) with approver keys
 * (alice twice, bob, carol: the ledger owners; dave outside the group; the capsule signer's own approver key
 * under its name), the policy of test/helpers/approvals.ts (ledger: two ledger owners, never autonomous;
 * payments depends on ledger; docs may auto-apply), a change target folder declared in a configuration file,
 * remediate capsules, and approvals signed for a proposal bundle the CLI wrote.
 */
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PrivateKey } from '../../runner/core/ed25519.js';
import type { Change } from '../../runner/capsule/manifest.js';
import type { ManifestTemplate } from '../../runner/capsule/pack.js';
import { formatApproval, signApproval } from '../../runner/policy/approval.js';
import type { RemediationEvidence } from '../../runner/evidence/statement.js';
import type { RemediationPolicy } from '../../runner/trust/trust.js';
import { parseRecordLeaf, type LogRecord } from '../../runner/log/record.js';
import { TEST_POLICY } from './approvals.js';
import { withRawDb } from './raw-db.js';
import { runCli, type CliResult } from './cli.js';
import { makeWorld, type World } from './world.js';

export interface RemediationWorld extends World {
  keys: { alice: PrivateKey; alice2: PrivateKey; bob: PrivateKey; carol: PrivateKey; dave: PrivateKey; signerApprover: PrivateKey };
  /** The change target's folder (declared as target `config`). */
  target: string;
  configPath: string;
  env: NodeJS.ProcessEnv;
  /** Writes a remediate capsule changing target `config` and returns its path. */
  remediate(change: Partial<Change>, files: Record<string, string>, patch?: Partial<ManifestTemplate>): string;
  /** `edge-runner exec` of a capsule; the parsed --json line. */
  exec(capsulePath: string, env?: NodeJS.ProcessEnv): { result: CliResult; json: Record<string, unknown> | undefined };
  /** The remediation member and evidence digest of a bundle file the runner wrote. */
  remediationOf(bundlePath: string): { remediation: RemediationEvidence; capsule: { id: string; digest: string }; runner: string };
  /** Signs an approval of the proposal (bundle file, evidence digest) with `key` under `approver`; returns its path. */
  approve(proposal: { bundle: string; evidence: string }, key: PrivateKey, approver: string, options?: ApproveOptions): string;
  /** `edge-runner change ARGS --state S --json`. */
  change(args: string[], env?: NodeJS.ProcessEnv): { result: CliResult; json: Record<string, unknown> | undefined };
}

export interface ApproveOptions {
  decision?: 'approve' | 'reject';
  signedAt?: Date;
  notAfter?: Date;
  changeDigest?: string;
  changeTicket?: string;
}

export const LEDGER_PATCH = ['--- a/ledger/rounding.txt', '+++ b/ledger/rounding.txt', '@@ -1 +1 @@', '-mode=floor', '+mode=half-even', ''].join(
  '\n',
);

export interface RemediationWorldOptions {
  policy?: RemediationPolicy;
  /** The target's health check argv. */
  healthCheck?: string[];
  /** Grant the target folder to steps as resource `ledger` (a reproduce capsule reads the deployed files so). */
  grantTarget?: boolean;
}

export function makeRemediationWorld(options: RemediationWorldOptions = {}): RemediationWorld {
  const keys = {
    alice: PrivateKey.generate(),
    alice2: PrivateKey.generate(),
    bob: PrivateKey.generate(),
    carol: PrivateKey.generate(),
    dave: PrivateKey.generate(),
    signerApprover: PrivateKey.generate(),
  };
  const world = makeWorld({
    remediation: options.policy ?? TEST_POLICY,
    extraKeys: [
      { name: 'alice', key: keys.alice, roles: ['approver'] },
      { name: 'alice', key: keys.alice2, roles: ['approver'] },
      { name: 'bob', key: keys.bob, roles: ['approver'] },
      { name: 'carol', key: keys.carol, roles: ['approver'] },
      { name: 'dave', key: keys.dave, roles: ['approver'] },
      // The capsule signer (signer-1) also holds an approver key under the same name.
      { name: 'signer-1', key: keys.signerApprover, roles: ['approver'] },
    ],
  });
  const target = join(world.dir, 'target');
  mkdirSync(join(target, 'ledger'), { recursive: true });
  mkdirSync(join(target, 'docs'), { recursive: true });
  writeFileSync(join(target, 'ledger', 'rounding.txt'), 'mode=floor\n');
  writeFileSync(join(target, 'docs', 'readme.md'), '# ledger\n');
  const configPath = join(world.dir, 'runner-config.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      targets: { config: { path: target, ...(options.healthCheck ? { healthCheck: options.healthCheck, healthCheckTimeoutSeconds: 20 } : {}) } },
      ...(options.grantTarget ? { resources: { ledger: { path: target } } } : {}),
    }),
  );
  chmodSync(configPath, 0o600);
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', EDGE_RUNNER_CONFIG: configPath };
  let counter = 0;
  const parse = (result: CliResult) => {
    try {
      return result.stdout.trim() ? (JSON.parse(result.stdout) as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  };
  return {
    ...world,
    keys,
    target,
    configPath,
    env,
    remediate(change, files, patch = {}) {
      const file = world.capsule(
        {
          kind: 'remediate',
          id: `fix-${++counter}`,
          steps: [{ name: 'check', run: ['/bin/sh', '-c', 'test -f "$EDGE_RUNNER_TARGET/ledger/rounding.txt"'] }],
          change: { target: 'config', ...change },
          ...patch,
        },
        files,
      );
      return world.writeCapsule(file, `fix-${counter}.capsule.json`);
    },
    exec(capsulePath, extraEnv = {}) {
      const result = runCli(['exec', capsulePath, '--state', world.stateDir, '--json'], { env: { ...env, ...extraEnv } });
      return { result, json: parse(result) };
    },
    remediationOf(bundlePath) {
      const bundle = JSON.parse(readFileSync(bundlePath, 'utf8')) as { evidence: { payload: string } };
      const statement = JSON.parse(Buffer.from(bundle.evidence.payload, 'base64').toString('utf8')) as {
        predicate: { remediation: RemediationEvidence; capsule: { id: string; digest: string }; runner: { id: string } };
      };
      return { remediation: statement.predicate.remediation, capsule: statement.predicate.capsule, runner: statement.predicate.runner.id };
    },
    approve(proposal, key, approver, approveOptions = {}) {
      const { remediation, capsule, runner } = this.remediationOf(proposal.bundle);
      const signedAt = approveOptions.signedAt ?? new Date(Date.now() - 1000);
      const notAfter = approveOptions.notAfter ?? new Date(signedAt.getTime() + 24 * 3600_000);
      const signed = signApproval(
        approveOptions.changeDigest ?? remediation.change,
        {
          proposal: proposal.evidence,
          runner,
          target: remediation.target,
          capsule: { id: capsule.id, digest: capsule.digest },
          approver,
          decision: approveOptions.decision ?? 'approve',
          signedAt: signedAt.toISOString().replace(/\.\d+Z$/, 'Z'),
          notAfter: notAfter.toISOString().replace(/\.\d+Z$/, 'Z'),
          ...(approveOptions.changeTicket ? { changeTicket: approveOptions.changeTicket } : {}),
        },
        key,
      );
      const path = join(world.dir, `approval-${++counter}.json`);
      writeFileSync(path, formatApproval(signed.envelope));
      return path;
    },
    change(args, extraEnv = {}) {
      const result = runCli(['change', ...args, '--state', world.stateDir, '--json'], { env: { ...env, ...extraEnv } });
      return { result, json: parse(result) };
    },
  };
}

/** Every record of a world's log, decoded (read-only, beside no running runner). */
export function recordsOf(w: World): LogRecord[] {
  return withRawDb(
    join(w.stateDir, 'runner.db'),
    (db) => (db.prepare('SELECT leaf FROM records_v1 ORDER BY seq').all() as { leaf: Uint8Array }[]).map((row) => parseRecordLeaf(row.leaf)),
    { readOnly: true },
  );
}

/** `log export` then `log verify` of a world's log: the audit accepts every record the remediation wrote. */
export function auditLog(w: World): CliResult {
  const out = join(w.dir, 'log-export.jsonl');
  const exported = runCli(['log', 'export', '--state', w.stateDir, '--out', out]);
  if (exported.status !== 0) return exported;
  return runCli(['log', 'verify', out, '--trust', w.trustPath]);
}
