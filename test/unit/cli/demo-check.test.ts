import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  checkProbe,
  DEMO_PROBES,
  MAX_BALANCED_REQUESTS,
  NO_RULE_SERVICES,
  runProbe,
  servicesWithRules,
  type DemoProbe,
} from '../../../src/cli/demo.js';
import type { ProbeResult } from '../../../src/netns/protocol.js';
import { renderRestoreInput } from '../../../src/iptables/render.js';
import { loadManifestObjects } from '../../../src/kube/manifests.js';
import { buildClusterState } from '../../../src/model/build.js';
import { config, ep, render, service } from '../iptables/fixtures.js';

/**
 * The demo's "headless and ExternalName Services get no rules" check must be able to fail: it
 * looks for rules that belong to those Services, and a Service that has any is reported.
 */

const EXAMPLES = join(dirname(fileURLToPath(import.meta.url)), '../../../examples');

describe('demo: no rules for headless / ExternalName Services', () => {
  it("the examples' rules name neither Service", async () => {
    const { objects } = await loadManifestObjects(EXAMPLES);
    const rendered = renderRestoreInput({
      state: buildClusterState(objects),
      config: config({ node: { name: 'node-1', zone: '' } }),
      existingServiceChains: new Set(),
    });
    assert.deepEqual(servicesWithRules(rendered.restoreInput, NO_RULE_SERVICES), []);
    // The check does see the examples' other Services.
    assert.deepEqual(servicesWithRules(rendered.restoreInput, ['default/hello', 'default/multi']), [
      'default/hello',
      'default/multi',
    ]);
  });

  it('reports a Service with rules of any kind: cluster IP, SEP, REJECT in filter', () => {
    const withEndpoints = render([
      service('default/search', {
        clusterIP: '10.96.0.99',
        ports: [{ port: 80, endpoints: [ep('10.244.0.9', 80)] }],
      }),
    ]).restoreInput;
    assert.deepEqual(servicesWithRules(withEndpoints, NO_RULE_SERVICES), ['default/search']);
    const noEndpoints = render([
      service('default/headless-db', { clusterIP: '10.96.0.98', ports: [{ name: 'pg', port: 5432 }] }),
    ]).restoreInput;
    assert.match(noEndpoints, /default\/headless-db:pg has no endpoints/);
    assert.deepEqual(servicesWithRules(noEndpoints, NO_RULE_SERVICES), ['default/headless-db']);
  });

  it('does not mistake a Service whose name only starts the same', () => {
    const text = render([
      service('default/search-v2', {
        clusterIP: '10.96.0.97',
        ports: [{ port: 80, endpoints: [ep('10.244.0.9', 80)] }],
      }),
    ]).restoreInput;
    assert.deepEqual(servicesWithRules(text, NO_RULE_SERVICES), []);
  });
});

describe('demo: each frontend answered as kube-proxy would', () => {
  const addrs = { requester: { client: '10.244.0.10', outside: '192.0.2.2' }, masquerade: '10.244.0.1' };
  const probe = (service: string): DemoProbe => DEMO_PROBES.find((p) => p.service.startsWith(service))!;
  const reply = (pod: string, peer: string): ProbeResult => ({
    ok: true,
    reply: { pod, ip: '10.244.0.2', port: 9376, peer: `${peer}:40000`, proto: 'tcp' },
  });

  it('as kube-proxy: no problem', () => {
    const hello = probe('default/hello');
    assert.deepEqual(
      checkProbe(hello, [reply('pod-a', '10.244.0.10'), reply('pod-b', '10.244.0.10')], addrs),
      [],
    );
    const np = probe('default/web-nodeport');
    assert.deepEqual(checkProbe(np, [reply('pod-b', '10.244.0.1'), reply('pod-a', '10.244.0.1')], addrs), []);
    const sticky = probe('default/sticky');
    assert.deepEqual(
      checkProbe(sticky, [reply('pod-b', '10.244.0.10'), reply('pod-b', '10.244.0.10')], addrs),
      [],
    );
  });

  it('a balanced Service answered by one pod only, a ClientIP one by two, a stray backend, a lost request', () => {
    const hello = probe('default/hello');
    assert.deepEqual(
      checkProbe(hello, [reply('pod-a', '10.244.0.10'), reply('pod-a', '10.244.0.10')], addrs),
      ['expected answers from pod-a and pod-b, got pod-a only'],
    );
    assert.deepEqual(
      checkProbe(
        probe('default/sticky'),
        [reply('pod-a', '10.244.0.10'), reply('pod-b', '10.244.0.10')],
        addrs,
      ),
      ['ClientIP affinity: one backend expected, got pod-a and pod-b'],
    );
    assert.deepEqual(checkProbe(probe('default/redis'), [reply('db', '10.244.0.10')], addrs), [
      'answered by db, not a backend of this Service',
    ]);
    assert.deepEqual(
      checkProbe(
        probe('kube-system/dns:dns (UDP)'),
        [reply('dns', '10.244.0.10'), { ok: false, error: 'timeout', detail: '' }],
        addrs,
      ),
      ['1 of 2 requests not answered'],
    );
  });

  it('the masquerade column: kube-proxy masquerades NodePort/externalIP traffic from outside, not pod to ClusterIP', () => {
    assert.deepEqual(
      checkProbe(
        probe('default/web-nodeport'),
        [reply('pod-a', '192.0.2.2'), reply('pod-b', '192.0.2.2')],
        addrs,
      ),
      ['not masqueraded: the backend saw 192.0.2.2, kube-proxy gives the node (10.244.0.1)'],
    );
    assert.deepEqual(
      checkProbe(probe('default/hello'), [reply('pod-a', '10.244.0.1'), reply('pod-b', '10.244.0.1')], addrs),
      ["masqueraded: the backend saw 10.244.0.1, kube-proxy keeps the client's 10.244.0.10"],
    );
  });

  it('a balanced Service is probed until every backend answered (at most MAX_BALANCED_REQUESTS)', async () => {
    const hello = probe('default/hello');
    const answers = ['pod-a', 'pod-a', 'pod-a', 'pod-a', 'pod-a', 'pod-b', 'pod-a'];
    let n = 0;
    const results = await runProbe(hello, () =>
      Promise.resolve(reply(answers[n++] ?? 'pod-a', '10.244.0.10')),
    );
    assert.equal(results.length, 6, 'stopped once pod-b answered');
    n = 0;
    const stuck = await runProbe(hello, () => Promise.resolve(reply('pod-a', '10.244.0.10')));
    assert.equal(stuck.length, MAX_BALANCED_REQUESTS);
    assert.equal(
      (await runProbe(probe('default/redis'), () => Promise.resolve(reply('redis', '10.244.0.10')))).length,
      1,
    );
  });
});
