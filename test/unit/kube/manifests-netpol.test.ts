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
});
