import assert from 'node:assert/strict';
import { formatTraceText, traceJson } from '../../../src/debug/trace-format.js';
import { tracePacket, type TracePacket, type TraceResult } from '../../../src/debug/trace.js';
import { parseIptablesSave } from '../../../src/iptables/save-parse.js';
import { ep, render, service } from '../iptables/fixtures.js';
import { KUBE_PROXY_SVC2, TEST_NODE } from './kube-proxy-svc2.js';

const svc2Rules = parseIptablesSave(KUBE_PROXY_SVC2);

function packet(src: string, dst: string, dport: number, extra: Partial<TracePacket> = {}): TracePacket {
  return { family: 'IPv4', src, dst, proto: 'tcp', dport, fromNode: false, ...extra };
}

function trace(
  text: string | ReturnType<typeof parseIptablesSave>,
  p: TracePacket,
  recent?: Map<string, Set<string>>,
): TraceResult {
  const ruleset = typeof text === 'string' ? parseIptablesSave(text) : text;
  return tracePacket({ ruleset, node: TEST_NODE, packet: p, ...(recent ? { recent } : {}) });
}

const brief = (r: TraceResult) => ({
  verdict: r.verdict,
  endpoints: r.endpoints.map((e) => `${e.endpoint}@${e.probability}`),
  masquerade: r.masquerade,
  service: r.service,
});

