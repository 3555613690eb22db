import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadManifestObjects } from '../../../src/kube/manifests.js';
import { buildClusterState } from '../../../src/model/build.js';
import { servicePortName } from '../../../src/model/types.js';

const EXAMPLES = join(dirname(fileURLToPath(import.meta.url)), '../../../examples');

describe('examples/', () => {
  it('loads with zero problems and the expected services and endpoints', async () => {
    const { objects, problems } = await loadManifestObjects(EXAMPLES);
    assert.deepEqual(problems, []);
    const s = buildClusterState(objects);
    assert.deepEqual(s.problems, []);
    const summary = [...s.services.values()].flatMap((svc) =>
      svc.skipReason
        ? [`${svc.namespace}/${svc.name} skip=${svc.skipReason}`]
        : svc.ports.map(
            (p) =>
              `${servicePortName(p)} ${svc.type} ${svc.clusterIPs.join(',')}:${p.port}/${p.protocol}` +
              `${p.nodePort ? ` np=${p.nodePort}` : ''} -> ${p.endpoints.map((e) => `${e.ip}:${e.port}`).join(',')}`,
          ),
    );
    assert.deepEqual(summary, [
      'default/external-db ClusterIP 10.96.0.11:5432/TCP -> 10.244.0.4:5432',
      'default/extip ClusterIP 10.96.0.15:80/TCP -> 10.244.0.2:9376,10.244.0.3:9376',
      'default/headless-db skip=headless',
      'default/hello ClusterIP 10.96.0.10:80/TCP -> 10.244.0.2:9376,10.244.0.3:9376',
      'default/multi:http ClusterIP 10.96.0.14:80/TCP -> 10.244.0.2:8080,10.244.0.3:8080',
      'default/multi:https ClusterIP 10.96.0.14:443/TCP -> 10.244.0.2:8443,10.244.0.3:8443',
      'default/redis ClusterIP 10.97.97.97:6379/TCP -> 10.244.0.5:6379',
      'default/search skip=ExternalName',
      'default/sticky ClusterIP 10.96.0.13:80/TCP -> 10.244.0.2:9376,10.244.0.3:9376',
      'default/web-nodeport NodePort 10.96.0.12:80/TCP np=30080 -> 10.244.0.2:9376,10.244.0.3:9376',
      'kube-system/dns:dns ClusterIP 10.96.0.53:53/UDP -> 10.244.0.6:53',
      'kube-system/dns:dns-tcp ClusterIP 10.96.0.53:53/TCP -> 10.244.0.6:53',
    ]);
    assert.deepEqual(s.services.get('default/sticky')!.sessionAffinity, {
      type: 'ClientIP',
      timeoutSeconds: 10800,
    });
    assert.deepEqual(s.services.get('default/extip')!.externalIPs, ['203.0.113.10']);
    for (const svc of s.services.values()) {
      for (const ep of svc.ports.flatMap((p) => p.endpoints)) {
        assert.equal(ep.nodeName, 'node-1');
        assert.equal(ep.ready, true);
      }
    }
    assert.deepEqual(s.nodes.get('node-1')?.addresses, ['192.0.2.1']);
    assert.equal(s.nodes.get('node-1')?.labels['topology.kubernetes.io/zone'], 'zone-a');
  });
});
