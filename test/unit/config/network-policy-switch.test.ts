import assert from 'node:assert/strict';
import {
  ConfigError,
  defaultProxyConfig,
  formatKubeProxyConfig,
  parseKubeProxyConfig,
} from '../../../src/config/kube-proxy-config.js';
import { optionsFromArgs } from '../../../src/config/options.js';
import { createApiSource } from '../../../src/kube/api-source-factory.js';
import { FakeApiServer } from '../../support/fake-apiserver.js';

/**
 * The NetworkPolicy switch: --network-policy and the config field networkPolicy, off by default.
 * Asked for, it is accepted (the enforcer: src/netpol/enforcer.ts, test/integration/netpol-*.test.ts);
 * the resolved option reaches the API source, which then watches what enforcement reads.
 */

const FILE = (extra: string): string => `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
${extra}
`;

describe('--network-policy / networkPolicy (svcplane extension)', () => {
  it('is off by default, and the default configuration file does not carry it', () => {
    assert.equal(optionsFromArgs(['--hostname-override=node-1']).networkPolicy, false);
    assert.equal(parseKubeProxyConfig(FILE('mode: iptables')).config.networkPolicy, false);
    assert.doesNotMatch(formatKubeProxyConfig(defaultProxyConfig()), /networkPolicy/);
  });

  it('asked for on the command line or in the file: on; =false and false: off', () => {
    assert.equal(optionsFromArgs(['--hostname-override=node-1', '--network-policy']).networkPolicy, true);
    assert.equal(parseKubeProxyConfig(FILE('networkPolicy: true'), 'config.yaml').config.networkPolicy, true);
    assert.equal(
      optionsFromArgs(['--hostname-override=node-1', '--network-policy=false']).networkPolicy,
      false,
    );
    assert.equal(parseKubeProxyConfig(FILE('networkPolicy: false')).config.networkPolicy, false);
  });

  it('a value of the wrong type in the file is a problem naming the field', () => {
    assert.throws(
      () => parseKubeProxyConfig(FILE('networkPolicy: "yes"'), 'config.yaml'),
      (err: unknown) => err instanceof ConfigError && err.problems.some((p) => p.field === 'networkPolicy'),
    );
  });

  it('is written to the file only when on (kube-proxy reads the default file strictly)', () => {
    assert.match(
      formatKubeProxyConfig({ ...defaultProxyConfig(), networkPolicy: true }),
      /^networkPolicy: true$/m,
    );
  });

  it('on, the API source also lists NetworkPolicies, Pods and Namespaces; off, it does not', async () => {
    const api = await FakeApiServer.create();
    try {
      api.create('Node', { metadata: { name: 'node-1' } });
      for (const networkPolicy of [false, true]) {
        const before = api.requests('Pod');
        const opts = {
          ...optionsFromArgs([`--master=${api.url}`, '--hostname-override=node-1']),
          networkPolicy,
        };
        const source = await createApiSource(opts, { env: {} });
        try {
          await source.start();
          assert.equal(api.requests('Pod') > before, networkPolicy, `networkPolicy=${networkPolicy}`);
          assert.equal(source.current()?.pods?.size, 0);
        } finally {
          await source.stop();
        }
      }
      assert.ok(api.requests('NetworkPolicy') > 0 && api.requests('Namespace') > 0);
    } finally {
      await api.stop();
    }
  });
});
