import assert from 'node:assert/strict';
import { buildFrontendIndex } from '../../../src/debug/frontends.js';
import { parseIpsetSaveText } from '../../../src/ipvs/ipset.js';
import { traceIpvs } from '../../../src/debug/ipvs-trace.js';
import { formatTraceText } from '../../../src/debug/trace-format.js';
import { tracePacket, type NodeView, type TracePacket, type TraceResult } from '../../../src/debug/trace.js';
import { parseIptablesSave } from '../../../src/iptables/save-parse.js';
import { createArgs } from '../../../src/ipvs/ipset.js';
import { ipvsLine, parseIpvsadmSave } from '../../../src/ipvs/ipvsadm.js';
import { planIpvs } from '../../../src/ipvs/plan.js';
import { IPVS_JUMPS, renderIpvsRules } from '../../../src/ipvs/rules.js';
import { buildClusterState } from '../../../src/model/build.js';
import { nodeContext } from '../../../src/model/selection.js';
import {
  KUBE_PROXY_IPVS_IPSETS,
  KUBE_PROXY_IPVS_IPTABLES,
  KUBE_PROXY_IPVS_IPVSADM,
  KUBE_PROXY_IPVS_OBJECTS,
} from './kube-proxy-ipvs.js';
import { port, slice, svc } from './objects.js';

// What `ipvsadm -Sn` prints for a ClusterIP with two pods (rr), a sticky one (persistence) and a
// draining one (weight 0).
const SAVE = [
  '-A -t 10.96.0.10:80 -s rr',
  '-a -t 10.96.0.10:80 -r 10.244.0.2:9376 -m -w 1',
  '-a -t 10.96.0.10:80 -r 10.244.0.3:9376 -m -w 1',
  '-A -u 10.96.0.53:53 -s lc -p 10800',
  '-a -u 10.96.0.53:53 -r 10.244.0.2:53 -m -w 3',
  '-a -u 10.96.0.53:53 -r 10.244.0.3:53 -m -w 1',
  '-A -t [fd00:10:96::10]:80 -s rr',
  '-a -t [fd00:10:96::10]:80 -r [fd00:10:244::2]:9376 -m -w 0',
  '',
].join('\n');

describe('svcplane trace: IPVS virtual servers (pure)', () => {
  const table = parseIpvsadmSave(SAVE);

  it('finds the virtual server and spreads by weight (rr)', () => {
    const r = traceIpvs(table, { proto: 'tcp', dst: '10.96.0.10', dport: 80 });
    assert.deepEqual(r?.reals, [
      { endpoint: '10.244.0.2:9376', weight: 1, share: 0.5 },
      { endpoint: '10.244.0.3:9376', weight: 1, share: 0.5 },
    ]);
    assert.equal(r?.scheduler, 'rr');
    assert.equal(traceIpvs(table, { proto: 'udp', dst: '10.96.0.10', dport: 80 }), undefined);
  });

  it('reports persistence and that lc depends on live state', () => {
    const r = traceIpvs(table, { proto: 'udp', dst: '10.96.0.53', dport: 53 });
    assert.equal(r?.persistenceSeconds, 10800);
    assert.deepEqual(
      r?.reals.map((x) => x.share),
      [0.75, 0.25],
    );
    assert.match(r?.note ?? '', /live connection state/);
  });
});

// ---- a whole IPVS node: svcplane's rules, ipsets and virtual servers, walked like the kernel ----

const NODE = 'n1';
const NODE_IP = '192.0.2.1';
const OUTSIDE = '192.0.2.2';
const POD = '10.244.0.10';
const LOCAL_EP = '10.244.0.2';
const REMOTE_EP = '10.244.1.2';

const both = [
  { ip: LOCAL_EP, node: NODE },
  { ip: REMOTE_EP, node: 'n2' },
];
const STATE = buildClusterState([
  svc('web', { type: 'NodePort', clusterIP: '10.96.0.1', ports: port({ nodePort: 30080 }) }),
  slice('web', both),
  svc('empty', { clusterIP: '10.96.0.3', ports: port() }),
  svc(
    'lb',
    {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.4',
      loadBalancerSourceRanges: ['203.0.113.0/24'],
      ports: port({ nodePort: 30084 }),
    },
    { loadBalancer: { ingress: [{ ip: '198.51.100.10' }] } },
  ),
  slice('lb', both),
  svc('local', {
    type: 'NodePort',
    clusterIP: '10.96.0.5',
    externalTrafficPolicy: 'Local',
    ports: port({ nodePort: 30081 }),
  }),
  slice('local', both),
]);
const DESIRED = planIpvs(
  STATE,
  { node: nodeContext(NODE), nodePortIPs: [NODE_IP], otherLocalIPs: [NODE_IP], scheduler: 'rr' },
  'IPv4',
);

