import assert from 'node:assert/strict';
import { diffRulesets } from '../../../src/iptables-rules/compare.js';
import { buildOwnerIndex } from '../../../src/iptables-rules/owners.js';
import { diffIpvsState, formatIpvsDriftText, type IpvsFamilyDrift } from '../../../src/debug/ipvs-diff.js';
import { explainIpvs } from '../../../src/debug/ipvs-explain.js';
import { parseIpvsadmList } from '../../../src/ipvs/ipvsadm.js';
import { parseIptablesSave } from '../../../src/iptables/save-parse.js';
import { parseIpsetSave } from '../../../src/ipvs/ipset.js';
import { parseIpvsadmSave } from '../../../src/ipvs/ipvsadm.js';
import { diffIpvs } from '../../../src/ipvs/diff.js';
import { planIpvs } from '../../../src/ipvs/plan.js';
import { IPVS_JUMPS, renderIpvsRules } from '../../../src/ipvs/rules.js';
import { buildClusterState } from '../../../src/model/build.js';
import { nodeContext } from '../../../src/model/selection.js';
import { port, slice, svc } from './objects.js';

// A NodePort Service with a local and a remote pod, and a ClusterIP Service without endpoints.
const STATE = buildClusterState([
  svc('web', { type: 'NodePort', clusterIP: '10.96.0.1', ports: port({ nodePort: 30080 }) }),
  slice('web', [
    { ip: '10.244.0.2', node: 'n1' },
    { ip: '10.244.1.2', node: 'n2' },
  ]),
  svc('empty', { clusterIP: '10.96.0.3', ports: port() }),
]);
const DESIRED = planIpvs(
  STATE,
  { node: nodeContext('n1'), nodePortIPs: ['192.0.2.1'], otherLocalIPs: ['192.0.2.1'], scheduler: 'rr' },
  'IPv4',
);

// `ipvsadm -Sn` of the converged node, written by hand.
const SAVE = [
  '-A -t 10.96.0.1:80 -s rr',
  '-a -t 10.96.0.1:80 -r 10.244.0.2:8080 -m -w 1',
  '-a -t 10.96.0.1:80 -r 10.244.1.2:8080 -m -w 1',
  '-A -t 10.96.0.3:80 -s rr',
  '-A -t 192.0.2.1:30080 -s rr',
  '-a -t 192.0.2.1:30080 -r 10.244.0.2:8080 -m -w 1',
  '-a -t 192.0.2.1:30080 -r 10.244.1.2:8080 -m -w 1',
  '',
].join('\n');

// `ipset save` of the converged node (what `ipset save` prints for the planned sets).
const IPSETS = DESIRED.sets
  .flatMap((s) => [`create ${s.name} ${s.type}`, ...[...s.members].map((m) => `add ${s.name} ${m}`)])
  .join('\n');

const RENDERED = renderIpvsRules(DESIRED, {
  family: 'IPv4',
  masqueradeBit: 14,
  masqueradeAll: false,
  randomFully: false,
});
const RULES = parseIptablesSave(RENDERED);
// The kernel of a converged node: the rendered chains plus the jumps from the built-in chains.
function withJumps(text: string): string {
  let out = text;
  for (const j of IPVS_JUMPS) {
    const rule = `-A ${j.chain} -m comment --comment "${j.comment}" ${j.extraArgs.join(' ')} -j ${j.target}`;
    const at = out.indexOf('COMMIT', out.indexOf(`*${j.table}\n`));
    out = `${out.slice(0, at)}${rule.replace(/ {2}/g, ' ')}\n${out.slice(at)}`;
  }
  return out;
}
const KERNEL_RULES = parseIptablesSave(withJumps(RENDERED));

