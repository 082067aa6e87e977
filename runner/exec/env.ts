/**
 * A step's environment is built, never inherited: a fixed allowlist of neutral values plus the capsule's
 * own signed `env`. Nothing from the runner's environment reaches a step (tokens, proxies, NODE_OPTIONS).
 */
export const BASE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export function buildStepEnv(workspace: string, capsuleEnv: Readonly<Record<string, string>> = {}): Record<string, string> {
  return {
    PATH: BASE_PATH,
    HOME: workspace,
    TMPDIR: '/tmp',
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    TZ: 'UTC',
    EDGE_RUNNER_WORKSPACE: workspace,
    ...capsuleEnv,
  };
}
