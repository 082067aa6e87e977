/**
 * The operator's configuration file: one TOML file (smol-toml, TOML 1.0) edited by hand, the same shape as
 * runner.json `settings` (sections `[exec]`, `[limits]`, `[sandbox]`, `[store]`, `[coordinator]`,
 * `[resources.NAME]`, `[spool]`, `[stepUser]`, and `logLevel`, `debug` at the top). A file whose name ends in
 * `.json` is read as JSON, as `agent --config` read it before TOML (the same values, strict parser).
 *
 * Which file: `--config FILE`, else the one EDGE_RUNNER_CONFIG names, else none. No default path is read:
 * a file nobody named must not change what a runner does (a stray /etc file on a test host, say); the
 * systemd unit names its file. The file is the operator's authority (it grants resources to steps), so one
 * that group or others may write, or that another user owns, is refused (CONFIG_FILE_UNSAFE).
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parse as parseToml, TomlDate, TomlError } from 'smol-toml';
import { configFileFromEnvironment, type ConfigOverrides, type ConfigSources } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { parseJson } from '../core/json.js';

/** A configuration file is small: settings, never data. */
export const CONFIG_FILE_MAX_BYTES = 64 * 1024;

const GROUP_OTHER_WRITE = 0o022;
const STICKY = 0o1000;
/** As the kernel's MAXSYMLINKS (ELOOP): more links than this on one path is a loop. */
const MAX_LINKS = 40;
/**
 * Non-blocking: a FIFO (or a device) put where the file was named must be refused, not waited on (open(2) of a
 * FIFO for reading blocks until someone writes; every command, and the unit's ExecStartPre, would hang). No
 * controlling terminal from a tty named by mistake. Reads of a regular file never block either way.
 */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

/** The file to read: the flag's, else EDGE_RUNNER_CONFIG's, else none. */
export function configFilePath(flag: string | undefined, env: Readonly<Record<string, string | undefined>>): string | undefined {
  return flag ?? configFileFromEnvironment(env);
}

/**
 * The sources of a command's configuration besides the state folder: the file (when one is named), the
 * environment and the flags (with their names, for `config check`).
 */
export function commandConfigSources(options: {
  configFlag: string | undefined;
  env: Readonly<Record<string, string | undefined>>;
  flags?: ConfigOverrides;
  flagNames?: Readonly<Record<string, string>>;
}): Omit<ConfigSources, 'state'> {
  const path = configFilePath(options.configFlag, options.env);
  return {
    env: options.env,
    ...(path !== undefined ? { file: readConfigFile(path), filePath: resolve(path) } : {}),
    ...(options.flags ? { flags: options.flags } : {}),
    ...(options.flagNames ? { flagNames: options.flagNames } : {}),
  };
}

/** Reads and parses the file (TOML, or JSON by its name), refusing an unsafe, oversized or malformed one. */
export function readConfigFile(path: string): ConfigOverrides {
  const bytes = readSafely(path);
  const json = path.endsWith('.json');
  let value: unknown;
  try {
    value = json ? parseJson(bytes) : parseToml(decodeUtf8(bytes, path));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    // TomlError carries the place; its message quotes the operator's own file, which printError makes printable.
    const where = err instanceof TomlError ? ` (line ${err.line}, column ${err.column}: ${err.message.split('\n')[0]})` : '';
    throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} is not valid ${json ? 'JSON' : 'TOML'}${where}.`, {
      setting: path,
      source: 'file',
    });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} is not a table of settings.`, { setting: path, source: 'file' });
  }
  refuseDates(value, path, '');
  return value as ConfigOverrides;
}

/**
 * No setting takes a TOML date, and smol-toml gives one as an object (a TomlDate): where a section goes
 * (`exec = 1979-05-27`) it would pass for an empty table and be ignored without a word. Refused by name.
 */
function refuseDates(value: object, path: string, prefix: string): void {
  for (const [key, member] of Object.entries(value)) {
    const setting = `${prefix}${key}`;
    if (member instanceof TomlDate) {
      throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} sets ${setting} to a date, which no setting takes.`, {
        setting,
        source: 'file',
      });
    }
    if (typeof member === 'object' && member !== null) refuseDates(member as object, path, `${setting}.`);
  }
}

/**
 * TOML is UTF-8 (TOML 1.0, "Spec"); invalid UTF-8 is refused rather than guessed at. A leading byte order
 * mark (an editor's) is passed over, as TextDecoder does by default: it cannot change what the file says.
 */
function decodeUtf8(bytes: Buffer, path: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} is not UTF-8 text.`, { setting: path, source: 'file' });
  }
}

