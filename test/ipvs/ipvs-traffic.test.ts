import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseIptablesSave, rulesOf, ruleComment } from '../../src/iptables/save-parse.js';
import { parseIpvsadmConnections, parseIpvsadmSave } from '../../src/ipvs/ipvsadm.js';
import { IpvsProxier, type IpvsProxierConfig, type IpvsSyncReport } from '../../src/ipvs/proxier.js';
import { cleanupIpvs } from '../../src/ipvs/cleanup.js';
import { buildClusterState, type SourceObject } from '../../src/model/build.js';
import type { ClusterState, IPFamily } from '../../src/model/types.js';
import type { Sandbox, Where } from '../../src/netns/sandbox.js';
import type { ProbeResult, RequestSpec } from '../../src/netns/protocol.js';
import {
  answeredPeer,
  assertAnsweredBy,
  expectNoAnswer,
  IptablesHarness,
  serviceObject,
  sliceObject,
} from '../support/iptables-harness.js';
import { expectError, expectReply, useSandbox } from '../support/sandbox.js';
import { run } from '../../src/util/exec.js';
import { Background, requireUml, waitFor } from './helpers.js';

/**
 * `--proxy-mode ipvs` with real traffic, what is IPVS mode's own: IpvsProxier programs a sandbox node
 * inside User-mode Linux (real IPVS) after iptables mode ran there (the switch), over weight-0 real
 * servers of a previous run (leftovers); node → LB IP filtering, per-virtual-server affinity, health
 * check node ports, SCTP traffic, syncs that leave established connections alone and graceful
 * termination. The traffic scenarios every mode shares (frontends, masquerade and its flags,
 * affinity, policies, topology, no-endpoint REJECT, hairpin, IPv6) are the scenario table's
 * (test/support/scenarios/, run in IPVS mode by scenarios-ipvs.test.ts), where IPVS's differences
 * are recorded with the reason (docs/modes.md, "IPVS mode").
 *
 * One sandbox for the file. Before IPVS starts, the node runs iptables mode on the same Services (the
 * switch) and holds weight-0 real servers (a previous run). Each Service carries one scenario.
 */

const NODE = 'node-1';
const TARGET = 8080;
const METRICS = 9100;
const UDP_TARGET = 5353;
const SCTP_PORT = 7777;
/** The node's bridge address: what a backend sees as peer when traffic was masqueraded. */
const MASQ_V4 = '10.244.0.1';
/** IPv6 externalIP and LB IP, off the node's link (routed via the node, like 203.0.113.x). */
const EXTERNAL_IP_V6 = '2001:db8:ff::10';
const LB_IP_V6 = '2001:db8:ff::20';
/** A second outside address, outside the LoadBalancer's source range. */
const OUTSIDE_OTHER_IP = '192.0.2.3';
/** Extra outside client addresses for session affinity (distinct client IPs). */
const CLIENT_IPS = Array.from({ length: 16 }, (_, i) => `192.0.2.${100 + i}`);
/** A request's timeout when no answer is expected (a DROP). */
const DROP_MS = 800;

interface EpSpec {
  readonly pod: string;
  readonly node?: string;
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating?: boolean;
}

type Proto = 'TCP' | 'UDP' | 'SCTP';

interface PortDef {
  readonly name: string;
  readonly protocol: Proto;
  readonly port: number;
  /** The Service's targetPort (a number or a container port name). */
  readonly targetPort: number | string;
  /** The EndpointSlice's port number. */
  readonly endpointPort: number;
  readonly nodePort?: number;
}

interface SvcSpec {
  readonly name: string;
  readonly index: number;
  readonly type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  readonly protocol?: Proto;
  readonly nodePort?: number;
  /** Instead of the one default port (80 → 8080 / 5353 / 7777 by protocol). */
  readonly ports?: readonly PortDef[];
  readonly eTP?: 'Local' | 'Cluster';
  readonly iTP?: 'Local' | 'Cluster';
  readonly lbIPs?: readonly string[];
  readonly sourceRanges?: readonly string[];
  readonly externalIPs?: readonly string[];
  readonly affinity?: boolean;
  readonly healthCheckNodePort?: number;
  readonly endpoints: readonly EpSpec[];
}

const clusterIP = (i: number): string => `10.96.20.${i}`;
const clusterIP6 = (i: number): string => `fd00:96::20:${i}`;

