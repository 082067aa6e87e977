/**
 * Bundles: one JSON file an auditor verifies alone, given the trust document. Building signs the guarded
 * statement with the runner key; verifying (pure) checks the evidence signature by an enrolled runner key,
 * the capsule envelope against the capsule-signer threshold, both schemas, that the statement's capsule
 * subject is the digest of that capsule's manifest, a remediation's change digest, tier and approvals
 * (recomputed, derived and counted again: evidence/remediation.ts), the log proof, and last that the file is exactly what
 * a runner writes: the closed bundle check of the egress guard (checkClosedBundle) and envelopes that hold
 * only signatures that verified. A bundle that passes carries nothing a runner would not let out.
 */
import { sha256Hex } from '../core/digest.js';
import { toCanonicalJson } from '../core/canonical-json.js';
import { DsseError, parseEnvelope, signEnvelope, verifyEnvelope, type Envelope } from '../core/dsse.js';
import type { PrivateKey } from '../core/ed25519.js';
import { JsonError, parseJson } from '../core/json.js';
import { toPrintableExcerpt } from '../core/printable.js';
import { checkSchema } from '../core/schema.js';
import { CAPSULE_PAYLOAD_TYPE, parseManifest, type Manifest } from '../capsule/manifest.js';
import type { VerifiedTrust } from '../trust/trust.js';
import { verifyBundleLog, type BundleLogMember, type VerifiedBundleLog } from '../log/bundle-log.js';
import { EvidenceError } from './errors.js';
import { checkClosedBundle, guardStatement, type EgressContext } from './egress.js';
import { verifyRemediation, type VerifiedRemediation } from './remediation.js';
import { IN_TOTO_PAYLOAD_TYPE, statementSchema, type Statement } from './statement.js';

export const BUNDLE_MEDIA_TYPE = 'application/vnd.edge-runner.bundle.v1+json';
export const BUNDLE_MAX_BYTES = 8 * 1024 * 1024;

export type BundleLog = BundleLogMember;

export interface Bundle {
  mediaType: typeof BUNDLE_MEDIA_TYPE;
  evidence: Envelope;
  capsule: Envelope;
  approvals: Envelope[];
  log?: BundleLog;
}

export interface SignedEvidence {
  envelope: Envelope;
  /** The exact statement bytes that were signed. */
  payload: Buffer;
  /** `sha256:HEX` of the statement bytes. */
  digest: string;
}

/** Guards, serialises canonically and signs a statement. Nothing leaves without passing the guard. */
export function signEvidence(statement: Statement, context: EgressContext, key: PrivateKey): SignedEvidence {
  guardStatement(statement, context);
  const payload = Buffer.from(toCanonicalJson(statement), 'utf8');
  return { envelope: signEnvelope(IN_TOTO_PAYLOAD_TYPE, payload, [key]), payload, digest: `sha256:${sha256Hex(payload)}` };
}

/**
 * `approvals`: a final remediation bundle's approval envelopes as verifyApproval rebuilt them, in the order
 * countApprovals gives: the counted ones, then the vetoes (`[...count.counted, ...count.vetoes]`).
 */
export function buildBundle(evidence: Envelope, capsule: Envelope, log?: BundleLog, approvals: readonly Envelope[] = []): Bundle {
  return { mediaType: BUNDLE_MEDIA_TYPE, evidence, capsule, approvals: [...approvals], ...(log ? { log } : {}) };
}

/**
 * The bytes of a bundle file: what the runner writes, and the only spelling `verify` accepts (a bundle
 * re-spelt with other whitespace, escapes, member order or number forms parses to the same values and
 * would carry bytes of its own past a check of values).
 */
export function formatBundle(bundle: Bundle): string {
  return `${JSON.stringify(bundle, null, 2)}\n`;
}

export interface VerifiedBundle {
  bundle: Bundle;
  statement: Statement;
  manifest: Manifest;
  runnerKeyid: string;
  runnerName: string;
  capsuleSigners: string[];
  evidenceDigest: string;
  log: VerifiedBundleLog;
  /** A remediate capsule's bundle: its remediation member, and for a decided change the approvals counted again. */
  remediation?: VerifiedRemediation;
}

