// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * The module map (CONTRIBUTING.md), enforced. Pure modules take bytes and return values: no file, process,
 * network or database access, and nothing of the I/O modules. Only runner/store/ opens SQLite. Only
 * runner/config/ reads the environment. The coordinator sees only the pure runner modules.
 */
export const PURE_MODULES = ['core', 'trust', 'capsule', 'evidence', 'log', 'policy', 'protocol'];
export const IO_MODULES = ['exec', 'store', 'state', 'agent', 'api', 'outbox', 'schedule', 'remediate', 'cli', 'sea', 'config'];

const IO_BUILTINS = ['fs', 'fs/promises', 'child_process', 'net', 'http', 'https', 'http2', 'dgram', 'tls', 'sqlite', 'worker_threads', 'cluster'];
const builtin = (names) => names.flatMap((name) => [`node:${name}`, name]);

const pureRules = {
  'no-restricted-imports': [
    'error',
    {
      paths: [
        ...builtin(IO_BUILTINS).map((name) => ({
          name,
          message: 'Pure modules do no I/O: take bytes and return values (CONTRIBUTING.md, module map).',
        })),
        { name: 'undici', message: 'Pure modules do no I/O; HTTP lives in runner/api/.' },
      ],
      patterns: [
        {
          group: IO_MODULES.flatMap((m) => [`../${m}/*`, `../../${m}/*`, `**/runner/${m}/*`]),
          message: 'Pure modules import no I/O module (store, exec, state, agent, cli, ...): see the module map in CONTRIBUTING.md.',
        },
      ],
    },
  ],
};

const sqliteOutsideStore = {
  'no-restricted-imports': [
    'error',
    { paths: builtin(['sqlite']).map((name) => ({ name, message: 'Only runner/store/ opens SQLite; go through the Store facade.' })) },
  ],
};

const envOutsideConfig = {
  'no-restricted-properties': [
    'error',
    { object: 'process', property: 'env', message: 'Only runner/config/ reads the environment; take the value from the RunnerConfig.' },
  ],
};

const coordinatorRules = {
  'no-restricted-imports': [
    'error',
    {
      paths: builtin(['sqlite']).map((name) => ({ name, message: 'The coordinator keeps its own storage module; never the runner store.' })),
      patterns: [
        {
          group: IO_MODULES.flatMap((m) => [`**/runner/${m}/*`, `**/runner/${m}`]),
          message: 'The coordinator imports only pure runner modules (core, trust, capsule, evidence, log, policy, protocol).',
        },
      ],
    },
  ],
};

/** coordinator/src/store/ is the coordinator's one storage module: it alone may open node:sqlite. */
const coordinatorStoreRules = {
  'no-restricted-imports': ['error', { patterns: coordinatorRules['no-restricted-imports'][1].patterns }],
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', '**/*.d.ts', '.state/**', 'tmp/**', 'test/interop/**', 'test/fixtures/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      eqeqeq: ['error', 'always'],
    },
  },
  { files: ['runner/**/*.ts'], ignores: ['runner/config/**'], rules: envOutsideConfig },
  { files: ['runner/**/*.ts'], ignores: ['runner/store/**', ...PURE_MODULES.map((m) => `runner/${m}/**`)], rules: sqliteOutsideStore },
  { files: PURE_MODULES.map((m) => `runner/${m}/**/*.ts`), rules: pureRules },
  { files: ['coordinator/**/*.ts'], rules: coordinatorRules },
  { files: ['coordinator/src/store/**/*.ts'], rules: coordinatorStoreRules },
  {
    // Tests poke at decoded JSON to tamper with it; typing every tampered shape adds nothing.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['scripts/**/*.mjs', '*.js'],
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        URL: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        fetch: 'readonly',
        performance: 'readonly',
      },
    },
  },
);
