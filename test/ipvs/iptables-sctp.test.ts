import assert from 'node:assert/strict';
import { traceOnNode } from '../../src/cli/trace.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { buildClusterState } from '../../src/model/build.js';
import type { ClusterState } from '../../src/model/types.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { run } from '../../src/util/exec.js';
import { sandboxProxierConfig } from '../support/iptables-harness.js';
import { useSandbox } from '../support/sandbox.js';
import { Background, requireUml, tryCmd, waitFor } from './helpers.js';

/**
 * iptables mode with real SCTP associations (issue 8 §1: TCP, UDP and SCTP). The host kernel has no
 * SCTP; User-mode Linux has sctp.ko. The sandbox agent speaks no SCTP, so socat serves and connects:
 * each pod's server answers an association with its own address and the peer address it saw
 * (socat's SOCAT_SOCKADDR / SOCAT_PEERADDR), then closes.
 */

const PORT = 7777;
const NODE_PORT = 30777;
const CLUSTER_IP = '10.96.70.1';
const MASQ = '10.244.0.1';

function sctpState(sb: Sandbox): ClusterState {
  return buildClusterState([
    {
      obj: {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'sctp', namespace: 'default' },
        spec: {
          type: 'NodePort',
          clusterIP: CLUSTER_IP,
          ports: [{ name: 'assoc', protocol: 'SCTP', port: PORT, targetPort: PORT, nodePort: NODE_PORT }],
        },
      },
    },
    {
      obj: {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: 'sctp-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'sctp' } },
        addressType: 'IPv4',
        ports: [{ name: 'assoc', port: PORT, protocol: 'SCTP' }],
        endpoints: ['a', 'b'].map((p) => ({ addresses: [sb.podIP(p)], nodeName: 'node-1' })),
      },
    },
  ]);
}

