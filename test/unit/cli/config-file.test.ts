import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { loadConfiguration, RENDER_FLAGS, type LoadedConfiguration } from '../../../src/cli/proxy-options.js';
import { PROXY_FLAGS } from '../../../src/config/flags.js';
import {
  ConfigError,
  formatKubeProxyConfig,
  parseKubeProxyConfig,
} from '../../../src/config/kube-proxy-config.js';

/**
 * `--config FILE` as kube-proxy reads it: the file decides, the flags kube-proxy ignores then are
 * named in a warning, the hostname override and the logging flags still apply.
 */

const HEADER = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

const FULL = `${HEADER}mode: iptables
hostnameOverride: Node-From-File
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
bindAddress: 192.0.2.1
healthzBindAddress: 127.0.0.1:12345
metricsBindAddress: 127.0.0.1
nodePortAddresses: [192.0.2.0/24]
detectLocalMode: BridgeInterface
detectLocal:
  bridgeInterface: cbr0
clientConnection:
  kubeconfig: /etc/kubernetes/proxy.conf
iptables:
  masqueradeAll: true
  masqueradeBit: 13
  minSyncPeriod: 2s
  syncPeriod: 1m
  localhostNodePorts: false
ipvs:
  scheduler: lc
  syncPeriod: 45s
  minSyncPeriod: 500ms
  strictARP: true
  excludeCIDRs: [10.9.0.0/16]
  tcpTimeout: 15m
conntrack:
  maxPerCore: 0
  tcpBeLiberal: true
  udpTimeout: 30s
oomScoreAdj: -500
logging:
  verbosity: 3
  format: json
`;

/** The kubeadm ConfigMap's config.conf, verbatim (test/fixtures/kubeadm). */
function kubeadmConfig(): string {
  const text = readFileSync(
    new URL('../../fixtures/kubeadm/kube-proxy-configmap.yaml', import.meta.url),
    'utf8',
  );
  const cm = parseAllDocuments(text)[0]!.toJS() as { data: Record<string, string> };
  return cm.data['config.conf']!;
}

