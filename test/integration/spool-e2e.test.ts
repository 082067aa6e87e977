/**
 * The air-gapped round trip, real processes: the reference coordinator (dist/coordinator/src/main.js)
 * publishes capsules and `export`s them for one runner into a folder standing in for removable media; the
 * files are copied to the runner's spool with faults on the way (one cut short, one duplicated under another
 * name, one altered, a copy tool's temporary file and a foreign file beside them); `edge-runner agent --spool`
 * (dist/runner/main.js) decides each file once and writes every answer and checkpoint to DIR/out/; the
 * answers are carried back with faults again (one bundle cut short, one rejection altered, a temporary
 * file) and `import`ed: what is intact is verified and stored, what is not is refused with its code, and
 * importing again after the media is repaired stores each file once, never twice.
 */
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Store } from '../../runner/store/store.js';
import { parseRecordLeaf } from '../../runner/log/record.js';
import { makeLinkWorld, waitFor } from '../helpers/agent-link.js';
import { CLI_ENTRY, runCli } from '../helpers/cli.js';
import { killAll, spawnSpoolAgent, startLinkCoordinator } from '../helpers/link.js';
import { COORDINATOR_ENTRY, runCoordinatorCli } from '../coordinator/helpers.js';

const built = existsSync(COORDINATOR_ENTRY) && existsSync(CLI_ENTRY);
const world = makeLinkWorld({ runnerId: 'runner-airgap-1' });
afterAll(async () => {
  await killAll();
  world.cleanup();
});

type FileReport = { file: string; kind: string; outcome: string; code?: string };
type Counts = Record<'created' | 'existing' | 'cosigned' | 'superseded' | 'refused' | 'temporary', number>;

/** `import` as the CLI prints it: one JSON line per file, then the counts. */
function importSpool(state: string, dir: string): { status: number | null; files: FileReport[]; counts: Counts; stderr: string } {
  const result = runCoordinatorCli(['import', '--state', state, dir]);
  const lines = result.stdout
    .trim()
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  const summary = lines.pop() as { counts?: Counts } | undefined;
  return { status: result.status, files: lines as unknown as FileReport[], counts: summary?.counts as Counts, stderr: result.stderr };
}

const aMinuteAgo = () => new Date(Date.now() - 60_000);
const names = (dir: string) => (existsSync(dir) ? readdirSync(dir).filter((name) => !name.startsWith('.')) : []);

