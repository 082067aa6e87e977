/**
 * Test world: real keys, a real signed trust document, a real state folder with its SQLite file, and a
 * capsule packer. Everything lives in a fresh temporary folder per world.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { signEnvelope } from '../../runner/core/dsse.js';
import { packCapsule, type ManifestTemplate } from '../../runner/capsule/pack.js';
import {
  TRUST_PAYLOAD_TYPE,
  verifyTrustDocument,
  type RemediationPolicy,
  type Role,
  type ScheduleCatchUp,
  type TrustDocumentBody,
  type VerifiedTrust,
} from '../../runner/trust/trust.js';
import { initState } from '../../runner/state/state.js';
import { Store } from '../../runner/store/store.js';
import type { CapsuleFile } from '../../runner/capsule/capsule-file.js';

export interface NamedKey {
  name: string;
  key: PrivateKey;
  roles: Role[];
}

export interface World {
  dir: string;
  root: PrivateKey;
  signers: PrivateKey[];
  runnerKey: PrivateKey;
  outsider: PrivateKey;
  /** The coordinator's witness key (role witness, named WITNESS_NAME) when the world was made with `witness`. */
  witnessKey?: PrivateKey;
  trustBody: TrustDocumentBody;
  trustBytes: Buffer;
  trustPath: string;
  trust: VerifiedTrust;
  stateDir: string;
  runnerId: string;
  /** Packs a capsule from a template patch; inputs given as path -> content. */
  capsule(patch?: Partial<ManifestTemplate>, files?: Record<string, string | Buffer>, keys?: PrivateKey[]): CapsuleFile;
  /** Writes a capsule file into the world's folder and returns its path. */
  writeCapsule(file: CapsuleFile | string | Buffer, name?: string): string;
  cleanup(): void;
}

export interface WorldOptions {
  signerThreshold?: number;
  signerCount?: number;
  runnerId?: string;
  labels?: string[];
  init?: boolean;
  allowedKinds?: TrustDocumentBody['policy']['allowedKinds'];
  /** Enrol a coordinator witness key (role witness) in the trust document. */
  witness?: boolean;
  /** The signed policy's catch-up rule for recurring capsules (absent: the policy names none, so `skip`). */
  catchUp?: ScheduleCatchUp;
  /** More keys for the trust document (approvers, say), beside the world's own. */
  extraKeys?: NamedKey[];
  /** The signed policy's remediation section; remediate capsules are then allowed too. */
  remediation?: RemediationPolicy;
}

/** The witness key's name in a world made with `witness`: a C2SP cosigner name. */
export const WITNESS_NAME = 'witness.coordinator.test';

export function makeTrustBody(
  keys: NamedKey[],
  thresholds: Partial<Record<Role, number>> = {},
  allowedKinds: TrustDocumentBody['policy']['allowedKinds'] = ['reproduce', 'validate'],
): TrustDocumentBody {
  return {
    apiVersion: 'edge-runner.dev/trust/v1',
    version: 1,
    expires: new Date(Date.now() + 365 * 86400_000).toISOString().replace(/\.\d+Z$/, 'Z'),
    keys: Object.fromEntries(keys.map(({ name, key, roles }) => [key.keyid, { publicKey: key.publicKey.toPem(), name, roles }])),
    roles: {
      root: { threshold: thresholds.root ?? 1 },
      'capsule-signer': { threshold: thresholds['capsule-signer'] ?? 1 },
      runner: { threshold: thresholds.runner ?? 1 },
      approver: { threshold: thresholds.approver ?? 2 },
      ...(keys.some((k) => k.roles.includes('witness')) ? { witness: { threshold: thresholds.witness ?? 1 } } : {}),
    },
    policy: { allowedKinds },
  };
}

export function signTrust(body: TrustDocumentBody, keys: PrivateKey[]): Buffer {
  return Buffer.from(JSON.stringify(signEnvelope(TRUST_PAYLOAD_TYPE, Buffer.from(JSON.stringify(body)), keys)));
}

export function baseTemplate(patch: Partial<ManifestTemplate> = {}): ManifestTemplate {
  const now = Date.now();
  return {
    apiVersion: 'edge-runner.dev/capsule/v1',
    kind: 'validate',
    id: `test-${randomBytes(4).toString('hex')}`,
    issuedAt: new Date(now - 60_000).toISOString(),
    notBefore: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 3600_000).toISOString(),
    nonce: randomBytes(16).toString('hex'),
    isolation: 'best-effort',
    target: { labels: ['test'] },
    steps: [{ name: 'ok', run: ['/bin/true'] }],
    inputs: [],
    collect: [],
    ...patch,
  };
}

export function makeWorld(options: WorldOptions = {}): World {
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-test-'));
  const root = PrivateKey.generate();
  const signers = Array.from({ length: options.signerCount ?? 2 }, () => PrivateKey.generate());
  const runnerKey = PrivateKey.generate();
  const outsider = PrivateKey.generate();
  const runnerId = options.runnerId ?? 'runner-test-1';
  const keys: NamedKey[] = [
    { name: 'root-1', key: root, roles: ['root'] },
    ...signers.map((key, i) => ({ name: `signer-${i + 1}`, key, roles: ['capsule-signer'] as Role[] })),
    { name: runnerId, key: runnerKey, roles: ['runner'] },
  ];
  const witnessKey = options.witness ? PrivateKey.generate() : undefined;
  if (witnessKey) keys.push({ name: WITNESS_NAME, key: witnessKey, roles: ['witness'] });
  keys.push(...(options.extraKeys ?? []));
  const kinds = options.allowedKinds ?? (options.remediation ? ['reproduce', 'validate', 'remediate'] : undefined);
  const trustBody = makeTrustBody(keys, { 'capsule-signer': options.signerThreshold ?? 1 }, kinds);
  if (options.remediation !== undefined) trustBody.policy.remediation = options.remediation;
  if (options.catchUp !== undefined) trustBody.policy.schedule = { catchUp: options.catchUp };
  const trustBytes = signTrust(trustBody, [root]);
  const trustPath = join(dir, 'trust.dsse.json');
  writeFileSync(trustPath, trustBytes);
  const stateDir = join(dir, 'state');
  if (options.init !== false) {
    initState(stateDir, {
      id: runnerId,
      labels: options.labels ?? ['test'],
      trustBytes,
      now: new Date(),
      key: runnerKey,
      createDatabase: (path) => Store.open(path, { create: true }).close(),
    });
  }
  let counter = 0;
  return {
    dir,
    root,
    signers,
    runnerKey,
    outsider,
    ...(witnessKey ? { witnessKey } : {}),
    trustBody,
    trustBytes,
    trustPath,
    trust: verifyTrustDocument(trustBytes, { now: new Date() }),
    stateDir,
    runnerId,
    capsule(patch = {}, files = {}, keysToUse) {
      const template = baseTemplate({
        inputs: Object.keys(files).map((path) => ({ path })),
        ...patch,
      });
      const bytes = new Map(Object.entries(files).map(([path, data]) => [path, Buffer.from(data)]));
      return packCapsule(template, bytes, keysToUse ?? signers.slice(0, options.signerThreshold ?? 1));
    },
    writeCapsule(file, name) {
      const path = join(dir, name ?? `capsule-${++counter}.capsule.json`);
      writeFileSync(path, typeof file === 'string' || Buffer.isBuffer(file) ? file : JSON.stringify(file));
      return path;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function markerStep(markerPath: string) {
  return { name: 'leave-marker', run: ['/usr/bin/touch', markerPath] };
}

export { readFileSync, mkdirSync };
