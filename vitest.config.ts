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
      // Measured when the thresholds were set (npm run coverage, 2026-12-01, after issue 8): statements
      // 89.4%, branches 82.7%, functions 95.6%, lines 92.2%; set a little below, so a real drop fails and
      // noise does not. Issue 8 lowered them: most of its new paths (a full disk, a planted symlink, a
      // damaged database, a flipped state path) are proved through the built CLI in child processes, which
      // this in-process figure does not count.
      thresholds: { statements: 88, branches: 81, functions: 94, lines: 91 },
    },
  },
});
