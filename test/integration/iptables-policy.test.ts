import assert from 'node:assert/strict';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { getArg, parseIptablesSave, ruleComment, rulesOf } from '../../src/iptables/save-parse.js';
import { buildClusterState, type SourceObject } from '../../src/model/build.js';
import type { IPFamily } from '../../src/model/types.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { peerIP, type ProbeResult, type RequestSpec } from '../../src/netns/protocol.js';
import { NODE_NAME, sandboxProxierConfig, serviceObject, sliceObject } from '../support/iptables-harness.js';
import { expectError, expectReply, useSandbox } from '../support/sandbox.js';
import { traceAgrees } from '../support/trace-check.js';
import { traceOnNode } from '../../src/cli/trace.js';

/**
 * Traffic policies through the rules IptablesProxier writes into a sandbox node: what the traffic
 * scenario table (test/support/scenarios, run by scenarios-iptables for this mode) does not prove.
 * The table has eTP=Local from outside (NodePort IPv4/IPv6, LB IP), pods short-circuiting, iTP=Local
 * with its counted DROP (IPv4/IPv6), and, in IPv4, eTP=Local without a local endpoint (outside
 * dropped, pod and node served), the terminating fallback and zone hints. Here: those last three in
 * IPv6, `svcplane trace` agreeing with zone hints, and the health-check node port's ACCEPT rule.
 * Every claim is a real TCP connection from outside, a pod or the node itself. One sandbox and one
 * sync for the whole file: each Service carries one scenario.
 */

const NODE = NODE_NAME;
const TARGET = 8080;

interface EpSpec {
  readonly pod: string;
  readonly node?: string;
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating?: boolean;
  readonly zoneHints?: readonly string[];
}

interface SvcSpec {
  readonly name: string;
  readonly index: number;
  readonly type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  readonly nodePort?: number;
  readonly healthCheckNodePort?: number;
  readonly eTP?: 'Local' | 'Cluster';
  readonly iTP?: 'Local' | 'Cluster';
  readonly lbIP?: string;
  readonly endpoints: readonly EpSpec[];
}

const clusterIP = (i: number, family: IPFamily): string =>
  family === 'IPv4' ? `10.96.10.${i}` : `fd00:96::10:${i}`;

/** One dual-stack Service and its two EndpointSlices, as plain API objects. */
function objectsOf(sb: Sandbox, s: SvcSpec): SourceObject[] {
  const service = serviceObject(s.name, {
    type: s.type,
    clusterIPs: [clusterIP(s.index, 'IPv4'), clusterIP(s.index, 'IPv6')],
    ports: [{ name: 'http', port: 80, targetPort: TARGET, nodePort: s.nodePort }],
    externalTrafficPolicy: s.eTP,
    internalTrafficPolicy: s.iTP,
    healthCheckNodePort: s.healthCheckNodePort,
    ingress: s.lbIP ? [{ ip: s.lbIP }] : undefined,
  });
  const slice = (family: IPFamily): unknown =>
    sliceObject(
      s.name,
      family,
      [{ name: 'http', port: TARGET }],
      s.endpoints.map((e) => ({
        ip: sb.podIP(e.pod, family),
        ready: e.ready,
        serving: e.serving,
        terminating: e.terminating,
        nodeName: e.node,
        forZones: e.zoneHints,
      })),
    );
  return [service, slice('IPv4'), slice('IPv6')].map((obj, i) => ({ obj, source: `${s.name}#${i}` }));
}