describe('iptables mode: SCTP through the rules (UML, real associations)', function () {
  this.timeout(120_000);
  before(function () {
    requireUml(this);
  });
  const ctx = useSandbox({ pods: [{ name: 'a' }, { name: 'b' }, { name: 'client' }] });
  const servers: Background[] = [];

  after(async () => {
    for (const s of servers) await s.stop();
  });

  /** One SCTP association from `where` to ip:port: the server's address and the peer it saw. */
  async function associate(
    where: string,
    ip: string,
    port: number,
  ): Promise<{ server: string; peer: string }> {
    const { sb } = ctx;
    const res = await run(['socat', '-T', '10', '-u', `SCTP-CONNECT:${ip}:${port}`, 'STDOUT'], {
      netns: sb.nsOf(where),
      timeoutMs: 20_000,
    });
    const [server = '', peer = ''] = res.stdout.trim().split('\n');
    return { server, peer };
  }

  it('a ClusterIP and a NodePort SCTP Service reach SCTP servers in pods, masqueraded as for TCP', async () => {
    const { sb } = ctx;
    const loaded = await tryCmd(['modprobe', 'sctp']);
    assert.equal(loaded.exitCode, 0, `sctp.ko: ${loaded.stderr}`);
    for (const pod of ['a', 'b']) {
      const server = new Background([
        'ip',
        'netns',
        'exec',
        sb.nsOf(pod),
        'socat',
        `SCTP-LISTEN:${PORT},fork,reuseaddr`,
        'EXEC:printenv SOCAT_SOCKADDR SOCAT_PEERADDR',
      ]);
      servers.push(server);
    }
    // Each server answers on its own address first (no rules involved yet).
    for (const pod of ['a', 'b']) {
      await waitFor(`SCTP server in ${pod}`, async () => {
        if (!servers.every((s) => s.running)) assert.fail(servers.map((s) => s.log).join('\n'));
        const r = await run(['socat', '-T', '10', '-u', `SCTP-CONNECT:${sb.podIP(pod)}:${PORT}`, 'STDOUT'], {
          netns: sb.nsOf('client'),
          timeoutMs: 20_000,
          allowFailure: true,
        });
        return r.exitCode === 0 && r.stdout.startsWith(sb.podIP(pod));
      });
    }

    const proxier = new IptablesProxier(sandboxProxierConfig(sb, { localhostNodePorts: false }));
    await proxier.setup();
    await proxier.sync(sctpState(sb));
    const save = await proxier.ipt.save('nat');
    assert.match(save, new RegExp(`-d ${CLUSTER_IP}/32 -p sctp .*-m sctp --dport ${PORT} -j KUBE-SVC-`));

    // From a pod: both endpoints serve, the pod's own address is the peer (no masquerade).
    const seen = new Set<string>();
    for (let i = 0; i < 20 && seen.size < 2; i++) {
      const { server, peer } = await associate('client', CLUSTER_IP, PORT);
      assert.ok([sb.podIP('a'), sb.podIP('b')].includes(server), `answered by "${server}"`);
      assert.equal(peer, sb.podIP('client'), 'pod → ClusterIP is not masqueraded');
      seen.add(server);
    }
    assert.deepEqual([...seen].sort(), [sb.podIP('a'), sb.podIP('b')].sort(), 'both endpoints answered');

    // From the node itself and from outside through the NodePort: masqueraded.
    assert.equal((await associate('node', CLUSTER_IP, PORT)).peer, MASQ);
    const np = await associate('outside', sb.nodeIPv4, NODE_PORT);
    assert.ok([sb.podIP('a'), sb.podIP('b')].includes(np.server), `NodePort answered by "${np.server}"`);
    assert.equal(np.peer, MASQ, 'NodePort (eTP=Cluster) is masqueraded');
  });

  it('svcplane trace of the SCTP ClusterIP and NodePort agrees with real associations (endpoints, masquerade)', async () => {
    const { sb } = ctx;
    for (const [from, src, ip, port, fromNode] of [
      ['client', sb.podIP('client'), CLUSTER_IP, PORT, false],
      ['node', sb.nodeIPv4, CLUSTER_IP, PORT, true],
      ['outside', sb.outsideIPv4, sb.nodeIPv4, NODE_PORT, false],
    ] as const) {
      const { trace } = await traceOnNode(
        { src, dst: ip, dport: port, proto: 'sctp', iptablesBinary: 'iptables', netns: sb.nodeNs, fromNode },
        'IPv4',
      );
      assert.deepEqual(trace.unsupported, []);
      assert.equal(trace.verdict, 'dnat', `${from} → ${ip}:${port}`);
      const predicted = new Map(trace.endpoints.map((e) => [e.endpoint.replace(/:\d+$/, ''), e.masquerade]));
      assert.deepEqual([...predicted.keys()].sort(), [sb.podIP('a'), sb.podIP('b')].sort());
      // Every association lands on a predicted endpoint and sees the predicted source; both are reached.
      const seen = new Set<string>();
      for (let i = 0; i < 20 && seen.size < 2; i++) {
        const { server, peer } = await associate(from, ip, port);
        assert.ok(
          predicted.has(server),
          `${from}: answered by "${server}", predicted ${[...predicted.keys()].join(', ')}`,
        );
        assert.equal(
          peer,
          predicted.get(server) ? MASQ : src,
          `${from}: masquerade ${String(predicted.get(server))} predicted`,
        );
        seen.add(server);
      }
      assert.equal(seen.size, 2, `${from}: both predicted endpoints answered`);
    }
    // The same packet as TCP is none of this Service's.
    const tcp = await traceOnNode(
      {
        src: sb.podIP('client'),
        dst: CLUSTER_IP,
        dport: PORT,
        proto: 'tcp',
        iptablesBinary: 'iptables',
        netns: sb.nodeNs,
      },
      'IPv4',
    );
    assert.notEqual(tcp.trace.verdict, 'dnat');
  });
});
