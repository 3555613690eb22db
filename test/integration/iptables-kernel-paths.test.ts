import assert from 'node:assert/strict';
import { endpointChainName, serviceChainName } from '../../src/iptables/names.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import {
  getArg,
  parseIptablesSave,
  ruleComment,
  rulesOf,
  type SavedRule,
} from '../../src/iptables/save-parse.js';
import type { IPFamily } from '../../src/model/types.js';
import { AgentProcess } from '../../src/netns/agent-process.js';
import type { RequestSpec } from '../../src/netns/protocol.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { run } from '../../src/util/exec.js';
import { writeSysctl } from '../../src/util/sysctl.js';
import {
  answeredPeer,
  assertAnsweredBy,
  DEFAULT_OPTIONS,
  expectNoAnswer,
  IptablesHarness,
  NODE_NAME,
  nodeObject,
  podEndpoints,
  serviceObject,
  sliceObject,
  type ProxierOptions,
  type SliceEndpoint,
} from '../support/iptables-harness.js';
import { sendTcpFrame, TCP_ACK, TCP_FIN, TCP_SYN } from '../support/raw-packets.js';
import { expectRuleCounted, type RuleRef } from '../support/rule-counters.js';
import { requireRoot, useSandbox } from '../support/sandbox.js';
import { skipBecause } from '../support/skip.js';
import { traceAgrees } from '../support/trace-check.js';
import { traceOnNode } from '../../src/cli/trace.js';

/**
 * Kernel paths of iptables mode that only real packets show (issue 8 §1): the INVALID drop in
 * KUBE-FORWARD and the nf_conntrack_tcp_be_liberal switch, KUBE-FIREWALL against martian localnet
 * traffic, MASQUERADE --random-fully, large-cluster mode, the affinity timeout, node topology hints,
 * the Local serving-terminating fallback, and the flags --bind-address, --iptables-masquerade-bit and
 * --detect-local-mode BridgeInterface / InterfaceNamePrefix. Drops are proven by the DROP rule's own
 * packet counter, not only by a timeout. One sandbox; each test syncs the scenario it needs.
 */

const WEB = 8080;
const MASQ_V4 = '10.244.0.1';
const MASQ_V6 = 'fd00:10:244::1';
const WEB_IP = '10.96.20.10';
const WEB_IP6 = 'fd00:10:96::2010';
const WEB_NODEPORT = 30210;
const ZONE = 'zone-a';
/** Distinct outside client addresses for the affinity test. */
const CLIENT_IPS = Array.from({ length: 16 }, (_, i) => `192.0.2.${120 + i}`);
const NODE_SECOND_IP = '192.0.2.11';
const AFFINITY_S = 2;

const tcp = (ip: string, port: number, timeoutMs?: number): RequestSpec => ({
  proto: 'tcp',
  ip,
  port,
  ...(timeoutMs !== undefined ? { timeoutMs } : {}),
});

const http = [{ name: 'http', port: WEB }];

interface HintedPod {
  readonly pod: string;
  readonly nodeName?: string;
  readonly forNodes?: readonly string[];
  readonly forZones?: readonly string[];
}

/** An EndpointSlice whose endpoints carry topology hints, as the EndpointSlice controller writes them. */
function hintedSlice(sb: Sandbox, service: string, eps: readonly HintedPod[]): unknown {
  const slice = sliceObject(
    service,
    'IPv4',
    http,
    eps.map((e) => ({ ip: sb.podIP(e.pod), ...(e.nodeName ? { nodeName: e.nodeName } : {}) })),
  );
  const endpoints = (slice.endpoints as Record<string, unknown>[]).map((ep, i) => {
    const e = eps[i]!;
    const hints = {
      ...(e.forNodes ? { forNodes: e.forNodes.map((name) => ({ name })) } : {}),
      ...(e.forZones ? { forZones: e.forZones.map((name) => ({ name })) } : {}),
    };
    return Object.keys(hints).length > 0 ? { ...ep, hints } : ep;
  });
  return { ...slice, endpoints };
}

const hasArgs = (r: SavedRule, ...args: string[]): boolean => args.every((a) => r.args.includes(a));