export function parseBundle(bytes: Uint8Array): Bundle {
  if (bytes.length > BUNDLE_MAX_BYTES) {
    throw new EvidenceError('BUNDLE_TOO_LARGE', `The bundle is ${bytes.length} bytes, over the ${BUNDLE_MAX_BYTES}-byte cap.`);
  }
  let value: unknown;
  try {
    // Two `evidence` members would show one reader one run and another reader another.
    value = parseJson(bytes);
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    throw new EvidenceError('BUNDLE_UNPARSEABLE', `The bundle is not valid JSON: ${cause.message}.`, { json: cause.code }, { cause });
  }
  const bad = (why: string) => new EvidenceError('BUNDLE_UNPARSEABLE', `The bundle is malformed: ${why}.`);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('not a JSON object');
  const { mediaType, evidence, capsule, approvals, log, ...rest } = value as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw bad(`unexpected member "${toPrintableExcerpt(Object.keys(rest)[0]!)}"`);
  if (mediaType !== BUNDLE_MEDIA_TYPE) throw bad(`mediaType is not ${BUNDLE_MEDIA_TYPE}`);
  if (!Array.isArray(approvals)) throw bad('approvals is not an array');
  if (log !== undefined && (typeof log !== 'object' || log === null || Array.isArray(log))) throw bad('log is not an object');
  // The log member's own shape is checked by verifyBundleLog, with LOG_* codes.
  try {
    return {
      mediaType: BUNDLE_MEDIA_TYPE,
      evidence: parseEnvelope(evidence),
      capsule: parseEnvelope(capsule),
      approvals: approvals.map(parseEnvelope),
      ...(log ? { log: log as BundleLog } : {}),
    };
  } catch (err) {
    throw bad(err instanceof Error ? err.message.replace(/\.$/, '') : 'bad envelope');
  }
}

export function verifyBundle(bytes: Uint8Array, trust: VerifiedTrust): VerifiedBundle {
  const bundle = parseBundle(bytes);

  // 1. The evidence is signed by one enrolled runner key (the runner role lists the real runners).
  const evidence = verifyOrThrow(bundle.evidence, trust, IN_TOTO_PAYLOAD_TYPE, 'runner', 1, 'BUNDLE_EVIDENCE_SIGNATURE');
  const runnerKeyid = evidence.signers[0]!;

  // 2. The capsule envelope meets the capsule-signer threshold of this trust document.
  const capsule = verifyOrThrow(
    bundle.capsule,
    trust,
    CAPSULE_PAYLOAD_TYPE,
    'capsule-signer',
    trust.body.roles['capsule-signer'].threshold,
    'BUNDLE_CAPSULE_SIGNATURE',
  );

  // 3. Both documents match their schemas (verified payloads only).
  let statement: Statement;
  try {
    statement = parseJson(evidence.payload) as Statement;
  } catch (cause) {
    if (!(cause instanceof JsonError)) throw cause;
    throw new EvidenceError('BUNDLE_STATEMENT_SCHEMA', `The evidence payload is not valid JSON: ${cause.message}.`, { json: cause.code }, { cause });
  }
  const problem = checkSchema(statementSchema, statement);
  if (problem) {
    throw new EvidenceError('BUNDLE_STATEMENT_SCHEMA', `The evidence statement does not match its schema at ${problem.path}: ${problem.message}.`);
  }
  let manifest: Manifest;
  try {
    manifest = parseManifest(capsule.payload);
  } catch (err) {
    throw new EvidenceError('BUNDLE_CAPSULE_SCHEMA', `The capsule manifest in the bundle is invalid: ${(err as Error).message}`);
  }

  // 4. The statement's capsule subject is the digest of that capsule's manifest.
  const manifestHex = sha256Hex(capsule.payload);
  const subject = statement.subject.find((s) => s.name === `capsule/${statement.predicate.capsule.id}`);
  if (!subject || subject.digest.sha256 !== manifestHex || statement.predicate.capsule.digest !== `sha256:${manifestHex}`) {
    throw new EvidenceError('BUNDLE_CAPSULE_DIGEST', "The evidence's capsule digest is not the digest of the capsule in the bundle.");
  }

  // 5. The rest agrees: the predicate names the key that signed it, by its enrolled name, and the capsule.
  const runnerName = trust.nameOf(runnerKeyid)!;
  const predicate = statement.predicate;
  const inconsistent = (what: string) => new EvidenceError('BUNDLE_INCONSISTENT', `The evidence ${what} does not match the signed bundle.`);
  if (predicate.runner.keyid !== runnerKeyid || predicate.runner.id !== runnerName) throw inconsistent('runner identity');
  if (predicate.capsule.id !== manifest.id || predicate.capsule.kind !== manifest.kind) throw inconsistent('capsule identity');
  if ([...predicate.capsule.signers].sort().join() !== capsule.signers.join()) throw inconsistent('capsule signer list');

  // 5b. A remediation holds offline (evidence/remediation.ts): the change digest recomputed, the footprint and
  // tier derived again from the signed policy, and a decided change's approvals verified and counted again at
  // its decision time. A bundle that is not a decided change carries no approvals.
  const remediation = verifyRemediation({
    statement,
    manifest,
    manifestDigest: `sha256:${manifestHex}`,
    capsuleSigners: capsule.signers,
    approvals: bundle.approvals,
    trust,
  });
  const approvals = remediation?.approvals.map((approval) => approval.envelope) ?? [];

  // 6. The evidence record is in the runner's log, under a checkpoint the runner signed (LOG_* codes).
  const evidenceDigest = `sha256:${sha256Hex(evidence.payload)}`;
  if (bundle.log === undefined) {
    throw new EvidenceError('BUNDLE_LOG_MISSING', "The bundle carries no proof that its evidence is in the runner's log.");
  }
  const runnerKey = trust.keys.find((key) => key.keyid === runnerKeyid)!.publicKey;
  const log = verifyBundleLog(bundle.log, { runnerId: runnerName, runnerKey, evidenceDigest });

  // 7. Nothing rides along: the file is what a runner writes. The same closed check the runner applies
  // before writing (every member known and bounded, keyids that are keyids, approvals only in a decided
  // change's bundle, the log leaf exactly the evidence record), and each envelope exactly as rebuilt from the
  // signatures that verified: no extra signature, no keyid that is not its signer's, canonical base64.
  verifyClosed(bundle, evidence.verifiedEnvelope, capsule.verifiedEnvelope, approvals);

  // 8. And byte for byte: the file is the one spelling the runner writes of the bundle rebuilt from what
  // verified (no trailing bytes, no other whitespace, escapes, member order or number forms).
  const { index, leaf, inclusionProof, checkpoint } = bundle.log;
  const rebuilt = buildBundle(evidence.verifiedEnvelope, capsule.verifiedEnvelope, { index, leaf, inclusionProof, checkpoint }, approvals);
  const expected = formatBundle(rebuilt);
  if (bytes.length !== Buffer.byteLength(expected, 'utf8') || !Buffer.from(expected, 'utf8').equals(Buffer.from(bytes))) {
    throw new EvidenceError(
      'BUNDLE_NOT_CANONICAL',
      'The bundle is not byte for byte the file a runner writes of it (whitespace, escapes, member order, number forms or trailing bytes differ).',
    );
  }

  return {
    log,
    bundle,
    statement,
    manifest,
    runnerKeyid,
    runnerName,
    capsuleSigners: capsule.signers,
    evidenceDigest,
    ...(remediation === undefined ? {} : { remediation }),
  };
}

