import assert from 'node:assert/strict';
import { Command } from 'commander';
import { parseBool, parseDuration, parseList } from '../../../src/cli/flags.js';
import { addProxyOptions, iptablesBinaries, resolveProxyOptions } from '../../../src/cli/proxy-options.js';
import { iptablesProxierConfig } from '../../../src/cli/proxy.js';

function parse(args: string[]): ReturnType<typeof resolveProxyOptions> {
  const cmd = addProxyOptions(new Command('sync').exitOverride());
  cmd.parse(args, { from: 'user' });
  return resolveProxyOptions(cmd.opts());
}

describe('kube-proxy style flags', () => {
  it('parses Go durations', () => {
    assert.equal(parseDuration('1s'), 1000);
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('0s'), 0);
    assert.equal(parseDuration('1m30s'), 90_000);
    assert.equal(parseDuration('1.5h'), 5_400_000);
    assert.throws(() => parseDuration('10'), /invalid duration/);
    assert.throws(() => parseDuration('1x'), /invalid duration/);
    assert.throws(() => parseDuration('-1s'), /negative/);
  });

  it('parses booleans and lists', () => {
    assert.equal(parseBool(undefined), true);
    assert.equal(parseBool('false'), false);
    assert.equal(parseBool('True'), true);
    assert.throws(() => parseBool('yes'), /invalid boolean/);
    assert.deepEqual(parseList('a, b,,c'), ['a', 'b', 'c']);
  });

  it('accepts --flag=value and --flag value, bare and explicit booleans', () => {
    const o = parse([
      '--manifests=examples',
      '--hostname-override',
      'Node-1',
      '--masquerade-all',
      '--iptables-localhost-nodeports=false',
      '--iptables-min-sync-period=500ms',
      '--iptables-sync-period',
      '1m',
      '--cluster-cidr=10.244.0.0/16,fd00:10:244::/56',
      '--nodeport-addresses=192.0.2.0/24',
    ]);
    assert.equal(o.manifests, 'examples');
    assert.equal(o.hostnameOverride, 'node-1');
    assert.equal(o.masqueradeAll, true);
    assert.equal(o.localhostNodePorts, false);
    assert.equal(o.minSyncPeriodMs, 500);
    assert.equal(o.syncPeriodMs, 60_000);
    assert.deepEqual(o.clusterCIDRs, ['10.244.0.0/16', 'fd00:10:244::/56']);
    assert.equal(o.detectLocalMode, 'ClusterCIDR', 'a cluster CIDR implies ClusterCIDR detection');
    assert.deepEqual(o.nodePortAddresses, ['192.0.2.0/24']);
  });

  it('uses kube-proxy defaults', () => {
    const o = parse([]);
    assert.equal(o.proxyMode, 'iptables');
    assert.equal(o.masqueradeBit, 14);
    assert.equal(o.minSyncPeriodMs, 1000);
    assert.equal(o.syncPeriodMs, 30_000);
    assert.equal(o.localhostNodePorts, true);
    assert.equal(o.masqueradeAll, false);
    assert.equal(o.detectLocalMode, '');
  });

  it('--iptables-full-sync-mode reaches the proxier (auto by default)', () => {
    assert.equal(iptablesProxierConfig(parse([]), 'IPv4').fullSyncMode, 'auto');
    assert.equal(
      iptablesProxierConfig(parse(['--iptables-full-sync-mode=noflush']), 'IPv6').fullSyncMode,
      'noflush',
    );
    for (const mode of ['chunked', 'whole-table'] as const)
      assert.equal(
        iptablesProxierConfig(parse([`--iptables-full-sync-mode=${mode}`]), 'IPv4').fullSyncMode,
        mode,
      );
    assert.throws(
      () => parse(['--iptables-full-sync-mode=fast']),
      /--iptables-full-sync-mode: "fast" is not auto, chunked, noflush or whole-table/,
    );
  });

  it('rejects invalid values with the flag name', () => {
    assert.throws(() => parse(['--cluster-cidr=10.0.0.0/33']), /--cluster-cidr/);
    assert.throws(() => parse(['--proxy-mode=userspace']), /--proxy-mode/);
    assert.throws(() => parse(['--bind-address=1.2.3']), /--bind-address/);
    assert.throws(() => parse(['--iptables-binary=rm -rf']), /--iptables-binary/);
    assert.throws(() => parse(['--iptables-masquerade-bit=32']));
  });

  it('rejects BridgeInterface / InterfaceNamePrefix without their interface flag (no silent fallback)', () => {
    assert.throws(
      () => parse(['--detect-local-mode=BridgeInterface']),
      /--detect-local-mode=BridgeInterface requires --pod-bridge-interface/,
    );
    assert.throws(
      () => parse(['--detect-local-mode=InterfaceNamePrefix', '--pod-bridge-interface=cbr0']),
      /--detect-local-mode=InterfaceNamePrefix requires --pod-interface-name-prefix/,
    );
    assert.throws(
      () => parse(['--detect-local-mode=BridgeInterface', '--pod-bridge-interface=-j ACCEPT']),
      /--pod-bridge-interface: "-j ACCEPT" is not an interface name/,
    );
    const bridge = parse(['--detect-local-mode=BridgeInterface', '--pod-bridge-interface=cbr0']);
    assert.deepEqual([bridge.detectLocalMode, bridge.bridgeInterface], ['BridgeInterface', 'cbr0']);
    const prefix = parse([
      '--detect-local-mode',
      'InterfaceNamePrefix',
      '--pod-interface-name-prefix',
      'veth',
    ]);
    assert.deepEqual([prefix.detectLocalMode, prefix.interfaceNamePrefix], ['InterfaceNamePrefix', 'veth']);
    assert.equal(parse(['--detect-local-mode=NodeCIDR']).detectLocalMode, 'NodeCIDR');
    assert.equal(parse(['--detect-local-mode=NodeCIDR']).nodePodCIDRs, undefined, 'resolved at startup');
  });

  it('derives the iptables binary names per family', () => {
    assert.deepEqual(iptablesBinaries('iptables', 'IPv6'), {
      iptables: 'ip6tables',
      restore: 'ip6tables-restore',
      save: 'ip6tables-save',
    });
    assert.deepEqual(iptablesBinaries('iptables-legacy', 'IPv4'), {
      iptables: 'iptables-legacy',
      restore: 'iptables-legacy-restore',
      save: 'iptables-legacy-save',
    });
    assert.equal(
      iptablesBinaries('/usr/sbin/iptables-nft', 'IPv6').restore,
      '/usr/sbin/ip6tables-nft-restore',
    );
  });
});