function diff(save: string, ipsets = IPSETS, bound = ['10.96.0.1', '10.96.0.3']): IpvsFamilyDrift {
  return diffIpvsState({
    family: 'IPv4',
    desired: DESIRED,
    kernel: { table: parseIpvsadmSave(save), ipsets: parseIpsetSave(ipsets), boundAddresses: bound },
    excludeCIDRs: ['10.200.0.0/16'],
    iptables: diffRulesets({
      family: 'IPv4',
      desired: RULES,
      actual: KERNEL_RULES,
      owners: buildOwnerIndex(STATE),
      jumps: IPVS_JUMPS,
    }),
  });
}

const items = (r: IpvsFamilyDrift, group: string): string[] =>
  (r.groups.find((g) => g.key === group)?.items ?? []).map((i) => `${i.kind} ${i.detail}`);

describe('svcplane diff: IPVS mode (pure)', () => {
  it('reports nothing on a converged node', () => {
    const r = diff(SAVE);
    assert.equal(r.inSync, true, formatIpvsDriftText([r]));
    assert.deepEqual(r.groups, []);
    assert.match(formatIpvsDriftText([r]), /IPv4: in sync: ipvs in sync; iptables in sync/);
  });

  it('finds a deleted real server and a changed weight, attributed to the Service port', () => {
    const save = SAVE.replace('-a -t 10.96.0.1:80 -r 10.244.1.2:8080 -m -w 1\n', '').replace(
      '-r 10.244.0.2:8080 -m -w 1\n-a -t 192',
      '-r 10.244.0.2:8080 -m -w 1\n-a -t 192',
    );
    const weighted = save.replace(
      '-a -t 192.0.2.1:30080 -r 10.244.1.2:8080 -m -w 1',
      '-a -t 192.0.2.1:30080 -r 10.244.1.2:8080 -m -w 5',
    );
    const r = diff(weighted);
    assert.equal(r.inSync, false);
    assert.deepEqual(items(r, 'ns/web:p/TCP'), [
      'rs-missing virtual server -t 10.96.0.1:80: real server 10.244.1.2:8080 missing (weight 1)',
      'rs-weight virtual server -t 192.0.2.1:30080: real server 10.244.1.2:8080 has weight 5, want 1',
    ]);
    assert.equal(r.summary.realServers, 2);
    assert.equal(r.summary.services, 1);
  });

  it('reports weight-0 unwanted real servers as draining, not drift', () => {
    const r = diff(`${SAVE}-a -t 10.96.0.1:80 -r 10.244.0.9:8080 -m -w 0\n`);
    assert.equal(r.inSync, true);
    assert.equal(r.draining.length, 1);
    assert.equal(r.draining[0]?.owner, 'ns/web:p/TCP');
    assert.match(formatIpvsDriftText([r]), /draining \(graceful termination, not drift\)/);
    const extra = diff(`${SAVE}-a -t 10.96.0.1:80 -r 10.244.0.9:8080 -m -w 1\n`);
    assert.deepEqual(items(extra, 'ns/web:p/TCP'), [
      'rs-extra virtual server -t 10.96.0.1:80: extra real server 10.244.0.9:8080 (weight 1; set to weight 0 and drained by the next sync)',
    ]);
  });

  it('judges unwanted real servers as the daemon does: a weight-0 UDP one is drift, deleted at once', () => {
    // The two comparisons used to disagree here: the daemon deleted the UDP real server at its next
    // sync while `svcplane diff` called it "draining, not drift" and the node "in sync".
    const state = buildClusterState([
      svc('dns', {
        clusterIP: '10.96.0.53',
        ports: [{ name: 'p', protocol: 'UDP', port: 53, targetPort: 5353 }],
      }),
      {
        obj: {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
          metadata: { name: 'dns-1', namespace: 'ns', labels: { 'kubernetes.io/service-name': 'dns' } },
          addressType: 'IPv4',
          ports: [{ name: 'p', protocol: 'UDP', port: 5353 }],
          endpoints: [{ addresses: ['10.244.0.5'], conditions: { ready: true }, nodeName: 'n1' }],
        },
        source: 'dns-slice',
      },
    ]);
    const desired = planIpvs(
      state,
      { node: nodeContext('n1'), nodePortIPs: ['192.0.2.1'], otherLocalIPs: ['192.0.2.1'], scheduler: 'rr' },
      'IPv4',
    );
    const rendered = renderIpvsRules(desired, {
      family: 'IPv4',
      masqueradeBit: 14,
      masqueradeAll: false,
      randomFully: false,
    });
    const ipsets = desired.sets
      .flatMap((x) => [`create ${x.name} ${x.type}`, ...[...x.members].map((m) => `add ${x.name} ${m}`)])
      .join('\n');
    const inspect = (save: string) => {
      const table = parseIpvsadmSave(save);
      const opts = { family: 'IPv4' as const, excludeCIDRs: [], connections: new Map<string, number>() };
      return {
        repair: diffIpvs(table, desired.services, opts),
        drift: diffIpvsState({
          family: 'IPv4',
          desired,
          kernel: { table, ipsets: parseIpsetSave(ipsets), boundAddresses: ['10.96.0.53'] },
          excludeCIDRs: [],
          iptables: diffRulesets({
            family: 'IPv4',
            desired: parseIptablesSave(rendered),
            actual: parseIptablesSave(withJumps(rendered)),
            owners: buildOwnerIndex(state),
            jumps: IPVS_JUMPS,
          }),
        }),
      };
    };
    const converged = '-A -u 10.96.0.53:53 -s rr\n-a -u 10.96.0.53:53 -r 10.244.0.5:5353 -m -w 1\n';
    const clean = inspect(converged);
    assert.deepEqual(clean.repair.lines, []);
    assert.equal(clean.drift.inSync, true, formatIpvsDriftText([clean.drift]));

    const left = inspect(`${converged}-a -u 10.96.0.53:53 -r 10.244.0.9:5353 -m -w 0\n`);
    assert.deepEqual(left.repair.lines, ['-d -u 10.96.0.53:53 -r 10.244.0.9:5353']);
    assert.equal(left.repair.draining.length, 0);
    assert.equal(left.drift.inSync, false);
    assert.deepEqual(left.drift.draining, []);
    assert.deepEqual(items(left.drift, 'ns/dns:p/UDP'), [
      'rs-extra virtual server -u 10.96.0.53:53: extra real server 10.244.0.9:5353 (weight 0; deleted by the next sync)',
    ]);
  });

  it('finds extra and changed virtual servers; excluded CIDRs and the other family are not ours', () => {
    const r = diff(
      SAVE.replace('-A -t 10.96.0.3:80 -s rr', '-A -t 10.96.0.3:80 -s wrr -p 60') +
        '-A -t 10.96.0.1:443 -s rr\n-A -t 10.99.0.9:80 -s rr\n-A -t 10.200.0.1:80 -s rr\n-A -t [fd00::1]:80 -s rr\n',
    );
    assert.deepEqual(items(r, 'ns/empty/TCP'), []);
    assert.deepEqual(items(r, 'ns/empty:p/TCP'), [
      'vs-attributes virtual server -t 10.96.0.3:80: kernel has -s wrr -p 60, want -s rr',
    ]);
    // Same address as web's ClusterIP, unknown port: the Service, port unknown.
    assert.deepEqual(items(r, 'ns/web:p/TCP'), []);
    assert.deepEqual(items(r, 'ns/web'), [
      'vs-extra extra virtual server -t 10.96.0.1:443 (-s rr, 0 real server(s))',
    ]);
    assert.match(formatIpvsDriftText([r]), /=== IPv4: Service ns\/web \(port unknown\) ===/);
    assert.deepEqual(items(r, 'unknown'), [
      'vs-extra extra virtual server -t 10.99.0.9:80 (-s rr, 0 real server(s))',
    ]);
    assert.equal(r.summary.virtualServers, 3);
  });

  it('finds a removed kube-ipvs0 address and ipset members, attributed to their Service', () => {
    const sets = IPSETS.replace('add KUBE-LOOP-BACK 10.244.0.2,tcp:8080,10.244.0.2\n', '')
      .replace('add KUBE-NODE-PORT-TCP 30080', '')
      .concat('\nadd KUBE-CLUSTER-IP 10.96.0.7,tcp:80\n');
    const r = diff(SAVE, sets, ['10.96.0.1', '10.96.0.77']);
    assert.deepEqual(items(r, 'ns/empty:p/TCP'), [
      'address-missing address 10.96.0.3 missing from kube-ipvs0',
    ]);
    assert.deepEqual(items(r, 'ns/web:p/TCP'), [
      'member-missing ipset KUBE-LOOP-BACK: member 10.244.0.2,tcp:8080,10.244.0.2 missing',
      'member-missing ipset KUBE-NODE-PORT-TCP: member 30080 missing',
    ]);
    assert.deepEqual(items(r, 'unknown'), [
      'member-extra ipset KUBE-CLUSTER-IP: extra member 10.96.0.7,tcp:80',
    ]);
    assert.deepEqual(items(r, 'node'), ['address-extra extra address 10.96.0.77 on kube-ipvs0']);
    assert.equal(r.summary.setMembers, 3);
    assert.equal(r.summary.addresses, 2);
    const text = formatIpvsDriftText([r]);
    assert.match(text, /=== IPv4: Service port ns\/web:p \(TCP\) ===\n {2}- ipset KUBE-LOOP-BACK/);
    assert.match(text, /IPv4: DRIFT: ipvs DRIFT: 2 Service\(s\) drifted/);
  });

  it('explain: connection counters, ipset entries and warnings of one Service', () => {
    const listing = [
      'IP Virtual Server version 1.2.1 (size=4096)',
      'Prot LocalAddress:Port Scheduler Flags',
      '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn',
      'TCP  10.96.0.1:80 rr',
      '  -> 10.244.0.2:8080              Masq    1      3          7',
      '  -> 10.244.1.2:8080              Masq    1      0          2',
      'TCP  10.96.0.3:80 rr',
      '',
    ].join('\n');
    assert.deepEqual(parseIpvsadmList(listing).get('-t 10.96.0.1:80|10.244.0.2:8080'), {
      active: 3,
      inactive: 7,
    });
    const save = SAVE.replace(
      '-a -t 192.0.2.1:30080 -r 10.244.1.2:8080 -m -w 1',
      '-a -t 192.0.2.1:30080 -r 10.244.1.2:8080 -m -w 0',
    );
    const kernel = {
      table: parseIpvsadmSave(save),
      ipsets: parseIpsetSave(IPSETS),
      boundAddresses: ['10.96.0.1', '10.96.0.3'],
    };
    const drift = diff(save);
    const web = explainIpvs({
      key: 'ns/web',
      families: [{ family: 'IPv4', desired: DESIRED, kernel, listing, drift }],
    });
    const vs = web.families[0]?.virtualServers ?? [];
    assert.deepEqual(
      vs.map((v) => v.virtualServer),
      ['-t 10.96.0.1:80', '-t 192.0.2.1:30080'],
    );
    assert.deepEqual(vs[0]?.reals[0], {
      realServer: '10.244.0.2:8080',
      status: 'ok',
      weight: 1,
      wantWeight: 1,
      active: 3,
      inactive: 7,
    });
    assert.equal(vs[1]?.reals[1]?.status, 'weight');
    assert.ok(
      web.families[0]?.ipsets.some(
        (e) => e.set === 'KUBE-NODE-PORT-TCP' && e.member === '30080' && e.present,
      ),
    );
    assert.deepEqual(web.warnings, [
      'IPv4: drift: virtual server -t 192.0.2.1:30080: real server 10.244.1.2:8080 has weight 0, want 1',
    ]);
    const empty = explainIpvs({
      key: 'ns/empty',
      families: [{ family: 'IPv4', desired: DESIRED, kernel, listing, drift }],
    });
    assert.deepEqual(empty.warnings, ['IPv4: 10.96.0.3,tcp:80: no endpoints (traffic is rejected)']);
  });
});
