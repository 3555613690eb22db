import assert from 'node:assert/strict';
import { ipvsConfigFor } from '../../../src/ipvs/backend-factory.js';
import { ipvsRulesConfig } from '../../../src/ipvs/proxier.js';
import { resolveProxyOptions, type ProxyOptions } from '../../../src/config/options.js';

/** --detect-local-mode in IPVS mode: kube-proxy's four detectors, as the KUBE-SERVICES masquerade match. */
function notLocal(opts: ProxyOptions, family: 'IPv4' | 'IPv6' = 'IPv4'): readonly string[] | undefined {
  return ipvsRulesConfig(ipvsConfigFor(opts, family), true).notLocal;
}

const base = { proxyMode: 'ipvs', hostnameOverride: 'node-1' };

describe('IPVS mode local-traffic detection', () => {
  it('ClusterCIDR: ! -s the cluster CIDR of the family', () => {
    const opts = resolveProxyOptions({ ...base, clusterCidr: ['10.244.0.0/16', 'fd00:10:244::/64'] });
    assert.deepEqual(notLocal(opts), ['!', '-s', '10.244.0.0/16']);
    assert.deepEqual(notLocal(opts, 'IPv6'), ['!', '-s', 'fd00:10:244::/64']);
  });

  it("NodeCIDR: ! -s the Node's pod CIDR; a family without one has no detector", () => {
    const opts = {
      ...resolveProxyOptions({ ...base, detectLocalMode: 'NodeCIDR' }),
      nodePodCIDRs: ['10.244.3.0/24'],
    };
    assert.deepEqual(notLocal(opts), ['!', '-s', '10.244.3.0/24']);
    assert.equal(notLocal(opts, 'IPv6'), undefined);
  });

  it('BridgeInterface and InterfaceNamePrefix: ! -i the bridge, ! -i prefix+', () => {
    const bridge = resolveProxyOptions({
      ...base,
      detectLocalMode: 'BridgeInterface',
      podBridgeInterface: 'cbr0',
    });
    assert.deepEqual(notLocal(bridge), ['!', '-i', 'cbr0']);
    const prefix = resolveProxyOptions({
      ...base,
      detectLocalMode: 'InterfaceNamePrefix',
      podInterfaceNamePrefix: 'veth',
    });
    assert.deepEqual(notLocal(prefix), ['!', '-i', 'veth+']);
  });
});
