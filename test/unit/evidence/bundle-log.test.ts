/**
 * The bundle's `log` member, through verifyBundle: each way the proof can be altered is rejected with its
 * LOG_* reason code, and only that member is altered (the evidence and capsule envelopes stay valid).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execInState } from '../../helpers/runner.js';
import { verifyBundle, type Bundle } from '../../../runner/evidence/bundle.js';
import { parseCheckpoint, runnerOrigin, signCheckpoint } from '../../../runner/log/checkpoint.js';
import { makeWorld, type World } from '../../helpers/world.js';
import { codeOf } from '../../helpers/codes.js';


describe("verifyBundle, the bundle's log member", () => {
  let world: World;
  let bundle: Bundle;
  let log: NonNullable<Bundle['log']>;
  const verifyWithLog = (member: unknown) => () => verifyBundle(Buffer.from(JSON.stringify({ ...bundle, log: member })), world.trust);
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
});
