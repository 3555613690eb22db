import assert from 'node:assert/strict';
import { hashAndTruncate, portNames, serviceOfName } from '../../../src/nftables/names.js';
import {
  masqueradeMarkOf,
  renderState,
  type NftRenderConfig,
  type ServiceRules,
} from '../../../src/nftables/render.js';
import {
  emptyModel,
  fullTransaction,
  fullTransactionLines,
  holdsAnonymousSet,
  partialTransaction,
  type WrittenModel,
} from '../../../src/nftables/transaction.js';
import { checkNftConfig } from '../../../src/nftables/render.js';
import { ep, service, state } from '../iptables/fixtures.js';
import { stateChange } from '../../../src/model/state-change.js';
import type { ClusterState } from '../../../src/model/types.js';

/** The Services a partial sync rewrites: the state change's changed and removed ones. */
const changedOf = (a: ClusterState, b: ClusterState): string[] => {
  const c = stateChange(a, b);
  return [...c.changed, ...c.removed];
};

const NODE = 'test-node';

function config(overrides: Partial<NftRenderConfig> = {}): NftRenderConfig {
  return {
    family: 'IPv4',
    node: { name: NODE, zone: '' },
    nodeIPs: ['192.168.0.2'],
    masqueradeBit: 14,
    masqueradeAll: false,
    localDetector: { mode: 'ClusterCIDR', cidr: '10.0.0.0/8' },
    nodePortAddresses: { matchAll: true },
    ...overrides,
  };
}

const svc1 = service('ns1/svc1', {
  clusterIP: '172.30.0.41',
  ports: [{ name: 'p80', port: 80, endpoints: [ep('10.180.0.1', 80, { nodeName: NODE })] }],
});

function rulesOf(rendered: Map<string, ServiceRules>, key: string): ServiceRules {
  const r = rendered.get(key);
  assert.ok(r, `${key} rendered`);
  return r;
}

describe('nftables names (kube-proxy hashAndTruncate)', () => {
  it("matches kube-proxy's proxier_test.go names", () => {
    const n = portNames('ns1', 'svc1', 'tcp', 'p80');
    assert.equal(n.cluster, 'service-ULMVA6XW-ns1/svc1/tcp/p80');
    assert.equal(n.external, 'external-ULMVA6XW-ns1/svc1/tcp/p80');
    assert.equal(n.endpoint('10.180.0.1', 80).chain, 'endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80');
    assert.equal(
      n.endpoint('10.180.0.1', 80).affinitySet,
      'affinity-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80',
    );
    assert.match(n.endpoint('fd00::1', 80).chain, /__fd00..1\/80$/, 'IPv6 colons become dots');
    assert.equal(serviceOfName(n.local), 'ns1/svc1');
    assert.equal(serviceOfName('services'), undefined);
  });

  it('truncates past 240 characters with "..."', () => {
    const long = hashAndTruncate('x'.repeat(300));
    assert.equal(long.length, 240);
    assert.ok(long.endsWith('...'));
  });

  it("formats the mark as Go's %#08x", () => {
    assert.equal(masqueradeMarkOf(14), '0x004000');
    assert.equal(masqueradeMarkOf(0), '0x000001');
    assert.equal(masqueradeMarkOf(31), '0x80000000');
  });
});