/** iptables-save of the node: the jumps in the built-in chains, then svcplane's chains. */
function kernelRules(): string {
  const rendered = renderIpvsRules(DESIRED, {
    family: 'IPv4',
    masqueradeBit: 14,
    masqueradeAll: false,
    notLocal: ['!', '-s', '10.244.0.0/16'],
    randomFully: true,
  });
  let out = rendered;
  for (const j of [...IPVS_JUMPS].reverse()) {
    const rule = `-A ${j.chain} -m comment --comment "${j.comment}" -j ${j.target}`;
    const at = out.indexOf('\n', out.indexOf(`*${j.table}\n`)) + 1;
    out = `${out.slice(0, at)}${rule}\n${out.slice(at)}`;
  }
  return out;
}
const IPSETS = DESIRED.sets
  .flatMap((s) => [
    `create ${s.name} ${createArgs(s.type, 'IPv4')}`,
    ...[...s.members].map((m) => `add ${s.name} ${m}`),
  ])
  .join('\n');
const IPVSADM = [...DESIRED.services.values()]
  .flatMap((ps) => [ipvsLine.addService(ps.vs), ...ps.reals.map((rs) => ipvsLine.addReal(ps.vs, rs))])
  .join('\n');

const IPVS_NODE: NodeView = {
  addresses: [
    { ip: '127.0.0.1', prefixLen: 8, ifname: 'lo' },
    { ip: NODE_IP, prefixLen: 24, ifname: 'ext0' },
    { ip: '10.244.0.1', prefixLen: 24, ifname: 'cbr0' },
    ...DESIRED.bindAddresses.map((ip) => ({ ip, prefixLen: 32, ifname: 'kube-ipvs0' })),
  ],
  defaultInterface: 'ext0',
};

