import assert from 'node:assert/strict';
import type { Protocol } from '../../../src/model/types.js';
import { type Packet, PolicyEvaluator, type PolicyVerdict } from '../../../src/netpol/evaluate.js';
import { computePolicyPlan, type PlanSet, type PolicyPlan } from '../../../src/netpol/plan.js';
import { planVerdict } from '../../../src/netpol/plan-match.js';
import { namespace, type Obj, pod, policy, stateOf } from './objects.js';

/**
 * The policy engine on hand-written cases: every packet is judged by evaluate() (from the policies)
 * and by the plan of the node it concerns (as the kernel will), and both must give the expected answer.
 */

const NODE = 'n1';

interface Judge {
  readonly verdict: (p: Packet) => PolicyVerdict;
  readonly plan: PolicyPlan;
}

function judge(objects: readonly Obj[]): Judge {
  const state = stateOf(objects);
  const evaluator = new PolicyEvaluator(state, { node: NODE });
  return { verdict: (p) => evaluator.evaluate(p), plan: computePolicyPlan(state, NODE) };
}

const tcp = (src: string, dst: string, port: number, protocol: Protocol = 'TCP'): Packet => ({
  src,
  dst,
  port,
  protocol,
});

function expect(j: Judge, packet: Packet, allowed: boolean): PolicyVerdict {
  const v = j.verdict(packet);
  const what = `${packet.src} -> ${packet.dst} ${packet.protocol}/${packet.port}`;
  assert.equal(v.allowed, allowed, `evaluate: ${what}: ${v.reason}`);
  const p = planVerdict(j.plan, packet);
  assert.equal(p.allowed, allowed, `plan: ${what}: egress ${p.egress}, ingress ${p.ingress}`);
  return v;
}

const setNamed = (plan: PolicyPlan, prefix: string, description: RegExp): PlanSet => {
  const found = [...plan.sets.values()].filter(
    (s) => s.name.startsWith(prefix) && description.test(s.description),
  );
  assert.equal(
    found.length,
    1,
    `one ${prefix} set /${description.source}/: ${found.map((s) => s.description).join('; ')}`,
  );
  return found[0]!;
};

// The seeds' example: role=db pods of `default` accept TCP 6379 from 172.17.0.0/16 except
// 172.17.1.0/24, from namespaces project=myproject and from role=frontend pods, and may only reach
// 10.0.0.0/24 on TCP 5978.
const SEEDS_POLICY = policy('default', 'test-network-policy', {
  podSelector: { matchLabels: { role: 'db' } },
  policyTypes: ['Ingress', 'Egress'],
  ingress: [
    {
      from: [
        { ipBlock: { cidr: '172.17.0.0/16', except: ['172.17.1.0/24'] } },
        { namespaceSelector: { matchLabels: { project: 'myproject' } } },
        { podSelector: { matchLabels: { role: 'frontend' } } },
      ],
      ports: [{ protocol: 'TCP', port: 6379 }],
    },
  ],
  egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/24' } }], ports: [{ protocol: 'TCP', port: 5978 }] }],
});

const DB = '10.244.1.10';
const FRONTEND = '10.244.2.20';
const OTHER = '10.244.2.21';
const MYPROJECT = '10.244.2.30';
const ELSEWHERE = '10.244.2.40';

const seedsWorld = (): Obj[] => [
  namespace('default'),
  namespace('myproject', { project: 'myproject' }),
  namespace('elsewhere'),
  pod('default', 'db', { labels: { role: 'db' }, ips: [DB], ports: [['redis', 6379]] }),
  pod('default', 'frontend', { labels: { role: 'frontend' }, ips: [FRONTEND], node: 'n2' }),
  pod('default', 'other', { labels: { role: 'other' }, ips: [OTHER], node: 'n2' }),
  pod('myproject', 'app', { labels: { role: 'anything' }, ips: [MYPROJECT], node: 'n2' }),
  pod('elsewhere', 'app', { labels: { role: 'frontend' }, ips: [ELSEWHERE], node: 'n2' }),
  SEEDS_POLICY,
];

