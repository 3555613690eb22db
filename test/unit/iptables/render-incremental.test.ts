import assert from 'node:assert/strict';
import fc from 'fast-check';
import { renderRestoreInput } from '../../../src/iptables/render.js';
import { dropUnchangedFixedChains, fixedChainContents } from '../../../src/iptables/render-unchanged.js';
import { stateChange } from '../../../src/model/state-change.js';
import { buildClusterState } from '../../../src/model/build.js';
import type { ClusterState } from '../../../src/model/types.js';
import { clusterObjects, serviceObjects } from '../../../bench/cluster.js';
import { config } from './fixtures.js';

/**
 * Partial syncs with `previous`: when no fixed chain changed, the renderer leaves them all out. What
 * the proxier then writes must be byte for byte what the plain partial render gives once the
 * unchanged fixed chains are dropped (the path that compares every fixed chain's text).
 */

type Raw = Record<string, unknown>;
const N = 60;
const PER = 3;

type Change =
  | { kind: 'endpoint'; i: number; generation: number }
  | { kind: 'no-endpoints'; i: number }
  | { kind: 'remove'; i: number }
  | { kind: 'restore'; i: number }
  | { kind: 'external-ip'; i: number }
  | { kind: 'internal-local'; i: number }
  | { kind: 'add'; i: number };

function apply(objects: Raw[], change: Change, per = PER): Raw[] {
  const out = [...objects];
  const at = 1 + 2 * change.i;
  switch (change.kind) {
    case 'endpoint': {
      const [svc, slice] = serviceObjects(change.i, per, change.generation);
      const current = out[at + 1] as { kind: string; endpoints?: { addresses: string[] }[] };
      const moved = (slice as { endpoints: { addresses: string[] }[] }).endpoints.at(-1)!.addresses;
      if (
        current.kind === 'EndpointSlice' &&
        current.endpoints !== undefined &&
        current.endpoints.length > 0
      ) {
        // One endpoint moves; the rest of the Service and its slice stay as they are.
        const next = structuredClone(current) as { endpoints: { addresses: string[] }[] };
        next.endpoints.at(-1)!.addresses = moved;
        out[at + 1] = next;
      } else {
        out[at] = svc!;
        out[at + 1] = slice!;
      }
      break;
    }
    case 'no-endpoints': {
      const slice = structuredClone(out[at + 1]!) as { endpoints: unknown[] };
      slice.endpoints = [];
      out[at + 1] = slice;
      break;
    }
    case 'remove':
      // A ConfigMap in its place: ignored by the model, so the Service and its slice are gone.
      out[at] = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `gone-${change.i}` } };
      out[at + 1] = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `gone-s-${change.i}` } };
      break;
    case 'restore': {
      const [svc, slice] = serviceObjects(change.i, per);
      out[at] = svc!;
      out[at + 1] = slice!;
      break;
    }
    case 'external-ip': {
      const svc = structuredClone(out[at]!) as { kind: string; spec?: Record<string, unknown> };
      if (svc.kind === 'Service' && svc.spec) svc.spec.externalIPs = [`203.0.113.${change.i}`];
      out[at] = svc;
      break;
    }
    case 'internal-local': {
      // No endpoint on this node: the Service counts in the no-local-endpoints gauge.
      const svc = structuredClone(out[at]!) as { kind: string; spec?: Record<string, unknown> };
      if (svc.kind === 'Service' && svc.spec) svc.spec.internalTrafficPolicy = 'Local';
      out[at] = svc;
      const slice = structuredClone(out[at + 1]!) as { endpoints?: { nodeName?: string }[] };
      for (const e of slice.endpoints ?? []) e.nodeName = 'node-elsewhere';
      out[at + 1] = slice;
      break;
    }
    case 'add':
      out.push(...serviceObjects(N + change.i, per));
      break;
  }
  return out;
}

