import assert from 'node:assert/strict';
import { cp, mkdtemp, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { requireRoot } from '../support/sandbox.js';

/**
 * The suites run from a checkout anywhere a user or a CI runner may put it, /tmp and /var/tmp included.
 * User-mode Linux is where this broke: its init mounted a tmpfs over /var/tmp and hid a checkout there
 * ("uml-init: FATAL: cd /var/tmp/…", no IPVS test ran). Each case copies this checkout (sources and
 * the built dist/; node_modules linked, as npm ci would fill it with the same files) and runs from the
 * copy: a unit test on the host, and an IPVS test inside User-mode Linux through scripts/test-ipvs.sh.
 */

const ROOT = packageRoot();
/** The outer run's summary, suite and skip settings must not leak into the runs inside the copy. */
const CLEAN_ENV = {
  SVCPLANE_SUMMARY_FILE: '',
  SVCPLANE_SUITE: '',
  SVCPLANE_SKIP: '',
  SVCPLANE_SKIP_BUILD: '1',
};

describe('the suites run from a checkout under /tmp and /var/tmp', function () {
  this.timeout(300_000);
  before(function () {
    requireRoot(this);
  });

  for (const base of ['/tmp', '/var/tmp']) {
    it(`from ${base}: a unit test on the host and an IPVS test in User-mode Linux pass`, async () => {
      const copy = await mkdtemp(join(base, 'svcplane-checkout-'));
      try {
        await cp(ROOT, copy, {
          recursive: true,
          filter: (src) =>
            !/^\/(node_modules|\.git|bench\/results)(\/|$)/.test(src.slice(ROOT.replace(/\/$/, '').length)),
        });
        await symlink(join(ROOT, 'node_modules'), join(copy, 'node_modules'));

        const unit = await run(['env', '-C', copy, 'npx', 'mocha', 'test/unit/model/build.test.ts'], {
          allowFailure: true,
          env: CLEAN_ENV,
        });
        assert.equal(unit.exitCode, 0, unit.stdout + unit.stderr);
        assert.match(unit.stdout, /^\d+ passed, 0 failed, 0 skipped$/m);

        const ipvs = await run(['env', '-C', copy, 'bash', 'scripts/test-ipvs.sh', '--grep', 'has IPVS'], {
          allowFailure: true,
          timeoutMs: 240_000,
          env: { ...CLEAN_ENV, SVCPLANE_IPVS_TIMEOUT: '180' },
        });
        assert.equal(ipvs.exitCode, 0, ipvs.stdout + ipvs.stderr);
        assert.match(ipvs.stdout, /^1 passed, 0 failed, 0 skipped$/m);
      } finally {
        await rm(copy, { recursive: true, force: true });
      }
    });
  }
});