describe.skipIf(!built)('the spool round trip through removable media (needs dist/: npx tsc -p tsconfig.build.json)', () => {
  it('capsules exported, copied with faults, run air-gapped, answers imported with faults: each verified, refused with its code, or stored once', async () => {
    const coordinator = await startLinkCoordinator(world);
    const target = { runners: [world.runnerId] };
    const capsules = ['a', 'b', 'c', 'd'].map((id) => world.capsule({ id: `spool-${id}`, target }));
    for (const bytes of capsules) {
      const published = await coordinator.operator('/v1/capsules', {
        method: 'POST',
        body: bytes,
        headers: { 'content-type': 'application/vnd.edge-runner.capsule-file.v1+json' },
      });
      expect(published.status, published.body.toString()).toBe(201);
    }

    // export: the four capsules, content-addressed; a second export writes nothing new.
    const media = join(world.dir, 'media');
    const exported = runCoordinatorCli(['export', '--state', coordinator.stateDir, '--runner', world.runnerId, join(media, 'in')]);
    expect(exported.status, exported.stderr).toBe(0);
    expect(JSON.parse(exported.stdout)).toMatchObject({ written: 4, existing: 0 });
    const again = runCoordinatorCli(['export', '--state', coordinator.stateDir, '--runner', world.runnerId, join(media, 'in')]);
    expect(JSON.parse(again.stdout)).toMatchObject({ written: 0, existing: 4 });
    const unknownRunner = runCoordinatorCli(['export', '--state', coordinator.stateDir, '--runner', 'nobody', join(media, 'in')]);
    expect(unknownRunner.status).not.toBe(0);
    const exportedNames = names(join(media, 'in')).sort();
    expect(exportedNames).toHaveLength(4);
    const byId = new Map<string, string>();
    for (const name of exportedNames) {
      const payload = JSON.parse(Buffer.from(JSON.parse(readFileSync(join(media, 'in', name), 'utf8')).envelope.payload, 'base64').toString('utf8'));
      byId.set(payload.id, name);
    }

    // Media -> the runner's spool, with faults.
    const spool = join(world.dir, 'spool');
    const spoolIn = join(spool, 'in');
    mkdirSync(spoolIn, { recursive: true });
    const from = (id: string) => join(media, 'in', byId.get(`spool-${id}`)!);
    copyFileSync(from('a'), join(spoolIn, 'a.capsule.json'));
    copyFileSync(from('b'), join(spoolIn, 'b.capsule.json'));
    copyFileSync(from('b'), join(spoolIn, 'b-copy.capsule.json')); // duplicated under another name
    const altered = JSON.parse(readFileSync(from('c'), 'utf8'));
    const payload = altered.envelope.payload as string;
    const at = payload.length >> 1;
    altered.envelope.payload = payload.slice(0, at) + (payload[at] === 'A' ? 'B' : 'A') + payload.slice(at + 1);
    writeFileSync(join(spoolIn, 'c.capsule.json'), JSON.stringify(altered)); // altered on the way
    const whole = readFileSync(from('d'));
    writeFileSync(join(spoolIn, 'd.capsule.json'), whole.subarray(0, whole.length >> 1)); // a copy cut short, left so
    writeFileSync(join(spoolIn, '.e.capsule.json.part'), whole); // a copy tool's temporary name: never read
    writeFileSync(join(spoolIn, 'README.txt'), 'not a capsule'); // foreign
    for (const name of readdirSync(spoolIn)) utimesSync(join(spoolIn, name), aMinuteAgo(), aMinuteAgo());

    const agent = spawnSpoolAgent(world, spool);
    const decided = () => agent.lines.filter((line) => line.msg === 'spool file decided');
    await waitFor(() => decided().length >= 4, 'the agent to decide the four files', 60_000);
    // The whole of d arrives later, over the cut-short copy: other bytes, a file of its own, taken.
    writeFileSync(join(spoolIn, 'd.capsule.json'), whole);
    utimesSync(join(spoolIn, 'd.capsule.json'), aMinuteAgo(), aMinuteAgo());
    await waitFor(() => decided().length >= 5, 'the agent to decide the whole d', 60_000);
    const out = join(spool, 'out');
    await waitFor(() => names(join(out, 'bundles')).length === 3 && names(join(out, 'rejections')).length === 2, 'the answers in out/', 30_000);
    expect((await agent.stop()).code, agent.stderr().slice(-3000)).toBe(0);

    const outcomes = decided().map((line) => ({ file: line.file, outcome: line.outcome, code: line.code }));
    expect(outcomes.filter((o) => o.outcome === 'completed').map((o) => o.file)).toEqual(
      expect.arrayContaining(['a.capsule.json', 'd.capsule.json']),
    );
    // b and its copy: one decision between them.
    expect(outcomes.filter((o) => o.file === 'b.capsule.json' || o.file === 'b-copy.capsule.json')).toHaveLength(1);
    expect(outcomes.find((o) => o.file === 'c.capsule.json')).toMatchObject({
      outcome: 'rejected',
      code: expect.stringMatching(/^CAPSULE_(SIGNATURE|PARSE|ENVELOPE)/),
    });
    const cut = outcomes.filter((o) => o.file === 'd.capsule.json');
    expect(cut.map((o) => o.outcome)).toEqual(['rejected', 'completed']);
    expect(decided().some((line) => String(line.file).includes('.part') || line.file === 'README.txt')).toBe(false);
    const checkpoints = names(join(out, 'checkpoints'));
    expect(checkpoints.length).toBeGreaterThanOrEqual(1);
    expect(readdirSync(join(out, 'bundles')).some((name) => name.startsWith('.'))).toBe(false); // no temporary left behind

    // The runner's log: every answer settled as spooled, nothing left queued.
    const store = Store.open(join(world.stateDir, 'runner.db'));
    try {
      expect(store.outboxStats()).toMatchObject({ queued: 0, dead: 0, acked: 5 });
      let spooled = 0;
      for (let seq = 0; seq < store.merkle.size(); seq++) if (parseRecordLeaf(store.record(seq)!.leaf, seq).kind === 'outbox.spooled') spooled += 1;
      expect(spooled).toBe(5);
    } finally {
      store.close();
    }

    // A bundle from the spool verifies offline, as any bundle does.
    const aBundle = names(join(out, 'bundles'))[0]!;
    const verified = runCli(['verify', join(out, 'bundles', aBundle), '--trust', join(world.dir, 'trust.dsse.json')]);
    expect(verified.status, verified.stderr).toBe(0);

    // The spool -> media, with faults: a bundle cut short, a rejection altered, a temporary file beside them.
    const back = join(media, 'out');
    cpSync(out, back, { recursive: true });
    const bundles = names(join(back, 'bundles')).sort();
    const rejections = names(join(back, 'rejections')).sort();
    truncateSync(join(back, 'bundles', bundles[0]!), 100);
    const rejectionPath = join(back, 'rejections', rejections[0]!);
    const rejectionBytes = readFileSync(rejectionPath);
    const middle = rejectionBytes.length >> 1;
    rejectionBytes[middle] = rejectionBytes[middle]! ^ 0x01;
    writeFileSync(rejectionPath, rejectionBytes);
    writeFileSync(join(back, 'bundles', '.partial.bundle.json.tmp-1'), 'half');

    const first = importSpool(coordinator.stateDir, back);
    expect(first.status, first.stderr).toBe(3); // something was refused
    const refused = first.files.filter((f) => f.outcome === 'refused');
    expect(refused).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ file: `bundles/${bundles[0]}`, code: 'SPOOL_DIGEST_MISMATCH' }),
        expect.objectContaining({ file: `rejections/${rejections[0]}`, code: 'SPOOL_DIGEST_MISMATCH' }),
      ]),
    );
    expect(refused).toHaveLength(2);
    expect(first.counts).toMatchObject({ created: 3, refused: 2, temporary: 1 });
    expect(first.counts.cosigned).toBe(checkpoints.length); // each checkpoint proves from the one before it

    // The media repaired (the intact files copied again): what was refused is stored now, the rest is there.
    cpSync(out, back, { recursive: true, force: true });
    const second = importSpool(coordinator.stateDir, back);
    expect(second.status, second.stderr).toBe(0);
    // The checkpoint the witness holds is 'existing'; the earlier ones are behind it ('superseded').
    expect(second.counts).toMatchObject({ created: 2, existing: 3 + 1, superseded: checkpoints.length - 1, refused: 0, cosigned: 0 });
    // Imported a third time: nothing is stored twice.
    const third = importSpool(coordinator.stateDir, back);
    expect(third.counts).toMatchObject({ created: 0, existing: 5 + 1, refused: 0, cosigned: 0 });

    // What the coordinator holds: the three bundles and two rejections once each, and the log witnessed.
    const listed = (await coordinator.operator(`/v1/bundles?runner=${world.runnerId}`)).json() as { items: { verdict: string }[] };
    expect(listed.items).toHaveLength(3);
    expect(listed.items.every((item) => item.verdict === 'pass')).toBe(true);
    const listedRejections = (await coordinator.operator(`/v1/rejections?runner=${world.runnerId}`)).json() as { items: unknown[] };
    expect(listedRejections.items).toHaveLength(2);
    const fleet = (await coordinator.operator('/v1/runners')).json() as { runners: { id: string; witnessedSize: number }[] };
    const largest = Math.max(...checkpoints.map((name) => Number(name.split('-')[0])));
    expect(fleet.runners.find((r) => r.id === world.runnerId)?.witnessedSize).toBe(largest);

    // The witness's answer goes back by hand: export writes the held checkpoint cosigned, the runner keeps
    // the cosignature once it verifies against its own log (an altered copy is not taken).
    const withCosigned = runCoordinatorCli(['export', '--state', coordinator.stateDir, '--runner', world.runnerId, join(media, 'in')]);
    expect(JSON.parse(withCosigned.stdout)).toMatchObject({ written: 0, existing: 4, cosignedSize: largest });
    const cosignedName = readdirSync(join(media, 'in')).find((name) => name.endsWith('.cosigned'))!;
    expect(cosignedName).toMatch(new RegExp(`^${largest}-[0-9a-f]{16}\\.cosigned$`));
    const cosigned = readFileSync(join(media, 'in', cosignedName), 'utf8');
    const lastLine = cosigned.trimEnd().split('\n').pop()!;
    const forged = cosigned.replace(lastLine, lastLine.slice(0, -6) + (lastLine.endsWith('AAAA==') ? 'BBBB==' : 'AAAA=='));
    writeFileSync(join(spoolIn, `${largest}-0000000000000000.cosigned`), forged);
    copyFileSync(join(media, 'in', cosignedName), join(spoolIn, cosignedName));
    const again2 = spawnSpoolAgent(world, spool, {}, 'spool-agent-2');
    await waitFor(() => again2.lines.some((line) => line.msg === 'checkpoint cosigned (from the spool)'), 'the cosignature to be taken', 30_000);
    await waitFor(() => again2.lines.some((line) => line.msg === 'cosigned checkpoint not taken'), 'the forged one to be refused', 30_000);
    expect(again2.lines.find((line) => line.msg === 'cosigned checkpoint not taken')).toMatchObject({ code: 'SPOOL_COSIGNED_INVALID' });
    expect((await again2.stop()).code).toBe(0);
    const reopened = Store.open(join(world.stateDir, 'runner.db'));
    try {
      expect(reopened.witnessedSize(world.witnessName)).toBe(largest);
    } finally {
      reopened.close();
    }
  }, 180_000);
});
