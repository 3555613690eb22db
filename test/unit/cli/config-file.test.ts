import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { parseAllDocuments } from 'yaml';
import { main } from '../../../src/cli/main.js';
import {
  addProxyOptions,
  applyConfigFile,
  mergeFlagsWithConfig,
  resolveProxyOptions,
  type ProxyOptions,
} from '../../../src/cli/proxy-options.js';
import {
  ConfigError,
  defaultProxyConfig,
  type ConfigWarning,
} from '../../../src/config/kube-proxy-config.js';
import { log } from '../../../src/util/log.js';

/** `--config FILE` on the proxy commands: file values apply, flags the user passed override them. */

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
logging:
  verbosity: 3
`;

describe('--config FILE (KubeProxyConfiguration) with flags', () => {
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

  /** Parses like the CLI does (hook included) and returns what the action would see. */
  async function parse(args: string[]): Promise<ProxyOptions> {
    let seen: ProxyOptions | undefined;
    const cmd = addProxyOptions(new Command('sync').exitOverride()).action((raw: Record<string, unknown>) => {
      seen = resolveProxyOptions(raw);
    });
    await cmd.parseAsync(args, { from: 'user' });
    assert.ok(seen, 'the action ran');
    return seen;
  }

  it('applies every supported field from the file', async () => {
    const o = await parse([`--config=${file('full.yaml', FULL)}`]);
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
    assert.equal(o.ipvs.scheduler, 'lc');
    assert.equal(o.ipvs.strictARP, true);
    assert.deepEqual(o.ipvs.excludeCIDRs, ['10.9.0.0/16']);
    assert.equal(o.ipvs.tcpTimeoutMs, 900_000);
    assert.equal(o.ipvs.syncPeriodMs, 45_000);
  });

  it('mode: ipvs in the file wins over the --proxy-mode default, and its ipvs periods apply', async () => {
    const o = await parse([`--config=${file('ipvs.yaml', FULL.replace('mode: iptables', 'mode: ipvs'))}`]);
    assert.equal(o.proxyMode, 'ipvs');
    assert.equal(o.syncPeriodMs, 45_000);
    assert.equal(o.minSyncPeriodMs, 500);
    const flag = await parse([
      `--config=${file('ipvs2.yaml', FULL)}`,
      '--proxy-mode=ipvs',
      '--ipvs-sync-period=5s',
    ]);
    assert.equal(flag.proxyMode, 'ipvs');
    assert.equal(flag.syncPeriodMs, 5000);
  });

  it('flags the user passed override the file; flag defaults do not', async () => {
    const o = await parse([
      '--config',
      file('full2.yaml', FULL),
      '--hostname-override=node-1',
      '--iptables-sync-period=10s',
      '--iptables-localhost-nodeports',
      '--masquerade-all=false',
      '--cluster-cidr=10.0.0.0/8',
      '--kubeconfig=/tmp/other.conf',
      '-v',
      '0',
    ]);
    assert.equal(o.hostnameOverride, 'node-1');
    assert.equal(o.syncPeriodMs, 10_000);
    assert.equal(o.minSyncPeriodMs, 2000, 'file value kept');
    assert.equal(o.localhostNodePorts, true, 'a bare boolean flag overrides the file');
    assert.equal(o.masqueradeAll, false);
    assert.deepEqual(o.clusterCIDRs, ['10.0.0.0/8']);
    assert.equal(o.kubeconfig, '/tmp/other.conf');
    assert.equal(o.verbosity, 0, 'an explicit flag equal to the default still overrides');
    // --healthz-bind-address has a commander default; the file still wins there.
    assert.equal(o.healthzBindAddress, '127.0.0.1:12345');
  });

  it('a minimal file leaves kube-proxy defaults; no --config behaves as before', async () => {
    const o = await parse([`--config=${file('min.yaml', HEADER)}`, '--hostname-override=n1']);
    const flagsOnly = await parse(['--hostname-override=n1']);
    // The file's ipvs.syncPeriod has a default (30s); without a file the iptables period applies.
    const comparable = (x: ProxyOptions): object => ({
      ...x,
      config: undefined,
      ipvs: { ...x.ipvs, syncPeriodMs: undefined },
    });
    assert.deepEqual(comparable(o), comparable(flagsOnly));
    assert.equal(o.ipvs.syncPeriodMs, 30_000);
  });

  it('warns about unknown and unsupported fields and keeps going', async () => {
    const p = file(
      'unknown.yaml',
      `${HEADER}bogusField: 1\nfeatureGates: {Foo: true}\niptables:\n  typo: 1\n`,
    );
    // No action: parsing stops after the options; then read the file as the preAction hook does.
    const cmd = addProxyOptions(new Command('sync').exitOverride());
    await cmd.parseAsync([`--config=${p}`, '--hostname-override=n1'], { from: 'user' });
    log.silent = true;
    let warnings: readonly ConfigWarning[];
    try {
      warnings = await applyConfigFile(cmd);
    } finally {
      log.silent = false;
    }
    assert.equal(cmd.getOptionValueSource('iptablesSyncPeriod'), 'config');
    assert.equal(cmd.getOptionValueSource('hostnameOverride'), 'cli');
    assert.deepEqual(
      warnings.map((w) => `${w.field}: ${w.message}`),
      [
        'bogusField: unknown field; ignored',
        'featureGates: not supported by svcplane; ignored',
        'iptables.typo: unknown field; ignored',
      ],
    );
  });

  it('rejects invalid values with the field and the reason, before the command runs', async () => {
    const bad = file(
      'bad.yaml',
      `${HEADER}iptables:\n  masqueradeBit: 40\n  syncPeriod: 10x\nclusterCIDR: 10.0.0.0/33\n`,
    );
    await assert.rejects(
      main(['node', 'svcplane', 'sync', `--config=${bad}`, '--hostname-override=n1']),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(err.message, /bad\.yaml/);
        assert.match(err.message, /iptables\.syncPeriod: invalid duration "10x"/);
        return true;
      },
    );
    const range = file('range.yaml', `${HEADER}iptables:\n  masqueradeBit: 40\n`);
    await assert.rejects(
      main(['node', 'svcplane', 'sync', `--config=${range}`]),
      /iptables\.masqueradeBit: 40 must be within the range \[0, 31\]/,
    );
    const name = file('name.yaml', `${HEADER}hostnameOverride: "bad_name!"\n`);
    await assert.rejects(
      main(['node', 'svcplane', 'sync', `--config=${name}`]),
      /hostnameOverride: "bad_name!"/,
    );
    await assert.rejects(
      main(['node', 'svcplane', 'run', `--config=${join(dir, 'missing.yaml')}`]),
      /missing\.yaml: \(file\): cannot read/,
    );
    await assert.rejects(
      main([
        'node',
        'svcplane',
        'sync',
        `--config=${file('kind.yaml', 'apiVersion: v1\nkind: ConfigMap\n')}`,
      ]),
      /apiVersion: must be "kubeproxy\.config\.k8s\.io\/v1alpha1"/,
    );
  });

  it('a detect-local mode from the flags may take its interface from the file', async () => {
    const bridge = file('bridge.yaml', `${HEADER}detectLocal:\n  bridgeInterface: br-pods\n`);
    const o = await parse([`--config=${bridge}`, '--detect-local-mode=BridgeInterface']);
    assert.deepEqual([o.detectLocalMode, o.bridgeInterface], ['BridgeInterface', 'br-pods']);
    await assert.rejects(
      parse([`--config=${bridge}`, '--detect-local-mode=InterfaceNamePrefix']),
      /detectLocal\.interfaceNamePrefix: required when detectLocalMode is InterfaceNamePrefix/,
    );
  });

  it('validates the merge of file and flags as a whole', async () => {
    const p = file('periods.yaml', `${HEADER}iptables:\n  minSyncPeriod: 10s\n  syncPeriod: 20s\n`);
    await assert.rejects(
      parse([`--config=${p}`, '--iptables-sync-period=5s']),
      /iptables\.syncPeriod: must be greater than or equal to iptables\.minSyncPeriod/,
    );
    await assert.rejects(parse([`--config=${p}`, '--cluster-cidr=10.0.0.0/33']), /--cluster-cidr/);
  });

  it('mergeFlagsWithConfig is pure: explicit flags into the config, the rest out of it', () => {
    const file = { ...defaultProxyConfig(), clusterCIDRs: ['10.1.0.0/16'], hostnameOverride: 'a' };
    const { config, values } = mergeFlagsWithConfig(
      file,
      { clusterCidr: ['10.2.0.0/16'], iptablesSyncPeriod: 5000, hostnameOverride: 'ignored' },
      (k) => k === 'clusterCidr' || k === 'iptablesSyncPeriod',
    );
    assert.deepEqual(config.clusterCIDRs, ['10.2.0.0/16']);
    assert.equal(config.iptables.syncPeriodMs, 5000);
    assert.equal(config.hostnameOverride, 'a');
    assert.equal(values.get('hostnameOverride'), 'a');
    assert.equal(values.has('clusterCidr'), false, 'explicit flags keep their own value');
    assert.equal(values.get('bindAddress'), undefined, '0.0.0.0 means "detect" (unset flag)');
  });

  it("deploy/'s ConfigMap with the DaemonSet's args resolves (--hostname-override from the pod)", async () => {
    const docs = parseAllDocuments(
      readFileSync(new URL('../../../deploy/svcplane.yaml', import.meta.url), 'utf8'),
    );
    const objects = docs.map(
      (d) => d.toJS() as { kind?: string; data?: Record<string, string> } & Record<string, unknown>,
    );
    const cm = objects.find((o) => o.kind === 'ConfigMap');
    const ds = objects.find((o) => o.kind === 'DaemonSet') as
      { spec: { template: { spec: { containers: { args: string[] }[] } } } } | undefined;
    assert.ok(cm?.data?.['config.conf'] && ds);
    const conf = file('deploy.conf', cm.data['config.conf']);
    const args = ds.spec.template.spec.containers[0]!.args.slice(1).map((a) =>
      a.replace('/etc/svcplane/config.conf', conf).replace('$(NODE_NAME)', 'worker-1'),
    );
    const o = await parse(args);
    assert.equal(o.hostnameOverride, 'worker-1');
    assert.equal(o.config, conf);
    assert.equal(o.proxyMode, 'iptables');
    assert.deepEqual(o.clusterCIDRs, ['10.244.0.0/16']);
    assert.equal(o.detectLocalMode, 'ClusterCIDR');
    assert.equal(o.healthzBindAddress, '0.0.0.0:10256');
  });

  it('rejects flag-only sync periods in the wrong order', async () => {
    await assert.rejects(
      parse(['--iptables-min-sync-period=1m', '--iptables-sync-period=30s']),
      /--iptables-sync-period: must be greater than or equal to --iptables-min-sync-period/,
    );
  });
});
