import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PolicyEvaluator, type Packet } from '../../../src/netpol/evaluate.js';
import { computePolicyPlan, elementKeys, type PolicyPlan, ruleKey } from '../../../src/netpol/plan.js';
import { diffPlans } from '../../../src/netpol/plan-diff.js';
import { planVerdict } from '../../../src/netpol/plan-match.js';
import { withPropertySeed } from '../../support/property.js';
import { namespace, type Obj, pod, policy, stateOf } from './objects.js';

/**
 * Random small clusters (namespaces, pods on two nodes, policies of every shape, some invalid,
 * shared and reused addresses, host-network and finished pods) and random packets: the plan of each
 * node, run as the kernel will run it, must agree with evaluate() on every packet; and a pod label
 * change must be a change of set elements only, which applied to the old plan gives the new one.
 */

const NAMESPACES = ['x', 'y', 'z'];
const V4 = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6', '10.0.1.7', '10.0.1.8'];
const V6 = ['fd00::1', 'fd00::2', 'fd00::1:3'];
const EXTERNAL = ['192.0.2.1', '10.0.9.9', '2001:db8::1'];
const PORTS = [80, 81, 82];

const labelsArb = fc.dictionary(fc.constantFrom('app', 'tier'), fc.constantFrom('a', 'b', 'c'), {
  maxKeys: 2,
});
const nsLabelsArb = fc.dictionary(fc.constantFrom('team', 'env'), fc.constantFrom('blue', 'red'), {
  maxKeys: 2,
});

const selectorArb = fc.oneof(
  fc.constant({}),
  labelsArb.map((matchLabels) => ({ matchLabels })),
  fc
    .record({
      key: fc.constantFrom('app', 'tier', 'team', 'env', 'kubernetes.io/metadata.name'),
      operator: fc.constantFrom('In', 'NotIn', 'Exists', 'DoesNotExist'),
      values: fc.subarray(['a', 'b', 'blue', 'red', 'x', 'y'], { minLength: 1, maxLength: 2 }),
    })
    .map(({ key, operator, values }) => ({
      matchExpressions: [
        operator === 'In' || operator === 'NotIn' ? { key, operator, values } : { key, operator },
      ],
    })),
);

const cidrArb = fc.constantFrom(
  '10.0.0.0/24',
  '10.0.0.0/30',
  '10.0.0.4/31',
  '10.0.0.0/8',
  'fd00::/112',
  '192.0.2.0/24',
  '0.0.0.0/0',
);
const ipBlockArb = cidrArb.chain((cidr) => {
  const excepts: Record<string, string[]> = {
    '10.0.0.0/24': ['10.0.0.2/32', '10.0.0.4/30'],
    '10.0.0.0/8': ['10.0.1.0/24', '10.0.0.3/32'],
    'fd00::/112': ['fd00::2/128'],
    '0.0.0.0/0': ['10.0.0.0/29'],
  };
  return fc.subarray(excepts[cidr] ?? []).map((except) => ({ ipBlock: { cidr, except } }));
});

const peerArb = fc.oneof(
  selectorArb.map((podSelector) => ({ podSelector })),
  selectorArb.map((namespaceSelector) => ({ namespaceSelector })),
  fc.record({ namespaceSelector: selectorArb, podSelector: selectorArb }),
  ipBlockArb,
);

const portArb = fc.oneof(
  fc.constant({}),
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP'), port: fc.constantFrom(...PORTS) }),
  fc.record({ port: fc.constant(80), endPort: fc.constantFrom(80, 81, 82) }),
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP'), port: fc.constant('web') }),
  fc.record({ port: fc.constant('web') }),
  fc.record({ protocol: fc.constant('UDP') }),
  // Invalid: the whole policy fails closed.
  fc.constant({ port: 82, endPort: 81 }),
);

const ruleArb = (peersKey: 'from' | 'to') =>
  fc.record(
    { [peersKey]: fc.array(peerArb, { maxLength: 2 }), ports: fc.array(portArb, { maxLength: 2 }) },
    { requiredKeys: [] },
  );

