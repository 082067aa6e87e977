import { CodedError } from '../core/errors.js';

export interface ConfigErrorDetails {
  /** The setting, as named where it was given (EDGE_RUNNER_LOG_LEVEL, runner.json settings.exec.killGraceMs). */
  CONFIG_INVALID: { setting: string; source: 'state' | 'file' | 'environment' | 'flags' };
  /** The coordinator URL is plain http to a host that is not loopback. */
  CONFIG_COORDINATOR_PLAIN_HTTP: { setting: string; source: 'state' | 'file' | 'environment' | 'flags'; host: string };
}

export type ConfigErrorCode = keyof ConfigErrorDetails;

export class ConfigError<C extends ConfigErrorCode = ConfigErrorCode> extends CodedError<C, ConfigErrorDetails[C]> {}
