import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestSource } from '../../../src/kube/manifests.js';

/** Manifest files feed NetworkPolicies, Pods and Namespaces like any kind of the model's table. */

const FILE = `apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {project: myproject}}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {role: db}}
spec: {nodeName: node-1, containers: [{name: redis, ports: [{name: redis, containerPort: 6379}]}]}
status: {phase: Running, podIPs: [{ip: 10.244.1.10}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress: [{ports: [{port: redis}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: shop}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]}]
`;

describe('manifest source: NetworkPolicy kinds', () => {
  let dir: string;
  let source: ManifestSource | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'svcplane-netpol-'));
  });
  afterEach(async () => {
    await source?.stop();
    source = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads them into the state, the invalid policy kept as invalid with its problem', async () => {
    writeFileSync(join(dir, 'shop.yaml'), FILE);
    source = new ManifestSource(dir, { debounceMs: 20, pollMs: 50 });
    await source.start();
    const st = source.current()!;
    assert.deepEqual(st.namespaces?.get('shop')?.labels, {
      project: 'myproject',
      'kubernetes.io/metadata.name': 'shop',
    });
    assert.deepEqual(st.pods?.get('shop/db')?.namedPorts, [{ name: 'redis', protocol: 'TCP', port: 6379 }]);
    assert.deepEqual(st.networkPolicies?.get('shop/db')?.ingress, [
      { peers: [], ports: [{ protocol: 'TCP', port: 'redis' }] },
    ]);
    assert.deepEqual(st.networkPolicies?.get('shop/broken')?.invalid, [
      'spec.ingress[0].from[0].ipBlock.except[0]',
    ]);
    assert.deepEqual(
      st.problems.map((p) => `${p.object.kind} ${p.object.namespace}/${p.object.name} ${p.field}`),
      ['NetworkPolicy shop/broken spec.ingress[0].from[0].ipBlock.except[0]'],
    );
    assert.match(st.problems[0]!.object.source ?? '', /shop\.yaml#3$/);
  });

  // Found by the daemon test (test/integration/netpol-daemon.test.ts): the source compared Services,
  // Nodes and problems only, so a label or policy edit published nothing and was never enforced.
  for (const [what, from, to] of [
    ['a pod label edit', 'labels: {role: db}', 'labels: {role: cache}'],
    ['a namespace label edit', 'labels: {project: myproject}', 'labels: {project: other}'],
    ['a policy edit', 'ingress: [{ports: [{port: redis}]}]', 'ingress: [{ports: [{port: 6380}]}]'],
  ] as const) {
    it(`publishes ${what} (Services and Nodes unchanged)`, async () => {
      writeFileSync(join(dir, 'shop.yaml'), FILE);
      source = new ManifestSource(dir, { debounceMs: 20, pollMs: 50 });
      await source.start();
      const first = source.current()!;
      const changed = new Promise<void>((resolve) => source!.onChange(() => resolve()));
      writeFileSync(join(dir, 'shop.yaml'), FILE.replace(from, to));
      await changed;
      const next = source.current()!;
      assert.notEqual(next, first);
      assert.notDeepEqual(
        [next.pods, next.namespaces, next.networkPolicies],
        [first.pods, first.namespaces, first.networkPolicies],
      );
    });
  }
});
