import assert from 'node:assert/strict';
import { resolveProxyOptions } from '../../../src/config/options.js';
import { ProxyMetrics } from '../../../src/controller/metrics.js';
import { ConfigError, parseKubeProxyConfig } from '../../../src/config/kube-proxy-config.js';
import { renderRestoreInput } from '../../../src/iptables/render.js';
import { parseManifestText } from '../../../src/kube/manifests.js';
import { buildClusterState, type SourceObject } from '../../../src/model/build.js';
import {
  DEFAULT_MAX_RULE_COST,
  DEFAULT_SERVICE_LIMITS,
  parsePortRange,
  ruleCost,
  serviceLimits,
} from '../../../src/model/limits.js';
import type { ClusterState, Problem } from '../../../src/model/types.js';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { parseIP, specialAddressReason } from '../../../src/model/ip.js';
import { withPropertySeed } from '../../support/property.js';
import { config } from '../iptables/fixtures.js';

/**
 * Hostile objects, from manifests (objects with a source) and from the API (no source) alike: special
 * addresses, node ports outside the range or on svcplane's own ports, unknown kinds, EndpointSlices
 * that name no Service, and Services whose rules would be out of proportion. Each is one problem
 * naming the object, the field and the reason; everything else keeps working.
 */

type Json = Record<string, unknown>;

function svc(name: string, spec: Json, status?: Json): Json {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'h' },
    spec: { clusterIP: '10.96.60.1', ports: [{ port: 80 }], ...spec },
    ...(status ? { status } : {}),
  };
}

function slice(name: string, labels: Json | undefined, addresses: string[], family = 'IPv4'): Json {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'h', ...(labels ? { labels } : {}) },
    addressType: family,
    ports: [{ name: '', protocol: 'TCP', port: 8080 }],
    endpoints: addresses.map((a) => ({ addresses: [a] })),
  };
}

const GOOD = [
  svc('good', { clusterIP: '10.96.60.99' }),
  slice('good-1', { 'kubernetes.io/service-name': 'good' }, ['10.244.0.9']),
];

/** Builds the objects as manifests (with sources) and as API objects (without): the same verdicts. */
function bothWays(objects: Json[], limits = DEFAULT_SERVICE_LIMITS): ClusterState {
  const all = [...GOOD, ...objects];
  const manifest = buildClusterState(
    all.map((obj, i): SourceObject => ({ obj, source: `m.yaml#${i}` })),
    undefined,
    limits,
  );
  const api = buildClusterState(
    all.map((obj): SourceObject => ({ obj })),
    undefined,
    limits,
  );
  const strip = (ps: readonly Problem[]): string[] =>
    ps.map((p) => `${p.object.kind} ${p.object.namespace ?? ''}/${p.object.name} ${p.field}: ${p.reason}`);
  assert.deepEqual(strip(api.problems), strip(manifest.problems), 'API objects get the same problems');
  assert.deepEqual([...api.services.keys()], [...manifest.services.keys()]);
  assert.equal(manifest.services.get('h/good')?.ports[0]?.endpoints.length, 1, 'the good Service stays');
  for (const p of manifest.problems)
    assert.ok(p.object.source?.startsWith('m.yaml#'), 'manifest source named');
  return manifest;
}

const lines = (s: ClusterState): string[] =>
  s.problems.map((p) => `${p.object.kind} ${p.object.name} ${p.field}: ${p.reason}`);