const changeArb: fc.Arbitrary<Change> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('endpoint' as const),
      i: fc.nat(N - 1),
      generation: fc.integer({ min: 1, max: 500 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('no-endpoints' as const), i: fc.nat(N - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove' as const), i: fc.nat(N - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('restore' as const), i: fc.nat(N - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('external-ip' as const), i: fc.nat(N - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('internal-local' as const), i: fc.nat(N - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('add' as const), i: fc.nat(20) }) },
);

describe('renderRestoreInput: partial syncs that leave the fixed chains out', function () {
  // Property runs: ~1 s and ~4 s alone, CPU-bound; a full unit run on a loaded 2-core machine took
  // one over mocha's 20 s default (seen twice). Nothing here waits on time, so a longer bound hides
  // nothing.
  this.timeout(120_000);
  it('writes exactly what comparing every fixed chain would, over random change sequences', () => {
    const cfg = config();
    fc.assert(
      // `fresh`: the state is rebuilt without `previous`, so unchanged Services are equal objects,
      // not the same ones (as from a source that does not share structure).
      fc.property(fc.array(fc.tuple(changeArb, fc.boolean()), { minLength: 1, maxLength: 12 }), (steps) => {
        let objects = clusterObjects({ services: N, endpointsPerService: PER });
        let applied: ClusterState = buildClusterState(objects.map((obj) => ({ obj })));
        const full = renderRestoreInput({ state: applied, config: cfg, existingServiceChains: new Set() });
        let kernelChains = full.activeServiceChains;
        let contents = fixedChainContents(full.restoreInput);
        for (const [change, fresh] of steps) {
          objects = apply(objects, change);
          const raw = objects.map((obj) => ({ obj: fresh ? structuredClone(obj) : obj }));
          const next = buildClusterState(raw, fresh ? undefined : applied);
          const req = {
            state: next,
            config: cfg,
            changedServices: stateChange(applied, next).changed,
            existingServiceChains: kernelChains,
          };
          const reference = renderRestoreInput(req);
          const expected = dropUnchangedFixedChains(reference.restoreInput, contents);
          // The short path needs no kernel listing: `previous` says which chains the kernel holds.
          const fast = renderRestoreInput({
            state: next,
            config: cfg,
            changedServices: req.changedServices,
            previous: applied,
          });
          if (fast.fixedChainsOmitted) {
            assert.equal(fast.restoreInput, expected.input, `after ${change.kind} ${change.i}`);
            assert.equal(expected.dropped.length, fixedChainContents(reference.restoreInput).size);
          } else {
            assert.equal(fast.restoreInput, reference.restoreInput);
            contents = expected.contents;
          }
          assert.deepEqual([...fast.activeServiceChains].sort(), [...reference.activeServiceChains].sort());
          assert.deepEqual(fast.staleChains, reference.staleChains);
          assert.equal(fast.counts.totalNatRules, reference.counts.totalNatRules);
          assert.equal(fast.counts.totalFilterRules, reference.counts.totalFilterRules);
          assert.deepEqual(fast.noLocalEndpoints, reference.noLocalEndpoints);
          assert.deepEqual(fast.skipped, reference.skipped);
          kernelChains = fast.activeServiceChains;
          applied = next;
        }
      }),
      { numRuns: 40, seed: 7 },
    );
  });

  it('takes the short path for an endpoint move, and not when a Service loses its endpoints', () => {
    const cfg = config();
    const objects = clusterObjects({ services: N, endpointsPerService: PER });
    const applied = buildClusterState(objects.map((obj) => ({ obj })));
    // The full sync that put `applied` in the kernel (and memoised its Services).
    renderRestoreInput({ state: applied, config: cfg, existingServiceChains: new Set() });
    const render = (change: Change) => {
      const next = buildClusterState(
        apply(objects, change).map((obj) => ({ obj })),
        applied,
      );
      return renderRestoreInput({
        state: next,
        config: cfg,
        changedServices: stateChange(applied, next).changed,
        previous: applied,
      });
    };
    const moved = render({ kind: 'endpoint', i: 5, generation: 1 });
    assert.equal(moved.fixedChainsOmitted, true);
    assert.match(moved.restoreInput, /^\*filter\nCOMMIT\n\*nat\n/);
    assert.doesNotMatch(moved.restoreInput, /KUBE-SERVICES|KUBE-NODEPORTS|KUBE-POSTROUTING/);
    assert.match(moved.restoreInput, /--to-destination 100\.64\.0\.1:8080/);
    assert.match(moved.restoreInput, /^-X KUBE-SEP-/m, 'the replaced endpoint chain is deleted');
    const emptied = render({ kind: 'no-endpoints', i: 5 });
    assert.equal(emptied.fixedChainsOmitted, false);
    assert.match(emptied.restoreInput, /has no endpoints/);
  });

  it('totals a partial render from the last render totals and the changed Services as a full render does, over random change sequences', () => {
    const cfg = config();
    /** The same state in a map of its own: its render keeps no totals where the one under test looks. */
    const copy = (st: ClusterState): ClusterState => ({ ...st, services: new Map(st.services) });
    const paths = { fromTotals: 0, full: 0 };
    // 3 endpoints per Service: 180 in all; 17: 1,020, so removals and additions cross the large-cluster
    // threshold (1,000), whose comments change every Service's rules.
    for (const [per, seed] of [
      [PER, 11],
      [17, 12],
    ] as const) {
      fc.assert(
        fc.property(fc.array(fc.tuple(changeArb, fc.boolean()), { minLength: 1, maxLength: 16 }), (steps) => {
          let objects = clusterObjects({ services: N, endpointsPerService: per });
          let applied: ClusterState = buildClusterState(objects.map((obj) => ({ obj })));
          renderRestoreInput({ state: applied, config: cfg, existingServiceChains: new Set() });
          for (const [change, fresh] of steps) {
            objects = apply(objects, change, per);
            const raw = objects.map((obj) => ({ obj: fresh ? structuredClone(obj) : obj }));
            const next = buildClusterState(raw, fresh ? undefined : applied);
            const { changed, removed } = stateChange(applied, next);
            const inc = renderRestoreInput({
              state: next,
              config: cfg,
              changedServices: changed,
              removedServices: removed,
              previous: applied,
            });
            paths[inc.fromTotals ? 'fromTotals' : 'full']++;
            const where = `${change.kind} ${change.i} (${per} per Service)`;
            // The partial render that sums every Service, and the full render of the same state.
            const reference = renderRestoreInput({
              state: copy(next),
              config: cfg,
              changedServices: changed,
              previous: copy(applied),
            });
            const whole = renderRestoreInput({
              state: copy(next),
              config: cfg,
              existingServiceChains: new Set(),
            });
            assert.equal(reference.fromTotals, false);
            assert.equal(inc.restoreInput, reference.restoreInput, where);
            const { restoreInput: _a, activeServiceChains: _b, fromTotals: _c, ...incRest } = inc;
            const { restoreInput: _d, activeServiceChains: _e, fromTotals: _f, ...refRest } = reference;
            assert.deepEqual(incRest, refRest, where);
            assert.deepEqual(
              [...inc.activeServiceChains].sort(),
              [...whole.activeServiceChains].sort(),
              where,
            );
            assert.equal(inc.counts.totalNatRules, whole.counts.totalNatRules, where);
            assert.equal(inc.counts.totalFilterRules, whole.counts.totalFilterRules, where);
            assert.deepEqual(inc.noLocalEndpoints, whole.noLocalEndpoints, where);
            assert.equal(inc.largeClusterMode, whole.largeClusterMode, where);
            assert.deepEqual(inc.skipped, whole.skipped, where);
            applied = next;
          }
        }),
        { numRuns: 40, seed },
      );
    }
    // Both paths ran: most changes keep the fixed chains, some (external IPs, emptied Services, mode
    // flips) do not.
    assert.ok(paths.fromTotals > 100, JSON.stringify(paths));
    assert.ok(paths.full > 10, JSON.stringify(paths));
  });
});