const policyArb = fc.record(
  {
    podSelector: selectorArb,
    policyTypes: fc.constantFrom(['Ingress'], ['Egress'], ['Ingress', 'Egress']),
    ingress: fc.array(ruleArb('from'), { maxLength: 2 }),
    egress: fc.array(ruleArb('to'), { maxLength: 2 }),
  },
  { requiredKeys: ['podSelector'] },
);

interface PodArb {
  ns: string;
  labels: Record<string, string>;
  ips: string[];
  node: string;
  web?: [number, string];
  finished: boolean;
  invalid: boolean;
}

const podArb: fc.Arbitrary<PodArb> = fc.record({
  ns: fc.constantFrom(...NAMESPACES, 'ghost'),
  labels: labelsArb,
  // Drawn from a small pool, so that addresses are sometimes shared.
  ips: fc
    .tuple(fc.constantFrom(...V4), fc.option(fc.constantFrom(...V6)))
    .map(([a, b]) => (b ? [a, b] : [a])),
  node: fc.constantFrom('n1', 'n2'),
  web: fc.option(fc.tuple(fc.constantFrom(...PORTS), fc.constantFrom('TCP', 'UDP')), { nil: undefined }),
  finished: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  invalid: fc.integer({ min: 0, max: 14 }).map((n) => n === 0),
});

const worldArb = fc.record({
  namespaces: fc.record({ x: nsLabelsArb, y: nsLabelsArb, z: nsLabelsArb }),
  pods: fc.array(podArb, { minLength: 3, maxLength: 8 }),
  policies: fc.array(fc.tuple(fc.constantFrom(...NAMESPACES), policyArb), { minLength: 1, maxLength: 4 }),
  hostPod: fc.boolean(),
});

type World = typeof worldArb extends fc.Arbitrary<infer T> ? T : never;

function objectsOf(w: World): Obj[] {
  const objs: Obj[] = NAMESPACES.map((n) => namespace(n, w.namespaces[n as 'x' | 'y' | 'z']));
  w.pods.forEach((p, i) => {
    objs.push(
      pod(p.ns, `p${i}`, {
        labels: p.invalid ? { ...p.labels, 'bad key': 'v' } : p.labels,
        ips: p.ips,
        node: p.node,
        ...(p.web ? { ports: [['web', p.web[0], p.web[1]]] } : {}),
        ...(p.finished ? { phase: 'Failed' } : {}),
      }),
    );
  });
  // A host-network pod with a pod-like label, at an address no pod has.
  if (w.hostPod)
    objs.push(pod('x', 'host', { labels: { app: 'a' }, ips: ['10.0.0.100'], hostNetwork: true }));
  w.policies.forEach(([ns, spec], i) => objs.push(policy(ns, `np${i}`, spec)));
  return objs;
}

/** Packets between the world's own addresses mostly (else few are policed), and a few others. */
const packetSeedArb = fc.record({
  v6: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
  a: fc.nat(),
  b: fc.nat(),
  protocol: fc.constantFrom('TCP', 'TCP', 'TCP', 'UDP', 'SCTP'),
  port: fc.constantFrom(...PORTS),
  fromNode: fc.integer({ min: 0, max: 15 }).map((n) => n === 0),
});
type PacketSeed = typeof packetSeedArb extends fc.Arbitrary<infer T> ? T : never;

function packetsOf(w: World, seeds: readonly PacketSeed[]): Packet[] {
  const own = [...new Set(w.pods.flatMap((p) => p.ips))];
  return seeds.map(({ v6, a, b, protocol, port, fromNode }) => {
    const inFamily = (ip: string): boolean => ip.includes(':') === v6;
    const pool = [...own.filter(inFamily), ...own.filter(inFamily), ...EXTERNAL.filter(inFamily)];
    const src = pool[a % pool.length]!;
    // Mostly two different addresses (a pod reaching itself is always allowed).
    const others = b % 8 === 0 ? pool : pool.filter((ip) => ip !== src);
    const dst = others[b % others.length] ?? src;
    return { src, dst, protocol, port, ...(fromNode ? { fromNode } : {}) };
  });
}

