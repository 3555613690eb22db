import assert from 'node:assert/strict';
import { matchSet, parseSetFlags, type SetPacket } from '../../../src/debug/ipset-match.js';
import { parseIpsetSaveText } from '../../../src/ipvs/ipset.js';

// What `ipset save` printed (ipset v7.17) for sets of every type kube-proxy uses, plus a hash:net
// with a nomatch exception and a set with timeouts and comments.
const SAVE = `create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x4612d633
add KUBE-CLUSTER-IP 10.96.0.1,tcp:443
add KUBE-CLUSTER-IP 10.96.0.10,udp:53
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-TCP 30080
create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x59774b16
add KUBE-LOAD-BALANCER-SOURCE-CIDR 198.51.100.10,tcp:80,203.0.113.7
add KUBE-LOAD-BALANCER-SOURCE-CIDR 198.51.100.10,tcp:80,10.0.0.0/8
create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KUBE-LOOP-BACK 10.244.0.2,tcp:8080,10.244.0.2
create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0x886c2342
add KUBE-6-CLUSTER-IP fd00:10:96::1,tcp:443
create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
add KUBE-IPVS-IPS 10.96.0.1
create NETS hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x47445b80
add NETS 10.1.0.0/16 nomatch
add NETS 10.0.0.0/8
add NETS 1.2.3.4
create TIMED hash:ip family inet hashsize 1024 maxelem 65536 timeout 100 comment bucketsize 12 initval 0xe5cf2ce8
add TIMED 1.1.1.1 timeout 99 comment "hi, there"
create ODD list:set size 8
`;

const pkt = (over: Partial<SetPacket> = {}): SetPacket => ({
  family: 'IPv4',
  proto: 'tcp',
  src: '10.244.0.5',
  dst: '10.96.0.1',
  sport: 40000,
  dport: 443,
  ...over,
});