const SERVICES: readonly SvcSpec[] = [
  // eTP=Local with one endpoint here (a) and one on another node (b).
  {
    name: 'etp-local',
    index: 1,
    type: 'LoadBalancer',
    nodePort: 30101,
    healthCheckNodePort: 30201,
    eTP: 'Local',
    lbIP: '198.51.100.10',
    endpoints: [{ pod: 'a' }, { pod: 'b', node: 'node-2' }],
  },
  // eTP=Local with endpoints only on another node.
  {
    name: 'etp-remote',
    index: 2,
    type: 'NodePort',
    nodePort: 30102,
    eTP: 'Local',
    endpoints: [{ pod: 'b', node: 'node-2' }],
  },
  // Only terminating endpoints: the serving one is used, the not-serving one never.
  {
    name: 'terminating',
    index: 5,
    endpoints: [
      { pod: 'a', ready: false, serving: true, terminating: true },
      { pod: 'b', ready: false, serving: false, terminating: true },
    ],
  },
  // Zone hints: only a is hinted for this node's zone.
  {
    name: 'topo',
    index: 6,
    endpoints: [
      { pod: 'a', zoneHints: ['zone-a'] },
      { pod: 'b', zoneHints: ['zone-b'] },
      { pod: 'c', zoneHints: ['zone-b'] },
    ],
  },
  // Hints exist but none is for zone-a: no filtering.
  {
    name: 'topo-nomatch',
    index: 7,
    endpoints: [
      { pod: 'a', zoneHints: ['zone-b'] },
      { pod: 'b', zoneHints: ['zone-c'] },
      { pod: 'c', zoneHints: ['zone-b'] },
    ],
  },
];

const NODE_OBJECT: SourceObject = {
  obj: {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: NODE, labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
    status: {
      addresses: [
        { type: 'InternalIP', address: '192.0.2.1' },
        { type: 'InternalIP', address: '2001:db8::1' },
      ],
    },
  },
  source: 'node#0',
};

/** Pods that answered `n` requests (errors are kept as `✗error`). */
async function answers(sb: Sandbox, from: string, req: RequestSpec, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await sb.request(from, { timeoutMs: 1500, ...req });
    out.push(r.ok ? r.reply.pod : `✗${r.error}`);
  }
  return out;
}

const FAMILIES: readonly IPFamily[] = ['IPv4', 'IPv6'];

