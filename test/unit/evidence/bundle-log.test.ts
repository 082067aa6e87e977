/**
 * The bundle's `log` member, through verifyBundle: each way the proof can be altered is rejected with its
 * LOG_* reason code, and only that member is altered (the evidence and capsule envelopes stay valid).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execInState } from '../../helpers/runner.js';
import { formatBundle, verifyBundle, type Bundle } from '../../../runner/evidence/bundle.js';
import { guardBundle } from '../../../runner/evidence/egress.js';
import { parseCheckpoint, runnerOrigin, signCheckpoint } from '../../../runner/log/checkpoint.js';
import { LogError } from '../../../runner/log/errors.js';
import { encodeRecordLeaf, parseRecordLeaf } from '../../../runner/log/record.js';
import { makeWorld, type World } from '../../helpers/world.js';
import { codeOf } from '../../helpers/codes.js';

describe("verifyBundle, the bundle's log member", () => {
  let world: World;
  let bundle: Bundle;
  let log: NonNullable<Bundle['log']>;
  // Written as the runner writes a bundle (formatBundle), the one spelling verify accepts.
  const verifyWithLog = (member: unknown) => () => verifyBundle(Buffer.from(formatBundle({ ...bundle, log: member } as Bundle)), world.trust);
  const textOf = (note: string) => note.slice(0, note.indexOf('\n\n') + 1);

  beforeAll(async () => {
    world = makeWorld();
    const capsule = world.capsule({ steps: [{ name: 'ok', run: ['/bin/true'] }] });
    const result = await execInState(world.stateDir, Buffer.from(JSON.stringify(capsule)));
    if (result.kind !== 'completed') throw new Error(`setup run was ${result.kind}`);
    bundle = result.bundle;
    log = bundle.log!;
  });
  afterAll(() => world.cleanup());

  describe('when the member is as the runner wrote it', () => {
    it('verifies, and the inclusion proof is not empty (so the bit-flip case below means something)', () => {
      expect(codeOf(verifyWithLog(log))).toBeUndefined();
      expect(log.inclusionProof.length).toBeGreaterThan(0);
    });
  });

  describe('when the checkpoint is signed by a key that is not the runner key', () => {
    it('rejects with LOG_CHECKPOINT_UNKNOWN_SIGNER', () => {
      const origin = runnerOrigin(world.runnerId, world.runnerKey.keyid);
      const forged = signCheckpoint(parseCheckpoint(textOf(log.checkpoint)), origin, world.outsider);
      expect(codeOf(verifyWithLog({ ...log, checkpoint: forged }))).toBe('LOG_CHECKPOINT_UNKNOWN_SIGNER');
    });
  });

  describe('when one byte of the signed note changes', () => {
    it('rejects with LOG_CHECKPOINT_BAD_SIGNATURE', () => {
      const text = textOf(log.checkpoint);
      const rootLine = text.split('\n')[2]!;
      const changed = `${rootLine[0] === 'A' ? 'B' : 'A'}${rootLine.slice(1)}`;
      expect(codeOf(verifyWithLog({ ...log, checkpoint: log.checkpoint.replace(rootLine, changed) }))).toBe('LOG_CHECKPOINT_BAD_SIGNATURE');
    });
  });

  describe('when the note is not a well-formed signed note', () => {
    it('rejects with LOG_NOTE_MALFORMED', () => {
      expect(codeOf(verifyWithLog({ ...log, checkpoint: log.checkpoint.replace('\n\n', '\n') }))).toBe('LOG_NOTE_MALFORMED');
      expect(codeOf(verifyWithLog({ ...log, checkpoint: `${log.checkpoint}\u0007` }))).toBe('LOG_NOTE_MALFORMED');
    });
  });

  describe('when one bit of an inclusion proof element is flipped', () => {
    it('rejects with LOG_PROOF_INVALID, for every element', () => {
      log.inclusionProof.forEach((element, position) => {
        const bytes = Buffer.from(element, 'base64');
        bytes[position % bytes.length] = bytes[position % bytes.length]! ^ 0x01;
        const proof = log.inclusionProof.map((e, i) => (i === position ? bytes.toString('base64') : e));
        expect(codeOf(verifyWithLog({ ...log, inclusionProof: proof })), `element ${position}`).toBe('LOG_PROOF_INVALID');
      });
    });
  });

  describe('when the index is not below the checkpoint size', () => {
    it('rejects with LOG_INDEX_OUT_OF_RANGE', () => {
      const size = parseCheckpoint(textOf(log.checkpoint)).size;
      expect(codeOf(verifyWithLog({ ...log, index: size }))).toBe('LOG_INDEX_OUT_OF_RANGE');
      expect(codeOf(verifyWithLog({ ...log, index: size + 1000 }))).toBe('LOG_INDEX_OUT_OF_RANGE');
    });
  });
  describe('when the leaf is not the evidence.signed record of this evidence at this index', () => {
    const leafText = () => Buffer.from(log.leaf, 'base64').toString('utf8');
    const withLeaf = (text: string) => verifyWithLog({ ...log, leaf: Buffer.from(text, 'utf8').toString('base64') });
    const messageOf = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        if (err instanceof LogError) return `${err.code}: ${err.message}`;
        throw err;
      }
      return 'verified';
    };

    it('is, as written, the record parseRecordLeaf reads, at the member index', () => {
      const record = parseRecordLeaf(Buffer.from(log.leaf, 'base64'), log.index);
      expect(record.kind).toBe('evidence.signed');
    });

    it.each([
      [
        'whitespace (not the canonical encoding)',
        (t: string) => t.replace(',"kind"', ', "kind"'),
        /not a record: the leaf bytes are not the canonical encoding/,
      ],
      [
        'a member evidence.signed records do not have',
        (t: string) => t.replace('"kind"', '"exitCode":0,"kind"'),
        /not a record: a evidence\.signed record has no member "exitCode"/,
      ],
      [
        'no evidenceDigest',
        (t: string) => t.replace(/"evidenceDigest":"[^"]*",/, ''),
        /not a record: the evidence\.signed record lacks "evidenceDigest"/,
      ],
      ['not JSON', () => 'evidence.signed', /not a record: the leaf is not JSON/],
      ['another seq', (t: string) => t.replace(/"seq":\d+/, `"seq":${log.index + 1}`), /not the record of this evidence at this index/],
      [
        'another evidence digest',
        (t: string) => t.replace(/"evidenceDigest":"sha256:./, '"evidenceDigest":"sha256:_'),
        /not the record of this evidence at this index/,
      ],
    ])('rejects a leaf with %s with LOG_PROOF_INVALID before the proof is checked', (_what, edit, message) => {
      const edited = edit(leafText());
      expect(edited).not.toBe(leafText());
      expect(messageOf(withLeaf(edited))).toMatch(new RegExp(`^LOG_PROOF_INVALID: .*${message.source}`));
    });

    it('rejects a leaf of another kind at the same index with LOG_PROOF_INVALID', () => {
      const { runId } = JSON.parse(leafText()) as { runId: string };
      const other = encodeRecordLeaf('run.finished', { runId, verdict: 'pass' }, log.index, '2025-01-01T00:00:00.000Z');
      expect(messageOf(withLeaf(other.toString('utf8')))).toMatch(/^LOG_PROOF_INVALID: .*not the record of this evidence at this index/);
    });
  });
});

describe("guardBundle, the bundle's log leaf", () => {
  let world: World;
  let bundle: Bundle;
  const guardWithLeaf = (text: string) => () =>
    guardBundle({ ...bundle, log: { ...bundle.log!, leaf: Buffer.from(text, 'utf8').toString('base64') } });

  beforeAll(async () => {
    world = makeWorld();
    const capsule = world.capsule({ steps: [{ name: 'ok', run: ['/bin/true'] }] });
    const result = await execInState(world.stateDir, Buffer.from(JSON.stringify(capsule)));
    if (result.kind !== 'completed') throw new Error(`setup run was ${result.kind}`);
    bundle = result.bundle;
  });
  afterAll(() => world.cleanup());

  it('passes the bundle as the runner wrote it', () => {
    expect(codeOf(() => guardBundle(bundle))).toBeUndefined();
  });

  it.each([
    ['whitespace (not the canonical encoding)', (t: string) => t.replace(',"kind"', ', "kind"')],
    ['a member evidence.signed records do not have', (t: string) => t.replace('"kind"', '"exitCode":0,"kind"')],
    ['no evidenceDigest', (t: string) => t.replace(/"evidenceDigest":"[^"]*",/, '')],
    ['not JSON', () => 'evidence.signed'],
    ['another kind', (t: string) => t.replace('"kind":"evidence.signed"', '"kind":"run.finished"')],
    ['an evidence digest that is not sha256:hex', (t: string) => t.replace(/"evidenceDigest":"sha256:./, '"evidenceDigest":"sha256:_')],
    ['a run id that is not a UUID', (t: string) => t.replace(/"runId":"[^"]*"/, '"runId":"step output"')],
    ['a time without milliseconds', (t: string) => t.replace(/"at":"([^".]*)\.\d{3}Z"/, '"at":"$1Z"')],
  ])('refuses a leaf with %s with EGRESS_PROVENANCE', (_what, edit) => {
    const text = Buffer.from(bundle.log!.leaf, 'base64').toString('utf8');
    const edited = edit(text);
    expect(edited).not.toBe(text);
    expect(codeOf(guardWithLeaf(edited))).toBe('EGRESS_PROVENANCE');
  });
});
