import { strict as assert } from 'node:assert';
import { IPVS_SCHEDULERS, parseKubeProxyConfig } from '../../../src/config/kube-proxy-config.js';
import { optionsFromArgs } from '../../../src/config/options.js';

/**
 * One scheduler list (issue 15): the flag and the configuration file accept and refuse the same
 * schedulers, every one the kernel ships (the IPVS mode runs all of them, test/ipvs/ipvs-schedulers).
 * Before, the file checked kube-proxy's eleven and the IPVS mode kept the kernel's fourteen.
 */
const HEAD = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

describe('IPVS schedulers: one list for the flag and the configuration file', () => {
  it('the kernel schedulers: fo, ovf and twos too', () => {
    for (const s of ['rr', 'mh', 'fo', 'ovf', 'twos']) assert.ok(IPVS_SCHEDULERS.includes(s as never), s);
  });

  for (const scheduler of IPVS_SCHEDULERS) {
    it(`${scheduler}: accepted by --ipvs-scheduler and by ipvs.scheduler`, () => {
      assert.equal(optionsFromArgs([`--ipvs-scheduler=${scheduler}`]).ipvs.scheduler, scheduler);
      const file = parseKubeProxyConfig(`${HEAD}ipvs:\n  scheduler: ${scheduler}\n`, 'test.yaml');
      assert.equal(file.config.ipvs.scheduler, scheduler);
    });
  }

  it('an unknown scheduler is refused by both, with the same list', () => {
    const fromFlag = (): unknown => optionsFromArgs(['--ipvs-scheduler=fastest']);
    const fromFile = (): unknown => parseKubeProxyConfig(`${HEAD}ipvs:\n  scheduler: fastest\n`, 'test.yaml');
    const list = new RegExp(`must be one of ${IPVS_SCHEDULERS.join(', ')}`);
    assert.throws(fromFlag, list);
    assert.throws(fromFile, list);
  });
});
