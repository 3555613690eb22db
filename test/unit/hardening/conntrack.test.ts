import assert from 'node:assert/strict';
import {
  batchDeleteInput,
  countDeleted,
  deleteFilters,
  filterArgs,
  parseConntrackLine,
  parseConntrackList,
  staleUDPEntries,
} from '../../../src/conntrack/entries.js';
import { ProxyMetrics } from '../../../src/controller/metrics.js';
import { ConntrackReconciler } from '../../../src/conntrack/reconciler.js';
import { stateChange } from '../../../src/model/state-change.js';
import type { ClusterState } from '../../../src/model/types.js';

/** kube-proxy's ConntrackCleanupRequired, as the state change says it. */
const conntrackCleanupRequired = (a: ClusterState, b: ClusterState): boolean =>
  stateChange(a, b).udpEndpoints.size > 0;
import { ep, service, state } from '../iptables/fixtures.js';

const LIST = `ipv4     2 udp      17 29 src=10.244.0.9 dst=10.96.0.53 sport=40000 dport=53 [UNREPLIED] src=10.244.0.2 dst=10.244.0.9 sport=5353 dport=40000 mark=0 use=1
ipv4     2 udp      17 29 src=10.244.0.9 dst=10.96.0.53 sport=40001 dport=53 src=10.244.0.3 dst=10.244.0.9 sport=5353 dport=40001 [ASSURED] mark=0 use=1
ipv4     2 udp      17 25 src=10.244.0.9 dst=10.96.0.54 sport=40002 dport=53 [UNREPLIED] src=10.96.0.54 dst=10.244.0.9 sport=53 dport=40002 mark=0 use=1
ipv4     2 udp      17 25 src=192.0.2.2 dst=192.0.2.1 sport=40003 dport=30053 src=10.244.0.2 dst=192.0.2.1 sport=5353 dport=40003 mark=0 use=1
ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.0.9 dst=10.96.0.53 sport=40004 dport=53 src=10.244.0.2 dst=10.244.0.9 sport=5353 dport=40004 [ASSURED] mark=0 use=1
ipv6     10 udp      17 29 src=fd00:10:244::9 dst=fd00:96::53 sport=40005 dport=53 src=fd00:10:244:0:0:0:0:2 dst=fd00:10:244::9 sport=5353 dport=40005 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 6 flow entries have been shown.`;