describe('ipset save parser and xt_set match (pure)', () => {
  const sets = parseIpsetSaveText(SAVE);
  const set = (name: string) => {
    const s = sets.get(name);
    assert.ok(s, name);
    return s;
  };
  const m = (name: string, flags: string, p: Partial<SetPacket> = {}) =>
    matchSet(set(name), parseSetFlags(flags)!, pkt(p)).matched;

  it('parses types, families, members and entry options', () => {
    assert.equal(set('KUBE-CLUSTER-IP').type, 'hash:ip,port');
    assert.equal(set('KUBE-CLUSTER-IP').family, 'IPv4');
    assert.equal(set('KUBE-6-CLUSTER-IP').family, 'IPv6');
    assert.equal(set('KUBE-NODE-PORT-TCP').family, undefined);
    assert.deepEqual(
      set('KUBE-CLUSTER-IP').entries.map((e) => e.parts.join(',')),
      ['10.96.0.1,tcp:443', '10.96.0.10,udp:53'],
    );
    assert.deepEqual(
      set('NETS').entries.map((e) => [e.parts[0], e.nomatch]),
      [
        ['10.1.0.0/16', true],
        ['10.0.0.0/8', false],
        ['1.2.3.4', false],
      ],
    );
    assert.deepEqual(set('TIMED').entries, [{ parts: ['1.1.1.1'], nomatch: false }]);
    assert.deepEqual(parseSetFlags('dst,dst,src'), ['dst', 'dst', 'src']);
    assert.equal(parseSetFlags('dst,foo'), undefined);
  });

  it('hash:ip,port: destination IP and port with the protocol', () => {
    assert.equal(m('KUBE-CLUSTER-IP', 'dst,dst'), true);
    assert.equal(m('KUBE-CLUSTER-IP', 'dst,dst', { proto: 'udp' }), false);
    assert.equal(m('KUBE-CLUSTER-IP', 'dst,dst', { dport: 80 }), false);
    assert.equal(m('KUBE-CLUSTER-IP', 'dst,dst', { dst: '10.96.0.10', proto: 'udp', dport: 53 }), true);
    // src,dst: the source address with the destination port (host traffic from a VIP).
    assert.equal(m('KUBE-CLUSTER-IP', 'src,dst'), false);
    assert.equal(m('KUBE-CLUSTER-IP', 'src,dst', { src: '10.96.0.1' }), true);
    // Fewer flags than dimensions never match; more are ignored.
    assert.equal(m('KUBE-CLUSTER-IP', 'dst'), false);
    assert.equal(m('KUBE-CLUSTER-IP', 'dst,dst,src'), true);
  });

  it('family: an inet set never matches an IPv6 packet; bitmap:port has no family', () => {
    const v6 = { family: 'IPv6' as const, src: 'fd00:10:244::5', dst: 'fd00:10:96::1' };
    assert.equal(m('KUBE-CLUSTER-IP', 'dst,dst', v6), false);
    assert.equal(m('KUBE-6-CLUSTER-IP', 'dst,dst', v6), true);
    assert.equal(m('KUBE-6-CLUSTER-IP', 'dst,dst', { ...v6, dst: 'fd00:10:96:0::1' }), true);
    assert.equal(m('KUBE-NODE-PORT-TCP', 'dst', { ...v6, dport: 30080 }), true);
  });

  it('bitmap:port: the port alone, source or destination as the flag says', () => {
    assert.equal(m('KUBE-NODE-PORT-TCP', 'dst', { dport: 30080 }), true);
    assert.equal(m('KUBE-NODE-PORT-TCP', 'dst', { dport: 30081 }), false);
    assert.equal(m('KUBE-NODE-PORT-TCP', 'src', { dport: 30080 }), false);
    assert.equal(m('KUBE-NODE-PORT-TCP', 'src', { sport: 30080 }), true);
  });

  it('hash:ip,port,net: the most specific source range; a bare member is a /32', () => {
    const lb = { dst: '198.51.100.10', dport: 80 };
    assert.equal(m('KUBE-LOAD-BALANCER-SOURCE-CIDR', 'dst,dst,src', { ...lb, src: '203.0.113.7' }), true);
    assert.equal(m('KUBE-LOAD-BALANCER-SOURCE-CIDR', 'dst,dst,src', { ...lb, src: '203.0.113.8' }), false);
    assert.equal(m('KUBE-LOAD-BALANCER-SOURCE-CIDR', 'dst,dst,src', { ...lb, src: '10.9.8.7' }), true);
    assert.equal(
      m('KUBE-LOAD-BALANCER-SOURCE-CIDR', 'dst,dst,src', { ...lb, dport: 81, src: '10.9.8.7' }),
      false,
    );
  });

  it('hash:ip,port,ip (hairpin): destination endpoint and port, source the same pod', () => {
    const hp = { dst: '10.244.0.2', dport: 8080 };
    assert.equal(m('KUBE-LOOP-BACK', 'dst,dst,src', { ...hp, src: '10.244.0.2' }), true);
    assert.equal(m('KUBE-LOOP-BACK', 'dst,dst,src', { ...hp, src: '10.244.0.3' }), false);
  });

  it('hash:ip and hash:net (nomatch exceptions win by longest prefix)', () => {
    assert.equal(m('KUBE-IPVS-IPS', 'dst'), true);
    assert.equal(m('KUBE-IPVS-IPS', 'dst', { dst: '10.96.0.2' }), false);
    assert.equal(m('NETS', 'dst', { dst: '10.2.3.4' }), true);
    assert.equal(m('NETS', 'dst', { dst: '10.1.3.4' }), false);
    assert.match(
      matchSet(set('NETS'), ['dst'], pkt({ dst: '10.1.3.4' })).why,
      /nomatch member 10\.1\.0\.0\/16/,
    );
    assert.equal(m('NETS', 'dst', { dst: '1.2.3.4' }), true);
    assert.equal(m('NETS', 'dst', { dst: '1.2.3.5' }), false);
  });

  it('a set type it does not know is reported, not guessed', () => {
    const r = matchSet(set('ODD'), ['dst'], pkt());
    assert.equal(r.matched, undefined);
    assert.match(r.why, /list:set/);
  });
});
