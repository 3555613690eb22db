import assert from 'node:assert/strict';
import { FlagError, parseCommandLine } from '../../../src/config/command-line.js';
import { KUBE_PROXY_FLAGS, LOGGING_FLAGS, PROXY_FLAGS } from '../../../src/config/flags.js';
import { iptablesBinaries, optionsFromArgs, resolveConfiguration } from '../../../src/config/options.js';
import { iptablesProxierConfig } from '../../../src/iptables/mode.js';
import { nftablesProxierConfig } from '../../../src/nftables/mode.js';

/**
 * kube-proxy's command line (cmd/kube-proxy/app/options.go of 1.35, and component-base's logging
 * flags), written out here independently of src/config/flags.ts: each flag with a valid value in
 * kube-proxy's own form. On main before issue 13, 21 of them were unknown options.
 */
const KUBE_PROXY_1_35: readonly [string, string | undefined][] = [
  ['config', '/dev/null'],
  ['write-config-to', '/tmp/x.yaml'],
  ['cleanup', undefined],
  ['feature-gates', 'Foo=true,Bar=false'],
  ['kubeconfig', '/etc/kubernetes/proxy.conf'],
  ['master', 'https://10.0.0.1:6443'],
  ['kube-api-content-type', 'application/json'],
  ['kube-api-burst', '20'],
  ['kube-api-qps', '7.5'],
  ['hostname-override', 'Node-1'],
  ['bind-address', '192.0.2.1'],
  ['healthz-bind-address', '0.0.0.0:10256'],
  ['metrics-bind-address', '127.0.0.1:10249'],
  ['bind-address-hard-fail', undefined],
  ['profiling', undefined],
  ['show-hidden-metrics-for-version', '1.34'],
  ['init-only', undefined],
  ['proxy-mode', 'iptables'],
  ['iptables-masquerade-bit', '14'],
  ['masquerade-all', undefined],
  ['iptables-localhost-nodeports', 'false'],
  ['iptables-sync-period', '30s'],
  ['iptables-min-sync-period', '1s'],
  ['ipvs-sync-period', '30s'],
  ['ipvs-min-sync-period', '0s'],
  ['ipvs-scheduler', 'rr'],
  ['ipvs-exclude-cidrs', '10.9.0.0/16'],
  ['ipvs-strict-arp', undefined],
  ['ipvs-tcp-timeout', '0s'],
  ['ipvs-tcpfin-timeout', '0s'],
  ['ipvs-udp-timeout', '0s'],
  ['detect-local-mode', 'ClusterCIDR'],
  ['pod-bridge-interface', 'cbr0'],
  ['pod-interface-name-prefix', 'veth'],
  ['cluster-cidr', '10.244.0.0/16'],
  ['nodeport-addresses', '192.0.2.0/24'],
  ['oom-score-adj', '-999'],
  ['conntrack-max-per-core', '0'],
  ['conntrack-min', '131072'],
  ['conntrack-tcp-timeout-established', '24h0m0s'],
  ['conntrack-tcp-timeout-close-wait', '1h0m0s'],
  ['conntrack-tcp-be-liberal', undefined],
  ['conntrack-udp-timeout', '30s'],
  ['conntrack-udp-timeout-stream', '2m'],
  ['config-sync-period', '15m'],
  ['healthz-port', '10256'],
  ['metrics-port', '10249'],
];
const LOGGING_1_35: readonly [string, string | undefined][] = [
  ['logging-format', 'json'],
  ['log-flush-frequency', '5s'],
  ['v', '2'],
  ['vmodule', 'proxier=4'],
  ['log-text-split-stream', undefined],
  ['log-text-info-buffer-size', '0'],
  ['log-json-split-stream', undefined],
  ['log-json-info-buffer-size', '64Ki'],
];

