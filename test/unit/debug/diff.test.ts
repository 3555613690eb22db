import assert from 'node:assert/strict';
import { diffRulesets, type FamilyDrift } from '../../../src/iptables-rules/compare.js';
import { formatDriftText } from '../../../src/debug/diff.js';
import { buildOwnerIndex } from '../../../src/iptables-rules/owners.js';
import { jumpRules } from '../../../src/iptables-rules/jumps.js';
import { portChainNames } from '../../../src/iptables/names.js';
import { mergeExtraLines, missingJumpLines } from '../../../src/iptables-rules/jump-plan.js';
import { parseIptablesSave } from '../../../src/iptables/save-parse.js';
import type { Service } from '../../../src/model/types.js';
import { ep, render, service, state } from '../iptables/fixtures.js';
import { KUBE_PROXY_SVC2, svc2 } from './kube-proxy-svc2.js';

const web = service('default/web', {
  type: 'NodePort',
  clusterIP: '10.96.0.10',
  ports: [
    { name: 'http', port: 80, nodePort: 30080, endpoints: [ep('10.0.0.2', 8080), ep('10.0.0.3', 8080)] },
  ],
});
const empty = service('default/empty', { clusterIP: '10.96.0.12', ports: [{ port: 80 }] });

/** The rendered input plus the jumps the proxier folds into a full sync: what a node holds. */
function converged(services: Service[]): string {
  const input = render(services).restoreInput;
  const declared = new Set([
    'filter/KUBE-FIREWALL',
    'filter/KUBE-SERVICES',
    'filter/KUBE-EXTERNAL-SERVICES',
    'filter/KUBE-FORWARD',
    'filter/KUBE-NODEPORTS',
    'filter/KUBE-PROXY-FIREWALL',
    'nat/KUBE-SERVICES',
    'nat/KUBE-NODEPORTS',
    'nat/KUBE-POSTROUTING',
    'nat/KUBE-MARK-MASQ',
  ]);
  // As iptables-save shows them: `-I CHAIN 1` lines become `-A CHAIN` rules.
  // As iptables-save shows them: the `-I CHAIN 1` jump lines become `-A CHAIN` rules.
  return mergeExtraLines(
    input,
    missingJumpLines(parseIptablesSave(''), jumpRules('IPv4', { localhostNodePorts: true }), declared),
  ).replace(/^-I (\S+) 1 /gm, '-A $1 ');
}

function diff(services: Service[], kernel: string): FamilyDrift {
  return diffRulesets({
    family: 'IPv4',
    desired: parseIptablesSave(render(services).restoreInput),
    actual: parseIptablesSave(kernel),
    owners: buildOwnerIndex(state(...services)),
    jumps: jumpRules('IPv4', { localhostNodePorts: true }),
  });
}

/** What iptables-save prints for the same rules: reordered options, /32, spelled-out defaults. */
function asSaved(text: string): string {
  return text
    .replace(/ -m tcp -p tcp -d (\d+\.\d+\.\d+\.\d+) --dport/g, ' -d $1/32 -p tcp -m tcp --dport')
    .replace(/--or-mark 0x0*4000/g, '--set-xmark 0x4000/0x4000')
    .replace(/--xor-mark 0x0*4000/g, '--set-xmark 0x4000/0x0')
    .replace(/0x00004000/g, '0x4000')
    .replace(/--probability 0\.5000000000/g, '--probability 0.50000000000')
    .replace(/-j REJECT$/gm, '-j REJECT --reject-with icmp-port-unreachable');
}

