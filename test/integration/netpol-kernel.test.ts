import assert from 'node:assert/strict';
import { buildClusterState } from '../../src/model/build.js';
import type { ClusterState, IPFamily } from '../../src/model/types.js';
import { NetpolEnforcer } from '../../src/netpol/enforcer.js';
import { diffPlans } from '../../src/netpol/plan-diff.js';
import {
  ALL_PODS,
  loadScenarios,
  type Placement,
  type Scenario,
  ScenarioWorld,
} from '../support/netpol-scenarios.js';
import { useSandbox } from '../support/sandbox.js';

/**
 * The NetworkPolicy scenario table (the upstream e2e suite as data, test/fixtures/netpol) with real
 * packets: namespaces x, y, z × pods a, b, c as network namespaces on one node's bridge (bridged
 * traffic through br_netfilter, as on a cbr0/kubenet node), the policy table written by the enforcer
 * into the node's namespace, and every cell of every matrix probed with a fresh TCP connection or UDP
 * datagram between the pods. A blocked cell must fail, an allowed one must be answered by that pod.
 *
 * SCTP scenarios are not run here: the sandbox's agent speaks TCP and UDP only (the SCTP cells run
 * through evaluate() and the plans in test/unit/netpol/scenarios.test.ts; the rules are the same
 * `meta l4proto . th dport` lookups).
 */

const NODE = 'node-1';
const podName = (key: string): string => key.replace('/', '-');

function placementOf(sb: { podIP(name: string, family: IPFamily): string }, family: IPFamily): Placement {
  const ips = new Map<string, string>();
  const nodes = new Map<string, string>();
  for (const key of ALL_PODS) {
    ips.set(key, sb.podIP(podName(key), family));
    nodes.set(key, NODE);
  }
  return { ips, nodes };
}

describe('netpol in the kernel: the upstream e2e scenario table with real packets', function () {
  this.timeout(120_000);
  const env = useSandbox({
    brNetfilter: true,
    pods: ALL_PODS.map((key) => ({ name: podName(key), tcpPorts: [80, 81], udpPorts: [80, 81] })),
  });
  const scenarios = loadScenarios().filter((s) => s.servers.protocols.every((p) => p !== 'SCTP'));

  async function probeMatrix(
    s: Scenario,
    stepIndex: number,
    placement: Placement,
    probe: Scenario['steps'][number]['probes'][number],
  ): Promise<string[]> {
    const wrong: string[] = [];
    await Promise.all(
      ALL_PODS.map(async (from) => {
        for (const to of ALL_PODS) {
          const cell = probe.expect.get(from)!.get(to)!;
          if (cell === 'self') continue;
          const r = await env.sb.request(podName(from), {
            proto: probe.protocol === 'UDP' ? 'udp' : 'tcp',
            ip: placement.ips.get(to)!,
            port: probe.port,
            timeoutMs: 1500,
          });
          const allowed = r.ok && r.reply.pod === podName(to);
          if (allowed !== (cell === 'allow')) {
            wrong.push(
              `${from} -> ${to} ${probe.protocol}/${probe.port}: expected ${cell}, got ${r.ok ? `a reply from ${r.reply.pod}` : `${r.error} (${r.detail})`}`,
            );
          }
        }
      }),
    );
    return wrong.map((w) => `step ${stepIndex}: ${w}`);
  }

  async function runScenario(s: Scenario, family: IPFamily): Promise<void> {
    const placement = placementOf(env.sb, family);
    const enforcer = new NetpolEnforcer({ nodeName: NODE, families: [family], netns: env.sb.nodeNs });
    const world = new ScenarioWorld(s, placement);
    let state: ClusterState | undefined;
    const wrong: string[] = [];
    for (const [i, step] of s.steps.entries()) {
      for (const a of step.do) world.apply(a);
      const before = state ? enforcer.plan(state) : undefined;
      state = buildClusterState(
        world.objects().map((obj) => ({ obj })),
        state,
      );
      const report = await enforcer.sync(state);
      if (before && step.do.every((a) => 'labelPod' in a || 'labelNamespace' in a)) {
        // A label change reaches the kernel as set elements, never as a rewritten ruleset.
        assert.equal(diffPlans(before, enforcer.plan(state)).structural, false);
        assert.equal(report.full, false, `${s.id} step ${i}: a label change rewrote the table`);
      }
      for (const probe of step.probes) wrong.push(...(await probeMatrix(s, i, placement, probe)));
    }
    assert.deepEqual((await enforcer.compare()).lines, [], 'the kernel holds what was planned');
    assert.deepEqual(wrong, [], s.id);
  }

  for (const family of ['IPv4', 'IPv6'] as const) {
    describe(family, () => {
      for (const s of scenarios) {
        // IPv6: the whole TCP/UDP table too; the sandbox's pods are dual-stack.
        it(s.id, async () => runScenario(s, family));
      }
    });
  }
});
