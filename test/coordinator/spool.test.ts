/**
 * `edge-runner-coordinator import` against hostile or damaged spools (the built coordinator CLI, a real
 * runner writing the spool in process): evidence of a runner the trust document does not enrol, a symlink,
 * a file over its cap, a foreign name, a checkpoint renamed, a checkpoint whose predecessor is missing, and
 * a validly signed checkpoint of another tree of the same size (a fork, kept as evidence). Each is refused
 * with its code, and the rest of the spool is still loaded.
 */
import { cpSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { openRunner, type RunnerContext } from '../../runner/agent/runner.js';
import { SpoolAgent } from '../../runner/agent/spool-agent.js';
import { runnerOrigin, signCheckpoint } from '../../runner/log/checkpoint.js';
import { formatAddCheckpoint } from '../../runner/protocol/witness.js';
import { toSpoolCheckpointName } from '../../runner/protocol/spool.js';
import { makeLinkWorld, type LinkWorld } from '../helpers/agent-link.js';
import { rotatedBody } from '../helpers/rotation.js';
import { signTrust } from '../helpers/world.js';
import { PrivateKey } from '../../runner/core/ed25519.js';
import { directSelector } from '../helpers/runner.js';
import { COORDINATOR_ENTRY, runCoordinatorCli } from './helpers.js';

const worlds: LinkWorld[] = [];
const contexts: RunnerContext[] = [];
afterAll(() => {
  for (const ctx of contexts) ctx.close();
  for (const w of worlds) w.cleanup();
});

type FileReport = { file: string; outcome: string; code?: string };

function importSpool(state: string, dir: string) {
  const result = runCoordinatorCli(['import', '--state', state, dir]);
  const lines = result.stdout
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const summary = lines.pop() as { counts: Record<string, number> };
  return { status: result.status, files: lines as unknown as FileReport[], counts: summary.counts, stderr: result.stderr };
}

/** A runner world whose spool agent has decided `count` capsules, one look each (a checkpoint per look). */
async function spoolOf(runnerId: string, count: number): Promise<{ world: LinkWorld; out: string }> {
  const world = makeLinkWorld({ runnerId });
  worlds.push(world);
  const ctx = openRunner(world.stateDir, { launcher: directSelector });
  contexts.push(ctx);
  const spool = join(world.dir, 'spool');
  const agent = new SpoolAgent(ctx, { dir: spool, sleep: async () => {} });
  for (let i = 0; i < count; i++) {
    const path = join(spool, 'in', `c${i}.capsule.json`);
    writeFileSync(path, world.capsule({ id: `c${i}`, target: { runners: [runnerId] } }));
    utimesSync(path, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    await agent.lookOnce();
  }
  return { world, out: join(spool, 'out') };
}

function initCoordinator(world: LinkWorld): string {
  const state = join(world.dir, 'coordinator');
  const witnessKey = join(world.dir, 'witness.key.pem');
  writeFileSync(witnessKey, world.witnessKey.toPem(), { mode: 0o600 });
  const init = runCoordinatorCli(['init', '--state', state, '--trust', join(world.dir, 'trust.dsse.json'), '--witness-key', witnessKey]);
  if (init.status !== 0) throw new Error(init.stderr);
  return state;
}

describe.skipIf(!existsSync(COORDINATOR_ENTRY))('coordinator import of a damaged or hostile spool (needs dist/)', () => {
  it('stores a bundle made before a rotation that removed its capsule signer, judged by the kept trust version it names (as the inbox does)', async () => {
    const { world, out } = await spoolOf('runner-import-rot', 1);
    const state = initCoordinator(world);
    const next = rotatedBody(world.trust.body, {
      remove: [world.signer],
      add: [{ name: 'signer-2', key: PrivateKey.generate(), roles: ['capsule-signer'] }],
    });
    const nextFile = join(world.dir, 'trust-v2.dsse.json');
    writeFileSync(nextFile, signTrust(next, [world.root]));
    const update = runCoordinatorCli(['trust-update', '--state', state, nextFile]);
    expect(update.status, update.stderr).toBe(0);
    const imported = importSpool(state, out);
    expect(imported.status, JSON.stringify(imported.files)).toBe(0);
    expect(imported.files.find((f) => f.file.startsWith('bundles/'))).toMatchObject({ outcome: 'created' });
  }, 60_000);

  it('says when a kind folder is a symlink or a file (it was passed over in silence) and reads nothing through it', async () => {
    const { world, out } = await spoolOf('runner-import-folders', 1);
    const state = initCoordinator(world);
    const media = join(world.dir, 'media-folders');
    cpSync(out, media, { recursive: true });
    renameSync(join(media, 'bundles'), join(world.dir, 'bundles-elsewhere'));
    symlinkSync(join(world.dir, 'bundles-elsewhere'), join(media, 'bundles'));
    rmSync(join(media, 'rejections'), { recursive: true });
    writeFileSync(join(media, 'rejections'), 'not a folder');
    const imported = importSpool(state, media);
    expect(imported.status).toBe(3);
    expect(imported.files.filter((f) => f.file === 'bundles' || f.file === 'rejections')).toEqual([
      expect.objectContaining({ file: 'bundles', outcome: 'refused', code: 'SPOOL_FILE_NOT_REGULAR' }),
      expect.objectContaining({ file: 'rejections', outcome: 'refused', code: 'SPOOL_FILE_NOT_REGULAR' }),
    ]);
    expect(imported.counts.created).toBe(0);
  }, 60_000);

  it('keeps no fork evidence for a genuine checkpoint whose unsigned consistency proof a carrier altered (a forged accusation)', async () => {
    const { world, out } = await spoolOf('runner-import-proof', 2);
    const state = initCoordinator(world);
    const media = join(world.dir, 'media-proof');
    cpSync(out, media, { recursive: true });
    const [first, second] = readdirSync(join(media, 'checkpoints')).sort((a, b) => Number(a.split('-')[0]) - Number(b.split('-')[0]));
    const held = join(world.dir, 'held-second');
    renameSync(join(media, 'checkpoints', second!), held);
    expect(importSpool(state, media).files.find((f) => f.file === `checkpoints/${first}`)).toMatchObject({ outcome: 'cosigned' });
    // The runner's own signed note, its proof lines (which nobody signs) replaced by other hashes.
    const lines = readFileSync(held, 'utf8').split('\n');
    const proofLines = lines.slice(1, lines.indexOf(''));
    expect(proofLines.length).toBeGreaterThan(0);
    const forged = [lines[0], ...proofLines.map(() => randomBytes(32).toString('base64')), ...lines.slice(lines.indexOf(''))].join('\n');
    writeFileSync(join(media, 'checkpoints', second!), forged);
    const imported = importSpool(state, media);
    expect(imported.files.find((f) => f.file === `checkpoints/${second}`)).toMatchObject({ outcome: 'refused', code: 'WITNESS_CONSISTENCY' });
    const db = new DatabaseSync(join(state, 'coordinator.db'), { readOnly: true });
    try {
      expect(db.prepare('SELECT COUNT(*) AS n FROM forks').get()).toEqual({ n: 0 });
    } finally {
      db.close();
    }
    // The genuine file still cosigns afterwards.
    renameSync(held, join(media, 'checkpoints', second!));
    expect(importSpool(state, media).files.find((f) => f.file === `checkpoints/${second}`)).toMatchObject({ outcome: 'cosigned' });
  }, 60_000);

  it('catches up after a checkpoint file was lost on the way: the cosigned file carried back makes the runner prove its latest tree from the witnessed size', async () => {
    const world = makeLinkWorld({ runnerId: 'runner-import-lost' });
    worlds.push(world);
    const ctx = openRunner(world.stateDir, { launcher: directSelector });
    contexts.push(ctx);
    const spool = join(world.dir, 'spool');
    const agent = new SpoolAgent(ctx, { dir: spool, sleep: async () => {} });
    const take = async (i: number) => {
      const path = join(spool, 'in', `c${i}.capsule.json`);
      writeFileSync(path, world.capsule({ id: `c${i}`, target: { runners: ['runner-import-lost'] } }));
      utimesSync(path, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
      await agent.lookOnce();
    };
    for (let i = 0; i < 3; i++) await take(i);
    const state = initCoordinator(world);
    const bySize = (names: string[]) => names.sort((a, b) => Number(a.split('-')[0]) - Number(b.split('-')[0]));
    const chain = bySize(readdirSync(join(spool, 'out', 'checkpoints')));
    expect(chain).toHaveLength(3);
    const lost = chain[1]!;
    const carry = (name: string) => {
      const media = join(world.dir, name);
      cpSync(join(spool, 'out'), media, { recursive: true });
      rmSync(join(media, 'checkpoints', lost)); // lost on the way, every time
      return media;
    };
    const first = importSpool(state, carry('media-1'));
    expect(first.files.find((f) => f.file === `checkpoints/${chain[2]}`)).toMatchObject({ code: 'WITNESS_CONFLICT' });
    const exported = runCoordinatorCli(['export', '--state', state, '--runner', 'runner-import-lost', join(spool, 'in')]);
    expect(exported.status, exported.stderr).toBe(0);
    await take(3); // the runner takes the cosigned checkpoint back, and its log grows
    const latest = Number(
      bySize(readdirSync(join(spool, 'out', 'checkpoints')).filter((n) => !n.includes('.from-')))
        .pop()!
        .split('-')[0],
    );
    const second = importSpool(state, carry('media-2'));
    const catchUp = second.files.find((f) => f.file.includes('.from-'));
    expect(catchUp, JSON.stringify(second.files)).toMatchObject({ outcome: 'cosigned' });
    expect(catchUp!.file.startsWith(`checkpoints/${latest}-`)).toBe(true);
    // Carried again, nothing new: every checkpoint file is passed over or already held.
    const third = importSpool(state, carry('media-3'));
    expect(third.files.filter((f) => f.file.startsWith('checkpoints/')).map((f) => f.outcome)).not.toContain('cosigned');
  }, 90_000);

  it('refuses each bad file with its code and still loads the rest', async () => {
    const { world, out } = await spoolOf('runner-import-1', 2);
    const stranger = await spoolOf('runner-stranger', 1); // another trust document: its runner is not enrolled here
    const state = initCoordinator(world);
    const media = join(world.dir, 'media');
    cpSync(out, media, { recursive: true });
    const strangerBundle = readdirSync(join(stranger.out, 'bundles'))[0]!;
    cpSync(join(stranger.out, 'bundles', strangerBundle), join(media, 'bundles', strangerBundle));
    symlinkSync(join(media, 'bundles', readdirSync(join(media, 'bundles'))[0]!), join(media, 'rejections', `${'0'.repeat(64)}.rejection.json`));
    writeFileSync(join(media, 'rejections', `${'1'.repeat(64)}.rejection.json`), Buffer.alloc(64 * 1024 + 1, 0x20));
    writeFileSync(join(media, 'bundles', 'notes.txt'), 'foreign');
    execFileSync('mkfifo', [join(media, 'bundles', `${'f'.repeat(64)}.bundle.json`)]); // a reader that opened it would wait for ever
    writeFileSync(join(media, 'stray.json'), '{}');
    // The later checkpoint alone first: its proof starts at a size the witness does not hold yet.
    const checkpoints = readdirSync(join(media, 'checkpoints')).sort((a, b) => Number(a.split('-')[0]) - Number(b.split('-')[0]));
    expect(checkpoints).toHaveLength(2);
    const held = join(world.dir, 'held-back');
    renameSync(join(media, 'checkpoints', checkpoints[0]!), held);

    const first = importSpool(state, media);
    expect(first.status, first.stderr).toBe(3);
    const codeOf = (file: string) => first.files.find((f) => f.file === file)?.code;
    expect(codeOf(`bundles/${strangerBundle}`)).toMatch(/^BUNDLE_/);
    expect(codeOf(`rejections/${'0'.repeat(64)}.rejection.json`)).toBe('SPOOL_FILE_NOT_REGULAR');
    expect(codeOf(`rejections/${'1'.repeat(64)}.rejection.json`)).toBe('SPOOL_FILE_TOO_LARGE');
    expect(codeOf('bundles/notes.txt')).toBe('SPOOL_FILE_FOREIGN');
    expect(codeOf(`bundles/${'f'.repeat(64)}.bundle.json`)).toBe('SPOOL_FILE_NOT_REGULAR');
    expect(codeOf('stray.json')).toBe('SPOOL_FILE_FOREIGN');
    expect(codeOf(`checkpoints/${checkpoints[1]}`)).toBe('WITNESS_CONFLICT');
    expect(first.counts.created).toBe(2); // the runner's own two bundles

    // The earlier checkpoint arrives: both are cosigned in size order.
    renameSync(held, join(media, 'checkpoints', checkpoints[0]!));
    const second = importSpool(state, media);
    expect(second.files.filter((f) => f.file.startsWith('checkpoints/')).map((f) => f.outcome)).toEqual(['cosigned', 'cosigned']);

    // A checkpoint under another tree's name, and a validly signed checkpoint of another tree of the held size.
    const size = Number(checkpoints[1]!.split('-')[0]);
    const renamed = join(media, 'checkpoints', toSpoolCheckpointName(size - 1, randomBytes(32)));
    cpSync(join(media, 'checkpoints', checkpoints[1]!), renamed);
    const origin = runnerOrigin(world.runnerId, world.runnerKey.keyid);
    const forkRoot = randomBytes(32);
    const fork = signCheckpoint({ origin, size, rootHash: forkRoot, extensions: [] }, origin, world.runnerKey);
    const forkName = toSpoolCheckpointName(size, forkRoot);
    writeFileSync(join(media, 'checkpoints', forkName), formatAddCheckpoint(0, [], fork));
    const third = importSpool(state, media);
    const code3 = (file: string) => third.files.find((f) => f.file === file)?.code;
    expect(code3(`checkpoints/${renamed.split('/').pop()}`)).toBe('SPOOL_NAME_MISMATCH');
    expect(code3(`checkpoints/${forkName}`)).toBe('WITNESS_ROOT_CONFLICT');
    expect(third.counts.created).toBe(0);
  }, 120_000);
});
