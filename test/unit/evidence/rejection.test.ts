/**
 * Signed rejections: built from a real log (records encoded as the runner encodes them, a Merkle tree, an
 * inclusion proof, a checkpoint signed by the runner key), verified against the trust document, and each
 * way of tampering with one refused with its code.
 */
import { describe, expect, it } from 'vitest';
import { toCanonicalJson } from '../../../runner/core/canonical-json.js';
import { signEnvelope } from '../../../runner/core/dsse.js';
import { sha256Hex } from '../../../runner/core/digest.js';
import type { PrivateKey } from '../../../runner/core/ed25519.js';
import { toBundleLogMember, type BundleLogMember } from '../../../runner/log/bundle-log.js';
import { runnerOrigin, signCheckpoint } from '../../../runner/log/checkpoint.js';
import { hashLeaf, inclusionProof, nodeReaderFromLeafHashes, rootFromNodes } from '../../../runner/log/merkle.js';
import { encodeRecordLeaf } from '../../../runner/log/record.js';
import {
  REJECTION_MAX_BYTES,
  REJECTION_MEDIA_TYPE,
  REJECTION_PREDICATE_TYPE,
  buildRejection,
  verifyRejection,
  type RejectionFacts,
} from '../../../runner/evidence/rejection.js';
import { codeOf } from '../../helpers/codes.js';
import { makeProtocolTrust } from '../protocol/trust-fixture.js';

const world = makeProtocolTrust();
const AT = '2026-03-01T12:00:00.000Z';
const RUN_ID = '0b7e9a52-3c1d-4e8f-9a6b-2d4c8e1f3a57';
const manifestDigest = `sha256:${'11'.repeat(32)}`;
const fileDigest = `sha256:${'22'.repeat(32)}`;

/** A runner log of a few records; returns the member of record `index`. */
function logOf(key: PrivateKey, name: string, leaves: Buffer[], index: number): BundleLogMember {
  const hashes = leaves.map((leaf) => hashLeaf(leaf));
  const read = nodeReaderFromLeafHashes(hashes);
  const origin = runnerOrigin(name, key.keyid);
  const note = signCheckpoint({ origin, size: leaves.length, rootHash: rootFromNodes(leaves.length, read), extensions: [] }, origin, key);
  return toBundleLogMember(index, leaves[index]!, inclusionProof(index, leaves.length, read), note);
}

const rejectedBody = { code: 'CAPSULE_SIGNATURE_THRESHOLD', fileDigest, fileSize: 2048, capsuleId: 'repro-42', manifestDigest };
const leaves = [
  encodeRecordLeaf('capsule.accepted', { capsuleId: 'other', capsuleKind: 'validate', manifestDigest, signers: [] }, 0, AT),
  encodeRecordLeaf('capsule.rejected', rejectedBody, 1, AT),
  encodeRecordLeaf('run.started', { runId: RUN_ID, capsuleId: 'repro-43', manifestDigest, isolation: 'none' }, 2, AT),
  encodeRecordLeaf('run.aborted', { runId: RUN_ID, reason: 'RUN_AGENT_STOPPED' }, 3, AT),
];
const runner = { id: 'runner-a', keyid: world.runner.keyid, version: '0.1.0' };
const acceptanceFacts: RejectionFacts = {
  runner,
  stage: 'acceptance',
  code: 'CAPSULE_SIGNATURE_THRESHOLD',
  capsule: { id: 'repro-42', manifestDigest, fileDigest, fileSize: 2048 },
  record: { index: 1, kind: 'capsule.rejected' },
};
const runFacts: RejectionFacts = {
  runner,
  stage: 'run',
  code: 'RUN_AGENT_STOPPED',
  capsule: { id: 'repro-43', manifestDigest },
  runId: RUN_ID,
  record: { index: 3, kind: 'run.aborted' },
};
const acceptanceLog = logOf(world.runner, 'runner-a', leaves, 1);
const runLog = logOf(world.runner, 'runner-a', leaves, 3);