describe('hardening: special addresses are never frontends or backends', () => {
  it('externalIPs: unspecified, loopback, link-local, multicast, broadcast, mapped; one problem each', () => {
    const cases: [string, string][] = [
      ['0.0.0.0', '0.0.0.0 may not be unspecified (0.0.0.0)'],
      ['0.1.2.3', '0.1.2.3 may not be in the "this network" range (0.0.0.0/8)'],
      ['127.0.0.1', '127.0.0.1 may not be in the loopback range (127.0.0.0/8)'],
      ['127.255.0.9', '127.255.0.9 may not be in the loopback range (127.0.0.0/8)'],
      ['169.254.169.254', '169.254.169.254 may not be in the link-local range (169.254.0.0/16)'],
      ['224.0.0.1', '224.0.0.1 may not be in the multicast range (224.0.0.0/4)'],
      ['239.1.2.3', '239.1.2.3 may not be in the multicast range (224.0.0.0/4)'],
      ['255.255.255.255', '255.255.255.255 may not be the broadcast address'],
      ['::', ':: may not be unspecified (::)'],
      ['::1', '::1 may not be the loopback address (::1)'],
      ['fe80::1', 'fe80::1 may not be in the link-local range (fe80::/10)'],
      ['ff02::1', 'ff02::1 may not be in the multicast range (ff00::/8)'],
      ['::ffff:127.0.0.1', '::ffff:7f00:1 may not be in the loopback range (127.0.0.0/8)'],
    ];
    const s = bothWays(cases.map(([ip], i) => svc(`e${i}`, { externalIPs: ['203.0.113.1', ip] })));
    assert.deepEqual(
      lines(s),
      cases.map(([, reason], i) => `Service e${i} spec.externalIPs[1]: ${reason}`),
    );
    assert.deepEqual([...s.services.keys()], ['h/good']);
  });

  it('the text-based check agrees with CIDR matching on random addresses (both families, mapped)', () => {
    const ranges = [
      '0.0.0.0/8',
      '127.0.0.0/8',
      '169.254.0.0/16',
      '224.0.0.0/4',
      '255.255.255.255/32',
      '::/128',
      '::1/128',
      'fe80::/10',
      'ff00::/8',
    ].map((c) => ipaddr.parseCIDR(c));
    const special = (ip: string): boolean => {
      let a: ipaddr.IPv4 | ipaddr.IPv6 = ipaddr.parse(ip);
      if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress())
        a = (a as ipaddr.IPv6).toIPv4Address();
      return ranges.some(([net, len]) => net.kind() === a.kind() && a.match(net, len));
    };
    const octet = fc.oneof(
      fc.constantFrom(0, 127, 169, 254, 224, 239, 240, 255),
      fc.integer({ min: 0, max: 255 }),
    );
    const hextet = fc.oneof(
      fc.constantFrom(0, 1, 0xfe80, 0xfebf, 0xfec0, 0xff00, 0xffff, 0xfe7f),
      fc.integer({ min: 0, max: 0xffff }),
    );
    const v4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
    const v6 = fc.oneof(
      fc.array(hextet, { minLength: 8, maxLength: 8 }).map((h) => h.map((x) => x.toString(16)).join(':')),
      v4.map((a) => `::ffff:${a}`),
      fc.constantFrom('::', '::1', '::2'),
    );
    withPropertySeed('special addresses', (seed) =>
      fc.assert(
        fc.property(fc.oneof(v4, v6), (text) => {
          const ip = parseIP(text)!.ip;
          assert.equal(specialAddressReason(ip) !== undefined, special(ip), ip);
        }),
        { numRuns: 5000, seed },
      ),
    );
  });

  it('LoadBalancer ingress IPs and cluster IPs too', () => {
    const s = bothWays([
      svc(
        'lb',
        { type: 'LoadBalancer', clusterIP: '10.96.60.2', ports: [{ port: 80, nodePort: 30080 }] },
        { loadBalancer: { ingress: [{ ip: '198.51.100.1' }, { ip: '127.0.0.1' }] } },
      ),
      svc('cip', { clusterIP: '127.0.0.53' }),
    ]);
    assert.deepEqual(lines(s), [
      'Service lb status.loadBalancer.ingress[1].ip: 127.0.0.1 may not be in the loopback range (127.0.0.0/8)',
      'Service cip spec.clusterIP: 127.0.0.53 may not be in the loopback range (127.0.0.0/8)',
    ]);
  });

  it('endpoints: the special address is dropped with a problem, the slice keeps the others', () => {
    const s = bothWays([
      svc('eps', { clusterIP: '10.96.60.3' }),
      slice('eps-1', { 'kubernetes.io/service-name': 'eps' }, ['127.0.0.1', '10.244.0.10', '169.254.0.3']),
      slice('eps-2', { 'kubernetes.io/service-name': 'eps' }, ['::1', 'fd00::10'], 'IPv6'),
    ]);
    assert.deepEqual(lines(s), [
      'EndpointSlice eps-1 endpoints[0].addresses[0]: 127.0.0.1 may not be in the loopback range (127.0.0.0/8)',
      'EndpointSlice eps-1 endpoints[2].addresses[0]: 169.254.0.3 may not be in the link-local range (169.254.0.0/16)',
      'EndpointSlice eps-2 endpoints[0].addresses[0]: ::1 may not be the loopback address (::1)',
    ]);
    assert.deepEqual(
      s.services.get('h/eps')?.ports[0]?.endpoints.map((e) => e.ip),
      ['10.244.0.10', 'fd00::10'],
    );
  });
});

