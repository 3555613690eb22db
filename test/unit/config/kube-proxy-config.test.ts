import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  ConfigError,
  defaultProxyConfig,
  formatGoDuration,
  loadKubeProxyConfigFile,
  mergeConfig,
  parseGoDuration,
  parseKubeProxyConfig,
} from '../../../src/config/kube-proxy-config.js';
import type { ProxyConfig } from '../../../src/config/kube-proxy-config.js';

const HEAD = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

function parse(body: string): ReturnType<typeof parseKubeProxyConfig> {
  return parseKubeProxyConfig(HEAD + body, 'test.yaml');
}

/** Asserts that parsing fails with a ConfigError naming `field` with a reason matching `reason`. */
function rejects(body: string, field: string, reason: RegExp): void {
  assert.throws(
    () => parse(body),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      const p = err.problems.find((x) => x.field === field);
      assert.ok(p, `no problem for ${field}: ${err.message}`);
      assert.match(p.reason, reason);
      assert.match(err.message, /test\.yaml/);
      return true;
    },
  );
}

describe('parseGoDuration', () => {
  const cases: [string, number][] = [
    ['0', 0],
    ['0s', 0],
    ['1s', 1000],
    ['500ms', 500],
    ['1m30s', 90_000],
    ['1h', 3_600_000],
    ['1.5h', 5_400_000],
    ['2h45m', 9_900_000],
    ['1500us', 1.5],
    ['1500µs', 1.5],
    ['2000000ns', 2],
    ['-2s', -2000],
    ['+3s', 3000],
    ['.5s', 500],
  ];
  for (const [text, ms] of cases) {
    it(`${text} = ${ms} ms`, () => assert.equal(parseGoDuration(text), ms));
  }
  for (const bad of ['', '1', '10', 's', '1d', '1 s', '1s2', '--1s', 'abc']) {
    it(`rejects "${bad}"`, () => assert.throws(() => parseGoDuration(bad), /invalid duration/));
  }
  it('formats like Go', () => {
    assert.equal(formatGoDuration(0), '0s');
    assert.equal(formatGoDuration(500), '500ms');
    assert.equal(formatGoDuration(90_000), '1m30s');
    assert.equal(formatGoDuration(3_600_000), '1h0m0s');
    assert.equal(formatGoDuration(-1000), '-1s');
  });
});