/** A document re-signed by `key` after `edit` changed its statement: the signature is valid, the content is not. */
function resigned(edit: (statement: Record<string, unknown>) => void, log = acceptanceLog, key = world.runner): Buffer {
  const document = JSON.parse(buildRejection(acceptanceFacts, log, world.runner).bytes.toString()) as Record<string, { payload: string }>;
  const statement = JSON.parse(Buffer.from(document.statement!.payload, 'base64').toString()) as Record<string, unknown>;
  edit(statement);
  return Buffer.from(
    toCanonicalJson({ ...document, statement: signEnvelope('application/vnd.in-toto+json', Buffer.from(toCanonicalJson(statement)), [key]) }),
  );
}

describe('buildRejection and verifyRejection', () => {
  it('an acceptance rejection verifies and returns its facts, its digest and the runner name', () => {
    const { bytes, digest } = buildRejection(acceptanceFacts, acceptanceLog, world.runner);
    expect(digest).toBe(`sha256:${sha256Hex(bytes)}`);
    expect(verifyRejection(bytes, world.trust)).toEqual({ ...acceptanceFacts, digest, runnerName: 'runner-a' });
  });

  it('a run rejection (run.aborted) verifies', () => {
    const { bytes, digest } = buildRejection(runFacts, runLog, world.runner);
    expect(verifyRejection(bytes, world.trust)).toEqual({ ...runFacts, digest, runnerName: 'runner-a' });
  });

  it('is the canonical JSON of the document, its statement an in-toto Statement with the log record and capsule subjects', () => {
    const { bytes } = buildRejection(acceptanceFacts, acceptanceLog, world.runner);
    const document = JSON.parse(bytes.toString()) as { mediaType: string; statement: { payload: string }; log: BundleLogMember };
    expect(toCanonicalJson(document)).toBe(bytes.toString());
    expect(document.mediaType).toBe(REJECTION_MEDIA_TYPE);
    expect(document.log).toEqual(acceptanceLog);
    const statement = JSON.parse(Buffer.from(document.statement.payload, 'base64').toString());
    expect(statement).toMatchObject({
      _type: 'https://in-toto.io/Statement/v1',
      predicateType: REJECTION_PREDICATE_TYPE,
      predicate: acceptanceFacts,
    });
    expect(statement.subject).toEqual([
      { name: 'log-record', digest: { sha256: sha256Hex(leaves[1]!) } },
      { name: 'capsule', digest: { sha256: '11'.repeat(32) } },
      { name: 'capsule-file', digest: { sha256: '22'.repeat(32) } },
    ]);
  });

  it('building the same rejection twice gives the same bytes and digest (Ed25519 is deterministic)', () => {
    expect(buildRejection(acceptanceFacts, acceptanceLog, world.runner).digest).toBe(
      buildRejection(acceptanceFacts, acceptanceLog, world.runner).digest,
    );
  });

  it('a rejection whose capsule is unknown (unparseable file) carries only the file digest and size', () => {
    const body = { code: 'CAPSULE_UNPARSEABLE', fileDigest, fileSize: 7 };
    const log = logOf(world.runner, 'runner-a', [encodeRecordLeaf('capsule.rejected', body, 0, AT)], 0);
    const facts: RejectionFacts = {
      runner,
      stage: 'acceptance',
      code: body.code,
      capsule: { fileDigest, fileSize: 7 },
      record: { index: 0, kind: 'capsule.rejected' },
    };
    expect(verifyRejection(buildRejection(facts, log, world.runner).bytes, world.trust).capsule).toEqual({ fileDigest, fileSize: 7 });
  });
});

describe('the egress guard at build time', () => {
  it('a code that is not a code (free text) is refused with EGRESS_SCHEMA', () => {
    expect(codeOf(() => buildRejection({ ...acceptanceFacts, code: 'permission denied: /etc/shadow' }, acceptanceLog, world.runner))).toBe(
      'EGRESS_SCHEMA',
    );
  });

  it('a member outside the closed schema is refused with EGRESS_SCHEMA', () => {
    const facts = { ...acceptanceFacts, capsule: { ...acceptanceFacts.capsule, stderr: 'secret' } } as unknown as RejectionFacts;
    expect(codeOf(() => buildRejection(facts, acceptanceLog, world.runner))).toBe('EGRESS_SCHEMA');
  });

  it('a runner identity that is not the signing key is refused with EGRESS_PROVENANCE', () => {
    expect(
      codeOf(() => buildRejection({ ...acceptanceFacts, runner: { ...runner, keyid: world.otherRunner.keyid } }, acceptanceLog, world.runner)),
    ).toBe('EGRESS_PROVENANCE');
  });

  it('a log leaf that is not a rejection record (a step record) is refused with EGRESS_PROVENANCE', () => {
    const step = encodeRecordLeaf('run.started', { runId: RUN_ID, capsuleId: 'repro-43', manifestDigest, isolation: 'none' }, 0, AT);
    const log = logOf(world.runner, 'runner-a', [step], 0);
    expect(codeOf(() => buildRejection({ ...acceptanceFacts, record: { index: 0, kind: 'capsule.rejected' } }, log, world.runner))).toBe(
      'EGRESS_PROVENANCE',
    );
  });
});