describe('iptables mode: kernel paths and flags (real traffic)', function () {
  this.timeout(60_000);
  const env = useSandbox({
    brNetfilter: true,
    pods: [
      { name: 'a', index: 2, tcpPorts: [WEB] },
      { name: 'b', index: 3, tcpPorts: [WEB] },
      { name: 'c', index: 4, tcpPorts: [WEB] },
      { name: 'client', index: 10 },
    ],
  });
  let h: IptablesHarness;

  function objects(): unknown[] {
    const sb = env.sb;
    return [
      nodeObject(sb, { 'topology.kubernetes.io/zone': ZONE }),
      serviceObject('web', {
        type: 'NodePort',
        clusterIPs: [WEB_IP, WEB_IP6],
        ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: WEB_NODEPORT }],
      }),
      sliceObject('web', 'IPv4', http, podEndpoints(sb, ['a', 'b'])),
      sliceObject('web', 'IPv6', http, podEndpoints(sb, ['a', 'b'], 'IPv6')),
      serviceObject('sticky', {
        clusterIPs: ['10.96.20.20'],
        ports: [{ name: 'http', port: 80, targetPort: WEB }],
        sessionAffinity: { timeoutSeconds: AFFINITY_S },
      }),
      sliceObject('sticky', 'IPv4', http, podEndpoints(sb, ['a', 'b'])),
      // Node hints win over zone hints: b and c are hinted for this node's zone, but not for this node.
      serviceObject('nodehint', {
        clusterIPs: ['10.96.20.30'],
        ports: [{ name: 'http', port: 80, targetPort: WEB }],
      }),
      hintedSlice(sb, 'nodehint', [
        { pod: 'a', forNodes: [NODE_NAME], forZones: ['zone-b'] },
        { pod: 'b', nodeName: 'node-2', forNodes: ['node-2'], forZones: [ZONE] },
        { pod: 'c', nodeName: 'node-2', forNodes: ['node-2'], forZones: [ZONE] },
      ]),
      // Every endpoint has a node hint, none for this node (and no zone hints): no filtering.
      serviceObject('nodehint-other', {
        clusterIPs: ['10.96.20.31'],
        ports: [{ name: 'http', port: 80, targetPort: WEB }],
      }),
      hintedSlice(sb, 'nodehint-other', [
        { pod: 'a', forNodes: ['node-3'] },
        { pod: 'b', nodeName: 'node-2', forNodes: ['node-2'] },
        { pod: 'c', nodeName: 'node-2', forNodes: ['node-2'] },
      ]),
      // eTP=Local, no ready local endpoint: the local serving+terminating one (a) serves.
      serviceObject('etp-term', {
        type: 'NodePort',
        clusterIPs: ['10.96.20.40'],
        externalTrafficPolicy: 'Local',
        ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: 30240 }],
      }),
      sliceObject('etp-term', 'IPv4', http, [
        { ip: sb.podIP('a'), ready: false, serving: true, terminating: true },
        { ip: sb.podIP('b'), nodeName: 'node-2' },
      ]),
      // The same with a local terminating endpoint that is not serving: no local endpoint at all.
      serviceObject('etp-term-none', {
        type: 'NodePort',
        clusterIPs: ['10.96.20.41'],
        externalTrafficPolicy: 'Local',
        ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: 30241 }],
      }),
      sliceObject('etp-term-none', 'IPv4', http, [
        { ip: sb.podIP('c'), ready: false, serving: false, terminating: true },
        { ip: sb.podIP('b'), nodeName: 'node-2' },
      ]),
    ];
  }

  const scenario = (opts: ProxierOptions = {}, extra: readonly unknown[] = []): Promise<unknown> =>
    h.sync([...objects(), ...extra], opts);

  /** The next sync of the harness's proxiers is full (after another writer touched the tables). */
  const forceFull = (): void => {
    for (const f of ['IPv4', 'IPv6'] as const) h.proxier(f).forceFullSync();
  };

  const save = async (family: IPFamily, table: 'nat' | 'filter') =>
    parseIptablesSave(
      (await env.sb.exec('node', [family === 'IPv4' ? 'iptables-save' : 'ip6tables-save', '-t', table]))
        .stdout,
    );

  before(async function () {
    requireRoot(this);
    this.timeout(60_000);
    h = new IptablesHarness(env.sb);
    await h.addAddresses(
      'outside',
      'eth0',
      CLIENT_IPS.map((ip) => `${ip}/24`),
    );
    await scenario();
  });

  describe('KUBE-FORWARD INVALID drop and nf_conntrack_tcp_be_liberal', () => {
    const invalidDrop: RuleRef = {
      table: 'filter',
      chain: 'KUBE-FORWARD',
      match: (r) => hasArgs(r, '--ctstate', 'INVALID') && getArg(r, '-j') === 'DROP',
      what: 'KUBE-FORWARD INVALID drop',
    };

    it('a FIN for a connection conntrack never saw, forwarded to a pod, is dropped by that rule', async () => {
      await scenario();
      const sb = env.sb;
      // A bare ACK would be picked up mid-stream (nf_conntrack_tcp_loose=1); a FIN with no connection
      // is INVALID whatever the loose setting: the stale segment kube-proxy's rule exists for.
      const fin = {
        src: sb.outsideIPv4,
        dst: sb.podIP('a'),
        srcPort: 41000,
        dstPort: WEB,
        flags: TCP_FIN | TCP_ACK,
        seq: 0x12345678,
        ack: 0x9abcdef0,
      };
      const link = { from: 'outside', dev: 'eth0', to: 'node', toDev: 'ext0' } as const;
      await expectRuleCounted(sb, invalidDrop, () => sendTcpFrame(sb, link, fin, 3), 3);
      // A real connection on the same path is fine.
      answeredPeer(await sb.request('outside', tcp(sb.podIP('a'), WEB)), 'a');
    });

    it('with be_liberal=1 a fresh svcplane writes no INVALID drop; with 0 again it does', async () => {
      await scenario();
      const sb = env.sb;
      const fresh = async (): Promise<SavedRule[]> => {
        const p = new IptablesProxier({
          family: 'IPv4',
          nodeName: NODE_NAME,
          netns: sb.nodeNs,
          ...DEFAULT_OPTIONS,
        });
        await p.setup();
        await p.sync(h.current);
        return [...rulesOf(await save('IPv4', 'filter'), 'filter', 'KUBE-FORWARD')];
      };
      const key = 'net.netfilter.nf_conntrack_tcp_be_liberal';
      try {
        await writeSysctl(key, 1, { netns: sb.nodeNs });
        const liberal = await fresh();
        assert.ok(!liberal.some(invalidDrop.match), liberal.map((r) => r.text).join('\n'));
        assert.ok(
          liberal.some((r) => ruleComment(r) === 'kubernetes forwarding rules'),
          'the rest of KUBE-FORWARD',
        );
        answeredPeer(await sb.request('outside', tcp(WEB_IP, 80)), ['a', 'b']);
      } finally {
        await writeSysctl(key, 0, { netns: sb.nodeNs });
      }
      assert.ok((await fresh()).some(invalidDrop.match), 'the INVALID drop is back');
      forceFull();
    });
  });

  it('KUBE-FIREWALL drops connections to 127.0.0.x arriving from outside and from a pod (counted)', async () => {
    await scenario({ localhostNodePorts: true });
    const sb = env.sb;
    const rule: RuleRef = {
      table: 'filter',
      chain: 'KUBE-FIREWALL',
      match: (r) => ruleComment(r) === 'block incoming localnet connections' && getArg(r, '-j') === 'DROP',
      what: 'KUBE-FIREWALL localnet drop',
    };
    // route_localnet=1 (set for localhost NodePorts) lets such packets in; only this rule stops them.
    // Port 12345 is no NodePort, so nothing DNATs them (a DNATed localhost NodePort is allowed).
    const syn = (src: string, srcPort: number) =>
      ({ src, dst: '127.0.0.5', srcPort, dstPort: 12345, flags: TCP_SYN }) as const;
    await expectRuleCounted(
      sb,
      rule,
      async () => {
        await sendTcpFrame(
          sb,
          { from: 'outside', dev: 'eth0', to: 'node', toDev: 'ext0' },
          syn(sb.outsideIPv4, 42000),
          2,
        );
        await sendTcpFrame(
          sb,
          { from: 'client', dev: 'eth0', to: 'node', toDev: 'cbr0' },
          syn(sb.podIP('client'), 42001),
          2,
        );
      },
      4,
    );
    // svcplane trace says the same of those packets: dropped by that very rule.
    for (const [src, inInterface] of [
      [sb.outsideIPv4, 'ext0'],
      [sb.podIP('client'), 'cbr0'],
    ] as const) {
      const { trace } = await traceOnNode(
        {
          src,
          dst: '127.0.0.5',
          dport: 12345,
          proto: 'tcp',
          iptablesBinary: 'iptables',
          netns: sb.nodeNs,
          inInterface,
        },
        'IPv4',
      );
      assert.equal(trace.verdict, 'drop', `trace from ${src} on ${inInterface}`);
      assert.ok(
        trace.path.some((s) => s.chain === 'KUBE-FIREWALL' && s.action === 'DROP'),
        JSON.stringify(trace.path),
      );
    }
    // The node's own localhost traffic is not touched: a localhost NodePort still answers.
    answeredPeer(await sb.request('node', tcp('127.0.0.1', WEB_NODEPORT)), ['a', 'b']);
  });

  it('MASQUERADE --random-fully after a real sync (when supported), and masqueraded traffic flows', async function () {
    await scenario();
    const sb = env.sb;
    if (!(await h.proxier('IPv4').ipt.supportsRandomFully())) {
      skipBecause(this, 'this iptables has no --random-fully');
    }
    for (const family of ['IPv4', 'IPv6'] as const) {
      const post = rulesOf(await save(family, 'nat'), 'nat', 'KUBE-POSTROUTING');
      const masq = post.find((r) => getArg(r, '-j') === 'MASQUERADE');
      assert.ok(masq, `${family}: KUBE-POSTROUTING masquerades`);
      assert.ok(masq.args.includes('--random-fully'), `${family}: ${masq.text}`);
    }
    const masqRule: RuleRef = {
      table: 'nat',
      chain: 'KUBE-POSTROUTING',
      match: (r) => getArg(r, '-j') === 'MASQUERADE',
      what: 'MASQUERADE --random-fully',
    };
    await expectRuleCounted(sb, masqRule, async () => {
      assert.equal(answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, WEB_NODEPORT))).peer, MASQ_V4);
    });
  });

  it('large-cluster mode (>1000 endpoints): the real Service answers; SEP and SVC→SEP rules carry no comments', async () => {
    const sb = env.sb;
    // 1001 endpoints on another node (never reached) push the total over kube-proxy's threshold.
    const fake: SliceEndpoint[] = Array.from({ length: 1001 }, (_, i) => ({
      ip: `10.250.${i >> 7}.${(i & 127) + 1}`,
      nodeName: 'node-2',
    }));
    const big = [
      serviceObject('big', {
        clusterIPs: ['10.96.20.99'],
        ports: [{ name: 'http', port: 80, targetPort: WEB }],
      }),
      sliceObject('big', 'IPv4', http, fake),
    ];
    try {
      // Crossing the threshold rewrites only changed Services (kube-proxy); a full sync rewrites all.
      forceFull();
      await scenario({}, big);
      assert.equal(h.lastReports[0]!.full, true);
      assert.equal(h.lastReports[0]!.render.largeClusterMode, true, 'IPv4 is in large-cluster mode');
      assertAnsweredBy(await h.answers('client', tcp(WEB_IP, 80), { until: ['a', 'b'] }), ['a', 'b']);
      // svcplane trace finds its way through the comment-less SEP rules, and traffic agrees.
      const t = await traceAgrees(sb, 'client', tcp(WEB_IP, 80));
      assert.deepEqual(
        t.endpoints.map((e) => e.endpoint),
        ['a', 'b'].map((p) => `${sb.podIP(p)}:${WEB}`),
      );
      const nat = await save('IPv4', 'nat');
      const svc = serviceChainName('default/web:http', 'tcp');
      const seps = ['a', 'b'].map((p) =>
        endpointChainName('default/web:http', 'tcp', `${sb.podIP(p)}:${WEB}`),
      );
      const svcToSep = rulesOf(nat, 'nat', svc).filter((r) => getArg(r, '-j')?.startsWith('KUBE-SEP-'));
      assert.equal(svcToSep.length, 2);
      for (const r of [...svcToSep, ...seps.flatMap((c) => rulesOf(nat, 'nat', c))]) {
        assert.equal(ruleComment(r), undefined, `no comment expected: ${r.text}`);
      }
      assert.ok(
        rulesOf(nat, 'nat', 'KUBE-SERVICES').some((r) => ruleComment(r) === 'default/web:http cluster IP'),
        'KUBE-SERVICES keeps its comments',
      );
      const sepChains = nat.tables.get('nat')!.chains.filter((c) => c.name.startsWith('KUBE-SEP-'));
      assert.ok(sepChains.length >= 1003, `${sepChains.length} SEP chains in the kernel`);
    } finally {
      forceFull();
      await scenario();
    }
    assert.equal(h.lastReports[0]!.render.largeClusterMode, false);
  });

  it(`sessionAffinity timeoutSeconds=${AFFINITY_S}: clients stick, and pick afresh once it expired`, async () => {
    await scenario();
    const sb = env.sb;
    const svc = tcp('10.96.20.20', 80);
    const first = new Map<string, string>();
    for (const sourceIP of CLIENT_IPS) {
      const pods = [];
      for (let i = 0; i < 3; i++)
        pods.push(answeredPeer(await sb.request('outside', { ...svc, sourceIP })).reply.pod);
      assert.equal(new Set(pods).size, 1, `${sourceIP} stuck to one backend: ${pods.join(',')}`);
      first.set(sourceIP, pods[0]!);
    }
    assert.match(
      (await h.save('IPv4')).split('\n').find((l) => l.includes('--rcheck')) ?? '',
      new RegExp(`--seconds ${AFFINITY_S} --reap`),
    );
    // xt_recent forgets a client AFFINITY_S after its last new connection: one wait for all of them.
    await new Promise((r) => setTimeout(r, AFFINITY_S * 1000 + 300));
    const moved: string[] = [];
    for (const sourceIP of CLIENT_IPS) {
      const now = answeredPeer(await sb.request('outside', { ...svc, sourceIP })).reply.pod;
      if (now !== first.get(sourceIP)) {
        moved.push(sourceIP);
        // ...and sticks to its new backend.
        assert.equal(answeredPeer(await sb.request('outside', { ...svc, sourceIP })).reply.pod, now);
      }
    }
    // Without expiry no client could move; with it each picks 1 of 2 afresh (all 16 staying: p = 2^-16).
    assert.ok(moved.length > 0, 'some client moved to the other backend after the timeout');
  });

  it("hints.forNodes naming this node restrict a Service to those endpoints (over zone hints); others' do not", async () => {
    await scenario();
    assertAnsweredBy(await h.answers('client', tcp('10.96.20.30', 80), { max: 10 }), ['a']);
    assertAnsweredBy(await h.answers('client', tcp('10.96.20.31', 80), { until: ['a', 'b', 'c'] }), [
      'a',
      'b',
      'c',
    ]);
    // svcplane trace agrees: one endpoint for the node-hinted Service, three for the other.
    assert.equal((await traceAgrees(env.sb, 'client', tcp('10.96.20.30', 80))).endpoints.length, 1);
    assert.equal((await traceAgrees(env.sb, 'client', tcp('10.96.20.31', 80))).endpoints.length, 3);
  });

  it('eTP=Local: a serving-terminating local endpoint serves outside traffic when none is ready; a not-serving one does not', async () => {
    await scenario();
    const sb = env.sb;
    for (let i = 0; i < 6; i++) {
      const { peer } = answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30240)), 'a');
      assert.equal(peer, sb.outsideIPv4, 'client IP preserved (eTP=Local)');
    }
    // From a pod the short-circuit goes to the cluster endpoints: the ready remote one.
    answeredPeer(await sb.request('client', tcp(sb.nodeIPv4, 30240)), 'b');

    const drop: RuleRef = {
      table: 'filter',
      chain: 'KUBE-EXTERNAL-SERVICES',
      match: (r) =>
        ruleComment(r) === 'default/etp-term-none:http has no local endpoints' &&
        getArg(r, '--dport') === '30241',
      what: 'eTP=Local no-local-endpoints DROP',
    };
    assert.equal(
      getArg(
        rulesOf(await save('IPv4', 'filter'), 'filter', 'KUBE-EXTERNAL-SERVICES').find(drop.match)!,
        '-j',
      ),
      'DROP',
    );
    await expectRuleCounted(sb, drop, () =>
      expectNoAnswer(sb, 'outside', tcp(sb.nodeIPv4, 30241, 600), 'timeout'),
    );
    answeredPeer(await sb.request('client', tcp(sb.nodeIPv4, 30241)), 'b');
  });

  it('--bind-address is the node IP: with --nodeport-addresses=primary NodePorts answer there only', async () => {
    const sb = env.sb;
    await h.addAddresses('node', 'ext0', [`${NODE_SECOND_IP}/24`]);
    try {
      // Control: without --bind-address the Node object's InternalIP is the primary IP.
      await scenario({ nodePortAddresses: ['primary'] });
      answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, WEB_NODEPORT)), ['a', 'b']);
      await expectNoAnswer(sb, 'outside', tcp(NODE_SECOND_IP, WEB_NODEPORT, 600), 'refused');

      await scenario({ nodePortAddresses: ['primary'], bindAddress: NODE_SECOND_IP });
      assertAnsweredBy(await h.answers('outside', tcp(NODE_SECOND_IP, WEB_NODEPORT), { until: ['a', 'b'] }), [
        'a',
        'b',
      ]);
      await expectNoAnswer(sb, 'outside', tcp(sb.nodeIPv4, WEB_NODEPORT, 600), 'refused');
      // svcplane trace agrees: a NodePort on the --bind-address only.
      assert.equal((await traceAgrees(sb, 'outside', tcp(NODE_SECOND_IP, WEB_NODEPORT))).verdict, 'dnat');
      assert.notEqual((await traceAgrees(sb, 'outside', tcp(sb.nodeIPv4, WEB_NODEPORT))).verdict, 'dnat');
      // IPv6 has no --bind-address of its family: the Node object's IPv6 address serves.
      answeredPeer(await sb.request('outside', tcp(sb.nodeIPv6, WEB_NODEPORT)), ['a', 'b']);
    } finally {
      await h.removeAddresses('node', 'ext0', [`${NODE_SECOND_IP}/24`]);
    }
  });

  it('--iptables-masquerade-bit=5: mark 0x20 in every rule, and traffic is still masqueraded', async () => {
    await scenario({ masqueradeBit: 5 });
    const sb = env.sb;
    for (const family of ['IPv4', 'IPv6'] as const) {
      const nat = await save(family, 'nat');
      // iptables-save shows --or-mark M as --set-xmark M/M, --xor-mark M as --set-xmark M/0x0.
      assert.ok(
        rulesOf(nat, 'nat', 'KUBE-MARK-MASQ').some((r) => hasArgs(r, '--set-xmark', '0x20/0x20')),
        `${family} KUBE-MARK-MASQ sets 0x20`,
      );
      const post = rulesOf(nat, 'nat', 'KUBE-POSTROUTING');
      assert.ok(post.some((r) => hasArgs(r, '!', '--mark', '0x20/0x20') && getArg(r, '-j') === 'RETURN'));
      assert.ok(
        post.some((r) => hasArgs(r, '--set-xmark', '0x20/0x0')),
        'the mark is cleared',
      );
      const filter = await save(family, 'filter');
      assert.ok(rulesOf(filter, 'filter', 'KUBE-FORWARD').some((r) => hasArgs(r, '--mark', '0x20/0x20')));
      const text = (await sb.exec('node', [family === 'IPv4' ? 'iptables-save' : 'ip6tables-save'])).stdout;
      assert.doesNotMatch(text, /0x4000/, `${family}: the default mark is gone`);
    }
    assert.equal(answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, WEB_NODEPORT))).peer, MASQ_V4);
    assert.equal(answeredPeer(await sb.request('outside', tcp(sb.nodeIPv6, WEB_NODEPORT))).peer, MASQ_V6);
    assert.equal(
      answeredPeer(await sb.request('outside', tcp(WEB_IP, 80))).peer,
      MASQ_V4,
      'ClusterIP from outside',
    );
    assert.equal(answeredPeer(await sb.request('client', tcp(WEB_IP, 80))).peer, sb.podIP('client'));
    // svcplane trace reads the 0x20 mark: masquerade predicted where it happens, and only there.
    for (const [from, req, masq] of [
      ['outside', tcp(sb.nodeIPv4, WEB_NODEPORT), true],
      ['outside', tcp(sb.nodeIPv6, WEB_NODEPORT), true],
      ['outside', tcp(WEB_IP, 80), true],
      ['client', tcp(WEB_IP, 80), false],
    ] as const) {
      const t = await traceAgrees(sb, from, req);
      assert.equal(t.masquerade, masq, `${from} → ${req.ip}: ${t.masqueradeReason}`);
    }
  });

  it('--detect-local-mode=BridgeInterface: pods on cbr0 keep their source, outside traffic is masqueraded', async () => {
    await scenario({ detectLocalMode: 'BridgeInterface', bridgeInterface: 'cbr0', clusterCIDRs: [] });
    const sb = env.sb;
    const svc = serviceChainName('default/web:http', 'tcp');
    for (const family of ['IPv4', 'IPv6'] as const) {
      const masq = rulesOf(await save(family, 'nat'), 'nat', svc).filter(
        (r) => getArg(r, '-j') === 'KUBE-MARK-MASQ',
      );
      assert.equal(masq.length, 1);
      assert.match(masq[0]!.text, /! -i cbr0 /, `${family}: ${masq[0]!.text}`);
    }
    assert.equal(answeredPeer(await sb.request('client', tcp(WEB_IP, 80))).peer, sb.podIP('client'));
    assert.equal(answeredPeer(await sb.request('client', tcp(WEB_IP6, 80))).peer, sb.podIP('client', 'IPv6'));
    assert.equal(answeredPeer(await sb.request('outside', tcp(WEB_IP, 80))).peer, MASQ_V4);
    assert.equal(answeredPeer(await sb.request('outside', tcp(WEB_IP6, 80))).peer, MASQ_V6);
    assert.equal(
      answeredPeer(await sb.request('node', tcp(WEB_IP, 80))).peer,
      MASQ_V4,
      'the node itself is not a pod',
    );
  });

  it('--detect-local-mode=InterfaceNamePrefix: a routed pod on cali* keeps its source; bridged pods and outside are masqueraded', async () => {
    const sb = env.sb;
    // A pod as Calico wires it: its own veth (host end calitest0), routed, no bridge.
    const ns = `${sb.prefix}routed`;
    const podIP = '10.244.1.2';
    let agent: AgentProcess | undefined;
    try {
      // Namespaces are added from the root mount namespace (`ip netns exec` has a private one).
      await run(['ip', 'netns', 'add', ns]);
      await run(['ip', '-n', sb.nodeNs, '-batch', '-'], {
        input: [
          `link add calitest0 type veth peer name eth0 netns ${ns}`,
          'addr add 10.244.1.1/30 dev calitest0',
          'link set dev calitest0 up',
          '',
        ].join('\n'),
      });
      await run(['ip', '-n', ns, '-batch', '-'], {
        input: [
          'link set dev lo up',
          `addr add ${podIP}/30 dev eth0`,
          'link set dev eth0 up',
          'route add default via 10.244.1.1 dev eth0',
          '',
        ].join('\n'),
      });
      const routed = await AgentProcess.start({ ns, name: 'routed', sandbox: sb.id, addrs: [podIP] });
      agent = routed;
      await scenario({
        detectLocalMode: 'InterfaceNamePrefix',
        interfaceNamePrefix: 'cali',
        clusterCIDRs: [],
      });
      const masq = rulesOf(
        await save('IPv4', 'nat'),
        'nat',
        serviceChainName('default/web:http', 'tcp'),
      ).find((r) => getArg(r, '-j') === 'KUBE-MARK-MASQ');
      assert.match(masq?.text ?? '', /! -i cali\+ /);
      for (let i = 0; i < 3; i++) {
        const r = await routed.request(tcp(WEB_IP, 80));
        assert.equal(answeredPeer(r, ['a', 'b']).peer, podIP, 'the routed pod is local traffic');
      }
      assert.equal(
        answeredPeer(await sb.request('client', tcp(WEB_IP, 80))).peer,
        MASQ_V4,
        'cbr0 is not cali*',
      );
      assert.equal(answeredPeer(await sb.request('outside', tcp(WEB_IP, 80))).peer, MASQ_V4);
    } finally {
      await agent?.stop();
      await run(['ip', 'netns', 'del', ns], { allowFailure: true });
    }
  });
});