function portsOf(s: SvcSpec): readonly PortDef[] {
  if (s.ports) return s.ports;
  const protocol = s.protocol ?? 'TCP';
  const target = protocol === 'UDP' ? UDP_TARGET : protocol === 'SCTP' ? SCTP_PORT : TARGET;
  return [
    {
      name: 'p',
      protocol,
      port: 80,
      targetPort: target,
      endpointPort: target,
      ...(s.nodePort ? { nodePort: s.nodePort } : {}),
    },
  ];
}

function objectsOf(sb: Sandbox, s: SvcSpec): SourceObject[] {
  const ports = portsOf(s);
  const service = serviceObject(s.name, {
    type: s.type,
    clusterIPs: [clusterIP(s.index), clusterIP6(s.index)],
    ports,
    externalIPs: s.externalIPs,
    loadBalancerSourceRanges: s.sourceRanges,
    ingress: s.lbIPs?.map((ip) => ({ ip })),
    sessionAffinity: s.affinity ? { timeoutSeconds: 60 } : undefined,
    externalTrafficPolicy: s.eTP,
    internalTrafficPolicy: s.iTP,
    healthCheckNodePort: s.healthCheckNodePort,
  });
  const slice = (family: IPFamily): unknown =>
    sliceObject(
      s.name,
      family,
      ports.map((p) => ({ name: p.name, protocol: p.protocol, port: p.endpointPort })),
      s.endpoints.map((e) => ({
        ip: sb.podIP(e.pod, family),
        ready: e.ready,
        serving: e.serving,
        terminating: e.terminating,
        nodeName: e.node,
      })),
    );
  return [service, slice('IPv4'), slice('IPv6')].map((obj, i) => ({ obj, source: `${s.name}#${i}` }));
}

// Service indices used by tests below (the ClusterIP is 10.96.20.<index>).
const LATE = 24;
const LEFTOVER = 25;
const SCTP_SVC = 26;