describe("netpol engine: the seeds' example", () => {
  const j = judge(seedsWorld());

  it('ingress to role=db: TCP 6379 from the ipBlock (not its except), project=myproject namespaces, role=frontend pods', () => {
    const v = expect(j, tcp('172.17.0.5', DB, 6379), true);
    assert.deepEqual(v.ingress, {
      kind: 'allowed',
      pod: 'default/db',
      by: [{ policy: 'default/test-network-policy', direction: 'ingress', rule: 0 }],
    });
    expect(j, tcp('172.17.200.1', DB, 6379), true);
    expect(j, tcp('172.17.1.5', DB, 6379), false);
    expect(j, tcp('172.18.0.5', DB, 6379), false);
    expect(j, tcp(MYPROJECT, DB, 6379), true);
    expect(j, tcp(FRONTEND, DB, 6379), true);
  });

  it('denies everything else into role=db, saying which policy isolates it', () => {
    const v = expect(j, tcp(OTHER, DB, 6379), false);
    assert.equal(v.ingress.kind, 'denied');
    assert.match(v.reason, /ingress of default\/db: DENIED, isolated by default\/test-network-policy/);
    // role=frontend in another namespace: a podSelector alone means the policy's namespace.
    expect(j, tcp(ELSEWHERE, DB, 6379), false);
    expect(j, tcp(FRONTEND, DB, 6380), false);
    expect(j, tcp(FRONTEND, DB, 6379, 'UDP'), false);
    expect(j, tcp(FRONTEND, DB, 6379, 'SCTP'), false);
  });

  it('egress of role=db: only 10.0.0.0/24 on TCP 5978', () => {
    expect(j, tcp(DB, '10.0.0.7', 5978), true);
    expect(j, tcp(DB, '10.0.0.7', 5979), false);
    expect(j, tcp(DB, '10.0.1.7', 5978), false);
    expect(j, tcp(DB, FRONTEND, 80), false);
  });

  it('pods no policy selects are not isolated; the node reaches its pods; a pod reaches itself', () => {
    expect(j, tcp(FRONTEND, OTHER, 80), true);
    expect(j, tcp('192.0.2.1', FRONTEND, 80), true);
    expect(j, { ...tcp('10.244.1.1', DB, 9999), fromNode: true }, true);
    expect(j, tcp(DB, DB, 9999), true);
  });

  it('plans sets keyed by what defines them, with exactly the members and ranges', () => {
    const { plan } = j;
    assert.deepEqual(plan.sets.get('isolated-ingress-v4')?.elements, [DB]);
    assert.deepEqual(plan.sets.get('isolated-egress-v4')?.elements, [DB]);
    assert.deepEqual(plan.sets.get('local-v4')?.elements, [DB]);
    assert.deepEqual(setNamed(plan, 'tgt4-', /role=db/).elements, [DB]);
    assert.deepEqual(setNamed(plan, 'grp4-', /pods role=frontend of namespace default/).elements, [FRONTEND]);
    assert.deepEqual(setNamed(plan, 'grp4-', /every pod of namespaces project=myproject/).elements, [
      MYPROJECT,
    ]);
    assert.deepEqual(setNamed(plan, 'net4-', /172\.17/).elements, [
      '172.17.0.0/24',
      '172.17.2.0/23',
      '172.17.4.0/22',
      '172.17.8.0/21',
      '172.17.16.0/20',
      '172.17.32.0/19',
      '172.17.64.0/18',
      '172.17.128.0/17',
    ]);
    assert.deepEqual(setNamed(plan, 'prt-', /TCP\/6379/).elements, [
      { protocol: 'TCP', first: 6379, last: 6379 },
    ]);
    // 3 ingress peers × 1 port set, 1 egress peer × 1 port set, for IPv4; IPv6 has no ipBlock peer.
    assert.equal(plan.rules.filter((r) => r.family === 'IPv4').length, 4);
    assert.equal(plan.rules.filter((r) => r.family === 'IPv6').length, 2);
    assert.deepEqual(
      plan.pods.map((p) => [p.name, p.ingress.policies, p.egress.policies]),
      [['db', ['default/test-network-policy'], ['default/test-network-policy']]],
    );
  });

  it('on a node without role=db pods: the rules exist, their peer sets stay empty', () => {
    const plan = computePolicyPlan(stateOf(seedsWorld()), 'n2');
    assert.equal(plan.rules.length, 6);
    assert.deepEqual(setNamed(plan, 'grp4-', /role=frontend/).elements, []);
    assert.deepEqual(plan.sets.get('isolated-ingress-v4')?.elements, []);
  });
});