describe('tampering refused by verifyRejection', () => {
  const good = buildRejection(acceptanceFacts, acceptanceLog, world.runner).bytes;
  const edited = (edit: (document: Record<string, unknown>) => void) => {
    const document = JSON.parse(good.toString()) as Record<string, unknown>;
    edit(document);
    return Buffer.from(toCanonicalJson(document));
  };

  it('a document over 64 KiB is refused with REJECTION_TOO_LARGE', () => {
    expect(codeOf(() => verifyRejection(Buffer.alloc(REJECTION_MAX_BYTES + 1, 0x20), world.trust))).toBe('REJECTION_TOO_LARGE');
  });

  it('a document with a duplicated member or an unknown member is refused with REJECTION_UNPARSEABLE', () => {
    const text = good.toString();
    expect(codeOf(() => verifyRejection(Buffer.from(text.replace('{', `{"log":{},`)), world.trust))).toBe('REJECTION_UNPARSEABLE');
    expect(
      codeOf(() =>
        verifyRejection(
          edited((d) => (d.stdout = 'x')),
          world.trust,
        ),
      ),
    ).toBe('REJECTION_UNPARSEABLE');
    expect(
      codeOf(() =>
        verifyRejection(
          edited((d) => (d.mediaType = 'application/json')),
          world.trust,
        ),
      ),
    ).toBe('REJECTION_UNPARSEABLE');
  });

  it('a statement signed by a key the trust document does not enrol as a runner is refused with REJECTION_UNKNOWN_RUNNER', () => {
    expect(
      codeOf(() =>
        verifyRejection(
          resigned(() => {}, acceptanceLog, world.outsider),
          world.trust,
        ),
      ),
    ).toBe('REJECTION_UNKNOWN_RUNNER');
    expect(
      codeOf(() =>
        verifyRejection(
          resigned(() => {}, acceptanceLog, world.signer),
          world.trust,
        ),
      ),
    ).toBe('REJECTION_UNKNOWN_RUNNER');
  });

  it('a statement changed after signing is refused with REJECTION_SIGNATURE', () => {
    const changed = edited((d) => {
      const statement = d.statement as { payload: string };
      const payload = JSON.parse(Buffer.from(statement.payload, 'base64').toString());
      payload.predicate.code = 'CAPSULE_EXPIRED';
      statement.payload = Buffer.from(toCanonicalJson(payload)).toString('base64');
    });
    expect(codeOf(() => verifyRejection(changed, world.trust))).toBe('REJECTION_SIGNATURE');
  });

  it('a re-signed statement outside its schema is refused with REJECTION_STATEMENT_SCHEMA', () => {
    expect(
      codeOf(() =>
        verifyRejection(
          resigned((s) => ((s.predicate as Record<string, unknown>).stdout = 'x')),
          world.trust,
        ),
      ),
    ).toBe('REJECTION_STATEMENT_SCHEMA');
  });

  it("a runner's rejection attributed to another runner is refused with REJECTION_INCONSISTENT", () => {
    const other = (s: Record<string, unknown>) => ((s.predicate as RejectionFacts).runner = { ...runner, id: 'runner-b' });
    expect(codeOf(() => verifyRejection(resigned(other), world.trust))).toBe('REJECTION_INCONSISTENT');
  });

  it('subjects that are not the leaf and capsule digests are refused with REJECTION_INCONSISTENT', () => {
    const wrongSubject = (s: Record<string, unknown>) => ((s.subject as { digest: { sha256: string } }[])[0]!.digest.sha256 = '00'.repeat(32));
    expect(codeOf(() => verifyRejection(resigned(wrongSubject), world.trust))).toBe('REJECTION_INCONSISTENT');
  });

  it('a code, capsule digest, record kind or index other than the log record says is refused with REJECTION_LOG_MISMATCH', () => {
    const edits: ((p: RejectionFacts) => void)[] = [
      (p) => (p.code = 'CAPSULE_EXPIRED'),
      (p) => (p.capsule.id = 'repro-99'),
      (p) => (p.capsule.fileSize = 2049),
      (p) => delete p.capsule.id,
      (p) => (p.stage = 'run'),
      (p) => (p.record.kind = 'run.aborted'),
      (p) => (p.record.index = 0),
    ];
    for (const edit of edits) {
      expect(
        codeOf(() =>
          verifyRejection(
            resigned((s) => edit(s.predicate as RejectionFacts)),
            world.trust,
          ),
        ),
        edit.toString(),
      ).toBe('REJECTION_LOG_MISMATCH');
    }
  });

  it('a run rejection whose run id or reason is not the run.aborted record is refused with REJECTION_LOG_MISMATCH', () => {
    const other = buildRejection({ ...runFacts, runId: '1b7e9a52-3c1d-4e8f-9a6b-2d4c8e1f3a57' }, runLog, world.runner).bytes;
    expect(codeOf(() => verifyRejection(other, world.trust))).toBe('REJECTION_LOG_MISMATCH');
    const reason = buildRejection({ ...runFacts, code: 'RUN_TIMEOUT' }, runLog, world.runner).bytes;
    expect(codeOf(() => verifyRejection(reason, world.trust))).toBe('REJECTION_LOG_MISMATCH');
  });

  it('a log member whose checkpoint another runner signed, or whose proof or leaf was changed, is refused with REJECTION_LOG_PROOF', () => {
    const foreign = logOf(world.otherRunner, 'runner-b', leaves, 1);
    expect(codeOf(() => verifyRejection(buildRejection(acceptanceFacts, foreign, world.runner).bytes, world.trust))).toBe('REJECTION_LOG_PROOF');
    const badProof = { ...acceptanceLog, inclusionProof: [Buffer.alloc(32).toString('base64'), ...acceptanceLog.inclusionProof.slice(1)] };
    expect(codeOf(() => verifyRejection(buildRejection(acceptanceFacts, badProof, world.runner).bytes, world.trust))).toBe('REJECTION_LOG_PROOF');
    // The leaf of another log with the same record: the subject follows the leaf, the proof does not.
    const otherLeaf = encodeRecordLeaf('capsule.rejected', rejectedBody, 1, '2026-03-01T12:00:01.000Z');
    const swapped = { ...acceptanceLog, leaf: otherLeaf.toString('base64') };
    expect(codeOf(() => verifyRejection(buildRejection(acceptanceFacts, swapped, world.runner).bytes, world.trust))).toBe('REJECTION_LOG_PROOF');
  });

  it('a second signature, or the keyid hint removed, is refused with REJECTION_SCHEMA', () => {
    const twoSigs = edited((d) => {
      const statement = d.statement as { signatures: unknown[] };
      statement.signatures.push(statement.signatures[0]);
    });
    expect(codeOf(() => verifyRejection(twoSigs, world.trust))).toBe('REJECTION_SCHEMA');
    const noKeyid = edited((d) => {
      const statement = d.statement as { signatures: { keyid?: string }[] };
      delete statement.signatures[0]!.keyid;
    });
    expect(codeOf(() => verifyRejection(noKeyid, world.trust))).toBe('REJECTION_SCHEMA');
  });

  it('the same document re-spelt (whitespace, member order, a trailing newline) is refused with REJECTION_NOT_CANONICAL', () => {
    const value = JSON.parse(good.toString());
    expect(codeOf(() => verifyRejection(Buffer.from(JSON.stringify(value, null, 2)), world.trust))).toBe('REJECTION_NOT_CANONICAL');
    expect(codeOf(() => verifyRejection(Buffer.concat([good, Buffer.from('\n')]), world.trust))).toBe('REJECTION_NOT_CANONICAL');
    const { mediaType, ...rest } = value;
    expect(codeOf(() => verifyRejection(Buffer.from(JSON.stringify({ ...rest, mediaType })), world.trust))).toBe('REJECTION_NOT_CANONICAL');
  });
});
