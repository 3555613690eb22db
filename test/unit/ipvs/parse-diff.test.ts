import assert from 'node:assert/strict';
import { diffIpvs } from '../../../src/ipvs/diff.js';
import { diffIpsets, normalizeMember, parseIpsetSave, setName } from '../../../src/ipvs/ipset.js';
import { parseIpvsadmConnections, parseIpvsadmSave } from '../../../src/ipvs/ipvsadm.js';
import type { PlannedService } from '../../../src/ipvs/plan.js';
import { vsKey, type VirtualServer } from '../../../src/ipvs/types.js';

// Real `ipvsadm -Sn` / `-Ln` / `ipset save` output, captured in the UML kernel (ipvsadm 1.31, ipset 7.17).
const SAVE = `-A -t 10.96.0.1:80 -s mh -b mh-port
-A -t 10.96.0.2:80 -s rr -p 10800
-a -t 10.96.0.2:80 -r 10.244.0.2:8080 -m -w 0
-A --sctp-service 10.96.0.3:80 -s rr
-A -u [fd00::1]:53 -s rr
-a -u [fd00::1]:53 -r [fd00:10:244::2]:5353 -m -w 1
`;
const LIST = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:80 mh (mh-port)
TCP  10.96.0.2:80 rr persistent 10800
  -> 10.244.0.2:8080              Masq    0      1          2         
SCTP 10.96.0.3:80 rr
UDP  [fd00::1]:53 rr
  -> [fd00:10:244::2]:5353        Masq    1      0          0         
`;

describe('ipvsadm parsers', () => {
  it('parses -Sn: services, flags, persistence, real servers, IPv6 and SCTP', () => {
    const t = parseIpvsadmSave(SAVE);
    assert.equal(t.size, 4);
    assert.deepEqual(t.get('-t 10.96.0.1:80')?.vs.schedFlags, ['mh-port']);
    assert.equal(t.get('-t 10.96.0.2:80')?.vs.persistence, 10800);
    assert.equal(t.get('-t 10.96.0.2:80')?.reals.get('10.244.0.2:8080')?.weight, 0);
    assert.equal(t.get('--sctp-service 10.96.0.3:80')?.vs.protocol, 'SCTP');
    assert.equal(t.get('-u [fd00::1]:53')?.reals.get('[fd00:10:244::2]:5353')?.port, 5353);
  });

  it('rejects garbage with the line number', () => {
    assert.throws(() => parseIpvsadmSave('-A -t nonsense -s rr\n'), /line 1/);
  });

  it('parses -Ln connection counts (active + inactive)', () => {
    const c = parseIpvsadmConnections(LIST);
    assert.equal(c.get('-t 10.96.0.2:80|10.244.0.2:8080'), 3);
    assert.equal(c.get('-u [fd00::1]:53|[fd00:10:244::2]:5353'), 0);
  });
});

describe('ipset save parser and restore diff', () => {
  const SAVED = `create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x0636e582
add KUBE-CLUSTER-IP 10.96.0.1,tcp:80
add KUBE-CLUSTER-IP 10.96.0.9,udp:53
create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
add KUBE-LOAD-BALANCER-SOURCE-CIDR 1.2.3.4,tcp:80,10.0.0.1
`;

  it('normalizes /32 nets as ipset prints them', () => {
    const s = parseIpsetSave(SAVED);
    assert.ok(
      s.get('KUBE-LOAD-BALANCER-SOURCE-CIDR')?.members.has(normalizeMember('1.2.3.4,tcp:80,10.0.0.1/32')),
    );
  });

  it('adds missing, deletes extra, creates missing sets, leaves equal members alone', () => {
    const change = diffIpsets(
      parseIpsetSave(SAVED),
      [
        {
          name: 'KUBE-CLUSTER-IP',
          type: 'hash:ip,port',
          members: new Set(['10.96.0.1,tcp:80', '10.96.0.2,tcp:80']),
        },
        { name: 'KUBE-NODE-PORT-TCP', type: 'bitmap:port', members: new Set(['30080']) },
      ],
      'IPv4',
    );
    assert.equal(
      change.input,
      [
        'add KUBE-CLUSTER-IP 10.96.0.2,tcp:80',
        'del KUBE-CLUSTER-IP 10.96.0.9,udp:53',
        'create KUBE-NODE-PORT-TCP bitmap:port range 0-65535',
        'add KUBE-NODE-PORT-TCP 30080',
        '',
      ].join('\n'),
    );
    assert.deepEqual([change.added, change.deleted, change.created], [2, 1, 1]);
  });

  it('names IPv6 sets KUBE-6-… cut to 31 characters, like kube-proxy', () => {
    assert.equal(setName('KUBE-CLUSTER-IP', 'IPv6'), 'KUBE-6-CLUSTER-IP');
    assert.equal(setName('KUBE-LOAD-BALANCER-SOURCE-CIDR', 'IPv6'), 'KUBE-6-LOAD-BALANCER-SOURCE-CID');
    assert.equal(setName('KUBE-CLUSTER-IP', 'IPv4'), 'KUBE-CLUSTER-IP');
  });
});

describe('diffIpvs', () => {
  const vs = (address: string, port = 80, over: Partial<VirtualServer> = {}): VirtualServer => ({
    protocol: 'TCP',
    address,
    port,
    scheduler: 'rr',
    schedFlags: [],
    ...over,
  });
  const planned = (v: VirtualServer, reals: string[]): [string, PlannedService] => [
    vsKey(v),
    { vs: v, owner: 'x', reals: reals.map((r) => ({ address: r, port: 8080, weight: 1 })) },
  ];
  const current = parseIpvsadmSave(`-A -t 10.96.0.1:80 -s rr
