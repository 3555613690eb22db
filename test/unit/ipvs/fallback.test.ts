import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { ipsetVersionProblem } from '../../../src/ipvs/backend-factory.js';
import { run } from '../../../src/util/exec.js';
import { requireRoot } from '../../support/sandbox.js';
import { skipBecause } from '../../support/skip.js';

/**
 * Issue 3: when IPVS is unavailable, `--proxy-mode ipvs` warns and runs iptables mode. This host kernel
 * has no IPVS, so the probe fails for real; `unshare -n` keeps even the read-only probes in a private
 * namespace.
 */
describe('--proxy-mode ipvs without IPVS in the kernel', function () {
  this.timeout(30_000);
  before(async function () {
    requireRoot(this);
    const probe = await run(['unshare', '-n', 'ipvsadm', '-Sn'], { allowFailure: true }).catch(
      () => undefined,
    );
    if (probe?.exitCode === 0) skipBecause(this, 'this kernel has IPVS: nothing to fall back from');
  });

  it('warns and falls back to iptables mode', async () => {
    const script = fileURLToPath(new URL('./fixtures/fallback-probe.ts', import.meta.url));
    const r = await run(['unshare', '-n', process.execPath, '--import=tsx', script], { allowFailure: true });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout.trim(), '["iptables/IPv4"]');
    assert.match(r.stdout + r.stderr, /IPVS proxy mode is unavailable .*falling back to iptables mode/);
  });
});

describe('IPVS availability: ipset version (kube-proxy needs >= 6.0)', () => {
  it('accepts 6.0 and newer', () => {
    assert.equal(ipsetVersionProblem('ipset v7.17, protocol version: 7\n'), undefined);
    assert.equal(ipsetVersionProblem('ipset v6.0, protocol version: 6'), undefined);
  });
  it('refuses older or unreadable versions with a reason', () => {
    assert.match(
      ipsetVersionProblem('ipset v5.4.1, protocol version: 5') ?? '',
      /5\.4 is too old \(need >= 6\.0\)/,
    );
    assert.match(ipsetVersionProblem('something else') ?? '', /cannot read the ipset version/);
  });
});