describe('iptables traffic policies beyond the scenario table (real traffic)', function () {
  this.timeout(60_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [TARGET] },
      { name: 'b', index: 3, tcpPorts: [TARGET] },
      { name: 'c', index: 4, tcpPorts: [TARGET] },
      { name: 'client', index: 10 },
    ],
  });

  before(async function () {
    const sb = env.sb;
    const state = buildClusterState([NODE_OBJECT, ...SERVICES.flatMap((s) => objectsOf(sb, s))]);
    assert.deepEqual(state.problems, []);
    for (const family of FAMILIES) {
      const proxier = new IptablesProxier(sandboxProxierConfig(sb, { family }));
      await proxier.setup();
      const report = await proxier.sync(state);
      assert.equal(report.full, true);
    }
  });

  const nodeIP = (f: IPFamily): string => (f === 'IPv4' ? env.sb.nodeIPv4 : env.sb.nodeIPv6);
  const gateway = (f: IPFamily): string => (f === 'IPv4' ? env.sb.gatewayIPv4 : env.sb.gatewayIPv6);
  const peerOf = (r: ProbeResult): string => peerIP(expectReply(r).peer);

  const zoneHints = (family: IPFamily): void => {
    it("zone hints for this node's zone restrict the endpoints; hints for other zones only do not; trace agrees", async () => {
      const topo = await answers(env.sb, 'client', { proto: 'tcp', ip: clusterIP(6, family), port: 80 }, 8);
      assert.deepEqual(new Set(topo), new Set(['a']), topo.join(','));
      const seen = new Set<string>();
      for (let i = 0; i < 40 && seen.size < 3; i++) {
        for (const p of await answers(
          env.sb,
          'client',
          { proto: 'tcp', ip: clusterIP(7, family), port: 80 },
          1,
        ))
          seen.add(p);
      }
      assert.deepEqual([...seen].sort(), ['a', 'b', 'c']);
      // svcplane trace agrees: the zone-hinted endpoint only, then all three.
      const hinted = await traceAgrees(env.sb, 'client', {
        proto: 'tcp',
        ip: clusterIP(6, family),
        port: 80,
      });
      assert.deepEqual(
        hinted.endpoints.map((e) => e.endpoint),
        [family === 'IPv4' ? `${env.sb.podIP('a')}:${TARGET}` : `[${env.sb.podIP('a', family)}]:${TARGET}`],
      );
      const other = await traceAgrees(env.sb, 'client', {
        proto: 'tcp',
        ip: clusterIP(7, family),
        port: 80,
      });
      assert.equal(other.endpoints.length, 3);
    });
  };

  describe('IPv4', () => {
    zoneHints('IPv4');
  });

  describe('IPv6', () => {
    const family: IPFamily = 'IPv6';

    it('eTP=Local with endpoints only elsewhere: outside DROPs, a pod short-circuits, the node is masqueraded', async () => {
      const sb = env.sb;
      const req = { proto: 'tcp', ip: nodeIP(family), port: 30102 } as const;
      expectError(await sb.request('outside', { ...req, timeoutMs: 800 }), 'timeout');
      const fromPod = await sb.request('client', req);
      expectReply(fromPod, 'b');
      assert.equal(peerOf(fromPod), sb.podIP('client', family), 'pod traffic is not masqueraded');
      const fromNode = await sb.request('node', req);
      expectReply(fromNode, 'b');
      assert.equal(peerOf(fromNode), gateway(family), 'node traffic is masqueraded');
    });

    it('only terminating endpoints: the serving one answers, the not-serving one never', async () => {
      const got = await answers(env.sb, 'client', { proto: 'tcp', ip: clusterIP(5, family), port: 80 }, 8);
      assert.deepEqual(new Set(got), new Set(['a']), got.join(','));
    });

    zoneHints(family);
  });

  it('healthCheckNodePort gets the filter ACCEPT rule, and outside traffic to it hits that rule', async () => {
    const sb = env.sb;
    const accept = async (): Promise<{ packets: number } | undefined> => {
      const saved = parseIptablesSave(
        (await sb.exec('node', ['iptables-save', '-c', '-t', 'filter'])).stdout,
      );
      const rule = rulesOf(saved, 'filter', 'KUBE-NODEPORTS').find(
        (r) => ruleComment(r) === 'default/etp-local:http health check node port',
      );
      if (!rule) return undefined;
      assert.equal(getArg(rule, '--dport'), '30201');
      assert.equal(getArg(rule, '-j'), 'ACCEPT');
      return { packets: rule.packets ?? 0 };
    };
    const before = await accept();
    assert.ok(before, 'KUBE-NODEPORTS has the health check ACCEPT rule');
    // Nothing listens there in this test (the HTTP server is another component): refused, but accepted by the rule.
    expectError(await sb.request('outside', { proto: 'tcp', ip: sb.nodeIPv4, port: 30201 }), 'refused');
    const after = await accept();
    assert.ok(after && after.packets > before.packets, 'the ACCEPT rule counted the packet');
    // svcplane trace: delivered to the node itself (the health check server's port) through that rule.
    const { trace } = await traceOnNode(
      {
        src: sb.outsideIPv4,
        dst: sb.nodeIPv4,
        dport: 30201,
        proto: 'tcp',
        iptablesBinary: 'iptables',
        netns: sb.nodeNs,
      },
      'IPv4',
    );
    assert.equal(trace.verdict, 'local', JSON.stringify(trace.path));
    assert.ok(
      trace.path.some((s) => s.chain === 'KUBE-NODEPORTS' && s.action === 'ACCEPT'),
      JSON.stringify(trace.path),
    );
    assert.equal(
      (await traceAgrees(sb, 'outside', { proto: 'tcp', ip: sb.nodeIPv4, port: 30201 })).verdict,
      'local',
    );
    const v6 = parseIptablesSave((await sb.exec('node', ['ip6tables-save', '-t', 'filter'])).stdout);
    assert.ok(
      rulesOf(v6, 'filter', 'KUBE-NODEPORTS').some((r) => getArg(r, '--dport') === '30201'),
      'IPv6 too',
    );
  });
});
