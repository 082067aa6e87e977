/**
 * Reading DIR/in/ of a spool folder, a folder that people and copy tools write into while the runner looks.
 * What is taken, and when (docs/protocol.md, "The spool folder"):
 *
 * - only names ending `.capsule.json` that do not start with '.' (a copy written as `.NAME.part`, `NAME.part`
 *   or `NAME.tmp` and renamed at the end is never seen half-way); regular files with one link only, never
 *   through a symlink (a local user who may write in/ cannot make the runner read, and answer with the
 *   digest of, a file it could not copy there);
 * - a file is taken once it has not been modified for `settleMs` and did not change while it was read, so a
 *   copy in progress under the final name is left for a later look;
 * - its decision is keyed by the SHA-256 of its bytes (spool_inbox_v1): the same bytes again, under any name,
 *   are passed over; other bytes under the same name are a new file. A copy cut short and left as it is
 *   becomes a file of its own, refused at acceptance (it does not parse, or its signatures fail), and the
 *   whole file copied later is still taken: only complete, signed bytes can ever run.
 *
 * A file over the capsule cap is read only up to the cap (acceptance refuses it by size); its digest is
 * taken by streaming the whole file, so even it is decided once, up to SPOOL_DIGEST_MAX_BYTES: a larger one
 * (a sparse file of a terabyte costs its writer nothing and would hold the agent for hours) is passed over
 * as 'too-large', warned about once, and never read to its end. One look holds at most one cap's worth of
 * capsule bytes (the first ready file always), so 256 files at the cap do not take 256 caps of memory.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { isSpoolCapsuleName, isSpoolCosignedName } from '../protocol/spool.js';
import { readSpoolFile, type SkipReason } from './files.js';

/** How long a file must have been left alone before it is read (milliseconds). */
export const SPOOL_SETTLE_MS = 2000;
/** Files taken from in/ per look, oldest modification first; the rest wait for the next look. */
export const SPOOL_FILES_PER_LOOK = 256;
/** Names of in/ looked at (one lstat each) per look; a folder holding more is gone round over several looks. */
export const SPOOL_NAMES_PER_LOOK = 4096;
/** A file larger than this is never digested (nor decided): passed over as 'too-large'. */
export const SPOOL_DIGEST_MAX_BYTES = 256 * 1024 * 1024;

export interface SpoolFile {
  name: string;
  /** `sha256:HEX` of the whole file. */
  digest: string;
  /** The file's bytes, or for a file over the cap its first cap+1 bytes. */
  bytes: Buffer;
  size: number;
}

export type PassedOver = { name: string; reason: SkipReason | 'settling' | 'decided' | 'too-large' | 'bad-name'; digest?: string };

export interface InboxOptions {
  inDir: string;
  capBytes: () => number;
  /** Whether the file with this digest was decided already (the store's spool_inbox_v1). */
  isDecided: (digest: string) => boolean;
  now: () => number;
  settleMs?: number;
  /** Names of in/ looked at per look (default SPOOL_NAMES_PER_LOOK). */
  namesPerLook?: number;
}

export class SpoolInbox {
  /** name -> what it was the last time it was read and found decided: not read again while it stays so. */
  private readonly known = new Map<string, { size: number; mtimeMs: number; ino: number; digest: string }>();

  /** name -> the file as first seen in this state, and when: how long it has stood still, by this clock. */
  /** Where the next look starts in a folder of more than `namesPerLook` names. */
  private cursor = 0;
  private readonly unchanged = new Map<string, { size: number; mtimeMs: number; ino: number; since: number }>();

  constructor(private readonly options: InboxOptions) {}

  private stillSince(name: string, stat: { size: number; mtimeMs: number; ino: number }, now: number): number {
    const seen = this.unchanged.get(name);
    if (seen && seen.size === stat.size && seen.mtimeMs === stat.mtimeMs && seen.ino === stat.ino && seen.since <= now) return seen.since;
    this.unchanged.set(name, { size: stat.size, mtimeMs: stat.mtimeMs, ino: stat.ino, since: now });
    return now;
  }