-a -t 10.96.0.1:80 -r 10.244.0.2:8080 -m -w 1
-a -t 10.96.0.1:80 -r 10.244.0.3:8080 -m -w 1
-A -t 10.96.0.5:80 -s rr
-a -t 10.96.0.5:80 -r 10.244.0.2:8080 -m -w 1
-A -t 10.96.0.6:80 -s rr
-A -t 10.200.0.1:80 -s rr
-A -u 10.96.0.7:53 -s rr
-a -u 10.96.0.7:53 -r 10.244.0.2:8080 -m -w 1
-A -t [fd00::1]:80 -s rr
`);

  it('touches nothing when the kernel matches', () => {
    const desired = new Map([
      planned(vs('10.96.0.1'), ['10.244.0.2', '10.244.0.3']),
      planned(vs('10.96.0.5'), ['10.244.0.2']),
      planned(vs('10.96.0.6'), []),
      planned(vs('10.200.0.1'), []),
      planned(vs('10.96.0.7', 53, { protocol: 'UDP' }), ['10.244.0.2']),
    ]);
    const d = diffIpvs(current, desired, { family: 'IPv4', excludeCIDRs: [], connections: new Map() });
    assert.deepEqual(d.lines, []);
  });

  it('adds, edits, drains TCP (weight 0), deletes idle TCP and UDP at once, deletes stale VSs of its family only', () => {
    const desired = new Map([
      // 10.244.0.3 removed while busy → weight 0; 10.244.0.4 added.
      planned(vs('10.96.0.1'), ['10.244.0.2', '10.244.0.4']),
      // 10.244.0.2 removed and idle → deleted.
      planned(vs('10.96.0.5'), []),
      // Affinity turned on → -E.
      planned(vs('10.96.0.6', 80, { persistence: 60 }), []),
      // UDP real server removed → deleted at once even with connections.
      planned(vs('10.96.0.7', 53, { protocol: 'UDP' }), []),
      planned(vs('10.96.0.8'), ['10.244.0.9']),
    ]);
    const d = diffIpvs(current, desired, {
      family: 'IPv4',
      excludeCIDRs: ['10.200.0.0/16'],
      connections: new Map([
        ['-t 10.96.0.1:80|10.244.0.3:8080', 2],
        ['-t 10.96.0.5:80|10.244.0.2:8080', 0],
        ['-u 10.96.0.7:53|10.244.0.2:8080', 5],
      ]),
    });
    assert.deepEqual(d.lines, [
      '-a -t 10.96.0.1:80 -r 10.244.0.4:8080 -m -w 1',
      '-e -t 10.96.0.1:80 -r 10.244.0.3:8080 -m -w 0',
      '-d -t 10.96.0.5:80 -r 10.244.0.2:8080',
      '-E -t 10.96.0.6:80 -s rr -p 60',
      '-d -u 10.96.0.7:53 -r 10.244.0.2:8080',
      '-A -t 10.96.0.8:80 -s rr',
      '-a -t 10.96.0.8:80 -r 10.244.0.9:8080 -m -w 1',
    ]);
    assert.equal(d.draining.length, 1);
    // 10.200.0.1 is excluded; the IPv6 VS belongs to the other family's proxier.
    assert.equal(d.deletedServices, 0);
  });

  it('deletes a stale VS; resets a wanted real server found at weight 0 (leftover of a previous run)', () => {
    const cur = parseIpvsadmSave(`-A -t 10.96.0.1:80 -s rr
-a -t 10.96.0.1:80 -r 10.244.0.2:8080 -m -w 0
-A -t 10.96.0.9:80 -s rr
`);
    const d = diffIpvs(cur, new Map([planned(vs('10.96.0.1'), ['10.244.0.2'])]), {
      family: 'IPv4',
      excludeCIDRs: [],
      connections: new Map(),
    });
    assert.deepEqual(d.lines, ['-e -t 10.96.0.1:80 -r 10.244.0.2:8080 -m -w 1', '-D -t 10.96.0.9:80']);
  });

  it('keeps draining a busy weight-0 real server without rewriting it, deletes it when drained', () => {
    const cur = parseIpvsadmSave(`-A -t 10.96.0.1:80 -s rr
-a -t 10.96.0.1:80 -r 10.244.0.2:8080 -m -w 0
`);
    const want = new Map([planned(vs('10.96.0.1'), [])]);
    const busy = diffIpvs(cur, want, {
      family: 'IPv4',
      excludeCIDRs: [],
      connections: new Map([['-t 10.96.0.1:80|10.244.0.2:8080', 1]]),
    });
    assert.deepEqual(busy.lines, []);
    assert.equal(busy.draining.length, 1);
    const idle = diffIpvs(cur, want, {
      family: 'IPv4',
      excludeCIDRs: [],
      connections: new Map([['-t 10.96.0.1:80|10.244.0.2:8080', 0]]),
    });
    assert.deepEqual(idle.lines, ['-d -t 10.96.0.1:80 -r 10.244.0.2:8080']);
  });
});
