import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseIpvsadmSave } from '../../src/ipvs/ipvsadm.js';
import { IpvsProxier } from '../../src/ipvs/proxier.js';
import { cleanupIpvs } from '../../src/ipvs/cleanup.js';
import { buildClusterState, type SourceObject } from '../../src/model/build.js';
import type { ClusterState, IPFamily } from '../../src/model/types.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { peerIP, type ProbeResult, type RequestSpec } from '../../src/netns/protocol.js';
import { expectError, expectReply, useSandbox } from '../support/sandbox.js';
import { run } from '../../src/util/exec.js';
import { Background, requireUml, waitFor } from './helpers.js';

/**
 * `--proxy-mode ipvs` with real traffic: IpvsProxier programs a sandbox node inside User-mode Linux
 * (real IPVS), and TCP/UDP probes from pods, the node and the outside namespace prove ClusterIP,
 * NodePort, externalIP, LoadBalancer source ranges, affinity, traffic policies, terminating fallback,
 * no-endpoint REJECT, hairpin/masquerade, survival of established connections and graceful
 * termination. One sandbox and one proxier for the file; each Service carries one scenario.
 */

const NODE = 'node-1';
const TARGET = 8080;
const UDP_TARGET = 5353;

interface EpSpec {
  readonly pod: string;
  readonly node?: string;
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating?: boolean;
}

interface SvcSpec {
  readonly name: string;
  readonly index: number;
  readonly type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  readonly protocol?: 'TCP' | 'UDP';
  readonly nodePort?: number;
  readonly eTP?: 'Local' | 'Cluster';
  readonly iTP?: 'Local' | 'Cluster';
  readonly lbIP?: string;
  readonly sourceRanges?: readonly string[];
  readonly externalIPs?: readonly string[];
  readonly affinity?: boolean;
  readonly endpoints: readonly EpSpec[];
}

const clusterIP = (i: number): string => `10.96.20.${i}`;
const clusterIP6 = (i: number): string => `fd00:96::20:${i}`;

function objectsOf(sb: Sandbox, s: SvcSpec): SourceObject[] {
  const type = s.type ?? 'ClusterIP';
  const protocol = s.protocol ?? 'TCP';
  const target = protocol === 'UDP' ? UDP_TARGET : TARGET;
  const service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: s.name, namespace: 'default' },
    spec: {
      type,
      clusterIP: clusterIP(s.index),
      clusterIPs: [clusterIP(s.index), clusterIP6(s.index)],
      ipFamilies: ['IPv4', 'IPv6'],
      ipFamilyPolicy: 'RequireDualStack',
      ports: [
        {
          name: 'p',
          protocol,
          port: 80,
          targetPort: target,
          ...(s.nodePort ? { nodePort: s.nodePort } : {}),
        },
      ],
      ...(type !== 'ClusterIP' ? { externalTrafficPolicy: s.eTP ?? 'Cluster' } : {}),
      ...(s.iTP ? { internalTrafficPolicy: s.iTP } : {}),
      ...(s.externalIPs ? { externalIPs: s.externalIPs } : {}),
      ...(s.sourceRanges ? { loadBalancerSourceRanges: s.sourceRanges } : {}),
      ...(s.affinity
        ? { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } }
        : {}),
    },
    ...(s.lbIP ? { status: { loadBalancer: { ingress: [{ ip: s.lbIP }] } } } : {}),
  };
  const slice = (family: IPFamily): unknown => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${s.name}-${family.toLowerCase()}`,
      namespace: 'default',
      labels: { 'kubernetes.io/service-name': s.name },
    },
    addressType: family,
    ports: [{ name: 'p', protocol, port: target }],
    endpoints: s.endpoints.map((e) => ({
      addresses: [sb.podIP(e.pod, family)],
      conditions: {
        ready: e.ready ?? true,
        ...(e.serving !== undefined ? { serving: e.serving } : {}),
        ...(e.terminating !== undefined ? { terminating: e.terminating } : {}),
      },
      nodeName: e.node ?? NODE,
    })),
  });
  return [service, slice('IPv4'), slice('IPv6')].map((obj, i) => ({ obj, source: `${s.name}#${i}` }));
}