describe('hardening: node ports inside the node-port range, off svcplane’s own ports', () => {
  const np = (name: string, nodePort: number, extra: Json = {}): Json =>
    svc(name, { type: 'NodePort', clusterIP: '10.96.61.1', ports: [{ port: 80, nodePort }], ...extra });

  it('the API server default range 30000-32767; 10256 and 10249 are svcplane’s', () => {
    const s = bothWays([
      np('a22', 22),
      np('b10256', 10256),
      np('c29999', 29999),
      np('d30000', 30000),
      np('e32767', 32767),
      np('f32768', 32768),
      svc('g-hc', {
        type: 'LoadBalancer',
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: 10249,
        ports: [{ port: 80, nodePort: 30001 }],
      }),
    ]);
    assert.deepEqual(lines(s), [
      'Service a22 spec.ports[0].nodePort: 22 is outside the node-port range 30000-32767',
      "Service b10256 spec.ports[0].nodePort: 10256 is svcplane's healthz port",
      'Service c29999 spec.ports[0].nodePort: 29999 is outside the node-port range 30000-32767',
      'Service f32768 spec.ports[0].nodePort: 32768 is outside the node-port range 30000-32767',
      "Service g-hc spec.healthCheckNodePort: 10249 is svcplane's metrics port",
    ]);
    assert.deepEqual([...s.services.keys()], ['h/d30000', 'h/e32767', 'h/good']);
  });

  it('a configured range and reserved ports (from the bind addresses) replace the defaults', () => {
    const range = parsePortRange('8000-8999');
    assert.ok(!('error' in range));
    const limits = serviceLimits(range, [
      { port: 8500, what: 'the healthz port' },
      { port: 0, what: 'metrics (off)' },
    ]);
    const s = bothWays([np('a', 8080), np('b', 8500), np('c', 30080)], limits);
    assert.deepEqual(lines(s), [
      'Service b spec.ports[0].nodePort: 8500 is the healthz port',
      'Service c spec.ports[0].nodePort: 30080 is outside the node-port range 8000-8999',
    ]);
    assert.deepEqual(parsePortRange('30000+2767'), { first: 30000, last: 32767 });
    assert.deepEqual(parsePortRange('31000'), { first: 31000, last: 31000 });
    for (const bad of ['', '0-10', '30000-', '32767-30000', '1-65536', 'a-b', '30000-32767 x'])
      assert.ok('error' in parsePortRange(bad), bad);
  });

  it('--service-node-port-range (or serviceNodePortRange) and the bind addresses set the limits', () => {
    const opts = resolveProxyOptions({
      hostnameOverride: 'n',
      serviceNodePortRange: '20000-20999',
      healthzBindAddress: '0.0.0.0:20256',
      metricsBindAddress: '127.0.0.1:0',
    });
    assert.deepEqual(opts.serviceLimits.nodePortRange, { first: 20000, last: 20999 });
    assert.deepEqual(
      [...opts.serviceLimits.reservedPorts],
      [[20256, "svcplane's healthz port (--healthz-bind-address)"]],
      'a disabled server (port 0) reserves nothing',
    );
    const dflt = resolveProxyOptions({ hostnameOverride: 'n' }).serviceLimits;
    assert.deepEqual(dflt.nodePortRange, { first: 30000, last: 32767 });
    assert.deepEqual([...dflt.reservedPorts.keys()], [10256, 10249]);
    assert.throws(
      () => resolveProxyOptions({ hostnameOverride: 'n', serviceNodePortRange: '32767-30000' }),
      /--service-node-port-range: "32767-30000": the last port is below the first/,
    );
    const config = (range: string): string =>
      `apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nserviceNodePortRange: "${range}"\n`;
    assert.equal(parseKubeProxyConfig(config('31000-31999')).config.serviceNodePortRange, '31000-31999');
    assert.throws(
      () => parseKubeProxyConfig(config('lots')),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.problems[0]?.field, 'serviceNodePortRange');
        return true;
      },
    );
  });

  it('one allocator: a node port (any protocol) or health-check port taken twice keeps the first Service', () => {
    const s = bothWays([
      np('a', 30100),
      np('b', 30100, { ports: [{ port: 53, protocol: 'UDP', nodePort: 30100 }] }),
      svc('c', {
        type: 'LoadBalancer',
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: 30100,
        ports: [{ port: 80, nodePort: 30101 }],
      }),
      svc('d', {
        type: 'LoadBalancer',
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: 30102,
        ports: [{ port: 80, nodePort: 30102 }],
      }),
      np('e', 30103, {
        ports: [
          { name: 'dns', port: 53, protocol: 'UDP', nodePort: 30103 },
          { name: 'dns-tcp', port: 53, protocol: 'TCP', nodePort: 30103 },
        ],
      }),
      // A skipped Service takes no port: f's problem leaves 30104 to g.
      np('f', 30104, { externalIPs: ['127.0.0.1'] }),
      np('g', 30104),
    ]);
    assert.deepEqual(lines(s), [
      'Service f spec.externalIPs[0]: 127.0.0.1 may not be in the loopback range (127.0.0.0/8)',
      'Service b spec.ports[0].nodePort: 30100 is already used by h/a (spec.ports[0].nodePort)',
      'Service c spec.healthCheckNodePort: 30100 is already used by h/a (spec.ports[0].nodePort)',
      "Service d spec.healthCheckNodePort: 30102 is also this Service's spec.ports[0].nodePort",
    ]);
    assert.deepEqual([...s.services.keys()], ['h/a', 'h/e', 'h/g', 'h/good']);
  });
});