const x = (name: string, ip: string, labels: Record<string, string> = {}, extra: object = {}): Obj =>
  pod('x', name, { labels: { pod: name, ...labels }, ips: [ip], ...extra });
const xy = (): Obj[] => [
  namespace('x'),
  namespace('y', { team: 'blue' }),
  x('a', '10.0.1.1', {}, { ports: [['serve-80-tcp', 80]] }),
  x('b', '10.0.1.2', {}, { ports: [['serve-80-tcp', 8080]] }),
  pod('y', 'a', { labels: { pod: 'a' }, ips: ['10.0.2.1'], node: 'n2', ports: [['serve-80-tcp', 81]] }),
  pod('y', 'b', { labels: { pod: 'b' }, ips: ['10.0.2.2'], node: 'n2' }),
];

describe('netpol engine: semantics', () => {
  it('an empty podSelector selects every pod of its namespace; a default deny of ingress denies all of it', () => {
    const j = judge([...xy(), policy('x', 'deny', { podSelector: {} })]);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 80), false);
    expect(j, tcp('10.0.2.1', '10.0.1.2', 80), false);
    expect(j, tcp('10.0.1.2', '10.0.1.1', 80), false);
    // Egress is not isolated by an Ingress-only policy.
    expect(j, tcp('10.0.1.1', '10.0.2.1', 80), true);
  });

  it('without policyTypes, egress rules add Egress and Ingress stays (an egress-only intent also denies ingress)', () => {
    const j = judge([
      ...xy(),
      policy('x', 'p', { podSelector: {}, egress: [{ to: [{ podSelector: {} }] }] }),
    ]);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 80), false);
    expect(j, tcp('10.0.1.1', '10.0.1.2', 80), false); // egress allowed, ingress of x/b denied
    expect(j, tcp('10.0.1.1', '10.0.2.1', 80), false); // y/a is not in namespace x
  });

  it('namespaceSelector + podSelector in one peer is AND; in two peers it is OR', () => {
    const and = judge([
      ...xy(),
      policy('x', 'and', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [
          {
            from: [
              {
                namespaceSelector: { matchLabels: { team: 'blue' } },
                podSelector: { matchLabels: { pod: 'b' } },
              },
            ],
          },
        ],
      }),
    ]);
    expect(and, tcp('10.0.2.2', '10.0.1.1', 80), true);
    expect(and, tcp('10.0.2.1', '10.0.1.1', 80), false);
    expect(and, tcp('10.0.1.2', '10.0.1.1', 80), false);
    const or = judge([
      ...xy(),
      policy('x', 'or', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [
          {
            from: [
              { namespaceSelector: { matchLabels: { team: 'blue' } } },
              { podSelector: { matchLabels: { pod: 'b' } } },
            ],
          },
        ],
      }),
    ]);
    expect(or, tcp('10.0.2.2', '10.0.1.1', 80), true);
    expect(or, tcp('10.0.2.1', '10.0.1.1', 80), true);
    expect(or, tcp('10.0.1.2', '10.0.1.1', 80), true);
    expect(or, tcp('10.9.9.9', '10.0.1.1', 80), false);
  });

  it('policies add up: each allows its own, in any order', () => {
    const p80 = policy('x', 'p80', { podSelector: {}, ingress: [{ ports: [{ port: 80 }] }] });
    const p81 = policy('x', 'p81', { podSelector: {}, ingress: [{ ports: [{ port: 81 }] }] });
    for (const objs of [
      [...xy(), p80, p81],
      [...xy(), p81, p80],
    ]) {
      const j = judge(objs);
      const v = expect(j, tcp('10.0.2.1', '10.0.1.1', 80), true);
      assert.deepEqual(v.ingress.kind === 'allowed' && v.ingress.by.map((b) => b.policy), ['x/p80']);
      expect(j, tcp('10.0.2.1', '10.0.1.1', 81), true);
      expect(j, tcp('10.0.2.1', '10.0.1.1', 82), false);
    }
  });

  it('recipes: allow-all ingress ([{}]) and allow-all egress win over a default deny', () => {
    const j = judge([
      ...xy(),
      policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }),
      policy('x', 'allow-in', { podSelector: {}, ingress: [{}] }),
    ]);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 80), true);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 80, 'UDP'), true);
    expect(j, tcp('10.0.1.1', '10.0.2.1', 80), false); // egress still denied
    const k = judge([
      ...xy(),
      policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }),
      policy('x', 'allow-out', { podSelector: {}, policyTypes: ['Egress'], egress: [{}] }),
    ]);
    expect(k, tcp('10.0.1.1', '10.0.2.1', 80), true);
    expect(k, tcp('10.0.1.1', '192.0.2.9', 443), true);
  });

  it('ports: [{}] means all TCP, not all ports; a protocol alone means all its ports', () => {
    const j = judge([...xy(), policy('x', 'p', { podSelector: {}, ingress: [{ ports: [{}] }] })]);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 1), true);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 65535), true);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 53, 'UDP'), false);
  });

  it('named ports resolve on each destination pod, ingress and egress; a non-pod destination has none', () => {
    const j = judge([
      ...xy(),
      policy('x', 'in', { podSelector: {}, ingress: [{ ports: [{ port: 'serve-80-tcp' }] }] }),
      policy('x', 'out', {
        podSelector: {},
        policyTypes: ['Egress'],
        egress: [{ ports: [{ port: 'serve-80-tcp' }] }],
      }),
    ]);
    expect(j, tcp('10.0.1.2', '10.0.1.1', 80), true); // x/a: serve-80-tcp = 80
    expect(j, tcp('10.0.1.1', '10.0.1.2', 8080), true); // x/b: serve-80-tcp = 8080
    expect(j, tcp('10.0.1.1', '10.0.1.2', 80), false);
    expect(j, tcp('10.0.1.1', '10.0.2.1', 81), true); // egress to y/a: its serve-80-tcp is 81
    expect(j, tcp('10.0.1.1', '10.0.2.1', 80), false);
    expect(j, tcp('10.0.1.1', '10.0.2.2', 80), false); // y/b has no such port
    expect(j, tcp('10.0.1.1', '192.0.2.1', 80), false);
  });

  it('endPort ranges are inclusive; numeric ports of a rule merge per protocol', () => {
    const j = judge([
      ...xy(),
      policy('x', 'p', {
        podSelector: {},
        ingress: [
          { ports: [{ port: 1000, endPort: 2000 }, { port: 2001 }, { protocol: 'UDP', port: 1500 }] },
        ],
      }),
    ]);
    for (const [port, ok] of [
      [999, false],
      [1000, true],
      [2000, true],
      [2001, true],
      [2002, false],
    ] as const) {
      expect(j, tcp('10.0.2.1', '10.0.1.1', port), ok);
    }
    expect(j, tcp('10.0.2.1', '10.0.1.1', 1500, 'UDP'), true);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 1501, 'UDP'), false);
    assert.deepEqual(setNamed(j.plan, 'prt-', /TCP\/1000-2001/).elements, [
      { protocol: 'TCP', first: 1000, last: 2001 },
      { protocol: 'UDP', first: 1500, last: 1500 },
    ]);
  });

  it('an except cuts its own ipBlock only: another peer of the rule may allow what it excepts', () => {
    const j = judge([
      ...xy(),
      policy('x', 'p', {
        podSelector: {},
        ingress: [
          {
            from: [
              { ipBlock: { cidr: '192.168.0.0/16', except: ['192.168.1.0/24'] } },
              { ipBlock: { cidr: '192.168.1.128/25' } },
            ],
          },
        ],
      }),
    ]);
    expect(j, tcp('192.168.1.5', '10.0.1.1', 80), false);
    expect(j, tcp('192.168.1.200', '10.0.1.1', 80), true);
    expect(j, tcp('192.168.2.5', '10.0.1.1', 80), true);
  });

  it('ipBlocks also match pod addresses (the e2e <podIP>/4 except <otherPodIP>/32)', () => {
    const j = judge([
      ...xy(),
      policy('x', 'p', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '10.0.1.1/4', except: ['10.0.1.2/32'] } }] }],
      }),
    ]);
    expect(j, tcp('10.0.1.1', '10.0.1.2', 80), false);
    expect(j, tcp('10.0.1.1', '10.0.2.1', 80), true);
  });

  it('SCTP is its own protocol: an SCTP allow does not allow TCP', () => {
    const j = judge([
      ...xy(),
      policy('x', 'p', { podSelector: {}, ingress: [{ ports: [{ protocol: 'SCTP', port: 80 }] }] }),
    ]);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 80, 'SCTP'), true);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 80), false);
  });

  it('IPv6 and dual-stack: a pod is matched by each of its addresses; ipBlocks are single-family', () => {
    const j = judge([
      namespace('x'),
      namespace('y'),
      pod('x', 'a', { labels: { pod: 'a' }, ips: ['10.0.1.1', 'fd00::1:1'] }),
      pod('y', 'b', { labels: { pod: 'b' }, ips: ['10.0.2.2', 'fd00::2:2'], node: 'n2' }),
      policy('x', 'p', {
        podSelector: {},
        ingress: [
          {
            from: [
              { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'y' } } },
              { ipBlock: { cidr: '2001:db8::/32' } },
            ],
          },
        ],
      }),
    ]);
    expect(j, tcp('10.0.2.2', '10.0.1.1', 80), true);
    expect(j, tcp('fd00::2:2', 'fd00::1:1', 80), true);
    expect(j, tcp('2001:db8::5', 'fd00::1:1', 80), true);
    expect(j, tcp('192.0.2.5', '10.0.1.1', 80), false);
    assert.deepEqual(j.plan.sets.get('isolated-ingress-v6')?.elements, ['fd00::1:1']);
  });

  it("host-network pods are neither selected nor peers: their address is the node's, only an ipBlock matches it", () => {
    const j = judge([
      ...xy(),
      pod('x', 'host', { labels: { pod: 'b' }, ips: ['192.168.50.1'], hostNetwork: true }),
      policy('x', 'p', {
        podSelector: {},
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }],
      }),
    ]);
    expect(j, tcp('192.168.50.1', '10.0.1.1', 80), false);
    expect(j, tcp('10.0.1.2', '10.0.1.1', 80), true);
    expect(j, tcp('10.0.1.1', '192.168.50.1', 80), true); // the host-network "pod" is not isolated
  });

  it('a finished pod gives its address up: a new pod with that address is who it is', () => {
    const j = judge([
      ...xy(),
      pod('y', 'old', { labels: { pod: 'b' }, ips: ['10.0.2.9'], node: 'n2', phase: 'Succeeded' }),
      pod('y', 'new', { labels: { pod: 'other' }, ips: ['10.0.2.9'], node: 'n2' }),
      policy('x', 'p', {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { pod: 'b' } } }] }],
      }),
    ]);
    expect(j, tcp('10.0.2.2', '10.0.1.1', 80), true);
    expect(j, tcp('10.0.2.9', '10.0.1.1', 80), false);
  });

  it('a pod whose Namespace object is unknown matches no namespaceSelector, not even {}', () => {
    const j = judge([
      ...xy(),
      pod('ghost', 'g', { labels: { pod: 'g' }, ips: ['10.0.3.3'], node: 'n2' }),
      policy('x', 'p', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] }),
    ]);
    expect(j, tcp('10.0.2.2', '10.0.1.1', 80), true);
    expect(j, tcp('10.0.3.3', '10.0.1.1', 80), false);
  });

  it('two live pods claiming one address: neither is matched by it, and it stays isolated', () => {
    const j = judge([
      ...xy(),
      pod('y', 'twin', { labels: { pod: 'b' }, ips: ['10.0.2.2'], node: 'n2' }),
      x('twin', '10.0.1.1'),
      policy('x', 'p', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{}] }),
      policy('x', 'q', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] }),
    ]);
    expect(j, tcp('10.0.2.2', '10.0.1.2', 80), false); // 10.0.2.2 is y/b's and y/twin's: no selector matches it
    expect(j, tcp('10.0.2.1', '10.0.1.2', 80), true);
    const v = expect(j, tcp('192.0.2.1', '10.0.1.1', 80), false); // x/a allows all, but x/twin claims its address
    assert.match(v.reason, /claimed by x\/a, x\/twin/);
  });
});

