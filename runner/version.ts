/** The runner's version; kept equal to package.json's by test/unit/version.test.ts. */
export const RUNNER_VERSION = '0.1.0';
