/**
 * The air-gapped spool folder's layout: the one definition the runner (runner/spool/, the writer of out/ and
 * reader of in/) and the coordinator (coordinator/src/spool.ts, the reader of out/ and writer of in/) share.
 * The files are the link's own documents, byte for byte; only the transport differs (docs/protocol.md,
 * "The spool folder"):
 *
 *   DIR/in/NAME.capsule.json                    capsule files (the coordinator's export names them HEX.capsule.json)
 *   DIR/in/SIZE-ROOT16.cosigned                 the runner's checkpoint as the witness holds it, with the
 *                                               witness's cosignature line appended (a C2SP signed note)
 *   DIR/in/NAME.approval.json                   an approval of one of the runner's proposals (a DSSE
 *                                               envelope; the export names it HEX.approval.json, HEX the
 *                                               approval digest, and writes the canonical envelope)
 *   DIR/out/bundles/HEX.bundle.json             a bundle, HEX the SHA-256 of its bytes
 *   DIR/out/rejections/HEX.rejection.json       a signed rejection, HEX the SHA-256 of its bytes
 *   DIR/out/checkpoints/SIZE-ROOT16.checkpoint  a C2SP tlog-witness add-checkpoint body (old size, consistency
 *                                               proof from the previous spooled checkpoint, signed note);
 *                                               SIZE the tree size, ROOT16 the first 16 hex of its root hash
 *   DIR/out/checkpoints/SIZE-ROOT16.from-OLD.checkpoint
 *                                               the same tree proved from OLD, the size a witness was last
 *                                               known to hold (its cosigned file came back below the chain:
 *                                               a checkpoint file was lost on the way), so it can catch up
 *
 * A name starting with '.' is a writer's temporary file (never complete) and every other name is foreign:
 * both are passed over, never read as a document. Pure: names in, names out.
 */
export const SPOOL_IN = 'in';
export const SPOOL_OUT = 'out';

export type SpoolAnswerKind = 'bundle' | 'rejection' | 'checkpoint';

/** Subfolders of DIR/out/, one per kind. */
export const SPOOL_OUT_FOLDERS: Readonly<Record<SpoolAnswerKind, string>> = {
  bundle: 'bundles',
  rejection: 'rejections',
  checkpoint: 'checkpoints',
};

/** A capsule file name the spool reads from DIR/in/: a plain name ending `.capsule.json` (no dot first). */
const CAPSULE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}\.capsule\.json$/;
const DOCUMENT_NAME = /^([0-9a-f]{64})\.(bundle|rejection)\.json$/;
const CHECKPOINT_NAME = /^(0|[1-9][0-9]{0,15})-([0-9a-f]{16})(?:\.from-(0|[1-9][0-9]{0,15}))?\.checkpoint$/;

const COSIGNED_NAME = /^(0|[1-9][0-9]{0,15})-([0-9a-f]{16})\.cosigned$/;
const APPROVAL_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}\.approval\.json$/;

/** An approval file name the spool reads from DIR/in/: a plain name ending `.approval.json` (no dot first). */
export function isSpoolApprovalName(name: string): boolean {
  return APPROVAL_NAME.test(name);
}

/** The exported name of an approval: its digest (`sha256:HEX`) as HEX.approval.json. */
export function toSpoolApprovalName(digest: string): string {
  return `${hexOf(digest)}.approval.json`;
}

/** The name in DIR/in/ of a cosigned checkpoint of a tree of `size` leaves with this root. */
export function toSpoolCosignedName(size: number, rootHash: Uint8Array): string {
  return `${size}-${Buffer.from(rootHash).toString('hex').slice(0, 16)}.cosigned`;
}

export function isSpoolCosignedName(name: string): boolean {
  return COSIGNED_NAME.test(name);
}

export function isSpoolCapsuleName(name: string): boolean {
  return CAPSULE_NAME.test(name);
}

/** The exported name of a capsule file: its digest (`sha256:HEX`) as HEX.capsule.json. */
export function toSpoolCapsuleName(digest: string): string {
  return `${hexOf(digest)}.capsule.json`;
}

/** The name in DIR/out/<folder>/ of a bundle or rejection with this digest (`sha256:HEX`). */
export function toSpoolDocumentName(kind: 'bundle' | 'rejection', digest: string): string {
  return `${hexOf(digest)}.${kind}.json`;
}

/** The name of a checkpoint file; `from`: a catch-up file, proved from that size (not the previous file's). */
export function toSpoolCheckpointName(size: number, rootHash: Uint8Array, from?: number): string {
  return `${size}-${Buffer.from(rootHash).toString('hex').slice(0, 16)}${from === undefined ? '' : `.from-${from}`}.checkpoint`;
}

export type SpoolName =
  | { kind: 'bundle' | 'rejection'; digest: string }
  | { kind: 'checkpoint'; size: number; rootPrefix: string; from?: number }
  /** A temporary file of a writer, or a name this layout does not know. */
  | { kind: 'foreign' };

/** What a file name in DIR/out/<folder>/ says it holds (the folder must agree with the kind). */
export function parseSpoolOutName(folder: string, name: string): SpoolName {
  const doc = DOCUMENT_NAME.exec(name);
  if (doc && SPOOL_OUT_FOLDERS[doc[2] as 'bundle' | 'rejection'] === folder)
    return { kind: doc[2] as 'bundle' | 'rejection', digest: `sha256:${doc[1]}` };
  const checkpoint = CHECKPOINT_NAME.exec(name);
  if (checkpoint && folder === SPOOL_OUT_FOLDERS.checkpoint && Number.isSafeInteger(Number(checkpoint[1]))) {
    const from = checkpoint[3] === undefined ? undefined : Number(checkpoint[3]);
    if (from !== undefined && !(Number.isSafeInteger(from) && from < Number(checkpoint[1]))) return { kind: 'foreign' };
    return { kind: 'checkpoint', size: Number(checkpoint[1]), rootPrefix: checkpoint[2]!, ...(from !== undefined ? { from } : {}) };
  }
  return { kind: 'foreign' };
}

function hexOf(digest: string): string {
  const match = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!match) throw new TypeError(`not a sha256 digest: ${digest}`);
  return match[1]!;
}