describe('svcplane trace on an IPVS node (pure): verdict and masquerade from the walk, Service from the state', () => {
  const ruleset = parseIptablesSave(kernelRules());
  const ipsets = parseIpsetSaveText(IPSETS);
  const ipvs = parseIpvsadmSave(IPVSADM);
  const frontends = buildFrontendIndex(STATE);
  const at = (src: string, dst: string, dport: number, extra: Partial<TracePacket> = {}): TraceResult =>
    tracePacket({
      ruleset,
      node: IPVS_NODE,
      ipsets,
      ipvs,
      frontends,
      packet: { family: 'IPv4', src, dst, proto: 'tcp', dport, fromNode: false, ...extra },
    });
  const brief = (r: TraceResult) => ({
    verdict: r.verdict,
    endpoints: r.endpoints.map((e) => `${e.endpoint}@${e.probability}${e.masquerade ? ' masq' : ''}`),
    service: r.service,
  });

  it('ClusterIP from a pod: IPVS spreads over both real servers, no masquerade', () => {
    const r = at(POD, '10.96.0.1', 80);
    assert.deepEqual(brief(r), {
      verdict: 'dnat',
      endpoints: [`${LOCAL_EP}:8080@0.5`, `${REMOTE_EP}:8080@0.5`],
      service: 'ns/web:p',
    });
    assert.deepEqual(r.unsupported, []);
    assert.equal(r.masquerade, false);
    assert.equal(r.ipvs?.virtualServer, '-t 10.96.0.1:80');
    // PREROUTING, filter INPUT, then IPVS in LOCAL_IN.
    const ipvsStep = r.branches[0]?.steps.find((s) => s.table === 'ipvs');
    assert.equal(ipvsStep?.chain, 'LOCAL_IN');
    assert.match(ipvsStep?.action ?? '', /^IPVS rr → /);
    const text = formatTraceText(
      { family: 'IPv4', src: POD, dst: '10.96.0.1', proto: 'tcp', dport: 80, fromNode: false },
      r,
    );
    assert.match(text, /^Service: {4}ns\/web:p$/m);
    assert.match(text, /ipvs LOCAL_IN: IPVS rr → 10\.244\.0\.2:8080/);
  });

  it('ClusterIP from outside (routed via the node): masqueraded (not from the cluster CIDR)', () => {
    const r = at(OUTSIDE, '10.96.0.1', 80);
    assert.equal(r.verdict, 'dnat');
    assert.equal(r.masquerade, true);
    assert.match(
      r.masqueradeReason,
      /marked by nat KUBE-SERVICES rule \d+: .*KUBE-CLUSTER-IP dst,dst ! -s 10\.244\.0\.0\/16/,
    );
    assert.match(
      r.masqueradeReason,
      /masqueraded by nat KUBE-POSTROUTING rule \d+: .*MASQUERADE --random-fully/,
    );
  });

  it('NodePort from outside: masqueraded by the KUBE-NODE-PORT-TCP mark', () => {
    const r = at(OUTSIDE, NODE_IP, 30080);
    assert.deepEqual(brief(r), {
      verdict: 'dnat',
      endpoints: [`${LOCAL_EP}:8080@0.5 masq`, `${REMOTE_EP}:8080@0.5 masq`],
      service: 'ns/web:p',
    });
    assert.match(r.masqueradeReason, /KUBE-NODE-PORT-TCP dst/);
  });

  it('no endpoints: rejected by the KUBE-IPVS-NO-ENDPOINTS rule (from a pod and from outside)', () => {
    for (const src of [POD, OUTSIDE]) {
      const r = at(src, '10.96.0.3', 80);
      assert.equal(r.verdict, 'reject', src);
      assert.equal(r.service, 'ns/empty:p');
      const last = r.path[r.path.length - 1];
      assert.equal(last?.chain, 'KUBE-IPVS-FILTER');
      assert.equal(last?.action, 'REJECT');
    }
    // From the node itself filter INPUT is not on the way: IPVS answers ICMP port unreachable.
    const own = at(NODE_IP, '10.96.0.3', 80, { fromNode: true });
    assert.equal(own.verdict, 'reject');
    assert.ok(
      own.notes.some((n) => /usually leave with 10\.96\.0\.3 as source/.test(n)),
      own.notes.join('\n'),
    );
    assert.match(own.path[own.path.length - 1]?.action ?? '', /IPVS answers ICMP port unreachable/);
  });

  it('LoadBalancer source ranges: inside → dnat and masqueraded, outside → dropped', () => {
    const inside = at('203.0.113.5', '198.51.100.10', 80);
    assert.equal(inside.verdict, 'dnat');
    assert.equal(inside.masquerade, true);
    assert.equal(inside.service, 'ns/lb:p');
    const outside = at(OUTSIDE, '198.51.100.10', 80);
    assert.equal(outside.verdict, 'drop');
    assert.equal(outside.service, 'ns/lb:p');
    assert.deepEqual(outside.endpoints, []);
    assert.ok(outside.path.some((s) => s.chain === 'KUBE-SOURCE-RANGES-FIREWALL' && s.action === 'DROP'));
    // The node to its LB IP outside the ranges: dropped in filter OUTPUT by the -m ipvs rule.
    const node = at('198.51.100.10', '198.51.100.10', 80, { fromNode: true });
    assert.equal(node.verdict, 'drop');
    for (const b of node.branches) {
      const last = b.steps[b.steps.length - 1];
      assert.deepEqual([last?.chain, last?.action], ['KUBE-IPVS-OUT-FILTER', 'DROP']);
    }
  });

  it('eTP=Local NodePort from outside: the local real server only, client IP kept', () => {
    const r = at(OUTSIDE, NODE_IP, 30081);
    assert.deepEqual(brief(r), {
      verdict: 'dnat',
      endpoints: [`${LOCAL_EP}:8080@1`],
      service: 'ns/local:p',
    });
    assert.equal(r.masquerade, false);
    // The ClusterIP of the same Service still uses every endpoint.
    assert.equal(at(POD, '10.96.0.5', 80).endpoints.length, 2);
  });

  it('hairpin: a pod reaching itself is masqueraded by KUBE-LOOP-BACK (dst,dst,src after IPVS)', () => {
    const r = at(LOCAL_EP, '10.96.0.1', 80);
    const self = r.endpoints.find((e) => e.endpoint === `${LOCAL_EP}:8080`);
    const other = r.endpoints.find((e) => e.endpoint === `${REMOTE_EP}:8080`);
    assert.equal(self?.masquerade, true);
    assert.equal(other?.masquerade, false);
    assert.match(r.masqueradeReason, /KUBE-LOOP-BACK dst,dst,src -j MASQUERADE/);
  });

  it('another port of a Service IP is rejected (KUBE-IPVS-IPS); without the ipsets -m set is reported', () => {
    assert.equal(at(POD, '10.96.0.1', 8443).verdict, 'reject');
    const blind = tracePacket({
      ruleset,
      node: IPVS_NODE,
      ipvs,
      packet: { family: 'IPv4', src: POD, dst: '10.96.0.1', proto: 'tcp', dport: 80, fromNode: false },
    });
    assert.ok(blind.unsupported.some((u) => /match set \(the ipsets were not read\)/.test(u)));
    assert.equal(blind.service, undefined);
    assert.ok(blind.notes.some((n) => /pass --manifests or --kubeconfig/.test(n)));
  });
});