function agree(objects: readonly Obj[], packets: readonly Packet[]): void {
  const state = stateOf(objects);
  for (const node of ['n1', 'n2']) {
    const plan = computePolicyPlan(state, node);
    const evaluator = new PolicyEvaluator(state, { node });
    for (const packet of packets) {
      const v = evaluator.evaluate(packet);
      const p = planVerdict(plan, packet);
      assert.equal(
        p.allowed,
        v.allowed,
        `node ${node}, packet ${JSON.stringify(packet)}: evaluate says ${v.reason}; plan says egress ${p.egress}, ingress ${p.ingress}\nobjects: ${JSON.stringify(objects)}`,
      );
    }
  }
}

/** The kernel's view after applying `diff` to `before`: set name → element keys, and rule keys. */
function applied(before: PolicyPlan, after: PolicyPlan): void {
  const diff = diffPlans(before, after);
  const sets = new Map([...before.sets].map(([n, s]) => [n, new Set(elementKeys(s))]));
  for (const n of diff.setsRemoved) sets.delete(n);
  for (const s of diff.setsAdded) sets.set(s.name, new Set(elementKeys(s)));
  for (const e of diff.elements) {
    const s = sets.get(e.set)!;
    for (const k of e.removed) s.delete(k);
    for (const k of e.added) s.add(k);
  }
  const rules = new Set(before.rules.map(ruleKey));
  for (const r of diff.rulesRemoved) rules.delete(ruleKey(r));
  for (const r of diff.rulesAdded) rules.add(ruleKey(r));
  assert.deepEqual(
    [...sets].map(([n, s]) => [n, [...s].sort()]).sort(),
    [...after.sets].map(([n, s]) => [n, [...elementKeys(s)].sort()]).sort(),
  );
  assert.deepEqual([...rules].sort(), after.rules.map(ruleKey).sort());
}

describe('netpol engine: properties', () => {
  it('the plan of each node, run as the kernel will, agrees with evaluate() on every packet', function () {
    this.timeout(120_000);
    withPropertySeed('plan vs evaluate', (seed) =>
      fc.assert(
        fc.property(worldArb, fc.array(packetSeedArb, { minLength: 20, maxLength: 40 }), (w, seeds) =>
          agree(objectsOf(w), packetsOf(w, seeds)),
        ),
        { numRuns: 600, seed },
      ),
    );
  });

  it('a pod label change changes set elements only, and the diff turns the old plan into the new', function () {
    this.timeout(120_000);
    withPropertySeed('label change diff', (seed) =>
      fc.assert(
        fc.property(worldArb, fc.nat(), labelsArb, (w, which, labels) => {
          fc.pre(w.pods.length > 0);
          const i = which % w.pods.length;
          const changed = { ...w, pods: w.pods.map((p, j) => (j === i ? { ...p, labels } : p)) };
          for (const node of ['n1', 'n2']) {
            const before = computePolicyPlan(stateOf(objectsOf(w)), node);
            const after = computePolicyPlan(stateOf(objectsOf(changed)), node);
            const diff = diffPlans(before, after);
            assert.equal(diff.structural, false, JSON.stringify(diff));
            applied(before, after);
          }
        }),
        { numRuns: 300, seed },
      ),
    );
  });

  it('any two plans: the diff turns the first into the second', function () {
    this.timeout(120_000);
    withPropertySeed('any diff', (seed) =>
      fc.assert(
        fc.property(worldArb, worldArb, (a, b) => {
          applied(
            computePolicyPlan(stateOf(objectsOf(a)), 'n1'),
            computePolicyPlan(stateOf(objectsOf(b)), 'n1'),
          );
        }),
        { numRuns: 200, seed },
      ),
    );
  });
});
