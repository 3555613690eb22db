import assert from 'node:assert/strict';
import { compareTable, parseKernelTable } from '../../../src/netpol/nft-read.js';
import {
  DENY,
  elementOfKey,
  renderElementChanges,
  renderedSets,
  renderTable,
  ruleBody,
} from '../../../src/netpol/nft-render.js';
import { diffPlans } from '../../../src/netpol/plan-diff.js';
import { computePolicyPlan, elementKeys } from '../../../src/netpol/plan.js';
import { namespace, pod, policy, stateOf, type Obj } from './objects.js';

/**
 * The nftables renderer and reader, without a kernel (test/integration/netpol-kernel.test.ts loads
 * the same text into one and probes it): the table's shape, element changes for a label change, and
 * the reader agreeing with the plan on what `nft -j` prints.
 */

const world = (frontendRole: string): Obj[] => [
  namespace('default'),
  pod('default', 'db', {
    labels: { role: 'db' },
    ips: ['10.244.1.10', 'fd00::10'],
    ports: [['redis', 6379]],
  }),
  pod('default', 'fe', { labels: { role: frontendRole }, ips: ['10.244.1.11', 'fd00::11'] }),
  policy('default', 'db', {
    podSelector: { matchLabels: { role: 'db' } },
    policyTypes: ['Ingress', 'Egress'],
    ingress: [
      {
        from: [
          { podSelector: { matchLabels: { role: 'frontend' } } },
          { ipBlock: { cidr: '172.17.0.0/16' } },
        ],
        ports: [{ port: 'redis' }, { protocol: 'UDP', port: 1000, endPort: 2000 }],
      },
    ],
    egress: [{ to: [{ ipBlock: { cidr: '10.0.0.1/32' } }] }],
  }),
];