describe("kube-proxy's command line", () => {
  it('has all 47 of kube-proxy 1.35 flags and its 8 logging flags, no more', () => {
    assert.equal(KUBE_PROXY_1_35.length, 47);
    assert.deepEqual(KUBE_PROXY_FLAGS.map((s) => s.name).sort(), KUBE_PROXY_1_35.map(([n]) => n).sort());
    assert.deepEqual(LOGGING_FLAGS.map((s) => s.name).sort(), LOGGING_1_35.map(([n]) => n).sort());
  });

  for (const [name, value] of [...KUBE_PROXY_1_35, ...LOGGING_1_35]) {
    it(
      `accepts --${name}${value === undefined ? '' : `=${value}`} and --${name} ${value ?? ''}`.trim(),
      () => {
        const eq = value === undefined ? [`--${name}`] : [`--${name}=${value}`];
        // A boolean takes its value only as --name=false (pflag); --name false is an argument.
        const spaced = value === undefined || value === 'false' ? [`--${name}`] : [`--${name}`, value];
        for (const args of [eq, spaced]) {
          const parsed = parseCommandLine(args, PROXY_FLAGS);
          assert.deepEqual(parsed.given, [name], args.join(' '));
          assert.deepEqual(parsed.positionals, []);
        }
      },
    );
  }

  it('reads pflag forms: -v=2, -v 2, -v2, --v=2, bare and explicit booleans, _ as -, --', () => {
    for (const args of [['-v=2'], ['-v', '2'], ['-v2'], ['--v=2'], ['--v', '2']]) {
      assert.equal(parseCommandLine(args, PROXY_FLAGS).values.v, 2, args.join(' '));
    }
    const p = parseCommandLine(
      [
        '--masquerade-all',
        '--iptables-localhost-nodeports=false',
        '--hostname_override=x',
        '--',
        '--cleanup',
      ],
      PROXY_FLAGS,
    );
    assert.equal(p.values.masqueradeAll, true);
    assert.equal(p.values.iptablesLocalhostNodeports, false);
    assert.equal(p.values.hostnameOverride, 'x');
    assert.deepEqual(p.positionals, ['--cleanup']);
    assert.deepEqual(
      parseCommandLine(
        ['--ipvs-exclude-cidrs=10.0.0.0/8', '--ipvs-exclude-cidrs', '10.1.0.0/16,'],
        PROXY_FLAGS,
      ).values.ipvsExcludeCidrs,
      ['10.0.0.0/8', '10.1.0.0/16'],
      'a repeated list flag appends',
    );
    assert.deepEqual(parseCommandLine(['--feature-gates=A=true,B=false'], PROXY_FLAGS).values.featureGates, {
      A: true,
      B: false,
    });
    assert.equal(parseCommandLine(['--metrics-bind-address='], PROXY_FLAGS).values.metricsBindAddress, '');
  });

  it('names the flag and the reason for a bad flag or value', () => {
    const cases: [string[], RegExp][] = [
      [['--no-such-flag'], /--no-such-flag: unknown flag/],
      [['-x'], /-x: unknown shorthand flag/],
      [['--config'], /--config: needs a value/],
      [['--iptables-sync-period=10'], /--iptables-sync-period: invalid value "10": missing unit/],
      [['--iptables-min-sync-period=-1s'], /must not be negative/],
      [['--oom-score-adj=-1001'], /--oom-score-adj: invalid value "-1001": must be within \[-1000, 1000\]/],
      [['--iptables-masquerade-bit=32'], /--iptables-masquerade-bit: .*\[0, 31\]/],
      [['--masquerade-all=yes'], /--masquerade-all: invalid value "yes": expected true or false/],
      [['--kube-api-qps=fast'], /--kube-api-qps: invalid value "fast"/],
      [['--feature-gates=A'], /--feature-gates: invalid value "A"/],
      [['-v=x'], /-v: invalid value "x": expected an integer/],
    ];
    for (const [args, re] of cases) {
      assert.throws(
        () => parseCommandLine(args, PROXY_FLAGS),
        (e: unknown) => e instanceof FlagError && re.test(e.message),
        args.join(' '),
      );
    }
  });

  it('uses kube-proxy defaults', () => {
    const o = optionsFromArgs([]);
    assert.equal(o.proxyMode, 'iptables');
    assert.equal(o.masqueradeBit, 14);
    assert.equal(o.minSyncPeriodMs, 1000);
    assert.equal(o.syncPeriodMs, 30_000);
    assert.equal(o.localhostNodePorts, true);
    assert.equal(o.masqueradeAll, false);
    assert.equal(o.detectLocalMode, '');
    assert.equal(o.healthzBindAddress, '0.0.0.0:10256');
    assert.equal(o.metricsBindAddress, '127.0.0.1:10249');
    assert.equal(o.oomScoreAdj, -999);
    assert.equal(o.bindAddressHardFail, false);
    assert.deepEqual(o.conntrack, {
      maxPerCore: 32768,
      min: 131072,
      tcpEstablishedTimeoutMs: 86_400_000,
      tcpCloseWaitTimeoutMs: 3_600_000,
      tcpBeLiberal: false,
      udpTimeoutMs: 0,
      udpStreamTimeoutMs: 0,
    });
    assert.deepEqual(o.logging, { format: 'text', verbosity: 0, splitStream: false });
  });

  it('applies flags as kube-proxy does', () => {
    const o = optionsFromArgs([
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
      '--conntrack-max-per-core=0',
      '--conntrack-tcp-be-liberal',
      '--conntrack-udp-timeout=30s',
      '--oom-score-adj=-500',
      '--logging-format=json',
      '--log-json-split-stream',
      '-v=4',
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
    assert.equal(o.conntrack.maxPerCore, 0);
    assert.equal(o.conntrack.tcpBeLiberal, true);
    assert.equal(o.conntrack.udpTimeoutMs, 30_000);
    assert.equal(o.oomScoreAdj, -500);
    assert.deepEqual(o.logging, { format: 'json', verbosity: 4, splitStream: true });
  });

  it('IPVS mode takes the --ipvs-… periods (min 0 by default, as kube-proxy)', () => {
    const o = optionsFromArgs(['--proxy-mode=ipvs', '--iptables-sync-period=5s']);
    assert.equal(o.syncPeriodMs, 30_000);
    assert.equal(o.minSyncPeriodMs, 0);
    assert.equal(optionsFromArgs(['--proxy-mode=ipvs', '--ipvs-sync-period=5s']).syncPeriodMs, 5000);
  });

  it('--metrics-bind-address= and --healthz-port=0 turn the servers off; --metrics-port fills a bare IP', () => {
    assert.equal(optionsFromArgs(['--metrics-bind-address=']).metricsBindAddress, '');
    assert.equal(optionsFromArgs(['--healthz-port=0']).healthzBindAddress, '');
    assert.equal(
      optionsFromArgs(['--metrics-bind-address=0.0.0.0', '--metrics-port=9999']).metricsBindAddress,
      '0.0.0.0:9999',
    );
    assert.equal(optionsFromArgs(['--metrics-port=9999']).metricsBindAddress, '127.0.0.1:10249');
  });

  it('warns once for what it does not implement; nothing for flags at values it honours', () => {
    const notices = (args: string[]): string[] =>
      resolveConfiguration({ flags: parseCommandLine(args, PROXY_FLAGS) }).notices.map(
        (n) => `${n.subject}: ${n.message}`,
      );
    assert.deepEqual(notices(['--kube-api-qps=50', '--config-sync-period=1m', '--profiling=false']), []);
    assert.deepEqual(
      notices(['--profiling', '--feature-gates=Foo=true', '--vmodule=a=4', '--healthz-port=1']),
      [
        '--healthz-port=1: deprecated: use --healthz-bind-address',
        '--feature-gates (featureGates): feature gate Foo=true ignored: svcplane has no feature gates',
        '--profiling (enableProfiling): ignored: svcplane has no /debug/pprof handlers',
        '--vmodule (logging.vmodule): a=4 ignored: svcplane has one verbosity for all modules (use -v)',
      ],
    );
  });

  it('--iptables-full-sync-mode reaches the proxier (auto by default)', () => {
    assert.equal(iptablesProxierConfig(optionsFromArgs([]), 'IPv4').fullSyncMode, 'auto');
    assert.equal(
      iptablesProxierConfig(optionsFromArgs(['--iptables-full-sync-mode=noflush']), 'IPv6').fullSyncMode,
      'noflush',
    );
    for (const mode of ['chunked', 'whole-table'] as const)
      assert.equal(
        iptablesProxierConfig(optionsFromArgs([`--iptables-full-sync-mode=${mode}`]), 'IPv4').fullSyncMode,
        mode,
      );
    assert.throws(
      () => optionsFromArgs(['--iptables-full-sync-mode=fast']),
      /--iptables-full-sync-mode: "fast" is not auto, chunked, noflush or whole-table/,
    );
  });

  it('--nft-binary reaches the nftables proxier (nft on PATH by default, as kube-proxy)', () => {
    assert.equal(nftablesProxierConfig(optionsFromArgs([]), 'IPv4').nftBinary, 'nft');
    assert.equal(
      nftablesProxierConfig(optionsFromArgs(['--nft-binary=.nft/bin/nft']), 'IPv6').nftBinary,
      '.nft/bin/nft',
    );
    assert.equal(optionsFromArgs(['--nft-binary', '/opt/nft/bin/nft']).nftBinary, '/opt/nft/bin/nft');
    assert.throws(
      () => optionsFromArgs(['--nft-binary=nft -f']),
      /--nft-binary: "nft -f" must be a command name or path/,
    );
  });

  it('rejects invalid values with the flag name', () => {
    assert.throws(() => optionsFromArgs(['--cluster-cidr=10.0.0.0/33']), /--cluster-cidr/);
    assert.throws(() => optionsFromArgs(['--proxy-mode=userspace']), /--proxy-mode/);
    // nftables mode (issue 16): kube-proxy's nftables section and the shared flags.
    const nft = optionsFromArgs([
      '--proxy-mode=nftables',
      '--masquerade-all',
      '--iptables-masquerade-bit=12',
    ]);
    assert.deepEqual([nft.proxyMode, nft.masqueradeAll, nft.masqueradeBit], ['nftables', true, 12]);
    assert.throws(() => optionsFromArgs(['--bind-address=1.2.3']), /--bind-address/);
    assert.throws(() => optionsFromArgs(['--iptables-binary=rm -rf']), /--iptables-binary/);
    assert.throws(() => optionsFromArgs(['--healthz-bind-address=localhost:1']), /--healthz-bind-address/);
    assert.throws(
      () => optionsFromArgs(['--hostname-override=  ']),
      /--hostname-override: must not be empty/,
    );
    assert.throws(
      () => optionsFromArgs(['--logging-format=xml']),
      /--logging-format: "xml" must be one of text, json/,
    );
    assert.throws(
      () => optionsFromArgs(['--iptables-min-sync-period=1m', '--iptables-sync-period=30s']),
      /--iptables-sync-period: must be greater than or equal to iptables\.minSyncPeriod/,
    );
  });

  it('rejects BridgeInterface / InterfaceNamePrefix without their interface flag (no silent fallback)', () => {
    assert.throws(
      () => optionsFromArgs(['--detect-local-mode=BridgeInterface']),
      /--pod-bridge-interface: required when detectLocalMode is BridgeInterface/,
    );
    assert.throws(
      () => optionsFromArgs(['--detect-local-mode=InterfaceNamePrefix', '--pod-bridge-interface=cbr0']),
      /--pod-interface-name-prefix: required when detectLocalMode is InterfaceNamePrefix/,
    );
    assert.throws(
      () => optionsFromArgs(['--detect-local-mode=BridgeInterface', '--pod-bridge-interface=-j ACCEPT']),
      /--pod-bridge-interface: "-j ACCEPT" is not an interface name/,
    );
    const bridge = optionsFromArgs(['--detect-local-mode=BridgeInterface', '--pod-bridge-interface=cbr0']);
    assert.deepEqual([bridge.detectLocalMode, bridge.bridgeInterface], ['BridgeInterface', 'cbr0']);
    const prefix = optionsFromArgs([
      '--detect-local-mode',
      'InterfaceNamePrefix',
      '--pod-interface-name-prefix',
      'veth',
    ]);
    assert.deepEqual([prefix.detectLocalMode, prefix.interfaceNamePrefix], ['InterfaceNamePrefix', 'veth']);
    assert.equal(optionsFromArgs(['--detect-local-mode=NodeCIDR']).detectLocalMode, 'NodeCIDR');
    assert.equal(
      optionsFromArgs(['--detect-local-mode=NodeCIDR']).nodePodCIDRs,
      undefined,
      'resolved at startup',
    );
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