describe('nftables renderer', () => {
  it('a ClusterIP Service: cluster-ips, service-ips → service chain, numgen, endpoint chain with DNAT', () => {
    const r = rulesOf(renderState(state(svc1), config()), 'ns1/svc1');
    const n = portNames('ns1', 'svc1', 'tcp', 'p80');
    const e = n.endpoint('10.180.0.1', 80).chain;
    assert.deepEqual(
      r.elements.map((x) => [x.container, x.key, x.value]),
      [
        ['cluster-ips', '172.30.0.41', ''],
        ['service-ips', '172.30.0.41 . tcp . 80', `goto ${n.cluster}`],
      ],
    );
    assert.deepEqual([...r.chains.keys()], [e, n.cluster]);
    assert.deepEqual(r.chains.get(n.cluster), [
      'ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade',
      `numgen random mod 1 vmap { 0 : goto ${e} }`,
    ]);
    assert.deepEqual(r.chains.get(e), [
      'ip saddr 10.180.0.1 jump mark-for-masquerade',
      'meta l4proto tcp dnat to 10.180.0.1:80',
    ]);
  });

  it('no endpoints: no-endpoint-services/nodeports → goto reject-chain with the port name as comment', () => {
    const svc = service('ns/empty', {
      type: 'NodePort',
      clusterIP: '172.30.0.50',
      externalIPs: ['192.168.99.50'],
      ports: [{ name: 'p', port: 80, nodePort: 3050 }],
    });
    const r = rulesOf(renderState(state(svc), config()), 'ns/empty');
    assert.deepEqual(
      r.elements.map((x) => [x.container, x.key, x.value, x.comment]),
      [
        ['cluster-ips', '172.30.0.50', '', undefined],
        ['no-endpoint-services', '172.30.0.50 . tcp . 80', 'goto reject-chain', 'ns/empty:p'],
        ['no-endpoint-services', '192.168.99.50 . tcp . 80', 'goto reject-chain', 'ns/empty:p'],
        ['no-endpoint-nodeports', 'tcp . 3050', 'goto reject-chain', 'ns/empty:p'],
      ],
    );
    assert.equal(r.chains.size, 0);
  });

  it('eTP=Local without local endpoints: external destinations drop, the external chain short-circuits', () => {
    const svc = service('ns2/svc2', {
      type: 'LoadBalancer',
      clusterIP: '172.30.0.42',
      externalIPs: ['192.168.99.22'],
      lbIPs: ['1.2.3.4'],
      eTP: 'Local',
      healthCheckNodePort: 30000,
      ports: [
        { name: 'p80', port: 80, nodePort: 3001, endpoints: [ep('10.180.0.2', 80, { nodeName: 'other' })] },
      ],
    });
    const r = rulesOf(renderState(state(svc), config()), 'ns2/svc2');
    const n = portNames('ns2', 'svc2', 'tcp', 'p80');
    const drops = r.elements.filter((x) => x.value === 'drop').map((x) => `${x.container} ${x.key}`);
    assert.deepEqual(drops, [
      'no-endpoint-services 192.168.99.22 . tcp . 80',
      'no-endpoint-services 1.2.3.4 . tcp . 80',
      'no-endpoint-nodeports tcp . 3001',
    ]);
    assert.deepEqual(r.chains.get(n.external), [
      `ip saddr 10.0.0.0/8 goto ${n.cluster} comment "short-circuit pod traffic"`,
      'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
      `fib saddr type local goto ${n.cluster} comment "short-circuit local traffic"`,
    ]);
    assert.equal(r.noLocalExternal, 1);
    assert.ok(!r.chains.has(n.local));
  });

  it('source ranges: firewall-ips → firewall chain dropping other sources (node IP in range admits the VIP)', () => {
    const svc = service('ns5/svc5', {
      type: 'LoadBalancer',
      clusterIP: '172.30.0.45',
      lbIPs: ['5.6.7.8'],
      sourceRanges: ['203.0.113.0/25', '192.168.0.0/24'],
      affinity: { type: 'ClientIP', timeoutSeconds: 10800 },
      ports: [{ name: 'p80', port: 80, nodePort: 3002, endpoints: [ep('10.180.0.3', 80)] }],
    });
    const r = rulesOf(renderState(state(svc), config()), 'ns5/svc5');
    const n = portNames('ns5', 'svc5', 'tcp', 'p80');
    const e = n.endpoint('10.180.0.3', 80);
    assert.deepEqual(r.chains.get(n.firewall), [
      'ip saddr != { 203.0.113.0/25, 192.168.0.0/24, 5.6.7.8 } drop',
    ]);
    assert.ok(r.elements.some((x) => x.container === 'firewall-ips' && x.value === `goto ${n.firewall}`));
    assert.deepEqual([...r.affinitySets], [[e.affinitySet, 10800]]);
    assert.deepEqual(r.chains.get(n.cluster)?.slice(-2), [
      `ip saddr @${e.affinitySet} goto ${e.chain}`,
      `numgen random mod 1 vmap { 0 : goto ${e.chain} }`,
    ]);
    assert.deepEqual(r.chains.get(e.chain), [
      'ip saddr 10.180.0.3 jump mark-for-masquerade',
      `update @${e.affinitySet} { ip saddr }`,
      'meta l4proto tcp dnat to 10.180.0.3:80',
    ]);
  });

  it('IPv6: ip6 matches, bracketed DNAT, only the IPv6 frontends', () => {
    const svc = service('ns/dual', {
      clusterIPs: ['172.30.0.60', 'fd00::60'],
      ports: [{ name: '', port: 80, endpoints: [ep('10.1.0.1', 8080), ep('fd00:1::1', 8080)] }],
    });
    const r = rulesOf(
      renderState(
        state(svc),
        config({ family: 'IPv6', nodeIPs: ['fd00::2'], localDetector: { mode: 'None' } }),
      ),
      'ns/dual',
    );
    const e = portNames('ns', 'dual', 'tcp', '').endpoint('fd00:1::1', 8080).chain;
    assert.deepEqual(r.chains.get(e), [
      'ip6 saddr fd00:1::1 jump mark-for-masquerade',
      'meta l4proto tcp dnat to [fd00:1::1]:8080',
    ]);
    assert.deepEqual(
      r.elements.map((x) => x.key),
      ['fd00::60', 'fd00::60 . tcp . 80'],
    );
  });

  it('unsafe text never reaches a rule: the object is reported and left out', () => {
    const bad = service('ns/bad', {
      clusterIP: '172.30.0.70',
      externalIPs: ['1.2.3.4 } drop'],
      ports: [{ port: 80, endpoints: [ep('10.0.0.1', 80)] }],
    });
    const r = rulesOf(renderState(state(bad), config()), 'ns/bad');
    assert.ok(r.skipped.some((s) => s.includes('spec.externalIPs')));
    assert.ok(r.elements.every((x) => !x.key.includes('}')));
  });

  it('memoises per Service object: an unchanged Service renders to the same object', () => {
    const a = renderState(state(svc1), config());
    const b = renderState(state(svc1), config());
    assert.equal(a.get('ns1/svc1'), b.get('ns1/svc1'));
    const c = renderState(state(svc1), config({ masqueradeAll: true }));
    assert.notEqual(a.get('ns1/svc1'), c.get('ns1/svc1'));
  });
});

