import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { requireRoot } from '../support/sandbox.js';

/**
 * CI cannot turn green by skipping: the reporter (test/support/reporter.cjs) fails a skip nobody asked
 * for and says why in the closing line, `.only` fails the run, a suite below its floor fails, and the
 * Docker suite fails with the reason when no engine can be had (scripts/test-docker.sh, via test.sh).
 */

const ROOT = packageRoot();
const MOCHA = join(ROOT, 'node_modules/mocha/bin/mocha.js');
const REPORTER = join(ROOT, 'test/support/reporter.cjs');

/** The closing line: the last non-empty line of the output. */
const closing = (out: string): string => out.trim().split('\n').pop() ?? '';

describe('CI gates: no silent skip, no .only, no shrinking suite', function () {
  this.timeout(60_000);
  let dir = '';

  before(async () => {
    // Under .../test/integration/: the reporter tells a test's suite by its path, as for the real ones.
    dir = join(await mkdtemp(join(tmpdir(), 'svcp-gates-')), 'test', 'integration');
    await mkdir(dir, { recursive: true });
    // Plain CommonJS specs: no tsx needed, so each mocha run takes well under a second.
    await writeFile(
      join(dir, 'bare-skip.cjs'),
      "describe('s', function () { it('skips', function () { this.skip(); }); it('passes', () => {}); });\n",
    );
    await writeFile(
      join(dir, 'reason-skip.cjs'),
      [
        "const R = Symbol.for('svcplane.skipReasons');",
        "describe('needs a kernel feature', function () {",
        // What test/support/skip.ts's skipBecause does in a before hook.
        "  before(function () { (globalThis[R] ??= new WeakMap()).set(this.test.parent, 'no such feature here'); this.skip(); });",
        "  it('one', () => {}); it('two', () => {});",
        '});',
        '',
      ].join('\n'),
    );
    await writeFile(join(dir, 'pending.cjs'), "describe('s', () => { it('has no body'); });\n");
    await writeFile(
      join(dir, 'only.cjs'),
      "describe('s', () => { it.only('a', () => {}); it('b', () => {}); });\n",
    );
    await writeFile(
      join(dir, 'two.cjs'),
      "describe('s', () => { it('a', () => {}); it('b', () => {}); });\n",
    );
  });

  after(async () => {
    if (dir) await rm(join(dir, '..', '..'), { recursive: true, force: true });
  });

  /** Runs mocha on one fixture the way test-ipvs.sh does (no config file; our reporter). */
  async function mocha(file: string, env: Record<string, string> = {}, extra: string[] = []) {
    const summary = join(dir, `summary-${Math.random().toString(36).slice(2)}`);
    const r = await run(
      [
        process.execPath,
        MOCHA,
        '--no-config',
        '--forbid-only',
        '--reporter',
        REPORTER,
        ...extra,
        join(dir, file),
      ],
      {
        allowFailure: true,
        env: { SVCPLANE_SKIP: '', SVCPLANE_SUITE: '', SVCPLANE_SUMMARY_FILE: summary, ...env },
      },
    );
    const lines = (await readFile(summary, 'utf8').catch(() => '')).trim().split('\n');
    return { code: r.exitCode, out: r.stdout + r.stderr, last: closing(r.stdout), summary: lines };
  }

  it('a bare skip fails the run, and the closing line says so', async () => {
    const r = await mocha('bare-skip.cjs');
    assert.notEqual(r.code, 0, r.out);
    assert.equal(
      r.last,
      '1 passed, 1 failed, 0 skipped; failed: unasked skip in integration: no reason given (a bare skip or a pending test in the source)',
    );
    assert.match(r.out, /skipped without being asked: .*SVCPLANE_SKIP=integration/);
    assert.deepEqual(r.summary, [
      '1 passed, 1 failed, 0 skipped',
      'failed: unasked skip in integration: no reason given (a bare skip or a pending test in the source)',
    ]);
  });

  it('a skip asked for by SVCPLANE_SKIP naming the suite passes, with the reason in the closing line', async () => {
    const r = await mocha('reason-skip.cjs', { SVCPLANE_SKIP: 'docker,integration' });
    assert.equal(r.code, 0, r.out);
    assert.equal(
      r.last,
      '0 passed, 0 failed, 2 skipped; skipped: integration: no such feature here [SVCPLANE_SKIP=docker,integration] (2 tests)',
    );
    // Naming another suite does not allow it.
    const other = await mocha('reason-skip.cjs', { SVCPLANE_SKIP: 'docker' });
    assert.notEqual(other.code, 0);
    assert.equal(
      other.last,
      '0 passed, 2 failed, 0 skipped; failed: unasked skip in integration: no such feature here (2 tests)',
    );
  });

  it('a pending test (it() without a body) fails like a skip', async () => {
    const r = await mocha('pending.cjs');
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.last, /^0 passed, 1 failed, 0 skipped; failed: unasked skip in integration: /);
  });

  it('.only fails the run (--forbid-only, also in .mocharc.cjs)', async () => {
    const r = await mocha('only.cjs');
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /`\.only` forbidden by --forbid-only/);
    const rc = (await readFile(join(ROOT, '.mocharc.cjs'), 'utf8')).toString();
    assert.match(rc, /'forbid-only': true/);
  });

  it('a suite that runs fewer tests than its floor fails, naming the floor', async () => {
    const floors = JSON.parse(await readFile(join(ROOT, 'test/floors.json'), 'utf8')) as Record<
      string,
      number
    >;
    for (const suite of ['unit', 'integration', 'ipvs', 'docker']) {
      assert.ok((floors[suite] ?? 0) > 2, `a floor for ${suite}`);
    }
    const r = await mocha('two.cjs', { SVCPLANE_SUITE: 'ipvs' });
    assert.notEqual(r.code, 0, r.out);
    assert.equal(
      r.last,
      `2 passed, 1 failed, 0 skipped; failed: ipvs: only 2 tests ran, the floor is ${floors.ipvs} (test/floors.json): a test file or suite went missing`,
    );
    // Outside test.sh (no SVCPLANE_SUITE) there is no floor: targeted runs stay possible.
    assert.equal((await mocha('two.cjs')).code, 0);
  });

  describe('the Docker engine made unavailable (test.sh, docker step only)', function () {
    before(function () {
      requireRoot(this);
    });

    /**
     * scripts/test.sh with every other step skipped on request, in a private mount namespace where
     * /run is empty (no engine socket, no pid file), dockerd is /bin/false and apt-get is /bin/false:
     * the engine can be neither found, nor started, nor installed. Nothing outside that namespace changes.
     */
    async function testShWithoutDocker(skip: string) {
      const script = [
        'set -e',
        'mount -t tmpfs tmpfs /run',
        'if [ -e /usr/sbin/dockerd ]; then mount --bind /bin/false /usr/sbin/dockerd; fi',
        'mount --bind /bin/false /usr/bin/apt-get',
        'unset DOCKER_HOST',
        'exec bash scripts/test.sh',
      ].join('\n');
      const r = await run(['unshare', '--mount', '--propagation', 'private', 'bash', '-c', script], {
        allowFailure: true,
        timeoutMs: 120_000,
        env: { SVCPLANE_SKIP: skip, SVCPLANE_SUITE: '', SVCPLANE_SUMMARY_FILE: '' },
      });
      return { code: r.exitCode, out: r.stdout + r.stderr, last: closing(r.stdout) };
    }

    it('is red, and the closing line gives the reason', async () => {
      const r = await testShWithoutDocker('typecheck,lint,format,unit,integration,ipvs');
      assert.equal(r.code, 1, r.out);
      assert.match(
        r.last,
        /^0 passed, 1 failed, 6 skipped; skipped: typecheck \(asked by SVCPLANE_SKIP=\S+\); .*skipped: ipvs \(asked by SVCPLANE_SKIP=\S+\); failed: docker: engine unavailable: (dockerd exited at start|apt-get update failed)/,
        r.out,
      );
      assert.match(r.out, /FAILED: docker tests: /);
    });

    it('is skipped only when SVCPLANE_SKIP names it, and then nothing is started', async () => {
      const r = await testShWithoutDocker('typecheck,lint,format,unit,integration,ipvs,docker');
      assert.equal(r.code, 0, r.out);
      assert.match(
        r.last,
        /^0 passed, 0 failed, 7 skipped; .*skipped: docker \(asked by SVCPLANE_SKIP=\S+\)$/,
      );
      assert.doesNotMatch(r.out, /docker-setup:/);
    });
  });
});
