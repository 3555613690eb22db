import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getContainerRuntimeClient, type StartedTestContainer } from 'testcontainers';
import { run as runHost } from '../../src/util/exec.js';
import { DockerScope, dockerUnavailable, run, runOk, type NodeContainer } from '../support/docker.js';
import { FakeApiServer } from '../support/fake-apiserver.js';
import { NetnsListener } from '../support/netns-listener.js';
import { skipBecause } from '../support/skip.js';

/**
 * svcplane's image as in a cluster: the node is its own container holding NET_ADMIN and nothing else
 * (not privileged, no NET_RAW), backends and a client are separate containers on a Docker network, and
 * the client reaches the Service IP (and a NodePort) only through the rules svcplane wrote in the
 * node's network namespace: the client routes the Service range via the node, as a node routes its pods'
 * traffic; the node DNATs to a backend and masquerades (the client is outside --cluster-cidr), so each
 * backend sees the node as the peer. Twice: from manifests, and against the Kubernetes API stand-in with
 * the in-cluster configuration a DaemonSet pod gets (service-account token and CA, KUBERNETES_SERVICE_*),
 * the stand-in serving TLS on port 6443 from the network namespace of a container of its own.
 * Run through scripts/test-docker.sh.
 */

const SERVICE_CIDR = '10.96.0.0/12';
const CLUSTER_IP = '10.96.0.50';
const API_CLUSTER_IP = '10.96.0.60';
const NODE_PORT = 30080;
const BACKEND_PORT = 8080;
const TOKEN = 'svcplane-docker-test-token';
const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** Answers each connection with "<its own address> <the peer it saw>" and closes. */
const ECHO_SERVER = `require('net').createServer((s) => s.end(s.localAddress + ' ' + s.remoteAddress + '\\n')).listen(${BACKEND_PORT}, '0.0.0.0')`;

/** Opens N connections one after another to HOST:PORT and prints each answer (or the error) on a line. */
const CLIENT = `
const net = require('net');
const [host, port, n] = process.argv.slice(1);
(async () => {
  for (let i = 0; i < Number(n); i++) {
    const answer = await new Promise((resolve) => {
      const s = net.connect({ host, port: Number(port) });
      let data = '';
      s.setTimeout(2000, () => { s.destroy(); resolve('timeout'); });
      s.on('data', (d) => (data += d));
      s.on('end', () => resolve(data.trim()));
      s.on('error', (e) => resolve('error ' + e.code));
    });
    console.log(answer);
  }
})();
`;

/** Prints `<status> <body>` of the daemon's /healthz (kube-proxy's health port). */
const HEALTHZ = `
require('http')
  .get('http://127.0.0.1:10256/healthz', (r) => {
    let b = '';
    r.on('data', (d) => (b += d));
    r.on('end', () => console.log(r.statusCode + ' ' + b));
  })
  .on('error', (e) => console.log('error ' + e.code));
`;

function service(name: string, clusterIP: string, nodePort?: number): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: {
      type: nodePort ? 'NodePort' : 'ClusterIP',
      clusterIP,
      clusterIPs: [clusterIP],
      ipFamilies: ['IPv4'],
      selector: { app: name },
      ports: [
        {
          name: 'tcp',
          protocol: 'TCP',
          port: 80,
          targetPort: BACKEND_PORT,
          ...(nodePort ? { nodePort } : {}),
        },
      ],
    },
  };
}

