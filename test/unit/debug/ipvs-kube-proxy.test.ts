import assert from 'node:assert/strict';
import { diffRulesets } from '../../../src/iptables-rules/compare.js';
import { diffIpvsState, formatIpvsDriftText, type IpvsFamilyDrift } from '../../../src/debug/ipvs-diff.js';
import { alignWithKubeProxy, detectIpvsLayout } from '../../../src/debug/ipvs-kube-proxy.js';
import { buildOwnerIndex } from '../../../src/iptables-rules/owners.js';
import { parseIptablesSave } from '../../../src/iptables/save-parse.js';
import { parseIpsetSave } from '../../../src/ipvs/ipset.js';
import { parseIpvsadmSave } from '../../../src/ipvs/ipvsadm.js';
import { planIpvs } from '../../../src/ipvs/plan.js';
import { IPVS_JUMPS, renderIpvsRules } from '../../../src/ipvs/rules.js';
import { buildClusterState } from '../../../src/model/build.js';
import { nodeContext } from '../../../src/model/selection.js';
import {
  KUBE_PROXY_IPVS_IPSETS,
  KUBE_PROXY_IPVS_IPTABLES,
  KUBE_PROXY_IPVS_IPVSADM,
  KUBE_PROXY_IPVS_NODE,
  KUBE_PROXY_IPVS_OBJECTS,
} from './kube-proxy-ipvs.js';

const STATE = buildClusterState(KUBE_PROXY_IPVS_OBJECTS);
const DESIRED = planIpvs(
  STATE,
  {
    node: nodeContext(KUBE_PROXY_IPVS_NODE.name),
    nodePortIPs: [KUBE_PROXY_IPVS_NODE.ip],
    otherLocalIPs: [KUBE_PROXY_IPVS_NODE.ip],
    scheduler: 'rr',
  },
  'IPv4',
);
const RULES = parseIptablesSave(
  renderIpvsRules(DESIRED, {
    family: 'IPv4',
    masqueradeBit: 14,
    masqueradeAll: false,
    notLocal: ['!', '-s', KUBE_PROXY_IPVS_NODE.clusterCIDR],
    randomFully: true,
  }),
);

/** What `svcplane diff --proxy-mode ipvs` computes (src/cli/diff.ts readIpvsNode), on fixture texts. */
function diffNode(iptablesSave: string, ipvsadm = KUBE_PROXY_IPVS_IPVSADM, align = true): IpvsFamilyDrift {
  const actual = parseIptablesSave(iptablesSave);
  const ipsets = parseIpsetSave(KUBE_PROXY_IPVS_IPSETS);
  const layout = align ? detectIpvsLayout(actual, ipsets, 'IPv4') : 'svcplane';
  const aligned =
    layout === 'kube-proxy'
      ? alignWithKubeProxy({ family: 'IPv4', desired: RULES, actual, sets: DESIRED.sets })
      : undefined;
  return diffIpvsState({
    family: 'IPv4',
    desired: DESIRED,
    kernel: { table: parseIpvsadmSave(ipvsadm), ipsets, boundAddresses: DESIRED.bindAddresses },
    excludeCIDRs: [],
    iptables: diffRulesets({
      family: 'IPv4',
      desired: aligned?.desired ?? RULES,
      actual: aligned?.actual ?? actual,
      owners: buildOwnerIndex(STATE),
      jumps: IPVS_JUMPS,
    }),
    layout,
    ...(aligned ? { takeover: aligned.changes } : {}),
  });
}

