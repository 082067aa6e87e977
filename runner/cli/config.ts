/**
 * `edge-runner config check [--state DIR] [--config FILE] [--json]`: the effective configuration, every
 * setting with the value in force and where it came from (default, runner.json, the file, an environment
 * variable, a flag), merged exactly as the agent merges it. An unknown key anywhere is refused with the key
 * named (CONFIG_UNKNOWN_SETTING), a wrong value with CONFIG_INVALID: exit 2, so a deployment can run it
 * before it restarts the agent. Proxy passwords are never printed.
 */
import { Command } from 'commander';
import { resolveConfigWithOrigins, type ConfigOrigin, type ConfigSources, type RunnerConfig } from '../config/config.js';
import { cliEnvironment } from './context.js';
import { commandConfigSources } from './config-file.js';
import { describeError, EXIT, printJson } from './output.js';
import { readStateView, stateSettings } from './state-view.js';

export interface SettingReport {
  setting: string;
  value: unknown;
  origin: ConfigOrigin;
}

export function configCommand(): Command {
  const config = new Command('config').description('The configuration: defaults < runner.json < file < environment < flags.');
  config.addCommand(
    new Command('check')
      .description('Print the effective configuration and where each value came from; refuse unknown keys (exit 2).')
      .option('--state <dir>', 'the runner state folder (its runner.json settings are merged in)')
      .option('--config <file>', 'the configuration file (TOML; .json read as JSON); else EDGE_RUNNER_CONFIG; else none')
      .option('--json', 'print machine-readable results')
      .action(async (opts: { state?: string; config?: string; json?: boolean }) => {
        try {
          const sources: ConfigSources = commandConfigSources({ configFlag: opts.config, env: cliEnvironment() });
          if (opts.state !== undefined) sources.state = stateSettings((await readStateView(opts.state)).identity);
          const { config: effective, origins } = resolveConfigWithOrigins(sources);
          const settings = settingReports(effective, origins);
          if (opts.json) {
            printJson({ ok: true, file: sources.filePath ?? null, state: opts.state ?? null, settings });
          } else {
            process.stdout.write(`configuration file: ${sources.filePath ?? 'none'}\n`);
            process.stdout.write(`state folder: ${opts.state ?? 'none'}\n`);
            const width = Math.min(64, Math.max(...settings.map((s) => s.setting.length + 3 + JSON.stringify(s.value).length)));
            for (const s of settings) {
              const left = `${s.setting} = ${JSON.stringify(s.value)}`;
              process.stdout.write(`${left.padEnd(width)}  # ${originText(s.origin)}\n`);
            }
            process.stdout.write('ok\n');
          }
          process.exitCode = EXIT.ok;
        } catch (err) {
          if (!opts.json) throw err;
          printJson({ ok: false, error: describeError(err) });
          process.exitCode = EXIT.usage;
        }
      }),
  );
  return config;
}

/** Every setting, in the configuration's own order, with its value (proxy credentials masked) and origin. */
export function settingReports(config: RunnerConfig, origins: Readonly<Record<string, ConfigOrigin>>): SettingReport[] {
  const out: SettingReport[] = [];
  const push = (setting: string, value: unknown) => out.push({ setting, value, origin: origins[setting] ?? { source: 'default' } });
  for (const [key, value] of Object.entries(config)) {
    if (key === 'stepUser' || typeof value !== 'object' || value === null || Array.isArray(value)) {
      push(key, value);
      continue;
    }
    const entries = Object.entries(value as Record<string, unknown>);
    if (key === 'resources' && entries.length === 0) push('resources', {});
    for (const [name, member] of entries) push(`${key}.${name}`, key === 'coordinator' ? maskCredentials(name, member) : member);
  }
  return out;
}

/** A proxy URL's password becomes `****`: the output of a check ends up in tickets and CI logs. */
function maskCredentials(name: string, value: unknown): unknown {
  if ((name !== 'httpsProxy' && name !== 'httpProxy') || typeof value !== 'string' || value === '') return value;
  try {
    const url = new URL(value);
    if (url.password === '') return value;
    url.password = '****';
    return url.href;
  } catch {
    return '****';
  }
}

function originText(origin: ConfigOrigin): string {
  switch (origin.source) {
    case 'default':
      return 'default';
    case 'state':
      return 'runner.json';
    case 'file':
      return `file ${origin.where ?? ''}`.trim();
    case 'environment':
      return `environment ${origin.where ?? ''}`.trim();
    case 'flags':
      return `flag ${origin.where ?? ''}`.trim();
  }
}