describe('hardening: kinds and slices that would be dropped unseen are reported once each', () => {
  it('an unknown kind (a typo gets a hint), a slice without or with a bad service-name label', () => {
    const s = bothWays([
      { ...svc('typo', {}), kind: 'Servise' },
      { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'd' } },
      svc('owner', { clusterIP: '10.96.62.1' }),
      slice('no-label', undefined, ['10.244.0.20']),
      slice('other-label', { app: 'owner' }, ['10.244.0.21']),
      slice('empty', { 'kubernetes.io/service-name': '' }, ['10.244.0.22']),
      slice('quoted', { 'kubernetes.io/service-name': 'owner" -j ACCEPT' }, ['10.244.0.23']),
      slice('upper', { 'kubernetes.io/service-name': 'Owner' }, ['10.244.0.24']),
    ]);
    const label = 'metadata.labels["kubernetes.io/service-name"]';
    assert.deepEqual(lines(s), [
      'Servise typo kind: "Servise" is not a kind svcplane reads (Service, EndpointSlice, Endpoints, Node, Namespace, Pod, NetworkPolicy, or a List of them); the object is ignored (did you mean Service?)',
      'Deployment d kind: "Deployment" is not a kind svcplane reads (Service, EndpointSlice, Endpoints, Node, Namespace, Pod, NetworkPolicy, or a List of them); the object is ignored',
      `EndpointSlice no-label ${label}: is required: the slice belongs to no Service and is ignored`,
      `EndpointSlice other-label ${label}: is required: the slice belongs to no Service and is ignored`,
      `EndpointSlice empty ${label}: is required: the slice belongs to no Service and is ignored`,
      `EndpointSlice quoted ${label}: "owner\\" -j ACCEPT" must be a DNS-1123 label (lowercase alphanumerics and '-', starting and ending with an alphanumeric): no Service has this name; the slice is ignored`,
      `EndpointSlice upper ${label}: "Owner" must be a DNS-1123 label (lowercase alphanumerics and '-', starting and ending with an alphanumeric): no Service has this name; the slice is ignored`,
    ]);
    assert.equal(s.services.get('h/owner')?.ports[0]?.endpoints.length, 0, 'no slice leaks into owner');
  });

  it('svcplane_input_problems counts unknown kinds as "other": no label value per hostile kind', async () => {
    const s = bothWays(
      Array.from({ length: 50 }, (_, i) => ({
        apiVersion: 'v1',
        kind: `Kind${i}"\n`,
        metadata: { name: `k${i}` },
      })),
    );
    const metrics = new ProxyMetrics();
    metrics.observeProblems(s);
    const text = await metrics.registry.metrics();
    const series = text.split('\n').filter((l) => l.startsWith('svcplane_input_problems{'));
    assert.deepEqual(series, ['svcplane_input_problems{kind="other"} 50']);
  });

  it('from a manifest file too: a typo’d kind in a multi-document file', () => {
    const parsed = parseManifestText(
      'apiVersion: v1\nkind: Servise\nmetadata: {name: web}\nspec: {clusterIP: 10.96.62.9, ports: [{port: 80}]}\n',
      'web.yaml',
      false,
    );
    assert.ok('objects' in parsed);
    const s = buildClusterState(parsed.objects);
    assert.equal(s.problems.length, 1);
    assert.deepEqual(s.problems[0]?.object, { kind: 'Servise', name: 'web', source: 'web.yaml#0' });
    assert.equal(s.problems[0]?.field, 'kind');
  });
});

