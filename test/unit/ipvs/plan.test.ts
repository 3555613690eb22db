import assert from 'node:assert/strict';
import { planIpvsIptablesCleanup } from '../../../src/ipvs/cleanup.js';
import { planIpvs, type IpvsPlanConfig } from '../../../src/ipvs/plan.js';
import { renderIpvsRules } from '../../../src/ipvs/rules.js';
import { optionsFromArgs } from '../../../src/config/options.js';
import { parseIptablesSave } from '../../../src/iptables/save-parse.js';
import { buildClusterState, type SourceObject } from '../../../src/model/build.js';
import { nodeContext } from '../../../src/model/selection.js';

const svc = (name: string, spec: Record<string, unknown>, status?: unknown): SourceObject => ({
  obj: {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'ns' },
    spec,
    ...(status ? { status } : {}),
  },
  source: name,
});
const slice = (
  name: string,
  eps: { ip: string; node?: string; ready?: boolean }[],
  proto = 'TCP',
  portNames = ['p'],
): SourceObject => ({
  obj: {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${name}-1`, namespace: 'ns', labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: portNames.map((n) => ({ name: n, protocol: proto, port: 8080 })),
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true },
      nodeName: e.node ?? 'n1',
    })),
  },
  source: `${name}-slice`,
});
const port = (extra: Record<string, unknown> = {}) => [
  { name: 'p', protocol: 'TCP', port: 80, targetPort: 8080, ...extra },
];

const STATE = buildClusterState([
  svc('web', {
    type: 'NodePort',
    clusterIP: '10.96.0.1',
    ports: port({ nodePort: 30080 }),
    externalIPs: ['203.0.113.1', '192.0.2.1'],
  }),
  slice('web', [{ ip: '10.244.0.2' }, { ip: '10.244.1.2', node: 'n2' }]),
  svc(
    'lb',
    {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.2',
      ports: port({ nodePort: 30081 }),
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32000,
      loadBalancerSourceRanges: ['10.0.0.0/8'],
      sessionAffinity: 'ClientIP',
    },
    { loadBalancer: { ingress: [{ ip: '198.51.100.1' }] } },
  ),
  slice('lb', [{ ip: '10.244.1.3', node: 'n2' }]),
  svc('empty', { clusterIP: '10.96.0.3', ports: port() }),
  svc('itp', { clusterIP: '10.96.0.4', ports: port(), internalTrafficPolicy: 'Local' }),
  slice('itp', [{ ip: '10.244.0.5' }, { ip: '10.244.1.5', node: 'n2' }]),
]);

const CONFIG: IpvsPlanConfig = {
  node: nodeContext('n1'),
  nodePortIPs: ['192.0.2.1', '10.0.0.7'],
  otherLocalIPs: ['192.0.2.1', '10.0.0.7', '127.0.0.1'],
  scheduler: 'rr',
};

describe('planIpvs', () => {
  const plan = planIpvs(STATE, CONFIG, 'IPv4');
  const members = (name: string): string[] =>
    [...(plan.sets.find((s) => s.name === name)?.members ?? [])].sort();

  it('one VS per ClusterIP, externalIP, LB IP and node IP × NodePort', () => {
    assert.deepEqual([...plan.services.keys()].sort(), [
      '-t 10.0.0.7:30080',
      '-t 10.0.0.7:30081',
      '-t 10.96.0.1:80',
      '-t 10.96.0.2:80',
      '-t 10.96.0.3:80',
      '-t 10.96.0.4:80',
      '-t 192.0.2.1:30080',
      '-t 192.0.2.1:30081',
      '-t 192.0.2.1:80',
      '-t 198.51.100.1:80',
      '-t 203.0.113.1:80',
    ]);
    assert.equal(plan.services.get('-t 10.96.0.1:80')?.reals.length, 2);
  });

  it('binds ClusterIPs and off-node externalIPs/LB IPs only', () => {
    assert.deepEqual(plan.bindAddresses, [
      '10.96.0.1',
      '10.96.0.2',
      '10.96.0.3',
      '10.96.0.4',
      '198.51.100.1',
      '203.0.113.1',
    ]);
    assert.deepEqual(members('KUBE-IPVS-IPS'), [...plan.bindAddresses].sort());
  });

  it('ClientIP affinity is persistence; eTP=Local external VSs get local endpoints only', () => {
    assert.equal(plan.services.get('-t 10.96.0.2:80')?.vs.persistence, 10800);
    assert.equal(plan.services.get('-t 10.96.0.2:80')?.reals.length, 1, 'ClusterIP uses cluster endpoints');
    assert.equal(plan.services.get('-t 198.51.100.1:80')?.reals.length, 0);
    assert.equal(
      plan.services
        .get('-t 10.96.0.4:80')
        ?.reals.map((r) => r.address)
        .join(),
      '10.244.0.5',
    );
  });

  it('fills kube-proxy ipsets and the svcplane no-endpoint sets', () => {
    assert.deepEqual(members('KUBE-CLUSTER-IP'), [
      '10.96.0.1,tcp:80',
      '10.96.0.2,tcp:80',
      '10.96.0.3,tcp:80',
      '10.96.0.4,tcp:80',
    ]);
    assert.deepEqual(members('KUBE-EXTERNAL-IP'), ['192.0.2.1,tcp:80', '203.0.113.1,tcp:80']);
    assert.deepEqual(members('KUBE-LOAD-BALANCER-LOCAL'), ['198.51.100.1,tcp:80']);
    assert.deepEqual(members('KUBE-LOAD-BALANCER-FW'), ['198.51.100.1,tcp:80']);
    assert.deepEqual(members('KUBE-LOAD-BALANCER-SOURCE-CIDR'), ['198.51.100.1,tcp:80,10.0.0.0/8']);
    assert.deepEqual(
      members('KUBE-LOAD-BALANCER-SOURCE-IP'),
      ['198.51.100.1,tcp:80,198.51.100.1'],
      'node IP 10.0.0.7 is in range',
    );
    assert.deepEqual(members('KUBE-NODE-PORT-TCP'), ['30080', '30081']);
    assert.deepEqual(members('KUBE-NODE-PORT-LOCAL-TCP'), ['30081']);
    assert.deepEqual(members('KUBE-HEALTH-CHECK-NODE-PORT'), ['32000']);
    assert.deepEqual(members('KUBE-LOOP-BACK'), [
      '10.244.0.2,tcp:8080,10.244.0.2',
      '10.244.0.5,tcp:8080,10.244.0.5',
    ]);
    assert.deepEqual(members('KUBE-IPVS-NO-ENDPOINTS'), ['10.96.0.3,tcp:80']);
    assert.deepEqual(members('KUBE-IPVS-NO-LOCAL-ENDPOINTS'), [
      '10.0.0.7,tcp:30081',
      '192.0.2.1,tcp:30081',
      '198.51.100.1,tcp:80',
    ]);
  });

  it("counts the Services with a Local policy, endpoints and none here, once each, per policy (kube-proxy's IPVS no_local_endpoints_total)", () => {
    // lb (eTP=Local, its endpoint on n2) is the only one in STATE; itp has a local endpoint.
    assert.deepEqual(plan.counts.noLocalServices, { internal: 0, external: 1 });
    const twoPorts = [
      { name: 'p', protocol: 'TCP', port: 80, targetPort: 8080 },
      { name: 'q', protocol: 'TCP', port: 81, targetPort: 8080 },
    ];
    const remote = [{ ip: '10.244.1.9', node: 'n2' }];
    const more = buildClusterState([
      // Two ports, one Service: counted once.
      svc('itp2', { clusterIP: '10.96.0.10', ports: twoPorts, internalTrafficPolicy: 'Local' }),
      slice('itp2', remote, 'TCP', ['p', 'q']),
      // Both policies Local: counted under each.
      svc('both', {
        type: 'NodePort',
        clusterIP: '10.96.0.11',
        ports: port({ nodePort: 30090 }),
        internalTrafficPolicy: 'Local',
        externalTrafficPolicy: 'Local',
      }),
      slice('both', remote),
      // No endpoints at all: the no-endpoints case, not this one.
      svc('none', { clusterIP: '10.96.0.12', ports: port(), internalTrafficPolicy: 'Local' }),
      // Cluster policies: never counted.
      svc('cluster', { type: 'NodePort', clusterIP: '10.96.0.13', ports: port({ nodePort: 30091 }) }),
      slice('cluster', remote),
    ]);
    assert.deepEqual(planIpvs(more, CONFIG, 'IPv4').counts.noLocalServices, { internal: 2, external: 1 });
  });

  it('mh adds the mh-port flag (kube-proxy); --ipvs-scheduler-flags replaces it', () => {
    const mh = planIpvs(STATE, { ...CONFIG, scheduler: 'mh' }, 'IPv4');
    assert.deepEqual(mh.services.get('-t 10.96.0.1:80')?.vs.schedFlags, ['mh-port']);
    const both = planIpvs(
      STATE,
      { ...CONFIG, scheduler: 'mh', schedulerFlags: ['mh-port', 'mh-fallback'] },
      'IPv4',
    );
    assert.deepEqual(both.services.get('-t 10.96.0.1:80')?.vs.schedFlags, ['mh-fallback', 'mh-port']);
  });

  it('an IPv6 plan of an IPv4-only state is empty but declares KUBE-6- sets', () => {
    const v6 = planIpvs(STATE, CONFIG, 'IPv6');
    assert.equal(v6.services.size, 0);
    assert.ok(v6.sets.every((s) => s.name.startsWith('KUBE-6-') && s.members.size === 0));
  });
});

describe('renderIpvsRules', () => {
  const plan = planIpvs(STATE, CONFIG, 'IPv4');
  const text = renderIpvsRules(plan, {
    family: 'IPv4',
    masqueradeBit: 14,
    masqueradeAll: false,
    notLocal: ['!', '-s', '10.244.0.0/16'],
    randomFully: true,
  });
  const saved = parseIptablesSave(text);
  const rules = (table: string, chain: string): string[] =>
    (saved.tables.get(table)?.rulesByChain.get(chain) ?? []).map((r) => r.args.join(' '));

  it('parses back and has kube-proxy’s chains with the rules in order', () => {
    const svcRules = rules('nat', 'KUBE-SERVICES');
    assert.match(svcRules[0] ?? '', /-s 127\.0\.0\.0\/8 -j RETURN/);
    assert.match(svcRules.at(-1) ?? '', /KUBE-LOAD-BALANCER dst,dst -j ACCEPT/);
    assert.ok(
      svcRules.some((r) => /KUBE-CLUSTER-IP dst,dst ! -s 10\.244\.0\.0\/16 -j KUBE-MARK-MASQ/.test(r)),
    );
    assert.ok(rules('nat', 'KUBE-POSTROUTING').some((r) => /MASQUERADE --random-fully/.test(r)));
    const nodePort = rules('nat', 'KUBE-NODE-PORT');
    assert.ok(
      nodePort.findIndex((r) => r.includes('KUBE-NODE-PORT-LOCAL-TCP')) <
        nodePort.findIndex((r) => r.includes('KUBE-NODE-PORT-TCP dst')),
    );
    const filter = rules('filter', 'KUBE-IPVS-FILTER');
    assert.match(filter[0] ?? '', /KUBE-IPVS-NO-LOCAL-ENDPOINTS dst,dst -j DROP/);
    assert.match(filter[1] ?? '', /KUBE-IPVS-NO-ENDPOINTS dst,dst -j REJECT/);
    assert.match(filter.at(-1) ?? '', /KUBE-IPVS-IPS dst -j REJECT/);
    assert.equal(
      rules('filter', 'KUBE-IPVS-OUT-FILTER').length,
      0,
      'node IP inside the range: no OUT-FILTER drop',
    );
  });

  it('writes the OUT-FILTER drop when no node IP is inside the source ranges', () => {
    const p = planIpvs(STATE, { ...CONFIG, nodePortIPs: ['192.0.2.1'] }, 'IPv4');
    const t = renderIpvsRules(p, {
      family: 'IPv4',
      masqueradeBit: 14,
      masqueradeAll: true,
      randomFully: false,
    });
    assert.match(
      t,
      /-A KUBE-IPVS-OUT-FILTER .*-s 198\.51\.100\.1 -m ipvs --vaddr 198\.51\.100\.1 --vproto tcp --vport 80 -j DROP/,
    );
    assert.match(t, /KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ/);
  });

  it('cleanup plan unlinks and deletes the IPVS chains, flushing the shared ones', () => {
    const withJumps = text.replace(
      '*filter\n',
      '*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER\n',
    );
    const plan2 = planIpvsIptablesCleanup(parseIptablesSave(withJumps));
    assert.match(plan2.input, /-D INPUT .*-j KUBE-IPVS-FILTER/);
    assert.match(plan2.input, /-X KUBE-IPVS-FILTER/);
    assert.match(plan2.input, /:KUBE-SERVICES - \[0:0\]/);
    assert.doesNotMatch(plan2.input, /-X KUBE-SERVICES/);
  });
});

describe('IPVS flags', () => {
  it('defaults to rr and validates', () => {
    assert.equal(optionsFromArgs([]).ipvs.scheduler, 'rr');
    assert.equal(optionsFromArgs(['--ipvs-scheduler=mh', '--ipvs-strict-arp']).ipvs.strictARP, true);
    assert.throws(() => optionsFromArgs(['--ipvs-scheduler=bogus']), /--ipvs-scheduler/);
    assert.throws(() => optionsFromArgs(['--ipvs-exclude-cidrs=nope']), /--ipvs-exclude-cidrs/);
    assert.throws(
      () => optionsFromArgs(['--ipvs-sync-period=1s', '--ipvs-min-sync-period=5s']),
      /--ipvs-sync-period/,
    );
  });
});
