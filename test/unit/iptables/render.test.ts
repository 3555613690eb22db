import assert from 'node:assert/strict';
import { endpointChainName, portProtoHash } from '../../../src/iptables/names.js';
import { renderRestoreInput, RenderConfigError } from '../../../src/iptables/render.js';
import {
  chainRules,
  config6,
  declaredChains,
  ep,
  linesWith,
  NODE,
  render,
  service,
  state,
  tableLines,
} from './fixtures.js';

const MARK = '0x00004000';

// kube-proxy's TestOverallIPTablesRules services that the reference spec names.
const svc2 = service('ns2/svc2', {
  type: 'LoadBalancer',
  clusterIP: '172.30.0.42',
  externalIPs: ['192.168.99.22'],
  lbIPs: ['1.2.3.4'],
  eTP: 'Local',
  healthCheckNodePort: 30000,
  ports: [
    { name: 'p80', port: 80, nodePort: 3001, endpoints: [ep('10.180.0.2', 80, { nodeName: 'other-node' })] },
  ],
});
const svc5 = service('ns5/svc5', {
  type: 'LoadBalancer',
  clusterIP: '172.30.0.45',
  lbIPs: ['5.6.7.8'],
  sourceRanges: ['203.0.113.0/25'],
  affinity: { type: 'ClientIP', timeoutSeconds: 10800 },
  ports: [{ name: 'p80', port: 80, nodePort: 3002, endpoints: [ep('10.180.0.3', 80)] }],
});
const svc6 = service('ns6/svc6', { clusterIP: '172.30.0.46', ports: [{ name: 'p80', port: 80 }] });

