import assert from 'node:assert/strict';
import { traceIpvs, withIpvs } from '../../../src/debug/ipvs-trace.js';
import { parseIpvsadmSave } from '../../../src/ipvs/ipvsadm.js';

// What `ipvsadm -Sn` prints for a ClusterIP with two pods (rr), a sticky one (persistence) and a
// draining one (weight 0).
const SAVE = [
  '-A -t 10.96.0.10:80 -s rr',
  '-a -t 10.96.0.10:80 -r 10.244.0.2:9376 -m -w 1',
  '-a -t 10.96.0.10:80 -r 10.244.0.3:9376 -m -w 1',
  '-A -u 10.96.0.53:53 -s lc -p 10800',
  '-a -u 10.96.0.53:53 -r 10.244.0.2:53 -m -w 3',
  '-a -u 10.96.0.53:53 -r 10.244.0.3:53 -m -w 1',
  '-A -t [fd00:10:96::10]:80 -s rr',
  '-a -t [fd00:10:96::10]:80 -r [fd00:10:244::2]:9376 -m -w 0',
  '',
].join('\n');

describe('svcplane trace: IPVS virtual servers (pure)', () => {
  const table = parseIpvsadmSave(SAVE);

  it('finds the virtual server and spreads by weight (rr)', () => {
    const r = traceIpvs(table, { proto: 'tcp', dst: '10.96.0.10', dport: 80 });
    assert.deepEqual(r?.reals, [
      { endpoint: '10.244.0.2:9376', weight: 1, share: 0.5 },
      { endpoint: '10.244.0.3:9376', weight: 1, share: 0.5 },
    ]);
    assert.equal(r?.scheduler, 'rr');
    assert.equal(traceIpvs(table, { proto: 'udp', dst: '10.96.0.10', dport: 80 }), undefined);
  });

  it('reports persistence and that lc depends on live state', () => {
    const r = traceIpvs(table, { proto: 'udp', dst: '10.96.0.53', dport: 53 });
    assert.equal(r?.persistenceSeconds, 10800);
    assert.deepEqual(
      r?.reals.map((x) => x.share),
      [0.75, 0.25],
    );
    assert.match(r?.note ?? '', /live connection state/);
  });

  it('turns a "local" iptables verdict into dnat; draining servers get nothing', () => {
    const base = { verdict: 'local', endpoints: [] as unknown[], notes: [] as string[] };
    const r = withIpvs(base, traceIpvs(table, { proto: 'tcp', dst: '10.96.0.10', dport: 80 })!);
    assert.equal(r.verdict, 'dnat');
    assert.deepEqual(r.endpoints, [
      { endpoint: '10.244.0.2:9376', probability: 0.5, masquerade: false },
      { endpoint: '10.244.0.3:9376', probability: 0.5, masquerade: false },
    ]);
    const drained = withIpvs(base, traceIpvs(table, { proto: 'tcp', dst: 'fd00:10:96::10', dport: 80 })!);
    assert.equal(drained.verdict, 'local');
    assert.match(drained.ipvs.note, /draining/);
  });
});