describe("svcplane trace on kube-proxy's IPVS rules (pure, the captured kube-proxy node)", () => {
  const ruleset = parseIptablesSave(KUBE_PROXY_IPVS_IPTABLES);
  const ipsets = parseIpsetSaveText(KUBE_PROXY_IPVS_IPSETS);
  const ipvs = parseIpvsadmSave(KUBE_PROXY_IPVS_IPVSADM);
  const frontends = buildFrontendIndex(buildClusterState(KUBE_PROXY_IPVS_OBJECTS));
  const bound = [...(ipsets.get('KUBE-IPVS-IPS')?.entries ?? [])].map((e) => e.parts[0] ?? '');
  const node: NodeView = {
    addresses: [
      { ip: '127.0.0.1', prefixLen: 8, ifname: 'lo' },
      { ip: NODE_IP, prefixLen: 24, ifname: 'ext0' },
      { ip: '10.244.0.1', prefixLen: 24, ifname: 'cbr0' },
      ...bound.map((ip) => ({ ip, prefixLen: 32, ifname: 'kube-ipvs0' })),
    ],
    defaultInterface: 'ext0',
    bridges: ['cbr0'],
  };
  const at = (src: string, dst: string, dport: number): TraceResult =>
    tracePacket({
      ruleset,
      node,
      ipsets,
      ipvs,
      frontends,
      packet: { family: 'IPv4', src, dst, proto: 'tcp', dport, fromNode: false },
    });

  it('every match is evaluated; verdicts, masquerade and Service as kube-proxy programs them', () => {
    const cases = [
      [POD, '10.96.0.1', 80],
      [OUTSIDE, NODE_IP, 30080],
      [OUTSIDE, '198.51.100.10', 80],
      ['203.0.113.9', '198.51.100.10', 80],
      [POD, '10.96.0.3', 80],
      [OUTSIDE, NODE_IP, 30081],
      [OUTSIDE, '203.0.113.10', 80],
    ] as const;
    const got = cases.map(([src, dst, port]) => {
      const r = at(src, dst, port);
      assert.deepEqual(r.unsupported, [], `${src} -> ${dst}:${port}`);
      return `${r.service} ${r.verdict} ${r.endpoints.length} ${r.masquerade ? 'masq' : 'no-masq'}`;
    });
    assert.deepEqual(got, [
      'ns/web:p dnat 2 no-masq',
      'ns/web:p dnat 2 masq',
      'ns/lb:p drop 0 no-masq',
      'ns/lb:p dnat 2 masq',
      // No KUBE-IPVS-NO-ENDPOINTS here: IPVS itself answers ICMP port unreachable.
      'ns/empty:p reject 0 no-masq',
      // kube-proxy: eTP=Local without a local endpoint goes to the remote one, client IP kept.
      'ns/local:p dnat 1 no-masq',
      'ns/ext:p dnat 1 masq',
    ]);
    // The physdev ACCEPT takes the externalIP from outside (not through a bridge port), not from a pod.
    const accepts = (src: string) =>
      at(src, '203.0.113.10', 80).path.some(
        (s) => s.chain === 'KUBE-SERVICES' && /physdev/.test(s.text) && s.action === 'ACCEPT',
      );
    assert.equal(accepts(OUTSIDE), true);
    assert.equal(accepts(POD), false);
  });
});
