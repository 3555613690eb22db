import assert from 'node:assert/strict';
import { jumpRuleArgs, jumpRules } from '../../../src/iptables-rules/jumps.js';

describe('iptables jump rules', () => {
  const rules = jumpRules('IPv4', { localhostNodePorts: true });

  it('lists kube-proxy and kubelet jumps in kube-proxy order', () => {
    assert.deepEqual(
      rules.map((r) => `${r.table} ${r.chain} -> ${r.target}`),
      [
        'filter INPUT -> KUBE-EXTERNAL-SERVICES',
        'filter FORWARD -> KUBE-EXTERNAL-SERVICES',
        'filter INPUT -> KUBE-NODEPORTS',
        'filter FORWARD -> KUBE-SERVICES',
        'filter OUTPUT -> KUBE-SERVICES',
        'filter FORWARD -> KUBE-FORWARD',
        'filter INPUT -> KUBE-PROXY-FIREWALL',
        'filter OUTPUT -> KUBE-PROXY-FIREWALL',
        'filter FORWARD -> KUBE-PROXY-FIREWALL',
        'nat OUTPUT -> KUBE-SERVICES',
        'nat PREROUTING -> KUBE-SERVICES',
        'nat POSTROUTING -> KUBE-POSTROUTING',
        'filter INPUT -> KUBE-FIREWALL',
        'filter OUTPUT -> KUBE-FIREWALL',
      ],
    );
  });

  it('builds the rule spec: extra args, comment, target', () => {
    assert.deepEqual(jumpRuleArgs(rules[0]!), [
      '-m',
      'conntrack',
      '--ctstate',
      'NEW',
      '-m',
      'comment',
      '--comment',
      'kubernetes externally-visible service portals',
      '-j',
      'KUBE-EXTERNAL-SERVICES',
    ]);
    assert.deepEqual(jumpRuleArgs(rules[2]!), [
      '-m',
      'comment',
      '--comment',
      'kubernetes health check service ports',
      '-j',
      'KUBE-NODEPORTS',
    ]);
    assert.deepEqual(jumpRuleArgs(rules[12]!), ['-j', 'KUBE-FIREWALL']);
  });

  it('prepending in list order yields kube-proxy INPUT order on a fresh node', () => {
    const input: string[] = [];
    for (const r of rules) if (r.table === 'filter' && r.chain === 'INPUT') input.unshift(r.target);
    assert.deepEqual(input, [
      'KUBE-FIREWALL',
      'KUBE-PROXY-FIREWALL',
      'KUBE-NODEPORTS',
      'KUBE-EXTERNAL-SERVICES',
    ]);
  });

  it('is the same list for IPv6 (kube-proxy ensures the kubelet jumps in both families)', () => {
    assert.deepEqual(jumpRules('IPv6', { localhostNodePorts: false }), rules);
  });
});
