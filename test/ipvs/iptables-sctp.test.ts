import assert from 'node:assert/strict';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { buildClusterState } from '../../src/model/build.js';
import type { ClusterState } from '../../src/model/types.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { run } from '../../src/util/exec.js';
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

    const proxier = new IptablesProxier({
      family: 'IPv4',
      nodeName: 'node-1',
      masqueradeBit: 14,
      masqueradeAll: false,
      detectLocalMode: 'ClusterCIDR',
      clusterCIDRs: ['10.244.0.0/16'],
      nodePortAddresses: [],
      localhostNodePorts: false,
      netns: sb.nodeNs,
    });
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
});
