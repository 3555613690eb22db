import assert from 'node:assert/strict';
import {
  computeProbability,
  endpointChainName,
  externalChainName,
  firewallChainName,
  isServiceChainName,
  portProtoHash,
  serviceChainName,
  serviceLocalChainName,
} from '../../../src/iptables/names.js';

describe('iptables names', () => {
  it('portProtoHash matches kube-proxy check values', () => {
    assert.equal(portProtoHash('ns1/svc1:p80', 'tcp'), 'XPGD46QRK7WJZT7O');
    assert.equal(portProtoHash('ns2/svc2:p8080', 'tcp'), '2VJB64SDSIJUP5T6');
    // From kube-proxy's TestOverallIPTablesRules golden.
    assert.equal(portProtoHash('ns2/svc2:p80', 'tcp'), 'GNZBNJ2PO5MGZ6GT');
    assert.equal(portProtoHash('ns5/svc5:p80', 'tcp'), 'NUKIZ6OKUXPJNT4C');
  });

  it('chain names carry the kube-proxy prefixes', () => {
    assert.equal(serviceChainName('ns1/svc1:p80', 'tcp'), 'KUBE-SVC-XPGD46QRK7WJZT7O');
    assert.equal(serviceLocalChainName('ns1/svc1:p80', 'tcp'), 'KUBE-SVL-XPGD46QRK7WJZT7O');
    assert.equal(externalChainName('ns1/svc1:p80', 'tcp'), 'KUBE-EXT-XPGD46QRK7WJZT7O');
    assert.equal(firewallChainName('ns1/svc1:p80', 'tcp'), 'KUBE-FW-XPGD46QRK7WJZT7O');
  });

  it('endpointChainName matches kube-proxy check values', () => {
    assert.equal(endpointChainName('ns1/svc1:p80', 'tcp', '10.180.0.1:80'), 'KUBE-SEP-SXIVWICOYRO3J4NJ');
    assert.equal(endpointChainName('ns5/svc5:p80', 'tcp', '10.180.0.3:80'), 'KUBE-SEP-I77PXRDZVX7PMWMN');
    assert.equal(endpointChainName('ns2/svc2:p80', 'tcp', '10.180.0.2:80'), 'KUBE-SEP-RS4RBKLTHTF2IUXJ');
  });

  it('hashes are stable across repeated (cached) calls and differ by protocol', () => {
    const a = portProtoHash('ns/x:http', 'tcp');
    assert.equal(portProtoHash('ns/x:http', 'tcp'), a);
    assert.notEqual(portProtoHash('ns/x:http', 'udp'), a);
    assert.match(a, /^[A-Z2-7]{16}$/);
  });

  it('isServiceChainName recognises exactly the per-service prefixes', () => {
    for (const c of ['KUBE-SVC-X', 'KUBE-SVL-X', 'KUBE-SEP-X', 'KUBE-FW-X', 'KUBE-EXT-X']) {
      assert.equal(isServiceChainName(c), true, c);
    }
    for (const c of [
      'KUBE-SERVICES',
      'KUBE-NODEPORTS',
      'KUBE-MARK-MASQ',
      'KUBE-POSTROUTING',
      'KUBE-FIREWALL',
      'FOO',
    ]) {
      assert.equal(isServiceChainName(c), false, c);
    }
  });

  it('computeProbability formats like Go %0.10f', () => {
    assert.equal(computeProbability(2), '0.5000000000');
    assert.equal(computeProbability(3), '0.3333333333');
    assert.equal(computeProbability(10), '0.1000000000');
    assert.equal(computeProbability(7), '0.1428571429');
    assert.equal(computeProbability(100001), '0.0000099999');
    // An exact tie: Go rounds half to even where toFixed would round up.
    assert.equal(computeProbability(2048), '0.0004882812');
    assert.equal(computeProbability(3), computeProbability(3));
  });
});