function slice(name: string, backends: readonly string[]): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${name}-abc12`,
      namespace: 'default',
      labels: {
        'kubernetes.io/service-name': name,
        'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
      },
    },
    addressType: 'IPv4',
    ports: [{ name: 'tcp', protocol: 'TCP', port: BACKEND_PORT }],
    endpoints: backends.map((ip, i) => ({
      addresses: [ip],
      conditions: { ready: true },
      nodeName: 'node-1',
      targetRef: { kind: 'Pod', namespace: 'default', name: `echo-${i}` },
    })),
  };
}

async function until(what: string, ms: number, cond: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** CAP_NET_ADMIN (12) alone. */
const NET_ADMIN = 1n << 12n;

describe('svcplane in a cluster of containers: node (NET_ADMIN only), backends, client (docker)', function () {
  this.timeout(180_000);
  const scope = new DockerScope();
  let net = '';
  let client: StartedTestContainer;
  /** The backends' addresses (the engine picks them). */
  const backends: string[] = [];

  before(async function () {
    const why = await dockerUnavailable();
    if (why) skipBecause(this, `docker tests: ${why}`);
    net = await scope.network('cluster');
    for (const i of [0, 1]) {
      const echo = await scope.start(`echo-${i}`, (c) =>
        c.withNetworkMode(net).withEntrypoint(['node', '-e', ECHO_SERVER]),
      );
      backends.push(echo.getIpAddress(net));
    }
    // The client gets NET_ADMIN only to install its route to the Service range via the node (what a
    // CNI does for a pod); its requests are plain connections.
    client = await scope.start('client', (c) =>
      c
        .withNetworkMode(net)
        .withEntrypoint(['sleep', 'infinity'])
        .withDroppedCapabilities('ALL')
        .withAddedCapabilities('NET_ADMIN')
        .withSysctls({
          'net.ipv4.conf.all.accept_redirects': '0',
          'net.ipv4.conf.default.accept_redirects': '0',
        }),
    );
  });

  after(async () => {
    await scope.close();
    if (files) await rm(files, { recursive: true, force: true });
  });

  let files = '';
  /** A host directory with `content` (file name → text), for a read-only bind mount. */
  async function hostDir(name: string, content: Record<string, string>): Promise<string> {
    files ||= await mkdtemp(join(tmpdir(), 'svcp-docker-'));
    const dir = join(files, name);
    await mkdir(dir);
    for (const [file, text] of Object.entries(content)) await writeFile(join(dir, file), text);
    return dir;
  }

  /**
   * A node container, as the DaemonSet's pod (deploy/base/daemonset.yaml): every capability dropped but
   * NET_ADMIN, read-only root with /tmp in memory, the nft backend; files come in as read-only mounts
   * (manifests, the service account). Routing on: the node forwards its clients' traffic.
   */
  const nodeContainer = (mounts: Record<string, string>) => (c: NodeContainer) =>
    c
      .withNetworkMode(net)
      .withHostname('node-1')
      .withDroppedCapabilities('ALL')
      .withAddedCapabilities('NET_ADMIN')
      .withReadOnlyRootFilesystem()
      .withTmpFs({ '/tmp': 'rw,size=16m' })
      .withEnvironment({ SVCPLANE_IPTABLES_MODE: 'nft' })
      .withBindMounts(
        Object.entries(mounts).map(([target, source]) => ({ source, target, mode: 'ro' as const })),
      )
      // /proc/sys is read-only without privileges: the engine sets what a node has.
      .withSysctls({
        'net.ipv4.ip_forward': '1',
        'net.ipv4.conf.all.route_localnet': '1',
        'net.ipv4.conf.all.send_redirects': '0',
        'net.ipv4.conf.default.send_redirects': '0',
      });

  async function routeServicesVia(node: string): Promise<void> {
    await runOk(client, ['ip', 'route', 'replace', SERVICE_CIDR, 'via', node]);
  }

  /** `n` connections from the client to ip:port: [backend address, peer the backend saw] each. */
  async function ask(ip: string, port: number, n: number): Promise<string[][]> {
    const out = await runOk(client, ['node', '-e', CLIENT, ip, String(port), String(n)]);
    return out
      .trim()
      .split('\n')
      .map((l) => l.split(' '));
  }

  /** Every answer from a backend, seen from the node (masqueraded), and both backends answered. */
  function assertThroughNode(
    answers: string[][],
    node: string,
    expected: readonly string[] = backends,
  ): void {
    for (const [backend, peer] of answers) {
      assert.ok(
        expected.includes(backend ?? ''),
        `answered by "${backend ?? ''} ${peer ?? ''}", not a backend`,
      );
      assert.equal(peer, node, 'the backend sees the node (svcplane masqueraded the client)');
    }
    assert.deepEqual([...new Set(answers.map((a) => a[0]))].sort(), [...expected].sort());
  }

  async function healthy(node: StartedTestContainer): Promise<void> {
    let last = '';
    await until('/healthz 200', 30_000, async () => {
      last = (await run(node, ['node', '-e', HEALTHZ])).stdout.trim();
      return last.startsWith('200 ');
    }).catch(async (err: unknown) => {
      const logs = await runHost(['/usr/bin/docker', 'logs', '--tail', '40', node.getId()], {
        allowFailure: true,
      });
      throw new Error(`${String(err)} (last: "${last}")\n${logs.stdout}${logs.stderr}`);
    });
  }

  async function capEff(node: StartedTestContainer): Promise<bigint> {
    // PID 1 is the entrypoint, exec'd into svcplane.
    const status = await runOk(node, ['cat', '/proc/1/status']);
    const comm = await runOk(node, ['cat', '/proc/1/cmdline']);
    assert.match(comm, /svcplane|main\.js/, `PID 1 is svcplane: ${comm}`);
    const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
    assert.ok(hex);
    return BigInt(`0x${hex}`);
  }

  it('from manifests: client → ClusterIP and NodePort → both backends, only through the node', async () => {
    // Control: no backend answers the Service IP before svcplane runs (no route, no rules).
    for (const [answer] of await ask(CLUSTER_IP, 80, 1))
      assert.ok(!backends.includes(answer ?? ''), `answered by ${answer ?? ''} without svcplane`);
    const manifests = await hostDir('manifests', {
      'echo.yaml': [service('echo', CLUSTER_IP, NODE_PORT), slice('echo', backends)]
        .map((o) => JSON.stringify(o))
        .join('\n---\n'),
    });
    const node = await scope.start('node', (c) =>
      nodeContainer({ '/manifests': manifests })(c).withCommand([
        'run',
        '--manifests=/manifests',
        '--hostname-override=node-1',
        '--cluster-cidr=10.244.0.0/16',
        '--iptables-min-sync-period=100ms',
      ]),
    );
    const nodeIP = node.getIpAddress(net);
    await routeServicesVia(nodeIP);
    await healthy(node);
    assert.equal(await capEff(node), NET_ADMIN, 'svcplane runs with NET_ADMIN only');
    assertThroughNode(await ask(CLUSTER_IP, 80, 30), nodeIP);
    assertThroughNode(await ask(nodeIP, NODE_PORT, 30), nodeIP);
    // The rules are in the node's namespace, not the client's: the client has no nat rule at all.
    assert.doesNotMatch(
      await runOk(client, ['sh', '-c', 'cat /proc/net/ip_tables_names 2>/dev/null; true']),
      /nat/,
    );
  });

  describe('against the API stand-in (in-cluster configuration, TLS, token)', () => {
    let api: FakeApiServer | undefined;
    let listener: NetnsListener | undefined;
    const netnsName = `svcp-dk-${Math.random().toString(36).slice(2, 8)}`;
    let apiIP = '';

    before(async () => {
      // A container that only holds the API address; the stand-in (this process) listens in its namespace.
      const holder = await scope.start('apiserver', (c) =>
        c.withNetworkMode(net).withEntrypoint(['sleep', 'infinity']),
      );
      const pid = (
        await (
          await getContainerRuntimeClient()
        ).container.inspect((await getContainerRuntimeClient()).container.getById(holder.getId()))
      ).State.Pid;
      apiIP = holder.getIpAddress(net);
      await runHost(['ip', 'netns', 'attach', netnsName, String(pid)]);
      listener = NetnsListener.start(netnsName);
      api = await FakeApiServer.create({
        tls: true,
        certificateIPs: [apiIP],
        tokens: [TOKEN],
        listenHandle: () => listener!.listen(apiIP, 6443),
      });
    });

    after(async () => {
      await api?.stop();
      await listener?.close();
      await runHost(['ip', 'netns', 'delete', netnsName], { allowFailure: true });
    });

    it('Services and slices from the API: traffic through the node; a scale-down and a deletion follow', async () => {
      const sa = await hostDir('serviceaccount', {
        token: TOKEN,
        'ca.crt': api!.caPem!,
        namespace: 'default',
      });
      const node = await scope.start('node-api', (c) =>
        nodeContainer({ [SA_DIR]: sa })(c)
          .withEnvironment({
            KUBERNETES_SERVICE_HOST: apiIP,
            KUBERNETES_SERVICE_PORT: '6443',
            NODE_NAME: 'node-1',
          })
          .withCommand([
            'run',
            '--hostname-override=node-1',
            '--cluster-cidr=10.244.0.0/16',
            '--iptables-min-sync-period=100ms',
          ]),
      );
      const nodeIP = node.getIpAddress(net);
      await routeServicesVia(nodeIP);
      // The cluster's objects appear while svcplane runs (it started on an empty cluster).
      api!.create('Node', {
        metadata: { name: 'node-1', labels: { 'kubernetes.io/hostname': 'node-1' } },
        status: { addresses: [{ type: 'InternalIP', address: nodeIP }] },
      });
      api!.create('Service', service('web', API_CLUSTER_IP, NODE_PORT));
      api!.create('EndpointSlice', slice('web', backends));
      await healthy(node);
      assert.equal(await capEff(node), NET_ADMIN, 'svcplane runs with NET_ADMIN only');
      assert.ok(api!.requests(undefined, 'watch') >= 3, 'svcplane watches the API');
      await until('the Service from the API answers', 15_000, async () =>
        (await ask(API_CLUSTER_IP, 80, 1)).every((a) => backends.includes(a[0] ?? '')),
      );
      assertThroughNode(await ask(API_CLUSTER_IP, 80, 30), nodeIP);
      assertThroughNode(await ask(nodeIP, NODE_PORT, 30), nodeIP);

      // Scaled down through the API: only the remaining backend answers.
      api!.update('EndpointSlice', slice('web', [backends[0]!]));
      await until('only echo-0 answers', 15_000, async () =>
        (await ask(API_CLUSTER_IP, 80, 6)).every((a) => a[0] === backends[0]),
      );
      assertThroughNode(await ask(API_CLUSTER_IP, 80, 10), nodeIP, [backends[0]!]);

      // Deleted through the API: the Service IP is gone.
      api!.delete('Service', 'default', 'web');
      await until('the Service IP stops answering', 15_000, async () =>
        (await ask(API_CLUSTER_IP, 80, 1)).every((a) => a[0] === 'timeout' || a[0] === 'error'),
      );
    });
  });
});
