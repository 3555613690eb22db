import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NO_RULE_SERVICES, servicesWithRules } from '../../../src/cli/demo.js';
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
