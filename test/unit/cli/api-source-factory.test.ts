import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../../src/cli/main.js';
import { optionsFromArgs, type ProxyOptions } from '../../../src/config/options.js';
import { createApiSource } from '../../../src/kube/api-source-factory.js';
import { NO_CLUSTER_CONFIG } from '../../../src/kube/kubeconfig.js';
import { FakeApiServer } from '../../support/fake-apiserver.js';

/** `createApiSource(opts)`: which cluster configuration is used, and which node is watched. */

function options(args: string[]): ProxyOptions {
  return optionsFromArgs(args);
}

function kubeconfigFor(server: string, token: string): string {
  return `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "${server}"}
users:
- name: proxy
  user: {token: ${token}}
contexts:
- name: test
  context: {cluster: test, user: proxy}
current-context: test
`;
}

const FAST = {
  watchTimeoutSeconds: 1,
  watchdogGraceMs: 200,
  listIdleTimeoutMs: 1000,
  minWatchMs: 100,
  backoff: { initialMs: 20, maxMs: 200, factor: 2, jitter: 0.2 },
};

describe('createApiSource (cluster configuration → API source)', function () {
  this.timeout(10_000);
  let api: FakeApiServer;
  /** The same cluster over TLS, requiring a token (as kube-apiserver with RBAC would). */
  let tlsApi: FakeApiServer;
  let dir: string;

  before(async () => {
    api = await FakeApiServer.create();
    tlsApi = await FakeApiServer.create({ tls: true, tokens: ['secret-token'] });
    dir = mkdtempSync(join(tmpdir(), 'svcplane-kc-'));
    for (const server of [api, tlsApi]) {
      for (const name of ['node-1', 'node-2']) {
        server.create('Node', {
          metadata: { name, labels: { 'topology.kubernetes.io/zone': `zone-${name}` } },
          status: {
            addresses: [{ type: 'InternalIP', address: name === 'node-1' ? '192.0.2.1' : '192.0.2.9' }],
          },
        });
      }
    }
  });
  after(async () => {
    await api.stop();
    await tlsApi.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('without --kubeconfig, --master or a pod environment: the clear error, never localhost', async () => {
    await assert.rejects(
      createApiSource(options(['--hostname-override=node-1']), { env: {} }),
      (err: Error) => err.message === NO_CLUSTER_CONFIG,
    );
    if (process.env.KUBERNETES_SERVICE_HOST === undefined) {
      // The same through the CLI: no source, nothing touched.
      assert.equal(await main(['node', 'svcplane', 'sync', '--hostname-override=node-1']), 1);
    }
  });

  it('--kubeconfig: lists through it with its credentials and watches only --hostname-override', async () => {
    const file = join(dir, 'kubeconfig');
    writeFileSync(file, tlsApi.kubeconfigYaml('{token: secret-token}'));
    const source = await createApiSource(options([`--kubeconfig=${file}`, '--hostname-override=Node-1']), {
      env: {},
      reflector: FAST,
    });
    try {
      await source.start();
      assert.equal(tlsApi.lastAuthorization, 'Bearer secret-token');
      const nodes = source.current()?.nodes;
      assert.deepEqual([...(nodes?.keys() ?? [])], ['node-1'], 'field selector metadata.name=node-1');
      assert.deepEqual(nodes?.get('node-1')?.addresses, ['192.0.2.1']);
      assert.equal(nodes?.get('node-1')?.labels['topology.kubernetes.io/zone'], 'zone-node-1');
      assert.equal(source.health().healthy, true);
    } finally {
      await source.stop();
    }
  });

  it('--master overrides the kubeconfig server; --master alone works too', async () => {
    const file = join(dir, 'wrong-server');
    writeFileSync(file, kubeconfigFor('http://127.0.0.1:1', 't'));
    for (const args of [[`--kubeconfig=${file}`, `--master=${api.url}`], [`--master=${api.url}`]]) {
      const source = await createApiSource(options([...args, '--hostname-override=node-2']), {
        env: {},
        reflector: FAST,
      });
      try {
        await source.start();
        assert.deepEqual([...(source.current()?.nodes.keys() ?? [])], ['node-2'], args.join(' '));
      } finally {
        await source.stop();
      }
    }
  });

  it('a broken kubeconfig names the file', async () => {
    const file = join(dir, 'broken');
    writeFileSync(file, 'apiVersion: v1\nkind: Config\ncurrent-context: nope\n');
    await assert.rejects(
      createApiSource(options([`--kubeconfig=${file}`, '--hostname-override=node-1']), { env: {} }),
      new RegExp(`kubeconfig ${file}`),
    );
  });
});
