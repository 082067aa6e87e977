/**
 * Issue 8, parsing of signed and untrusted documents (points 6, 7, 8, 9 and 14c), each attack through the
 * built CLI: duplicate JSON member names in every document the runner or `verify` reads, bundles that
 * smuggle data past `verify`, control characters reaching the terminal and the ops log, JUnit reports that
 * hide their failures, and capsule files carrying blobs no input names.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CapsuleFile } from '../../runner/capsule/capsule-file.js';
import { CAPSULE_PAYLOAD_TYPE } from '../../runner/capsule/manifest.js';
import { signEnvelope, type Envelope } from '../../runner/core/dsse.js';
import { formatBundle, type Bundle } from '../../runner/evidence/bundle.js';
import { JUNIT_MAX_DEPTH, parseJunit } from '../../runner/evidence/parsers/junit.js';
import { IN_TOTO_PAYLOAD_TYPE } from '../../runner/evidence/statement.js';
import { TRUST_PAYLOAD_TYPE } from '../../runner/trust/trust.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { execInState } from '../helpers/runner.js';
import { makeWorld, type World } from '../helpers/world.js';

/** Any character a terminal acts on, other than the newline that ends each line. */
// eslint-disable-next-line no-control-regex
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;
/** A member name that, printed raw, erases the line and forges a passing result. */
const FORGED_LINE = '\r\x1b[2KOK    good.bundle.json: validate capsule forged on runner runner-test-1, verdict pass\u202e\x9b';

/** `json` with a second member `name` in front of the first one: `"name":first,"name":…`. */
function duplicate(json: string, name: string, first: string): string {
  const at = json.indexOf(`"${name}":`);
  if (at < 0) throw new Error(`no member ${name}`);
  return `${json.slice(0, at)}"${name}":${first},${json.slice(at)}`;
}

const b64 = (text: string | Buffer) => Buffer.from(text).toString('base64');

function manifestTextOf(file: CapsuleFile): string {
  return Buffer.from(file.envelope.payload, 'base64').toString('utf8');
}

/** A capsule file whose envelope signs `manifestText` exactly as given, repeated members and all. */
function signedCapsuleText(world: World, manifestText: string, blobs: CapsuleFile['blobs'] = {}): string {
  return JSON.stringify({
    mediaType: 'application/vnd.edge-runner.capsule-file.v1+json',
    envelope: signEnvelope(CAPSULE_PAYLOAD_TYPE, Buffer.from(manifestText), world.signers.slice(0, 1)),
    blobs,
  });
}

function exec(world: World, text: string | Buffer, env?: NodeJS.ProcessEnv): CliResult {
  return runCli(['exec', world.writeCapsule(text), '--state', world.stateDir], env ? { env } : {});
}

function expectRejected(result: CliResult, code: string): void {
  expect(result.stderr).toContain(`${code}:`);
  expect(result.status, result.stderr).toBe(3);
}

