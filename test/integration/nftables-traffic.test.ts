import assert from 'node:assert/strict';
import type { RequestSpec } from '../../src/netns/protocol.js';
import { portNames } from '../../src/nftables/names.js';
import { deleteKubeProxyTables } from '../../src/nftables/nft.js';
import { traceNftables, type NftTracePacket, type NftTraceResult } from '../../src/nftables/trace.js';
import { listAddresses } from '../../src/kernel/netif.js';
import type { Where } from '../../src/netns/sandbox.js';
import {
  answeredPeer,
  assertAnsweredBy,
  expectNoAnswer,
  IptablesHarness,
  nodeObject,
  podEndpoints,
  serviceObject,
  sliceObject,
  type ProxierOptions,
} from '../support/iptables-harness.js';
import { requireRoot, useSandbox } from '../support/sandbox.js';
import { traceAgrees } from '../support/trace-check.js';

/**
 * nftables mode (kube-proxy's nftables proxier) proven by real traffic, IPv4 and IPv6: plain
 * Service and EndpointSlice objects → buildClusterState → NftablesProxier (both families,
 * in-process, programming the sandbox node with `nft -f -`) → real TCP/UDP requests from pods, the
 * node and the outside. The scenarios are iptables mode's (iptables-frontends.test.ts); where
 * kube-proxy's nftables mode differs on purpose (no localhost NodePorts; unknown ports of a
 * ClusterIP are rejected) the test says so.
 */

const BACKENDS = ['a', 'b'] as const;
const WEB = 8080;
const METRICS = 9100;
const DNS = 53;
const MASQ_V4 = '10.244.0.1';
const MASQ_V6 = 'fd00:10:244::1';
const OUTSIDE_OTHER_IP = '192.0.2.3';
const CLIENT_IPS = Array.from({ length: 8 }, (_, i) => `192.0.2.${100 + i}`);
/** A client address only the trace test uses (no affinity entry from another test). */
const TRACE_CLIENT_IP = '192.0.2.120';
const EXTERNAL_IP_V6 = '2001:db8:ff::10';
const DROP_MS = 600;
const QUICK_MS = 1000;
const LONG_MS = 3000;

const tcp = (ip: string, port: number, timeoutMs?: number): RequestSpec => ({
  proto: 'tcp',
  ip,
  port,
  ...(timeoutMs !== undefined ? { timeoutMs } : {}),
});
const udp = (ip: string, port: number, timeoutMs?: number): RequestSpec => ({
  proto: 'udp',
  ip,
  port,
  ...(timeoutMs !== undefined ? { timeoutMs } : {}),
});

