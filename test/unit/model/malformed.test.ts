import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildClusterState, type SourceObject } from '../../../src/model/build.js';
import { parseManifestText } from '../../../src/kube/manifests.js';
import type { Service } from '../../../src/model/types.js';

/**
 * Every file in test/fixtures/manifests/malformed holds bad objects plus directives in comments:
 *   # expect: <Kind> <field>      a problem with exactly this kind and field must be reported
 *   # absent: <ns/name>           this Service must not be in the state
 *   # endpoints: <ns/name> <n>    this Service is present with n endpoints on its first port
 * A good Service with its slice is added to every input and must come through intact.
 */

const DIR = join(dirname(fileURLToPath(import.meta.url)), '../../fixtures/manifests/malformed');

const GOOD: SourceObject[] = [
  {
    source: 'good',
    obj: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'good', namespace: 'default' },
      spec: { clusterIP: '10.96.9.9', selector: { app: 'good' }, ports: [{ port: 80, targetPort: 9376 }] },
    },
  },
  {
    source: 'good-slice',
    obj: {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'good-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'good' } },
      addressType: 'IPv4',
      ports: [{ name: '', protocol: 'TCP', port: 9376 }],
      endpoints: [{ addresses: ['10.244.0.30'], conditions: { ready: true }, nodeName: 'node-1' }],
    },
  },
];

const GOOD_SERVICE: Service = {
  namespace: 'default',
  name: 'good',
  type: 'ClusterIP',
  clusterIPs: ['10.96.9.9'],
  externalIPs: [],
  loadBalancerIngress: [],
  loadBalancerSourceRanges: [],
  sessionAffinity: { type: 'None' },
  externalTrafficPolicy: 'Cluster',
  internalTrafficPolicy: 'Cluster',
  healthCheckNodePort: 0,
  ports: [
    {
      namespace: 'default',
      serviceName: 'good',
      portName: '',
      protocol: 'TCP',
      port: 80,
      targetPort: 9376,
      nodePort: 0,
      endpoints: [
        { ip: '10.244.0.30', port: 9376, ready: true, serving: true, terminating: false, nodeName: 'node-1' },
      ],
    },
  ],
};

/** Printable ASCII without quotes or spaces: what may reach an iptables rule or comment. */
const SAFE = /^[A-Za-z0-9./:_-]*$/;

function assertNothingUnsafe(services: Iterable<Service>): void {
  for (const svc of services) {
    for (const v of [
      svc.namespace,
      svc.name,
      ...svc.clusterIPs,
      ...svc.externalIPs,
      ...svc.loadBalancerSourceRanges,
    ]) {
      assert.match(v, SAFE);
    }
    for (const p of svc.ports) {
      assert.match(p.portName, SAFE);
      for (const ep of p.endpoints) {
        for (const v of [
          ep.ip,
          ep.nodeName ?? '',
          ep.zone ?? '',
          ...(ep.zoneHints ?? []),
          ...(ep.nodeHints ?? []),
        ]) {
          assert.match(v, SAFE);
        }
      }
    }
  }
}

describe('malformed manifests corpus', () => {
  const files = readdirSync(DIR)
    .filter((f) => f.endsWith('.yaml'))
    .sort();

  it('has at least 25 cases', () => {
    assert.ok(files.length >= 25, `only ${files.length} fixtures`);
  });

  for (const file of files) {
    it(file, () => {
      const text = readFileSync(join(DIR, file), 'utf8');
      const expects = [...text.matchAll(/^# expect: (\S+) ?(.*)$/gm)].map((m) => ({
        kind: m[1]!,
        field: m[2]!.trim(),
      }));
      const absent = [...text.matchAll(/^# absent: (\S+)$/gm)].map((m) => m[1]!);
      const counts = [...text.matchAll(/^# endpoints: (\S+) (\d+)$/gm)].map((m) => ({
        key: m[1]!,
        n: Number(m[2]),
      }));
      assert.ok(expects.length > 0, 'fixture has no "# expect:" line');

      const parsed = parseManifestText(text, file, false);
      assert.ok('objects' in parsed, `fixture does not parse: ${JSON.stringify(parsed)}`);
      const state = buildClusterState([...GOOD, ...parsed.objects]);

      for (const e of expects) {
        assert.ok(
          state.problems.some((p) => p.object.kind === e.kind && p.field === e.field),
          `expected a problem ${e.kind} ${e.field}; got ${JSON.stringify(state.problems, null, 1).slice(0, 2000)}`,
        );
      }
      for (const p of state.problems) {
        assert.ok(
          p.reason.length > 0 && !p.reason.includes('\n'),
          `problem reason must be one line: ${p.reason}`,
        );
        assert.ok(!p.object.name.includes('\n'), 'problem object names must be one line');
      }
      for (const key of absent) assert.equal(state.services.has(key), false, `${key} must be skipped`);
      for (const { key, n } of counts) {
        const svc = state.services.get(key);
        assert.ok(svc, `${key} must be present`);
        assert.equal(svc.ports[0]?.endpoints.length, n);
      }
      assert.deepEqual(state.services.get('default/good'), GOOD_SERVICE);
      assert.ok(!state.problems.some((p) => p.object.name === 'good'), 'the good objects have no problems');
      assertNothingUnsafe(state.services.values());
    });
  }
});
