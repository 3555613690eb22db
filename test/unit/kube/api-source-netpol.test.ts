import { strict as assert } from 'node:assert';
import { ApiSource } from '../../../src/kube/api-source.js';
import { kubeTransport, Reflector, type ReflectorOptions } from '../../../src/kube/informer.js';
import { NETWORK_POLICY_RESOURCES } from '../../../src/kube/policy-resources.js';
import type { ClusterState } from '../../../src/model/types.js';
import { FakeApiServer } from '../../support/fake-apiserver.js';

/**
 * The API source with NetworkPolicy enforcement on: NetworkPolicies, Pods and Namespaces of every
 * namespace, finished pods filtered by the server, objects cut to what the model reads, and pod
 * status writes that change nothing policy reads waking nobody. Off (the default), none of it is
 * even listed.
 */

const NODE = 'node-1';
const FAST: Partial<ReflectorOptions> = {
  watchTimeoutSeconds: 1,
  watchdogGraceMs: 200,
  listIdleTimeoutMs: 1000,
  minWatchMs: 100,
  backoff: { initialMs: 20, maxMs: 200, factor: 2, jitter: 0.2 },
};

type Rec = Record<string, unknown>;

async function waitFor(cond: () => boolean, ms = 4000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const pod = (name: string, ns: string, ip: string, labels: Rec = {}, node = NODE): Rec => ({
  metadata: { name, namespace: ns, labels: { app: name, ...labels }, annotations: { note: 'x'.repeat(200) } },
  spec: {
    nodeName: node,
    serviceAccountName: 'default',
    containers: [
      {
        name: 'c',
        image: 'agnhost:2.52',
        args: ['serve-hostname'],
        ports: [{ name: 'http', containerPort: 80 }],
      },
    ],
  },
  status: {
    phase: 'Running',
    podIP: ip,
    podIPs: [{ ip }],
    conditions: [{ type: 'Ready', status: 'True' }],
    containerStatuses: [{ name: 'c', ready: true, restartCount: 0 }],
  },
});

/** Creates a pod as a client would, then writes its status as the kubelet would. */
function runPod(api: FakeApiServer, p: Rec): void {
  api.create('Pod', p);
  api.update('Pod', p);
}

describe('ApiSource: NetworkPolicy resources', function () {
  this.timeout(15000);
  let api: FakeApiServer;
  let source: ApiSource | undefined;
  let states: ClusterState[];

  const makeSource = (networkPolicy: boolean): ApiSource => {
    source = new ApiSource(api.kubeConfig(), {
      nodeName: NODE,
      debounceMs: 5,
      reflector: FAST,
      networkPolicy,
    });
    source.onChange((s) => states.push(s));
    return source;
  };

  beforeEach(async () => {
    api = await FakeApiServer.create({ bookmarkIntervalMs: 100 });
    states = [];
    api.create('Node', {
      metadata: { name: NODE },
      status: { addresses: [{ type: 'InternalIP', address: '192.168.0.1' }] },
    });
    api.create('Namespace', { metadata: { name: 'x', labels: { team: 'blue' } } });
    api.create('Namespace', { metadata: { name: 'y' } });
    runPod(api, pod('a', 'x', '10.244.1.10'));
    runPod(api, pod('b', 'y', '10.244.2.20', {}, 'node-2'));
    const done = pod('done', 'x', '10.244.1.11');
    runPod(api, done);
    api.update('Pod', { ...done, status: { phase: 'Succeeded' } });
    api.create('NetworkPolicy', {
      metadata: { name: 'deny', namespace: 'x' },
      spec: {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'blue' } } }] }],
      },
    });
  });

  afterEach(async () => {
    await source?.stop();
    source = undefined;
    await api.stop();
  });

  it('off (the default): NetworkPolicies, Pods and Namespaces are not even listed', async () => {
    const s = makeSource(false);
    await s.start();
    for (const kind of ['NetworkPolicy', 'Pod', 'Namespace'] as const)
      assert.equal(api.requests(kind), 0, kind);
    assert.equal(s.current()?.pods?.size, 0);
  });

  it('on: every namespace, pods of every node but finished ones, defaulted policies, in the first state', async () => {
    const s = makeSource(true);
    await s.start();
    const st = s.current()!;
    assert.deepEqual(st.problems, []);
    assert.deepEqual([...st.namespaces!.keys()], ['x', 'y']);
    assert.deepEqual(st.namespaces!.get('x')!.labels, { team: 'blue', 'kubernetes.io/metadata.name': 'x' });
    assert.deepEqual([...st.pods!.keys()], ['x/a', 'y/b']);
    assert.deepEqual(st.pods!.get('y/b'), {
      namespace: 'y',
      name: 'b',
      labels: { app: 'b' },
      nodeName: 'node-2',
      hostNetwork: false,
      phase: 'Running',
      ips: ['10.244.2.20'],
      namedPorts: [{ name: 'http', protocol: 'TCP', port: 80 }],
    });
    assert.deepEqual(st.networkPolicies!.get('x/deny')!.policyTypes, ['Ingress']);
    const podLists = api.log.filter((r) => r.kind === 'Pod' && r.verb === 'list');
    assert.equal(podLists[0]?.query.fieldSelector, 'status.phase!=Succeeded,status.phase!=Failed');
    assert.equal(api.requests(undefined, 'get'), 0, 'list and watch only (the RBAC verbs)');
  });

  it('a label change, a new pod, a finished pod, a namespace label and a policy change reach the state', async () => {
    const s = makeSource(true);
    await s.start();
    api.update('Pod', pod('a', 'x', '10.244.1.10', { role: 'db' }));
    await waitFor(() => s.current()!.pods!.get('x/a')!.labels.role === 'db', 4000, 'pod label');
    runPod(api, pod('c', 'y', '10.244.2.30'));
    await waitFor(() => s.current()!.pods!.has('y/c'), 4000, 'new pod');
    api.update('Pod', { ...pod('c', 'y', '10.244.2.30'), status: { phase: 'Failed' } });
    await waitFor(() => !s.current()!.pods!.has('y/c'), 4000, 'finished pod gone');
    api.update('Namespace', { metadata: { name: 'y', labels: { team: 'red' } } });
    await waitFor(() => s.current()!.namespaces!.get('y')!.labels.team === 'red', 4000, 'namespace label');
    api.delete('NetworkPolicy', 'x', 'deny');
    await waitFor(() => s.current()!.networkPolicies!.size === 0, 4000, 'policy deleted');
  });
});

