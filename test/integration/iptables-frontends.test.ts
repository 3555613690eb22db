import assert from 'node:assert/strict';
import { getArg, parseIptablesSave, ruleComment, rulesOf } from '../../src/iptables/save-parse.js';
import type { RequestSpec } from '../../src/netns/protocol.js';
import { readSysctl, writeSysctl } from '../../src/util/sysctl.js';
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
import { expectRuleCounted, type RuleRef } from '../support/rule-counters.js';
import { requireRoot, useSandbox } from '../support/sandbox.js';
import { traceAgrees } from '../support/trace-check.js';

/**
 * iptables mode's frontends and masquerade, proven by real traffic (issue 8 §1, §6): plain Service
 * and EndpointSlice objects → buildClusterState → IptablesProxier (both families, in-process,
 * programming the sandbox node) → real TCP/UDP requests from pods, the node and the outside.
 * One sandbox for the whole file; each test re-syncs the scenario (and the flags) it needs.
 */

const BACKENDS = ['a', 'b'] as const;
const WEB = 8080;
const METRICS = 9100;
const DNS = 53;
const SCTP = 7777;
/** The node's bridge address: what a backend sees as peer when traffic was masqueraded. */
const MASQ_V4 = '10.244.0.1';
const MASQ_V6 = 'fd00:10:244::1';
/** A second node address on ext0 (for --nodeport-addresses). */
const NODE_SECOND_IP = '192.0.2.11';
/** A second outside address, outside the LoadBalancer's source range. */
const OUTSIDE_OTHER_IP = '192.0.2.3';
/** Extra outside client addresses for session affinity (distinct client IPs). */
const CLIENT_IPS = Array.from({ length: 16 }, (_, i) => `192.0.2.${100 + i}`);

/** An IPv6 externalIP off the node's link (routed via the node, like 203.0.113.x). */
const EXTERNAL_IP_V6 = '2001:db8:ff::10';

/** A request's timeout when no answer is expected (a DROP): short, the suite stays fast. */
const DROP_MS = 600;

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

