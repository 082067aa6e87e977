/**
 * A governed-remediation world for tests of the policy, approvals and offline verification: a trust
 * document with approvers (one person with two keys, a capsule signer who also holds an approver key under
 * the same name, a ledger-owners group), a remediate capsule, and proposal and final bundles built with the
 * runner's own builders (buildStatement, signEvidence, buildBundle) over a one-leaf log sealed with the
 * runner key. Nothing here runs a step: until the propose step exists, this is the proposal an approver reads.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { sha256Hex } from '../../runner/core/digest.js';
import { packCapsule } from '../../runner/capsule/pack.js';
import { parseManifest, type Change, type Manifest } from '../../runner/capsule/manifest.js';
import type { CapsuleFile } from '../../runner/capsule/capsule-file.js';
import type { Envelope } from '../../runner/core/dsse.js';
import { buildBundle, formatBundle, signEvidence, type Bundle } from '../../runner/evidence/bundle.js';
import { buildStatement, type RemediationEvidence, type StepRecord, type Verdict } from '../../runner/evidence/statement.js';
import { encodeRecordLeaf } from '../../runner/log/record.js';
import { hashLeaf } from '../../runner/log/merkle.js';
import { runnerOrigin, signCheckpoint } from '../../runner/log/checkpoint.js';
import { toBundleLogMember } from '../../runner/log/bundle-log.js';
import { verifyTrustDocument, type RemediationPolicy, type TrustDocumentBody, type VerifiedTrust } from '../../runner/trust/trust.js';
import { deriveFootprint } from '../../runner/policy/surfaces.js';
import { deriveTier } from '../../runner/policy/tier.js';
import { changeDigestOf, changeSpecDigest, policyDigest } from '../../runner/policy/change-digest.js';
import { signApproval, verifyApproval, type ApprovalPredicate, type VerifiedApproval } from '../../runner/policy/approval.js';
import type { FootprintFile } from '../../runner/policy/types.js';
import { baseTemplate, makeTrustBody, signTrust, type NamedKey } from './world.js';

/** ledger needs two of the ledger owners and is never autonomous; payments depends on ledger; docs may auto-apply. */
export const TEST_POLICY: RemediationPolicy = {
  surfaces: { ledger: ['ledger/**'], payments: ['payments/**'], docs: ['docs/**', '*.md'] },
  dependsOn: { payments: ['ledger'] },
  rules: { ledger: { approvals: 2, group: 'ledger-owners' }, payments: { approvals: 1 }, docs: { approvals: 0 } },
  default: { approvals: 1 },
  groups: { 'ledger-owners': ['alice', 'bob', 'carol'] },
  noAutonomy: ['ledger'],
  autoApply: ['docs'],
};

export const TEST_PATCH = ['--- a/ledger/rounding.txt', '+++ b/ledger/rounding.txt', '@@ -1 +1 @@', '-mode=floor', '+mode=half-even', ''].join('\n');

export interface ApprovalKeys {
  alice: PrivateKey;
  /** A second key of alice's: counts once with the first. */
  alice2: PrivateKey;
  bob: PrivateKey;
  carol: PrivateKey;
  /** An approver outside the ledger-owners group. */
  dave: PrivateKey;
  /** mallory signs capsules (`signer`) and holds an approver key (`malloryApprover`) under the same name. */
  signer: PrivateKey;
  malloryApprover: PrivateKey;
  /** A key the trust document lists without the approver role (root). */
  root: PrivateKey;
  runner: PrivateKey;
  /** Not in the trust document at all. */
  outsider: PrivateKey;
}

export interface Proposal {
  capsule: CapsuleFile;
  manifest: Manifest;
  manifestDigest: string;
  remediation: RemediationEvidence;
  changeDigest: string;
  bundle: Bundle;
  bytes: Buffer;
  /** The proposal's evidence digest: what approvals name as `proposal`. */
  evidenceDigest: string;
}

export interface ProposalOptions {
  verdict?: Verdict;
  change?: Partial<Change>;
  files?: FootprintFile[];
  preState?: string;
  postState?: string;
  /** The capsule's description (free text a signer wrote: printed escaped). */
  description?: string;
  /** More inputs (path -> bytes) beside change.diff, e.g. the `from` files of `change.files`. */
  inputs?: Record<string, string>;
  /** Edits the remediation member before signing (to forge what a runner would not write). */
  edit?: (remediation: RemediationEvidence) => void;
}

export interface FinalOptions {
  phase?: 'applied' | 'rolled-back' | 'refused';
  approvals?: VerifiedApproval[];
  /** The envelopes the bundle carries (default: those of `approvals`). */
  envelopes?: Envelope[];
  decidedAt?: Date;
  autonomous?: boolean;
  code?: string;
  /** Edits the remediation member before signing (to forge what a runner would not write). */
  edit?: (remediation: RemediationEvidence) => void;
}