describe('--config FILE (KubeProxyConfiguration) with flags, as kube-proxy', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'svcplane-config-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function file(name: string, text: string): string {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  }

  const load = (args: string[]): Promise<LoadedConfiguration> => loadConfiguration(args, PROXY_FLAGS);
  const notices = (l: LoadedConfiguration): string[] => l.notices.map((n) => `${n.subject}: ${n.message}`);

  it("kubeadm's stock config.conf: kube-proxy's defaults, not one warning", async () => {
    const l = await load([
      `--config=${file('kubeadm.conf', kubeadmConfig())}`,
      '--hostname-override=worker-1',
    ]);
    assert.deepEqual(notices(l), []);
    const o = l.options;
    assert.equal(o.hostnameOverride, 'worker-1');
    assert.equal(o.kubeconfig, '/var/lib/kube-proxy/kubeconfig.conf');
    assert.equal(o.proxyMode, 'iptables');
    assert.deepEqual(o.clusterCIDRs, ['172.17.0.0/16']);
    assert.equal(o.detectLocalMode, 'ClusterCIDR');
    assert.equal(o.healthzBindAddress, '0.0.0.0:10256');
    assert.equal(o.metricsBindAddress, '127.0.0.1:10249');
    assert.equal(o.masqueradeBit, 14);
    assert.equal(o.syncPeriodMs, 30_000);
    assert.equal(o.minSyncPeriodMs, 1000);
    assert.equal(o.localhostNodePorts, true);
    assert.equal(o.oomScoreAdj, -999);
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
    assert.equal(l.config.configSyncPeriodMs, 15 * 60_000);
    assert.equal(l.config.clientConnection.qps, 5);
  });

  it('applies every field from the file', async () => {
    const o = (await load([`--config=${file('full.yaml', FULL)}`])).options;
    assert.equal(o.proxyMode, 'iptables');
    assert.equal(o.hostnameOverride, 'node-from-file');
    assert.deepEqual(o.clusterCIDRs, ['10.244.0.0/16', 'fd00:10:244::/56']);
    assert.equal(o.bindAddress, '192.0.2.1');
    assert.equal(o.healthzBindAddress, '127.0.0.1:12345');
    assert.equal(o.metricsBindAddress, '127.0.0.1:10249', 'the port is appended as kube-proxy does');
    assert.deepEqual(o.nodePortAddresses, ['192.0.2.0/24']);
    assert.equal(o.detectLocalMode, 'BridgeInterface');
    assert.equal(o.bridgeInterface, 'cbr0');
    assert.equal(o.kubeconfig, '/etc/kubernetes/proxy.conf');
    assert.equal(o.masqueradeAll, true);
    assert.equal(o.masqueradeBit, 13);
    assert.equal(o.minSyncPeriodMs, 2000);
    assert.equal(o.syncPeriodMs, 60_000);
    assert.equal(o.localhostNodePorts, false);
    assert.equal(o.verbosity, 3);
    assert.equal(o.logging.format, 'json');
    assert.equal(o.oomScoreAdj, -500);
    assert.equal(o.conntrack.maxPerCore, 0);
    assert.equal(o.conntrack.tcpBeLiberal, true);
    assert.equal(o.conntrack.udpTimeoutMs, 30_000);
    assert.equal(o.ipvs.scheduler, 'lc');
    assert.equal(o.ipvs.strictARP, true);
    assert.deepEqual(o.ipvs.excludeCIDRs, ['10.9.0.0/16']);
    assert.equal(o.ipvs.tcpTimeoutMs, 900_000);
    assert.equal(o.ipvs.syncPeriodMs, 45_000);
  });

  it('mode: ipvs in the file takes its ipvs periods', async () => {
    const o = (await load([`--config=${file('ipvs.yaml', FULL.replace('mode: iptables', 'mode: ipvs'))}`]))
      .options;
    assert.equal(o.proxyMode, 'ipvs');
    assert.equal(o.syncPeriodMs, 45_000);
    assert.equal(o.minSyncPeriodMs, 500);
  });

  it('mode: nftables takes the nftables section (periods, masquerade bit and all)', async () => {
    const text = `${HEADER}mode: nftables\nnftables:\n  masqueradeAll: true\n  masqueradeBit: 12\n  syncPeriod: 45s\n  minSyncPeriod: 2s\n`;
    const o = (await load([`--config=${file('nft.yaml', text)}`])).options;
    assert.deepEqual(
      [o.proxyMode, o.masqueradeAll, o.masqueradeBit, o.syncPeriodMs, o.minSyncPeriodMs],
      ['nftables', true, 12, 45_000, 2_000],
    );
  });

  it('the file wins over the flags kube-proxy then ignores, each named once; the others still apply', async () => {
    const l = await load([
      '--config',
      file('full2.yaml', FULL),
      '--proxy-mode=ipvs',
      '--iptables-sync-period=10s',
      '--masquerade-all=false',
      '--cluster-cidr=10.0.0.0/8',
      '--kubeconfig=/tmp/other.conf',
      '--hostname-override=node-1',
      '--master=https://10.0.0.1:6443',
      '-v',
      '0',
      '--logging-format=text',
      '--iptables-binary=iptables-legacy',
    ]);
    const o = l.options;
    assert.equal(o.proxyMode, 'iptables', 'the file decides the mode');
    assert.equal(o.syncPeriodMs, 60_000);
    assert.equal(o.masqueradeAll, true);
    assert.deepEqual(o.clusterCIDRs, ['10.244.0.0/16', 'fd00:10:244::/56']);
    assert.equal(o.kubeconfig, '/etc/kubernetes/proxy.conf');
    assert.equal(o.hostnameOverride, 'node-1', '--hostname-override applies over the file');
    assert.equal(o.master, 'https://10.0.0.1:6443');
    assert.equal(o.verbosity, 0, 'logging flags apply over the file');
    assert.equal(o.logging.format, 'text');
    assert.equal(o.iptablesBinary, 'iptables-legacy', "svcplane's own flags apply");
    const ignored = notices(l).filter((n) => n.includes('ignored because --config is given'));
    assert.deepEqual(
      ignored.map((n) => n.split(':')[0]),
      ['--proxy-mode', '--iptables-sync-period', '--masquerade-all', '--cluster-cidr', '--kubeconfig'],
    );
    assert.match(ignored[0]!, /set mode in the file/);
  });

  it('warns about unknown fields and keeps going', async () => {
    const p = file(
      'unknown.yaml',
      `${HEADER}bogusField: 1\nfeatureGates: {Foo: true}\niptables:\n  typo: 1\n`,
    );
    const l = await load([`--config=${p}`, '--hostname-override=n1']);
    assert.deepEqual(notices(l), [
      `${p}: bogusField: unknown field; ignored`,
      `${p}: iptables.typo: unknown field; ignored`,
      '--feature-gates (featureGates): feature gate Foo=true ignored: svcplane has no feature gates',
    ]);
  });

  it('rejects invalid values with the field and the reason', async () => {
    const bad = file(
      'bad.yaml',
      `${HEADER}iptables:\n  masqueradeBit: 40\n  syncPeriod: 10x\nclusterCIDR: 10.0.0.0/33\n`,
    );
    await assert.rejects(load([`--config=${bad}`, '--hostname-override=n1']), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, /bad\.yaml/);
      assert.match(err.message, /iptables\.syncPeriod: invalid duration "10x"/);
      return true;
    });
    await assert.rejects(
      load([`--config=${file('range.yaml', `${HEADER}iptables:\n  masqueradeBit: 40\n`)}`]),
      /iptables\.masqueradeBit: 40 must be within the range \[0, 31\]/,
    );
    await assert.rejects(
      load([`--config=${file('name.yaml', `${HEADER}hostnameOverride: "bad_name!"\n`)}`]),
      /hostname-override: "bad_name!"/,
    );
    await assert.rejects(
      load([`--config=${join(dir, 'missing.yaml')}`]),
      /missing\.yaml: \(file\): cannot read/,
    );
    await assert.rejects(
      load([`--config=${file('kind.yaml', 'apiVersion: v1\nkind: ConfigMap\n')}`]),
      /apiVersion: must be "kubeproxy\.config\.k8s\.io\/v1alpha1"/,
    );
    await assert.rejects(
      load([`--config=${file('user.yaml', `${HEADER}mode: userspace\n`)}`]),
      /mode: "userspace" is not supported by svcplane/,
    );
  });

  it('--write-config-to writes what kube-proxy and svcplane read back to the same configuration', async () => {
    const l = await load([
      `--config=${file('k.conf', kubeadmConfig())}`,
      '--hostname-override=worker-1',
      '-v=2',
    ]);
    const text = formatKubeProxyConfig(l.config);
    const back = parseKubeProxyConfig(text);
    assert.deepEqual(back.warnings, []);
    assert.deepEqual(back.config, l.config);
    // Every v1alpha1 field kubeadm writes is there, sorted as kube-proxy's encoder writes them.
    const keys = Object.keys(parseAllDocuments(text)[0]!.toJS() as object);
    assert.deepEqual(keys, [...keys].sort());
    for (const k of Object.keys(parseAllDocuments(kubeadmConfig())[0]!.toJS() as object)) {
      if (k !== 'winkernel') assert.ok(keys.includes(k), k);
    }
  });

  it('sync/diff/explain take the same flags but not the one-shot actions', async () => {
    await assert.rejects(loadConfiguration(['--cleanup'], RENDER_FLAGS), /--cleanup: unknown flag/);
    await assert.rejects(
      loadConfiguration(['--masquerade-all', 'false'], RENDER_FLAGS),
      /"false": unexpected argument .* --name=false/,
    );
  });
});