function verifyClosed(bundle: Bundle, evidence: Envelope, capsule: Envelope, approvals: readonly Envelope[]): void {
  const problem = checkClosedBundle(bundle);
  if (problem?.kind === 'schema') {
    throw new EvidenceError(
      'BUNDLE_SCHEMA',
      `The bundle does not match the closed bundle schema at ${toPrintableExcerpt(problem.path)}: ${problem.message}.`,
      {
        path: problem.path,
      },
    );
  }
  if (problem?.kind === 'leaf') {
    throw new EvidenceError(
      'BUNDLE_SCHEMA',
      "The bundle's log leaf is not exactly the evidence record.",
      {},
      problem.cause === undefined ? undefined : { cause: problem.cause },
    );
  }
  for (const [what, received, rebuilt] of [
    ['evidence', bundle.evidence, evidence],
    ['capsule', bundle.capsule, capsule],
    ...bundle.approvals.map((approval, i) => [`approval ${i + 1}`, approval, approvals[i]] as const),
  ] as const) {
    if (rebuilt === undefined || toCanonicalJson(received) !== toCanonicalJson(rebuilt)) {
      throw new EvidenceError(
        'BUNDLE_SIGNATURE_UNVERIFIED',
        `The ${what} envelope holds more than the signatures that verified (an extra or unverifiable signature, a keyid that is not its signer's, or non-canonical base64).`,
      );
    }
  }
}

function verifyOrThrow(
  envelope: Envelope,
  trust: VerifiedTrust,
  payloadType: string,
  role: 'runner' | 'capsule-signer',
  threshold: number,
  code: 'BUNDLE_EVIDENCE_SIGNATURE' | 'BUNDLE_CAPSULE_SIGNATURE',
) {
  try {
    return verifyEnvelope(envelope, { payloadType, keys: trust.keys, role, threshold });
  } catch (err) {
    if (err instanceof DsseError) {
      const what = code === 'BUNDLE_EVIDENCE_SIGNATURE' ? 'evidence' : 'capsule';
      const namesEnrolledRunner = envelope.signatures.some(
        (sig) => sig.keyid !== undefined && trust.keys.some((key) => key.keyid === sig.keyid && key.roles.includes('runner')),
      );
      if (
        code === 'BUNDLE_EVIDENCE_SIGNATURE' &&
        !namesEnrolledRunner &&
        (err.code === 'DSSE_NO_VALID_SIGNATURE' || err.code === 'DSSE_SIGNER_ROLE')
      ) {
        throw new EvidenceError('BUNDLE_UNKNOWN_RUNNER', 'The evidence is not signed by a runner key enrolled in the trust document.', {
          dsse: err.code,
        });
      }
      throw new EvidenceError(code, `The ${what} envelope does not verify: ${err.message}`, { dsse: err.code });
    }
    throw err;
  }
}