describe('nftables transactions', () => {
  const cfg = config();
  const checked = checkNftConfig(cfg);

  it("a full sync writes kube-proxy's setup, resets the maps, then every Service; stale chains are flushed", () => {
    const services = renderState(state(svc1), cfg);
    const tx = fullTransaction({
      config: cfg,
      checked,
      services,
      existingServiceChains: [
        'service-AAAAAAAA-ns/old/tcp/p',
        portNames('ns1', 'svc1', 'tcp', 'p80').cluster,
      ],
      existingAffinitySets: new Map([['affinity-AAAAAAAA-ns/old/tcp/p__1.2.3.4/80', 60]]),
      recreateBaseChains: true,
    });
    const lines = fullTransactionLines(tx);
    const text = lines.join('\n');
    assert.ok(lines[0]!.startsWith('add table ip kube-proxy { comment "rules for kube-proxy"'));
    assert.ok(
      text.includes(
        'add chain ip kube-proxy filter-prerouting\ndelete chain ip kube-proxy filter-prerouting',
      ),
    );
    assert.ok(
      text.includes('add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }'),
    );
    assert.ok(
      text.includes('add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check'),
    );
    assert.ok(text.includes('add rule ip kube-proxy masquerading mark and 0x004000 == 0 return'));
    assert.ok(
      text.includes(
        'add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports',
      ),
    );
    assert.ok(text.includes('delete set ip kube-proxy nodeport-ips'), 'matchAll: no nodeport-ips set');
    assert.ok(text.includes('flush map ip kube-proxy service-ips'));
    assert.ok(
      text.includes(
        `add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto ${portNames('ns1', 'svc1', 'tcp', 'p80').cluster} }`,
      ),
    );
    assert.deepEqual(tx.staleChains, ['service-AAAAAAAA-ns/old/tcp/p']);
    assert.ok(text.endsWith('delete set ip kube-proxy affinity-AAAAAAAA-ns/old/tcp/p__1.2.3.4/80'));
    assert.equal(tx.model.chains.get('masquerading'), 3);
    assert.equal(tx.model.chains.get('filter-output'), 2, 'two jumps');
    assert.equal(tx.model.elements.get('cluster-ips')?.size, 1);
  });

  it('a full sync writes every Service chain, then the rules holding anonymous sets, then the rest (chains whole, in order)', () => {
    // The kernel walks the whole transaction so far to bind each anonymous set: those rules go as early
    // as they can (docs/performance.md). Per Service, as before, they came after most of the input.
    const lb = service('ns2/lb', {
      type: 'LoadBalancer',
      clusterIP: '172.30.0.42',
      lbIPs: ['5.6.7.8'],
      sourceRanges: ['203.0.113.0/25'],
      affinity: { type: 'ClientIP', timeoutSeconds: 60 },
      ports: [
        { name: 'p', port: 80, nodePort: 3003, endpoints: [ep('10.180.0.7', 80), ep('10.180.0.8', 80)] },
      ],
    });
    const two = service('ns3/two', {
      clusterIP: '172.30.0.43',
      ports: [{ name: 'p', port: 81, endpoints: [ep('10.180.0.9', 81), ep('10.180.0.10', 81)] }],
    });
    const services = renderState(state(svc1, lb, two), cfg);
    const tx = fullTransaction({
      config: cfg,
      checked,
      services,
      existingServiceChains: [],
      existingAffinitySets: new Map(),
      recreateBaseChains: false,
    });
    const lines = fullTransactionLines(tx);
    const serviceChains = new Set([...services.values()].flatMap((r) => [...r.chains.keys()]));
    const at = (re: RegExp): number[] => lines.flatMap((l, i) => (re.test(l) ? [i] : []));
    const chainOf = (line: string): string => line.split(' ')[4]!;
    const serviceRules = at(/^add rule /).filter((i) => serviceChains.has(chainOf(lines[i]!)));
    const anonymousChains = new Set(
      [...services.values()].flatMap((r) =>
        [...r.chains].filter(([, rules]) => rules.some(holdsAnonymousSet)).map(([name]) => name),
      ),
    );
    assert.equal(anonymousChains.size, 4, 'three numgen vmaps and the source-range set');
    const anonymous = serviceRules.filter((i) => anonymousChains.has(chainOf(lines[i]!)));
    const lastDeclaration = Math.max(
      ...at(/^(add chain|flush chain|add set) /).filter(
        (i) => serviceChains.has(chainOf(lines[i]!)) || lines[i]!.startsWith('add set'),
      ),
    );
    assert.ok(lastDeclaration < serviceRules[0]!, 'every Service chain and affinity set before any rule');
    const firstPlain = serviceRules.find((i) => !anonymous.includes(i))!;
    assert.ok(Math.max(...anonymous) < firstPlain, lines.join('\n'));
    // Each chain's rules: together, in the rendered order.
    for (const r of services.values()) {
      for (const [chain, rules] of r.chains) {
        const mine = serviceRules.filter((i) => chainOf(lines[i]!) === chain);
        assert.deepEqual(
          mine.map((i) => lines[i]!.split(' ').slice(5).join(' ')),
          rules,
          chain,
        );
        if (mine.length > 0) assert.equal(mine.at(-1)! - mine[0]!, mine.length - 1, `${chain} contiguous`);
      }
    }
    assert.equal(holdsAnonymousSet('numgen random mod 2 vmap { 0 : goto a, 1 : goto b }'), true);
    assert.equal(holdsAnonymousSet('ip saddr != { 10.0.0.0/8 } drop'), true);
    assert.equal(holdsAnonymousSet('ip daddr 10.0.0.1 jump x comment "a { b"'), false);
    assert.equal(holdsAnonymousSet('meta l4proto tcp dnat to 10.0.0.1:80'), false);
    assert.equal(holdsAnonymousSet('update @affinity-x { ip saddr }'), false);
  });

  it('a full sync in parts: setup, whole Services in bounded groups, then the elements, then the stale chains', () => {
    // One transaction per group of Services, so that no `nft -f` grows with the cluster (the kernel's
    // cost of one is quadratic in its length: 30k Services did not fit in one). Each part only refers
    // to what an earlier part or itself created; nothing reachable changes until the elements part.
    const many = Array.from({ length: 40 }, (_, i) =>
      service(`ns/s${i}`, {
        clusterIP: `172.30.1.${i + 1}`,
        affinity: i % 7 === 0 ? { type: 'ClientIP', timeoutSeconds: 60 } : undefined,
        ports: [
          { name: 'p', port: 80, endpoints: [ep(`10.180.1.${i + 1}`, 80), ep(`10.180.2.${i + 1}`, 80)] },
        ],
      }),
    );
    const services = renderState(state(...many), cfg);
    const tx = fullTransaction({
      config: cfg,
      checked,
      services,
      existingServiceChains: ['service-AAAAAAAA-ns/old/tcp/p', 'service-BBBBBBBB-ns/older/tcp/p'],
      existingAffinitySets: new Map([['affinity-AAAAAAAA-ns/old/tcp/p__1.2.3.4/80', 60]]),
      recreateBaseChains: false,
      // Flushed by an earlier sync; the second one is no longer in the table (another agent deleted
      // the table since): deleting it would refuse the part.
      deleteChains: ['service-BBBBBBBB-ns/older/tcp/p', 'service-CCCCCCCC-ns/gone/tcp/p'],
      partLines: 50,
    });
    const parts = [...tx.parts];
    const kinds = parts.map((p) => p.kind);
    assert.equal(kinds[0], 'setup');
    assert.deepEqual(kinds.slice(-2), ['elements', 'stale']);
    const groups = parts.filter((p) => p.kind === 'services');
    assert.ok(groups.length >= 5, `${groups.length} Services parts`);
    const biggest = Math.max(
      ...[...services.values()].map(
        (r) => r.chains.size * 2 + [...r.chains.values()].flat().length + 2 * r.affinitySets.size,
      ),
    );
    for (const g of groups) assert.ok(g.lines.length < 50 + biggest, `a part of ${g.lines.length} commands`);
    // Every Service whole in one part.
    for (const r of services.values()) {
      const holding = groups.filter((g) =>
        g.lines.some((l) => [...r.chains.keys()].some((c) => l.includes(` ${c}`))),
      );
      assert.equal(holding.length, 1, r.serviceKey);
    }
    // Dependency order: a chain is created before (or in the part) any rule or element refers to it.
    const created = new Set<string>();
    for (const part of parts) {
      for (const l of part.lines) {
        const m = /^add chain ip kube-proxy (\S+)/.exec(l);
        if (m) created.add(m[1]!);
      }
      for (const l of part.lines) {
        for (const [, target] of l.matchAll(/(?:goto|jump) ([^\s,}]+)/g)) {
          assert.ok(created.has(target!), `${part.kind}: ${l} refers to ${target} before it exists`);
        }
      }
    }
    // The maps are reset in the elements part only (the verdicts keep serving until then).
    const elements = parts.find((p) => p.kind === 'elements')!;
    for (const p of parts) {
      assert.equal(
        p.lines.some((l) => /^flush (map|set) ip kube-proxy (service-ips|cluster-ips)/.test(l)),
        p === elements,
      );
    }
    assert.equal(
      elements.lines.filter((l) => l.startsWith('add element ip kube-proxy service-ips')).length,
      40,
    );
    assert.deepEqual(parts.at(-1)!.lines, [
      'flush chain ip kube-proxy service-AAAAAAAA-ns/old/tcp/p',
      'flush chain ip kube-proxy service-BBBBBBBB-ns/older/tcp/p',
      'delete set ip kube-proxy affinity-AAAAAAAA-ns/old/tcp/p__1.2.3.4/80',
      'delete chain ip kube-proxy service-BBBBBBBB-ns/older/tcp/p',
    ]);
    assert.deepEqual(tx.staleChains, ['service-AAAAAAAA-ns/old/tcp/p']);
    // The model: as the single transaction's was.
    const whole = fullTransaction({
      config: cfg,
      checked,
      services,
      existingServiceChains: [],
      existingAffinitySets: new Map(),
      recreateBaseChains: false,
      partLines: 1e9,
    });
    assert.deepEqual(
      [...whole.parts].map((p) => p.kind),
      ['setup', 'services', 'elements'],
    );
    assert.deepEqual(tx.model.elements, whole.model.elements);
    assert.equal(tx.model.chains.get('service-AAAAAAAA-ns/old/tcp/p'), 0, 'flushed, deleted later');
  });

  it('--nodeport-addresses: the nodeport-ips set holds the node addresses (never localhost)', () => {
    const c = config({ nodePortAddresses: { matchAll: false, addresses: ['192.168.0.2', '127.0.0.1'] } });
    const tx = fullTransaction({
      config: c,
      checked: checkNftConfig(c),
      services: new Map(),
      existingServiceChains: [],
      existingAffinitySets: new Map(),
      recreateBaseChains: false,
    });
    const lines = fullTransactionLines(tx);
    const text = lines.join('\n');
    assert.ok(text.includes('add element ip kube-proxy nodeport-ips { 192.168.0.2 }'));
    assert.ok(
      text.includes(
        'add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports',
      ),
    );
    assert.ok(!text.includes('delete chain'), 'base chains recreated only once per process');
  });

  it('a partial sync writes only the changed Service and the element delta', () => {
    const other = service('ns9/other', {
      clusterIP: '172.30.0.99',
      ports: [{ name: 'p', port: 80, endpoints: [ep('10.1.1.1', 80)] }],
    });
    const s0 = state(svc1, other);
    const prev = renderState(s0, cfg);
    const full = fullTransaction({
      config: cfg,
      checked,
      services: prev,
      existingServiceChains: [],
      existingAffinitySets: new Map(),
      recreateBaseChains: false,
    });
    assert.throws(() => full.model, /before every part was generated/);
    fullTransactionLines(full);
    const written: WrittenModel = full.model;
    // svc1's endpoint moves: new endpoint chain, old one stale; other is untouched.
    const svc1b = service('ns1/svc1', {
      clusterIP: '172.30.0.41',
      ports: [{ name: 'p80', port: 80, endpoints: [ep('10.180.0.9', 80)] }],
    });
    const s1 = state(svc1b, other);
    const next = renderState(s1, cfg);
    const changed = changedOf(s0, s1);
    assert.deepEqual(changed, ['ns1/svc1']);
    const tx = partialTransaction({ family: 'IPv4', checked, previous: prev, next, changed, written });
    const n = portNames('ns1', 'svc1', 'tcp', 'p80');
    const oldEp = n.endpoint('10.180.0.1', 80).chain;
    const newEp = n.endpoint('10.180.0.9', 80).chain;
    assert.deepEqual(tx.lines, [
      `add chain ip kube-proxy ${newEp}`,
      `flush chain ip kube-proxy ${newEp}`,
      `add chain ip kube-proxy ${n.cluster}`,
      `flush chain ip kube-proxy ${n.cluster}`,
      `add rule ip kube-proxy ${newEp} ip saddr 10.180.0.9 jump mark-for-masquerade`,
      `add rule ip kube-proxy ${newEp} meta l4proto tcp dnat to 10.180.0.9:80`,
      `add rule ip kube-proxy ${n.cluster} ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade`,
      `add rule ip kube-proxy ${n.cluster} numgen random mod 1 vmap { 0 : goto ${newEp} }`,
      `flush chain ip kube-proxy ${oldEp}`,
    ]);
    assert.deepEqual(tx.staleChains, [oldEp]);
    tx.apply(written);
    assert.equal(written.chains.get(newEp), 2);
    assert.equal(written.chains.get(oldEp), 0);

    // Endpoints gone: the ClusterIP element moves from service-ips to no-endpoint-services.
    const svc1c = service('ns1/svc1', { clusterIP: '172.30.0.41', ports: [{ name: 'p80', port: 80 }] });
    const s2 = state(svc1c, other);
    const last = renderState(s2, cfg);
    const tx2 = partialTransaction({
      family: 'IPv4',
      checked,
      previous: next,
      next: last,
      changed: changedOf(s1, s2),
      written,
    });
    assert.deepEqual(
      tx2.lines.filter((l) => l.includes('element')),
      [
        'delete element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 }',
        'add element ip kube-proxy no-endpoint-services { 172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain }',
      ],
    );
    // A removed Service: its elements are deleted, its chains flushed.
    const s3 = state(svc1b);
    const tx3 = partialTransaction({
      family: 'IPv4',
      checked,
      previous: next,
      next: renderState(s3, cfg),
      changed: changedOf(s1, s3),
      written,
    });
    assert.ok(tx3.lines.includes('delete element ip kube-proxy cluster-ips { 172.30.0.99 }'));
    assert.ok(
      tx3.lines.includes(`flush chain ip kube-proxy ${portNames('ns9', 'other', 'tcp', 'p').cluster}`),
    );
    // Chains flushed earlier are deleted last in the transaction, unless generated again.
    const tx4 = partialTransaction({
      family: 'IPv4',
      checked,
      previous: next,
      next,
      changed: changedOf(s1, s1),
      written,
      deleteChains: [oldEp, newEp],
    });
    assert.deepEqual(tx4.lines, [`delete chain ip kube-proxy ${oldEp}`]);
    // Nothing changed: an empty transaction.
    assert.deepEqual(
      partialTransaction({
        family: 'IPv4',
        checked,
        previous: next,
        next,
        changed: changedOf(s1, s1),
        written: emptyModel(),
      }).lines,
      [],
    );
  });

  it('an affinity timeout change deletes and re-adds the set after flushing the chains using it', () => {
    const mk = (t: number) =>
      service('ns/s', {
        clusterIP: '172.30.0.5',
        affinity: { type: 'ClientIP', timeoutSeconds: t },
        ports: [{ name: 'p', port: 80, endpoints: [ep('10.0.0.5', 80)] }],
      });
    const [s0, s1] = [state(mk(60)), state(mk(120))];
    const prev = renderState(s0, cfg);
    const next = renderState(s1, cfg);
    const set = portNames('ns', 's', 'tcp', 'p').endpoint('10.0.0.5', 80).affinitySet;
    const tx = partialTransaction({
      family: 'IPv4',
      checked,
      previous: prev,
      next,
      changed: changedOf(s0, s1),
      written: emptyModel(),
    });
    const del = tx.lines.indexOf(`delete set ip kube-proxy ${set}`);
    const add = tx.lines.indexOf(
      `add set ip kube-proxy ${set} { type ipv4_addr ; flags dynamic,timeout ; timeout 120s ; }`,
    );
    const lastFlush = Math.max(...tx.lines.map((l, i) => (l.startsWith('flush chain') ? i : -1)));
    assert.ok(lastFlush < del && del < add, tx.lines.join('\n'));
  });
});
