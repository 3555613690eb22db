import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peerIP } from '../../src/netns/protocol.js';
import type { Daemon } from '../support/daemon.js';
import { expectReply, useSandbox } from '../support/sandbox.js';
import { requireUml, startUmlDaemon, UML_NODE } from './helpers.js';

/**
 * `svcplane run --proxy-mode ipvs --detect-local-mode NodeCIDR` (the daemon, from the build): the
 * Node's spec.podCIDRs are resolved before the IPVS backends are built, as in iptables mode, and the
 * detector is `! -s <pod CIDR>`: a pod's connection to a ClusterIP keeps its source, a connection
 * from outside the pod CIDR is masqueraded. On main before the mode contract the daemon could not
 * start ("--detect-local-mode=NodeCIDR: the Node's pod CIDRs were not resolved").
 */

const NODE = UML_NODE;
const PORT = 8080;
const WEB = '10.96.81.1';
/** The node's bridge address: the source a masqueraded connection arrives from. */
const MASQ_V4 = '10.244.0.1';

describe('IPVS mode with --detect-local-mode NodeCIDR (daemon, UML)', function () {
  this.timeout(180_000);
  before(function () {
    requireUml(this);
  });
  const env = useSandbox({
    pods: [{ name: 'a', tcpPorts: [PORT] }, { name: 'b', tcpPorts: [PORT] }, { name: 'client' }],
  });
  let dir = '';
  let daemon: Daemon | undefined;

  before(async () => {
    const sb = env.sb;
    dir = await mkdtemp(join(tmpdir(), 'svcp-nodecidr-'));
    const objects = [
      { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE }, spec: { podCIDRs: ['10.244.0.0/24'] } },
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'web', namespace: 'default' },
        spec: { clusterIP: WEB, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: PORT }] },
      },
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: 'web-x', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
        addressType: 'IPv4',
        ports: [{ name: 'http', protocol: 'TCP', port: PORT }],
        endpoints: ['a', 'b'].map((p) => ({
          addresses: [sb.podIP(p)],
          conditions: { ready: true },
          nodeName: NODE,
        })),
      },
    ];
    await writeFile(join(dir, 'cluster.json'), JSON.stringify(objects));
    daemon = startUmlDaemon(sb, dir, [
      '--proxy-mode=ipvs',
      '--detect-local-mode=NodeCIDR',
      '--healthz-bind-address=127.0.0.1:10256',
    ]);
    // Logged once the first sync is in the kernel (after the 'synced' line), with the mode in effect.
    await daemon.waitFor('svcplane running', 0, (l) => l.message === 'svcplane running', 90_000);
  });

  after(async function () {
    this.timeout(30_000);
    await daemon?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("starts in IPVS mode with the Node's pod CIDR as the detector, and serves", () => {
    const d = daemon!;
    const cidr = d.lines.find((l) => l.message === 'detect-local-mode NodeCIDR');
    assert.equal(cidr?.podCIDRs, '10.244.0.0/24', d.tail());
    const running = d.lines.find((l) => l.message === 'svcplane running');
    assert.equal(running?.mode, 'ipvs', 'no fallback to iptables mode');
  });

  it('pod → ClusterIP keeps its source (local); outside → ClusterIP is masqueraded (not local)', async () => {
    const sb = env.sb;
    const fromPod = expectReply(await sb.request('client', { proto: 'tcp', ip: WEB, port: 80 }));
    assert.ok(['a', 'b'].includes(fromPod.pod), fromPod.pod);
    assert.equal(peerIP(fromPod.peer), sb.podIP('client'));
    const fromOutside = expectReply(await sb.request('outside', { proto: 'tcp', ip: WEB, port: 80 }));
    assert.equal(peerIP(fromOutside.peer), MASQ_V4);
  });
});
