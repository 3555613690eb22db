import assert from 'node:assert/strict';
import { peerIP } from '../../src/netns/protocol.js';
import { podEndpoints, serviceObject, sliceObject } from '../support/iptables-harness.js';
import { expectReply } from '../support/sandbox.js';
import { UML_NODE, useUmlDaemon } from './helpers.js';

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
  const uml = useUmlDaemon(PORT);

  before(async () => {
    const sb = uml.sb;
    const daemon = await uml.start(
      [
        { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE }, spec: { podCIDRs: ['10.244.0.0/24'] } },
        serviceObject('web', { clusterIPs: [WEB], ports: [{ name: 'http', port: 80, targetPort: PORT }] }),
        sliceObject('web', 'IPv4', [{ name: 'http', port: PORT }], podEndpoints(sb, ['a', 'b'])),
      ],
      ['--proxy-mode=ipvs', '--detect-local-mode=NodeCIDR', '--healthz-bind-address=127.0.0.1:10256'],
    );
    // Logged once the first sync is in the kernel (after the 'synced' line), with the mode in effect.
    await daemon.waitFor('svcplane running', 0, (l) => l.message === 'svcplane running', 90_000);
  });

  it("starts in IPVS mode with the Node's pod CIDR as the detector, and serves", () => {
    const d = uml.daemon;
    const cidr = d.lines.find((l) => l.message === 'detect-local-mode NodeCIDR');
    assert.equal(cidr?.podCIDRs, '10.244.0.0/24', d.tail());
    const running = d.lines.find((l) => l.message === 'svcplane running');
    assert.equal(running?.mode, 'ipvs', 'no fallback to iptables mode');
  });

  it('pod → ClusterIP keeps its source (local); outside → ClusterIP is masqueraded (not local)', async () => {
    const sb = uml.sb;
    const fromPod = expectReply(await sb.request('client', { proto: 'tcp', ip: WEB, port: 80 }));
    assert.ok(['a', 'b'].includes(fromPod.pod), fromPod.pod);
    assert.equal(peerIP(fromPod.peer), sb.podIP('client'));
    const fromOutside = expectReply(await sb.request('outside', { proto: 'tcp', ip: WEB, port: 80 }));
    assert.equal(peerIP(fromOutside.peer), MASQ_V4);
  });
});
