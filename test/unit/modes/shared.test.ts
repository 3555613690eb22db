import assert from 'node:assert/strict';
import { resolveProxyOptions } from '../../../src/config/options.js';
import { iptablesProxierConfig } from '../../../src/iptables/mode.js';
import { localDetectorFor } from '../../../src/iptables/proxier.js';
import { ipvsConfigFor } from '../../../src/ipvs/backend-factory.js';
import { ipvsNodePortIPs, ipvsRulesConfig } from '../../../src/ipvs/proxier.js';
import type { InterfaceAddress } from '../../../src/kernel/netif.js';
import type { LocalDetector } from '../../../src/modes/local-traffic.js';
import { nodePortAddresses, primaryNodeIPs } from '../../../src/modes/node-ports.js';
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

  it('--nodeport-addresses=primary: the node IP in every mode (--bind-address, else the Node object, else the interfaces)', () => {
    const addr = (ifname: string, ip: string): InterfaceAddress => ({
      ifname,
      ifindex: 1,
      ip,
      family: ip.includes(':') ? 'IPv6' : 'IPv4',
      prefixLen: 24,
      scope: 'global',
      flags: [],
      linkFlags: ['UP', 'LOWER_UP'],
    });
    // The bridge comes first in `ip address` order: not the node IP.
    const addrs = [addr('cbr0', '10.244.0.1'), addr('ext0', '192.0.2.1'), addr('ext0', '192.0.2.11')];
    const node = { name: 'n', addresses: ['192.0.2.1', '2001:db8::1'], labels: {}, podCIDRs: [] };
    assert.deepEqual(primaryNodeIPs({ family: 'IPv4' }, node, addrs), ['192.0.2.1']);
    assert.deepEqual(primaryNodeIPs({ family: 'IPv4', bindAddress: '192.0.2.11' }, node, addrs), [
      '192.0.2.11',
    ]);
    assert.deepEqual(primaryNodeIPs({ family: 'IPv6', bindAddress: '192.0.2.11' }, node, addrs), [
      '2001:db8::1',
    ]);
    assert.deepEqual(primaryNodeIPs({ family: 'IPv4' }, undefined, addrs), [
      '10.244.0.1',
      '192.0.2.1',
      '192.0.2.11',
    ]);
    // IPVS binds its NodePort virtual servers there (it took the first interface address: cbr0's).
    const ipvs = { family: 'IPv4', nodePortAddresses: ['primary'] } as const;
    assert.deepEqual(ipvsNodePortIPs(ipvs, addrs, node), ['192.0.2.1']);
    assert.deepEqual(ipvsNodePortIPs({ ...ipvs, bindAddress: '192.0.2.11' }, addrs, node), ['192.0.2.11']);
  });
});
