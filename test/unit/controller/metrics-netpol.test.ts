import assert from 'node:assert/strict';
import { ProxyMetrics } from '../../../src/controller/metrics.js';
import { buildClusterState } from '../../../src/model/build.js';

/** svcplane_input_problems names the NetworkPolicy kinds svcplane reads, as it names Services. */

describe('svcplane_input_problems: NetworkPolicy kinds', () => {
  it('counts problems of Pods, Namespaces and NetworkPolicies under their kind, not "other"', async () => {
    const state = buildClusterState(
      [
        { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'Bad_Name' } },
        { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', labels: { 'a b': 'c' } } },
        {
          apiVersion: 'networking.k8s.io/v1',
          kind: 'NetworkPolicy',
          metadata: { name: 'np' },
          spec: { policyTypes: ['Sideways'] },
        },
      ].map((obj) => ({ obj })),
    );
    const metrics = new ProxyMetrics();
    metrics.observeProblems(state);
    const series = (await metrics.registry.metrics())
      .split('\n')
      .filter((l) => l.startsWith('svcplane_input_problems{'))
      .sort();
    assert.deepEqual(series, [
      'svcplane_input_problems{kind="Namespace"} 1',
      'svcplane_input_problems{kind="NetworkPolicy"} 1',
      'svcplane_input_problems{kind="Pod"} 1',
    ]);
  });
});
