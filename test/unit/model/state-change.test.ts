import assert from 'node:assert/strict';
import { changeSinceApplied, isEmptyChange, stateChange } from '../../../src/model/state-change.js';
import { ep, service, state } from '../iptables/fixtures.js';

/**
 * The change tracker (src/model/state-change.ts): one pure function says what changed between two
 * cluster states; the controller hands its result to the backends, the metrics and the conntrack
 * cleaner (test/unit/controller/controller.test.ts shows they get the same object).
 */

const web = (eps: string[], extra: { nodePort?: number } = {}) =>
  service('ns/web', {
    clusterIP: '10.96.0.80',
    ports: [
      { name: 'http', port: 80, endpoints: eps.map((ip) => ep(ip, 8080)), ...extra },
      { name: 'metrics', port: 9090, endpoints: eps.map((ip) => ep(ip, 9090)) },
    ],
  });
const dns = (eps: string[]) =>
  service('ns/dns', {
    clusterIP: '10.96.0.53',
    ports: [
      { name: 'dns', protocol: 'UDP', port: 53, endpoints: eps.map((ip) => ep(ip, 53)) },
      { name: 'dns-tcp', protocol: 'TCP', port: 53, endpoints: eps.map((ip) => ep(ip, 53)) },
    ],
  });
const sorted = (s: ReadonlySet<string>): string[] => [...s].sort();

describe('stateChange: what changed between two cluster states', () => {
  it('the first sync (no previous state): every Service is new, endpoints and UDP ones included', () => {
    const next = state(web(['10.0.0.1']), dns(['10.0.0.2']));
    const c = stateChange(undefined, next);
    assert.equal(c.previous, undefined);
    assert.equal(c.next, next);
    assert.deepEqual(sorted(c.changed), ['ns/dns', 'ns/web']);
    assert.deepEqual(sorted(c.removed), []);
    assert.deepEqual(sorted(c.services), ['ns/dns', 'ns/web']);
    assert.deepEqual(sorted(c.endpoints), ['ns/dns', 'ns/web']);
    assert.deepEqual(sorted(c.udpEndpoints), ['ns/dns']);
    assert.deepEqual(sorted(c.endpointPorts), [
      'ns/dns:dns',
      'ns/dns:dns-tcp',
      'ns/web:http',
      'ns/web:metrics',
    ]);
  });

  it('the same objects: nothing changed', () => {
    const s = state(web(['10.0.0.1']), dns(['10.0.0.2']));
    const c = stateChange(s, state(...s.services.values()));
    assert.ok(isEmptyChange(c));
    assert.equal(c.services.size + c.endpoints.size + c.udpEndpoints.size + c.endpointPorts.size, 0);
  });

  it('equal copies (a source that shares no structure) are compared structurally: nothing changed', () => {
    const a = state(web(['10.0.0.1']), dns(['10.0.0.2']));
    const b = state(structuredClone(web(['10.0.0.1'])), structuredClone(dns(['10.0.0.2'])));
    assert.notEqual(a.services.get('ns/web'), b.services.get('ns/web'));
    assert.ok(isEmptyChange(stateChange(a, b)));
  });

  it('an endpoint move is an endpoint change of that Service and port only, not a Service change', () => {
    const a = state(web(['10.0.0.1']), dns(['10.0.0.2']));
    const moved = service('ns/web', {
      clusterIP: '10.96.0.80',
      ports: [
        { name: 'http', port: 80, endpoints: [ep('10.0.0.9', 8080)] },
        { name: 'metrics', port: 9090, endpoints: [ep('10.0.0.1', 9090)] },
      ],
    });
    const c = stateChange(a, state(moved, a.services.get('ns/dns')!));
    assert.deepEqual(sorted(c.changed), ['ns/web']);
    assert.deepEqual(sorted(c.services), []);
    assert.deepEqual(sorted(c.endpoints), ['ns/web']);
    assert.deepEqual(sorted(c.endpointPorts), ['ns/web:http']);
    assert.deepEqual(sorted(c.udpEndpoints), [], 'a TCP-only Service needs no conntrack cleanup');
  });

  it('a definition change (a NodePort) is a Service change, not an endpoint change', () => {
    const a = state(web(['10.0.0.1']));
    const c = stateChange(a, state(web(['10.0.0.1'], { nodePort: 30080 })));
    assert.deepEqual(sorted(c.changed), ['ns/web']);
    assert.deepEqual(sorted(c.services), ['ns/web']);
    assert.deepEqual(sorted(c.endpoints), []);
    assert.deepEqual(sorted(c.endpointPorts), []);
  });

  it('UDP endpoints gone: the Service is in udpEndpoints (the conntrack cleaner runs)', () => {
    const a = state(dns(['10.0.0.2', '10.0.0.3']));
    const c = stateChange(a, state(dns(['10.0.0.3'])));
    assert.deepEqual(sorted(c.udpEndpoints), ['ns/dns']);
    assert.deepEqual(sorted(c.endpointPorts), ['ns/dns:dns', 'ns/dns:dns-tcp']);
  });

  it('a removed Service: removed, a Service and endpoint change, UDP when it had a UDP port', () => {
    const a = state(web(['10.0.0.1']), dns(['10.0.0.2']));
    const c = stateChange(a, state(a.services.get('ns/web')!));
    assert.deepEqual(sorted(c.changed), []);
    assert.deepEqual(sorted(c.removed), ['ns/dns']);
    assert.deepEqual(sorted(c.services), ['ns/dns']);
    assert.deepEqual(sorted(c.endpoints), ['ns/dns']);
    assert.deepEqual(sorted(c.udpEndpoints), ['ns/dns']);
  });

  it('changeSinceApplied: the given change when it starts at the applied state, else its own', () => {
    const s0 = state(dns(['10.0.0.1']));
    const s1 = state(dns(['10.0.0.2']));
    const s2 = state(dns(['10.0.0.3']));
    const given = stateChange(s1, s2);
    assert.equal(changeSinceApplied(given, s1, s2), given);
    // A backend that applied s0 (it failed on s1, or synced alone): the change from s0.
    const own = changeSinceApplied(given, s0, s2);
    assert.notEqual(own, given);
    assert.equal(own.previous, s0);
    assert.deepEqual(sorted(own.udpEndpoints), ['ns/dns']);
    assert.equal(changeSinceApplied(undefined, s1, s2).previous, s1);
  });
});
