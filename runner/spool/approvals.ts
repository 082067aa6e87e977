/**
 * Approvals carried by hand: DIR/in/NAME.approval.json (the coordinator's `export` writes HEX.approval.json,
 * the canonical envelope; an approver may drop the file `edge-runner approve` wrote). Each is read with the
 * spool's rules (never through a symlink, no file with other hard links, at most CAPS.approvalBytes, only
 * once it has stood still for the settle time, so a copy in progress is not read) and handed over once per
 * name and version (size, modification time, inode) in this process. Whether it was decided before is the
 * runner store's question (acceptApproval keeps each approval once by digest), so a restart reading every
 * file again decides nothing twice.
 */
import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { isSpoolApprovalName } from '../protocol/spool.js';
import { CAPS } from '../protocol/wire.js';
import { readSpoolFile, type SkipReason } from './files.js';
import { SPOOL_FILES_PER_LOOK, SPOOL_SETTLE_MS } from './inbox.js';

export interface SpoolApproval {
  name: string;
  bytes: Buffer;
}

export type ApprovalPassedOver = { name: string; reason: SkipReason | 'settling' | 'too-large' };

interface Version {
  size: number;
  mtimeMs: number;
  ino: number;
}

/** A version handed over, and when (by this clock) it may be handed over again: see readAgainAt. */
type Taken = Version & { againAt?: number };

const same = (a: Version | undefined, b: Version) => a !== undefined && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino;

export class SpoolApprovals {
  /** name -> the version handed over (or found over its cap): not read again while it stays so. */
  private readonly taken = new Map<string, Taken>();
  /** name -> the version first seen, and when (by this clock): a file whose mtime is ahead still settles. */
  private readonly unchanged = new Map<string, Version & { since: number }>();

  constructor(private readonly options: { inDir: string; now: () => number; settleMs?: number }) {}

  /** One look: the approvals ready to be handed over (at most SPOOL_FILES_PER_LOOK), and what waits and why. */
  look(): { ready: SpoolApproval[]; passedOver: ApprovalPassedOver[] } {
    const { inDir, now } = this.options;
    const settle = this.options.settleMs ?? SPOOL_SETTLE_MS;
    const ready: SpoolApproval[] = [];
    const passedOver: ApprovalPassedOver[] = [];
    const names = readdirSync(inDir).filter(isSpoolApprovalName);
    const present = new Set(names);
    for (const name of [...this.taken.keys()]) if (!present.has(name)) this.taken.delete(name);
    for (const name of [...this.unchanged.keys()]) if (!present.has(name)) this.unchanged.delete(name);
    for (const name of names.sort()) {
      if (ready.length >= SPOOL_FILES_PER_LOOK) break;
      const at = now();
      const stat = lstatSync(join(inDir, name), { throwIfNoEntry: false });
      if (stat === undefined) continue;
      const version = { size: stat.size, mtimeMs: stat.mtimeMs, ino: stat.ino };
      const taken = this.taken.get(name);
      if (same(taken, version) && (taken!.againAt === undefined || at < taken!.againAt)) continue;
      const seen = this.unchanged.get(name);
      const since = same(seen, version) && seen!.since <= at ? seen!.since : at;
      if (since === at) this.unchanged.set(name, { ...version, since });
      if (at - stat.mtimeMs < settle && at - since < settle) {
        passedOver.push({ name, reason: 'settling' });
        continue;
      }
      const read = readSpoolFile(join(inDir, name), CAPS.approvalBytes);
      if (read.kind === 'skipped') {
        passedOver.push({ name, reason: read.reason });
        continue;
      }
      this.taken.set(name, { size: read.size, mtimeMs: read.mtimeMs, ino: read.ino });
      if (read.kind === 'over-cap') {
        passedOver.push({ name, reason: 'too-large' });
        continue;
      }
      ready.push({ name, bytes: read.bytes });
    }
    return { ready, passedOver };
  }

  /** The file was not decided (the store failed): read again at the next look. */
  release(name: string): void {
    this.taken.delete(name);
  }

  /**
   * The file was refused only for the time (an approval signed ahead of the runner's clock): handed over
   * again, once, at the first look from `at` (by this clock), unchanged or not.
   */
  readAgainAt(name: string, at: number): void {
    const taken = this.taken.get(name);
    if (taken !== undefined) this.taken.set(name, { ...taken, againAt: at });
  }
}
