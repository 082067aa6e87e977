import { CodedError } from '../core/errors.js';

/**
 * The change mechanics' codes (tree.ts, patch.ts, files.ts): reading a target, planning a change against it,
 * writing and restoring it. The state machine's own codes are RemediationError's (machine-errors.ts). A
 * message may name a path of the signed change (through toPrintableExcerpt), never a file's bytes.
 */
export interface ChangeErrorDetails {
  /** The change target is not a folder (missing, a symlink, a file). */
  CHANGE_TARGET_MISSING: { path: string };
  /** The target holds more bytes of files, more entries, or deeper folders than its caps. */
  CHANGE_TARGET_TOO_LARGE: { limit: 'maxBytes' | 'maxEntries' | 'depth'; cap: number };
  /** The target holds a fifo, socket or device, or a name that is not plain UTF-8 text: it is not digested. */
  CHANGE_TARGET_UNSUPPORTED: { path: string; why: string };
  /** An entry of the target could not be read (EACCES, EIO, ...). */
  CHANGE_TARGET_UNREADABLE: { path: string; errno?: string };
  /** The change's patch is not a unified diff this runner applies (binary, rename, copy, mode change, malformed, over a cap). */
  CHANGE_PATCH_INVALID: { why: string; path?: string };
  /** A hunk does not apply exactly at the line it names (no fuzz, no offset). */
  CHANGE_HUNK_FAILED: { path: string; hunk: number };
  /**
   * A path leaves the target or is not a plain name in it: absolute, `..`, empty or `.` segment, NUL,
   * backslash, a control character or lone surrogate, the writer's temporary names, or a symlink, folder or
   * special file at it or on its way.
   */
  CHANGE_PATH_ESCAPE: { path: string };
  /** The change adds a file that is already there. */
  CHANGE_FILE_EXISTS: { path: string };
  /** The change modifies or deletes a file that is not there. */
  CHANGE_FILE_MISSING: { path: string };
  /** The change touches one path twice, or makes a path both a file and a folder. */
  CHANGE_PATH_TWICE: { path: string };
  /** The change changes no byte and no mode of its target. */
  CHANGE_EMPTY: Record<string, never>;
  /** A planned file is not what the plan was made against (when its snapshot is taken, or when it is written): it is not written. */
  CHANGE_TARGET_CHANGED: { path: string };
  /** A snapshot of the pre-state is missing or does not match its digest, so a planned path cannot be put back. */
  CHANGE_RESTORE_FAILED: { path: string; why: string };
}

export type ChangeErrorCode = keyof ChangeErrorDetails;

export class ChangeError<C extends ChangeErrorCode = ChangeErrorCode> extends CodedError<C, ChangeErrorDetails[C]> {}