describe('svcplane trace engine (pure)', () => {
  describe("kube-proxy's ns2/svc2 rules (eTP=Local, only a remote endpoint): its packet-flow expectations", () => {
    it('pod to cluster IP: DNAT, not masqueraded', () => {
      assert.deepEqual(brief(trace(svc2Rules, packet('10.0.0.2', '172.30.0.42', 80))), {
        verdict: 'dnat',
        endpoints: ['10.180.0.2:80@1'],
        masquerade: false,
        service: 'ns2/svc2:p80',
      });
    });

    it('external client to cluster IP: masqueraded by the "! -s podCIDR" rule', () => {
      const r = trace(svc2Rules, packet('203.0.113.1', '172.30.0.42', 80));
      assert.equal(r.masquerade, true);
      assert.match(
        r.masqueradeReason,
        /marked by nat KUBE-SVC-GNZBNJ2PO5MGZ6GT rule 1: .*! -s 10\.0\.0\.0\/8/,
      );
      assert.match(r.masqueradeReason, /masqueraded by nat KUBE-POSTROUTING rule 3/);
    });

    it('external client to externalIP, LB IP or NodePort: dropped (no local endpoints)', () => {
      for (const [dst, port] of [
        ['192.168.99.22', 80],
        ['1.2.3.4', 80],
        ['192.168.0.2', 3001],
      ] as const) {
        const r = trace(svc2Rules, packet('203.0.113.1', dst, port));
        assert.equal(r.verdict, 'drop', `${dst}:${port}`);
        assert.equal(r.service, 'ns2/svc2:p80');
        const last = r.path[r.path.length - 1];
        assert.equal(last?.chain, 'KUBE-EXTERNAL-SERVICES');
        assert.match(last?.comment ?? '', /has no local endpoints/);
      }
    });

    it('pod to LB IP: short-circuited to all endpoints, not masqueraded', () => {
      assert.deepEqual(brief(trace(svc2Rules, packet('10.0.0.2', '1.2.3.4', 80))), {
        verdict: 'dnat',
        endpoints: ['10.180.0.2:80@1'],
        masquerade: false,
        service: 'ns2/svc2:p80',
      });
    });

    it('node to externalIP (nat OUTPUT): src-type LOCAL is masqueraded and routed to all endpoints', () => {
      const r = trace(svc2Rules, packet('192.168.0.2', '192.168.99.22', 80, { fromNode: true }));
      assert.equal(r.path[0]?.chain, 'OUTPUT');
      assert.deepEqual(brief(r).endpoints, ['10.180.0.2:80@1']);
      assert.equal(r.masquerade, true);
      assert.match(r.masqueradeReason, /masquerade LOCAL traffic/);
    });

    it('localhost NodePort from the node: DNAT and masquerade', () => {
      const r = trace(svc2Rules, packet('127.0.0.1', '127.0.0.1', 3001, { fromNode: true }));
      assert.deepEqual(brief(r), {
        verdict: 'dnat',
        endpoints: ['10.180.0.2:80@1'],
        masquerade: true,
        service: 'ns2/svc2:p80',
      });
    });

    it('traffic to no Service is untouched; to a node port nobody serves, delivered locally', () => {
      assert.equal(trace(svc2Rules, packet('10.0.0.2', '10.0.0.3', 80)).verdict, 'untouched');
      const r = trace(svc2Rules, packet('203.0.113.1', '192.168.0.2', 22));
      assert.equal(r.verdict, 'local');
      assert.equal(r.service, undefined);
      assert.match(r.masqueradeReason, /delivered to the node itself/);
    });
  });

  describe('svcplane-rendered rules', () => {
    const svc5 = service('ns5/svc5', {
      type: 'LoadBalancer',
      clusterIP: '172.30.0.45',
      lbIPs: ['5.6.7.8'],
      sourceRanges: ['203.0.113.0/25'],
      affinity: { type: 'ClientIP', timeoutSeconds: 10800 },
      ports: [
        {
          name: 'p80',
          port: 80,
          nodePort: 3002,
          endpoints: [ep('10.180.0.3', 80), ep('10.180.0.4', 80), ep('10.180.0.5', 80)],
        },
      ],
    });
    const none = service('ns6/svc6', {
      clusterIP: '172.30.0.46',
      ports: [{ name: 'p80', port: 80, protocol: 'UDP' }],
    });
    const withJumps = (input: string): string =>
      input
        .replace(
          '*nat\n',
          '*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n-A POSTROUTING -j KUBE-POSTROUTING\n',
        )
        .replace(
          '*filter\n',
          '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -j KUBE-PROXY-FIREWALL\n-A INPUT -j KUBE-EXTERNAL-SERVICES\n-A FORWARD -j KUBE-PROXY-FIREWALL\n-A FORWARD -j KUBE-SERVICES\n-A FORWARD -j KUBE-EXTERNAL-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n',
        );
    const rules = parseIptablesSave(withJumps(render([svc5, none]).restoreInput));

    it('three endpoints: each 1/3 (product of the statistic branches); affinity reported', () => {
      const r = trace(rules, packet('10.0.0.7', '172.30.0.45', 80));
      assert.deepEqual(
        r.endpoints.map((e) => e.endpoint),
        ['10.180.0.3:80', '10.180.0.4:80', '10.180.0.5:80'],
      );
      for (const e of r.endpoints) assert.ok(Math.abs(e.probability - 1 / 3) < 1e-6, String(e.probability));
      assert.equal(r.branches.length, 3);
      assert.deepEqual(
        r.affinity.map((a) => a.seconds),
        [10800, 10800, 10800],
      );
      assert.match(formatTraceText(packet('10.0.0.7', '172.30.0.45', 80), r), /Affinity: {3}ClientIP/);
    });

    it('a client in an affinity list sticks to that endpoint', () => {
      const first = trace(rules, packet('10.0.0.7', '172.30.0.45', 80));
      const list = first.affinity[1]!.list;
      const r = trace(rules, packet('10.0.0.7', '172.30.0.45', 80), new Map([[list, new Set(['10.0.0.7'])]]));
      assert.deepEqual(brief(r).endpoints, ['10.180.0.4:80@1']);
      assert.equal(r.affinity.find((a) => a.list === list)?.clientListed, true);
    });

    it('LB IP: inside the source range DNAT + masquerade; outside dropped by KUBE-PROXY-FIREWALL', () => {
      const inside = trace(rules, packet('203.0.113.5', '5.6.7.8', 80));
      assert.equal(inside.verdict, 'dnat');
      assert.equal(inside.masquerade, true);
      const outside = trace(rules, packet('203.0.113.200', '5.6.7.8', 80));
      assert.equal(outside.verdict, 'drop');
      assert.ok(outside.path.some((s) => s.chain === 'KUBE-PROXY-FIREWALL' && s.action === 'DROP'));
      assert.ok(
        outside.path.some(
          (s) => s.action === 'match (no target), continue' && /other traffic/.test(s.comment ?? ''),
        ),
      );
    });

    it('no endpoints: REJECT for the right protocol only', () => {
      const udp = trace(rules, { ...packet('10.0.0.7', '172.30.0.46', 80), proto: 'udp' });
      assert.equal(udp.verdict, 'reject');
      assert.equal(udp.service, 'ns6/svc6:p80');
      assert.equal(trace(rules, packet('10.0.0.7', '172.30.0.46', 80)).verdict, 'untouched');
    });

    it('JSON shape: verdict, endpoints, masquerade, service, path', () => {
      const p = packet('10.0.0.7', '172.30.0.45', 80);
      const j = traceJson(p, trace(rules, p));
      assert.equal(j.verdict, 'dnat');
      assert.equal(j.service, 'ns5/svc5:p80');
      assert.equal(j.masquerade, false);
      assert.equal(j.endpoints.length, 3);
      assert.ok(j.path.length >= 2);
      assert.equal(j.packet.inInterface, 'cbr0');
      assert.deepEqual(
        j.branches.map((b) => b.path[b.path.length - 1]?.chain),
        ['POSTROUTING', 'POSTROUTING', 'POSTROUTING'],
      );
    });
  });

  describe('netfilter semantics', () => {
    const nat = (rules: string, filter = ''): string =>
      `*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n${filter}COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n${rules}COMMIT\n`;

    it('-g returns to the caller of the chain that jumped; RETURN ends a chain; MARK ops combine', () => {
      const text = nat(
        [
          ':A - [0:0]',
          ':B - [0:0]',
          ':C - [0:0]',
          '-A PREROUTING -j A',
          '-A PREROUTING -m mark --mark 0x3/0x3 -j DNAT --to-destination 10.9.9.9:1',
          '-A A -g B',
          '-A A -j DNAT --to-destination 10.1.1.1:1',
          '-A B -j MARK --set-xmark 0x1/0x1',
          '-A B -j C',
          '-A B -j MARK --or-mark 0x2',
          '-A C -j RETURN',
          '-A C -j DNAT --to-destination 10.2.2.2:2',
          '',
        ].join('\n'),
      );
      const r = trace(text, packet('10.0.0.2', '10.0.0.3', 80));
      assert.deepEqual(brief(r).endpoints, ['10.9.9.9:1@1']);
    });

    it('interfaces: + wildcard and negation; unknown matches are reported, not guessed', () => {
      const text = nat(
        [
          '-A PREROUTING -i veth+ -j DNAT --to-destination 10.1.1.1:1',
          '-A PREROUTING -m physdev --physdev-in eth1 -j DNAT --to-destination 10.2.2.2:2',
          '-A PREROUTING ! -i eth+ -j DNAT --to-destination 10.3.3.3:3',
          '',
        ].join('\n'),
      );
      assert.deepEqual(
        brief(trace(text, packet('10.0.0.2', '10.0.0.3', 80, { inInterface: 'veth12' }))).endpoints,
        ['10.1.1.1:1@1'],
      );
      const r = trace(text, packet('10.0.0.2', '10.0.0.3', 80, { inInterface: 'cbr0' }));
      assert.deepEqual(brief(r).endpoints, ['10.3.3.3:3@1']);
      assert.deepEqual(r.unsupported, ['unsupported match physdev --physdev-in']);
      assert.match(
        formatTraceText(packet('10.0.0.2', '10.0.0.3', 80), r),
        /Warning: {4}unsupported match physdev/,
      );
    });

    it('port ranges, multiport, negated ports and the protocol', () => {
      const text = nat(
        [
          '-A PREROUTING -p udp --dport 80 -j DNAT --to-destination 10.1.1.1:1',
          '-A PREROUTING -p tcp -m tcp ! --dport 1:79 -m multiport --dports 443,80,8000:9000 -j DNAT --to-destination 10.2.2.2:2',
          '',
        ].join('\n'),
      );
      assert.deepEqual(brief(trace(text, packet('10.0.0.2', '10.0.0.3', 80))).endpoints, ['10.2.2.2:2@1']);
      assert.equal(trace(text, packet('10.0.0.2', '10.0.0.3', 22)).verdict, 'untouched');
    });

    it('IPv6 endpoints are written [ip]:port', () => {
      const text = `*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -d fd00::10/128 -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00:10::5]:8080\nCOMMIT\n`;
      const r = tracePacket({
        ruleset: parseIptablesSave(text),
        node: { addresses: [{ ip: 'fd00::1', prefixLen: 64, ifname: 'eth0' }] },
        packet: { family: 'IPv6', src: 'fd00::7', dst: 'fd00::10', proto: 'tcp', dport: 80, fromNode: false },
      });
      assert.deepEqual(
        r.endpoints.map((e) => e.endpoint),
        ['[fd00:10::5]:8080'],
      );
    });
  });
});
