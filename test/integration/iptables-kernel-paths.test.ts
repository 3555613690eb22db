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
import { readSysctl, writeSysctl } from '../../src/util/sysctl.js';
import {
  answeredPeer,
  assertAnsweredBy,
  IptablesHarness,
  nodeObject,
  podEndpoints,
  sandboxProxierConfig,
  serviceObject,
  sliceObject,
  type ProxierOptions,
  type SliceEndpoint,
} from '../support/iptables-harness.js';
import { sendTcpFrame, TCP_ACK, TCP_FIN, TCP_SYN } from '../support/raw-packets.js';
import { expectRuleCounted, type RuleRef } from '../support/rule-counters.js';
import { requireRoot, tcp, useSandbox } from '../support/sandbox.js';
import { skipBecause } from '../support/skip.js';
import { traceAgrees } from '../support/trace-check.js';
import { traceOnNode } from '../../src/cli/trace.js';

/**
 * Kernel paths of iptables mode that only real packets show and that are iptables mode's own (issue 8
 * §1): the INVALID drop in KUBE-FORWARD and the nf_conntrack_tcp_be_liberal switch, KUBE-FIREWALL
 * against martian localnet traffic, MASQUERADE --random-fully, large-cluster mode, SCTP rules. The
 * traffic scenarios every mode shares (affinity expiry, topology hints, the Local serving-terminating
 * fallback, --bind-address, the masquerade bit, the local-traffic detectors …) are the scenario table's
 * (test/support/scenarios/, run by scenarios-iptables.test.ts). Drops are proven by the DROP rule's own
 * packet counter, not only by a timeout. One sandbox; each test syncs the scenario it needs.
 */

const WEB = 8080;
const SCTP = 7777;
const MASQ_V4 = '10.244.0.1';
const WEB_IP = '10.96.20.10';
const WEB_IP6 = 'fd00:10:96::2010';
const WEB_NODEPORT = 30210;
const SCTP_IP = '10.96.20.80';

const http = [{ name: 'http', port: WEB }];

const hasArgs = (r: SavedRule, ...args: string[]): boolean => args.every((a) => r.args.includes(a));

describe('iptables mode: kernel paths of its own (real traffic)', function () {
  this.timeout(60_000);
  const env = useSandbox({
    brNetfilter: true,
    pods: [
      { name: 'a', index: 2, tcpPorts: [WEB] },
      { name: 'b', index: 3, tcpPorts: [WEB] },
      { name: 'client', index: 10 },
    ],
  });
  let h: IptablesHarness;

  function objects(): unknown[] {
    const sb = env.sb;
    return [
      nodeObject(sb),
      serviceObject('web', {
        type: 'NodePort',
        clusterIPs: [WEB_IP, WEB_IP6],
        ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: WEB_NODEPORT }],
      }),
      sliceObject('web', 'IPv4', http, podEndpoints(sb, ['a', 'b'])),
      sliceObject('web', 'IPv6', http, podEndpoints(sb, ['a', 'b'], 'IPv6')),
      serviceObject('sctp', {
        clusterIPs: [SCTP_IP],
        ports: [{ port: SCTP, protocol: 'SCTP' }],
      }),
      sliceObject('sctp', 'IPv4', [{ port: SCTP, protocol: 'SCTP' }], podEndpoints(sb, ['a'])),
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
        const p = new IptablesProxier(sandboxProxierConfig(sb));
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
    // Localhost NodePorts need route_localnet, which iptables mode sets (and this rule then guards).
    assert.equal((await readSysctl('net.ipv4.conf.all.route_localnet', { netns: sb.nodeNs }))?.trim(), '1');
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
      assert.equal(h.lastReports[0]!.largeClusterMode, true, 'IPv4 is in large-cluster mode');
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
    assert.equal(h.lastReports[0]!.largeClusterMode, false);
  });

  it('a node address added between syncs makes the next sync full, with NodePorts on it (no partial render made before the addresses were read)', async () => {
    // The proxier renders a partial sync while `ip` reads the addresses, with the last sync's; an
    // address that came meanwhile must give the full sync's render, not that one.
    const added = '198.51.100.77';
    const opts: ProxierOptions = { nodePortAddresses: ['198.51.100.0/24'] };
    const nodePortJumps = async (): Promise<string[]> =>
      rulesOf(await save('IPv4', 'nat'), 'nat', 'KUBE-SERVICES')
        .filter((r) => getArg(r, '-j') === 'KUBE-NODEPORTS')
        .map((r) => getArg(r, '-d') ?? 'any');
    const another = [
      serviceObject('another', {
        clusterIPs: ['10.96.20.99'],
        ports: [{ name: 'http', port: 80, targetPort: WEB }],
      }),
      sliceObject('another', 'IPv4', http, podEndpoints(env.sb, ['a'])),
    ];
    await scenario(opts);
    try {
      assert.deepEqual(await nodePortJumps(), [], 'no address of the node in 198.51.100.0/24 yet');
      await h.addAddresses('node', 'lo', [`${added}/32`]);
      // A new Service alone would be a partial sync.
      await scenario(opts, another);
      assert.equal(h.lastReports[0]!.full, true, 'the node facts changed: full sync');
      assert.deepEqual(await nodePortJumps(), [`${added}/32`]);
    } finally {
      await h.removeAddresses('node', 'lo', [`${added}/32`]);
      await scenario();
    }
  });

  it('SCTP: the kernel accepts the rules (the sandbox agent speaks no SCTP; IPVS runs SCTP traffic in UML)', async () => {
    await scenario();
    const saved = await save('IPv4', 'nat');
    const front = rulesOf(saved, 'nat', 'KUBE-SERVICES')
      .map((r) => r.text)
      .find((t) => t.includes(`-d ${SCTP_IP}/32`));
    assert.ok(front, 'a KUBE-SERVICES rule for the SCTP ClusterIP is in the kernel');
    assert.match(front, /-p sctp .*-m sctp --dport 7777 -j KUBE-SVC-/);
    const svcChain = /-j (KUBE-SVC-\S+)/.exec(front)![1]!;
    const sep = rulesOf(saved, 'nat', svcChain)
      .map((r) => /-j (KUBE-SEP-\S+)/.exec(r.text)?.[1])
      .find((c) => c !== undefined);
    assert.ok(sep, `${svcChain} jumps to an endpoint chain`);
    const dnat = rulesOf(saved, 'nat', sep).map((r) => r.text);
    assert.ok(
      dnat.some((t) => /-p sctp .*-j DNAT --to-destination 10\.244\.0\.2:7777/.test(t)),
      dnat.join('\n'),
    );
  });
});