export interface ApprovalWorld {
  dir: string;
  keys: ApprovalKeys;
  runnerId: string;
  trustBody: TrustDocumentBody;
  trustBytes: Buffer;
  trustPath: string;
  trust: VerifiedTrust;
  proposal(options?: ProposalOptions): Proposal;
  /** Signs an approval of `proposal` by `key` as `approver` (default: the key's name in the trust document). */
  approve(proposal: Proposal, key: PrivateKey, overrides?: Partial<ApprovalPredicate> & { changeDigest?: string }): VerifiedApproval;
  /** The final bundle a runner writes after deciding the change on `approvals`. */
  final(proposal: Proposal, options?: FinalOptions): { bundle: Bundle; bytes: Buffer };
  write(name: string, data: string | Buffer): string;
  cleanup(): void;
}

export function makeApprovalWorld(policy: RemediationPolicy = TEST_POLICY): ApprovalWorld {
  const dir = mkdtempSync(join(tmpdir(), 'edge-runner-approvals-'));
  const keys: ApprovalKeys = {
    alice: PrivateKey.generate(),
    alice2: PrivateKey.generate(),
    bob: PrivateKey.generate(),
    carol: PrivateKey.generate(),
    dave: PrivateKey.generate(),
    signer: PrivateKey.generate(),
    malloryApprover: PrivateKey.generate(),
    root: PrivateKey.generate(),
    runner: PrivateKey.generate(),
    outsider: PrivateKey.generate(),
  };
  const runnerId = 'runner-remediate-1';
  const named: NamedKey[] = [
    { name: 'root-1', key: keys.root, roles: ['root'] },
    { name: 'mallory', key: keys.signer, roles: ['capsule-signer'] },
    { name: 'mallory', key: keys.malloryApprover, roles: ['approver'] },
    { name: 'alice', key: keys.alice, roles: ['approver'] },
    { name: 'alice', key: keys.alice2, roles: ['approver'] },
    { name: 'bob', key: keys.bob, roles: ['approver'] },
    { name: 'carol', key: keys.carol, roles: ['approver'] },
    { name: 'dave', key: keys.dave, roles: ['approver'] },
    { name: runnerId, key: keys.runner, roles: ['runner'] },
  ];
  const trustBody = makeTrustBody(named, {}, ['reproduce', 'validate', 'remediate']);
  trustBody.policy.remediation = policy;
  const trustBytes = signTrust(trustBody, [keys.root]);
  const trustPath = join(dir, 'trust.dsse.json');
  writeFileSync(trustPath, trustBytes);
  const trust = verifyTrustDocument(trustBytes, { now: new Date() });

  function proposal(options: ProposalOptions = {}): Proposal {
    const change: Change = { target: 'config', patch: 'change.diff', declaredTier: { approvals: 1 }, ...options.change };
    const template = baseTemplate({
      kind: 'remediate',
      id: `fix-${randomBytes(4).toString('hex')}`,
      steps: [{ name: 'check', run: ['/bin/true'] }],
      inputs: [{ path: 'change.diff' }, ...Object.keys(options.inputs ?? {}).map((path) => ({ path }))],
      change,
      ...(options.description === undefined ? {} : { description: options.description }),
    });
    const blobs = new Map([
      ['change.diff', Buffer.from(TEST_PATCH)],
      ...Object.entries(options.inputs ?? {}).map(([path, text]) => [path, Buffer.from(text)] as const),
    ]);
    const capsule = packCapsule(template, blobs, [keys.signer]);
    const manifestBytes = Buffer.from(capsule.envelope.payload, 'base64');
    const manifest = parseManifest(manifestBytes);
    const manifestDigest = `sha256:${sha256Hex(manifestBytes)}`;
    const footprint = deriveFootprint(options.files ?? [{ path: 'ledger/rounding.txt', action: 'modify', linesAdded: 1, linesRemoved: 1 }], policy);
    const tier = deriveTier(footprint, policy, change.declaredTier);
    const preState = options.preState ?? `sha256:${'a'.repeat(64)}`;
    const postState = options.postState ?? `sha256:${'b'.repeat(64)}`;
    const policyRef = policyDigest(trustBody.policy);
    const changeDigest = changeDigestOf({
      target: change.target,
      preState,
      postState,
      capsule: manifestDigest,
      change: changeSpecDigest(manifest),
      policy: policyRef,
    });
    const remediation: RemediationEvidence = {
      phase: 'proposed',
      target: change.target,
      change: changeDigest,
      preState,
      postState,
      policy: policyRef,
      footprint,
      tier,
    };
    options.edit?.(remediation);
    const { bundle, bytes, evidenceDigest } = seal(
      manifest,
      manifestDigest,
      capsule.envelope,
      'staged-change',
      options.verdict ?? 'pass',
      remediation,
      [],
    );
    return { capsule, manifest, manifestDigest, remediation, changeDigest, bundle, bytes, evidenceDigest };
  }

  function seal(
    manifest: Manifest,
    manifestDigest: string,
    capsuleEnvelope: Envelope,
    rule: 'staged-change' | 'approved-change' | 'autonomous-change',
    verdict: Verdict,
    remediation: RemediationEvidence,
    approvals: Envelope[],
  ) {
    const now = new Date();
    const runId = randomUUID();
    const step: StepRecord = {
      name: 'check',
      status: verdict === 'pass' ? 'succeeded' : 'failed',
      exitCode: verdict === 'pass' ? 0 : 1,
      signal: null,
      timedOut: false,
      durationMs: 3,
    };
    const statement = buildStatement({
      runner: { id: runnerId, keyid: keys.runner.keyid, version: '0.0.0' },
      capsule: { id: manifest.id, kind: manifest.kind, digest: manifestDigest, signers: [keys.signer.keyid] },
      run: { id: runId, startedAt: now.toISOString(), endedAt: now.toISOString(), isolation: 'none', verdict },
      steps: [step],
      artifacts: [],
      policy: { decision: 'allowed', rule, trustVersion: trustBody.version },
      remediation,
    });
    // The provenance the runner gives the egress guard for a remediation member (runner/evidence/egress.ts).
    const egress = {
      paths: new Set(remediation.footprint.files.map((f) => f.path)),
      policyNames: new Set([...Object.keys(policy.surfaces), 'unclassified', ...Object.keys(policy.groups ?? {})]),
      approvers: new Set(Object.values(trustBody.keys).map((entry) => entry.name)),
    };
    const evidence = signEvidence(statement, { manifest, runner: { id: runnerId, keyid: keys.runner.keyid }, remediation: egress }, keys.runner);
    // A one-leaf log: the evidence record, under a checkpoint the runner key signed.
    const leaf = encodeRecordLeaf('evidence.signed', { runId, evidenceDigest: evidence.digest }, 0, now.toISOString());
    const origin = runnerOrigin(runnerId, keys.runner.keyid);
    const note = signCheckpoint({ origin, size: 1, rootHash: hashLeaf(leaf), extensions: [] }, origin, keys.runner);
    const bundle = buildBundle(evidence.envelope, capsuleEnvelope, toBundleLogMember(0, leaf, [], note), approvals);
    return { bundle, bytes: Buffer.from(formatBundle(bundle)), evidenceDigest: evidence.digest };
  }

  function approve(p: Proposal, key: PrivateKey, overrides: Partial<ApprovalPredicate> & { changeDigest?: string } = {}): VerifiedApproval {
    const { changeDigest = p.changeDigest, ...rest } = overrides;
    const signedAt = new Date(Date.now() - 1000);
    const predicate: ApprovalPredicate = {
      proposal: p.evidenceDigest,
      runner: runnerId,
      target: p.remediation.target,
      capsule: { id: p.manifest.id, digest: p.manifestDigest },
      approver: trust.nameOf(key.keyid) ?? 'nobody',
      decision: 'approve',
      signedAt: signedAt.toISOString(),
      notAfter: new Date(signedAt.getTime() + 24 * 3600_000).toISOString(),
      ...rest,
    };
    return verifyApproval(Buffer.from(JSON.stringify(signApproval(changeDigest, predicate, key).envelope)), trust);
  }

  function final(p: Proposal, options: FinalOptions = {}) {
    // As countApprovals orders them: the approvals by approver name, then the rejects.
    const byName = (a: VerifiedApproval, b: VerifiedApproval) => (a.approver < b.approver ? -1 : a.approver > b.approver ? 1 : 0);
    const approves = (options.approvals ?? []).filter((a) => a.predicate.decision === 'approve').sort(byName);
    const rejects = (options.approvals ?? []).filter((a) => a.predicate.decision === 'reject').sort(byName);
    const approvals = [...approves, ...rejects];
    const autonomous = options.autonomous ?? approvals.length === 0;
    const phase = options.phase ?? 'applied';
    const remediation: RemediationEvidence = {
      ...structuredClone(p.remediation),
      phase,
      proposal: p.evidenceDigest,
      decidedAt: (options.decidedAt ?? new Date()).toISOString(),
      approvals: {
        counted: approves.map((a) => ({ digest: a.digest, approver: a.approver })),
        autonomous,
      },
      outcome: {
        targetDigest: phase === 'applied' ? p.remediation.postState : p.remediation.preState,
        ...(options.code ? { code: options.code } : {}),
      },
    };
    options.edit?.(remediation);
    const envelopes = options.envelopes ?? approvals.map((a) => a.envelope);
    const rule = autonomous ? 'autonomous-change' : 'approved-change';
    const { bundle, bytes } = seal(p.manifest, p.manifestDigest, p.capsule.envelope, rule, 'pass', remediation, envelopes);
    return { bundle, bytes };
  }

  return {
    dir,
    keys,
    runnerId,
    trustBody,
    trustBytes,
    trustPath,
    trust,
    proposal,
    approve,
    final,
    write(name, data) {
      const path = join(dir, name);
      writeFileSync(path, data);
      return path;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