const BASE: readonly SvcSpec[] = [
  {
    name: 'web',
    index: 1,
    type: 'NodePort',
    nodePort: 30080,
    externalIPs: ['203.0.113.10', EXTERNAL_IP_V6],
    endpoints: [{ pod: 'a' }, { pod: 'b' }],
  },
  { name: 'dns', index: 2, protocol: 'UDP', endpoints: [{ pod: 'a' }] },
  { name: 'sticky', index: 3, affinity: true, endpoints: [{ pod: 'a' }, { pod: 'b' }, { pod: 'c' }] },
  {
    name: 'lb-open',
    index: 4,
    type: 'LoadBalancer',
    nodePort: 30084,
    lbIPs: ['198.51.100.20'],
    sourceRanges: ['192.0.2.2/32'],
    endpoints: [{ pod: 'b' }],
  },
  {
    name: 'lb-closed',
    index: 5,
    type: 'LoadBalancer',
    nodePort: 30085,
    lbIPs: ['198.51.100.21'],
    sourceRanges: ['10.0.0.0/8'],
    endpoints: [{ pod: 'b' }],
  },
  { name: 'drain', index: 12, endpoints: [{ pod: 'a' }] },
  { name: 'drain-idle', index: 13, endpoints: [{ pod: 'a' }, { pod: 'b' }] },
  {
    name: 'lb',
    index: 16,
    type: 'LoadBalancer',
    nodePort: 30096,
    lbIPs: ['198.51.100.10', LB_IP_V6],
    endpoints: [{ pod: 'a' }, { pod: 'b' }],
  },
  // The node's own address is inside the source range: the node may reach the LB IP.
  {
    name: 'lb-node',
    index: 17,
    type: 'LoadBalancer',
    nodePort: 30097,
    lbIPs: ['198.51.100.22'],
    sourceRanges: ['192.0.2.0/24'],
    endpoints: [{ pod: 'b' }],
  },
  {
    name: 'etp-lb',
    index: 21,
    type: 'LoadBalancer',
    nodePort: 30098,
    healthCheckNodePort: 30298,
    eTP: 'Local',
    lbIPs: ['198.51.100.30'],
    endpoints: [{ pod: 'a' }, { pod: 'b', node: 'node-2' }],
  },
  {
    name: 'sticky-np',
    index: 22,
    type: 'NodePort',
    nodePort: 30099,
    affinity: true,
    endpoints: [{ pod: 'a' }, { pod: 'b' }],
  },
  { name: 'udp-drain', index: 23, protocol: 'UDP', endpoints: [{ pod: 'a' }, { pod: 'b' }] },
  // No endpoints while iptables mode runs (REJECT in its filter chains); gets some under IPVS.
  {
    name: 'late',
    index: LATE,
    type: 'NodePort',
    nodePort: 30094,
    externalIPs: ['203.0.113.60'],
    endpoints: [],
  },
  { name: 'leftover', index: LEFTOVER, endpoints: [{ pod: 'a' }] },
  {
    name: 'sctp',
    index: SCTP_SVC,
    type: 'NodePort',
    ports: [
      {
        name: 's',
        protocol: 'SCTP',
        port: SCTP_PORT,
        targetPort: SCTP_PORT,
        endpointPort: SCTP_PORT,
        nodePort: 30077,
      },
    ],
    endpoints: [{ pod: 'a' }, { pod: 'b' }],
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

const tcp = (ip: string, port: number, extra: Partial<RequestSpec> = {}): RequestSpec => ({
  proto: 'tcp',
  ip,
  port,
  ...extra,
});
const udp = (ip: string, port: number, extra: Partial<RequestSpec> = {}): RequestSpec => ({
  proto: 'udp',
  ip,
  port,
  ...extra,
});

async function answers(sb: Sandbox, from: string, req: RequestSpec, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await sb.request(from, { timeoutMs: 1500, ...req });
    out.push(r.ok ? r.reply.pod : `✗${r.error}`);
  }
  return out;
}

describe('IPVS proxy mode (real traffic in User-mode Linux)', function () {
  this.timeout(60_000);
  before(function () {
    requireUml(this);
  });
  let proxier: IpvsProxier | undefined;
  let proxier6: IpvsProxier | undefined;
  let h: IptablesHarness;
  /** What iptables mode left before IPVS started (the switch test checks it is gone). */
  let iptablesModeSave = '';
  let iptablesModeLate: ProbeResult | undefined;
  let firstReports: IpvsSyncReport[] = [];
  const servers: Background[] = [];
  // Registered before useSandbox's after hook: stop the drain timer while the namespace still exists.
  // All IPVS state lives in the sandbox's node namespace and goes with it; cleanupIpvs is proven there.
  after(async () => {
    proxier?.stop();
    proxier6?.stop();
    await Promise.all([proxier?.idle(), proxier6?.idle(), ...servers.map((s) => s.stop())]);
    await Promise.all([proxier?.close(), proxier6?.close()]);
    if (proxier && proxier6) {
      const { removed } = await cleanupIpvs([proxier.ipt, proxier6.ipt], { netns: proxier.ipt.netns });
      assert.ok(removed.includes('ip link del kube-ipvs0'), removed.join('\n'));
      const ns = proxier.ipt.netns;
      const left = async (argv: string[]): Promise<string> => (await run(argv, { netns: ns })).stdout;
      assert.equal((await left(['ipvsadm', '-Sn'])).trim(), '', 'IPVS table cleared');
      assert.doesNotMatch(await left(['ipset', 'list', '-n']), /KUBE-/, 'sets destroyed');
      assert.doesNotMatch(
        await left(['iptables-save']),
        /KUBE-IPVS-FILTER|KUBE-NODE-PORT|KUBE-LOAD-BALANCER/,
      );
      assert.doesNotMatch(await left(['ip6tables-save']), /KUBE-IPVS-FILTER|KUBE-NODE-PORT/);
    }
  });
  const env = useSandbox({
    brNetfilter: true,
    pods: [
      { name: 'a', index: 2, tcpPorts: [TARGET, METRICS], udpPorts: [UDP_TARGET] },
      { name: 'b', index: 3, tcpPorts: [TARGET, METRICS], udpPorts: [UDP_TARGET] },
      { name: 'c', index: 4, tcpPorts: [TARGET] },
      { name: 'client', index: 10 },
    ],
  });
  const px = (): IpvsProxier => {
    if (!proxier) throw new Error('proxier not created (before hook failed)');
    return proxier;
  };
  const objectsOfAll = (specs: readonly SvcSpec[]): SourceObject[] => [
    NODE_OBJECT,
    ...specs.flatMap((x) => objectsOf(env.sb, x)),
  ];
  const stateOf = (specs: readonly SvcSpec[]): ClusterState => {
    const s = buildClusterState(objectsOfAll(specs));
    assert.deepEqual(s.problems, []);
    return s;
  };
  /** The node's Services now: BASE, plus the changes tests made for good ("late" got endpoints …). */
  let specs: readonly SvcSpec[] = BASE;
  const withEndpoints = (name: string, endpoints: readonly EpSpec[]): SvcSpec[] =>
    specs.map((s) => (s.name === name ? { ...s, endpoints } : s));
  const ipvsadm = async (): Promise<string> => (await env.sb.exec('node', ['ipvsadm', '-Sn'])).stdout;

  const configFor = (family: IPFamily, overrides: Partial<IpvsProxierConfig> = {}): IpvsProxierConfig => ({
    family,
    nodeName: NODE,
    masqueradeBit: 14,
    masqueradeAll: false,
    clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/64'],
    nodePortAddresses: [],
    scheduler: 'rr',
    strictARP: true,
    excludeCIDRs: [],
    tcpTimeout: 0,
    tcpFinTimeout: 0,
    udpTimeout: 0,
    netns: env.sb.nodeNs,
    // Often enough for the drain test, rarely enough not to load the single UML CPU.
    gracefulCheckMs: 1000,
    ...overrides,
  });
  const BOTH: readonly IPFamily[] = ['IPv4', 'IPv6'];
  const main = (family: IPFamily): IpvsProxier => (family === 'IPv4' ? px() : proxier6!);
  /**
   * Converges the node with the main proxiers. A test that only looks at one family syncs only that
   * one: each sync costs seconds of the single UML CPU.
   */
  const syncMain = async (
    to: readonly SvcSpec[] = specs,
    families: readonly IPFamily[] = BOTH,
  ): Promise<IpvsSyncReport[]> => {
    const state = stateOf(to);
    const reports: IpvsSyncReport[] = [];
    for (const f of families) reports.push(await main(f).sync(state));
    return reports;
  };
  before(async function () {
    this.timeout(180_000);
    const sb = env.sb;
    h = new IptablesHarness(sb);
    await h.addAddresses(
      'outside',
      'eth0',
      [OUTSIDE_OTHER_IP, ...CLIENT_IPS].map((ip) => `${ip}/24`),
    );
    // SCTP: the UML kernel ships sctp.ko (and IPVS's SCTP support); socat speaks it. Loaded here
    // (this is the UML kernel, not the host's) so a missing module fails loudly instead of skipping.
    await run(['modprobe', '-a', 'sctp', 'xt_sctp']);
    for (const pod of ['a', 'b']) {
      servers.push(
        new Background([
          'ip',
          'netns',
          'exec',
          sb.pod(pod).ns,
          'socat',
          `SCTP-LISTEN:${SCTP_PORT},fork,reuseaddr`,
          `SYSTEM:echo ${pod} $SOCAT_PEERADDR`,
        ]),
      );
    }

    // 1. The node ran iptables mode before (the switch): same Services, "late" without endpoints.
    await h.sync(objectsOfAll(BASE).map((o) => o.obj));
    iptablesModeSave = (await h.save('IPv4')) + (await h.save('IPv6'));
    iptablesModeLate = await sb.request('client', tcp(clusterIP(LATE), 80, { timeoutMs: 1500 }));
    expectReply(await sb.request('client', tcp(clusterIP(1), 80)));

    // 2. A previous IPVS run left real servers at weight 0 (draining when it stopped): one still
    // wanted (pod a), one not (pod c).
    const vs = `-t ${clusterIP(LEFTOVER)}:80`;
    await sb.exec('node', ['ipvsadm', '-R'], {
      input: [
        `-A ${vs} -s rr`,
        `-a ${vs} -r ${sb.podIP('a')}:${TARGET} -m -w 0`,
        `-a ${vs} -r ${sb.podIP('c')}:${TARGET} -m -w 0`,
        '',
      ].join('\n'),
    });

    // 3. IPVS mode starts: both families at once, as the controller may run them (kube-ipvs0 is
    // created by either).
    proxier = new IpvsProxier(configFor('IPv4'));
    proxier6 = new IpvsProxier(configFor('IPv6'));
    const state = stateOf(BASE);
    firstReports = await Promise.all(
      [proxier, proxier6].map(async (p) => {
        await p.setup();
        // As the daemon does: node addresses and links from `ip monitor`, read only when they change.
        await p.watchKernel();
        const report = await p.sync(state);
        assert.ok(report.writtenServices > 10, `${p.name}: ${report.writtenServices} virtual servers`);
        return report;
      }),
    );
  });

  describe('setup', () => {
    it('binds ClusterIPs, externalIPs and LB IPs on kube-ipvs0 and creates one VS per frontend', async () => {
      const addrs = (await env.sb.exec('node', ['ip', '-o', 'addr', 'show', 'dev', 'kube-ipvs0'])).stdout;
      for (const ip of [clusterIP(1), '203.0.113.10', '198.51.100.20'])
        assert.match(addrs, new RegExp(`inet ${ip.replaceAll('.', '\\.')}/32`));
      for (const ip of [EXTERNAL_IP_V6, LB_IP_V6]) assert.match(addrs, new RegExp(`inet6 ${ip}/128`));
      const table = parseIpvsadmSave(await ipvsadm());
      assert.ok(table.has('-t 10.96.20.1:80'));
      assert.ok(table.has('-t 192.0.2.1:30080'), 'NodePort VS on the node IP');
      assert.ok(table.has('-t 203.0.113.10:80'));
      assert.ok(table.has('-u 10.96.20.2:80'));
      assert.ok(table.has(`--sctp-service 10.96.20.${SCTP_SVC}:${SCTP_PORT}`));
      assert.equal(table.get('-t 10.96.20.3:80')?.vs.persistence, 60);
    });

    it('switch from iptables mode: its chains and jumps are removed at start (IPv4 and IPv6)', async () => {
      // The precondition: iptables mode had programmed the node, and rejected "late".
      assert.match(iptablesModeSave, /:KUBE-EXTERNAL-SERVICES /);
      assert.match(iptablesModeSave, /-A KUBE-SERVICES .*10\.96\.20\.24\/32.* -j REJECT/);
      assert.match(iptablesModeSave, /:KUBE-SVC-/);
      expectError(iptablesModeLate!, 'refused');
      assert.ok(
        firstReports.every((r) => Number(r.details?.iptablesLeftoversRemoved) > 0),
        JSON.stringify(firstReports.map((r) => r.details)),
      );
      for (const family of ['IPv4', 'IPv6'] as const) {
        const ipt = family === 'IPv4' ? px().ipt : proxier6!.ipt;
        const saved = parseIptablesSave(await ipt.save());
        const chains = (t: string): string[] => saved.tables.get(t)?.chains.map((c) => c.name) ?? [];
        assert.deepEqual(
          chains('nat').filter((c) => /^KUBE-(SVC|SEP|EXT|FW|SVL)-|^KUBE-NODEPORTS$/.test(c)),
          [],
          `${family} nat`,
        );
        assert.deepEqual(
          chains('filter').filter((c) => /^KUBE-(SERVICES|EXTERNAL-SERVICES|NODEPORTS)$/.test(c)),
          [],
          `${family} filter`,
        );
        // iptables mode's jumps into chains both modes use are gone too; kubelet's KUBE-FIREWALL stays.
        const filterRules = saved.tables.get('filter')?.rules ?? [];
        assert.ok(!filterRules.some((r) => ruleComment(r) === 'kubernetes load balancer firewall'));
        assert.ok(chains('filter').includes('KUBE-FIREWALL'));
      }
    });

    it('switch from iptables mode: a Service it rejected is reachable once it gets endpoints', async () => {
      const sb = env.sb;
      // For good: taking the endpoints away again would leave them draining (TIME_WAIT) for minutes.
      specs = withEndpoints('late', [{ pod: 'a' }, { pod: 'b' }]);
      await syncMain();
      assertAnsweredBy(await h.answers('client', tcp(clusterIP(LATE), 80), { until: ['a', 'b'] }), [
        'a',
        'b',
      ]);
      answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30094)), ['a', 'b']);
      answeredPeer(await sb.request('outside', tcp('203.0.113.60', 80)), ['a', 'b']);
      answeredPeer(await sb.request('client', tcp(clusterIP6(LATE), 80)), ['a', 'b']);
    });

    it('a weight-0 real server of a previous run is reset to weight 1 at start; an unwanted one is deleted', async () => {
      const sb = env.sb;
      const vs = parseIpvsadmSave(await ipvsadm()).get(`-t ${clusterIP(LEFTOVER)}:80`);
      assert.equal(vs?.reals.get(`${sb.podIP('a')}:${TARGET}`)?.weight, 1);
      assert.equal(vs?.reals.has(`${sb.podIP('c')}:${TARGET}`), false, 'idle leftover deleted');
      assert.deepEqual(
        [...new Set(await answers(sb, 'client', tcp(clusterIP(LEFTOVER), 80), 3))],
        ['a'],
        'a weight-0 real server would get no new connection',
      );
    });
  });

  describe('externalIPs and LoadBalancer IPs', () => {
    it('the node to an LB IP: dropped when no node address is inside the source ranges (KUBE-IPVS-OUT-FILTER), answered otherwise', async () => {
      const sb = env.sb;
      // lb-open allows only 192.0.2.2/32: no node address is inside.
      await expectNoAnswer(sb, 'node', tcp('198.51.100.20', 80, { timeoutMs: DROP_MS }), 'timeout');
      // lb-node allows 192.0.2.0/24 (ext0's network); lb-closed allows 10.0.0.0/8, which holds the
      // node's bridge address 10.244.0.1 (a node address as kube-proxy counts them).
      expectReply(await sb.request('node', tcp('198.51.100.22', 80)), 'b');
      expectReply(await sb.request('node', tcp('198.51.100.21', 80)), 'b');
      const out = rulesOf(parseIptablesSave(await px().ipt.save()), 'filter', 'KUBE-IPVS-OUT-FILTER');
      assert.deepEqual(
        out.map((r) => /--vaddr (\S+)/.exec(r.text)?.[1]),
        ['198.51.100.20'],
      );
    });
  });

  describe('sessionAffinity ClientIP (IPVS persistence)', () => {
    it('affinity is per virtual server: a client bound on the ClusterIP is scheduled afresh on the NodePort (iptables mode shares it)', async () => {
      const sb = env.sb;
      const pick = async (ip: string, port: number, sourceIP: string): Promise<string> => {
        const first = answeredPeer(await sb.request('outside', tcp(ip, port, { sourceIP }))).reply.pod;
        const again = answeredPeer(await sb.request('outside', tcp(ip, port, { sourceIP }))).reply.pod;
        assert.equal(again, first, `${sourceIP} sticks on ${ip}:${port}`);
        return first;
      };
      const pairs: string[] = [];
      for (let i = 0; i < 4; i++) {
        const client = CLIENT_IPS[8 + i]!;
        const viaCluster = await pick(clusterIP(22), 80, client);
        const viaNode = await pick(sb.nodeIPv4, 30099, client);
        pairs.push(`${client}: ${viaCluster}/${viaNode}`);
        if (viaCluster !== viaNode) return;
        // Both VSs schedule round robin; a client on the ClusterIP only puts them out of step.
        await pick(clusterIP(22), 80, CLIENT_IPS[12 + i]!);
      }
      assert.fail(`ClusterIP and NodePort always agreed, as if affinity were shared: ${pairs.join(', ')}`);
    });
  });

  describe('traffic policies and topology', () => {
    it('healthCheckNodePort: in KUBE-HEALTH-CHECK-NODE-PORT, and outside traffic to it hits the filter ACCEPT', async () => {
      const sb = env.sb;
      const accepted = async (): Promise<number> => {
        const saved = parseIptablesSave(
          (await sb.exec('node', ['iptables-save', '-c', '-t', 'filter'])).stdout,
        );
        const rule = rulesOf(saved, 'filter', 'KUBE-NODE-PORT').find((r) =>
          r.text.includes('KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT'),
        );
        assert.ok(rule, 'filter KUBE-NODE-PORT accepts health check node ports');
        return rule.packets ?? 0;
      };
      for (const set of ['KUBE-HEALTH-CHECK-NODE-PORT', 'KUBE-6-HEALTH-CHECK-NODE-PORT']) {
        const members = (await sb.exec('node', ['ipset', 'list', set])).stdout;
        assert.match(members, /^30298$/m, set);
      }
      const before = await accepted();
      // Nothing listens there in this test (the HTTP server is another component): refused, but accepted.
      expectError(await sb.request('outside', tcp(sb.nodeIPv4, 30298)), 'refused');
      assert.ok((await accepted()) > before, 'the ACCEPT rule counted the packet');
    });
  });

  describe('SCTP', () => {
    /** One SCTP association through socat; the server answers "<pod> <peer address>". */
    // Reads the server's line, nothing sent (-u). With STDIO, the empty stdin's EOF started socat's
    // 0.5 s half-close timeout (-t): under load the answer came later and socat exited 0 without it.
    const sctp = async (from: Where, ip: string, port: number, bind?: string) => {
      const r = await env.sb.exec(
        from,
        ['socat', '-T', '10', '-u', `SCTP-CONNECT:${ip}:${port}${bind ? `,bind=${bind}` : ''}`, 'STDOUT'],
        { allowFailure: true, timeoutMs: 20_000 },
      );
      const m = /^(\S+) (\S+)$/m.exec(r.stdout);
      if (r.exitCode !== 0 || !m)
        assert.fail(`SCTP ${ip}:${port} from ${from}: ${r.exitCode} ${r.stdout}${r.stderr}`);
      return { pod: m[1]!, peer: m[2]! };
    };

    it('ClusterIP from a pod (both endpoints, client IP kept) and NodePort from outside (masqueraded)', async () => {
      const sb = env.sb;
      const seen = new Set<string>();
      for (let i = 0; i < 6 && seen.size < 2; i++) {
        const r = await sctp('client', clusterIP(SCTP_SVC), SCTP_PORT);
        assert.equal(r.peer, sb.podIP('client'));
        seen.add(r.pod);
      }
      assert.deepEqual([...seen].sort(), ['a', 'b']);
      const np = await sctp('outside', sb.nodeIPv4, 30077);
      assert.equal(np.peer, MASQ_V4);
    });

    it('a removed SCTP real server is deleted at once, even with connection entries left (TCP would drain at weight 0)', async () => {
      const sb = env.sb;
      const vs = `--sctp-service ${clusterIP(SCTP_SVC)}:${SCTP_PORT}`;
      const rsB = `${sb.podIP('b')}:${SCTP_PORT}`;
      // Give b a recent association.
      for (let i = 0; i < 6; i++)
        if ((await sctp('client', clusterIP(SCTP_SVC), SCTP_PORT)).pod === 'b') break;
      const conns = parseIpvsadmConnections((await sb.exec('node', ['ipvsadm', '-Ln'])).stdout);
      assert.ok((conns.get(`${vs}|${rsB}`) ?? 0) > 0, 'b still has connection entries');
      try {
        const [report] = await syncMain(withEndpoints('sctp', [{ pod: 'a' }]), ['IPv4']);
        assert.equal(
          parseIpvsadmSave(await ipvsadm())
            .get(vs)
            ?.reals.has(rsB),
          false,
        );
        assert.equal(report?.draining, 0);
        for (let i = 0; i < 3; i++)
          assert.equal((await sctp('client', clusterIP(SCTP_SVC), SCTP_PORT)).pod, 'a');
      } finally {
        await syncMain(specs, ['IPv4']);
      }
    });
  });

  describe('syncs and graceful termination', () => {
    it("the daemon's address watch: a sync without a change reads no addresses; its own bind and unbind make the next sync read", async () => {
      const w = px().addresses;
      // The monitor also reports link changes (the bridge's ports among them): start each step from a
      // cached read.
      const cached = (): Promise<void> =>
        waitFor(
          'a subscribed `ip monitor` and a cached read',
          async () => {
            if (!w.fresh) await w.show();
            return w.fresh;
          },
          30_000,
        );
      await cached();
      let reads = w.reads;
      await px().sync(stateOf(specs));
      assert.equal(w.reads, reads, 'nothing changed: no `ip -j address`');
      const extra = { name: 'extra', index: 31, endpoints: [{ pod: 'c' as const }] };
      await cached();
      const bound = await px().sync(stateOf([...specs, extra]));
      assert.equal(bound.details?.bound, 1);
      assert.equal(w.fresh, false, 'the sync bound an address: the next one reads');
      expectReply(await env.sb.request('client', tcp(clusterIP(31), 80)), 'c');
      reads = w.reads;
      const unbound = await px().sync(stateOf(specs));
      assert.equal(unbound.details?.unbound, 1, 'the bound address was seen, and unbound');
      assert.ok(w.reads > reads, 'the sync read the addresses');
      const addrs = (await env.sb.exec('node', ['ip', '-o', 'addr', 'show', 'dev', 'kube-ipvs0'])).stdout;
      assert.doesNotMatch(addrs, /10\.96\.20\.31\//);
    });

    it('an established connection survives a sync that changes another Service; unchanged VSs are not touched', async () => {
      const conn = await env.sb.openConnection('client', { ip: clusterIP(1), port: 80 });
      try {
        expectReply(conn.result);
        const before = await ipvsadm();
        const report = await px().sync(
          stateOf([...specs, { name: 'extra', index: 30, endpoints: [{ pod: 'c' }] }]),
        );
        assert.equal(report.details?.ipvsLines, 2, 'only the new VS and its real server');
        const after = await ipvsadm();
        assert.ok(after.includes('-A -t 10.96.20.30:80'));
        for (const line of before.split('\n')) assert.ok(after.includes(line));
        expectReply(await conn.send());
      } finally {
        await conn.close();
      }
      await px().sync(stateOf(specs));
      const addrs = (await env.sb.exec('node', ['ip', '-o', 'addr', 'show', 'dev', 'kube-ipvs0'])).stdout;
      assert.doesNotMatch(addrs, /10\.96\.20\.30\//, 'unbound once the Service is gone');
    });

    it('a removed UDP real server is deleted at once while its flow is active; the flow moves to the other endpoint', async () => {
      const sb = env.sb;
      const vs = `-u ${clusterIP(23)}:80`;
      // One flow: the same client port every time, so IPVS keeps it on one real server.
      const flow = udp(clusterIP(23), 80, { sourcePort: 40123, timeoutMs: 500 });
      const gone = expectReply(await sb.request('client', flow)).pod;
      const stays = gone === 'a' ? 'b' : 'a';
      for (let i = 0; i < 3; i++) expectReply(await sb.request('client', flow), gone);
      const during: string[] = [];
      let stop = false;
      const pump = (async () => {
        while (!stop) {
          const r = await sb.request('client', flow);
          during.push(r.ok ? r.reply.pod : `✗${r.error}`);
        }
      })();
      try {
        await waitFor('the flow to be answered during the test', () => Promise.resolve(during.length >= 2));
        specs = withEndpoints('udp-drain', [{ pod: stays }]);
        const [report] = await syncMain(specs, ['IPv4']);
        const table = parseIpvsadmSave(await ipvsadm());
        assert.equal(
          table.get(vs)?.reals.has(`${sb.podIP(gone)}:${UDP_TARGET}`),
          false,
          'deleted, not weight 0',
        );
        assert.equal(report?.draining, 0);
        await waitFor('the flow to reach the remaining endpoint', () =>
          Promise.resolve(during.at(-1) === stays),
        );
      } finally {
        stop = true;
        await pump;
      }
      assert.ok(during.includes(gone), `the flow ran before the sync: ${during.join(',')}`);
      // Once moved, it stays on the remaining endpoint.
      const after = during.slice(during.lastIndexOf(gone) + 1).filter((p) => !p.startsWith('✗'));
      assert.ok(
        after.every((p) => p === stays),
        during.join(','),
      );
      expectReply(await sb.request('client', flow), stays);
    });

    it('graceful termination: a removed TCP real server goes to weight 0 while its connection lives, and is deleted once drained', async function () {
      this.timeout(40_000);
      const sb = env.sb;
      const rsA = `${sb.podIP('a')}:${TARGET}`;
      // A client that holds one connection until told to go, then aborts it (RST: IPVS keeps a closed
      // entry 10 s instead of TIME_WAIT's 2 min, so the drain is observable here).
      const dir = await mkdtemp(path.join(tmpdir(), 'svcp-ipvs-drain-'));
      const go = path.join(dir, 'go');
      const client = new Background([
        'ip',
        'netns',
        'exec',
        sb.pod('client').ns,
        'perl',
        '-MSocket',
        '-MIO::Socket::INET',
        '-e',
        '$|=1; my $s = IO::Socket::INET->new(PeerAddr => $ARGV[0], PeerPort => $ARGV[1], Proto => "tcp") or die "connect: $!"; ' +
          'my $l = <$s>; print "greeting $l"; select(undef, undef, undef, 0.05) until -e $ARGV[2]; ' +
          'print $s "ping\n"; $l = <$s>; print "reply $l"; setsockopt($s, SOL_SOCKET, SO_LINGER, pack("ii", 1, 0)); close($s);',
        clusterIP(12),
        '80',
        go,
      ]);
      try {
        await waitFor('the client to connect', () => Promise.resolve(client.log.includes('greeting')));
        assert.match(client.log, /"pod":"a"|\ba\b/, client.log);
        const next = specs.map((s) =>
          s.name === 'drain' || s.name === 'drain-idle' ? { ...s, endpoints: [{ pod: 'b' }] } : s,
        );
        const report = await px().sync(stateOf(next));
        assert.equal(report.draining, 1);
        let table = parseIpvsadmSave(await ipvsadm());
        assert.equal(table.get('-t 10.96.20.12:80')?.reals.get(rsA)?.weight, 0, 'weight 0 while draining');
        assert.equal(table.get('-t 10.96.20.13:80')?.reals.has(rsA), false, 'an idle one is deleted at once');
        expectReply(await sb.request('client', tcp(clusterIP(12), 80)), 'b');
        // The established connection still works through the weight-0 real server.
        await writeFile(go, '');
        await waitFor('the client to finish', () => Promise.resolve(!client.running));
        assert.match(client.log, /reply /, client.log);
        // Drained: the timer (gracefulCheckMs) deletes it once its connection entry expires.
        await waitFor(
          'the drained real server to be deleted',
          async () => {
            table = parseIpvsadmSave(await ipvsadm());
            return table.get('-t 10.96.20.12:80')?.reals.has(rsA) === false;
          },
          30_000,
        );
      } finally {
        await client.stop();
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
});
