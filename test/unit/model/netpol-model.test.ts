import assert from 'node:assert/strict';
import { buildClusterState, type SourceObject } from '../../../src/model/build.js';
import { formatSelector, selectorMatches } from '../../../src/model/selector.js';
import type { ClusterState } from '../../../src/model/types.js';

type Obj = Record<string, unknown>;
const build = (objs: unknown[], prev?: ClusterState): ClusterState =>
  buildClusterState(
    objs.map((obj, i): SourceObject => ({ obj, source: `t.yaml#${i}` })),
    prev,
  );
const policy = (name: string, spec: unknown, namespace = 'default'): Obj => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name, namespace },
  spec,
});
const pod = (name: string, extra: Obj = {}, namespace = 'default'): Obj => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace, labels: { app: name }, ...(extra.metadata ?? {}) },
  spec: {
    nodeName: 'n1',
    containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }],
    ...(extra.spec ?? {}),
  },
  status: { phase: 'Running', podIPs: [{ ip: '10.244.1.5' }], ...(extra.status ?? {}) },
});
/** `field: reason` of every problem of one kind. */
const problemsOf = (s: ClusterState, kind: string): string[] =>
  s.problems.filter((p) => p.object.kind === kind).map((p) => `${p.field}: ${p.reason}`);

