import assert from 'node:assert/strict';
import type { IPFamily } from '../../src/model/types.js';
import { NetpolEnforcer } from '../../src/netpol/enforcer.js';
import type { ProbeResult } from '../../src/netns/protocol.js';
import {
  type HarnessMode,
  IptablesHarness,
  NODE_NAME,
  nodeObject,
  podEndpoints,
  serviceObject,
  sliceObject,
} from '../support/iptables-harness.js';
import { expectReply, useSandbox } from '../support/sandbox.js';

/**
 * NetworkPolicy with each proxy mode of this kernel: the Service rules written by the iptables
 * proxier or by the nftables proxier (kube-proxy's nftables layout, src/nftables; the mode is not on
 * the command line yet), the policy table by the enforcer, in one node. A dual-stack ClusterIP and a
 * NodePort to an isolated pod are judged on the backend after DNAT, IPv4 and IPv6: the allowed
 * client is answered through the Service, the other client and the outside client are not, and
 * the pods no policy selects stay reachable through their Service.
 */

const DB = 6379;
const WEB = 8080;
const NODE_PORT = 30079;

const blocked = (r: ProbeResult): boolean => !r.ok;

for (const mode of ['iptables', 'nftables'] as const satisfies readonly HarnessMode[]) {
  describe(`netpol with ${mode} mode: ClusterIP and NodePort to an isolated pod (real packets)`, function () {
    this.timeout(60_000);
    const env = useSandbox({
      brNetfilter: true,
      pods: [
        { name: 'db', index: 2, tcpPorts: [DB] },
        { name: 'web', index: 3, tcpPorts: [WEB] },
        { name: 'frontend', index: 10 },
        { name: 'other', index: 11 },
      ],
    });
    let h: IptablesHarness;
    const enforcer = (): NetpolEnforcer =>
      new NetpolEnforcer({ nodeName: NODE_NAME, families: ['IPv4', 'IPv6'], netns: env.sb.nodeNs });
    let np: NetpolEnforcer;

    const pod = (name: string, labels: Record<string, string>): unknown => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'default', labels },
      spec: { nodeName: NODE_NAME, containers: [{ name: 'c' }] },
      status: {
        phase: 'Running',
        podIPs: [{ ip: env.sb.podIP(name) }, { ip: env.sb.podIP(name, 'IPv6') }],
      },
    });

    before(async function () {
      this.timeout(30_000);
      const sb = env.sb;
      h = new IptablesHarness(sb, ['IPv4', 'IPv6'], mode);
      const objects = [
        nodeObject(sb),
        { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default' } },
        pod('db', { role: 'db' }),
        pod('web', { app: 'web' }),
        pod('frontend', { role: 'frontend' }),
        pod('other', { role: 'other' }),
        serviceObject('db', {
          type: 'NodePort',
          clusterIPs: ['10.96.79.1', 'fd00:10:96::79'],
          ports: [{ port: 80, targetPort: DB, nodePort: NODE_PORT }],
        }),
        sliceObject('db', 'IPv4', [{ port: DB }], podEndpoints(sb, ['db'])),
        sliceObject('db', 'IPv6', [{ port: DB }], podEndpoints(sb, ['db'], 'IPv6')),
        serviceObject('web', { clusterIPs: ['10.96.79.2'], ports: [{ port: 80, targetPort: WEB }] }),
        sliceObject('web', 'IPv4', [{ port: WEB }], podEndpoints(sb, ['web'])),
        {
          apiVersion: 'networking.k8s.io/v1',
          kind: 'NetworkPolicy',
          metadata: { name: 'db', namespace: 'default' },
          spec: {
            podSelector: { matchLabels: { role: 'db' } },
            ingress: [
              { from: [{ podSelector: { matchLabels: { role: 'frontend' } } }], ports: [{ port: DB }] },
            ],
          },
        },
      ];
      const state = await h.sync(objects);
      np = enforcer();
      await np.setup();
      await np.sync(state);
    });

    for (const family of ['IPv4', 'IPv6'] as const satisfies readonly IPFamily[]) {
      const clusterIP = family === 'IPv4' ? '10.96.79.1' : 'fd00:10:96::79';
      it(`${family}: the ClusterIP answers the allowed client only (judged on db:${DB} after DNAT)`, async () => {
        expectReply(await env.sb.request('frontend', { proto: 'tcp', ip: clusterIP, port: 80 }), 'db');
        assert.ok(
          blocked(await env.sb.request('other', { proto: 'tcp', ip: clusterIP, port: 80, timeoutMs: 1500 })),
        );
      });
    }

    it('the NodePort does not open the isolated pod to the outside; the node still reaches it', async () => {
      const r = await env.sb.request('outside', {
        proto: 'tcp',
        ip: env.sb.nodeIPv4,
        port: NODE_PORT,
        timeoutMs: 1500,
      });
      assert.ok(blocked(r), 'outside -> NodePort -> db');
      expectReply(await env.sb.request('node', { proto: 'tcp', ip: env.sb.podIP('db'), port: DB }), 'db');
    });

    it('a pod no policy selects stays reachable through its Service', async () => {
      expectReply(await env.sb.request('other', { proto: 'tcp', ip: '10.96.79.2', port: 80 }), 'web');
      expectReply(await env.sb.request('outside', { proto: 'tcp', ip: '10.96.79.2', port: 80 }), 'web');
    });

    it('the policy table and the proxy rules are both what was written', async () => {
      assert.deepEqual((await np.compare()).lines, []);
      if (mode === 'nftables') assert.equal(await h.nftProxier('IPv4').detectDrift(), false);
      else assert.equal(await h.proxier('IPv4').detectDrift(), false);
    });
  });
}