describe('conntrack reconciler (pure)', () => {
  it('parses extended listings: both tuples, canonical IPv6, ignores summary lines', () => {
    const all = parseConntrackList(LIST);
    assert.equal(all.length, 6);
    assert.deepEqual(all[0], {
      family: 'IPv4',
      protocol: 'udp',
      orig: { src: '10.244.0.9', dst: '10.96.0.53', sport: 40000, dport: 53 },
      reply: { src: '10.244.0.2', dst: '10.244.0.9', sport: 5353, dport: 40000 },
    });
    assert.equal(all[5]!.reply.src, 'fd00:10:244::2');
    assert.equal(parseConntrackLine('garbage src=1.2.3.4'), undefined);
    assert.equal(parseConntrackLine('ipv4 2 udp 17 29 src=1.2.3.4 dst=x sport=1 dport=2'), undefined);
  });

  it('deletes flows whose reply source is not a serving endpoint (removed endpoint, REJECT era, NodePort)', () => {
    const entries = parseConntrackList(LIST);
    const s = state(
      service('ns/dns', {
        type: 'NodePort',
        clusterIP: '10.96.0.53',
        ports: [{ protocol: 'UDP', port: 53, nodePort: 30053, endpoints: [ep('10.244.0.3', 5353)] }],
      }),
      service('ns/was-empty', {
        clusterIP: '10.96.0.54',
        ports: [{ protocol: 'UDP', port: 53, endpoints: [ep('10.244.0.4', 5353)] }],
      }),
    );
    const stale = staleUDPEntries(s, 'IPv4', entries).map((e) => e.orig.sport);
    // 40000 → removed endpoint .2; 40002 → no DNAT (REJECT era); 40003 → NodePort to .2.
    // 40001 is on the serving endpoint; 40004 is TCP; 40005 another family.
    assert.deepEqual(stale, [40000, 40002, 40003]);
  });

  it('leaves Services without serving endpoints alone (nowhere to move their flows)', () => {
    const entries = parseConntrackList(LIST);
    const s = state(
      service('ns/dns', {
        clusterIP: '10.96.0.53',
        ports: [
          {
            protocol: 'UDP',
            port: 53,
            endpoints: [ep('10.244.0.3', 5353, { serving: false, ready: false })],
          },
        ],
      }),
    );
    assert.deepEqual(staleUDPEntries(s, 'IPv4', entries), []);
  });

  it('is required only when endpoints of a UDP Service changed', () => {
    const udp = (eps: string[], port = 53) =>
      service('ns/dns', {
        clusterIP: '10.96.0.53',
        ports: [{ protocol: 'UDP', port, endpoints: eps.map((ip) => ep(ip, 5353)) }],
      });
    const tcp = (eps: string[]) =>
      service('ns/web', {
        clusterIP: '10.96.0.80',
        ports: [{ port: 80, endpoints: eps.map((ip) => ep(ip, 80)) }],
      });
    assert.equal(conntrackCleanupRequired(state(udp(['10.0.0.1'])), state(udp(['10.0.0.2']))), true);
    assert.equal(conntrackCleanupRequired(state(udp(['10.0.0.1'])), state(udp(['10.0.0.1'], 54))), false);
    assert.equal(conntrackCleanupRequired(state(tcp(['10.0.0.1'])), state(tcp(['10.0.0.2']))), false);
    assert.equal(conntrackCleanupRequired(state(udp(['10.0.0.1'])), state()), true);
  });

  it('groups stale flows into one delete filter per frontend and backend, as argument arrays', () => {
    const entries = parseConntrackList(LIST);
    const s = state(
      service('ns/dns', {
        type: 'NodePort',
        clusterIP: '10.96.0.53',
        ports: [{ protocol: 'UDP', port: 53, nodePort: 30053, endpoints: [ep('10.244.0.3', 5353)] }],
      }),
    );
    // Three more clients of the removed endpoint .2: same filter as 40000.
    const more = [40010, 40011, 40012].map((sport) => ({
      ...entries[0]!,
      orig: { ...entries[0]!.orig, sport },
      reply: { ...entries[0]!.reply, dport: sport },
    }));
    const filters = deleteFilters(staleUDPEntries(s, 'IPv4', [...entries, ...more]));
    assert.deepEqual(
      filters.map((f) => [f.origDst, f.origDport, f.replySrc, f.replySport, f.flows]),
      [
        ['10.96.0.53', 53, '10.244.0.2', 5353, 4],
        ['192.0.2.1', 30053, '10.244.0.2', 5353, 1],
      ],
    );
    assert.deepEqual(filterArgs(filters[0]!), [
      '-D',
      '-f',
      'ipv4',
      '-p',
      'udp',
      '--orig-dst',
      '10.96.0.53',
      '--dport',
      '53',
      '--reply-src',
      '10.244.0.2',
      '--reply-port-src',
      '5353',
    ]);
    assert.equal(
      batchDeleteInput(filters),
      '-D -f ipv4 -p udp --orig-dst 10.96.0.53 --dport 53 --reply-src 10.244.0.2 --reply-port-src 5353\n' +
        '-D -f ipv4 -p udp --orig-dst 192.0.2.1 --dport 30053 --reply-src 10.244.0.2 --reply-port-src 5353\n',
    );
  });

  it('refuses filter values that are not canonical addresses or ports', () => {
    const f = {
      family: 'IPv4' as const,
      protocol: 'udp',
      origDst: '10.96.0.53',
      origDport: 53,
      replySrc: '10.244.0.2',
      replySport: 5353,
      flows: 1,
    };
    assert.throws(() => filterArgs({ ...f, origDst: '10.96.0.53 -F' }), /invalid IPv4 address/);
    assert.throws(() => filterArgs({ ...f, replySrc: 'fd00::1' }), /invalid IPv4 address/);
    assert.throws(() => filterArgs({ ...f, origDport: 70000 }), /invalid port/);
    assert.throws(() => filterArgs({ ...f, protocol: 'udp -D' }), /invalid protocol/);
  });

  it('counts the flows a batch printed as deleted', () => {
    const out =
      'udp      17 99 src=10.0.0.1 dst=10.96.0.10 sport=1000 dport=53 [UNREPLIED] src=10.244.0.5 dst=10.0.0.1 sport=5353 dport=1000 mark=0 use=1\n' +
      'udp      17 99 src=fd00::1 dst=fd00::53 sport=1000 dport=53 src=fd00::5 dst=fd00::1 sport=5353 dport=1000 mark=0 use=1\n';
    assert.equal(countDeleted(out), 2);
    assert.equal(countDeleted(''), 0);
  });

  it('without a conntrack tool: one failure, logged once, then no more attempts', async () => {
    const metrics = new ProxyMetrics();
    const r = new ConntrackReconciler({ families: ['IPv4'], binary: 'svcplane-no-such-conntrack', metrics });
    const udp = (ip: string) =>
      state(
        service('ns/dns', {
          clusterIP: '10.96.0.53',
          ports: [{ protocol: 'UDP', port: 53, endpoints: [ep(ip, 53)] }],
        }),
      );
    assert.equal(await r.afterSync(udp('10.0.0.1')), undefined);
    assert.equal(await r.afterSync(udp('10.0.0.2')), undefined);
    assert.match(await metrics.registry.metrics(), /svcplane_conntrack_reconciler_failures_total 1\n/);
  });
});
