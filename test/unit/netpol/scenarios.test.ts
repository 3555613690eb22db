import assert from 'node:assert/strict';
import { buildClusterState } from '../../../src/model/build.js';
import type { ClusterState } from '../../../src/model/types.js';
import { PolicyEvaluator } from '../../../src/netpol/evaluate.js';
import { computePolicyPlan, type PolicyPlan } from '../../../src/netpol/plan.js';
import { diffPlans } from '../../../src/netpol/plan-diff.js';
import { planVerdict } from '../../../src/netpol/plan-match.js';
import {
  ALL_PODS,
  loadScenarios,
  type Placement,
  type Scenario,
  ScenarioWorld,
} from '../../support/netpol-scenarios.js';

/**
 * The scenario table (the upstream NetworkPolicy e2e suite as data) run without a kernel: every
 * cell of every matrix is judged by evaluate() on the whole cluster, and by the plans of the two
 * nodes the pods are spread over, each enforcing its own pods (egress on the client's node, ingress
 * on the server's), as the kernels of a cluster would. The real-traffic suites run the same table.
 */

const NODES = ['n1', 'n2'];

function placement(family: 'IPv4' | 'IPv6'): Placement {
  const ips = new Map<string, string>();
  const nodes = new Map<string, string>();
  ALL_PODS.forEach((pod, i) => {
    const ns = Math.floor(i / 3) + 1;
    const host = (i % 3) + 10;
    ips.set(pod, family === 'IPv4' ? `10.244.${ns}.${host}` : `fd00:10:244:${ns}::${host}`);
    nodes.set(pod, NODES[i % NODES.length]!);
  });
  return { ips, nodes };
}

const labelOnly = (s: Scenario, step: number): boolean =>
  s.steps[step]!.do.every((a) => 'labelPod' in a || 'labelNamespace' in a);

function run(s: Scenario, where: Placement): void {
  const world = new ScenarioWorld(s, where);
  let state: ClusterState | undefined;
  let plans: Map<string, PolicyPlan> | undefined;
  s.steps.forEach((step, i) => {
    for (const a of step.do) world.apply(a);
    state = buildClusterState(
      world.objects().map((obj) => ({ obj })),
      state,
    );
    if (s.upstream) assert.deepEqual(state.problems, [], `${s.id} step ${i}: upstream policies are valid`);
    const next = new Map(NODES.map((n) => [n, computePolicyPlan(state!, n)]));
    if (plans && labelOnly(s, i)) {
      for (const n of NODES) {
        const d = diffPlans(plans.get(n)!, next.get(n)!);
        assert.equal(d.structural, false, `${s.id} step ${i}: a label change is set elements only`);
      }
    }
    plans = next;
    const evaluator = new PolicyEvaluator(state);
    for (const probe of step.probes) {
      const wrong: string[] = [];
      for (const from of ALL_PODS) {
        for (const to of ALL_PODS) {
          const packet = {
            src: where.ips.get(from)!,
            dst: where.ips.get(to)!,
            protocol: probe.protocol,
            port: probe.port,
          };
          const want = probe.expect.get(from)!.get(to) !== 'block';
          const v = evaluator.evaluate(packet);
          if (v.allowed !== want) wrong.push(`evaluate ${from} -> ${to}: ${v.reason}`);
          const out = planVerdict(plans.get(where.nodes.get(from)!)!, packet).egress;
          const inn = planVerdict(plans.get(where.nodes.get(to)!)!, packet).ingress;
          if ((out !== 'denied' && inn !== 'denied') !== want) {
            wrong.push(
              `plans   ${from} -> ${to}: egress ${out} on ${where.nodes.get(from)}, ingress ${inn} on ${where.nodes.get(to)}`,
            );
          }
        }
      }
      assert.deepEqual(wrong, [], `${s.id} step ${i} ${probe.protocol}/${probe.port}`);
    }
  });
}

describe('netpol scenario table (the upstream e2e suite as data)', () => {
  const scenarios = loadScenarios();

  it('holds every reachability test of upstream network_policy.go: 42 TCP, 3 UDP, 3 SCTP', () => {
    const upstream = scenarios.filter((s) => s.upstream);
    const count = (g: string): number => upstream.filter((s) => s.id.startsWith(`${g}/`)).length;
    assert.deepEqual([count('tcp'), count('udp'), count('sctp')], [42, 3, 3]);
    assert.equal(new Set(upstream.map((s) => `${s.id.split('/')[0]} ${s.title}`)).size, 48);
  });

  for (const family of ['IPv4', 'IPv6'] as const) {
    describe(family, () => {
      for (const s of scenarios) {
        it(`${s.id}`, () => run(s, placement(family)));
      }
    });
  }
});