describe('iptables mode: frontends and masquerade (real traffic)', function () {
  this.timeout(30_000);
  const env = useSandbox({
    // Pod→ClusterIP→pod on the same bridge: the reply is bridged, and must pass conntrack to be un-DNATed.
    brNetfilter: true,
    pods: [
      { name: 'a', index: 2, tcpPorts: [WEB, METRICS, DNS], udpPorts: [DNS] },
      { name: 'b', index: 3, tcpPorts: [WEB, METRICS, DNS], udpPorts: [DNS] },
      { name: 'client', index: 10 },
    ],
  });
  let h: IptablesHarness;

  /** Every Service of the suite, as a manifest or the API would hold them. */
  function objects(): unknown[] {
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
      // Several ports; `http` has a named target port whose number (8080) is not the Service port.
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
      // Dual-stack NodePort, TCP and UDP.
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
      // No endpoints at all: every frontend REJECTs.
      serviceObject('empty', {
        type: 'NodePort',
        clusterIPs: ['10.96.0.50', 'fd00:10:96::50'],
        externalIPs: ['203.0.113.50'],
        ports: [
          { name: 'tcp', port: 80, nodePort: 30050 },
          { name: 'udp', port: DNS, protocol: 'UDP', nodePort: 30051 },
        ],
      }),
      // Only pod a: reaching it from a is a hairpin.
      serviceObject('hair', {
        clusterIPs: ['10.96.0.60', 'fd00:10:96::60'],
        ports: [{ port: 80, targetPort: WEB }],
      }),
      sliceObject('hair', 'IPv4', web, podEndpoints(sb, ['a'])),
      sliceObject('hair', 'IPv6', web, podEndpoints(sb, ['a'], 'IPv6')),
      serviceObject('sticky', {
        clusterIPs: ['10.96.0.70'],
        ports: [{ port: 80, targetPort: WEB }],
        sessionAffinity: { timeoutSeconds: 300 },
      }),
      sliceObject('sticky', 'IPv4', web, both),
      serviceObject('sctp', {
        clusterIPs: ['10.96.0.80'],
        ports: [{ port: SCTP, protocol: 'SCTP' }],
      }),
      sliceObject('sctp', 'IPv4', [{ port: SCTP, protocol: 'SCTP' }], podEndpoints(sb, ['a'])),
    ];
  }

  /**
   * Converges the node to the suite's Services with these flags (kube-proxy's defaults otherwise).
   * Every test starts with one, so a test that changed the flags needs no clean-up.
   */
  const scenario = (opts: ProxierOptions = {}): Promise<unknown> => h.sync(objects(), opts);

  before(async function () {
    requireRoot(this);
    this.timeout(60_000);
    const sb = env.sb;
    h = new IptablesHarness(sb);
    // More client addresses on the outside namespace (its own link, inside the sandbox).
    await h.addAddresses(
      'outside',
      'eth0',
      [OUTSIDE_OTHER_IP, ...CLIENT_IPS].map((ip) => `${ip}/24`),
    );
    await scenario();
  });

  describe('ClusterIP', () => {
    beforeEach(() => scenario());

    it('from a pod: both endpoints answer and see the pod itself as the client', async () => {
      const sb = env.sb;
      const seen = await h.answers('client', tcp('10.96.0.10', 80), { until: BACKENDS });
      assertAnsweredBy(seen, BACKENDS);
      const { reply, peer } = answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
      assert.equal(reply.port, WEB, 'DNATed to the endpoint port');
      assert.equal(peer, sb.podIP('client'), 'pod traffic is not masqueraded');
    });

    it('several ports per Service, each to its own (named) target port', async () => {
      const sb = env.sb;
      for (const [port, target] of [
        [80, WEB],
        [9090, METRICS],
      ] as const) {
        const seen = await h.answers('client', tcp('10.96.0.10', port), { until: BACKENDS });
        assertAnsweredBy(seen, BACKENDS);
        const { reply } = answeredPeer(await sb.request('client', tcp('10.96.0.10', port)));
        assert.equal(reply.port, target, `Service port ${port} lands on endpoint port ${target}`);
      }
      // A port the Service does not have is not DNATed (and nothing on the way answers it).
      await expectNoAnswer(sb, 'client', tcp('10.96.0.10', WEB, DROP_MS));
      // svcplane trace agrees, port by port: the named target port of each, nothing for the other.
      for (const [port, target] of [
        [80, WEB],
        [9090, METRICS],
      ] as const) {
        const t = await traceAgrees(sb, 'client', tcp('10.96.0.10', port));
        assert.deepEqual(
          t.endpoints.map((e) => e.endpoint),
          BACKENDS.map((p) => `${sb.podIP(p)}:${target}`),
        );
      }
      assert.equal((await traceAgrees(sb, 'client', tcp('10.96.0.10', WEB))).verdict, 'untouched');
    });

    it('from the node and from outside (routed via the node): both endpoints answer', async () => {
      for (const from of ['node', 'outside']) {
        const seen = await h.answers(from, tcp('10.96.0.10', 80), { until: BACKENDS });
        assertAnsweredBy(seen, BACKENDS);
      }
    });

    it('UDP request/response, and TCP on the same port number, both balanced', async () => {
      const sb = env.sb;
      assertAnsweredBy(await h.answers('client', udp('10.96.0.53', DNS), { until: BACKENDS }), BACKENDS);
      const { reply } = answeredPeer(await sb.request('client', udp('10.96.0.53', DNS)));
      assert.equal(reply.proto, 'udp');
      assert.equal(reply.port, DNS);
      assertAnsweredBy(await h.answers('client', tcp('10.96.0.53', DNS), { until: BACKENDS }), BACKENDS);
      // UDP from outside too (masqueraded, see below): the reply finds its way back.
      answeredPeer(await sb.request('outside', udp('10.96.0.53', DNS)), BACKENDS);
    });

    it('SCTP: the kernel accepts the rules (the sandbox agent speaks no SCTP)', async () => {
      const saved = parseIptablesSave(await h.save('IPv4'));
      const svcRules = rulesOf(saved, 'nat', 'KUBE-SERVICES').map((r) => r.text);
      const front = svcRules.find((t) => t.includes('-d 10.96.0.80/32'));
      assert.ok(front, 'a KUBE-SERVICES rule for the SCTP ClusterIP is in the kernel');
      assert.match(front, /-p sctp .*-m sctp --dport 7777 -j KUBE-SVC-/);
      const sepChain = /-j (KUBE-SVC-\S+)/.exec(front)![1]!;
      const sep = rulesOf(saved, 'nat', sepChain)
        .map((r) => /-j (KUBE-SEP-\S+)/.exec(r.text)?.[1])
        .find((c) => c !== undefined);
      assert.ok(sep, `${sepChain} jumps to an endpoint chain`);
      const dnat = rulesOf(saved, 'nat', sep).map((r) => r.text);
      assert.ok(
        dnat.some((t) => /-p sctp .*-j DNAT --to-destination 10\.244\.0\.2:7777/.test(t)),
        dnat.join('\n'),
      );
    });

    it('IPv6: a dual-stack Service answers on its IPv6 ClusterIP from a pod, with IPv6 endpoints', async () => {
      const sb = env.sb;
      const seen = await h.answers('client', tcp('fd00:10:96::20', 80), { until: BACKENDS });
      assertAnsweredBy(seen, BACKENDS);
      const { reply, peer } = answeredPeer(await sb.request('client', tcp('fd00:10:96::20', 80)), BACKENDS);
      assert.equal(reply.ip, sb.podIP(reply.pod, 'IPv6'), 'DNATed to the pod IPv6 address');
      assert.equal(reply.port, WEB);
      assert.equal(peer, sb.podIP('client', 'IPv6'));
      // The IPv4 ClusterIP of the same Service works as well.
      answeredPeer(await sb.request('client', tcp('10.96.0.20', 80)), BACKENDS);
    });
  });

  describe('NodePort', () => {
    it('from outside to the node IP: both endpoints answer, masqueraded (eTP=Cluster)', async () => {
      await scenario();
      const sb = env.sb;
      assertAnsweredBy(await h.answers('outside', tcp(sb.nodeIPv4, 30080), { until: BACKENDS }), BACKENDS);
      const { peer } = answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30080)));
      assert.equal(peer, MASQ_V4, 'the backend sees the node, not the outside client');
    });

    it('IPv6 and UDP NodePorts from outside, and a NodePort from a pod: answered, masqueraded', async () => {
      await scenario();
      const sb = env.sb;
      assertAnsweredBy(await h.answers('outside', tcp(sb.nodeIPv6, 30080), { until: BACKENDS }), BACKENDS);
      const v6 = answeredPeer(await sb.request('outside', tcp(sb.nodeIPv6, 30080)));
      assert.equal(v6.reply.ip, sb.podIP(v6.reply.pod, 'IPv6'));
      assert.equal(v6.peer, MASQ_V6);
      assertAnsweredBy(await h.answers('outside', udp(sb.nodeIPv4, 30053), { until: BACKENDS }), BACKENDS);
      const u = answeredPeer(await sb.request('outside', udp(sb.nodeIPv4, 30053)));
      assert.deepEqual([u.reply.proto, u.reply.port, u.peer], ['udp', DNS, MASQ_V4]);
      // A pod reaching a NodePort on the node's address goes through the EXT chain too.
      assert.equal(answeredPeer(await sb.request('client', tcp(sb.nodeIPv4, 30080)), BACKENDS).peer, MASQ_V4);
      // svcplane trace agrees (endpoints and masquerade) for each of them.
      for (const [from, req] of [
        ['outside', tcp(sb.nodeIPv6, 30080)],
        ['outside', udp(sb.nodeIPv4, 30053)],
        ['client', tcp(sb.nodeIPv4, 30080)],
      ] as const) {
        const t = await traceAgrees(sb, from, req);
        assert.deepEqual([t.verdict, t.masquerade, t.endpoints.length], ['dnat', true, 2]);
      }
    });

    it('localhost NodePorts: 127.0.0.1:<nodePort> from the node (route_localnet set)', async () => {
      await scenario({ localhostNodePorts: true });
      const sb = env.sb;
      assert.equal((await readSysctl('net.ipv4.conf.all.route_localnet', { netns: sb.nodeNs }))?.trim(), '1');
      assertAnsweredBy(await h.answers('node', tcp('127.0.0.1', 30080), { until: BACKENDS }), BACKENDS);
    });

    it('--iptables-localhost-nodeports=false: 127.0.0.1 is not a NodePort address, the node IP still is', async () => {
      const sb = env.sb;
      await scenario({ localhostNodePorts: false });
      // Even with route_localnet left on (by an earlier run), the rules must not DNAT 127.0.0.1.
      await writeSysctl('net.ipv4.conf.all.route_localnet', 1, { netns: sb.nodeNs });
      await expectNoAnswer(sb, 'node', tcp('127.0.0.1', 30080, DROP_MS));
      answeredPeer(await sb.request('node', tcp(sb.nodeIPv4, 30080)), BACKENDS);
    });

    it('--nodeport-addresses: NodePorts answer on node IPs inside the CIDR only', async () => {
      const sb = env.sb;
      await h.addAddresses('node', 'ext0', [`${NODE_SECOND_IP}/24`]);
      try {
        // Control: with every address (the default) the second node address answers too.
        await scenario({ nodePortAddresses: [] });
        answeredPeer(await sb.request('outside', tcp(NODE_SECOND_IP, 30080)), BACKENDS);

        await scenario({ nodePortAddresses: [`${sb.nodeIPv4}/32`] });
        assertAnsweredBy(await h.answers('outside', tcp(sb.nodeIPv4, 30080), { until: BACKENDS }), BACKENDS);
        // Not DNATed: the node itself has nothing on that port.
        await expectNoAnswer(sb, 'outside', tcp(NODE_SECOND_IP, 30080, DROP_MS), 'refused');
        // 127.0.0.1 is not in the CIDR either.
        await expectNoAnswer(sb, 'node', tcp('127.0.0.1', 30080, DROP_MS));
        // svcplane trace agrees: a NodePort on the address in the CIDR, nothing on the other one.
        assert.equal((await traceAgrees(sb, 'outside', tcp(sb.nodeIPv4, 30080))).verdict, 'dnat');
        assert.notEqual((await traceAgrees(sb, 'outside', tcp(NODE_SECOND_IP, 30080))).verdict, 'dnat');
      } finally {
        await h.removeAddresses('node', 'ext0', [`${NODE_SECOND_IP}/24`]);
      }
    });
  });

  describe('externalIPs and LoadBalancer IPs', () => {
    beforeEach(() => scenario());

    it('externalIP from outside: both endpoints answer, masqueraded', async () => {
      const sb = env.sb;
      assertAnsweredBy(await h.answers('outside', tcp('203.0.113.10', 80), { until: BACKENDS }), BACKENDS);
      const { peer } = answeredPeer(await sb.request('outside', tcp('203.0.113.10', 80)));
      assert.equal(peer, MASQ_V4);
    });

    it('IPv6 externalIP from outside; externalIP and LoadBalancer IP from a pod (masqueraded: eTP=Cluster)', async () => {
      const sb = env.sb;
      assertAnsweredBy(await h.answers('outside', tcp(EXTERNAL_IP_V6, 80), { until: BACKENDS }), BACKENDS);
      assert.equal(answeredPeer(await sb.request('outside', tcp(EXTERNAL_IP_V6, 80))).peer, MASQ_V6);
      assert.equal(answeredPeer(await sb.request('client', tcp('203.0.113.10', 80)), BACKENDS).peer, MASQ_V4);
      assert.equal(
        answeredPeer(await sb.request('client', tcp('198.51.100.10', 80)), BACKENDS).peer,
        MASQ_V4,
      );
      const t = await traceAgrees(sb, 'outside', tcp(EXTERNAL_IP_V6, 80));
      assert.deepEqual([t.verdict, t.masquerade, t.endpoints.length], ['dnat', true, 2]);
    });

    it('LoadBalancer ingress IP from outside answers; an ipMode Proxy ingress IP is not programmed', async () => {
      const sb = env.sb;
      assertAnsweredBy(await h.answers('outside', tcp('198.51.100.10', 80), { until: BACKENDS }), BACKENDS);
      const { peer } = answeredPeer(await sb.request('outside', tcp('198.51.100.10', 80)));
      assert.equal(peer, MASQ_V4);
      await expectNoAnswer(sb, 'outside', tcp('198.51.100.11', 80, DROP_MS));
      assert.ok(!(await h.save('IPv4')).includes('198.51.100.11'), 'no rule names the Proxy-mode IP');
      // svcplane trace agrees: the VIP-mode IP is DNATed, the Proxy-mode one untouched.
      assert.equal((await traceAgrees(sb, 'outside', tcp('198.51.100.10', 80))).verdict, 'dnat');
      assert.equal((await traceAgrees(sb, 'outside', tcp('198.51.100.11', 80))).verdict, 'untouched');
    });

    it('loadBalancerSourceRanges: the allowed source passes, other sources are dropped (counted)', async () => {
      const sb = env.sb;
      answeredPeer(await sb.request('outside', tcp('198.51.100.20', 80)), BACKENDS);
      const drop: RuleRef = {
        table: 'filter',
        chain: 'KUBE-PROXY-FIREWALL',
        match: (r) =>
          (ruleComment(r) ?? '').startsWith('default/lbsr traffic not accepted by KUBE-FW-') &&
          getArg(r, '-d') === '198.51.100.20/32' &&
          getArg(r, '-j') === 'DROP',
        what: 'loadBalancerSourceRanges DROP',
      };
      // Both timeouts must be this rule's doing: its packet counter grows by (at least) one SYN each.
      await expectRuleCounted(
        sb,
        drop,
        async () => {
          await expectNoAnswer(
            sb,
            'outside',
            { ...tcp('198.51.100.20', 80, DROP_MS), sourceIP: OUTSIDE_OTHER_IP },
            'timeout',
          );
          await expectNoAnswer(sb, 'client', tcp('198.51.100.20', 80, DROP_MS), 'timeout');
        },
        2,
      );
      // The same source is fine on another Service's VIP: the drop is the source range's doing.
      answeredPeer(
        await sb.request('outside', { ...tcp('198.51.100.10', 80), sourceIP: OUTSIDE_OTHER_IP }),
        BACKENDS,
      );
    });
  });

  describe('no endpoints: REJECT', () => {
    beforeEach(() => scenario());
    /** REJECT answers at once; a DROP would run into the (long) timeout. */
    const QUICK_MS = 1000;
    const LONG_MS = 3000;

    it('ClusterIP, TCP and UDP, from a pod: refused at once', async () => {
      const sb = env.sb;
      assert.ok((await expectNoAnswer(sb, 'client', tcp('10.96.0.50', 80, LONG_MS), 'refused')) < QUICK_MS);
      assert.ok((await expectNoAnswer(sb, 'client', udp('10.96.0.50', DNS, LONG_MS), 'refused')) < QUICK_MS);
    });

    it('NodePort (TCP and UDP) and externalIP from outside: refused at once', async () => {
      const sb = env.sb;
      for (const req of [
        tcp(sb.nodeIPv4, 30050, LONG_MS),
        udp(sb.nodeIPv4, 30051, LONG_MS),
        tcp('203.0.113.50', 80, LONG_MS),
      ]) {
        const ms = await expectNoAnswer(sb, 'outside', req, 'refused');
        assert.ok(ms < QUICK_MS, `${req.proto} ${req.ip}:${req.port} refused after ${Math.round(ms)} ms`);
      }
    });

    it('IPv6: ClusterIP from a pod and NodePort from outside are refused (ip6tables REJECT)', async () => {
      const sb = env.sb;
      for (const [from, req] of [
        ['client', tcp('fd00:10:96::50', 80, LONG_MS)],
        ['client', udp('fd00:10:96::50', DNS, LONG_MS)],
        ['outside', tcp(sb.nodeIPv6, 30050, LONG_MS)],
      ] as const) {
        const ms = await expectNoAnswer(sb, from, req, 'refused');
        // The ICMPv6 error for the first SYN can arrive while connect() still holds the socket (a
        // soft error here): TCP then gives up on the retransmitted SYN's, ~1 s later. A DROP never
        // gives 'refused'.
        const limit = req.proto === 'tcp' ? 2 * QUICK_MS : QUICK_MS;
        assert.ok(ms < limit, `${req.proto} [${req.ip}]:${req.port} refused after ${Math.round(ms)} ms`);
      }
    });
  });

  describe('masquerade', () => {
    it('--cluster-cidr: outside→ClusterIP and node→ClusterIP are masqueraded, pod→ClusterIP is not', async () => {
      await scenario();
      const sb = env.sb;
      assert.equal(answeredPeer(await sb.request('outside', tcp('10.96.0.10', 80))).peer, MASQ_V4);
      assert.equal(answeredPeer(await sb.request('node', tcp('10.96.0.10', 80))).peer, MASQ_V4);
      assert.equal(answeredPeer(await sb.request('outside', tcp('fd00:10:96::20', 80))).peer, MASQ_V6);
      assert.equal(answeredPeer(await sb.request('client', tcp('10.96.0.10', 80))).peer, sb.podIP('client'));
      assert.equal(
        answeredPeer(await sb.request('client', tcp('fd00:10:96::20', 80))).peer,
        sb.podIP('client', 'IPv6'),
      );
    });

    it('without a local-traffic detector, outside→ClusterIP keeps its source (the control)', async () => {
      const sb = env.sb;
      await scenario({ detectLocalMode: '', clusterCIDRs: [] });
      assert.equal(answeredPeer(await sb.request('outside', tcp('10.96.0.10', 80))).peer, sb.outsideIPv4);
      // NodePorts are masqueraded whatever the detector (eTP=Cluster).
      assert.equal(answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30080))).peer, MASQ_V4);
    });

    it('--masquerade-all: pod→ClusterIP is masqueraded too (IPv4 and IPv6)', async () => {
      const sb = env.sb;
      await scenario({ masqueradeAll: true });
      assert.equal(answeredPeer(await sb.request('client', tcp('10.96.0.10', 80))).peer, MASQ_V4);
      assert.equal(answeredPeer(await sb.request('client', tcp('fd00:10:96::20', 80))).peer, MASQ_V6);
    });

    it('hairpin: a pod that reaches itself through its Service sees the node as source', async () => {
      await scenario();
      const sb = env.sb;
      assert.equal(answeredPeer(await sb.request('a', tcp('10.96.0.60', 80)), 'a').peer, MASQ_V4);
      assert.equal(answeredPeer(await sb.request('a', tcp('fd00:10:96::60', 80)), 'a').peer, MASQ_V6);
      // Another pod reaching the same endpoint is not masqueraded.
      assert.equal(answeredPeer(await sb.request('b', tcp('10.96.0.60', 80)), 'a').peer, sb.podIP('b'));
    });
  });

  describe('sessionAffinity ClientIP', () => {
    beforeEach(() => scenario());

    it('repeated requests from one client stick to one backend', async () => {
      const seen = await h.answers('client', tcp('10.96.0.70', 80), { max: 12 });
      assert.equal(seen.size, 1, `one backend expected, got ${JSON.stringify(Object.fromEntries(seen))}`);
      assert.ok(BACKENDS.some((p) => seen.get(p) === 12));
      assert.match(await h.save('IPv4'), /-m recent --rcheck --seconds 300 --reap --name KUBE-SEP-/);
    });

    it('different clients are balanced, each sticking to its own backend', async () => {
      const sb = env.sb;
      const landed = new Set<string>();
      for (const sourceIP of CLIENT_IPS) {
        const first = answeredPeer(await sb.request('outside', { ...tcp('10.96.0.70', 80), sourceIP }));
        for (let i = 0; i < 2; i++) {
          const again = answeredPeer(await sb.request('outside', { ...tcp('10.96.0.70', 80), sourceIP }));
          assert.equal(again.reply.pod, first.reply.pod, `client ${sourceIP} moved backends`);
        }
        landed.add(first.reply.pod);
        if (landed.size === BACKENDS.length) break;
      }
      assert.deepEqual([...landed].sort(), [...BACKENDS], 'clients land on both backends');
    });
  });
});
