import assert from 'node:assert/strict';
import { buildClusterState, type SourceObject } from '../../../src/model/build.js';
import type { ClusterState } from '../../../src/model/types.js';

type Obj = Record<string, unknown>;
const svc = (name: string, spec: Obj, extra: Obj = {}): Obj => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default', ...(extra.metadata ?? {}) },
  spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }], ...spec },
  ...(extra.status ? { status: extra.status } : {}),
});
const slice = (name: string, service: string, ports: Obj[], endpoints: Obj[], addressType = 'IPv4'): Obj => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
  addressType,
  ports,
  endpoints,
});
const build = (objs: unknown[], prev?: ClusterState): ClusterState =>
  buildClusterState(
    objs.map((obj, i): SourceObject => ({ obj, source: `t.yaml#${i}` })),
    prev,
  );
const fields = (s: ClusterState): string[] => s.problems.map((p) => `${p.object.kind}:${p.field}`);

describe('buildClusterState', () => {
  it('never throws on garbage', () => {
    const garbage: unknown[] = [
      null,
      1,
      'x',
      [],
      [1],
      {},
      { kind: 5 },
      { kind: 'Service' },
      { kind: 'Service', apiVersion: 'v1', metadata: null, spec: 'x' },
      { apiVersion: 'v1', kind: 'List', items: 'no' },
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'x'.repeat(1e6) },
        spec: { ports: [null, 1, { port: 1e300 }] },
      },
    ];
    const s = build(garbage);
    assert.equal(s.services.size, 0);
    assert.ok(s.problems.length > 0);
  });

  it('applies Service defaults and canonicalizes', () => {
    const s = build([
      svc('a', {
        clusterIPs: ['010.096.000.001', 'FD00:0:0::0001'],
        clusterIP: '010.096.000.001',
        externalIPs: ['192.0.2.010'],
        loadBalancerSourceRanges: [' 10.1.2.3/8 '],
        ports: [{ port: 80, targetPort: 'http' }],
      }),
    ]);
    assert.deepEqual(s.problems, []);
    const a = s.services.get('default/a')!;
    assert.deepEqual(a.clusterIPs, ['10.96.0.1', 'fd00::1']);
    assert.deepEqual(a.externalIPs, ['192.0.2.10']);
    assert.deepEqual(a.loadBalancerSourceRanges, ['10.0.0.0/8']);
    assert.equal(a.type, 'ClusterIP');
    assert.deepEqual(a.sessionAffinity, { type: 'None' });
    assert.equal(a.externalTrafficPolicy, 'Cluster');
    assert.equal(a.internalTrafficPolicy, 'Cluster');
    assert.deepEqual(a.ports[0], {
      namespace: 'default',
      serviceName: 'a',
      portName: '',
      protocol: 'TCP',
      port: 80,
      targetPort: 'http',
      nodePort: 0,
      endpoints: [],
    });
  });

  it('reads affinity, policies, LB ingress and health check port', () => {
    const s = build([
      svc(
        'lb',
        {
          type: 'LoadBalancer',
          sessionAffinity: 'ClientIP',
          externalTrafficPolicy: 'Local',
          internalTrafficPolicy: 'Local',
          healthCheckNodePort: 32000,
          trafficDistribution: 'PreferClose',
          ports: [{ port: 80, nodePort: 30001 }],
        },
        {
          status: {
            loadBalancer: {
              ingress: [
                { ip: '192.0.2.7' },
                { hostname: 'lb.example' },
                { ip: '192.0.2.8', ipMode: 'Proxy' },
              ],
            },
          },
        },
      ),
    ]);
    assert.deepEqual(s.problems, []);
    const lb = s.services.get('default/lb')!;
    assert.deepEqual(lb.sessionAffinity, { type: 'ClientIP', timeoutSeconds: 10800 });
    assert.deepEqual(lb.loadBalancerIngress, [
      { ip: '192.0.2.7', ipMode: 'VIP' },
      { ip: '192.0.2.8', ipMode: 'Proxy' },
    ]);
    assert.equal(lb.healthCheckNodePort, 32000);
    assert.equal(lb.trafficDistribution, 'PreferClose');
    assert.equal(lb.ports[0]!.nodePort, 30001);
    assert.equal(lb.externalTrafficPolicy, 'Local');
  });

  it('keeps headless, ExternalName and service-proxy-name Services with a skipReason and no endpoints', () => {
    const s = build([
      svc('h', { clusterIP: 'None' }),
      svc('e', { type: 'ExternalName', externalName: 'x.example', clusterIP: undefined, ports: undefined }),
      svc('p', {}, { metadata: { labels: { 'service.kubernetes.io/service-proxy-name': 'other' } } }),
      slice('h-1', 'h', [{ port: 80 }], [{ addresses: ['10.244.0.2'] }]),
    ]);
    assert.deepEqual(s.problems, []);
    assert.equal(s.services.get('default/h')?.skipReason, 'headless');
    assert.equal(s.services.get('default/e')?.skipReason, 'ExternalName');
    assert.equal(s.services.get('default/p')?.skipReason, 'service-proxy-name');
    assert.deepEqual(s.services.get('default/h')?.ports[0]?.endpoints, []);
  });

  it('joins slices by (name, protocol), applies condition defaults, sorts by ip:port string', () => {
    const s = build([
      svc('m', {
        ports: [
          { name: 'http', port: 80, targetPort: 'web' },
          { name: 'dns', port: 53, protocol: 'UDP' },
        ],
      }),
      slice(
        'm-1',
        'm',
        [{ name: 'http', port: 8080 }, { name: 'dns', protocol: 'TCP', port: 53 }, { name: 'nop' }],
        [
          {
            addresses: ['10.0.1.2', '10.9.9.9'],
            nodeName: 'n1',
            zone: 'z1',
            hints: { forZones: [{ name: 'z1' }], forNodes: [{ name: 'n1' }] },
          },
          { addresses: ['10.0.1.10'], conditions: { ready: false } },
          { addresses: ['10.0.1.3'], conditions: { ready: false, serving: true, terminating: true } },
        ],
      ),
    ]);
    assert.deepEqual(s.problems, []);
    const [http, dns] = s.services.get('default/m')!.ports;
    assert.deepEqual(dns!.endpoints, [], 'protocol must match');
    assert.deepEqual(
      http!.endpoints.map((e) => `${e.ip}:${e.port}`),
      ['10.0.1.10:8080', '10.0.1.2:8080', '10.0.1.3:8080'],
    );
    assert.deepEqual(http!.endpoints[0], {
      ip: '10.0.1.10',
      port: 8080,
      ready: false,
      serving: true, // kube-proxy: an unset serving condition means serving
      terminating: false,
    });
    assert.deepEqual(http!.endpoints[1], {
      ip: '10.0.1.2',
      port: 8080,
      ready: true,
      serving: true,
      terminating: false,
      nodeName: 'n1',
      zone: 'z1',
      zoneHints: ['z1'],
      nodeHints: ['n1'],
    });
    assert.deepEqual(http!.endpoints[2], {
      ip: '10.0.1.3',
      port: 8080,
      ready: false,
      serving: true,
      terminating: true,
    });
  });

  it('dedupes ip:port across slices preferring the non-terminating; handles IPv6 and FQDN', () => {
    const s = build([
      svc('d', { clusterIPs: ['10.96.0.1', 'fd00::1'] }),
      slice(
        'd-a',
        'd',
        [{ port: 80 }],
        [{ addresses: ['10.244.0.2'], conditions: { terminating: true, ready: false } }],
      ),
      slice('d-b', 'd', [{ port: 80 }], [{ addresses: ['10.244.0.2'] }]),
      slice('d-6', 'd', [{ port: 80 }], [{ addresses: ['fd00:10:244::2'] }], 'IPv6'),
      slice('d-f', 'd', [{ port: 80 }], [{ addresses: ['db.example'] }], 'FQDN'),
      slice('other', 'unrelated', [{ port: 80 }], [{ addresses: ['10.244.0.9'] }]),
    ]);
    assert.deepEqual(s.problems, []);
    const eps = s.services.get('default/d')!.ports[0]!.endpoints;
    assert.deepEqual(
      eps.map((e) => [e.ip, e.terminating]),
      [
        ['10.244.0.2', false],
        ['fd00:10:244::2', false],
      ],
    );
  });

  it('mirrors legacy Endpoints for selector-less Services, and for selector Services without slices', () => {
    const endpoints = (name: string, labels: Obj = {}): Obj => ({
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { name, namespace: 'default', labels },
      subsets: [
        {
          addresses: [{ ip: '10.244.0.4', nodeName: 'node-1', hostname: 'db-0' }],
          notReadyAddresses: [{ ip: '10.244.0.5' }],
          ports: [{ port: 5432 }],
        },
      ],
    });
    const s = build([
      svc('nosel', { ports: [{ port: 5432 }] }),
      endpoints('nosel'),
      svc('sel', { selector: { app: 'x' }, ports: [{ port: 5432 }] }),
      endpoints('sel'),
      svc('sel2', { selector: { app: 'x' }, ports: [{ port: 5432 }] }),
      endpoints('sel2'),
      slice('sel2-1', 'sel2', [{ port: 5432 }], [{ addresses: ['10.244.0.9'] }]),
      svc('skip', { ports: [{ port: 5432 }] }),
      endpoints('skip', { 'endpointslice.kubernetes.io/skip-mirror': 'true' }),
    ]);
    assert.deepEqual(s.problems, []);
    assert.deepEqual(s.services.get('default/nosel')!.ports[0]!.endpoints, [
      { ip: '10.244.0.4', port: 5432, ready: true, serving: true, terminating: false, nodeName: 'node-1' },
      { ip: '10.244.0.5', port: 5432, ready: false, serving: false, terminating: false },
    ]);
    assert.equal(s.services.get('default/sel')!.ports[0]!.endpoints.length, 2);
    assert.deepEqual(
      s.services.get('default/sel2')!.ports[0]!.endpoints.map((e) => e.ip),
      ['10.244.0.9'],
    );
    assert.equal(s.services.get('default/skip')!.ports[0]!.endpoints.length, 0);
  });

  it('reads Nodes: InternalIP first, canonical, labels', () => {
    const s = build([
      {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: 'node-1', labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
        status: {
          addresses: [
            { type: 'ExternalIP', address: '198.51.100.001' },
            { type: 'Hostname', address: 'node-1' },
            { type: 'InternalIP', address: '192.0.2.1' },
          ],
        },
      },
    ]);
    assert.deepEqual(s.problems, []);
    assert.deepEqual(s.nodes.get('node-1'), {
      name: 'node-1',
      addresses: ['192.0.2.1', '198.51.100.1'],
      labels: { 'topology.kubernetes.io/zone': 'zone-a' },
      podCIDRs: [],
    });
  });

  it("reads a Node's pod CIDRs: spec.podCIDRs (canonical) over spec.podCIDR", () => {
    const node = (name: string, spec: Obj): Obj => ({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name },
      spec,
    });
    const s = build([
      node('dual', { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.7/24', 'fd00:10:244:1::/64'] }),
      node('single', { podCIDR: '010.244.2.0/24' }),
      node('none', {}),
    ]);
    assert.deepEqual(s.problems, []);
    assert.deepEqual(s.nodes.get('dual')?.podCIDRs, ['10.244.1.0/24', 'fd00:10:244:1::/64']);
    assert.deepEqual(s.nodes.get('single')?.podCIDRs, ['10.244.2.0/24']);
    assert.deepEqual(s.nodes.get('none')?.podCIDRs, []);
  });

  it('rejects a Node whose pod CIDRs are invalid or two of one family, naming the field', () => {
    const node = (name: string, spec: Obj): Obj => ({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name },
      spec,
    });
    const s = build([
      node('bad', { podCIDRs: ['10.244.1.0/33'] }),
      node('twice', { podCIDRs: ['10.244.1.0/24', '10.244.2.0/24'] }),
      node('old', { podCIDR: 'not-a-cidr' }),
      node('type', { podCIDRs: '10.244.1.0/24' }),
      node('ok', { podCIDRs: ['10.244.3.0/24'] }),
    ]);
    assert.deepEqual(
      s.problems.map((p) => `${p.object.name}: ${p.field}: ${p.reason}`),
      [
        'bad: spec.podCIDRs[0]: "10.244.1.0/33" is not a valid CIDR',
        'twice: spec.podCIDRs[1]: a second IPv4 pod CIDR (one per family)',
        'old: spec.podCIDR: "not-a-cidr" is not a valid CIDR',
        'type: spec.podCIDRs: must be an array, got string',
      ],
    );
    assert.deepEqual([...s.nodes.keys()], ['ok'], 'only the valid Node is kept');
  });

  it('flattens Lists and typed lists; reports other kinds once each, with a hint for typos', () => {
    const s = build([
      { apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'v1', kind: 'List', items: [svc('a', {})] }] },
      {
        apiVersion: 'v1',
        kind: 'ServiceList',
        items: [{ metadata: { name: 'b' }, spec: { clusterIP: '10.96.0.2', ports: [{ port: 80 }] } }],
      },
      { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' } },
      { apiVersion: 'v1', kind: 'Servise', metadata: { name: 'typo', namespace: 'n' } },
      { apiVersion: 'v1', kind: 'endpointslice', metadata: { name: 'lower' } },
    ]);
    assert.deepEqual(
      s.problems.map(
        (p) => `${p.object.kind} ${p.object.namespace ?? '-'}/${p.object.name}: ${p.field}: ${p.reason}`,
      ),
      [
        'Deployment -/x: kind: "Deployment" is not a kind svcplane reads (Service, EndpointSlice, Endpoints, Node, Namespace, Pod, NetworkPolicy, or a List of them); the object is ignored',
        'Servise n/typo: kind: "Servise" is not a kind svcplane reads (Service, EndpointSlice, Endpoints, Node, Namespace, Pod, NetworkPolicy, or a List of them); the object is ignored (did you mean Service?)',
        'endpointslice -/lower: kind: "endpointslice" is not a kind svcplane reads (Service, EndpointSlice, Endpoints, Node, Namespace, Pod, NetworkPolicy, or a List of them); the object is ignored (did you mean EndpointSlice?)',
      ],
    );
    assert.deepEqual([...s.services.keys()], ['default/a', 'default/b']);
  });

  it('last duplicate wins with a problem naming both sources', () => {
    const s = build([svc('a', { clusterIP: '10.96.0.1' }), svc('a', { clusterIP: '10.96.0.2' })]);
    assert.deepEqual(s.services.get('default/a')!.clusterIPs, ['10.96.0.2']);
    assert.equal(s.problems.length, 1);
    assert.match(s.problems[0]!.reason, /t\.yaml#0.*t\.yaml#1/);
  });

  it('validates values that reach rules', () => {
    const cases: [Obj, string][] = [
      [svc('a', { type: 'Weird' }), 'spec.type'],
      [svc('a', { ports: [{ port: 80, name: 'UPPER' }] }), 'spec.ports[0].name'],
      [svc('a', { ports: [{ port: 80, targetPort: 0.5 }] }), 'spec.ports[0].targetPort'],
      [svc('a', { ports: [{ port: 80, nodePort: 30000 }] }), 'spec.ports[0].nodePort'],
      [svc('a', { healthCheckNodePort: 70000 }), 'spec.healthCheckNodePort'],
      [svc('a', { externalTrafficPolicy: 'Global' }), 'spec.externalTrafficPolicy'],
      [
        svc('a', {
          sessionAffinity: 'ClientIP',
          sessionAffinityConfig: { clientIP: { timeoutSeconds: 86401 } },
        }),
        'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
      ],
      [svc('a', { ports: [] }), 'spec.ports'],
      [svc('A', {}), 'metadata.name'],
      [svc('a'.repeat(64), {}), 'metadata.name'],
    ];
    for (const [obj, field] of cases) {
      const s = build([obj]);
      assert.equal(s.services.size, 0, field);
      assert.ok(fields(s).includes(`Service:${field}`), `${field}: ${JSON.stringify(s.problems)}`);
    }
  });

  it('reuses unchanged Service objects and is deterministic', () => {
    const objs = [
      svc('b', {}),
      svc('a', { clusterIP: '10.96.0.2' }),
      slice('a-1', 'a', [{ port: 80 }], [{ addresses: ['10.244.0.2'] }]),
    ];
    const first = build(objs);
    assert.deepEqual([...first.services.keys()], ['default/a', 'default/b']);
    const second = build([svc('b', { clusterIP: '10.96.0.3' }), ...objs.slice(1)], first);
    assert.equal(second.services.get('default/a'), first.services.get('default/a'));
    assert.notEqual(second.services.get('default/b'), first.services.get('default/b'));
    assert.deepEqual(build(objs), first);
  });
});