describe('model: NetworkPolicy', () => {
  it("reads the seeds' example, defaulting protocol TCP and keeping the declared policyTypes", () => {
    const s = build([
      policy('test-network-policy', {
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
        egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/24' } }], ports: [{ port: 5978 }] }],
      }),
    ]);
    assert.deepEqual(s.problems, []);
    const np = s.networkPolicies?.get('default/test-network-policy');
    assert.ok(np);
    assert.equal(np.invalid, undefined);
    assert.deepEqual(np.policyTypes, ['Ingress', 'Egress']);
    assert.equal(formatSelector(np.podSelector!), 'role=db');
    assert.deepEqual(np.ingress[0]!.peers[0], {
      kind: 'ipBlock',
      ipBlock: { cidr: '172.17.0.0/16', family: 'IPv4', except: ['172.17.1.0/24'] },
    });
    assert.equal(np.ingress[0]!.peers.length, 3);
    assert.deepEqual(np.egress[0]!.ports, [{ protocol: 'TCP', port: 5978 }]);
  });

  it('defaults policyTypes as the API server: Ingress, plus Egress only for a non-empty egress', () => {
    const s = build([
      policy('none', { podSelector: {} }),
      policy('egress-rules', { podSelector: {}, egress: [{}] }),
      policy('egress-empty', { podSelector: {}, egress: [] }),
      policy('explicit', { podSelector: {}, policyTypes: ['Egress'], ingress: [{}] }),
      policy('no-spec', undefined),
    ]);
    const types = (n: string): readonly string[] | undefined =>
      s.networkPolicies?.get(`default/${n}`)?.policyTypes;
    assert.deepEqual(types('none'), ['Ingress']);
    assert.deepEqual(types('egress-rules'), ['Ingress', 'Egress']);
    assert.deepEqual(types('egress-empty'), ['Ingress']);
    // An explicit list wins; the ingress section of an Egress-only policy is kept but never applies.
    assert.deepEqual(types('explicit'), ['Egress']);
    // No spec at all is an empty spec: podSelector {} and a default deny of ingress.
    assert.deepEqual(types('no-spec'), ['Ingress']);
    assert.deepEqual(s.problems, []);
  });

  it('masks host bits of a cidr (the e2e <podIP>/4) and accepts legacy leading zeros', () => {
    const s = build([
      policy('p', {
        podSelector: {},
        policyTypes: ['Egress'],
        egress: [
          {
            to: [
              { ipBlock: { cidr: '10.244.1.5/4', except: ['10.244.1.6/32'] } },
              { ipBlock: { cidr: 'fd00::1/64' } },
            ],
          },
        ],
      }),
    ]);
    assert.deepEqual(s.problems, []);
    const peers = s.networkPolicies?.get('default/p')?.egress[0]?.peers;
    assert.deepEqual(peers, [
      { kind: 'ipBlock', ipBlock: { cidr: '0.0.0.0/4', family: 'IPv4', except: ['10.244.1.6/32'] } },
      { kind: 'ipBlock', ipBlock: { cidr: 'fd00::/64', family: 'IPv6', except: [] } },
    ]);
  });

  const invalidCases: [string, unknown, string][] = [
    [
      'bad matchLabels key',
      { podSelector: { matchLabels: { 'bad key': 'x' } } },
      'spec.podSelector.matchLabels["bad key"]',
    ],
    [
      'bad matchLabels value',
      { podSelector: { matchLabels: { k: 'x'.repeat(64) } } },
      'spec.podSelector.matchLabels["k"]',
    ],
    [
      'In without values',
      {
        podSelector: {},
        ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'k', operator: 'In' }] } }] }],
      },
      'spec.ingress[0].from[0].podSelector.matchExpressions[0].values',
    ],
    [
      'Exists with values',
      { podSelector: { matchExpressions: [{ key: 'k', operator: 'Exists', values: ['v'] }] } },
      'spec.podSelector.matchExpressions[0].values',
    ],
    [
      'unknown operator',
      { podSelector: { matchExpressions: [{ key: 'k', operator: 'in', values: ['v'] }] } },
      'spec.podSelector.matchExpressions[0].operator',
    ],
    [
      'bad cidr',
      { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/33' } }] }] },
      'spec.ingress[0].from[0].ipBlock.cidr',
    ],
    [
      'empty cidr',
      { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '' } }] }] },
      'spec.ingress[0].from[0].ipBlock.cidr',
    ],
    [
      'except equal to cidr',
      { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.0.0.0/8'] } }] }] },
      'spec.ingress[0].from[0].ipBlock.except[0]',
    ],
    [
      'except outside cidr',
      {
        podSelector: {},
        ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['11.0.0.0/16'] } }] }],
      },
      'spec.ingress[0].from[0].ipBlock.except[0]',
    ],
    [
      'except of the other family',
      { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['fd00::/64'] } }] }] },
      'spec.ingress[0].from[0].ipBlock.except[0]',
    ],
    ['empty peer', { podSelector: {}, ingress: [{ from: [{}] }] }, 'spec.ingress[0].from[0]'],
    [
      'ipBlock with a selector',
      { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] },
      'spec.ingress[0].from[0]',
    ],
    ['port 0', { podSelector: {}, ingress: [{ ports: [{ port: 0 }] }] }, 'spec.ingress[0].ports[0].port'],
    [
      'port 65536',
      { podSelector: {}, ingress: [{ ports: [{ port: 65536 }] }] },
      'spec.ingress[0].ports[0].port',
    ],
    [
      'numeric string port',
      { podSelector: {}, ingress: [{ ports: [{ port: '80' }] }] },
      'spec.ingress[0].ports[0].port',
    ],
    [
      'bad port name',
      { podSelector: {}, ingress: [{ ports: [{ port: 'Web_Port' }] }] },
      'spec.ingress[0].ports[0].port',
    ],
    [
      'bad protocol',
      { podSelector: {}, ingress: [{ ports: [{ protocol: 'ICMP', port: 1 }] }] },
      'spec.ingress[0].ports[0].protocol',
    ],
    [
      'endPort below port',
      { podSelector: {}, egress: [{ ports: [{ port: 100, endPort: 99 }] }] },
      'spec.egress[0].ports[0].endPort',
    ],
    [
      'endPort with a named port',
      { podSelector: {}, egress: [{ ports: [{ port: 'http', endPort: 99 }] }] },
      'spec.egress[0].ports[0].endPort',
    ],
    [
      'endPort without port',
      { podSelector: {}, egress: [{ ports: [{ endPort: 99 }] }] },
      'spec.egress[0].ports[0].endPort',
    ],
    [
      'endPort 70000',
      { podSelector: {}, egress: [{ ports: [{ port: 100, endPort: 70000 }] }] },
      'spec.egress[0].ports[0].endPort',
    ],
    ['unknown policy type', { podSelector: {}, policyTypes: ['Ingress', 'Egres'] }, 'spec.policyTypes[1]'],
    [
      'three policy types',
      { podSelector: {}, policyTypes: ['Ingress', 'Egress', 'Ingress'] },
      'spec.policyTypes',
    ],
    ['rules not a list', { podSelector: {}, ingress: { from: [] } }, 'spec.ingress'],
  ];
  for (const [what, spec, field] of invalidCases) {
    it(`keeps an invalid policy (${what}) as invalid, allowing nothing, naming the field`, () => {
      const s = build([policy('bad', spec)]);
      const np = s.networkPolicies?.get('default/bad');
      assert.ok(np, 'the invalid policy stays in the state');
      assert.ok(np.invalid?.includes(field), `${field} in ${JSON.stringify(np.invalid)}`);
      assert.deepEqual([np.ingress, np.egress], [[], []]);
      assert.ok(
        s.problems.some(
          (p) => p.object.kind === 'NetworkPolicy' && p.object.name === 'bad' && p.field === field,
        ),
        JSON.stringify(s.problems),
      );
    });
  }

  it('an invalid policy keeps what decides isolation: its selector and policy types when readable', () => {
    const s = build([
      policy('bad-port', {
        podSelector: { matchLabels: { role: 'db' } },
        policyTypes: ['Egress'],
        egress: [{ ports: [{ port: 0 }] }],
      }),
      policy('bad-selector', { podSelector: { matchLabels: { 'a b': 'c' } }, ingress: [{}] }),
      policy('bad-types', { podSelector: {}, policyTypes: ['Sideways'] }),
      policy('bad-egress', { podSelector: {}, egress: 'everything' }),
    ]);
    const get = (n: string) => s.networkPolicies!.get(`default/${n}`)!;
    assert.equal(formatSelector(get('bad-port').podSelector!), 'role=db');
    assert.deepEqual(get('bad-port').policyTypes, ['Egress']);
    // Unreadable selector: no selector, so it applies to the whole namespace.
    assert.equal(get('bad-selector').podSelector, undefined);
    assert.deepEqual(get('bad-types').policyTypes, ['Ingress', 'Egress']);
    // An egress section that cannot be read still counts as one for the default policyTypes.
    assert.deepEqual(get('bad-egress').policyTypes, ['Ingress', 'Egress']);
  });

  it('drops only a policy that cannot be placed (no name, namespace no namespace can have)', () => {
    const s = build([
      policy('', {}),
      { ...policy('p', {}), metadata: { name: 'p', namespace: 'Bad_NS' } },
      policy('ok', {}),
    ]);
    assert.deepEqual([...(s.networkPolicies?.keys() ?? [])], ['default/ok']);
    assert.deepEqual(problemsOf(s, 'NetworkPolicy').length, 2);
  });

  it('selectors: matchLabels and matchExpressions ANDed; NotIn and DoesNotExist match a missing key', () => {
    const s = build([
      policy('p', {
        podSelector: {
          matchLabels: { app: 'web' },
          matchExpressions: [
            { key: 'tier', operator: 'NotIn', values: ['db', 'cache'] },
            { key: 'debug', operator: 'DoesNotExist' },
            { key: 'app', operator: 'In', values: ['web'] },
          ],
        },
      }),
    ]);
    const sel = s.networkPolicies!.get('default/p')!.podSelector!;
    assert.equal(formatSelector(sel), 'app=web,!debug,tier notin (cache,db)');
    assert.equal(selectorMatches(sel, { app: 'web' }), true);
    assert.equal(selectorMatches(sel, { app: 'web', tier: 'front' }), true);
    assert.equal(selectorMatches(sel, { app: 'web', tier: 'db' }), false);
    assert.equal(selectorMatches(sel, { app: 'web', debug: '' }), false);
    assert.equal(selectorMatches(sel, { app: 'api' }), false);
  });
});

