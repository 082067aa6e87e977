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
import { closeSync, fstatSync, openSync, readSync, realpathSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { configFileFromEnvironment, type ConfigOverrides, type ConfigSources } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { parseJson } from '../core/json.js';

/** A configuration file is small: settings, never data. */
export const CONFIG_FILE_MAX_BYTES = 64 * 1024;

const GROUP_OTHER_WRITE = 0o022;
const STICKY = 0o1000;

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
  return value as ConfigOverrides;
}

/** TOML is UTF-8 (TOML 1.0, "Spec"); a byte order mark or invalid UTF-8 is refused rather than guessed at. */
function decodeUtf8(bytes: Buffer, path: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new ConfigError('CONFIG_INVALID', `The configuration file ${path} is not UTF-8 text.`, { setting: path, source: 'file' });
  }
}

/**
 * Opens the file once and checks what was opened (fstat, so a rename in between cannot swap it): owned by
 * root or by this user, not writable by group or others, in a folder others cannot write (unless sticky),
 * and under the cap.
 */
function readSafely(path: string): Buffer {
  const fd = openSync(path, 'r');
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
    // The folder of the file itself (through any link): whoever may write there may replace the file.
    const folder = statSync(dirname(realpathSync(path)));
    if ((folder.uid !== 0 && folder.uid !== uid) || ((folder.mode & GROUP_OTHER_WRITE) !== 0 && (folder.mode & STICKY) === 0)) {
      throw unsafe(
        path,
        folder.mode,
        folder.uid,
        `is in a folder someone else could replace it in (uid ${folder.uid}, mode ${modeText(folder.mode)})`,
      );
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

function unsafe(path: string, mode: number, uid: number, why: string): ConfigError {
  return new ConfigError('CONFIG_FILE_UNSAFE', `The configuration file ${path} ${why}.`, { path, mode, uid });
}

function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}
