import assert from 'node:assert/strict';
import { planIptablesModeLeftovers } from '../../../src/ipvs/leftovers.js';
import { IPVS_FILTER_CHAINS, IPVS_NAT_CHAINS } from '../../../src/ipvs/rules.js';
import { parseIptablesSave } from '../../../src/iptables/save-parse.js';

// What iptables mode leaves on a node (shape of iptables-legacy-save in UML): a Service with endpoints
// (KUBE-SVC/SEP/EXT chains), one without (filter REJECT), kubelet's KUBE-FIREWALL, a foreign chain.
const IPTABLES_MODE = `*mangle
:PREROUTING ACCEPT [0:0]
:KUBE-PROXY-CANARY - [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-EXT-ABCDEF1234567890 - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABCDEF1234567890 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-EXT-ABCDEF1234567890 -j KUBE-SVC-ABCDEF1234567890
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-NODEPORTS -d 192.0.2.1/32 -p tcp -m tcp --dport 30080 -j KUBE-EXT-ABCDEF1234567890
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-ABCDEF1234567890
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-ABCDEF1234567890 -j KUBE-SEP-AAAAAAAAAAAAAAAA
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
:MY-CHAIN - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-EXTERNAL-SERVICES -d 192.0.2.1/32 -p tcp -m tcp --dport 30090 -j REJECT --reject-with icmp-port-unreachable
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
-A MY-CHAIN -j ACCEPT
COMMIT
`;

const DECLARED = new Set([
  ...IPVS_NAT_CHAINS.map((c) => `nat/${c}`),
  ...IPVS_FILTER_CHAINS.map((c) => `filter/${c}`),
]);

describe('planIptablesModeLeftovers (iptables mode → IPVS mode)', () => {
  const plan = planIptablesModeLeftovers(parseIptablesSave(IPTABLES_MODE), DECLARED, 'IPv4');
  const filter = plan.lines.get('filter') ?? [];
  const nat = plan.lines.get('nat') ?? [];

  it('removes the filter chains that REJECT/DROP and their jumps', () => {
    for (const c of ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-NODEPORTS']) {
      assert.ok(filter.includes(`:${c} - [0:0]`), `${c} flushed`);
      assert.ok(filter.includes(`-X ${c}`), `${c} deleted`);
    }
    const deleted = filter.filter((l) => l.startsWith('-D '));
    assert.equal(deleted.length, 7, deleted.join('\n'));
    assert.ok(
      deleted.includes(
        '-D OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      ),
    );
    assert.ok(deleted.some((l) => /^-D FORWARD .*load balancer firewall.* -j KUBE-PROXY-FIREWALL$/.test(l)));
  });

  it('leaves chains IPVS mode rewrites, kubelet’s KUBE-FIREWALL, canaries and foreign chains', () => {
    const all = [...filter, ...nat].join('\n');
    assert.doesNotMatch(
      all,
      /KUBE-FIREWALL|KUBE-PROXY-CANARY|MY-CHAIN|KUBE-FORWARD|KUBE-MARK-MASQ|KUBE-POSTROUTING/,
    );
    assert.doesNotMatch(all, /-X KUBE-PROXY-FIREWALL|nat.*-X KUBE-SERVICES/);
    assert.ok(!nat.includes('-X KUBE-SERVICES') && !nat.includes(':KUBE-SERVICES - [0:0]'));
    assert.equal(plan.lines.has('mangle'), false);
  });

  it('removes nat service chains and KUBE-NODEPORTS; the nat jumps (same in both modes) stay', () => {
    for (const c of [
      'KUBE-SVC-ABCDEF1234567890',
      'KUBE-SEP-AAAAAAAAAAAAAAAA',
      'KUBE-EXT-ABCDEF1234567890',
      'KUBE-NODEPORTS',
    ]) {
      assert.ok(nat.includes(`-X ${c}`), c);
    }
    assert.equal(nat.filter((l) => l.startsWith('-D ')).length, 0);
  });

  it('keeps (flushed) a leftover chain that a foreign rule still jumps to', () => {
    const text = IPTABLES_MODE.replace('-A MY-CHAIN -j ACCEPT', '-A MY-CHAIN -j KUBE-EXTERNAL-SERVICES');
    const p = planIptablesModeLeftovers(parseIptablesSave(text), DECLARED, 'IPv4');
    const f = p.lines.get('filter') ?? [];
    assert.ok(f.includes(':KUBE-EXTERNAL-SERVICES - [0:0]'));
    assert.ok(!f.includes('-X KUBE-EXTERNAL-SERVICES'));
    assert.ok(f.includes('-X KUBE-SERVICES'));
  });

  it('finds nothing on a node that only ever ran IPVS mode', () => {
    const ipvsOnly = `*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODE-PORT - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
COMMIT
*filter
:INPUT ACCEPT [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
COMMIT
`;
    const p = planIptablesModeLeftovers(parseIptablesSave(ipvsOnly), DECLARED, 'IPv4');
    assert.equal(p.lines.size, 0);
    assert.deepEqual(p.removed, []);
  });
});