describe('netpol nftables renderer and reader', () => {
  const plan = computePolicyPlan(stateOf(world('frontend')), 'n1');

  it('one inet table replaced in one transaction: sets, direction chains ending in rejects, two base chains', () => {
    const text = renderTable(plan);
    assert.match(
      text,
      /^add table inet svcplane-netpol\ndelete table inet svcplane-netpol\ntable inet svcplane-netpol \{/,
    );
    assert.match(
      text,
      /chain forward \{\n {4}type filter hook forward priority filter - 5; policy accept;\n {4}ct state established,related accept/,
    );
    assert.match(text, /chain input \{\n {4}type filter hook input priority filter - 5;/);
    assert.match(text, /ip saddr \. ip daddr @self-v4 accept/);
    for (const chain of ['ingress-v4', 'egress-v4', 'ingress-v6', 'egress-v6']) {
      const body = new RegExp(`chain ${chain} \\{\\n([\\s\\S]*?)\\n  \\}`).exec(text)?.[1] ?? '';
      assert.ok(body.trimEnd().endsWith(DENY.at(-1)!), `${chain} ends in the reject`);
    }
    assert.match(text, /add element inet svcplane-netpol prt-[0-9a-f]+ \{ udp \. 1000-2000 \}/);
    assert.match(text, /add element inet svcplane-netpol nmd4-[0-9a-f]+ \{ 10\.244\.1\.10 \. tcp \. 6379 \}/);
  });

  it('rules match the local pod on the side of their direction; a named port on the destination', () => {
    const ingress = plan.rules.find(
      (r) => r.direction === 'ingress' && r.family === 'IPv4' && r.ports?.kind === 'named',
    )!;
    assert.match(
      ruleBody(ingress),
      /^ip daddr @tgt4-\S+ ip saddr @\S+ ip daddr \. meta l4proto \. th dport @nmd4-\S+ return comment "[0-9a-f]{16} default\/db ingress\[0\]"$/,
    );
    const egress = plan.rules.find((r) => r.direction === 'egress' && r.family === 'IPv6');
    assert.equal(egress, undefined, 'no IPv6 block in egress: no IPv6 egress rule (all denied)');
    const egress4 = plan.rules.find((r) => r.direction === 'egress' && r.family === 'IPv4')!;
    assert.match(ruleBody(egress4), /^ip saddr @tgt4-\S+ ip daddr @net4-\S+ return/);
  });

  it('a label change is element lines only, for the sets whose members changed', () => {
    const next = computePolicyPlan(stateOf(world('backend')), 'n1');
    const d = diffPlans(plan, next);
    assert.equal(d.structural, false);
    const { text } = renderElementChanges(next, d.elements);
    assert.deepEqual(
      text
        .trim()
        .split('\n')
        .map((l) => l.replace(/grp(\d)-[0-9a-f]+/, 'grp$1-…')),
      [
        'delete element inet svcplane-netpol grp4-… { 10.244.1.11 }',
        'delete element inet svcplane-netpol grp6-… { fd00::11 }',
      ],
    );
  });

  it('element keys of the plan diff turn back into nft elements', () => {
    for (const set of plan.sets.values()) {
      const rendered = renderedSets(plan).find((s) => s.name === set.name)!;
      assert.deepEqual(
        elementKeys(set).map((k) => elementOfKey(set.kind, k)),
        rendered.elements,
      );
    }
  });

  it('the reader: nft -j elements in the renderer’s words; the plan and its own table agree, drift is named', () => {
    // Elements as nft -j prints them: prefixes, concatenations with ranges, elements with counters.
    const t = { family: 'inet', table: 'svcplane-netpol' };
    const odd = parseKernelTable(
      JSON.stringify({
        nftables: [
          { table: { family: 'inet', name: 'svcplane-netpol' } },
          {
            set: {
              ...t,
              name: 's',
              elem: [
                { prefix: { addr: '10.0.0.0', len: 8 } },
                { concat: ['udp', { range: [1000, 2000] }] },
                { elem: { val: 'fd00::1', counter: {} } },
              ],
            },
          },
          // Another table's objects are not this table's.
          { set: { family: 'inet', table: 'other', name: 's2', elem: ['10.0.0.1'] } },
        ],
      }),
    );
    assert.deepEqual([...odd.sets], [['s', new Set(['10.0.0.0/8', 'udp . 1000-2000', 'fd00::1'])]]);
    // What nft -j prints for this plan, built from the rendered sets and rules.
    const items: unknown[] = [{ metainfo: {} }, { table: { family: 'inet', name: 'svcplane-netpol' } }];
    const sets = renderedSets(plan);
    for (const s of sets) {
      const elem = s.elements.map((e) =>
        e.endsWith('/32') ? e.slice(0, -3) : e.includes(' . ') ? { concat: e.split(' . ') } : e,
      );
      items.push({ set: { ...t, name: s.name, ...(elem.length > 0 ? { elem } : {}) } });
    }
    const text = renderTable(plan);
    for (const chain of ['forward', 'input', 'ingress-v4', 'egress-v4', 'ingress-v6', 'egress-v6']) {
      items.push({ chain: { ...t, name: chain } });
      const body = new RegExp(`chain ${chain} \\{\\n([\\s\\S]*?)\\n  \\}`).exec(text)![1]!;
      for (const line of body.split('\n').filter((l) => l.trim() && !l.includes('type filter hook'))) {
        const comment = /comment "([^"]+)"/.exec(line)?.[1];
        items.push({ rule: { ...t, chain, ...(comment ? { comment } : {}) } });
      }
    }
    const kernel = parseKernelTable(JSON.stringify({ nftables: items }));
    assert.deepEqual(compareTable(plan, kernel).lines, []);
    assert.deepEqual(compareTable(plan, undefined).lines, ['table inet svcplane-netpol is missing']);
    const flushed = new Map(kernel.sets);
    flushed.set('isolated-ingress-v4', new Set());
    assert.deepEqual(compareTable(plan, { ...kernel, sets: flushed }).lines, [
      'set isolated-ingress-v4: 1 element(s) missing (10.244.1.10)',
    ]);
    const chains = new Map(kernel.chains);
    chains.set('forward', { tags: [], rules: 2 });
    assert.match(
      compareTable(plan, { ...kernel, chains }).lines.join(),
      /chain forward: 2 rules, expected \d+/,
    );
  });
});