describe('svcplane diff (pure)', () => {
  it('reports nothing for a node holding exactly the rendered rules, however iptables-save spells them', () => {
    const kernel = converged([web, empty]);
    const saved = asSaved(kernel);
    assert.notEqual(saved, kernel, 'the saved form must actually differ');
    for (const text of [kernel, saved]) {
      const r = diff([web, empty], text);
      assert.equal(r.inSync, true, formatDriftText([r]));
      assert.equal(formatDriftText([r]), 'Summary:\n  IPv4: in sync\n');
    }
  });

  it('matches rules written by kube-proxy (ns2/svc2 reference shape, nfacct counters, --or-mark)', () => {
    const r = diff([svc2], KUBE_PROXY_SVC2);
    assert.equal(r.inSync, true, formatDriftText([r]));
  });

  it('ignores the order of different Services in shared chains, not the order inside a chain', () => {
    const kernel = converged([web, empty]).split('\n');
    const other = service('default/other', {
      clusterIP: '10.96.0.20',
      ports: [{ port: 80, endpoints: [ep('10.0.0.9', 80)] }],
    });
    // Swap the KUBE-SERVICES rules of two Services: kube-proxy writes them in random order.
    const k2 = converged([web, other]).split('\n');
    const i = k2.findIndex(
      (l) => l.includes('"default/web:http cluster IP"') && l.startsWith('-A KUBE-SERVICES'),
    );
    const j = k2.findIndex(
      (l) => l.includes('"default/other cluster IP"') && l.startsWith('-A KUBE-SERVICES'),
    );
    [k2[i], k2[j]] = [k2[j]!, k2[i]!];
    assert.equal(diff([web, other], k2.join('\n')).inSync, true);
    // Swapping the two endpoint jumps inside the SVC chain changes the probabilities: drift.
    const svc = portChainNames('default/web:http', 'tcp').svc;
    const a = kernel.findIndex((l) => l.startsWith(`-A ${svc} `) && l.includes('statistic'));
    [kernel[a], kernel[a + 1]] = [kernel[a + 1]!, kernel[a]!];
    const r = diff([web, empty], kernel.join('\n'));
    assert.equal(r.inSync, false);
    assert.deepEqual(
      r.groups.map((g) => g.servicePortName),
      ['default/web:http'],
    );
    assert.deepEqual(
      r.groups[0]?.chains.map((c) => [c.chain, c.kind]),
      [[svc, 'SVC']],
    );
  });

  it('finds a deleted rule, a changed DNAT target, an extra chain, a missing VIP and a foreign rule', () => {
    const names = portChainNames('default/web:http', 'tcp');
    const sep = names.endpointChain('10.0.0.3:8080');
    let kernel = converged([web, empty]);
    kernel = kernel
      .replace(/^-A KUBE-NODEPORTS .*--dport 30080 -j .*\n/m, '') // deleted rule (NodePort)
      .replace('--to-destination 10.0.0.3:8080', '--to-destination 10.0.0.99:8080') // changed DNAT
      .replace(
        ':KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS',
        ':KUBE-SERVICES - [0:0]\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n:KUBE-NODEPORTS',
      ) // extra chain
      .replace(/^-A KUBE-SERVICES .*"default\/empty has no endpoints".*\n/m, '') // missing VIP (REJECT)
      .replace(
        /^(-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports)/m,
        '-A KUBE-SERVICES -d 10.96.0.99 -j ACCEPT\n$1',
      ); // foreign
    const r = diff([web, empty], kernel);
    assert.equal(r.inSync, false);
    const g = (spn: string) => r.groups.find((x) => x.servicePortName === spn);

    const webChanges = g('default/web:http')?.chains.map((c) => [
      c.table,
      c.chain,
      c.changes.map((x) => x.op).join(','),
    ]);
    assert.deepEqual(webChanges, [
      ['nat', 'KUBE-NODEPORTS', 'missing'],
      ['nat', sep, 'missing,extra'],
    ]);
    const sepDrift = g('default/web:http')?.chains[1];
    assert.equal(sepDrift?.endpoint, '10.0.0.3:8080');
    assert.match(sepDrift?.patch ?? '', /^-.*--to-destination 10\.0\.0\.3:8080$/m);
    assert.match(sepDrift?.patch ?? '', /^\+.*--to-destination 10\.0\.0\.99:8080$/m);

    assert.deepEqual(
      g('default/empty')?.chains.map((c) => [c.table, c.chain, c.changes[0]?.op]),
      [['filter', 'KUBE-SERVICES', 'missing']],
    );
    const unknown = r.groups.find((x) => x.key === 'unknown');
    assert.deepEqual(
      unknown?.chains.map((c) => [c.chain, c.status]),
      [['KUBE-SVC-AAAAAAAAAAAAAAAA', 'stale']],
    );
    const node = r.groups.find((x) => x.key === 'node');
    assert.deepEqual(
      node?.chains.flatMap((c) => c.changes),
      [{ op: 'extra', rule: '-A KUBE-SERVICES -d 10.96.0.99/32 -j ACCEPT', foreign: true }],
    );
    assert.deepEqual(r.summary, {
      servicePorts: 2,
      missingRules: 3,
      extraRules: 2,
      foreignRules: 1,
      misplacedRules: 0,
      missingChains: 0,
      staleChains: 1,
      unknownChains: 0,
      missingJumps: 0,
    });
    const text = formatDriftText([r]);
    assert.match(text, /=== IPv4: Service default\/web port http 80\/TCP ===/);
    assert.match(text, /=== IPv4: Service default\/empty port 80\/TCP ===/);
    assert.match(
      text,
      /Summary:\n {2}IPv4: DRIFT: 2 service port\(s\) drifted, 3 missing rule\(s\), 2 extra rule\(s\) \(1 foreign\), 1 stale chain\(s\)\n$/,
    );
  });

  it('attributes chains of a Service gone from the state by their comments, and reports missing chains and jumps', () => {
    const kernel = converged([web, empty]);
    // The state lost web: every web rule in the kernel is stale, named by its comment.
    const r = diff([empty], kernel.replace(/^-A PREROUTING .*\n/m, ''));
    const stale = r.groups.find((g) => g.servicePortName === 'default/web:http');
    assert.equal(stale?.known, false);
    assert.match(stale?.title ?? '', /not in the current state/);
    assert.ok(stale?.chains.some((c) => c.status === 'stale' && c.chain.startsWith('KUBE-SEP-')));
    assert.deepEqual(
      r.missingJumps.map((j) => `${j.table} ${j.chain} -> ${j.target}`),
      ['nat PREROUTING -> KUBE-SERVICES'],
    );

    const noNodePorts = diff(
      [web],
      kernel
        .replace(/^:KUBE-NODEPORTS - \[0:0\]\n/gm, '')
        .replace(/^-A KUBE-NODEPORTS .*\n/gm, '')
        .replace(/^-A INPUT .* -j KUBE-NODEPORTS\n/m, '')
        .replace(/^-A KUBE-SERVICES .*-j KUBE-NODEPORTS\n/m, ''),
    );
    assert.equal(noNodePorts.summary.missingChains, 2, formatDriftText([noNodePorts]));
  });

  it('reports a rule placed after the KUBE-NODEPORTS jump', () => {
    const kernel = converged([web]).split('\n');
    const last = kernel.findIndex((l) => l.includes('NOTE: this must be the last rule'));
    const [moved] = kernel.splice(last, 1);
    const ci = kernel.findIndex(
      (l) => l.includes('"default/web:http cluster IP"') && l.startsWith('-A KUBE-SERVICES'),
    );
    kernel.splice(ci, 0, moved!);
    const r = diff([web], kernel.join('\n'));
    assert.equal(r.summary.misplacedRules, 1);
  });
});
