/** What `npm run demo` prints when the product's main job went end to end: one check per row of its table. */
import { expect } from 'vitest';

export function expectDemoOutput(stdout: string): void {
  expect(stdout).toMatch(/validate-ledger\s+published, run by the agent, bundle verified and stored: verdict PASS/);
  expect(stdout).toMatch(/reproduce-rounding\s+published, run by the agent, bundle verified and stored: verdict FAIL/);
  expect(stdout).toMatch(/outbox\s+coordinator stopped: 1 bundle held in the runner's outbox/);
  expect(stdout).toContain('the bundle arrived; 3 bundles, 3 distinct (none twice)');
  expect(stdout).toMatch(/tampered\s+refused at publication: 422 CAPSULE_INPUT_DIGEST/);
  expect(stdout).toContain('edge-runner exec: CAPSULE_INPUT_DIGEST, nothing executed (exit 3)');
  // Governed remediation: proposed without touching the target, two ledger owners derived, the signer's own
  // approval refused by the runner, applied and verified (the reproduction passes now); a second change
  // rolled back by the health check to the pre-state digest.
  expect(stdout).toMatch(
    /propose\s+remediate-interest-rounding: staged on a copy, validated there \(PASS\), the real target untouched \(unchanged\)/,
  );
  expect(stdout).toContain('footprint modify config/ledger.conf +1/-1; surfaces ledger, dependents reporting');
  expect(stdout).toMatch(/derived tier: 2 approvers \(.*2 of ledger-owners\); the capsule declared 2 \(matches\)/);
  expect(stdout).toMatch(
    /approve\s+capsule-signer-1 \(the capsule's signer\): approve refuses to sign \(APPROVAL_SELF\); signed anyway and uploaded, the runner refuses it: APPROVAL_SELF/,
  );
  expect(stdout).toContain('delivered by the work feed: counted alice, bob');
  expect(stdout).toMatch(
    /apply\s+applied \(target digest = post-state: true\), health check exit 0, reproduction run again: PASS; config now says "cents"/,
  );
  expect(stdout).toContain('final bundle verifies offline with its approvals: OK');
  expect(stdout).toMatch(
    /rollback\s+remediate-posting-batch: staged validation PASS, approved by 2, applied; health check exit 1: CHANGE_HEALTH_CHECK_FAILED/,
  );
  expect(stdout).toContain('rolled back: target digest = pre-state true, posting_batch 500; final bundle verifies offline: OK');
  expect(stdout).toMatch(/fleet\s+runner-demo-1: version \S+, witnessed at size [1-9]\d*, forks 0/);
  expect(stdout).toMatch(/log\s+\d+ records, \d+ signed checkpoints verify; cosigned by witness\.demo\.local at size \d+/);
  expect(stdout).toMatch(/verify\s+a bundle fetched from the coordinator verifies offline: OK/);
}
