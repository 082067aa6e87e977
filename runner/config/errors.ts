import { CodedError } from '../core/errors.js';

export interface ConfigErrorDetails {
  /** The setting, as named where it was given (EDGE_RUNNER_LOG_LEVEL, runner.json settings.exec.killGraceMs). */
  CONFIG_INVALID: { setting: string; source: 'state' | 'file' | 'environment' | 'flags' };
  /** A key of runner.json `settings`, the configuration file or the flags that is no setting (a misspelling, say). */
  CONFIG_UNKNOWN_SETTING: { setting: string; source: 'state' | 'file' | 'environment' | 'flags' };
  /** The configuration file (the operator's authority: it grants resources) could be changed by someone else. */
  CONFIG_FILE_UNSAFE: { path: string; mode: number; uid: number };
  /** The coordinator URL is plain http to a host that is not loopback. */
  CONFIG_COORDINATOR_PLAIN_HTTP: { setting: string; source: 'state' | 'file' | 'environment' | 'flags'; host: string };
}

export type ConfigErrorCode = keyof ConfigErrorDetails;

export class ConfigError<C extends ConfigErrorCode = ConfigErrorCode> extends CodedError<C, ConfigErrorDetails[C]> {}