/**
 * Opens the file once and checks what was opened (fstat, so a rename in between cannot swap it): a regular
 * file, owned by root or by this user, not writable by group or others, under the cap; and the way to it
 * (pathChain) one that only root or this user could have laid: the file the walk found is the file opened.
 */
function readSafely(path: string): Buffer {
  const fd = openSync(path, OPEN_FLAGS);
  try {
    const stats = fstatSync(fd);
    const uid = process.geteuid?.() ?? 0;
    if (!stats.isFile()) {
      throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} is not a regular file.`, { setting: path, source: 'file' });
    }
    if ((stats.uid !== 0 && stats.uid !== uid) || (stats.mode & GROUP_OTHER_WRITE) !== 0) {
      throw unsafe(
        path,
        stats.mode,
        stats.uid,
        `is owned by uid ${stats.uid} with mode ${modeText(stats.mode)}; it must be root's or the runner's and not writable by group or others (chmod go-w)`,
      );
    }
    const found = pathChain(path, uid);
    if (found.dev !== stats.dev || found.ino !== stats.ino) {
      throw unsafe(path, stats.mode, stats.uid, 'changed while it was opened (another file is at its path now)');
    }
    if (stats.size > CONFIG_FILE_MAX_BYTES) {
      throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} is larger than ${CONFIG_FILE_MAX_BYTES} bytes.`, {
        setting: path,
        source: 'file',
      });
    }
    const buffer = Buffer.alloc(CONFIG_FILE_MAX_BYTES + 1);
    let read = 0;
    while (read < buffer.length) {
      const n = readSync(fd, buffer, read, buffer.length - read, read);
      if (n === 0) break;
      read += n;
    }
    if (read > CONFIG_FILE_MAX_BYTES) {
      throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} is larger than ${CONFIG_FILE_MAX_BYTES} bytes.`, {
        setting: path,
        source: 'file',
      });
    }
    return buffer.subarray(0, read);
  } finally {
    closeSync(fd);
  }
}

/**
 * Walks `path` from / one name at a time, following symlinks by hand, and judges every folder a name is looked
 * up in: root's or this user's, and writable by group or others only if sticky, where the entry itself must
 * then be root's or this user's (others may add names to /tmp, not replace ours). Whoever could write any such
 * folder could put another file, or a link to any file root owns, in the configuration's place: the folder of
 * the link as much as that of its target, and every folder above either. Returns the identity of the file.
 */
function pathChain(path: string, uid: number): Stats {
  const pending = resolve(path)
    .split('/')
    .filter((name) => name !== '');
  let current = '/';
  let links = 0;
  const mine = (stats: Stats) => stats.uid === 0 || stats.uid === uid;
  for (let name = pending.shift(); name !== undefined; name = pending.shift()) {
    if (name === '.') continue;
    if (name === '..') {
      current = dirname(current);
      continue;
    }
    const folder = lstatSync(current);
    const entry = join(current, name);
    const stats = lstatSync(entry);
    const open = (folder.mode & GROUP_OTHER_WRITE) !== 0;
    if (!mine(folder) || (open && (folder.mode & STICKY) === 0) || (open && !mine(stats))) {
      throw unsafe(
        path,
        folder.mode,
        folder.uid,
        `is reached through ${current} (uid ${folder.uid}, mode ${modeText(folder.mode)}), where someone else could put another file or link in its place`,
      );
    }
    if (stats.isSymbolicLink()) {
      if (++links > MAX_LINKS) {
        throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} is behind more than ${MAX_LINKS} symbolic links.`, {
          setting: path,
          source: 'file',
        });
      }
      const target = readlinkSync(entry);
      if (target.startsWith('/')) current = '/';
      pending.unshift(...target.split('/').filter((part) => part !== ''));
      continue;
    }
    current = entry;
  }
  return lstatSync(current);
}

function unsafe(path: string, mode: number, uid: number, why: string): ConfigError {
  return new ConfigError('CONFIG_FILE_UNSAFE', `The configuration file ${path} ${why}.`, { path, mode, uid });
}

function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}