  /** One look at in/: the files ready to be decided, and what was passed over and why. */
  look(): { ready: SpoolFile[]; passedOver: PassedOver[] } {
    const { inDir, isDecided, now } = this.options;
    const settle = this.options.settleMs ?? SPOOL_SETTLE_MS;
    const candidates: { name: string; mtimeMs: number; size: number }[] = [];
    const passedOver: PassedOver[] = [];
    const all = readdirSync(inDir);
    // Many files (a million decided ones left there) cost one lstat each per look: at most `namesPerLook`
    // names are looked at, the next ones at the next look, round the folder.
    const limit = this.options.namesPerLook ?? SPOOL_NAMES_PER_LOOK;
    let names = all;
    let pruneKnown = true;
    if (all.length > limit) {
      const from = this.cursor < all.length ? this.cursor : 0;
      names = all.slice(from, from + limit);
      if (names.length < limit) names = names.concat(all.slice(0, limit - names.length));
      this.cursor = (from + limit) % all.length;
      pruneKnown = this.cursor < from || from === 0; // once a round
    }
    const present = new Set<string>(pruneKnown ? all : []);
    for (const name of names) {
      if (!isSpoolCapsuleName(name)) {
        // Temporary and foreign names: never read. A capsule name this layout refuses (a space, a letter
        // outside ASCII, over 200 characters) is said, or the operator's file would wait there in silence.
        if (name.endsWith('.capsule.json') && !name.startsWith('.')) passedOver.push({ name: shortName(name), reason: 'bad-name' });
        continue;
      }
      let stat;
      try {
        // Never through a symlink, not even to stat it (a link into a hung network mount would hold the agent).
        stat = lstatSync(join(inDir, name), { throwIfNoEntry: false });
      } catch {
        passedOver.push({ name, reason: 'unreadable' });
        continue;
      }
      if (stat === undefined) continue;
      const seen = this.known.get(name);
      if (seen && seen.size === stat.size && seen.mtimeMs === stat.mtimeMs && seen.ino === stat.ino && isDecided(seen.digest)) continue;
      if (stat.size > SPOOL_DIGEST_MAX_BYTES) {
        passedOver.push({ name, reason: 'too-large' }); // not even its first cap of bytes is read
        continue;
      }
      // Settled: not modified for `settle`, by its mtime or, for an mtime ahead of this clock (a copy that
      // kept the times of a machine whose clock runs ahead, or this clock jumped back), by this process
      // having seen it unchanged for `settle`; else such a file would wait for ever, and say nothing.
      const still = this.stillSince(name, stat, now());
      if (now() - stat.mtimeMs < settle && now() - still < settle) {
        passedOver.push({ name, reason: 'settling' });
        continue;
      }
      candidates.push({ name, mtimeMs: stat.mtimeMs, size: stat.size });
    }
    if (pruneKnown) {
      for (const name of this.known.keys()) if (!present.has(name)) this.known.delete(name);
      for (const name of this.unchanged.keys()) if (!present.has(name)) this.unchanged.delete(name);
    }
    candidates.sort((a, b) => a.mtimeMs - b.mtimeMs || (a.name < b.name ? -1 : 1));
    const ready: SpoolFile[] = [];
    const digests = new Set<string>();
    const cap = this.options.capBytes();
    let held = 0;
    for (const { name, size } of candidates.slice(0, SPOOL_FILES_PER_LOOK)) {
      // Memory: at most one cap's worth of bytes per look (the first file always); the rest wait.
      if (ready.length > 0 && held + Math.min(size, cap + 1) > cap + 1) break;
      const path = join(inDir, name);
      const read = readSpoolFile(path, cap);
      if (read.kind === 'skipped') {
        passedOver.push({ name, reason: read.reason });
        continue;
      }
      if (read.size > SPOOL_DIGEST_MAX_BYTES) {
        passedOver.push({ name, reason: 'too-large' }); // it grew since its stat
        continue;
      }
      const digest = read.kind === 'read' ? `sha256:${createHash('sha256').update(read.bytes).digest('hex')}` : streamDigest(path, read);
      if (digest === undefined) {
        passedOver.push({ name, reason: 'changing' });
        continue;
      }
      // The file as it was read (its descriptor's inode), not whatever the name holds by now.
      const seen = { size: read.size, mtimeMs: read.mtimeMs, ino: read.ino, digest };
      if (isDecided(digest) || digests.has(digest)) {
        this.known.set(name, seen);
        passedOver.push({ name, reason: 'decided', digest });
        continue;
      }
      digests.add(digest);
      this.known.set(name, seen);
      held += read.bytes.length;
      ready.push({ name, digest, bytes: read.bytes, size: read.size });
    }
    return { ready, passedOver };
  }
}

/**
 * The cosigned checkpoints in in/ (SIZE-ROOT16.cosigned, written by the coordinator's export) not taken yet
 * by this process: each name once per modification time. Read with the same rules as capsule files.
 */
export function lookCosigned(inDir: string, capBytes: number, taken: Map<string, number>): { name: string; bytes: Buffer }[] {
  const found: { name: string; bytes: Buffer }[] = [];
  for (const name of readdirSync(inDir)) {
    if (!isSpoolCosignedName(name)) continue;
    // Not read again while its modification time stays what was taken (many such files cost a stat each).
    const stat = lstatSync(join(inDir, name), { throwIfNoEntry: false });
    if (stat === undefined || taken.get(name) === stat.mtimeMs) continue;
    const read = readSpoolFile(join(inDir, name), capBytes);
    if (read.kind !== 'read' || taken.get(name) === read.mtimeMs) continue;
    taken.set(name, read.mtimeMs);
    found.push({ name, bytes: read.bytes });
  }
  return found;
}

/** A name as logged: at most 120 characters of it (a name may be 255 bytes of anything). */
function shortName(name: string): string {
  return name.length <= 120 ? name : `${name.slice(0, 100)}…${name.slice(-19)}`;
}

/** The SHA-256 of a whole file read past its cap, in pieces; undefined when it changed meanwhile. */
function streamDigest(path: string, first: { size: number; mtimeMs: number; ino: number }): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const hash = createHash('sha256');
    const chunk = Buffer.alloc(1 << 20);
    let offset = 0;
    // Never past the size it had (a file that keeps growing is not followed), nor past the bound.
    const end = Math.min(first.size, SPOOL_DIGEST_MAX_BYTES);
    for (;;) {
      const n = readSync(fd, chunk, 0, Math.min(chunk.length, end - offset), offset);
      if (n <= 0) break;
      hash.update(chunk.subarray(0, n));
      offset += n;
    }
    const after = fstatSync(fd);
    if (offset !== first.size || after.ino !== first.ino || after.size !== first.size || after.mtimeMs !== first.mtimeMs) return undefined;
    return `sha256:${hash.digest('hex')}`;
  } finally {
    closeSync(fd);
  }
}