/** A Service with `ports` ports, `ips` externalIPs and a slice of `eps` endpoints (as the amplification finding). */
function amplifier(name: string, ports: number, ips: number, eps: number, ip = '10.96.63.1'): Json[] {
  const ps = Array.from({ length: ports }, (_, i) => ({ name: `p${i}`, port: 1000 + i }));
  return [
    svc(name, {
      clusterIP: ip,
      externalIPs: Array.from({ length: ips }, (_, i) => `203.0.${i >> 8}.${i & 255}`),
      ports: ps,
    }),
    {
      ...slice(
        `${name}-1`,
        { 'kubernetes.io/service-name': name },
        Array.from({ length: eps }, (_, i) => `10.244.${i >> 8}.${i & 255}`),
      ),
      ports: ps.map((p) => ({ name: p.name, protocol: 'TCP', port: p.port + 7000 })),
    },
  ];
}

describe('hardening: what one Service may cost is bounded', () => {
  it('ruleCost: frontend addresses × endpoints per port, plus source ranges and the health-check port', () => {
    const s = buildClusterState(
      [
        ...amplifier('a', 3, 2, 4),
        svc(
          'lb',
          {
            type: 'LoadBalancer',
            clusterIP: '10.96.63.2',
            loadBalancerSourceRanges: ['192.0.2.0/24', '198.51.100.0/24'],
            externalTrafficPolicy: 'Local',
            healthCheckNodePort: 30200,
            ports: [{ port: 80, nodePort: 30201 }],
          },
          { loadBalancer: { ingress: [{ ip: '198.51.100.10' }] } },
        ),
      ].map((obj) => ({ obj })),
    );
    // a: 3 ports × (cluster IP + 2 external IPs) × 4 endpoints.
    assert.equal(ruleCost(s.services.get('h/a')!), 3 * 3 * 4);
    // lb: (cluster IP + LB IP + node port) × 1 (no endpoints) + 2 ranges + 1 health-check port.
    assert.equal(ruleCost(s.services.get('h/lb')!), 3 + 2 + 1);
  });

  it('100 ports × 4000 externalIPs (73 KiB of YAML that rendered a 49 MiB, 400k-line restore input) is skipped with a problem', function () {
    this.timeout(60_000);
    const objects = [...amplifier('amp', 100, 4000, 0), ...GOOD];
    const state = buildClusterState(objects.map((obj) => ({ obj })));
    assert.deepEqual(lines(state), [
      `Service amp spec: asks for 400100 rules (frontend addresses × endpoints per port, plus source ranges): more than the ${DEFAULT_MAX_RULE_COST} one Service may cost`,
    ]);
    const input = renderRestoreInput({
      state,
      config: config(),
      existingServiceChains: new Set(),
    }).restoreInput;
    assert.ok(input.length < 20_000, `restore input of ${input.length} bytes`);
    assert.ok(input.includes('default/good') || input.includes('h/good'));
  });

  it('a Service just within the budget is kept and renders in proportion to its cost', function () {
    this.timeout(60_000);
    // 50 ports × (cluster IP + 99 external IPs) × 10 endpoints.
    const state = buildClusterState([...amplifier('big', 50, 99, 10), ...GOOD].map((obj) => ({ obj })));
    const big = state.services.get('h/big');
    assert.ok(big, JSON.stringify(state.problems));
    const cost = ruleCost(big);
    assert.equal(cost, 50 * 100 * 10);
    const input = renderRestoreInput({
      state,
      config: config(),
      existingServiceChains: new Set(),
    }).restoreInput;
    const bigLines = input.split('\n').filter((l) => l.includes('h/big')).length;
    assert.ok(bigLines <= cost, `${bigLines} lines for a cost of ${cost}`);
    const over = serviceLimits(DEFAULT_SERVICE_LIMITS.nodePortRange, []);
    assert.equal(over.maxRuleCost, DEFAULT_MAX_RULE_COST);
    const tight = buildClusterState(
      [...amplifier('big', 50, 99, 10), ...GOOD].map((obj) => ({ obj })),
      undefined,
      {
        ...DEFAULT_SERVICE_LIMITS,
        maxRuleCost: cost - 1,
      },
    );
    assert.equal(tight.services.has('h/big'), false, 'one over the budget: skipped');
    assert.equal(tight.services.has('h/good'), true);
  });
});
