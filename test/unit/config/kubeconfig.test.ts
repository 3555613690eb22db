import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { kubeTransport } from '../../../src/kube/informer.js';
import {
  credentialsWithheldOverHttp,
  KubeConfigError,
  loadKubeConfig,
  SERVICE_ACCOUNT_DIR,
} from '../../../src/kube/kubeconfig.js';
import { redactSecrets, redactUrlCredentials } from '../../../src/util/log.js';
import { FakeApiServer } from '../../support/fake-apiserver.js';

function kubeconfigYaml(server: string, extraUser = 'token: abc'): string {
  return `apiVersion: v1
kind: Config
clusters:
- name: c1
  cluster:
    server: ${server}
users:
- name: u1
  user:
    ${extraUser}
contexts:
- name: ctx
  context: {cluster: c1, user: u1}
current-context: ctx
`;
}

describe('loadKubeConfig', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'svcplane-kc-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('fails clearly without --kubeconfig, pod environment or --master (no localhost fallback)', () => {
    assert.throws(
      () => loadKubeConfig({ env: {} }),
      (e: unknown) =>
        e instanceof KubeConfigError &&
        e.message === 'no cluster configuration: pass --kubeconfig, run in a pod, or use --manifests',
    );
  });

  it('loads --kubeconfig and sets skipTLSVerify for plain-HTTP servers (client-node trap)', async () => {
    const file = path.join(dir, 'kc.yaml');
    await writeFile(file, kubeconfigYaml('http://127.0.0.1:1234'));
    const kc = loadKubeConfig({ kubeconfig: file, env: {} });
    assert.equal(kc.getCurrentCluster()!.server, 'http://127.0.0.1:1234');
    assert.equal(kc.getCurrentCluster()!.skipTLSVerify, true);
    assert.equal(kc.getCurrentUser()!.token, 'abc');
  });

  it('keeps TLS verification for https servers', async () => {
    const file = path.join(dir, 'kc.yaml');
    await writeFile(file, kubeconfigYaml('https://api.example:6443'));
    assert.equal(loadKubeConfig({ kubeconfig: file }).getCurrentCluster()!.skipTLSVerify, false);
  });

  it('--master overrides the kubeconfig server', async () => {
    const file = path.join(dir, 'kc.yaml');
    await writeFile(file, kubeconfigYaml('https://api.example:6443'));
    const kc = loadKubeConfig({ kubeconfig: file, master: 'http://127.0.0.1:8001' });
    assert.equal(kc.getCurrentCluster()!.server, 'http://127.0.0.1:8001');
    assert.equal(kc.getCurrentCluster()!.skipTLSVerify, true);
  });

  it('--master alone is used as given, without credentials', () => {
    const kc = loadKubeConfig({ master: 'https://10.0.0.1:6443', env: {} });
    assert.equal(kc.getCurrentCluster()!.server, 'https://10.0.0.1:6443');
    assert.throws(() => loadKubeConfig({ master: 'ftp://x', env: {} }), /--master.*http/);
    assert.throws(() => loadKubeConfig({ master: 'not a url', env: {} }), /invalid API server URL/);
  });

  it('reports unreadable or incomplete kubeconfig files with the path', async () => {
    assert.throws(
      () => loadKubeConfig({ kubeconfig: path.join(dir, 'missing') }),
      /cannot load kubeconfig .*missing/,
    );
    const file = path.join(dir, 'noctx.yaml');
    await writeFile(
      file,
      kubeconfigYaml('https://x:6443').replace('current-context: ctx', 'current-context: other'),
    );
    assert.throws(() => loadKubeConfig({ kubeconfig: file }), /noctx\.yaml: no current cluster/);
  });

  it('a YAML error names the line and column but never quotes the file (it may hold a token)', async () => {
    const file = path.join(dir, 'broken.yaml');
    await writeFile(
      file,
      kubeconfigYaml('https://x:6443', 'token: s3cr3t-t0ken, [').replace('contexts:', ']'),
    );
    let message = '';
    try {
      loadKubeConfig({ kubeconfig: file });
    } catch (err) {
      assert.ok(err instanceof KubeConfigError);
      assert.equal(err.cause, undefined, 'the parser error (with its excerpt) is not kept');
      message = err.message;
    }
    assert.match(message, /cannot load kubeconfig .*broken\.yaml: invalid YAML: .+ at line \d+, column \d+$/);
    assert.ok(!message.includes('s3cr3t'), message);
    assert.ok(!message.includes('\n'), 'one line');
  });

  it('never repeats URL credentials in its errors', () => {
    assert.throws(
      () => loadKubeConfig({ master: 'ftp://admin:hunter2@x:6443' }),
      (err: Error) => err.message.includes('"ftp://x:6443"') && !err.message.includes('hunter2'),
    );
  });

  it('logs strip user:password@ from URLs in any string field', () => {
    assert.equal(
      redactUrlCredentials('GET https://u:p@ss@10.0.0.1:6443/api failed; see http://h/x@y'),
      'GET https://10.0.0.1:6443/api failed; see http://h/x@y',
    );
    assert.deepEqual(redactSecrets({ error: { message: 'connect http://a:b@h:1 refused' }, n: 1 }), {
      error: { message: 'connect http://h:1 refused' },
      n: 1,
    });
  });

  it('uses the in-cluster service account when running in a pod', async () => {
    const sa = path.join(dir, SERVICE_ACCOUNT_DIR);
    await mkdir(sa, { recursive: true });
    await writeFile(path.join(sa, 'token'), 'sa-token');
    await writeFile(path.join(sa, 'ca.crt'), '');
    const env = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };
    const kc = loadKubeConfig({ env, inClusterPathPrefix: dir });
    assert.equal(kc.getCurrentCluster()!.server, 'https://10.96.0.1:443');
    assert.equal(kc.getCurrentCluster()!.caFile, path.join(sa, 'ca.crt'));
    const ipv6 = loadKubeConfig({
      env: { ...env, KUBERNETES_SERVICE_HOST: 'fd00::1' },
      inClusterPathPrefix: dir,
    });
    assert.equal(ipv6.getCurrentCluster()!.server, 'https://[fd00::1]:443');
  });

  it('explains a pod without a service-account token', () => {
    const env = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };
    assert.throws(
      () => loadKubeConfig({ env, inClusterPathPrefix: dir }),
      /service-account token .* is missing/,
    );
  });

  it('talks to an HTTPS API through the loaded configuration (its CA), with the bearer token', async () => {
    const api = await FakeApiServer.create({ tls: true, tokens: ['abc'] });
    try {
      const file = path.join(dir, 'kc.yaml');
      await writeFile(file, api.kubeconfigYaml('{token: abc}'));
      const res = await kubeTransport(loadKubeConfig({ kubeconfig: file })).get(
        '/api/v1/nodes',
        new AbortController().signal,
      );
      assert.equal(res.status, 200);
      assert.equal(api.lastAuthorization, 'Bearer abc');
      res.body.destroy();
    } finally {
      await api.stop();
    }
  });

  it('sends no credentials to a plain-HTTP API (as client-go), and says which are withheld', async () => {
    const api = await FakeApiServer.create();
    try {
      const file = path.join(dir, 'kc.yaml');
      await writeFile(file, kubeconfigYaml(api.url));
      const kc = loadKubeConfig({ kubeconfig: file });
      assert.deepEqual(credentialsWithheldOverHttp(kc), ['token']);
      const res = await kubeTransport(kc).get('/api/v1/nodes', new AbortController().signal);
      assert.equal(res.status, 200);
      assert.equal(api.lastAuthorization, undefined, 'no Authorization header over http');
      res.body.destroy();
      // --master http://… overrides an https kubeconfig: the same.
      const https = path.join(dir, 'https.yaml');
      await writeFile(https, kubeconfigYaml('https://10.0.0.1:6443'));
      assert.deepEqual(credentialsWithheldOverHttp(loadKubeConfig({ kubeconfig: https })), []);
      assert.deepEqual(credentialsWithheldOverHttp(loadKubeConfig({ kubeconfig: https, master: api.url })), [
        'token',
      ]);
    } finally {
      await api.stop();
    }
  });
});