const BASE: readonly SvcSpec[] = [
  {
    name: 'web',
    index: 1,
    type: 'NodePort',
    nodePort: 30080,
    externalIPs: ['203.0.113.10'],
    endpoints: [{ pod: 'a' }, { pod: 'b' }],
  },
  { name: 'dns', index: 2, protocol: 'UDP', endpoints: [{ pod: 'a' }] },
  { name: 'sticky', index: 3, affinity: true, endpoints: [{ pod: 'a' }, { pod: 'b' }, { pod: 'c' }] },
  {
    name: 'lb-open',
    index: 4,
    type: 'LoadBalancer',
    nodePort: 30084,
    lbIP: '198.51.100.20',
    sourceRanges: ['192.0.2.2/32'],
    endpoints: [{ pod: 'b' }],
  },
  {
    name: 'lb-closed',
    index: 5,
    type: 'LoadBalancer',
    nodePort: 30085,
    lbIP: '198.51.100.21',
    sourceRanges: ['10.0.0.0/8'],
    endpoints: [{ pod: 'b' }],
  },
  {
    name: 'etp-local',
    index: 6,
    type: 'NodePort',
    nodePort: 30086,
    eTP: 'Local',
    endpoints: [{ pod: 'a' }, { pod: 'b', node: 'node-2' }],
  },
  {
    name: 'etp-remote',
    index: 7,
    type: 'NodePort',
    nodePort: 30087,
    eTP: 'Local',
    endpoints: [{ pod: 'b', node: 'node-2' }],
  },
  { name: 'itp-local', index: 8, iTP: 'Local', endpoints: [{ pod: 'a' }, { pod: 'b', node: 'node-2' }] },
  {
    name: 'terminating',
    index: 9,
    endpoints: [
      { pod: 'a', ready: false, serving: true, terminating: true },
      { pod: 'b', ready: false, serving: false, terminating: true },
    ],
  },
  { name: 'noeps', index: 10, type: 'NodePort', nodePort: 30090, endpoints: [] },
  { name: 'hairpin', index: 11, endpoints: [{ pod: 'a' }] },
  { name: 'drain', index: 12, endpoints: [{ pod: 'a' }] },
  { name: 'drain-idle', index: 13, endpoints: [{ pod: 'a' }, { pod: 'b' }] },
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
  // Registered before useSandbox's after hook: stop the drain timer while the namespace still exists.
  // All IPVS state lives in the sandbox's node namespace and goes with it; cleanupIpvs is proven there.
  after(async () => {
    proxier?.stop();
    proxier6?.stop();
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
      { name: 'a', index: 2, tcpPorts: [TARGET], udpPorts: [UDP_TARGET] },
      { name: 'b', index: 3, tcpPorts: [TARGET], udpPorts: [UDP_TARGET] },
      { name: 'c', index: 4, tcpPorts: [TARGET] },
      { name: 'client', index: 10 },
    ],
  });
  const px = (): IpvsProxier => {
    if (!proxier) throw new Error('proxier not created (before hook failed)');
    return proxier;
  };
  const stateOf = (specs: readonly SvcSpec[]): ClusterState => {
    const s = buildClusterState([NODE_OBJECT, ...specs.flatMap((x) => objectsOf(env.sb, x))]);
    assert.deepEqual(s.problems, []);
    return s;
  };
  const ipvsadm = async (): Promise<string> => (await env.sb.exec('node', ['ipvsadm', '-Sn'])).stdout;
  const peerOf = (r: ProbeResult): string => peerIP(expectReply(r).peer);

  before(async function () {
    const make = (family: IPFamily): IpvsProxier =>
      new IpvsProxier({
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
        gracefulCheckMs: 200,
      });
    proxier = make('IPv4');
    proxier6 = make('IPv6');
    const state = stateOf(BASE);
    // Both families at once, as the controller may run them (kube-ipvs0 is created by either).
    await Promise.all(
      [proxier, proxier6].map(async (p) => {
        await p.setup();
        const report = await p.sync(state);
        assert.ok(report.writtenServices > 10, `${p.name}: ${report.writtenServices} virtual servers`);
      }),
    );
  });

  it('binds ClusterIPs, externalIPs and LB IPs on kube-ipvs0 and creates one VS per frontend', async () => {
    const addrs = (await env.sb.exec('node', ['ip', '-o', 'addr', 'show', 'dev', 'kube-ipvs0'])).stdout;
    for (const ip of [clusterIP(1), '203.0.113.10', '198.51.100.20'])
      assert.match(addrs, new RegExp(`inet ${ip.replaceAll('.', '\\.')}/32`));
    const table = parseIpvsadmSave(await ipvsadm());
    assert.ok(table.has('-t 10.96.20.1:80'));
    assert.ok(table.has('-t 192.0.2.1:30080'), 'NodePort VS on the node IP');
    assert.ok(table.has('-t 203.0.113.10:80'));
    assert.ok(table.has('-u 10.96.20.2:80'));
    assert.equal(table.get('-t 10.96.20.3:80')?.vs.persistence, 60);
  });

  it('ClusterIP from a pod and from the node reaches both endpoints (no masquerade from pods)', async () => {
    const seen = new Set(await answers(env.sb, 'client', { proto: 'tcp', ip: clusterIP(1), port: 80 }, 6));
    assert.deepEqual([...seen].sort(), ['a', 'b']);
    const r = await env.sb.request('client', { proto: 'tcp', ip: clusterIP(1), port: 80 });
    assert.equal(peerOf(r), env.sb.podIP('client'));
    expectReply(await env.sb.request('node', { proto: 'tcp', ip: clusterIP(1), port: 80 }));
  });

  it('ClusterIP from outside (routed via the node) is masqueraded', async () => {
    const r = await env.sb.request('outside', { proto: 'tcp', ip: clusterIP(1), port: 80 });
    assert.notEqual(peerOf(r), env.sb.outsideIPv4);
  });

  it('NodePort and externalIP from outside', async () => {
    expectReply(await env.sb.request('outside', { proto: 'tcp', ip: env.sb.nodeIPv4, port: 30080 }));
    expectReply(await env.sb.request('outside', { proto: 'tcp', ip: '203.0.113.10', port: 80 }));
  });

  it('other ports of a bound service address are rejected (KUBE-IPVS-FILTER)', async () => {
    expectError(await env.sb.request('outside', { proto: 'tcp', ip: '203.0.113.10', port: 22 }), 'refused');
  });

  it('UDP ClusterIP', async () => {
    expectReply(await env.sb.request('client', { proto: 'udp', ip: clusterIP(2), port: 80 }), 'a');
  });

  it('ClientIP affinity sticks to one endpoint', async () => {
    const got = await answers(env.sb, 'client', { proto: 'tcp', ip: clusterIP(3), port: 80 }, 6);
    assert.equal(new Set(got).size, 1, got.join(','));
  });

  it('LoadBalancer source ranges: allowed source reaches, others are dropped', async () => {
    expectReply(await env.sb.request('outside', { proto: 'tcp', ip: '198.51.100.20', port: 80 }), 'b');
    expectError(
      await env.sb.request('outside', { proto: 'tcp', ip: '198.51.100.21', port: 80, timeoutMs: 800 }),
      'timeout',
    );
  });

  it('eTP=Local NodePort: only the local endpoint, client IP preserved', async () => {
    for (let i = 0; i < 4; i++) {
      const r = await env.sb.request('outside', { proto: 'tcp', ip: env.sb.nodeIPv4, port: 30086 });
      expectReply(r, 'a');
      assert.equal(peerOf(r), env.sb.outsideIPv4);
    }
  });

  it('eTP=Local without local endpoints drops outside traffic (as iptables mode, unlike kube-proxy IPVS)', async () => {
    expectError(
      await env.sb.request('outside', { proto: 'tcp', ip: env.sb.nodeIPv4, port: 30087, timeoutMs: 800 }),
      'timeout',
    );
  });

  it('iTP=Local ClusterIP reaches only the local endpoint', async () => {
    const got = await answers(env.sb, 'client', { proto: 'tcp', ip: clusterIP(8), port: 80 }, 4);
    assert.deepEqual([...new Set(got)], ['a']);
  });

  it('only terminating endpoints: the serving one answers', async () => {
    const got = await answers(env.sb, 'client', { proto: 'tcp', ip: clusterIP(9), port: 80 }, 4);
    assert.deepEqual([...new Set(got)], ['a']);
  });

  it('no endpoints: REJECT (refused) on ClusterIP and NodePort', async () => {
    expectError(await env.sb.request('client', { proto: 'tcp', ip: clusterIP(10), port: 80 }), 'refused');
    expectError(
      await env.sb.request('outside', { proto: 'tcp', ip: env.sb.nodeIPv4, port: 30090 }),
      'refused',
    );
  });

  it('hairpin: a pod reaches itself through its ClusterIP (masqueraded)', async () => {
    const r = await env.sb.request('a', { proto: 'tcp', ip: clusterIP(11), port: 80 });
    expectReply(r, 'a');
    assert.notEqual(peerOf(r), env.sb.podIP('a'));
  });

  describe('IPv6 (second proxier, same node)', () => {
    const n6 = (): string => env.sb.nodeIPv6;
    it('ClusterIP from a pod, without masquerade', async () => {
      const r = await env.sb.request('client', { proto: 'tcp', ip: clusterIP6(1), port: 80 });
      assert.equal(peerOf(r), env.sb.podIP('client', 'IPv6'));
    });
    it('UDP ClusterIP', async () => {
      expectReply(await env.sb.request('client', { proto: 'udp', ip: clusterIP6(2), port: 80 }), 'a');
    });
    it('NodePort from outside; eTP=Local keeps the client IP; no local endpoints drops', async () => {
      expectReply(await env.sb.request('outside', { proto: 'tcp', ip: n6(), port: 30080 }));
      const r = await env.sb.request('outside', { proto: 'tcp', ip: n6(), port: 30086 });
      expectReply(r, 'a');
      assert.equal(peerOf(r), env.sb.outsideIPv6);
      expectError(
        await env.sb.request('outside', { proto: 'tcp', ip: n6(), port: 30087, timeoutMs: 800 }),
        'timeout',
      );
    });
    it('no endpoints: refused', async () => {
      // UML delivers the ICMPv6 error while connect() still holds the socket lock, so the first one
      // becomes a soft error (TcpExtLockDroppedIcmps); the retransmitted SYN's error is taken.
      const r = await env.sb.request('client', {
        proto: 'tcp',
        ip: clusterIP6(10),
        port: 80,
        timeoutMs: 3500,
      });
      expectError(r, 'refused');
    });
  });

  it('an established connection survives a sync that changes another Service; unchanged VSs are not touched', async () => {
    const conn = await env.sb.openConnection('client', { ip: clusterIP(1), port: 80 });
    try {
      expectReply(conn.result);
      const before = await ipvsadm();
      const report = await px().sync(
        stateOf([...BASE, { name: 'extra', index: 30, endpoints: [{ pod: 'c' }] }]),
      );
      assert.equal(report.details?.ipvsLines, 2, 'only the new VS and its real server');
      const after = await ipvsadm();
      assert.ok(after.includes('-A -t 10.96.20.30:80'));
      for (const line of before.split('\n')) assert.ok(after.includes(line));
      expectReply(await conn.send());
    } finally {
      await conn.close();
    }
    await px().sync(stateOf(BASE));
    const addrs = (await env.sb.exec('node', ['ip', '-o', 'addr', 'show', 'dev', 'kube-ipvs0'])).stdout;
    assert.doesNotMatch(addrs, /10\.96\.20\.30\//, 'unbound once the Service is gone');
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
      const next = BASE.map((s) =>
        s.name === 'drain' || s.name === 'drain-idle' ? { ...s, endpoints: [{ pod: 'b' }] } : s,
      );
      const report = await px().sync(stateOf(next));
      assert.equal(report.draining, 1);
      let table = parseIpvsadmSave(await ipvsadm());
      assert.equal(table.get('-t 10.96.20.12:80')?.reals.get(rsA)?.weight, 0, 'weight 0 while draining');
      assert.equal(table.get('-t 10.96.20.13:80')?.reals.has(rsA), false, 'an idle one is deleted at once');
      expectReply(await sb.request('client', { proto: 'tcp', ip: clusterIP(12), port: 80 }), 'b');
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