describe("svcplane diff --proxy-mode ipvs on kube-proxy's IPVS rules (pure, real kube-proxy layout)", () => {
  it('recognizes the layout: kube-proxy here, svcplane on its own rules', () => {
    const ipsets = parseIpsetSave(KUBE_PROXY_IPVS_IPSETS);
    assert.equal(detectIpvsLayout(parseIptablesSave(KUBE_PROXY_IPVS_IPTABLES), ipsets, 'IPv4'), 'kube-proxy');
    const own = new Map([
      ...ipsets,
      ['KUBE-IPVS-NO-ENDPOINTS', { type: 'hash:ip,port', members: new Set() }],
    ]);
    assert.equal(detectIpvsLayout(parseIptablesSave(KUBE_PROXY_IPVS_IPTABLES), own, 'IPv4'), 'svcplane');
    // An empty node (no IPVS chains) is not kube-proxy's: everything is missing, as drift.
    assert.equal(
      detectIpvsLayout(parseIptablesSave('*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n'), ipsets, 'IPv4'),
      'svcplane',
    );
  });

  it('a rule-by-rule comparison is mostly noise (comments, rules on empty sets)', () => {
    const naive = diffNode(KUBE_PROXY_IPVS_IPTABLES, KUBE_PROXY_IPVS_IPVSADM, false);
    assert.equal(naive.inSync, false);
    assert.ok(naive.iptables.summary.missingRules > 20, String(naive.iptables.summary.missingRules));
  });

  it('a converged kube-proxy node is in sync; what svcplane would change on taking over is listed apart', () => {
    const r = diffNode(KUBE_PROXY_IPVS_IPTABLES);
    const text = formatIpvsDriftText([r]);
    assert.equal(r.inSync, true, text);
    assert.deepEqual(r.groups, []);
    assert.equal(r.iptables.inSync, true);
    assert.equal(r.layout, 'kube-proxy');
    const items = r.takeover.map((c) => `${c.op} ${c.kind} ${c.where}${c.effect ? ' [effect]' : ''}`);
    assert.deepEqual(items, [
      // Rules on sets that are empty here: kube-proxy writes them once the set has a member.
      'add rule nat KUBE-LOAD-BALANCER',
      'add rule nat KUBE-NODE-PORT',
      'add rule nat KUBE-NODE-PORT',
      'add rule nat KUBE-SERVICES',
      'add rule filter KUBE-SOURCE-RANGES-FIREWALL',
      // svcplane's own: no local endpoint drops (kube-proxy forwards), no endpoints rejects (as IPVS).
      'add rule filter KUBE-IPVS-FILTER [effect]',
      'add rule filter KUBE-IPVS-FILTER',
      // kube-proxy's physdev externalIP ACCEPT.
      'remove rule nat KUBE-SERVICES',
      // eTP=Local without a local endpoint: kube-proxy uses the remote one, svcplane none.
      'remove real-server -t 192.0.2.1:30081 [effect]',
      'add ipset KUBE-IPVS-NO-ENDPOINTS',
      'add ipset KUBE-IPVS-NO-LOCAL-ENDPOINTS',
    ]);
    const inert = r.takeover.filter((c) => /^inert: ipset (\S+) is empty/.test(c.why));
    assert.deepEqual(
      inert.map((c) => /ipset (\S+)/.exec(c.why)?.[1]),
      [
        'KUBE-LOAD-BALANCER-LOCAL',
        'KUBE-NODE-PORT-LOCAL-UDP',
        'KUBE-NODE-PORT-UDP',
        'KUBE-EXTERNAL-IP-LOCAL',
        'KUBE-LOAD-BALANCER-SOURCE-IP',
      ],
    );
    // svcplane's rule as it would write it, with its comment.
    assert.match(
      r.takeover[5]?.what ?? '',
      /--comment "svcplane: Local-policy frontends without local endpoints \(drop\)"/,
    );
    assert.match(r.takeover[7]?.what ?? '', /-m physdev ! --physdev-is-in/);
    assert.equal(r.takeover[8]?.what, '10.244.1.2:8080');
    assert.match(
      text,
      /=== IPv4: written by kube-proxy: what svcplane would change on taking over \(not drift\) ===/,
    );
    assert.match(
      text,
      /IPv4: in sync: ipvs in sync; iptables in sync; written by kube-proxy: svcplane would add 9 and remove 2 item\(s\) on taking over, 2 of them changing packet handling/,
    );
  });

  it('real drift on a kube-proxy node is still drift: a deleted rule, a deleted real server', () => {
    const save = KUBE_PROXY_IPVS_IPTABLES.replace(
      '-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT\n',
      '',
    ).replace(
      '-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT\n',
      '',
    );
    assert.notEqual(save, KUBE_PROXY_IPVS_IPTABLES);
    const ipvsadm = KUBE_PROXY_IPVS_IPVSADM.replace('-a -t 10.96.0.1:80 -r 10.244.1.2:8080 -m -w 1\n', '');
    const r = diffNode(save, ipvsadm);
    assert.equal(r.inSync, false);
    assert.equal(r.layout, 'kube-proxy');
    assert.deepEqual(
      r.groups.flatMap((g) => g.items.map((i) => `${g.key} ${i.kind} ${i.realServer ?? ''}`)),
      ['ns/web:p/TCP rs-missing 10.244.1.2:8080'],
    );
    const missing = r.iptables.groups.flatMap((g) =>
      g.chains.flatMap((c) => c.changes.map((x) => `${x.op} ${x.rule}`)),
    );
    assert.deepEqual(missing, [
      // The health-check ACCEPT is kept by kube-proxy on an empty set: missing, not "inert".
      'missing -A KUBE-NODE-PORT -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT',
      'missing -A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT',
    ]);
  });
});