describe('netpol engine: invalid input fails closed', () => {
  const allowFromY = policy('x', 'allow-y', {
    podSelector: { matchLabels: { pod: 'a' } },
    ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'blue' } } }] }],
  });

  it('an invalid policy isolates the pods it selects for its types, and allows nothing', () => {
    const j = judge([
      ...xy(),
      policy('x', 'broken', {
        podSelector: { matchLabels: { pod: 'b' } },
        policyTypes: ['Ingress', 'Egress'],
        ingress: [{ ports: [{ port: 80, endPort: 79 }] }],
        egress: [{}],
      }),
    ]);
    const v = expect(j, tcp('10.0.2.1', '10.0.1.2', 80), false);
    assert.match(
      v.reason,
      /isolated by x\/broken \(invalid\).*invalid, allowing nothing until fixed: x\/broken/,
    );
    expect(j, tcp('10.0.1.2', '10.0.2.1', 80), false); // its egress: [{}] would allow all, but it is invalid
    expect(j, tcp('10.0.2.1', '10.0.1.1', 80), true); // x/a is not selected
    assert.equal(j.plan.rules.filter((r) => r.policy === 'x/broken').length, 0);
  });

  it("another policy's allow still applies next to an invalid one (union)", () => {
    const j = judge([
      ...xy(),
      allowFromY,
      policy('x', 'broken', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['11.0.0.0/8'] } }] }],
      }),
    ]);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 80), true);
    expect(j, tcp('10.0.1.2', '10.0.1.1', 80), false); // the broken policy would have allowed it
  });

  it('an invalid policy whose selector is unreadable isolates its whole namespace', () => {
    const j = judge([
      ...xy(),
      policy('x', 'broken', {
        podSelector: { matchExpressions: [{ key: 'pod', operator: 'Within', values: ['a'] }] },
        ingress: [{}],
      }),
    ]);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 80), false);
    expect(j, tcp('10.0.2.1', '10.0.1.2', 80), false);
    expect(j, tcp('10.0.1.1', '10.0.2.1', 80), true); // Ingress only
  });

  it('an invalid policy with unreadable policyTypes isolates both directions', () => {
    const j = judge([
      ...xy(),
      policy('x', 'broken', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Ingress', 'Outgress'],
      }),
    ]);
    expect(j, tcp('10.0.2.1', '10.0.1.1', 80), false);
    expect(j, tcp('10.0.1.1', '10.0.2.1', 80), false);
    expect(j, tcp('10.0.1.2', '10.0.2.1', 80), true);
  });

  it('an unreadable pod is isolated where a policy of its namespace applies, and matched by no selector', () => {
    const bad = pod('x', 'bad', { labels: { 'not a key': 'v' }, ips: ['10.0.1.9'] });
    const j = judge([
      ...xy(),
      bad,
      allowFromY,
      policy('x', 'all-in-x', { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }] }),
    ]);
    expect(j, tcp('10.0.2.1', '10.0.1.9', 80), false);
    expect(j, tcp('10.0.1.2', '10.0.1.9', 80), false);
    expect(j, tcp('10.0.1.9', '10.0.1.2', 80), false); // as a source, no podSelector matches it
    expect(j, tcp('10.0.1.9', '10.0.2.1', 80), true); // no Egress policy in x
    // Without any policy in its namespace, nothing isolates it.
    const k = judge([...xy(), bad]);
    expect(k, tcp('10.0.2.1', '10.0.1.9', 80), true);
  });
});