describe('iptables renderer: fixed chains', () => {
  it('renders the exact global rules for an empty IPv4 state', () => {
    const res = render([]);
    assert.equal(
      res.restoreInput,
      [
        '*filter',
        ':KUBE-SERVICES - [0:0]',
        ':KUBE-EXTERNAL-SERVICES - [0:0]',
        ':KUBE-FORWARD - [0:0]',
        ':KUBE-NODEPORTS - [0:0]',
        ':KUBE-PROXY-FIREWALL - [0:0]',
        ':KUBE-FIREWALL - [0:0]',
        '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
        '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
        `-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark ${MARK}/${MARK} -j ACCEPT`,
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        'COMMIT',
        '*nat',
        ':KUBE-SERVICES - [0:0]',
        ':KUBE-NODEPORTS - [0:0]',
        ':KUBE-POSTROUTING - [0:0]',
        ':KUBE-MARK-MASQ - [0:0]',
        `-A KUBE-POSTROUTING -m mark ! --mark ${MARK}/${MARK} -j RETURN`,
        `-A KUBE-POSTROUTING -j MARK --xor-mark ${MARK}`,
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE',
        `-A KUBE-MARK-MASQ -j MARK --or-mark ${MARK}`,
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        'COMMIT',
        '',
      ].join('\n'),
    );
    assert.equal(res.lines, 23);
    assert.equal(res.bytes, Buffer.byteLength(res.restoreInput));
    assert.deepEqual(res.counts, {
      filterRules: 4,
      totalFilterRules: 4,
      natRules: 5,
      natChains: 4,
      totalNatRules: 5,
    });
    assert.equal(res.largeClusterMode, false);
  });

  it('masquerade bit, --random-fully and be_liberal', () => {
    const res = render([], { masqueradeBit: 3, randomFully: true, conntrackTCPBeLiberal: true });
    assert.deepEqual(chainRules(res.restoreInput, 'nat', 'KUBE-POSTROUTING'), [
      '-A KUBE-POSTROUTING -m mark ! --mark 0x00000008/0x00000008 -j RETURN',
      '-A KUBE-POSTROUTING -j MARK --xor-mark 0x00000008',
      '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ]);
    assert.deepEqual(chainRules(res.restoreInput, 'nat', 'KUBE-MARK-MASQ'), [
      '-A KUBE-MARK-MASQ -j MARK --or-mark 0x00000008',
    ]);
    assert.deepEqual(chainRules(res.restoreInput, 'filter', 'KUBE-FORWARD'), [
      '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00000008/0x00000008 -j ACCEPT',
      '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    ]);
  });

  it('without localhost NodePorts: no KUBE-FIREWALL, 127.0.0.0/8 excluded from the NodePort tail', () => {
    const res = render([], { localhostNodePorts: false });
    assert.deepEqual(declaredChains(res.restoreInput, 'filter'), [
      'KUBE-SERVICES',
      'KUBE-EXTERNAL-SERVICES',
      'KUBE-FORWARD',
      'KUBE-NODEPORTS',
      'KUBE-PROXY-FIREWALL',
    ]);
    assert.deepEqual(chainRules(res.restoreInput, 'nat', 'KUBE-SERVICES'), [
      '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS',
    ]);
  });

  it('--nodeport-addresses: one tail rule per address; loopback only with localhost NodePorts', () => {
    const addresses = ['127.0.0.1', '192.168.0.2'];
    const tail = (localhostNodePorts: boolean): string[] =>
      chainRules(
        render([], { nodePortAddresses: { matchAll: false, addresses }, localhostNodePorts }).restoreInput,
        'nat',
        'KUBE-SERVICES',
      );
    const c =
      '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain"';
    assert.deepEqual(tail(true), [
      `${c} -d 127.0.0.1 -j KUBE-NODEPORTS`,
      `${c} -d 192.168.0.2 -j KUBE-NODEPORTS`,
    ]);
    assert.deepEqual(tail(false), [`${c} -d 192.168.0.2 -j KUBE-NODEPORTS`]);
  });

  it('rejects bad configuration with a clear error', () => {
    assert.throws(() => render([], { masqueradeBit: 40 }), RenderConfigError);
    assert.throws(
      () => render([], { localDetector: { mode: 'ClusterCIDR', cidr: '10.0.0.0/8 -j ACCEPT' } }),
      /localDetector\.cidr/,
    );
    assert.throws(() => render([], { nodeIPs: ['fd00::1'] }), /nodeIPs/);
    assert.throws(
      () => render([], { localDetector: { mode: 'BridgeInterface', name: 'br 0' } }),
      /localDetector\.name/,
    );
  });
});

describe('iptables renderer: kube-proxy reference rule set (ns2/svc2)', () => {
  it('LoadBalancer, eTP=Local, one non-local endpoint: exact rules', () => {
    const res = render([svc2]);
    const input = res.restoreInput;
    assert.deepEqual(linesWith(input, 'filter', 'ns2/svc2'), [
      '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP',
      '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP',
      '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP',
      '-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT',
    ]);
    assert.deepEqual(declaredChains(input, 'nat'), [
      'KUBE-SERVICES',
      'KUBE-NODEPORTS',
      'KUBE-POSTROUTING',
      'KUBE-MARK-MASQ',
      'KUBE-EXT-GNZBNJ2PO5MGZ6GT',
      'KUBE-SVC-GNZBNJ2PO5MGZ6GT',
      'KUBE-SEP-RS4RBKLTHTF2IUXJ',
    ]);
    assert.deepEqual(chainRules(input, 'nat', 'KUBE-SERVICES'), [
      '-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT',
      '-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 external IP" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT',
      '-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT',
      '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    ]);
    // kube-proxy's localhost variant also carries `-m nfacct --nfacct-name localhost_nps_accepted_pkts`.
    assert.deepEqual(chainRules(input, 'nat', 'KUBE-NODEPORTS'), [
      '-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT',
      '-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT',
    ]);
    assert.deepEqual(chainRules(input, 'nat', 'KUBE-EXT-GNZBNJ2PO5MGZ6GT'), [
      '-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT',
      '-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
      '-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT',
    ]);
    assert.deepEqual(chainRules(input, 'nat', 'KUBE-SVC-GNZBNJ2PO5MGZ6GT'), [
      '-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ',
      '-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j KUBE-SEP-RS4RBKLTHTF2IUXJ',
    ]);
    assert.deepEqual(chainRules(input, 'nat', 'KUBE-SEP-RS4RBKLTHTF2IUXJ'), [
      '-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ',
      '-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80',
    ]);
    assert.deepEqual(chainRules(input, 'nat', 'KUBE-SVL-GNZBNJ2PO5MGZ6GT'), []);
    assert.deepEqual(res.noLocalEndpoints, { internal: 0, external: 1 });
  });

  it('ns5/svc5 (source ranges, ClientIP affinity) and ns6/svc6 (no endpoints)', () => {
    const input = render([svc5, svc6]).restoreInput;
    assert.deepEqual(linesWith(input, 'filter', 'ns5/svc5').concat(linesWith(input, 'filter', 'ns6/svc6')), [
      '-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP',
      '-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT',
    ]);
    assert.deepEqual(linesWith(input, 'nat', 'ns6/svc6'), []);
    assert.deepEqual(linesWith(input, 'nat', 'ns5/svc5'), [
      '-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C',
      '-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C',
      '-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C',
      '-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C',
      '-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ',
      '-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ',
      '-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C',
      '-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"',
      '-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN',
      '-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j KUBE-SEP-I77PXRDZVX7PMWMN',
      '-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ',
      '-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80',
    ]);
    assert.deepEqual(chainRules(input, 'nat', 'KUBE-EXT-NUKIZ6OKUXPJNT4C'), [
      '-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ',
      '-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C',
    ]);
  });
});

describe('iptables renderer: per-service features', () => {
  const h = (spn: string, proto = 'tcp'): string => portProtoHash(spn, proto);

  it('ClusterIP with three endpoints: probabilities, SEP chains, endpoint order', () => {
    const s = service('default/web', {
      clusterIP: '10.96.0.10',
      ports: [
        {
          name: 'http',
          port: 80,
          endpoints: [ep('10.1.0.2', 8080), ep('10.1.0.10', 8080), ep('10.1.0.3', 8080)],
        },
      ],
    });
    const input = render([s]).restoreInput;
    const svcChain = `KUBE-SVC-${h('default/web:http')}`;
    const sep = (e: string): string => endpointChainName('default/web:http', 'tcp', e);
    // Sorted by endpoint string: "10.1.0.10:8080" < "10.1.0.2:8080" < "10.1.0.3:8080".
    assert.deepEqual(chainRules(input, 'nat', svcChain), [
      `-A ${svcChain} -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ`,
      `-A ${svcChain} -m comment --comment "default/web:http -> 10.1.0.10:8080" -m statistic --mode random --probability 0.3333333333 -j ${sep('10.1.0.10:8080')}`,
      `-A ${svcChain} -m comment --comment "default/web:http -> 10.1.0.2:8080" -m statistic --mode random --probability 0.5000000000 -j ${sep('10.1.0.2:8080')}`,
      `-A ${svcChain} -m comment --comment "default/web:http -> 10.1.0.3:8080" -j ${sep('10.1.0.3:8080')}`,
    ]);
    assert.deepEqual(chainRules(input, 'nat', sep('10.1.0.2:8080')), [
      `-A ${sep('10.1.0.2:8080')} -m comment --comment default/web:http -s 10.1.0.2 -j KUBE-MARK-MASQ`,
      `-A ${sep('10.1.0.2:8080')} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.1.0.2:8080`,
    ]);
  });

  it('unnamed UDP port, masqueradeAll, and no detector', () => {
    const s = service('kube-system/dns', {
      clusterIP: '10.96.0.53',
      ports: [{ protocol: 'UDP', port: 53, endpoints: [ep('10.1.0.5', 53)] }],
    });
    const chain = `KUBE-SVC-${h('kube-system/dns', 'udp')}`;
    const masqAll = render([s], { masqueradeAll: true }).restoreInput;
    assert.equal(
      chainRules(masqAll, 'nat', chain)[0],
      `-A ${chain} -m comment --comment "kube-system/dns cluster IP" -m udp -p udp -d 10.96.0.53 --dport 53 -j KUBE-MARK-MASQ`,
    );
    const none = render([s], { localDetector: { mode: 'None' } }).restoreInput;
    assert.deepEqual(chainRules(none, 'nat', chain), [
      `-A ${chain} -m comment --comment "kube-system/dns -> 10.1.0.5:53" -j ${endpointChainName('kube-system/dns', 'udp', '10.1.0.5:53')}`,
    ]);
    const bridge = render([s], { localDetector: { mode: 'BridgeInterface', name: 'cbr0' } }).restoreInput;
    assert.match(chainRules(bridge, 'nat', chain)[0]!, / --dport 53 ! -i cbr0 -j KUBE-MARK-MASQ$/);
    const prefix = render([s], {
      localDetector: { mode: 'InterfaceNamePrefix', prefix: 'veth' },
    }).restoreInput;
    assert.match(chainRules(prefix, 'nat', chain)[0]!, / --dport 53 ! -i veth\+ -j KUBE-MARK-MASQ$/);
  });

  it('no endpoints: REJECT for every frontend and no nat rules', () => {
    const s = service('ns/lb', {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.20',
      externalIPs: ['192.168.99.1'],
      lbIPs: ['1.1.1.1'],
      sourceRanges: ['10.0.0.0/8'],
      ports: [
        {
          name: 'p',
          port: 443,
          nodePort: 30443,
          endpoints: [ep('10.1.0.9', 443, { ready: false, serving: false })],
        },
      ],
    });
    const res = render([s]);
    const c = '-m comment --comment "ns/lb:p has no endpoints"';
    assert.deepEqual(linesWith(res.restoreInput, 'filter', 'ns/lb'), [
      `-A KUBE-SERVICES ${c} -m tcp -p tcp -d 10.96.0.20 --dport 443 -j REJECT`,
      `-A KUBE-EXTERNAL-SERVICES ${c} -m tcp -p tcp -d 192.168.99.1 --dport 443 -j REJECT`,
      `-A KUBE-EXTERNAL-SERVICES ${c} -m tcp -p tcp -d 1.1.1.1 --dport 443 -j REJECT`,
      `-A KUBE-EXTERNAL-SERVICES ${c} -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30443 -j REJECT`,
    ]);
    assert.deepEqual(linesWith(res.restoreInput, 'nat', 'ns/lb'), []);
    assert.equal(res.activeServiceChains.size, 0);
    assert.deepEqual(res.noLocalEndpoints, { internal: 0, external: 0 });
  });

  it('iTP=Local with no local endpoint: ClusterIP DROP in filter', () => {
    const s = service('ns/itp', {
      clusterIP: '10.96.0.30',
      iTP: 'Local',
      ports: [{ name: 'p', port: 80, endpoints: [ep('10.1.0.7', 80, { nodeName: 'elsewhere' })] }],
    });
    const res = render([s]);
    assert.deepEqual(linesWith(res.restoreInput, 'filter', 'ns/itp'), [
      '-A KUBE-SERVICES -m comment --comment "ns/itp:p has no local endpoints" -m tcp -p tcp -d 10.96.0.30 --dport 80 -j DROP',
    ]);
    assert.deepEqual(linesWith(res.restoreInput, 'nat', 'ns/itp'), []);
    assert.deepEqual(res.noLocalEndpoints, { internal: 1, external: 0 });
  });

  it('iTP=Local with a local endpoint: ClusterIP goes to SVL with only the local endpoint', () => {
    const s = service('ns/itp', {
      clusterIP: '10.96.0.30',
      iTP: 'Local',
      ports: [
        {
          name: 'p',
          port: 80,
          endpoints: [ep('10.1.0.7', 80, { nodeName: 'elsewhere' }), ep('10.1.0.8', 80, { nodeName: NODE })],
        },
      ],
    });
    const input = render([s]).restoreInput;
    const svl = `KUBE-SVL-${h('ns/itp:p')}`;
    assert.deepEqual(
      chainRules(input, 'nat', 'KUBE-SERVICES')[0],
      `-A KUBE-SERVICES -m comment --comment "ns/itp:p cluster IP" -m tcp -p tcp -d 10.96.0.30 --dport 80 -j ${svl}`,
    );
    assert.deepEqual(chainRules(input, 'nat', svl), [
      `-A ${svl} -m comment --comment "ns/itp:p cluster IP" -m tcp -p tcp -d 10.96.0.30 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ`,
      `-A ${svl} -m comment --comment "ns/itp:p -> 10.1.0.8:80" -j ${endpointChainName('ns/itp:p', 'tcp', '10.1.0.8:80')}`,
    ]);
    assert.ok(!declaredChains(input, 'nat').includes(`KUBE-SVC-${h('ns/itp:p')}`));
  });

  it('eTP=Local with a local endpoint: EXT → SVL, SVC keeps all endpoints, health check port', () => {
    const s = service('ns/etp', {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.40',
      lbIPs: ['1.2.3.5'],
      eTP: 'Local',
      healthCheckNodePort: 31000,
      ports: [
        {
          name: 'p',
          port: 80,
          nodePort: 30080,
          endpoints: [ep('10.1.0.1', 80, { nodeName: NODE }), ep('10.1.0.2', 80, { nodeName: 'other' })],
        },
      ],
    });
    const res = render([s], { localDetector: { mode: 'None' } });
    const input = res.restoreInput;
    const x = h('ns/etp:p');
    assert.deepEqual(chainRules(input, 'nat', `KUBE-EXT-${x}`), [
      `-A KUBE-EXT-${x} -m comment --comment "masquerade LOCAL traffic for ns/etp:p external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`,
      `-A KUBE-EXT-${x} -m comment --comment "route LOCAL traffic for ns/etp:p external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-${x}`,
      `-A KUBE-EXT-${x} -j KUBE-SVL-${x}`,
    ]);
    assert.equal(chainRules(input, 'nat', `KUBE-SVC-${x}`).length, 2);
    assert.deepEqual(chainRules(input, 'nat', `KUBE-SVL-${x}`), [
      `-A KUBE-SVL-${x} -m comment --comment "ns/etp:p -> 10.1.0.1:80" -j ${endpointChainName('ns/etp:p', 'tcp', '10.1.0.1:80')}`,
    ]);
    assert.deepEqual(linesWith(input, 'filter', 'ns/etp'), [
      '-A KUBE-NODEPORTS -m comment --comment "ns/etp:p health check node port" -m tcp -p tcp --dport 31000 -j ACCEPT',
    ]);
    assert.deepEqual(res.noLocalEndpoints, { internal: 0, external: 0 });
    // Two SEP chains (union of the cluster and local sets), each declared once.
    const seps = declaredChains(input, 'nat').filter((c) => c.startsWith('KUBE-SEP-'));
    assert.equal(seps.length, 2);
  });

  it('terminating endpoints are used only as a fallback', () => {
    const s = service('ns/t', {
      clusterIP: '10.96.0.50',
      ports: [
        {
          name: 'p',
          port: 80,
          endpoints: [
            ep('10.1.0.1', 80, { ready: false, serving: true, terminating: true }),
            ep('10.1.0.2', 80),
          ],
        },
      ],
    });
    const chain = `KUBE-SVC-${h('ns/t:p')}`;
    assert.deepEqual(
      chainRules(render([s]).restoreInput, 'nat', chain).map((l) => l.slice(l.lastIndexOf('-j '))),
      ['-j KUBE-MARK-MASQ', `-j ${endpointChainName('ns/t:p', 'tcp', '10.1.0.2:80')}`],
    );
    const onlyTerminating = service('ns/t', {
      clusterIP: '10.96.0.50',
      ports: [
        {
          name: 'p',
          port: 80,
          endpoints: [ep('10.1.0.1', 80, { ready: false, serving: true, terminating: true })],
        },
      ],
    });
    assert.equal(chainRules(render([onlyTerminating]).restoreInput, 'nat', chain).length, 2);
  });

  it('ClientIP affinity: rcheck rules first, then the random split, SEP --set', () => {
    const s = service('ns/aff', {
      clusterIP: '10.96.0.60',
      affinity: { type: 'ClientIP', timeoutSeconds: 300 },
      ports: [{ name: 'p', port: 80, endpoints: [ep('10.1.0.1', 80), ep('10.1.0.2', 80)] }],
    });
    const input = render([s], { localDetector: { mode: 'None' } }).restoreInput;
    const chain = `KUBE-SVC-${h('ns/aff:p')}`;
    const s1 = endpointChainName('ns/aff:p', 'tcp', '10.1.0.1:80');
    const s2 = endpointChainName('ns/aff:p', 'tcp', '10.1.0.2:80');
    assert.deepEqual(chainRules(input, 'nat', chain), [
      `-A ${chain} -m comment --comment "ns/aff:p -> 10.1.0.1:80" -m recent --name ${s1} --rcheck --seconds 300 --reap -j ${s1}`,
      `-A ${chain} -m comment --comment "ns/aff:p -> 10.1.0.2:80" -m recent --name ${s2} --rcheck --seconds 300 --reap -j ${s2}`,
      `-A ${chain} -m comment --comment "ns/aff:p -> 10.1.0.1:80" -m statistic --mode random --probability 0.5000000000 -j ${s1}`,
      `-A ${chain} -m comment --comment "ns/aff:p -> 10.1.0.2:80" -j ${s2}`,
    ]);
    assert.deepEqual(
      chainRules(input, 'nat', s2)[1],
      `-A ${s2} -m comment --comment ns/aff:p -m recent --name ${s2} --set -m tcp -p tcp -j DNAT --to-destination 10.1.0.2:80`,
    );
  });

  it('FW chain: node IP inside a source range also admits the VIPs as sources', () => {
    const s = service('ns/fw', {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.70',
      lbIPs: ['5.5.5.5', '5.5.5.6'],
      sourceRanges: ['192.168.0.0/24', '203.0.113.0/25'],
      ports: [{ name: 'p', port: 80, nodePort: 30070, endpoints: [ep('10.1.0.1', 80)] }],
    });
    const x = h('ns/fw:p');
    const input = render([s]).restoreInput;
    const c = `-A KUBE-FW-${x} -m comment --comment "ns/fw:p loadbalancer IP"`;
    assert.deepEqual(chainRules(input, 'nat', `KUBE-FW-${x}`), [
      `${c} -s 192.168.0.0/24 -j KUBE-EXT-${x}`,
      `${c} -s 203.0.113.0/25 -j KUBE-EXT-${x}`,
      `${c} -s 5.5.5.5 -j KUBE-EXT-${x}`,
      `${c} -s 5.5.5.6 -j KUBE-EXT-${x}`,
      `-A KUBE-FW-${x} -m comment --comment "other traffic to ns/fw:p will be dropped by KUBE-PROXY-FIREWALL"`,
    ]);
    assert.deepEqual(chainRules(input, 'filter', 'KUBE-PROXY-FIREWALL'), [
      `-A KUBE-PROXY-FIREWALL -m comment --comment "ns/fw:p traffic not accepted by KUBE-FW-${x}" -m tcp -p tcp -d 5.5.5.5 --dport 80 -j DROP`,
      `-A KUBE-PROXY-FIREWALL -m comment --comment "ns/fw:p traffic not accepted by KUBE-FW-${x}" -m tcp -p tcp -d 5.5.5.6 --dport 80 -j DROP`,
    ]);
    // NodePorts are not subject to the source ranges.
    assert.match(
      chainRules(input, 'nat', 'KUBE-NODEPORTS')[1]!,
      new RegExp(`--dport 30070 -j KUBE-EXT-${x}$`),
    );
    // Node outside every range: no VIP-source rules.
    const outside = render([s], { nodeIPs: ['172.16.0.1'] }).restoreInput;
    assert.equal(chainRules(outside, 'nat', `KUBE-FW-${x}`).length, 3);
  });

  it('an open source range (0.0.0.0/0) means no FW chain; ipMode Proxy VIPs are skipped', () => {
    const s = service('ns/open', {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.80',
      lbIPs: ['6.6.6.6', { ip: '7.7.7.7', ipMode: 'Proxy' }],
      sourceRanges: ['0.0.0.0/0', '10.0.0.0/8'],
      ports: [{ name: 'p', port: 80, endpoints: [ep('10.1.0.1', 80)] }],
    });
    const input = render([s]).restoreInput;
    assert.deepEqual(linesWith(input, 'nat', 'loadbalancer IP'), [
      `-A KUBE-SERVICES -m comment --comment "ns/open:p loadbalancer IP" -m tcp -p tcp -d 6.6.6.6 --dport 80 -j KUBE-EXT-${h('ns/open:p')}`,
    ]);
    assert.ok(!declaredChains(input, 'nat').some((c) => c.startsWith('KUBE-FW-')));
    assert.deepEqual(chainRules(input, 'filter', 'KUBE-PROXY-FIREWALL'), []);
  });

  it('multi-port Service: ports in spec order, health check rule per port', () => {
    const s = service('ns/multi', {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.90',
      eTP: 'Local',
      healthCheckNodePort: 32000,
      ports: [
        { name: 'b', port: 81, nodePort: 30081, endpoints: [ep('10.1.0.1', 81, { nodeName: NODE })] },
        { name: 'a', port: 80, nodePort: 30080, endpoints: [ep('10.1.0.1', 80, { nodeName: NODE })] },
      ],
    });
    const input = render([s]).restoreInput;
    assert.deepEqual(
      chainRules(input, 'nat', 'KUBE-SERVICES')
        .slice(0, 2)
        .map((l) => l.split('"')[1]),
      ['ns/multi:b cluster IP', 'ns/multi:a cluster IP'],
    );
    assert.deepEqual(chainRules(input, 'filter', 'KUBE-NODEPORTS').length, 2);
  });

  it('skips skipReason Services and Services without a cluster IP of the family', () => {
    const headless = service('ns/h', {
      clusterIP: '10.96.0.1',
      skipReason: 'headless',
      ports: [{ port: 80 }],
    });
    const v6only = service('ns/v6', { clusterIP: 'fd00::10', ports: [{ port: 80 }] });
    const res = render([headless, v6only]);
    assert.deepEqual(linesWith(res.restoreInput, 'filter', 'ns/'), []);
    assert.equal(res.writtenServices.size, 0);
  });

  it('never emits unsafe object text; skips just the bad item', () => {
    const evil = service('ns/evil', {
      clusterIP: '10.96.0.99',
      externalIPs: ['1.2.3.4\n-A INPUT -j ACCEPT', '192.168.99.9'],
      ports: [
        { name: 'x" -j ACCEPT', port: 80, endpoints: [ep('10.1.0.1', 80)] },
        { name: 'ok', port: 81, endpoints: [ep('10.1.0.1 -j ACCEPT', 81), ep('10.1.0.2', 81)] },
      ],
    });
    const res = render([evil]);
    assert.ok(!res.restoreInput.includes('ACCEPT"'));
    assert.ok(!res.restoreInput.includes('-A INPUT'));
    assert.deepEqual(
      linesWith(res.restoreInput, 'nat', 'KUBE-SERVICES -m comment').map((l) => l.split(' -j ')[0]),
      [
        '-A KUBE-SERVICES -m comment --comment "ns/evil:ok cluster IP" -m tcp -p tcp -d 10.96.0.99 --dport 81',
        '-A KUBE-SERVICES -m comment --comment "ns/evil:ok external IP" -m tcp -p tcp -d 192.168.99.9 --dport 81',
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL',
      ],
    );
    assert.equal(declaredChains(res.restoreInput, 'nat').filter((c) => c.startsWith('KUBE-SEP-')).length, 1);
    assert.equal(res.skipped.length, 3);
  });
});

describe('iptables renderer: sync modes', () => {
  const a = service('ns/a', {
    clusterIP: '10.96.1.1',
    ports: [{ name: 'p', port: 80, endpoints: [ep('10.1.1.1', 80)] }],
  });
  const b = service('ns/b', {
    clusterIP: '10.96.1.2',
    ports: [{ name: 'p', port: 80, endpoints: [ep('10.1.1.2', 80)] }],
  });

  it('partial sync writes only changed Services’ chains; active chains stay complete', () => {
    const full = render([a, b]);
    const partial = render(
      [a, b],
      {},
      { changedServices: new Set(['ns/b']), existingServiceChains: full.activeServiceChains },
    );
    assert.deepEqual([...partial.writtenServices], ['ns/b']);
    assert.deepEqual(partial.activeServiceChains, full.activeServiceChains);
    assert.deepEqual(partial.staleChains, []);
    const declared = declaredChains(partial.restoreInput, 'nat');
    assert.ok(!declared.some((c) => c.endsWith(portProtoHash('ns/a:p', 'tcp'))));
    assert.ok(declared.includes(`KUBE-SVC-${portProtoHash('ns/b:p', 'tcp')}`));
    // KUBE-SERVICES is always complete.
    assert.deepEqual(
      chainRules(partial.restoreInput, 'nat', 'KUBE-SERVICES'),
      chainRules(full.restoreInput, 'nat', 'KUBE-SERVICES'),
    );
    assert.equal(partial.counts.totalNatRules, full.counts.natRules);
    // ns/a: SVC masquerade + SVC → SEP + two SEP rules not written.
    assert.equal(partial.counts.natRules, full.counts.natRules - 4);
  });

  it('partial sync with nothing changed counts exactly what a full sync writes', () => {
    const local = service('ns/loc', {
      type: 'LoadBalancer',
      clusterIP: '10.96.1.3',
      lbIPs: ['5.5.5.1'],
      sourceRanges: ['192.168.0.0/16'],
      eTP: 'Local',
      affinity: { type: 'ClientIP', timeoutSeconds: 60 },
      healthCheckNodePort: 31111,
      ports: [
        {
          name: 'p',
          port: 80,
          nodePort: 30111,
          endpoints: [ep('10.1.1.4', 80, { nodeName: NODE }), ep('10.1.1.5', 80)],
        },
      ],
    });
    const all = [a, b, svc2, svc5, svc6, local];
    const full = render(all);
    const none = render(
      all,
      {},
      { changedServices: new Set(), existingServiceChains: full.activeServiceChains },
    );
    assert.equal(none.counts.totalNatRules, full.counts.natRules);
    assert.deepEqual(none.activeServiceChains, full.activeServiceChains);
    assert.equal(none.writtenServices.size, 0);
    assert.deepEqual(declaredChains(none.restoreInput, 'nat'), [
      'KUBE-SERVICES',
      'KUBE-NODEPORTS',
      'KUBE-POSTROUTING',
      'KUBE-MARK-MASQ',
    ]);
    assert.equal(
      none.restoreInput
        .split('\n')
        .filter((l) => l.startsWith('-A KUBE-S') && !l.startsWith('-A KUBE-SERVICES')).length,
      0,
    );
  });

  it('stale chains are declared and deleted after the service rules, before the NodePort tail', () => {
    const first = render([a, b]);
    const moved = service('ns/b', {
      clusterIP: '10.96.1.2',
      ports: [{ name: 'p', port: 80, endpoints: [ep('10.1.1.3', 80)] }],
    });
    const existing = new Set([
      ...first.activeServiceChains,
      'KUBE-SEP-FOREIGNLEFTOVER1',
      'KUBE-SOMETHING-ELSE',
    ]);
    const res = render(
      [a, moved],
      {},
      { changedServices: new Set(['ns/b']), existingServiceChains: existing },
    );
    const oldSep = endpointChainName('ns/b:p', 'tcp', '10.1.1.2:80');
    assert.deepEqual(res.staleChains, ['KUBE-SEP-FOREIGNLEFTOVER1', oldSep].sort());
    const nat = tableLines(res.restoreInput, 'nat');
    for (const c of res.staleChains) {
      assert.ok(nat.includes(`:${c} - [0:0]`));
      assert.ok(nat.includes(`-X ${c}`));
    }
    const lastX = nat.map((l) => l.startsWith('-X ')).lastIndexOf(true);
    assert.ok(nat[lastX + 1]!.includes('kubernetes service nodeports'));
    assert.ok(!nat.includes('-X KUBE-SOMETHING-ELSE'));
    // -X lines are not counted as rules.
    assert.equal(res.counts.natRules, nat.filter((l) => l.startsWith('-A ')).length);
  });

  it('large-cluster mode (> 1000 endpoints) drops SEP and SVC→SEP comments only', () => {
    const eps = Array.from({ length: 1001 }, (_, i) => ep(`10.2.${i >> 8}.${i & 255}`, 80));
    const big = service('ns/big', {
      clusterIP: '10.96.2.1',
      ports: [{ name: 'p', port: 80, endpoints: eps }],
    });
    const res = render([big]);
    assert.equal(res.largeClusterMode, true);
    const chain = `KUBE-SVC-${portProtoHash('ns/big:p', 'tcp')}`;
    const rules = chainRules(res.restoreInput, 'nat', chain);
    assert.equal(
      rules[0],
      `-A ${chain} -m comment --comment "ns/big:p cluster IP" -m tcp -p tcp -d 10.96.2.1 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ`,
    );
    const sep0 = endpointChainName('ns/big:p', 'tcp', '10.2.0.0:80');
    assert.equal(rules[1], `-A ${chain} -m statistic --mode random --probability 0.0009990010 -j ${sep0}`);
    assert.deepEqual(chainRules(res.restoreInput, 'nat', sep0), [
      `-A ${sep0} -s 10.2.0.0 -j KUBE-MARK-MASQ`,
      `-A ${sep0} -m tcp -p tcp -j DNAT --to-destination 10.2.0.0:80`,
    ]);
    assert.equal(
      render([
        service('ns/big', {
          clusterIP: '10.96.2.1',
          ports: [{ name: 'p', port: 80, endpoints: eps.slice(0, 1000) }],
        }),
      ]).largeClusterMode,
      false,
    );
  });

  it('is deterministic: same input, byte-identical output, whatever the map order', () => {
    const x = render([a, b, svc2, svc5, svc6]).restoreInput;
    const y = render([svc6, svc5, b, svc2, a]).restoreInput;
    assert.equal(x, y);
  });
});

describe('iptables renderer: IPv6 and dual-stack', () => {
  const dual = service('ns/dual', {
    type: 'NodePort',
    clusterIPs: ['10.96.3.1', 'fd00:96::1'],
    externalIPs: ['192.168.99.3', '2001:db8::3'],
    ports: [{ name: 'p', port: 80, nodePort: 30300, endpoints: [ep('10.1.3.1', 80), ep('fd00:10::1', 80)] }],
  });

  it('IPv6: [ip]:port endpoints, ! -d ::1/128 tail, no KUBE-FIREWALL, no localhost NodePort rule', () => {
    const res = renderRestoreInput({
      state: state(dual),
      config: config6({ localhostNodePorts: true }),
      existingServiceChains: new Set(),
    });
    const input = res.restoreInput;
    assert.ok(!declaredChains(input, 'filter').includes('KUBE-FIREWALL'));
    const x = portProtoHash('ns/dual:p', 'tcp');
    const sep = endpointChainName('ns/dual:p', 'tcp', '[fd00:10::1]:80');
    assert.deepEqual(chainRules(input, 'nat', 'KUBE-SERVICES'), [
      `-A KUBE-SERVICES -m comment --comment "ns/dual:p cluster IP" -m tcp -p tcp -d fd00:96::1 --dport 80 -j KUBE-SVC-${x}`,
      `-A KUBE-SERVICES -m comment --comment "ns/dual:p external IP" -m tcp -p tcp -d 2001:db8::3 --dport 80 -j KUBE-EXT-${x}`,
      '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS',
    ]);
    assert.deepEqual(chainRules(input, 'nat', 'KUBE-NODEPORTS'), [
      `-A KUBE-NODEPORTS -m comment --comment ns/dual:p -m tcp -p tcp --dport 30300 -j KUBE-EXT-${x}`,
    ]);
    assert.deepEqual(chainRules(input, 'nat', `KUBE-SVC-${x}`), [
      `-A KUBE-SVC-${x} -m comment --comment "ns/dual:p cluster IP" -m tcp -p tcp -d fd00:96::1 --dport 80 ! -s fd00:10::/64 -j KUBE-MARK-MASQ`,
      `-A KUBE-SVC-${x} -m comment --comment "ns/dual:p -> [fd00:10::1]:80" -j ${sep}`,
    ]);
    assert.deepEqual(chainRules(input, 'nat', sep), [
      `-A ${sep} -m comment --comment ns/dual:p -s fd00:10::1 -j KUBE-MARK-MASQ`,
      `-A ${sep} -m comment --comment ns/dual:p -m tcp -p tcp -j DNAT --to-destination [fd00:10::1]:80`,
    ]);
  });

  it('dual-stack: the IPv4 render sees only IPv4 frontends and endpoints', () => {
    const input = render([dual]).restoreInput;
    assert.ok(!input.includes('fd00'));
    assert.ok(!input.includes('2001:db8'));
    assert.deepEqual(
      declaredChains(input, 'nat').filter((c) => c.startsWith('KUBE-SEP-')),
      [endpointChainName('ns/dual:p', 'tcp', '10.1.3.1:80')],
    );
  });
});
