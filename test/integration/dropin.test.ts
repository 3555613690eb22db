import { newestMtime, until } from '../support/daemon.js';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { RequestSpec } from '../../src/netns/protocol.js';
import { startProcess, type ChildHandle } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { FakeApiServer } from '../support/fake-apiserver.js';
import { renderKustomization, type KObject } from '../support/kustomize.js';
import { NetnsListener } from '../support/netns-listener.js';
import { useSandbox } from '../support/sandbox.js';
import { seriesValue } from '../support/metrics-text.js';
import { httpGet, type HttpAnswer } from '../support/http.js';

/**
 * svcplane as a drop-in for kube-proxy in a kubeadm cluster: kubeadm's own kube-proxy DaemonSet
 * command (`--config=/var/lib/kube-proxy/config.conf --hostname-override=$(NODE_NAME)`) and its
 * ConfigMap (config.conf and kubeconfig.conf, test/fixtures/kubeadm), with only the binary changed
 * (`node bin/svcplane.js` for /usr/local/bin/kube-proxy), run as the pod runs it: in the node's
 * network namespace (hostNetwork), in a mount namespace of its own holding the pod's volumes
 * (the ConfigMap at /var/lib/kube-proxy, the service account at /var/run/secrets/kubernetes.io/
 * serviceaccount, the host's /run/xtables.lock) and the pod's environment (NODE_NAME from the
 * downward API, KUBERNETES_SERVICE_HOST/PORT). The API stand-in answers as kube-apiserver over TLS
 * at 192.0.2.2:6443 and accepts only the service account's token. Real traffic through both families.
 *
 * What kubeadm derives from the cluster is this cluster's: the API server URL of kubeconfig.conf and
 * clusterCIDR (kubeadm's podSubnet). Before issue 13: `svcplane --config=…` was "unknown option", the
 * file gave 14 warnings, and kubeconfig.conf's `tokenFile` was not read (every request 401).
 */

const NODE = 'node-1';
const API = { host: '192.0.2.2', port: 6443 };
const TOKEN = `kube-proxy-sa-token-${process.pid}`;
const POD_PORT = 8080;
const WEB = { v4: '10.96.0.80', v6: 'fd00:10:96::80' };
const CLI = join(packageRoot(), 'bin', 'svcplane.js');
const FIXTURES = join(packageRoot(), 'test', 'fixtures', 'kubeadm');
/** The image's entrypoint (/usr/local/bin/svcplane and /usr/local/bin/kube-proxy in the image). */
const ENTRYPOINT = join(packageRoot(), 'deploy', 'image', 'svcplane-entrypoint.sh');

/** A klog text line: severity, message and the rest. */
interface TextLine {
  readonly severity: string;
  readonly message: string;
  readonly rest: string;
}

function parseTextLine(line: string): TextLine | undefined {
  const m = /^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ svcplane\] "((?:[^"\\]|\\.)*)"(.*)$/.exec(line);
  return m ? { severity: m[1]!, message: JSON.parse(`"${m[2]!}"`) as string, rest: m[3]! } : undefined;
}

/** kubeadm's DaemonSet container: its command, env names and volume mounts. */
function kubeadmDaemonSet(): { command: string[]; mounts: string[] } {
  const ds = parseAllDocuments(
    readFileSync(join(FIXTURES, 'kube-proxy-daemonset.yaml'), 'utf8'),
  )[0]!.toJS() as {
    spec: {
      template: { spec: { containers: { command: string[]; volumeMounts: { mountPath: string }[] }[] } };
    };
  };
  const c = ds.spec.template.spec.containers[0]!;
  return { command: c.command, mounts: c.volumeMounts.map((v) => v.mountPath) };
}

/** kubeadm's ConfigMap data: config.conf and kubeconfig.conf. */
function kubeadmConfigMap(): Record<string, string> {
  const cm = parseAllDocuments(
    readFileSync(join(FIXTURES, 'kube-proxy-configmap.yaml'), 'utf8'),
  )[0]!.toJS() as {
    data: Record<string, string>;
  };
  return cm.data;
}

/** The kubelet's $(VAR) expansion of a container command. */
function expand(args: readonly string[], env: Readonly<Record<string, string>>): string[] {
  return args.map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => env[v] ?? m));
}

/**
 * The pod's mount namespace: tmpfs over /run and /var/lib (the host's stay untouched), the host's
 * /run/xtables.lock bound back, the service account and the ConfigMap copied where kubelet mounts them.
 */
