/**
 * The module map is enforced by the linter (eslint.config.js): each rule is shown to fail on a violation,
 * and the same import is shown to pass where it is allowed, so a rule that matched nothing would be caught.
 */
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const eslint = new ESLint({ cwd: root });

async function ruleIdsFor(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  return (result?.messages ?? []).map((m) => m.ruleId ?? `fatal: ${m.message}`);
}

describe('the module rules', () => {
  describe('when a pure module imports file-system, process or network code', () => {
    it.each([
      ['runner/log/new.ts', "import { readFileSync } from 'node:fs';\nexport const f = readFileSync;\n"],
      ['runner/core/new.ts', "import { spawn } from 'node:child_process';\nexport const f = spawn;\n"],
      ['runner/trust/new.ts', "import { connect } from 'node:net';\nexport const f = connect;\n"],
      ['runner/evidence/new.ts', "import { request } from 'undici';\nexport const f = request;\n"],
      ['runner/capsule/new.ts', "import { DatabaseSync } from 'node:sqlite';\nexport const f = DatabaseSync;\n"],
    ])('fails the lint (%s)', async (file, code) => {
      expect(await ruleIdsFor(file, code)).toContain('no-restricted-imports');
    });
  });

  describe('when a pure module imports an I/O module of the runner', () => {
    it.each([
      ['runner/log/new.ts', "import { Store } from '../store/store.js';\nexport const f = Store;\n"],
      ['runner/evidence/new.ts', "import { runStep } from '../exec/step.js';\nexport const f = runStep;\n"],
      ['runner/capsule/new.ts', "import type { RunnerContext } from '../agent/runner.js';\nexport type F = RunnerContext;\n"],
    ])('fails the lint (%s)', async (file, code) => {
      expect(await ruleIdsFor(file, code)).toContain('no-restricted-imports');
    });
  });

  it('lets an I/O module import node:fs (the rule is scoped to pure modules)', async () => {
    expect(await ruleIdsFor('runner/exec/new.ts', "import { readFileSync } from 'node:fs';\nexport const f = readFileSync;\n")).toEqual([]);
  });

  it('fails the lint when a module outside runner/store/ imports node:sqlite, and passes inside it', async () => {
    const code = "import { DatabaseSync } from 'node:sqlite';\nexport const f = DatabaseSync;\n";
    expect(await ruleIdsFor('runner/agent/new.ts', code)).toContain('no-restricted-imports');
    expect(await ruleIdsFor('runner/store/new.ts', code)).toEqual([]);
  });

  it('fails the lint when a module outside runner/config/ reads process.env, and passes inside it', async () => {
    const code = 'export const level = process.env.EDGE_RUNNER_LOG_LEVEL;\n';
    expect(await ruleIdsFor('runner/exec/new.ts', code)).toContain('no-restricted-properties');
    expect(await ruleIdsFor('runner/config/new.ts', code)).toEqual([]);
  });

  it('fails the lint when the coordinator imports an I/O module of the runner, and passes for a pure one', async () => {
    expect(await ruleIdsFor('coordinator/src/new.ts', "import { Store } from '../../runner/store/store.js';\nexport const f = Store;\n")).toContain(
      'no-restricted-imports',
    );
    expect(
      await ruleIdsFor('coordinator/src/new.ts', "import { sha256Hex } from '../../runner/core/digest.js';\nexport const f = sha256Hex;\n"),
    ).toEqual([]);
  });
});