describe('nftables mode: frontends, policies and masquerade (real traffic)', function () {
  this.timeout(30_000);
  const env = useSandbox({
    brNetfilter: true,
    pods: [
      { name: 'a', index: 2, tcpPorts: [WEB, METRICS, DNS], udpPorts: [DNS] },
      { name: 'b', index: 3, tcpPorts: [WEB, METRICS, DNS], udpPorts: [DNS] },
      { name: 'client', index: 10 },
    ],
  });
  let h: IptablesHarness;

  function objects(extra: unknown[] = []): unknown[] {
    const sb = env.sb;
    const both = podEndpoints(sb, BACKENDS);
    const both6 = podEndpoints(sb, BACKENDS, 'IPv6');
    const web = [{ port: WEB }];
    const npPorts = [
      { name: 'http', port: WEB },
      { name: 'dns', port: DNS, protocol: 'UDP' as const },
    ];
    return [
      nodeObject(sb),
      serviceObject('web', {
        clusterIPs: ['10.96.0.10'],
        ports: [
          { name: 'http', port: 80, targetPort: 'web' },
          { name: 'metrics', port: 9090, targetPort: METRICS },
        ],
      }),
      sliceObject(
        'web',
        'IPv4',
        [
          { name: 'http', port: WEB },
          { name: 'metrics', port: METRICS },
        ],
        both,
      ),
      serviceObject('dns', {
        clusterIPs: ['10.96.0.53'],
        ports: [
          { name: 'dns', port: DNS, protocol: 'UDP' },
          { name: 'dns-tcp', port: DNS, protocol: 'TCP' },
        ],
      }),
      sliceObject(
        'dns',
        'IPv4',
        [
          { name: 'dns', port: DNS, protocol: 'UDP' },
          { name: 'dns-tcp', port: DNS, protocol: 'TCP' },
        ],
        both,
      ),
      serviceObject('dual', {
        clusterIPs: ['10.96.0.20', 'fd00:10:96::20'],
        ports: [{ port: 80, targetPort: WEB }],
      }),
      sliceObject('dual', 'IPv4', web, both),
      sliceObject('dual', 'IPv6', web, both6),
      serviceObject('np', {
        type: 'NodePort',
        clusterIPs: ['10.96.0.30', 'fd00:10:96::30'],
        ports: [
          { name: 'http', port: 80, targetPort: WEB, nodePort: 30080 },
          { name: 'dns', port: DNS, protocol: 'UDP', nodePort: 30053 },
        ],
      }),
      sliceObject('np', 'IPv4', npPorts, both),
      sliceObject('np', 'IPv6', npPorts, both6),
      serviceObject('ext', {
        clusterIPs: ['10.96.0.31', 'fd00:10:96::31'],
        externalIPs: ['203.0.113.10', EXTERNAL_IP_V6],
        ports: [{ port: 80, targetPort: WEB }],
      }),
      sliceObject('ext', 'IPv4', web, both),
      sliceObject('ext', 'IPv6', web, both6),
      serviceObject('lb', {
        type: 'LoadBalancer',
        clusterIPs: ['10.96.0.40'],
        ports: [{ port: 80, targetPort: WEB, nodePort: 30040 }],
        ingress: [{ ip: '198.51.100.10' }, { ip: '198.51.100.11', ipMode: 'Proxy' }],
      }),
      sliceObject('lb', 'IPv4', web, both),
      serviceObject('lbsr', {
        type: 'LoadBalancer',
        clusterIPs: ['10.96.0.41'],
        ports: [{ port: 80, targetPort: WEB, nodePort: 30041 }],
        ingress: [{ ip: '198.51.100.20', ipMode: 'VIP' }],
        loadBalancerSourceRanges: [`${sb.outsideIPv4}/32`],
      }),
      sliceObject('lbsr', 'IPv4', web, both),
      serviceObject('empty', {
        type: 'NodePort',
        clusterIPs: ['10.96.0.50', 'fd00:10:96::50'],
        externalIPs: ['203.0.113.50'],
        ports: [
          { name: 'tcp', port: 80, nodePort: 30050 },
          { name: 'udp', port: DNS, protocol: 'UDP', nodePort: 30051 },
        ],
      }),
      serviceObject('hair', {
        clusterIPs: ['10.96.0.60', 'fd00:10:96::60'],
        ports: [{ port: 80, targetPort: WEB }],
      }),
      sliceObject('hair', 'IPv4', web, podEndpoints(sb, ['a'])),
      sliceObject('hair', 'IPv6', web, podEndpoints(sb, ['a'], 'IPv6')),
      serviceObject('sticky', {
        clusterIPs: ['10.96.0.70', 'fd00:10:96::70'],
        ports: [{ port: 80, targetPort: WEB }],
        sessionAffinity: { timeoutSeconds: 300 },
      }),
      sliceObject('sticky', 'IPv4', web, both),
      sliceObject('sticky', 'IPv6', web, both6),
      // eTP=Local with one local endpoint (a) and one elsewhere (b, on node-2).
      serviceObject('local', {
        type: 'NodePort',
        clusterIPs: ['10.96.0.90', 'fd00:10:96::90'],
        externalTrafficPolicy: 'Local',
        ports: [{ port: 80, targetPort: WEB, nodePort: 30090 }],
      }),
      sliceObject('local', 'IPv4', web, [{ ip: sb.podIP('a') }, { ip: sb.podIP('b'), nodeName: 'node-2' }]),
      sliceObject('local', 'IPv6', web, [
        { ip: sb.podIP('a', 'IPv6') },
        { ip: sb.podIP('b', 'IPv6'), nodeName: 'node-2' },
      ]),
      // eTP=Local with no local endpoint: external traffic dropped, pods still served.
      serviceObject('remote', {
        type: 'NodePort',
        clusterIPs: ['10.96.0.91'],
        externalTrafficPolicy: 'Local',
        ports: [{ port: 80, targetPort: WEB, nodePort: 30091 }],
      }),
      sliceObject('remote', 'IPv4', web, [{ ip: sb.podIP('b'), nodeName: 'node-2' }]),
      // iTP=Local with no local endpoint: ClusterIP traffic dropped.
      serviceObject('itp', {
        clusterIPs: ['10.96.0.92'],
        internalTrafficPolicy: 'Local',
        ports: [{ port: 80, targetPort: WEB }],
      }),
      sliceObject('itp', 'IPv4', web, [{ ip: sb.podIP('b'), nodeName: 'node-2' }]),
      // No ready endpoint: the serving terminating one (b) takes the traffic.
      serviceObject('term', { clusterIPs: ['10.96.0.93'], ports: [{ port: 80, targetPort: WEB }] }),
      sliceObject('term', 'IPv4', web, [
        { ip: sb.podIP('a'), ready: false, serving: false, terminating: true },
        { ip: sb.podIP('b'), ready: false, serving: true, terminating: true },
      ]),
      ...extra,
    ];
  }

  const scenario = (opts: ProxierOptions = {}, extra: unknown[] = []): Promise<unknown> =>
    h.sync(objects(extra), opts);

  before(async function () {
    requireRoot(this);
    this.timeout(60_000);
    h = new IptablesHarness(env.sb, ['IPv4', 'IPv6'], 'nftables');
    await h.addAddresses(
      'outside',
      'eth0',
      [OUTSIDE_OTHER_IP, TRACE_CLIENT_IP, ...CLIENT_IPS].map((ip) => `${ip}/24`),
    );
    await scenario();
  });

  describe('ClusterIP', () => {
    beforeEach(() => scenario());

    it('from a pod: both endpoints answer, the pod is the source; several ports; other ports rejected', async () => {
      const sb = env.sb;
      for (const [port, target] of [
        [80, WEB],
        [9090, METRICS],
      ] as const) {
        assertAnsweredBy(await h.answers('client', tcp('10.96.0.10', port), { until: BACKENDS }), BACKENDS);
        const { reply, peer } = answeredPeer(await sb.request('client', tcp('10.96.0.10', port)), BACKENDS);
        assert.equal(reply.port, target);
        assert.equal(peer, sb.podIP('client'), 'pod traffic is not masqueraded');
      }
      // kube-proxy's nftables mode rejects a port the ClusterIP does not serve (cluster-ips-check).
      assert.ok((await expectNoAnswer(sb, 'client', tcp('10.96.0.10', WEB, LONG_MS), 'refused')) < QUICK_MS);
    });

    it('from the node and from outside: answered, masqueraded (--cluster-cidr detector)', async () => {
      const sb = env.sb;
      for (const from of ['node', 'outside']) {
        assertAnsweredBy(await h.answers(from, tcp('10.96.0.10', 80), { until: BACKENDS }), BACKENDS);
        assert.equal(answeredPeer(await sb.request(from, tcp('10.96.0.10', 80))).peer, MASQ_V4);
      }
      assert.equal(answeredPeer(await sb.request('outside', tcp('fd00:10:96::20', 80))).peer, MASQ_V6);
    });

    it('UDP and TCP on the same port number, both balanced', async () => {
      const sb = env.sb;
      assertAnsweredBy(await h.answers('client', udp('10.96.0.53', DNS), { until: BACKENDS }), BACKENDS);
      assertAnsweredBy(await h.answers('client', tcp('10.96.0.53', DNS), { until: BACKENDS }), BACKENDS);
      assert.equal(answeredPeer(await sb.request('client', udp('10.96.0.53', DNS))).reply.proto, 'udp');
    });

    it('IPv6: a dual-stack Service answers on both ClusterIPs, IPv6 endpoints for IPv6', async () => {
      const sb = env.sb;
      assertAnsweredBy(await h.answers('client', tcp('fd00:10:96::20', 80), { until: BACKENDS }), BACKENDS);
      const { reply, peer } = answeredPeer(await sb.request('client', tcp('fd00:10:96::20', 80)), BACKENDS);
      assert.equal(reply.ip, sb.podIP(reply.pod, 'IPv6'));
      assert.equal(peer, sb.podIP('client', 'IPv6'));
      answeredPeer(await sb.request('client', tcp('10.96.0.20', 80)), BACKENDS);
    });
  });

  describe('NodePort, externalIPs, LoadBalancer', () => {
    beforeEach(() => scenario());

    it('NodePort TCP (IPv4, IPv6) and UDP from outside, and from a pod: answered, masqueraded', async () => {
      const sb = env.sb;
      assertAnsweredBy(await h.answers('outside', tcp(sb.nodeIPv4, 30080), { until: BACKENDS }), BACKENDS);
      assert.equal(answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30080))).peer, MASQ_V4);
      assertAnsweredBy(await h.answers('outside', tcp(sb.nodeIPv6, 30080), { until: BACKENDS }), BACKENDS);
      assert.equal(answeredPeer(await sb.request('outside', tcp(sb.nodeIPv6, 30080))).peer, MASQ_V6);
      const u = answeredPeer(await sb.request('outside', udp(sb.nodeIPv4, 30053)), BACKENDS);
      assert.deepEqual([u.reply.proto, u.peer], ['udp', MASQ_V4]);
      assert.equal(answeredPeer(await sb.request('client', tcp(sb.nodeIPv4, 30080)), BACKENDS).peer, MASQ_V4);
    });

    it('no localhost NodePorts (kube-proxy nftables mode leaves them out)', async () => {
      await expectNoAnswer(env.sb, 'node', tcp('127.0.0.1', 30080, DROP_MS));
    });

    it('--nodeport-addresses: only node IPs inside the CIDR accept NodePorts', async () => {
      const sb = env.sb;
      const second = '192.0.2.11';
      await h.addAddresses('node', 'ext0', [`${second}/24`]);
      try {
        await scenario({ nodePortAddresses: [`${sb.nodeIPv4}/32`] });
        answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30080)), BACKENDS);
        await expectNoAnswer(sb, 'outside', tcp(second, 30080, DROP_MS));
        await scenario({ nodePortAddresses: [] });
        answeredPeer(await sb.request('outside', tcp(second, 30080)), BACKENDS);
      } finally {
        await h.removeAddresses('node', 'ext0', [`${second}/24`]);
      }
    });

    it('externalIPs (IPv4, IPv6) from outside and from a pod: answered, masqueraded', async () => {
      const sb = env.sb;
      assertAnsweredBy(await h.answers('outside', tcp('203.0.113.10', 80), { until: BACKENDS }), BACKENDS);
      assert.equal(answeredPeer(await sb.request('outside', tcp('203.0.113.10', 80))).peer, MASQ_V4);
      assertAnsweredBy(await h.answers('outside', tcp(EXTERNAL_IP_V6, 80), { until: BACKENDS }), BACKENDS);
      assert.equal(answeredPeer(await sb.request('outside', tcp(EXTERNAL_IP_V6, 80))).peer, MASQ_V6);
      assert.equal(answeredPeer(await sb.request('client', tcp('203.0.113.10', 80)), BACKENDS).peer, MASQ_V4);
    });

    it('LoadBalancer VIP answers; an ipMode Proxy ingress IP is not programmed', async () => {
      const sb = env.sb;
      assertAnsweredBy(await h.answers('outside', tcp('198.51.100.10', 80), { until: BACKENDS }), BACKENDS);
      await expectNoAnswer(sb, 'outside', tcp('198.51.100.11', 80, DROP_MS));
      const listing = await h.nftProxier('IPv4').nft.listTableJson();
      assert.ok(listing !== undefined && !listing.includes('198.51.100.11'));
    });

    it('loadBalancerSourceRanges: the allowed source passes, others are dropped; NodePort is not subject', async () => {
      const sb = env.sb;
      answeredPeer(await sb.request('outside', tcp('198.51.100.20', 80)), BACKENDS);
      await expectNoAnswer(
        sb,
        'outside',
        { ...tcp('198.51.100.20', 80, DROP_MS), sourceIP: OUTSIDE_OTHER_IP },
        'timeout',
      );
      answeredPeer(
        await sb.request('outside', { ...tcp(sb.nodeIPv4, 30041), sourceIP: OUTSIDE_OTHER_IP }),
        BACKENDS,
      );
    });
  });

  describe('no endpoints: reject', () => {
    beforeEach(() => scenario());

    it('ClusterIP (TCP, UDP, IPv6) from a pod, NodePort and externalIP from outside: refused at once', async () => {
      const sb = env.sb;
      for (const [from, req] of [
        ['client', tcp('10.96.0.50', 80, LONG_MS)],
        ['client', udp('10.96.0.50', DNS, LONG_MS)],
        ['client', tcp('fd00:10:96::50', 80, LONG_MS)],
        ['outside', tcp(sb.nodeIPv4, 30050, LONG_MS)],
        ['outside', udp(sb.nodeIPv4, 30051, LONG_MS)],
        ['outside', tcp(sb.nodeIPv6, 30050, LONG_MS)],
        ['outside', tcp('203.0.113.50', 80, LONG_MS)],
      ] as const) {
        const ms = await expectNoAnswer(sb, from, req, 'refused');
        assert.ok(
          ms < 2 * QUICK_MS,
          `${from} ${req.proto} ${req.ip}:${req.port} refused after ${Math.round(ms)} ms`,
        );
      }
    });
  });

  describe('traffic policies and endpoint choice', () => {
    beforeEach(() => scenario());

    it('eTP=Local: outside keeps its source and reaches the local endpoint only (IPv4, IPv6)', async () => {
      const sb = env.sb;
      const seen = await h.answers('outside', tcp(sb.nodeIPv4, 30090), { max: 12 });
      assertAnsweredBy(seen, ['a']);
      assert.equal(
        answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30090)), 'a').peer,
        sb.outsideIPv4,
      );
      assertAnsweredBy(await h.answers('outside', tcp(sb.nodeIPv6, 30090), { max: 12 }), ['a']);
      // Pods use every endpoint (short-circuit to the cluster chain).
      assertAnsweredBy(await h.answers('client', tcp(sb.nodeIPv4, 30090), { until: BACKENDS }), BACKENDS);
    });

    it('eTP=Local without a local endpoint: outside dropped, pods still served', async () => {
      const sb = env.sb;
      await expectNoAnswer(sb, 'outside', tcp(sb.nodeIPv4, 30091, DROP_MS), 'timeout');
      answeredPeer(await sb.request('client', tcp('10.96.0.91', 80)), 'b');
    });

    it('iTP=Local without a local endpoint: ClusterIP traffic dropped', async () => {
      await expectNoAnswer(env.sb, 'client', tcp('10.96.0.92', 80, DROP_MS), 'timeout');
    });

    it('no ready endpoint: the serving terminating one answers', async () => {
      assertAnsweredBy(await h.answers('client', tcp('10.96.0.93', 80), { max: 8 }), ['b']);
    });

    it('hairpin: a pod reaching itself through its Service sees the node as source', async () => {
      const sb = env.sb;
      assert.equal(answeredPeer(await sb.request('a', tcp('10.96.0.60', 80)), 'a').peer, MASQ_V4);
      assert.equal(answeredPeer(await sb.request('a', tcp('fd00:10:96::60', 80)), 'a').peer, MASQ_V6);
    });

    it('sessionAffinity ClientIP: each client sticks to one backend; clients spread (IPv4, IPv6)', async () => {
      const sb = env.sb;
      const firsts = new Set<string>();
      for (const ip of CLIENT_IPS) {
        const req = { ...tcp('10.96.0.70', 80), sourceIP: ip };
        const first = answeredPeer(await sb.request('outside', req)).reply.pod;
        firsts.add(first);
        for (let i = 0; i < 3; i++)
          assert.equal(answeredPeer(await sb.request('outside', req)).reply.pod, first);
      }
      assert.equal(firsts.size, 2, 'different clients reach both backends');
      const first6 = answeredPeer(await sb.request('client', tcp('fd00:10:96::70', 80))).reply.pod;
      for (let i = 0; i < 4; i++) {
        assert.equal(answeredPeer(await sb.request('client', tcp('fd00:10:96::70', 80))).reply.pod, first6);
      }
    });

    it('--masquerade-all: pod→ClusterIP is masqueraded too', async () => {
      const sb = env.sb;
      await scenario({ masqueradeAll: true });
      assert.equal(answeredPeer(await sb.request('client', tcp('10.96.0.10', 80))).peer, MASQ_V4);
      assert.equal(answeredPeer(await sb.request('client', tcp('fd00:10:96::20', 80))).peer, MASQ_V6);
    });
  });

  describe('trace (nft -j list table) agrees with real traffic', () => {
    beforeEach(() => scenario());

    /** Traces `req` from `from` on the node's own listing; `fromNode` for requests the node sends. */
    async function trace(from: Where, req: RequestSpec & { sourceIP?: string }): Promise<NftTraceResult> {
      const sb = env.sb;
      const family = req.ip.includes(':') ? 'IPv6' : 'IPv4';
      const table = await h.nftProxier(family).nft.listTable();
      const local = (await listAddresses({ netns: sb.nodeNs })).map((a) => a.ip);
      const src =
        req.sourceIP ??
        (from === 'outside'
          ? family === 'IPv4'
            ? sb.outsideIPv4
            : sb.outsideIPv6
          : from === 'node'
            ? family === 'IPv4'
              ? sb.nodeIPv4
              : sb.nodeIPv6
            : sb.podIP(from, family));
      const pkt: NftTracePacket = {
        family,
        src,
        dst: req.ip,
        proto: req.proto === 'udp' ? 'udp' : 'tcp',
        dport: req.port,
        fromNode: from === 'node',
      };
      return traceNftables(table, pkt, { localAddresses: local });
    }

    it('ClusterIP, NodePort, externalIP: the endpoints that answer and the masquerade the backend sees', async () => {
      const sb = env.sb;
      for (const [from, req, masq] of [
        ['client', tcp('10.96.0.10', 80), false],
        ['outside', tcp('10.96.0.10', 80), true],
        ['client', tcp('fd00:10:96::20', 80), false],
        ['outside', tcp(sb.nodeIPv4, 30080), true],
        ['outside', udp(sb.nodeIPv4, 30053), true],
        ['outside', tcp(sb.nodeIPv6, 30080), true],
        ['outside', tcp('203.0.113.10', 80), true],
      ] as const) {
        const t = await trace(from, req);
        const v6 = req.ip.includes(':');
        const port = req.proto === 'udp' ? DNS : WEB;
        assert.equal(t.verdict, 'dnat', `${from} → ${req.ip}:${req.port}: ${t.steps.join(' | ')}`);
        const want = BACKENDS.map((p) =>
          v6 ? `[${sb.podIP(p, 'IPv6')}]:${port}` : `${sb.podIP(p)}:${port}`,
        );
        assert.deepEqual(t.endpoints.map((e) => e.endpoint).sort(), want.sort());
        assert.equal(t.masquerade, masq, `${from} → ${req.ip}:${req.port} masquerade`);
        // And the real packet: answered by one of them, with the source the trace predicts.
        const { peer } = answeredPeer(await sb.request(from, req), BACKENDS);
        const expectedPeer = masq ? (v6 ? MASQ_V6 : MASQ_V4) : sb.podIP(from, v6 ? 'IPv6' : 'IPv4');
        assert.equal(peer, expectedPeer);
      }
    });

    it('reject, drop, eTP=Local, affinity: the verdict and the endpoint the kernel picks', async () => {
      const sb = env.sb;
      // No endpoints: rejected, and the real request is refused.
      const empty = await trace('client', tcp('10.96.0.50', 80));
      assert.equal(empty.verdict, 'reject', empty.steps.join(' | '));
      await expectNoAnswer(sb, 'client', tcp('10.96.0.50', 80, LONG_MS), 'refused');
      // Source ranges: another source is dropped.
      const fw = await trace('outside', { ...tcp('198.51.100.20', 80), sourceIP: OUTSIDE_OTHER_IP });
      assert.equal(fw.verdict, 'drop', fw.steps.join(' | '));
      assert.equal((await trace('outside', tcp('198.51.100.20', 80))).verdict, 'dnat');
      // eTP=Local from outside: the local endpoint only, the source kept.
      const local = await trace('outside', tcp(sb.nodeIPv4, 30090));
      assert.deepEqual(
        [local.verdict, local.endpoints.map((e) => e.endpoint), local.masquerade],
        ['dnat', [`${sb.podIP('a')}:${WEB}`], false],
      );
      assert.equal(
        answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30090)), 'a').peer,
        sb.outsideIPv4,
      );
      // A port the ClusterIP does not serve: rejected.
      assert.equal((await trace('client', tcp('10.96.0.10', 81))).verdict, 'reject');
      // Affinity: after a real request, the client is in one endpoint's set and the trace names it.
      const req = { ...tcp('10.96.0.70', 80), sourceIP: TRACE_CLIENT_IP };
      const before = await trace('outside', req);
      assert.equal(before.endpoints.length, 2, 'before: either endpoint');
      const who = answeredPeer(await sb.request('outside', req)).reply.pod;
      const after = await trace('outside', req);
      assert.deepEqual(
        after.endpoints.map((e) => [e.endpoint, e.via]),
        [[`${sb.podIP(who)}:${WEB}`, 'affinity']],
      );
    });
  });

  describe('svcplane trace (as the CLI reads the node) agrees with real traffic', () => {
    beforeEach(() => scenario());

    it('frontends, both families: endpoints, masquerade, reject, drop', async () => {
      const sb = env.sb;
      for (const [from, req, verdict, endpoints, masq] of [
        ['client', tcp('10.96.0.10', 80), 'dnat', 2, false],
        ['outside', tcp('10.96.0.10', 80), 'dnat', 2, true],
        ['client', tcp('fd00:10:96::20', 80), 'dnat', 2, false],
        ['outside', tcp(sb.nodeIPv6, 30080), 'dnat', 2, true],
        ['outside', udp(sb.nodeIPv4, 30053), 'dnat', 2, true],
        ['node', tcp('10.96.0.10', 80), 'dnat', 2, true],
        ['outside', tcp('203.0.113.10', 80), 'dnat', 2, true],
        ['outside', tcp(sb.nodeIPv4, 30090), 'dnat', 1, false],
        ['client', tcp('10.96.0.50', 80), 'reject', 0, false],
        ['outside', tcp(sb.nodeIPv4, 30091), 'drop', 0, false],
      ] as const) {
        const t = await traceAgrees(sb, from, req);
        assert.deepEqual(
          [t.verdict, t.endpoints.length, t.masquerade],
          [verdict, endpoints, masq],
          `${from} → ${req.ip}:${req.port}`,
        );
      }
    });
  });

  describe('partial syncs, drift, cleanup', () => {
    it('one endpoint change is a partial sync of that Service only; traffic follows', async () => {
      const sb = env.sb;
      await scenario();
      const onlyA = sliceObject('extra', 'IPv4', [{ port: WEB }], podEndpoints(sb, ['a']));
      const svc = serviceObject('extra', {
        clusterIPs: ['10.96.0.99'],
        ports: [{ port: 80, targetPort: WEB }],
      });
      await scenario({}, [svc, onlyA]);
      assertAnsweredBy(await h.answers('client', tcp('10.96.0.99', 80), { max: 6 }), ['a']);
      await scenario({}, [svc, sliceObject('extra', 'IPv4', [{ port: WEB }], podEndpoints(sb, ['b']))]);
      const r = h.lastNftReports[0]!;
      assert.equal(r.full, false);
      assert.equal(r.writtenServices, 1);
      assert.equal(r.staleChains, 1, 'the endpoint chain of a is stale');
      assert.ok(r.lines < 20, `a small transaction (${r.lines} lines)`);
      await h.flushConntrack();
      assertAnsweredBy(await h.answers('client', tcp('10.96.0.99', 80), { max: 6 }), ['b']);
      // Removing the Service: its ClusterIP is rejected no more (no cluster-ips element), no answer.
      await scenario();
      await expectNoAnswer(sb, 'client', tcp('10.96.0.99', 80, DROP_MS));
      const aChain = portNames('default', 'extra', 'tcp', '').endpoint(sb.podIP('a'), WEB).chain;
      await new Promise((r) => setTimeout(r, 1100));
      await scenario();
      const chains = (await h.nftProxier('IPv4').nft.listChains()).map((c) => c.name);
      assert.ok(!chains.includes(aChain), 'stale endpoint chain deleted a second later');
      assert.ok(
        !chains.some((c) => c.includes('/extra/')),
        chains.filter((c) => c.includes('/extra/')).join(' '),
      );
    });

    it('drift: a deleted map element and a flushed chain are detected and repaired', async () => {
      const sb = env.sb;
      await scenario();
      const p = h.nftProxier('IPv4');
      assert.equal(await p.detectDrift(), false, 'no drift right after a sync');
      await sb.exec('node', [
        'nft',
        'delete',
        'element',
        'ip',
        'kube-proxy',
        'service-ips',
        '{ 10.96.0.10 . tcp . 80 }',
      ]);
      await expectNoAnswer(sb, 'client', tcp('10.96.0.10', 80, DROP_MS));
      assert.equal(await p.detectDrift(), true);
      await scenario();
      assert.equal(h.lastNftReports[0]!.full, true);
      answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
      const svcChain = portNames('default', 'web', 'tcp', 'http').cluster;
      await sb.exec('node', ['nft', 'flush', 'chain', 'ip', 'kube-proxy', svcChain]);
      assert.equal(await p.detectDrift(), true);
      await scenario();
      answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
    });

    it('a stale chain the kernel will not delete yet: counted as a cleanup failure, retried later', async () => {
      const sb = env.sb;
      await scenario();
      // Another agent's chain (in our table) jumps to web's service chain: the kernel refuses to
      // delete it (EBUSY) once web has no endpoints and the chain is stale.
      const svcChain = portNames('default', 'web', 'tcp', 'http').cluster;
      await sb.exec('node', ['nft', 'add', 'chain', 'ip', 'kube-proxy', 'foreign']);
      await sb.exec('node', ['nft', 'add', 'rule', 'ip', 'kube-proxy', 'foreign', 'jump', svcChain]);
      try {
        const without = objects().filter(
          (o) => (o as { metadata?: { name?: string } }).metadata?.name !== 'web-v4',
        );
        await h.sync(without);
        await new Promise((r) => setTimeout(r, 1100));
        // Its deletion rides in the next sync's transaction: refused as a whole (the rules stay)…
        await assert.rejects(h.sync(without), /Device or resource busy/);
        // …so stale chains are deleted on their own from then on: counted, the sync goes through.
        await new Promise((r) => setTimeout(r, 1100));
        await h.sync(without);
        await new Promise((r) => setTimeout(r, 1100));
        await h.sync(without);
        assert.equal(h.lastNftReports[0]!.details?.cleanupFailures, 1);
        await expectNoAnswer(sb, 'client', tcp('10.96.0.10', 80, LONG_MS), 'refused');
      } finally {
        await sb.exec('node', ['nft', 'delete', 'chain', 'ip', 'kube-proxy', 'foreign'], {
          allowFailure: true,
        });
      }
      await scenario();
      answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
      const chains = (await h.nftProxier('IPv4').nft.listChains()).map((c) => c.name);
      assert.ok(chains.includes(svcChain));
    });

    it('a transaction the kernel refuses changes nothing; the next sync is full and converges', async () => {
      const sb = env.sb;
      await scenario();
      // Another agent's rule uses sticky's affinity set for endpoint b: the partial sync that drops
      // b must delete that set, the kernel refuses (EBUSY), and the whole transaction with it,
      // including the new Service it also carries.
      const setB = portNames('default', 'sticky', 'tcp', '').endpoint(sb.podIP('b'), WEB).affinitySet;
      await sb.exec('node', ['nft', 'add', 'chain', 'ip', 'kube-proxy', 'foreign']);
      await sb.exec('node', [
        'nft',
        'add',
        'rule',
        'ip',
        'kube-proxy',
        'foreign',
        'ip',
        'saddr',
        `@${setB}`,
        'accept',
      ]);
      const extra = [
        serviceObject('extra', { clusterIPs: ['10.96.0.99'], ports: [{ port: 80, targetPort: WEB }] }),
        sliceObject('extra', 'IPv4', [{ port: WEB }], podEndpoints(sb, ['a'])),
      ];
      const changed = objects(extra).map((o) =>
        (o as { metadata?: { name?: string } }).metadata?.name === 'sticky-v4'
          ? sliceObject('sticky', 'IPv4', [{ port: WEB }], podEndpoints(sb, ['a']))
          : o,
      );
      const p = h.nftProxier('IPv4');
      try {
        await assert.rejects(h.sync(changed), /Device or resource busy|Resource busy/);
        assert.equal(p.lastAttemptFull, false, 'the refused one was a partial sync');
        // Nothing of it reached the kernel: the new Service is not there, sticky still has b.
        await expectNoAnswer(sb, 'client', tcp('10.96.0.99', 80, DROP_MS));
        assert.ok((await p.nft.listSets()).some((x) => x.name === setB));
      } finally {
        await sb.exec('node', ['nft', 'delete', 'chain', 'ip', 'kube-proxy', 'foreign'], {
          allowFailure: true,
        });
      }
      await h.sync(changed);
      assert.equal(h.lastNftReports[0]!.full, true, 'the sync after a failure is full');
      answeredPeer(await sb.request('client', tcp('10.96.0.99', 80)), 'a');
      assert.ok(!(await p.nft.listSets()).some((x) => x.name === setB), 'the stale affinity set is gone');
    });

    it('cleanup removes both kube-proxy tables, and traffic is no longer steered', async () => {
      const sb = env.sb;
      await scenario();
      assert.deepEqual(await deleteKubeProxyTables({ netns: sb.nodeNs }), []);
      assert.equal(await h.nftProxier('IPv4').nft.listTable(), undefined);
      assert.equal(await h.nftProxier('IPv6').nft.listTable(), undefined);
      await expectNoAnswer(sb, 'client', tcp('10.96.0.10', 80, DROP_MS));
      assert.equal(await h.nftProxier('IPv4').detectDrift(), true);
      await scenario();
      answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
    });
  });
});