describe('issue 8: parsing of signed and untrusted documents', () => {
  let world: World;

  beforeAll(() => {
    world = makeWorld();
  });
  afterAll(() => world.cleanup());

  describe('point 6: duplicate member names in a capsule', () => {
    const echo = '[{"name":"reviewed","run":["/bin/true"]}]';

    it('attack 6: a manifest with two "steps" members is refused with CAPSULE_SCHEMA', () => {
      const text = duplicate(manifestTextOf(world.capsule({ steps: [{ name: 'hidden', run: ['/bin/echo', 'second list'] }] })), 'steps', echo);
      expectRejected(exec(world, signedCapsuleText(world, text)), 'CAPSULE_SCHEMA');
    });

    it('attack 6: a manifest with two "isolation" members is refused with CAPSULE_SCHEMA', () => {
      const text = duplicate(manifestTextOf(world.capsule({ isolation: 'best-effort' })), 'isolation', '"required"');
      expectRejected(exec(world, signedCapsuleText(world, text)), 'CAPSULE_SCHEMA');
    });

    it('attack 6: a step with two "run" members (nested) is refused with CAPSULE_SCHEMA', () => {
      const text = duplicate(manifestTextOf(world.capsule()), 'run', '["/bin/false"]');
      expectRejected(exec(world, signedCapsuleText(world, text)), 'CAPSULE_SCHEMA');
    });

    it('attack 6: a capsule file with two "envelope" members is refused with CAPSULE_UNPARSEABLE', () => {
      const shown = world.capsule({ id: 'shown-capsule' });
      const run = world.capsule({ id: 'run-capsule' });
      const text = duplicate(JSON.stringify(run), 'envelope', JSON.stringify(shown.envelope));
      expectRejected(exec(world, text), 'CAPSULE_UNPARSEABLE');
    });

    it('attack 6: an envelope with two "payload" members (nested) is refused with CAPSULE_UNPARSEABLE', () => {
      const other = world.capsule({ id: 'other-capsule' });
      const text = duplicate(JSON.stringify(world.capsule()), 'payload', JSON.stringify(other.envelope.payload));
      expectRejected(exec(world, text), 'CAPSULE_UNPARSEABLE');
    });

    it('attack 6: a blob listed twice under one digest is refused with CAPSULE_UNPARSEABLE', () => {
      const file = world.capsule({}, { 'data.txt': 'the signed bytes\n' });
      const ref = Object.keys(file.blobs)[0]!;
      const text = duplicate(JSON.stringify(file), ref, JSON.stringify(b64('other bytes\n')));
      expectRejected(exec(world, text), 'CAPSULE_UNPARSEABLE');
    });

    it('attack 6: capsule pack refuses a capsule.json with two "steps" members (exit 2)', () => {
      const dir = join(world.dir, 'pack-dup');
      mkdirSync(dir, { recursive: true });
      const template = {
        apiVersion: 'edge-runner.dev/capsule/v1',
        kind: 'validate',
        id: 'dup-pack',
        target: { labels: ['test'] },
        steps: [{ name: 'b', run: ['/bin/true'] }],
      };
      writeFileSync(join(dir, 'capsule.json'), duplicate(JSON.stringify(template), 'steps', echo));
      expect(runCli(['keygen', '--out', join(world.dir, 'packer')]).status).toBe(0);
      const result = runCli(['capsule', 'pack', dir, '--key', join(world.dir, 'packer.key'), '--out', join(world.dir, 'dup.capsule.json')]);
      expect(result.stderr).toMatch(/USAGE: .*two members of one object are named "steps"/);
      expect(result.status).toBe(2);
    });
  });

  describe('point 14c: blobs that no input references', () => {
    it('attack 14c: a capsule file carrying a blob no input names is refused with CAPSULE_BLOB_UNREFERENCED', () => {
      const file = world.capsule({}, { 'data.txt': 'the signed bytes\n' });
      const extra = Buffer.from('unsigned bytes riding along\n');
      file.blobs[`sha256:${createHash('sha256').update(extra).digest('hex')}`] = extra.toString('base64');
      expectRejected(exec(world, JSON.stringify(file)), 'CAPSULE_BLOB_UNREFERENCED');
    });

    it('still accepts two inputs with the same bytes, which share one blob', () => {
      const file = world.capsule({}, { 'a.txt': 'same\n', 'b.txt': 'same\n' });
      expect(Object.keys(file.blobs)).toHaveLength(1);
      const result = exec(world, JSON.stringify(file));
      expect(result.stderr).not.toContain('CAPSULE_');
    });
  });

  describe('point 6: duplicate member names in a trust document', () => {
    const trustText = (body: string, envelopePatch?: (json: string) => string): string => {
      const json = JSON.stringify(signEnvelope(TRUST_PAYLOAD_TYPE, Buffer.from(body), [world.root]));
      return envelopePatch ? envelopePatch(json) : json;
    };

    it('attack 6: a trust envelope with two "payload" members is refused with TRUST_UNPARSEABLE by trust show, init and verify', () => {
      const weaker = { ...world.trustBody, policy: { allowedKinds: ['reproduce', 'validate', 'remediate'] } };
      const text = trustText(JSON.stringify(world.trustBody), (json) => duplicate(json, 'payload', JSON.stringify(b64(JSON.stringify(weaker)))));
      const path = join(world.dir, 'dup-payload.trust.json');
      writeFileSync(path, text);
      const show = runCli(['trust', 'show', path]);
      expect(show.stderr).toContain('TRUST_UNPARSEABLE:');
      expect(show.status).toBe(1);
      const init = runCli(['init', '--state', join(world.dir, 'init-dup'), '--id', 'runner-dup', '--trust', path]);
      expect(init.stderr).toContain('TRUST_UNPARSEABLE');
      expect(init.status).not.toBe(0);
    });

    it('attack 6: a trust document with two "roles" members, or a key with two "roles" (nested), is refused with TRUST_UNPARSEABLE', () => {
      const top = duplicate(JSON.stringify(world.trustBody), 'roles', JSON.stringify({ ...world.trustBody.roles, root: { threshold: 1 } }));
      const nested = duplicate(JSON.stringify(world.trustBody), 'roles', '["root","capsule-signer"]');
      for (const body of [top, nested]) {
        const path = join(world.dir, `dup-${randomBytes(4).toString('hex')}.trust.json`);
        writeFileSync(path, trustText(body));
        const show = runCli(['trust', 'show', path]);
        expect(show.stderr).toContain('TRUST_UNPARSEABLE:');
        expect(show.status).toBe(1);
      }
    });
  });

  describe('point 6: duplicate member names in runner.json', () => {
    it('attack 6: a runner.json with two "labels" members is refused with STATE_CORRUPT', () => {
      const other = makeWorld();
      try {
        const config = join(other.stateDir, 'runner.json');
        writeFileSync(config, duplicate(readFileSync(config, 'utf8'), 'labels', '["elsewhere"]'));
        const result = exec(other, JSON.stringify(other.capsule()));
        expect(result.stderr).toContain('STATE_CORRUPT:');
        expect(result.status).toBe(2);
      } finally {
        other.cleanup();
      }
    });
  });

  describe('point 6: duplicate member names in a log export (the byte-exact form already refuses them)', () => {
    it('attack 6: a log export whose header or a leaf repeats a member fails log verify (LOG_EXPORT_INVALID, LOG_LEAF_INVALID)', () => {
      // A rejected capsule leaves a capsule.rejected record: the log has leaves without any step running.
      exec(world, '{"not":"a capsule"}');
      const out = join(world.dir, 'log.jsonl');
      expect(runCli(['log', 'export', '--state', world.stateDir, '--out', out]).status).toBe(0);
      const lines = readFileSync(out, 'utf8').split('\n');
      const header = [duplicate(lines[0]!, 'size', '0'), ...lines.slice(1)].join('\n');
      const headerPath = join(world.dir, 'dup-header.jsonl');
      writeFileSync(headerPath, header);
      const first = runCli(['log', 'verify', headerPath, '--trust', world.trustPath]);
      expect(first.stdout).toContain('LOG_EXPORT_INVALID');
      expect(first.status).toBe(1);

      const leaf = Buffer.from((JSON.parse(lines[1]!) as { leaf: string }).leaf, 'base64').toString('utf8');
      const twice = duplicate(leaf, 'kind', '"run.started"');
      const leafPath = join(world.dir, 'dup-leaf.jsonl');
      writeFileSync(leafPath, [lines[0], `{"index":0,"leaf":"${b64(twice)}"}`, ...lines.slice(2)].join('\n'));
      const second = runCli(['log', 'verify', leafPath, '--trust', world.trustPath]);
      expect(second.stdout).toContain('LOG_LEAF_INVALID');
      expect(second.status).toBe(1);
    });
  });

  describe('with a good bundle', () => {
    let bundle: Bundle;
    let bundleText: string;

    beforeAll(async () => {
      const outcome = await execInState(world.stateDir, Buffer.from(JSON.stringify(world.capsule())));
      if (outcome.kind !== 'completed') throw new Error(`setup run was ${outcome.kind}`);
      bundle = outcome.bundle;
      bundleText = JSON.stringify(bundle);
    });

    const verify = (text: string, json = false): CliResult => {
      const path = join(world.dir, `b-${randomBytes(4).toString('hex')}.bundle.json`);
      writeFileSync(path, text);
      return runCli(['verify', path, '--trust', world.trustPath, ...(json ? ['--json'] : [])]);
    };
    const expectFailed = (result: CliResult, code: string) => {
      expect(result.stdout).toContain(`FAIL  `);
      expect(result.stdout).toContain(`${code}:`);
      expect(result.status).toBe(1);
    };

    it('verifies as it is (positive control)', () => {
      // As the runner writes it (formatBundle): verify accepts that one spelling only (review F2, below).
      const result = verify(formatBundle(bundle));
      expect(result.stdout).toMatch(/^OK {4}/);
      expect(result.status).toBe(0);
    });

    describe('review F2: a bundle re-spelt to carry bytes of its own (same values, other bytes)', () => {
      const canonical = () => formatBundle(bundle);
      it('trailing whitespace (2 bits a byte in space, tab, CR, LF) fails with BUNDLE_NOT_CANONICAL', () => {
        expectFailed(verify(`${canonical()}${' \t\r\n'.repeat(4096)}`), 'BUNDLE_NOT_CANONICAL');
      });
      it('an escape in a base64 payload (\\u0065 for e) or in mediaType (\\u0069 for i) fails with BUNDLE_NOT_CANONICAL', () => {
        const text = canonical();
        const payload = bundle.evidence.payload;
        expect(payload.startsWith('e')).toBe(true); // base64 of '{"'
        expectFailed(verify(text.replace(`"${payload}"`, `"\\u0065${payload.slice(1)}"`)), 'BUNDLE_NOT_CANONICAL');
        expectFailed(verify(text.replace('"mediaType": "application', '"mediaType": "appl\\u0069cation')), 'BUNDLE_NOT_CANONICAL');
      });
      it('the same members in another order, or compact JSON, fails with BUNDLE_NOT_CANONICAL', () => {
        const reversed = Object.fromEntries(Object.entries(bundle).reverse());
        expectFailed(verify(`${JSON.stringify(reversed, null, 2)}\n`), 'BUNDLE_NOT_CANONICAL');
        expectFailed(verify(JSON.stringify(bundle)), 'BUNDLE_NOT_CANONICAL');
      });
      it('a number spelt another way ("index": N.0e0) fails with BUNDLE_NOT_CANONICAL', () => {
        const text = canonical();
        const index = `"index": ${bundle.log!.index},`;
        expect(text).toContain(index);
        expectFailed(verify(text.replace(index, `"index": ${bundle.log!.index}.000000e0,`)), 'BUNDLE_NOT_CANONICAL');
      });
      it("spare bits set in the checkpoint signature's base64 fail (LOG_NOTE_MALFORMED)", () => {
        const note = bundle.log!.checkpoint;
        const line = note.split('\n').find((l) => l.startsWith('\u2014 '))!;
        const b64 = line.slice(line.lastIndexOf(' ') + 1);
        expect(b64.endsWith('=')).toBe(true); // 68 bytes: two spare bits before the padding
        const last = b64.replace(/=+$/, '').slice(-1);
        const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
        const flipped = alphabet[alphabet.indexOf(last) ^ 1]!;
        const forged = b64.replace(/.(=+)$/, `${flipped}$1`);
        expect(Buffer.from(forged, 'base64').equals(Buffer.from(b64, 'base64'))).toBe(true); // same bytes
        const tampered: Bundle = { ...bundle, log: { ...bundle.log!, checkpoint: note.replace(b64, forged) } };
        expectFailed(verify(formatBundle(tampered)), 'LOG_NOTE_MALFORMED');
      });
    });

    describe('point 6: duplicate member names in a bundle', () => {
      it('attack 6: a bundle with two "evidence" members is refused with BUNDLE_UNPARSEABLE', () => {
        const forged = { ...bundle.evidence, payload: b64('{"forged":true}') };
        expectFailed(verify(duplicate(bundleText, 'evidence', JSON.stringify(forged))), 'BUNDLE_UNPARSEABLE');
      });

      it('attack 6: a bundle whose log member has two "checkpoint" members (nested) is refused with BUNDLE_UNPARSEABLE', () => {
        expectFailed(verify(duplicate(bundleText, 'checkpoint', JSON.stringify('forged note'))), 'BUNDLE_UNPARSEABLE');
      });

      it('attack 6: an evidence statement with two "verdict" members is refused with BUNDLE_STATEMENT_SCHEMA', () => {
        const statement = duplicate(Buffer.from(bundle.evidence.payload, 'base64').toString('utf8'), 'verdict', '"fail"');
        const evidence = signEnvelope(IN_TOTO_PAYLOAD_TYPE, Buffer.from(statement), [world.runnerKey]);
        expectFailed(verify(JSON.stringify({ ...bundle, evidence })), 'BUNDLE_STATEMENT_SCHEMA');
      });
    });

    describe('point 7: a bundle that smuggles data', () => {
      it('attack 7: a good bundle with a 3.8 MB base64 blob in approvals fails verify with BUNDLE_SCHEMA', () => {
        const blob: Envelope = {
          payloadType: IN_TOTO_PAYLOAD_TYPE,
          payload: randomBytes(2_860_000).toString('base64'),
          signatures: [{ keyid: world.runnerKey.keyid, sig: randomBytes(64).toString('base64') }],
        };
        expect(blob.payload.length).toBeGreaterThan(3_800_000);
        const result = verify(JSON.stringify({ ...bundle, approvals: [blob] }));
        expectFailed(result, 'BUNDLE_SCHEMA');
        expect(result.stdout).toContain('/approvals');
      });

      it('attack 7: an extra evidence signature whose keyid is 27 KB of digits fails verify with BUNDLE_SCHEMA', () => {
        const accounts = Array.from({ length: 1700 }, () => String(1e15 + Math.floor(Math.random() * 9e15))).join('');
        expect(accounts.length).toBeGreaterThan(27_000);
        const evidence = {
          ...bundle.evidence,
          signatures: [...bundle.evidence.signatures, { keyid: accounts, sig: randomBytes(64).toString('base64') }],
        };
        expectFailed(verify(JSON.stringify({ ...bundle, evidence })), 'BUNDLE_SCHEMA');
      });

      it('attack 7: an extra capsule signature that does not verify fails verify with BUNDLE_SIGNATURE_UNVERIFIED', () => {
        const capsule = {
          ...bundle.capsule,
          signatures: [...bundle.capsule.signatures, { keyid: world.outsider.keyid, sig: randomBytes(64).toString('base64') }],
        };
        expectFailed(verify(JSON.stringify({ ...bundle, capsule })), 'BUNDLE_SIGNATURE_UNVERIFIED');
      });
    });

    describe('point 8: control characters from untrusted input', () => {
      it('attack 8: a bundle member name holding \\r, an ANSI erase and a fake OK line is printed escaped by verify', () => {
        const text = `${bundleText.slice(0, -1)},${JSON.stringify(FORGED_LINE)}:1}`;
        const human = verify(text);
        expectFailed(human, 'BUNDLE_UNPARSEABLE');
        expect(human.stdout).not.toMatch(RAW_CONTROL);
        expect(human.stderr).not.toMatch(RAW_CONTROL);
        expect(human.stdout.split('\n').filter(Boolean)).toHaveLength(1);
        expect(human.stdout).toContain('\\u000d\\u001b[2KOK');
        const json = verify(text, true);
        expect(json.status).toBe(1);
        expect(json.stdout).not.toMatch(RAW_CONTROL);
      });
    });
  });

  describe('point 8: control characters from a capsule', () => {
    it('attack 8: a capsule file member name holding \\r, an ANSI erase and a fake OK line is printed escaped by exec', () => {
      const file = JSON.stringify(world.capsule());
      const result = exec(world, `${file.slice(0, -1)},${JSON.stringify(FORGED_LINE)}:1}`);
      expectRejected(result, 'CAPSULE_UNPARSEABLE');
      expect(result.stderr).not.toMatch(RAW_CONTROL);
      expect(result.stdout).not.toMatch(RAW_CONTROL);
    });

    it('attack 8: the unsigned payloadType of a rejected capsule never reaches the ops log', () => {
      const file = world.capsule();
      const marker = `application/evil-${randomBytes(6).toString('hex')}\r\x1b[2K`;
      const forged = { ...file, envelope: { ...file.envelope, payloadType: marker } };
      const result = exec(world, JSON.stringify(forged), { PATH: '/usr/bin:/bin', EDGE_RUNNER_LOG_LEVEL: 'warn' });
      expectRejected(result, 'CAPSULE_PAYLOAD_TYPE');
      const opsLines = result.stderr.split('\n').filter((line) => line.startsWith('{'));
      expect(opsLines.some((line) => line.includes('"capsule rejected"'))).toBe(true);
      expect(result.stderr).not.toContain('evil-');
      expect(result.stderr).not.toMatch(RAW_CONTROL);
    });
  });

  describe('point 9: JUnit that hides its failures', () => {
    const failing = '<testcase name="hidden"><failure message="boom"/></testcase>';
    const nest = (levels: number) => `${'<testsuite>'.repeat(levels)}${failing}${'</testsuite>'.repeat(levels)}`;

    it(`attack 9: a failing testcase nested inside more than ${JUNIT_MAX_DEPTH} testsuite levels is malformed`, () => {
      expect(parseJunit(Buffer.from(`<testsuites>${nest(70)}</testsuites>`))).toEqual({ format: 'junit', status: 'malformed' });
      // At the cap it is still counted: the root, 61 suites, the testcase and its failure make 64 levels.
      expect(parseJunit(Buffer.from(`<testsuites>${nest(JUNIT_MAX_DEPTH - 3)}</testsuites>`))).toMatchObject({
        status: 'parsed',
        tests: 1,
        failures: 1,
      });
      expect(parseJunit(Buffer.from(`<testsuites>${nest(JUNIT_MAX_DEPTH - 2)}</testsuites>`))).toEqual({ format: 'junit', status: 'malformed' });
    });

    it('attack 9: <testsuites> inside <testsuites> is counted, its failure included', () => {
      const report = `<testsuites><testsuite><testcase name="ok"/></testsuite><testsuites><testsuite>${failing}</testsuite></testsuites></testsuites>`;
      expect(parseJunit(Buffer.from(report))).toEqual({ format: 'junit', status: 'parsed', tests: 2, failures: 1, errors: 0, skipped: 0 });
    });

    it.each([
      ['a namespaced testcase', `<testsuites xmlns:x="urn:x"><testsuite><x:testcase name="t"><failure/></x:testcase></testsuite></testsuites>`],
      ['a namespaced testsuite', `<testsuites xmlns:x="urn:x"><x:testsuite>${failing}</x:testsuite></testsuites>`],
      ['a default namespace', `<testsuites><testsuite xmlns="urn:other">${failing}</testsuite></testsuites>`],
      ['an unknown element around a testcase', `<testsuites><testsuite><group>${failing}</group></testsuite></testsuites>`],
      ['a testcase inside a testcase', `<testsuite><testcase name="outer">${failing}</testcase></testsuite>`],
      ['a DOCTYPE', `<!DOCTYPE testsuite [<!ENTITY f "${failing.replaceAll('"', "'")}">]><testsuite>&f;</testsuite>`],
    ])('attack 9: %s is malformed', (_what, report) => {
      expect(parseJunit(Buffer.from(report))).toEqual({ format: 'junit', status: 'malformed' });
    });

    it('still refuses an unknown root (as before)', () => {
      expect(parseJunit(Buffer.from(`<results>${failing}</results>`))).toEqual({ format: 'junit', status: 'malformed' });
    });

    it('still counts a Surefire report with its xsi schema attributes', () => {
      const report = `<testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="https://maven.apache.org/surefire/maven-surefire-plugin/xsd/surefire-test-report.xsd" name="s"><properties><property name="a" value="b"/></properties><testcase name="t"><flakyFailure message="m"><stackTrace>x</stackTrace></flakyFailure><system-out>out</system-out></testcase>${failing}</testsuite>`;
      expect(parseJunit(Buffer.from(report))).toEqual({ format: 'junit', status: 'parsed', tests: 2, failures: 1, errors: 0, skipped: 0 });
    });

    it('attack 9: a validate capsule whose report hides a failing testcase in a namespace gets verdict error through exec', () => {
      const report = `<testsuites xmlns:x="urn:x"><testsuite name="s"><testcase name="ok"/><x:testcase name="hidden"><failure/></x:testcase></testsuite></testsuites>`;
      const file = world.capsule({ kind: 'validate', collect: [{ path: 'junit.xml', as: 'junit' }] }, { 'junit.xml': report });
      const result = runCli(['exec', world.writeCapsule(file), '--state', world.stateDir, '--json']);
      expect(result.status, result.stderr).toBe(1);
      expect(JSON.parse(result.stdout)).toMatchObject({ status: 'completed', verdict: 'error' });
    });
  });
});