const POD_SCRIPT = `set -e
pod=$1; shift
: > "$pod/xtables.lock"
[ -e /run/xtables.lock ] || : > /run/xtables.lock
mount --bind /run/xtables.lock "$pod/xtables.lock"
mount -t tmpfs -o mode=0755 pod-run /run
: > /run/xtables.lock
mount --bind "$pod/xtables.lock" /run/xtables.lock
mkdir -p /run/secrets/kubernetes.io/serviceaccount
cp "$pod"/serviceaccount/* /run/secrets/kubernetes.io/serviceaccount/
mount -t tmpfs -o mode=0755 pod-var-lib /var/lib
mkdir -p /var/lib/kube-proxy
cp "$pod"/configmap/* /var/lib/kube-proxy/
exec "$@"
`;

describe('drop-in: kubeadm’s kube-proxy DaemonSet and ConfigMap run svcplane (real process, API stand-in, real traffic)', function () {
  this.timeout(180_000);
  let api: FakeApiServer | undefined;
  let listener: NetnsListener | undefined;
  let dir = '';
  const daemons: ChildHandle[] = [];

  after(async function () {
    this.timeout(30_000);
    for (const d of daemons) await d.stop(5000);
    await api?.stop();
    await listener?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [POD_PORT] },
      { name: 'b', index: 3, tcpPorts: [POD_PORT] },
      { name: 'client', index: 10 },
    ],
  });

  const http = (from: string, url: string): Promise<HttpAnswer | undefined> => httpGet(env.sb, from, url);

  async function answeredBy(ip: string, want: readonly string[]): Promise<void> {
    const r: RequestSpec = { proto: 'tcp', ip, port: 80, timeoutMs: 1000 };
    await until(`traffic to ${ip} answered by ${want.join(',')}`, async () => {
      const got = new Set<string>();
      for (let i = 0; i < want.length * 8; i++) {
        const x = await env.sb.request('client', r);
        got.add(x.ok ? x.reply.pod : `(${x.error})`);
      }
      return [...got].sort().join(',') === [...want].sort().join(',') ? true : undefined;
    });
  }

  /**
   * Writes the pod's files (the service account, the ConfigMap's keys) and starts `command` in the
   * node with the pod's environment, as the kubelet would.
   */
  function startPodWith(
    name: string,
    configMap: Readonly<Record<string, string>>,
    command: readonly string[],
    podEnv: Readonly<Record<string, string>>,
  ): { child: ChildHandle; lines: string[] } {
    const pod = join(dir, name);
    mkdirSync(join(pod, 'serviceaccount'), { recursive: true });
    mkdirSync(join(pod, 'configmap'));
    writeFileSync(join(pod, 'serviceaccount', 'token'), TOKEN);
    writeFileSync(join(pod, 'serviceaccount', 'ca.crt'), api!.caPem!);
    writeFileSync(join(pod, 'serviceaccount', 'namespace'), 'kube-system');
    for (const [key, text] of Object.entries(configMap)) writeFileSync(join(pod, 'configmap', key), text);
    const vars = Object.entries(podEnv).map(([k, v]) => `${k}=${v}`);
    const child = startProcess(
      ['unshare', '-m', 'sh', '-c', POD_SCRIPT, 'pod', pod, 'env', ...vars, ...command],
      {
        netns: env.sb.nodeNs,
      },
    );
    daemons.push(child);
    const lines: string[] = [];
    child.onLine((l) => lines.push(l));
    return { child, lines };
  }

  /** kubeadm's DaemonSet command with its ConfigMap (config.conf as given, kubeconfig.conf for this cluster). */
  function startPod(
    name: string,
    configConf: string,
    podEnv: Readonly<Record<string, string>>,
  ): { child: ChildHandle; lines: string[] } {
    const data = kubeadmConfigMap();
    // kubeadm writes its control-plane endpoint here; this cluster's is the stand-in.
    const kubeconfig = data['kubeconfig.conf']!.replace(
      'https://controlplane:6443',
      `https://${API.host}:${API.port}`,
    );
    const { command } = kubeadmDaemonSet();
    assert.equal(command[0], '/usr/local/bin/kube-proxy');
    const args = expand(command.slice(1), podEnv);
    return startPodWith(
      name,
      { 'config.conf': configConf, 'kubeconfig.conf': kubeconfig },
      [process.execPath, CLI, ...args],
      podEnv,
    );
  }

  before(async function () {
    this.timeout(90_000);
    const built = join(packageRoot(), 'dist', '.built');
    if (
      newestMtime(join(packageRoot(), 'src')) > (statSync(built, { throwIfNoEntry: false })?.mtimeMs ?? 0)
    ) {
      throw new Error('dist/ is older than src/: run `bash scripts/setup.sh` (or npm run build) first');
    }
    dir = mkdtempSync(join(tmpdir(), 'svcplane-dropin-'));
    listener = NetnsListener.start(env.sb.outsideNs);
    api = await FakeApiServer.create({
      tls: true,
      tokens: [TOKEN],
      bookmarkIntervalMs: 500,
      host: API.host,
      listenHandle: () => listener!.listen(API.host, API.port),
    });
    const sb = env.sb;
    api.create('Node', {
      metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } },
      status: {
        addresses: [
          { type: 'InternalIP', address: sb.nodeIPv4 },
          { type: 'InternalIP', address: sb.nodeIPv6 },
        ],
      },
    });
    api.create('Service', {
      metadata: { name: 'web', namespace: 'default' },
      spec: {
        type: 'ClusterIP',
        clusterIP: WEB.v4,
        clusterIPs: [WEB.v4, WEB.v6],
        ipFamilies: ['IPv4', 'IPv6'],
        ipFamilyPolicy: 'PreferDualStack',
        selector: { app: 'web' },
        ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: POD_PORT }],
      },
    });
    for (const family of ['IPv4', 'IPv6'] as const) {
      api.create('EndpointSlice', {
        metadata: {
          name: `web-${family.toLowerCase()}`,
          namespace: 'default',
          labels: { 'kubernetes.io/service-name': 'web' },
        },
        addressType: family,
        ports: [{ name: 'http', protocol: 'TCP', port: POD_PORT }],
        endpoints: ['a', 'b'].map((p) => ({
          addresses: [sb.podIP(p, family)],
          conditions: { ready: true },
          nodeName: NODE,
          targetRef: { kind: 'Pod', namespace: 'default', name: p },
        })),
      });
    }
  });

  it("kubeadm's command and ConfigMap: starts without a warning, serves both families, kube-proxy's endpoints", async () => {
    // kubeadm writes networking.podSubnet into clusterCIDR: this cluster's pods are 10.244/16 and fd00:10:244::/64.
    const conf = kubeadmConfigMap()['config.conf']!.replace(
      'clusterCIDR: 172.17.0.0/16',
      'clusterCIDR: 10.244.0.0/16,fd00:10:244::/64',
    );
    const { child, lines } = startPod('kubeadm', conf, {
      NODE_NAME: NODE,
      KUBERNETES_SERVICE_HOST: '10.96.0.1',
      KUBERNETES_SERVICE_PORT: '443',
    });
    const running = await until(
      'svcplane running',
      () => {
        if (lines.some((l) => / svcplane\] "svcplane cannot start/.test(l)))
          throw new Error(lines.join('\n'));
        return lines.map(parseTextLine).find((l) => l?.message === 'svcplane running');
      },
      60_000,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${lines.slice(-40).join('\n')}`);
    });
    assert.match(running.rest, /mode="iptables" node="node-1"/);
    // Text logs by default, every line klog-shaped; no warning: kubeadm's file is all defaults. A node
    // with more than 4 CPUs may want a larger nf_conntrack_max than this machine's (host-wide): said once.
    for (const l of lines) assert.ok(parseTextLine(l), `not a klog text line: ${l}`);
    const warnings = lines.map(parseTextLine).filter((l) => l!.severity !== 'I');
    assert.ok(
      warnings.every((w) =>
        /^cannot set (net\.netfilter\.nf_conntrack_max|nf_conntrack hashsize)=/.test(w!.message),
      ),
      warnings.map((w) => w!.message).join('\n'),
    );

    await answeredBy(WEB.v4, ['a', 'b']);
    await answeredBy(WEB.v6, ['a', 'b']);
    assert.equal(
      api!.lastAuthorization,
      `Bearer ${TOKEN}`,
      "kubeconfig.conf's tokenFile: the service account token",
    );

    // kube-proxy's endpoints at kubeadm's defaults: healthz on every address, metrics on localhost.
    const hz = await http('outside', `http://${env.sb.nodeIPv4}:10256/healthz`);
    assert.equal(hz?.code, 200);
    assert.equal((await http('node', 'http://127.0.0.1:10249/proxyMode'))?.body, 'iptables');
    const metrics = (await http('node', 'http://127.0.0.1:10249/metrics'))!.body;
    const sample = (series: string): number | undefined => seriesValue(metrics, series);
    // The dual-stack scrape: one series per family, each family's own values.
    const v4 = sample('kubeproxy_sync_proxy_rules_iptables_total{table="nat",ip_family="IPv4"}');
    const v6 = sample('kubeproxy_sync_proxy_rules_iptables_total{table="nat",ip_family="IPv6"}');
    assert.ok(v4 !== undefined && v6 !== undefined && v4 > 0 && v6 > 0, metrics);
    const natRules = async (cmd: string): Promise<number> =>
      (await env.sb.exec('node', [cmd, '-t', 'nat'])).stdout
        .split('\n')
        .filter((l) => /^-A KUBE-(SERVICES|SVC-|SEP-|NODEPORTS|POSTROUTING|MARK-MASQ|EXT-|SVL-|FW-)/.test(l))
        .length;
    assert.equal(v4, await natRules('iptables-save'), 'IPv4 rule count = what iptables-save shows');
    assert.equal(v6, await natRules('ip6tables-save'), 'IPv6 rule count = what ip6tables-save shows');
    for (const f of ['IPv4', 'IPv6']) {
      const syncs = sample(`kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="${f}"}`);
      const ok = sample(`svcplane_syncs_total{backend="iptables/${f}",kind="full",result="ok"}`);
      assert.ok(syncs !== undefined && syncs >= 1, `${f} syncs`);
      assert.equal(
        syncs,
        (ok ?? 0) + (sample(`svcplane_syncs_total{backend="iptables/${f}",kind="partial",result="ok"}`) ?? 0),
        `${f}: each sync once`,
      );
    }
    assert.ok((sample('process_resident_memory_bytes') ?? 0) > 10_000_000);
    assert.ok((sample('process_open_fds') ?? 0) > 0);

    // kube-proxy's conntrack defaults, in the node's namespace.
    const ct = async (k: string): Promise<number> =>
      Number((await env.sb.exec('node', ['cat', `/proc/sys/net/netfilter/${k}`])).stdout.trim());
    assert.equal(await ct('nf_conntrack_tcp_timeout_established'), 86400);
    assert.equal(await ct('nf_conntrack_tcp_timeout_close_wait'), 3600);

    assert.equal(await child.stop(5000), 0, 'SIGTERM: exit 0');
    await answeredBy(WEB.v4, ['a', 'b']);
  });

  it('in-cluster configuration (no kubeconfig: the service account and KUBERNETES_SERVICE_HOST/PORT)', async () => {
    const conf = kubeadmConfigMap()['config.conf']!.replace(
      'kubeconfig: /var/lib/kube-proxy/kubeconfig.conf',
      'kubeconfig: ""',
    );
    assert.notEqual(conf, kubeadmConfigMap()['config.conf']);
    const t0 = Date.now();
    const { child, lines } = startPod('incluster', conf, {
      NODE_NAME: NODE,
      KUBERNETES_SERVICE_HOST: API.host,
      KUBERNETES_SERVICE_PORT: String(API.port),
    });
    await until(
      'svcplane running (in-cluster)',
      () => (lines.some((l) => parseTextLine(l)?.message === 'svcplane running') ? true : undefined),
      60_000,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${lines.slice(-40).join('\n')}`);
    });
    assert.ok(api!.requestsSince(t0, 'Service', 'list') > 0);
    assert.equal(api!.lastAuthorization, `Bearer ${TOKEN}`);
    await answeredBy(WEB.v4, ['a', 'b']);
    assert.equal(await child.stop(5000), 0);
  });
  /**
   * svcplane's own DaemonSet (deploy/overlays/*, rendered as kustomize renders it): the container has
   * no command, so the image's entrypoint runs with the DaemonSet's args (kube-proxy's form); its
   * ConfigMap mounted where the DaemonSet mounts it; the pod's env from the manifest, the downward API
   * and the kubelet (KUBERNETES_SERVICE_HOST/PORT: in-cluster configuration, no kubeconfig).
   */
  for (const overlay of ['iptables', 'ipvs', 'nftables'] as const) {
    const how = overlay === 'ipvs' ? ' (no IPVS in this kernel: one warning, iptables mode)' : '';
    it(`deploy/overlays/${overlay}: the rendered DaemonSet and ConfigMap start cleanly, serve both families${how}`, async () => {
      const objects = renderKustomization(join(packageRoot(), 'deploy', 'overlays', overlay));
      const one = (kind: string): KObject => {
        const found = objects.filter((o) => o.kind === kind);
        assert.equal(found.length, 1, kind);
        return found[0]!;
      };
      type Container = {
        command?: string[];
        args: string[];
        env: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
        volumeMounts: { name: string; mountPath: string }[];
        readinessProbe: { httpGet: { path: string; port: number } };
      };
      const podSpec = (
        one('DaemonSet') as {
          spec: {
            template: {
              spec: { containers: Container[]; volumes: { name: string; configMap?: { name: string } }[] };
            };
          };
        }
      ).spec.template.spec;
      const c = podSpec.containers[0]!;
      assert.equal(c.command, undefined, "the image's entrypoint");
      // The ConfigMap's volume is mounted where POD_SCRIPT puts the ConfigMap's keys.
      const cm = one('ConfigMap') as { metadata: { name: string }; data: Record<string, string> };
      const volume = podSpec.volumes.find((v) => v.configMap?.name === cm.metadata.name);
      assert.equal(c.volumeMounts.find((m) => m.name === volume?.name)?.mountPath, '/var/lib/kube-proxy');
      const podEnv: Record<string, string> = {
        KUBERNETES_SERVICE_HOST: API.host,
        KUBERNETES_SERVICE_PORT: String(API.port),
        SVCPLANE_APP_DIR: packageRoot(), // the image's /app
      };
      for (const e of c.env) {
        if (e.value !== undefined) podEnv[e.name] = e.value;
        else if (e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName') podEnv[e.name] = NODE;
        else assert.fail(`env ${e.name}: not set by this test`);
      }
      assert.equal(podEnv.SVCPLANE_IPTABLES_MODE, 'nft');
      // The operator sets clusterCIDR to the cluster's pod CIDRs (the manifest's says so).
      const conf = cm.data['config.conf']!.replace(
        /^clusterCIDR: .*$/m,
        'clusterCIDR: 10.244.0.0/16,fd00:10:244::/64',
      );
      assert.notEqual(conf, cm.data['config.conf']);
      const t0 = Date.now();
      const { child, lines } = startPodWith(
        `deploy-${overlay}`,
        { ...cm.data, 'config.conf': conf },
        ['sh', ENTRYPOINT, ...expand(c.args, podEnv)],
        podEnv,
      );
      const running = await until(
        'svcplane running',
        () => {
          if (lines.some((l) => / svcplane\] "svcplane cannot start/.test(l)))
            throw new Error(lines.join('\n'));
          return lines.map(parseTextLine).find((l) => l?.message === 'svcplane running');
        },
        60_000,
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}\n${lines.slice(-40).join('\n')}`);
      });
      const mode = overlay === 'nftables' ? 'nftables' : 'iptables';
      assert.match(running.rest, new RegExp(`mode="${mode}" node="node-1"`));
      for (const l of lines) assert.ok(parseTextLine(l), `not a klog text line: ${l}`);
      const warnings = lines
        .map(parseTextLine)
        .filter((l) => l!.severity !== 'I')
        .map((l) => l!.message);
      assert.deepEqual(
        warnings.map((w) => w.replace(/ \(.*\);/s, ' (…);')),
        overlay === 'ipvs' ? ['IPVS proxy mode is unavailable (…); falling back to iptables mode'] : [],
        warnings.join('\n'),
      );
      assert.ok(api!.requestsSince(t0, 'Service', 'list') > 0);
      assert.equal(api!.lastAuthorization, `Bearer ${TOKEN}`);
      await answeredBy(WEB.v4, ['a', 'b']);
      await answeredBy(WEB.v6, ['a', 'b']);
      const nat = (await env.sb.exec('node', ['iptables-nft-save', '-t', 'nat'])).stdout;
      if (mode === 'iptables') {
        // The entrypoint chose the DaemonSet's backend: the rules are in iptables-nft's tables.
        assert.match(nat, /^:KUBE-SERVICES/m);
      } else {
        // kube-proxy's nftables table serves; the earlier runs' iptables rules were removed.
        const table = await env.sb.exec('node', ['nft', 'list', 'table', 'ip', 'kube-proxy']);
        assert.match(table.stdout, /chain services/);
        assert.doesNotMatch(nat, /KUBE-SERVICES/);
      }
      const probe = c.readinessProbe.httpGet;
      assert.equal(
        (await http('outside', `http://${env.sb.nodeIPv4}:${probe.port}${probe.path}`))?.code,
        200,
      );
      assert.equal(await child.stop(5000), 0, 'SIGTERM: exit 0');
    });
  }
});