describe('model: Pod and Namespace', () => {
  it('reads what policies see: labels, node, hostNetwork, phase, IPs (both families), named ports', () => {
    const s = build([
      pod('a', {
        spec: {
          nodeName: 'n1',
          containers: [
            { name: 'c1', ports: [{ name: 'serve-80-tcp', containerPort: 80 }, { containerPort: 9000 }] },
            { name: 'c2', ports: [{ name: 'dns', containerPort: 53, protocol: 'UDP' }] },
          ],
        },
        status: {
          phase: 'Running',
          podIP: '10.244.1.5',
          podIPs: [{ ip: '10.244.1.5' }, { ip: 'FD00::0005' }],
        },
      }),
    ]);
    assert.deepEqual(s.problems, []);
    assert.deepEqual(s.pods?.get('default/a'), {
      namespace: 'default',
      name: 'a',
      labels: { app: 'a' },
      nodeName: 'n1',
      hostNetwork: false,
      phase: 'Running',
      ips: ['10.244.1.5', 'fd00::5'],
      namedPorts: [
        { name: 'serve-80-tcp', protocol: 'TCP', port: 80 },
        { name: 'dns', protocol: 'UDP', port: 53 },
      ],
    });
  });

  it('keeps a pod it cannot fully read, marked invalid with no labels or ports to trust', () => {
    const s = build([
      pod('bad-label', { metadata: { labels: { 'a b': 'x' } }, status: { podIPs: [{ ip: '10.244.1.11' }] } }),
      pod('bad-ip', { status: { podIPs: [{ ip: '10.244.1.300' }] } }),
      pod('loopback', { status: { podIPs: [{ ip: '127.0.0.1' }] } }),
      pod('two-v4', { status: { podIPs: [{ ip: '10.244.1.7' }, { ip: '10.244.1.8' }] } }),
      pod('dup-port', {
        spec: {
          containers: [
            {
              name: 'c',
              ports: [
                { name: 'http', containerPort: 80 },
                { name: 'http', containerPort: 81 },
              ],
            },
          ],
        },
      }),
    ]);
    for (const name of ['bad-label', 'bad-ip', 'loopback', 'two-v4', 'dup-port']) {
      const p = s.pods?.get(`default/${name}`);
      assert.ok(p?.invalid && p.invalid.length > 0, name);
      assert.deepEqual([p.labels, p.namedPorts], [{}, []], name);
    }
    // The addresses it could read are kept: its node must still enforce it.
    assert.deepEqual(s.pods?.get('default/two-v4')?.ips, ['10.244.1.7']);
    assert.equal(problemsOf(s, 'Pod').length, 5);
  });

  it('reports two live pods claiming one address; a finished pod or a host-network pod claims none', () => {
    const s = build([
      pod('a'),
      pod('b'),
      pod('done', { status: { phase: 'Succeeded', podIPs: [{ ip: '10.244.1.5' }] } }),
      pod('host', {
        spec: { hostNetwork: true },
        status: { phase: 'Running', podIPs: [{ ip: '10.244.1.5' }] },
      }),
    ]);
    assert.deepEqual(
      s.problems.map((p) => `${p.object.name} ${p.field}`),
      ['b status.podIPs[0]'],
    );
  });

  it('a Namespace always carries kubernetes.io/metadata.name = its name, as the API server sets it', () => {
    const s = build([
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'x', labels: { project: 'p' } } },
      {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: 'y', labels: { 'kubernetes.io/metadata.name': 'z' } },
      },
    ]);
    assert.deepEqual(s.namespaces?.get('x')?.labels, { project: 'p', 'kubernetes.io/metadata.name': 'x' });
    assert.deepEqual(s.namespaces?.get('y')?.labels, { 'kubernetes.io/metadata.name': 'y' });
    assert.deepEqual(problemsOf(s, 'Namespace'), [
      'metadata.labels["kubernetes.io/metadata.name"]: "z" is replaced by the namespace\'s name "y", as the API server does',
    ]);
  });

  it('an unchanged pod, namespace or policy is the very same object in the next state', () => {
    const objs = [
      pod('a'),
      policy('p', {}),
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'x' } },
    ];
    const first = build(objs);
    const second = build(structuredClone(objs), first);
    assert.equal(second.pods?.get('default/a'), first.pods?.get('default/a'));
    assert.equal(second.networkPolicies?.get('default/p'), first.networkPolicies?.get('default/p'));
    assert.equal(second.namespaces?.get('x'), first.namespaces?.get('x'));
    const third = build([pod('a', { metadata: { labels: { app: 'other' } } }), ...objs.slice(1)], second);
    assert.notEqual(third.pods?.get('default/a'), first.pods?.get('default/a'));
  });
});
