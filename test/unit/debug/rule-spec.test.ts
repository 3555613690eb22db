import assert from 'node:assert/strict';
import { servicePortNameFromComment } from '../../../src/iptables-rules/owners.js';
import { parseRecentList } from '../../../src/debug/recent.js';
import { canonicalRuleText, parseRuleSpec } from '../../../src/iptables-rules/rule-spec.js';
import { tokenize } from '../../../src/iptables/save-parse.js';

const canon = (line: string): string => {
  const [, chain, ...args] = tokenize(line);
  return canonicalRuleText(chain!, args);
};

describe('rule spec: parse and canonical form', () => {
  // Each pair: what svcplane/kube-proxy writes, what iptables-save (nf_tables and legacy) prints back.
  const pairs: [string, string][] = [
    [
      '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O',
      '-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O',
    ],
    ['-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000', '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000'],
    ['-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000', '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0'],
    [
      '-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN',
      '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    ],
    [
      '-A X -m comment --comment "a -> b" -m statistic --mode random --probability 0.3333333333 -j Y',
      '-A X -m comment --comment "a -> b" -m statistic --mode random --probability 0.33333333349 -j Y',
    ],
    [
      '-A X -m comment --comment a -m recent --name KUBE-SEP-A --rcheck --seconds 10800 --reap -j KUBE-SEP-A',
      '-A X -m comment --comment "a" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j KUBE-SEP-A',
    ],
    [
      '-A X -m comment --comment a -m tcp -p tcp -j DNAT --to-destination 10.0.0.1:80',
      '-A X -p tcp -m comment --comment "a" -j DNAT --to-destination 10.0.0.1:80',
    ],
    [
      // What svcplane writes in KUBE-IPVS-OUT-FILTER, and what iptables-save (legacy, in UML) printed.
      '-A KUBE-IPVS-OUT-FILTER -m comment --comment "node to load balancer IP outside its source ranges" -s 198.51.100.30 -m ipvs --vaddr 198.51.100.30 --vproto tcp --vport 80 -j DROP',
      '-A KUBE-IPVS-OUT-FILTER -s 198.51.100.30/32 -m comment --comment "node to load balancer IP outside its source ranges" -m ipvs --vaddr 198.51.100.30 --vport 80 --vproto 6 -j DROP',
    ],
    [
      '-A KUBE-SERVICES -m udp -p udp -d 10.0.0.1 --dport 53 -j REJECT',
      '-A KUBE-SERVICES -d 10.0.0.1/32 -p udp -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable',
    ],
    [
      '-A X -d fd00::0001 -j DNAT --to-destination [fd00:0::5]:80',
      '-A X -d fd00::1/128 -j DNAT --to-destination [fd00::5]:80',
    ],
    ['-A X -p tcp --destination-port 80 -j ACCEPT', '-A X -p tcp -m tcp --dport 80 -j ACCEPT'],
    // kube-proxy's counters (nfacct) carry no meaning for the verdict.
    [
      '-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP',
      '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    ],
  ];
  for (const [written, saved] of pairs) {
    it(`same meaning: ${written.slice(0, 70)}…`, () => assert.equal(canon(written), canon(saved)));
  }

  it('keeps real differences apart', () => {
    assert.notEqual(canon('-A X -s 10.0.0.0/8 -j Y'), canon('-A X ! -s 10.0.0.0/8 -j Y'));
    assert.notEqual(
      canon('-A X -j DNAT --to-destination 10.0.0.1:80'),
      canon('-A X -j DNAT --to-destination 10.0.0.1:81'),
    );
    assert.notEqual(canon('-A X -j REJECT --reject-with icmp-host-prohibited'), canon('-A X -j REJECT'));
    assert.notEqual(
      canon('-A X -m comment --comment "a b" -j Y'),
      canon('-A X -m comment --comment "a c" -j Y'),
    );
    assert.notEqual(canon('-A X -j Y'), canon('-A X -g Y'));
  });

  it('prints an iptables-save-like canonical text', () => {
    assert.equal(
      canon('-A KUBE-SEP-X -m comment --comment ns/a -s 10.0.0.2 -j KUBE-MARK-MASQ'),
      '-A KUBE-SEP-X -s 10.0.0.2/32 -m comment --comment ns/a -j KUBE-MARK-MASQ',
    );
  });

  it('parses generic matches, modules and the target; options with no module go to the protocol', () => {
    const s = parseRuleSpec(
      tokenize('! -i eth+ -p tcp --dport 80 -m comment --comment "-j X" -j DNAT --to-destination 1.2.3.4:5'),
    );
    assert.deepEqual(s.inInterface, { value: 'eth+', negated: true });
    assert.deepEqual(
      s.matches.map((m) => [m.module, m.options.map((o) => `${o.name}=${o.values.join(',')}`).join(' ')]),
      [
        ['tcp', '--dport=80'],
        ['comment', '--comment=-j X'],
      ],
    );
    assert.equal(s.target?.name, 'DNAT');
    assert.deepEqual(s.stray, []);
  });

  it('finds the ServicePortName in every kube-proxy comment, nothing in others', () => {
    const spn = 'ns1/svc1:p80';
    for (const c of [
      spn,
      `${spn} cluster IP`,
      `${spn} external IP`,
      `${spn} loadbalancer IP`,
      `${spn} has no endpoints`,
      `${spn} has no local endpoints`,
      `${spn} health check node port`,
      `${spn} traffic not accepted by KUBE-FW-XPGD46QRK7WJZT7O`,
      `${spn} -> 10.180.0.1:80`,
      `${spn} -> [fd00::1]:80`,
      `masquerade traffic for ${spn} external destinations`,
      `pod traffic for ${spn} external destinations`,
      `masquerade LOCAL traffic for ${spn} external destinations`,
      `route LOCAL traffic for ${spn} external destinations`,
      `other traffic to ${spn} will be dropped by KUBE-PROXY-FIREWALL`,
    ]) {
      assert.equal(servicePortNameFromComment(c), spn, c);
    }
    assert.equal(servicePortNameFromComment('ns/unnamed cluster IP'), 'ns/unnamed');
    for (const c of [
      'kubernetes service portals',
      'block incoming localnet connections',
      'my rule',
      undefined,
    ]) {
      assert.equal(servicePortNameFromComment(c), undefined);
    }
  });

  it('reads xt_recent lists', () => {
    const text =
      'src=10.244.0.5 ttl: 64 last_seen: 4296892 oldest_pkt: 1 4296892\nsrc=fd00:0::1 ttl: 64 last_seen: 1 oldest_pkt: 1 1\n';
    assert.deepEqual([...parseRecentList(text)], ['10.244.0.5', 'fd00::1']);
  });
});
