/**
 * `log export` and `log verify` with cosigned checkpoints: the C2SP cosignatures a witness returned travel
 * with the checkpoints they cover, and `log verify` checks them against the trust document's witness keys
 * and says who witnessed which size. Through the built CLI, on a real state folder.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkpointNow } from '../../runner/agent/log.js';
import { openRunner } from '../../runner/agent/runner.js';
import { runCapsule } from '../../runner/agent/run-capsule.js';
import { signCosignature } from '../../runner/protocol/witness.js';
import { runCli } from '../helpers/cli.js';
import { directSelector } from '../helpers/runner.js';
import { makeWorld, WITNESS_NAME, type World } from '../helpers/world.js';

let world: World | undefined;
afterEach(() => {
  world?.cleanup();
  world = undefined;
});

/** A world whose runner ran one capsule and whose latest checkpoint the witness cosigned; returns that note. */
async function cosignedWorld(tamper = false): Promise<{ w: World; note: string; size: number; line: string }> {
  const w = (world = makeWorld({ witness: true }));
  const ctx = openRunner(w.stateDir, { launcher: directSelector });
  try {
    await runCapsule(ctx, readFileSync(w.writeCapsule(w.capsule())));
    const checkpoint = checkpointNow(ctx.store, { runnerId: w.runnerId, key: ctx.state.key });
    let line = signCosignature(checkpoint.note, WITNESS_NAME, w.witnessKey!, 1_764_633_600);
    if (tamper) {
      // One bit of the Ed25519 signature flipped, re-encoded canonically: the line is well formed, the signature wrong.
      const [prefix, encoded] = [line.slice(0, line.lastIndexOf(' ') + 1), line.slice(line.lastIndexOf(' ') + 1, -1)];
      const blob = Buffer.from(encoded, 'base64');
      blob[blob.length - 1]! ^= 0x01;
      line = `${prefix}${blob.toString('base64')}\n`;
    }
    ctx.store.saveCosignature({ size: checkpoint.size, witness: WITNESS_NAME, timestamp: 1_764_633_600, line });
    return { w, note: checkpoint.note + line, size: checkpoint.size, line };
  } finally {
    ctx.close();
  }
}

describe('log verify with cosigned checkpoints', () => {
  it('exports the cosignature with its checkpoint and says who witnessed which size', async () => {
    const { w, size } = await cosignedWorld();
    const out = join(w.dir, 'log.jsonl');
    expect(runCli(['log', 'export', '--state', w.stateDir, '--out', out]).status).toBe(0);
    expect(readFileSync(out, 'utf8')).toContain(`— ${WITNESS_NAME} `);
    const text = runCli(['log', 'verify', out, '--trust', w.trustPath]);
    expect(text.status).toBe(0);
    expect(text.stdout).toContain(`witnessed: ${WITNESS_NAME} at size ${size} (2025-12-02T00:00:00Z)`);
    const json = runCli(['log', 'verify', out, '--trust', w.trustPath, '--json']);
    expect(JSON.parse(json.stdout).cosigned).toEqual([{ witness: WITNESS_NAME, size, at: '2025-12-02T00:00:00Z' }]);
  });

  it('accepts a cosigned earlier checkpoint and names its cosigner', async () => {
    const { w, note, size } = await cosignedWorld();
    const out = join(w.dir, 'log.jsonl');
    expect(runCli(['log', 'export', '--state', w.stateDir, '--out', out]).status).toBe(0);
    const earlier = join(w.dir, 'cosigned.note');
    writeFileSync(earlier, note);
    const result = runCli(['log', 'verify', out, '--trust', w.trustPath, '--checkpoint', earlier]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(`consistent with the earlier checkpoint at size ${size} (cosigned by ${WITNESS_NAME} at size ${size}`);
  });

  it('fails an export whose cosignature by a trusted witness does not verify (LOG_COSIGNATURE_INVALID, exit 1)', async () => {
    const { w } = await cosignedWorld(true);
    const out = join(w.dir, 'log.jsonl');
    const exported = runCli(['log', 'export', '--state', w.stateDir, '--out', out]);
    // The exporter verifies what it writes: a bad cosignature in the store is refused before any file.
    expect(exported.status).toBe(1);
    expect(exported.stderr).toContain('LOG_COSIGNATURE_INVALID');
  });

  it('ignores a cosignature by a key the trust document does not list as a witness', async () => {
    const { w, size } = await cosignedWorld();
    const ctx = openRunner(w.stateDir, { launcher: directSelector });
    try {
      const checkpoint = ctx.store.latestCheckpoint()!;
      const stranger = signCosignature(checkpoint.note, 'witness.elsewhere.test', w.outsider, 1_764_633_700);
      ctx.store.saveCosignature({ size, witness: 'witness.elsewhere.test', timestamp: 1_764_633_700, line: stranger });
    } finally {
      ctx.close();
    }
    const out = join(w.dir, 'log.jsonl');
    expect(runCli(['log', 'export', '--state', w.stateDir, '--out', out]).status).toBe(0);
    expect(readFileSync(out, 'utf8')).toContain('— witness.elsewhere.test ');
    const json = runCli(['log', 'verify', out, '--trust', w.trustPath, '--json']);
    expect(json.status).toBe(0);
    expect(JSON.parse(json.stdout).cosigned.map((c: { witness: string }) => c.witness)).toEqual([WITNESS_NAME]);
  });
});
