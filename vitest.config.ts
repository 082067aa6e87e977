import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    coverage: {
      provider: 'v8',
      include: ['runner/**/*.ts'],
      // main.ts and the CLI run as child processes in the tests (the built dist/ and the binary), which
      // in-process coverage does not see; they are covered by test/e2e and test/integration all the same.
      exclude: ['runner/main.ts', 'runner/cli/**'],
      reporter: ['text-summary', 'text'],
      // What the code met when the thresholds were set (npm run coverage), rounded down: a drop fails.
      thresholds: { statements: 85, branches: 75, functions: 85, lines: 85 },
    },
  },
});