describe('Reflector with a transform (pods)', function () {
  this.timeout(15000);
  let api: FakeApiServer;
  let reflector: Reflector | undefined;

  beforeEach(async () => {
    api = await FakeApiServer.create({ bookmarkIntervalMs: 100 });
  });
  afterEach(async () => {
    await reflector?.stop();
    await api.stop();
  });

  it('stores pods cut to what the model reads; a status write policy cannot see wakes nobody', async () => {
    runPod(api, pod('a', 'x', '10.244.1.10'));
    const spec = NETWORK_POLICY_RESOURCES.find((r) => r.kind === 'Pod')!;
    reflector = new Reflector(kubeTransport(api.kubeConfig()), spec, FAST);
    let changes = 0;
    reflector.onChange(() => changes++);
    reflector.start();
    await reflector.waitForSync();
    const stored = reflector.items().get('x/a')!;
    assert.deepEqual(stored, {
      kind: 'Pod',
      apiVersion: 'v1',
      metadata: {
        name: 'a',
        namespace: 'x',
        resourceVersion: stored.metadata!.resourceVersion,
        labels: { app: 'a' },
      },
      spec: {
        nodeName: NODE,
        containers: [{ ports: [{ name: 'http', containerPort: 80, protocol: 'TCP' }] }],
      },
      status: { phase: 'Running', podIP: '10.244.1.10', podIPs: [{ ip: '10.244.1.10' }] },
    });
    const before = changes;
    // The kubelet reports a restart and readiness: nothing a policy reads.
    const p = pod('a', 'x', '10.244.1.10');
    const quiet = api.update('Pod', {
      ...p,
      status: {
        ...(p.status as Rec),
        conditions: [{ type: 'Ready', status: 'False' }],
        containerStatuses: [],
      },
    });
    await waitFor(
      () => reflector!.status().resourceVersion === quiet.metadata!.resourceVersion,
      4000,
      'event seen',
    );
    assert.equal(changes, before, 'no change for a status write policy cannot see');
    assert.equal(reflector.items().get('x/a'), stored, 'the stored object stays');
    const relabelled = api.update('Pod', pod('a', 'x', '10.244.1.10', { role: 'db' }));
    await waitFor(() => changes === before + 1, 4000, 'label change');
    assert.equal(
      reflector.items().get('x/a')!.metadata!.resourceVersion,
      relabelled.metadata!.resourceVersion,
    );
  });
});
