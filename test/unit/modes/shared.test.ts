import assert from 'node:assert/strict';
import { resolveProxyOptions } from '../../../src/config/options.js';
import { iptablesProxierConfig } from '../../../src/iptables/mode.js';
import { localDetectorFor } from '../../../src/iptables/proxier.js';
import { ipvsConfigFor } from '../../../src/ipvs/backend-factory.js';
import { ipvsRulesConfig } from '../../../src/ipvs/proxier.js';
import type { LocalDetector } from '../../../src/modes/local-traffic.js';
import { nodePortAddresses } from '../../../src/modes/node-ports.js';
import type { IPFamily } from '../../../src/model/types.js';

/** Concepts every mode shares, implemented once (src/modes/local-traffic.ts, node-ports.ts). */

/** The IPVS rules' not-local match that a detector means. */
function ipvsMatchOf(d: LocalDetector): readonly string[] | undefined {
  switch (d.mode) {
    case 'ClusterCIDR':
      return ['!', '-s', d.cidr];
    case 'BridgeInterface':
      return ['!', '-i', d.name];
    case 'InterfaceNamePrefix':
      return ['!', '-i', `${d.prefix}+`];
    default:
      return undefined;
  }
}

describe('shared by every mode', () => {
  const cases: Record<string, Record<string, unknown>> = {
    ClusterCIDR: { detectLocalMode: 'ClusterCIDR', clusterCidr: ['10.244.0.0/16', 'fd00:10:244::/64'] },
    'ClusterCIDR of the other family only': { detectLocalMode: 'ClusterCIDR', clusterCidr: ['fd00::/64'] },
    NodeCIDR: { detectLocalMode: 'NodeCIDR' },
    BridgeInterface: { detectLocalMode: 'BridgeInterface', podBridgeInterface: 'cbr0' },
    InterfaceNamePrefix: { detectLocalMode: 'InterfaceNamePrefix', podInterfaceNamePrefix: 'veth' },
  };
  for (const [name, raw] of Object.entries(cases)) {
    for (const family of ['IPv4', 'IPv6'] as IPFamily[]) {
      it(`--detect-local-mode ${name} (${family}): iptables and IPVS get the same detector`, () => {
        const opts = {
          ...resolveProxyOptions({ hostnameOverride: 'n', ...raw }),
          nodePodCIDRs: ['10.244.7.0/24'],
        };
        const detector = localDetectorFor(iptablesProxierConfig(opts, family));
        const ipvs = ipvsRulesConfig(ipvsConfigFor({ ...opts, proxyMode: 'ipvs' }, family), true).notLocal;
        assert.deepEqual(ipvs, ipvsMatchOf(detector));
      });
    }
  }

  it('a detector without its input is the same error in both modes', () => {
    const opts = resolveProxyOptions({ hostnameOverride: 'n', detectLocalMode: 'NodeCIDR' });
    const message = /NodeCIDR: the Node's pod CIDRs were not resolved/;
    assert.throws(() => localDetectorFor(iptablesProxierConfig(opts, 'IPv4')), message);
    assert.throws(() => ipvsConfigFor({ ...opts, proxyMode: 'ipvs' }, 'IPv4'), message);
  });

  it('--nodeport-addresses: all, primary, or the CIDRs of the family', () => {
    assert.deepEqual(nodePortAddresses([], 'IPv4'), { kind: 'all' });
    assert.deepEqual(nodePortAddresses(['0.0.0.0/0'], 'IPv4'), { kind: 'all' });
    assert.deepEqual(nodePortAddresses(['fd00::/64'], 'IPv4'), { kind: 'all' });
    assert.deepEqual(nodePortAddresses(['primary'], 'IPv6'), { kind: 'primary' });
    assert.deepEqual(nodePortAddresses(['10.0.0.0/8', 'fd00::/64'], 'IPv4'), {
      kind: 'cidrs',
      cidrs: ['10.0.0.0/8'],
    });
  });
});