describe('KubeProxyConfiguration', () => {
  it('applies kube-proxy defaults to an empty configuration', () => {
    const { config, warnings } = parse('');
    assert.deepEqual(warnings, []);
    assert.deepEqual(config, defaultProxyConfig());
    assert.equal(config.mode, 'iptables');
    assert.equal(config.bindAddress, '0.0.0.0');
    assert.equal(config.healthzBindAddress, '0.0.0.0:10256');
    assert.equal(config.metricsBindAddress, '127.0.0.1:10249');
    assert.equal(config.detectLocalMode, 'ClusterCIDR');
    assert.deepEqual(config.iptables, {
      masqueradeAll: false,
      masqueradeBit: 14,
      minSyncPeriodMs: 1000,
      syncPeriodMs: 30_000,
      localhostNodePorts: true,
    });
    assert.equal(config.ipvs.scheduler, 'rr');
    assert.equal(config.ipvs.syncPeriodMs, 30_000);
    assert.equal(config.conntrack.maxPerCore, 32768);
    assert.equal(config.conntrack.min, 131072);
    assert.equal(config.conntrack.tcpEstablishedTimeoutMs, 86_400_000);
    assert.equal(config.conntrack.tcpCloseWaitTimeoutMs, 3_600_000);
    assert.equal(config.logging.verbosity, 0);
  });

  it('reads every supported field (YAML)', () => {
    const { config, warnings } = parse(`
bindAddress: 192.168.1.10
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
hostnameOverride: " Node-A "
mode: ipvs
healthzBindAddress: 0.0.0.0:12345
metricsBindAddress: 0.0.0.0:9999
nodePortAddresses: [192.168.1.0/24, "fd00::/64"]
serviceNodePortRange: 20000-22767
detectLocalMode: BridgeInterface
detectLocal:
  bridgeInterface: cbr0
  interfaceNamePrefix: veth
iptables:
  masqueradeAll: true
  masqueradeBit: 15
  minSyncPeriod: 2s
  syncPeriod: 1m
  localhostNodePorts: false
ipvs:
  scheduler: wrr
  syncPeriod: 45s
  minSyncPeriod: 500ms
  strictARP: true
  excludeCIDRs: [10.0.0.0/8]
  tcpTimeout: 15m
  tcpFinTimeout: 30s
  udpTimeout: 10s
conntrack:
  maxPerCore: 0
  min: 1000
  tcpEstablishedTimeout: 12h
  tcpCloseWaitTimeout: 30m
  tcpBeLiberal: true
  udpTimeout: 30s
  udpStreamTimeout: 2m
logging:
  verbosity: 4
`);
    assert.deepEqual(warnings, []);
    const d = defaultProxyConfig();
    const expected: ProxyConfig = {
      ...d,
      bindAddress: '192.168.1.10',
      clientConnection: { ...d.clientConnection, kubeconfig: '/var/lib/kube-proxy/kubeconfig.conf' },
      clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/56'],
      hostnameOverride: 'node-a',
      mode: 'ipvs',
      healthzBindAddress: '0.0.0.0:12345',
      metricsBindAddress: '0.0.0.0:9999',
      nodePortAddresses: ['192.168.1.0/24', 'fd00::/64'],
      serviceNodePortRange: '20000-22767',
      detectLocalMode: 'BridgeInterface',
      detectLocal: { bridgeInterface: 'cbr0', interfaceNamePrefix: 'veth' },
      iptables: {
        masqueradeAll: true,
        masqueradeBit: 15,
        minSyncPeriodMs: 2000,
        syncPeriodMs: 60_000,
        localhostNodePorts: false,
      },
      ipvs: {
        scheduler: 'wrr',
        syncPeriodMs: 45_000,
        minSyncPeriodMs: 500,
        strictARP: true,
        excludeCIDRs: ['10.0.0.0/8'],
        tcpTimeoutMs: 900_000,
        tcpFinTimeoutMs: 30_000,
        udpTimeoutMs: 10_000,
      },
      conntrack: {
        maxPerCore: 0,
        min: 1000,
        tcpEstablishedTimeoutMs: 43_200_000,
        tcpCloseWaitTimeoutMs: 1_800_000,
        tcpBeLiberal: true,
        udpTimeoutMs: 30_000,
        udpStreamTimeoutMs: 120_000,
      },
      logging: { ...d.logging, verbosity: 4 },
    };
    assert.deepEqual(config, expected);
  });

  it('reads JSON too', () => {
    const { config } = parseKubeProxyConfig(
      JSON.stringify({
        apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
        kind: 'KubeProxyConfiguration',
        mode: 'ipvs',
        iptables: { syncPeriod: '10s' },
      }),
    );
    assert.equal(config.mode, 'ipvs');
    assert.equal(config.iptables.syncPeriodMs, 10_000);
  });

  it('treats empty mode as iptables and zero sync periods as unset (kube-proxy defaulting)', () => {
    const { config } = parse(
      `mode: ""\niptables: {syncPeriod: 0s, minSyncPeriod: 0s}\nipvs: {syncPeriod: 0s}\n`,
    );
    assert.equal(config.mode, 'iptables');
    assert.equal(config.iptables.syncPeriodMs, 30_000);
    assert.equal(config.iptables.minSyncPeriodMs, 1000);
    assert.equal(config.ipvs.syncPeriodMs, 30_000);
  });

  it('appends default ports to bare addresses and uses IPv6 defaults for an IPv6 bindAddress', () => {
    const a = parse('healthzBindAddress: 10.0.0.1\nmetricsBindAddress: "::1"\n').config;
    assert.equal(a.healthzBindAddress, '10.0.0.1:10256');
    assert.equal(a.metricsBindAddress, '[::1]:10249');
    const b = parse('bindAddress: "fd00::1"\n').config;
    assert.equal(b.healthzBindAddress, '[::]:10256');
    assert.equal(b.metricsBindAddress, '[::1]:10249');
  });

  it('accepts nodePortAddresses: [primary] and masqueradeBit 0', () => {
    const { config } = parse('nodePortAddresses: [primary]\niptables: {masqueradeBit: 0}\n');
    assert.deepEqual(config.nodePortAddresses, ['primary']);
    assert.equal(config.iptables.masqueradeBit, 0);
  });

  it('warns about unknown fields, with their path; reads every kube-proxy field', () => {
    const { config, warnings } = parse(`
featureGates: {Foo: true}
bogus: 1
clientConnection: {qps: 50, burst: 100, contentType: application/json, kubeconfig: /k}
iptables: {syncPeriod: 30s, typo: 1}
ipvs: {nope: true}
detectLocal: {x: 1}
conntrack: {y: 1}
logging: {format: json, flushFrequency: 1s, vmodule: [{filePattern: proxier, verbosity: 4}], options: {json: {splitStream: true, infoBufferSize: 64Ki}}}
nftables: {masqueradeBit: 12, syncPeriod: 0s}
oomScoreAdj: -100
configSyncPeriod: 5m
bindAddressHardFail: true
enableProfiling: true
showHiddenMetricsForVersion: "1.34"
portRange: ""
winkernel: {enableDSR: false}
`);
    assert.deepEqual(
      warnings.map((w) => `${w.field}: ${w.message}`).sort(),
      [
        'bogus: unknown field; ignored',
        'iptables.typo: unknown field; ignored',
        'ipvs.nope: unknown field; ignored',
        'detectLocal.x: unknown field; ignored',
        'conntrack.y: unknown field; ignored',
      ].sort(),
    );
    assert.deepEqual(config.featureGates, { Foo: true });
    assert.deepEqual(config.clientConnection, {
      kubeconfig: '/k',
      acceptContentTypes: '',
      contentType: 'application/json',
      qps: 50,
      burst: 100,
    });
    assert.deepEqual(config.logging, {
      format: 'json',
      flushFrequencyMs: 1000,
      verbosity: 0,
      vmodule: ['proxier=4'],
      options: {
        text: { splitStream: false, infoBufferSize: '0' },
        json: { splitStream: true, infoBufferSize: '64Ki' },
      },
    });
    assert.deepEqual(config.nftables, {
      masqueradeAll: false,
      masqueradeBit: 12,
      minSyncPeriodMs: 1000,
      syncPeriodMs: 30_000,
    });
    assert.equal(config.oomScoreAdj, -100);
    assert.equal(config.configSyncPeriodMs, 300_000);
    assert.equal(config.bindAddressHardFail, true);
    assert.equal(config.enableProfiling, true);
    assert.equal(config.showHiddenMetricsForVersion, '1.34');
  });

  describe('rejects invalid values naming the field and the reason', () => {
    const cases: [string, string, string, RegExp][] = [
      ['wrong apiVersion', '', 'apiVersion', /kubeproxy\.config\.k8s\.io\/v1alpha1/],
      ['bindAddress', 'bindAddress: 1.2.3\n', 'bindAddress', /not a valid IP/],
      ['bindAddress type', 'bindAddress: 5\n', 'bindAddress', /must be a string/],
      ['clusterCIDR', 'clusterCIDR: 10.0.0.0/33\n', 'clusterCIDR[0]', /not a valid CIDR/],
      ['clusterCIDR same family', 'clusterCIDR: 10.0.0.0/8,11.0.0.0/8\n', 'clusterCIDR', /dual-stack/],
      ['mode userspace', 'mode: userspace\n', 'mode', /not supported by svcplane/],
      ['oomScoreAdj', 'oomScoreAdj: -1001\n', 'oomScoreAdj', /\[-1000, 1000\]/],
      ['logging.format', 'logging: {format: xml}\n', 'logging.format', /must be one of text, json/],
      ['featureGates', 'featureGates: {A: "yes"}\n', 'featureGates', /true or false/],
      [
        'infoBufferSize',
        'logging: {options: {text: {infoBufferSize: lots}}}\n',
        'logging.options.text.infoBufferSize',
        /quantity/,
      ],
      ['healthzBindAddress', 'healthzBindAddress: localhost:1\n', 'healthzBindAddress', /IP:port/],
      [
        'metricsBindAddress port',
        'metricsBindAddress: 127.0.0.1:70000\n',
        'metricsBindAddress',
        /out of range/,
      ],
      ['nodePortAddresses', 'nodePortAddresses: [foo]\n', 'nodePortAddresses[0]', /not a valid CIDR/],
      ['nodePortAddresses type', 'nodePortAddresses: 10.0.0.0/8\n', 'nodePortAddresses', /list of strings/],
      ['primary mixed', 'nodePortAddresses: [primary, 10.0.0.0/8]\n', 'nodePortAddresses', /primary/],
      ['detectLocalMode', 'detectLocalMode: Magic\n', 'detectLocalMode', /must be one of/],
      ['bridge missing', 'detectLocalMode: BridgeInterface\n', 'detectLocal.bridgeInterface', /required/],
      [
        'prefix missing',
        'detectLocalMode: InterfaceNamePrefix\n',
        'detectLocal.interfaceNamePrefix',
        /required/,
      ],
      [
        'bridge name',
        'detectLocal: {bridgeInterface: "a/b"}\n',
        'detectLocal.bridgeInterface',
        /interface name/,
      ],
      ['masqueradeAll', 'iptables: {masqueradeAll: "yes"}\n', 'iptables.masqueradeAll', /true or false/],
      ['masqueradeBit', 'iptables: {masqueradeBit: 32}\n', 'iptables.masqueradeBit', /\[0, 31\]/],
      ['masqueradeBit type', 'iptables: {masqueradeBit: 1.5}\n', 'iptables.masqueradeBit', /integer/],
      ['syncPeriod syntax', 'iptables: {syncPeriod: 30}\n', 'iptables.syncPeriod', /duration string/],
      ['syncPeriod unit', 'iptables: {syncPeriod: "30"}\n', 'iptables.syncPeriod', /missing unit/],
      ['syncPeriod negative', 'iptables: {syncPeriod: -1s}\n', 'iptables.syncPeriod', /greater than 0/],
      ['minSyncPeriod negative', 'iptables: {minSyncPeriod: -1s}\n', 'iptables.minSyncPeriod', /0 or more/],
      [
        'min > sync',
        'iptables: {minSyncPeriod: 1m, syncPeriod: 30s}\n',
        'iptables.syncPeriod',
        /minSyncPeriod/,
      ],
      [
        'localhostNodePorts',
        'iptables: {localhostNodePorts: 1}\n',
        'iptables.localhostNodePorts',
        /true or false/,
      ],
      ['scheduler', 'ipvs: {scheduler: fastest}\n', 'ipvs.scheduler', /must be one of/],
      ['ipvs syncPeriod', 'ipvs: {syncPeriod: -5s}\n', 'ipvs.syncPeriod', /greater than 0/],
      ['ipvs min > sync', 'ipvs: {minSyncPeriod: 1m, syncPeriod: 30s}\n', 'ipvs.syncPeriod', /minSyncPeriod/],
      ['strictARP', 'ipvs: {strictARP: "true"}\n', 'ipvs.strictARP', /true or false/],
      ['excludeCIDRs', 'ipvs: {excludeCIDRs: [x]}\n', 'ipvs.excludeCIDRs[0]', /not a valid CIDR/],
      ['tcpTimeout', 'ipvs: {tcpTimeout: -1s}\n', 'ipvs.tcpTimeout', /0 or more/],
      ['tcpFinTimeout', 'ipvs: {tcpFinTimeout: 1x}\n', 'ipvs.tcpFinTimeout', /invalid duration/],
      ['udpTimeout', 'ipvs: {udpTimeout: -1s}\n', 'ipvs.udpTimeout', /0 or more/],
      ['conntrack maxPerCore', 'conntrack: {maxPerCore: -1}\n', 'conntrack.maxPerCore', /0 or more/],
      ['conntrack min', 'conntrack: {min: x}\n', 'conntrack.min', /integer/],
      [
        'conntrack timeout',
        'conntrack: {tcpEstablishedTimeout: -1h}\n',
        'conntrack.tcpEstablishedTimeout',
        /0 or more/,
      ],
      [
        'conntrack udp',
        'conntrack: {udpStreamTimeout: 5}\n',
        'conntrack.udpStreamTimeout',
        /duration string/,
      ],
      ['verbosity', 'logging: {verbosity: -1}\n', 'logging.verbosity', /0 or more/],
      ['section type', 'iptables: 5\n', 'iptables', /must be an object/],
      [
        'kubeconfig type',
        'clientConnection: {kubeconfig: 1}\n',
        'clientConnection.kubeconfig',
        /must be a string/,
      ],
    ];
    for (const [name, body, field, reason] of cases) {
      if (name === 'wrong apiVersion') {
        it(name, () =>
          assert.throws(
            () => parseKubeProxyConfig('apiVersion: v1\nkind: KubeProxyConfiguration\n'),
            (e: unknown) =>
              e instanceof ConfigError && e.problems.some((p) => p.field === field && reason.test(p.reason)),
          ),
        );
        continue;
      }
      it(name, () => rejects(body, field, reason));
    }

    it('reports every problem at once', () => {
      assert.throws(
        () => parse('bindAddress: x\nmode: userspace\n'),
        (e: unknown) => e instanceof ConfigError && e.problems.length === 2,
      );
    });
    it('rejects a missing kind, duplicate keys, bad YAML, several documents, a non-mapping', () => {
      assert.throws(() => parseKubeProxyConfig('apiVersion: kubeproxy.config.k8s.io/v1alpha1\n'), /kind/);
      assert.throws(() => parse('mode: ipvs\nmode: iptables\n'), /invalid YAML/);
      assert.throws(() => parse('mode: [\n'), /invalid YAML/);
      assert.throws(() => parse('---\n' + HEAD), /found 2/);
      assert.throws(() => parseKubeProxyConfig('- a\n'), /mapping/);
      assert.throws(() => parseKubeProxyConfig(''), /found 0/);
    });
  });

  it('loads a file, with a clear error for a missing one', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'svcplane-cfg-'));
    try {
      const file = path.join(dir, 'config.yaml');
      await writeFile(file, HEAD + 'mode: ipvs\n');
      assert.equal((await loadKubeProxyConfigFile(file)).config.mode, 'ipvs');
      await assert.rejects(loadKubeProxyConfigFile(path.join(dir, 'nope.yaml')), /nope\.yaml.*cannot read/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('mergeConfig (flags override the file)', () => {
  const file = parse(`
mode: ipvs
clusterCIDR: 10.244.0.0/16
iptables: {masqueradeBit: 12, syncPeriod: 10s}
logging: {verbosity: 2}
`).config;

  it('keeps file values where no flag is given', () => {
    assert.deepEqual(mergeConfig(file, {}), file);
    assert.deepEqual(mergeConfig(file, { mode: undefined, iptables: { syncPeriodMs: undefined } }), file);
  });

  it('lets given flags win, field by field', () => {
    const m = mergeConfig(file, {
      mode: 'iptables',
      clusterCIDRs: ['10.1.0.0/16'],
      iptables: { masqueradeBit: 3 },
      logging: { verbosity: 5 },
      healthzBindAddress: '127.0.0.1',
    });
    assert.equal(m.mode, 'iptables');
    assert.deepEqual(m.clusterCIDRs, ['10.1.0.0/16']);
    assert.equal(m.iptables.masqueradeBit, 3);
    assert.equal(m.iptables.syncPeriodMs, 10_000, 'untouched nested field stays from the file');
    assert.equal(m.logging.verbosity, 5);
    assert.equal(m.healthzBindAddress, '127.0.0.1:10256');
  });

  it('uses defaults when there is no file', () => {
    assert.deepEqual(mergeConfig(undefined, {}), defaultProxyConfig());
    assert.equal(mergeConfig(undefined, { bindAddress: '::' }).healthzBindAddress, '[::]:10256');
  });

  it('validates the merged result', () => {
    assert.throws(() => mergeConfig(file, { iptables: { masqueradeBit: 40 } }), /iptables\.masqueradeBit/);
    assert.throws(
      () => mergeConfig(file, { detectLocalMode: 'BridgeInterface' }),
      /detectLocal\.bridgeInterface/,
    );
    const ok = mergeConfig(file, {
      detectLocalMode: 'BridgeInterface',
      detectLocal: { bridgeInterface: 'cbr0' },
    });
    assert.equal(ok.detectLocal.bridgeInterface, 'cbr0');
  });
});
