import assert from 'node:assert/strict';
import { renderRestoreInput, type RenderResult } from '../../../src/iptables/render.js';
import { buildClusterState } from '../../../src/model/build.js';
import type { ClusterState } from '../../../src/model/types.js';
import { clusterObjects, serviceObjects } from '../../../bench/cluster.js';
import { config } from './fixtures.js';

/**
 * Partial renders memoise what unchanged Services contribute (per Service object). A warm memo must
 * give exactly what a cold render gives: same input, chains, counts and metrics.
 */

function summary(r: RenderResult): unknown {
  return {
    input: r.restoreInput,
    active: [...r.activeServiceChains].sort(),
    written: [...r.writtenServices].sort(),
    stale: r.staleChains,
    counts: r.counts,
    noLocal: r.noLocalEndpoints,
    skipped: r.skipped,
  };
}

describe('renderRestoreInput: memo of unchanged Services', () => {
  it('a warm memo renders exactly what a cold render does, over several partial syncs', () => {
    const objects = clusterObjects({ services: 300, endpointsPerService: 5 });
    let state: ClusterState = buildClusterState(objects.map((obj) => ({ obj })));
    const cfg = config();
    const full = renderRestoreInput({ state, config: cfg, existingServiceChains: new Set() });
    let existing = full.activeServiceChains;
    for (let round = 1; round <= 3; round++) {
      const i = 17 * round;
      const changed = [...objects];
      const [svc, slice] = serviceObjects(i, 5, round);
      changed[1 + 2 * i] = svc!;
      changed[2 + 2 * i] = slice!;
      const next = buildClusterState(
        changed.map((obj) => ({ obj })),
        state,
      );
      const key = [...next.services.keys()].find((k) => next.services.get(k) !== state.services.get(k));
      assert.ok(key, 'one Service changed');
      const req = { config: cfg, changedServices: new Set([key]), existingServiceChains: existing };
      const warm = renderRestoreInput({ ...req, state: next });
      const again = renderRestoreInput({ ...req, state: next });
      // Fresh objects: nothing memoised for them.
      const cold = renderRestoreInput({
        ...req,
        state: { ...next, services: new Map(structuredClone([...next.services])) },
      });
      assert.deepEqual(summary(warm), summary(cold));
      assert.deepEqual(summary(again), summary(cold));
      assert.ok(warm.counts.totalNatRules > 1000, 'the unchanged Services are counted');
      state = next;
      existing = warm.activeServiceChains;
    }
  });
});
