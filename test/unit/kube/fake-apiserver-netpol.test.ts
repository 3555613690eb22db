import { strict as assert } from 'node:assert';
import http from 'node:http';
import { FakeApiServer } from '../../support/fake-apiserver.js';

/**
 * The stand-in's NetworkPolicies, Pods and Namespaces answer as kube-apiserver's do: list shapes,
 * the registry's defaulting and generation, the pods' selectable fields, a namespace's two-step
 * deletion, bookmarks of each kind.
 */

type Rec = Record<string, unknown>;

async function getJson(url: string): Promise<{ status: number; body: Rec }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as Rec };
}

/** Events of a watch until `count` have come (or the time is up). */
function watchEvents(url: string, count: number, ms = 3000): Promise<Rec[]> {
  return new Promise((resolve, reject) => {
    const events: Rec[] = [];
    let buf = '';
    const req = http.get(url, (res) => {
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          events.push(JSON.parse(buf.slice(0, nl)) as Rec);
          buf = buf.slice(nl + 1);
        }
        if (events.length >= count) {
          clearTimeout(timer);
          req.destroy();
          resolve(events);
        }
      });
    });
    req.on('error', () => undefined);
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`${events.length} of ${count} events: ${JSON.stringify(events)}`));
    }, ms);
  });
}

const pod = (name: string, ns: string, extra: Rec = {}): Rec => ({
  metadata: { name, namespace: ns, labels: { app: name } },
  spec: {
    nodeName: 'node-1',
    containers: [{ name: 'c', image: 'agnhost:2.52', ports: [{ name: 'http', containerPort: 80 }] }],
    ...(extra.spec ?? {}),
  },
  status: { phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }] },
});

describe('FakeApiServer: NetworkPolicies, Pods, Namespaces', () => {
  let api: FakeApiServer;

  beforeEach(async () => {
    api = await FakeApiServer.create({ bookmarkIntervalMs: 50 });
  });
  afterEach(async () => {
    await api.stop();
  });

  it('lists each kind with its list kind and apiVersion, items without TypeMeta', async () => {
    api.create('Namespace', { metadata: { name: 'x' } });
    api.create('Pod', pod('a', 'x'));
    api.create('NetworkPolicy', { metadata: { name: 'p', namespace: 'x' }, spec: { podSelector: {} } });
    for (const [path, kind, apiVersion] of [
      ['/api/v1/namespaces', 'NamespaceList', 'v1'],
      ['/api/v1/pods', 'PodList', 'v1'],
      ['/api/v1/namespaces/x/pods', 'PodList', 'v1'],
      ['/apis/networking.k8s.io/v1/networkpolicies', 'NetworkPolicyList', 'networking.k8s.io/v1'],
      [
        '/apis/networking.k8s.io/v1/namespaces/x/networkpolicies',
        'NetworkPolicyList',
        'networking.k8s.io/v1',
      ],
    ] as const) {
      const { status, body } = await getJson(api.url + path);
      assert.equal(status, 200, path);
      assert.deepEqual([body.kind, body.apiVersion], [kind, apiVersion], path);
      const items = body.items as Rec[];
      assert.equal(items.length, 1, path);
      assert.equal(items[0]!.kind, undefined, `${path}: no kind on items`);
      assert.equal(items[0]!.apiVersion, undefined, `${path}: no apiVersion on items`);
    }
    const other = await getJson(`${api.url}/api/v1/namespaces/y/pods`);
    assert.deepEqual(other.body.items, []);
  });

  it('defaults a NetworkPolicy as the API server: protocol TCP, policyTypes; generation 1, bumped by spec changes', () => {
    const np = api.create('NetworkPolicy', {
      metadata: { name: 'p', namespace: 'x' },
      spec: {
        podSelector: {},
        ingress: [{ ports: [{ port: 80 }, { protocol: 'UDP', port: 53 }] }],
        egress: [{}],
      },
    });
    const spec = np.spec as Rec;
    assert.deepEqual(spec.policyTypes, ['Ingress', 'Egress']);
    assert.deepEqual((spec.ingress as Rec[])[0]!.ports, [
      { port: 80, protocol: 'TCP' },
      { protocol: 'UDP', port: 53 },
    ]);
    assert.equal(np.metadata!.generation, 1);
    const same = api.update('NetworkPolicy', { ...np, metadata: { ...np.metadata, labels: { a: 'b' } } });
    assert.equal(same.metadata!.generation, 1, 'a metadata change keeps the generation');
    const changed = api.update('NetworkPolicy', {
      metadata: { name: 'p', namespace: 'x' },
      spec: { podSelector: {} },
    });
    assert.equal(changed.metadata!.generation, 2);
    assert.deepEqual((changed.spec as Rec).policyTypes, ['Ingress']);
    const explicit = api.create('NetworkPolicy', {
      metadata: { name: 'q', namespace: 'x' },
      spec: { podSelector: {}, policyTypes: ['Egress'], ingress: [{}] },
    });
    assert.deepEqual((explicit.spec as Rec).policyTypes, ['Egress'], 'explicit policyTypes are kept');
  });

  it("a created Pod is Pending whatever the client says; the kubelet's status update sets its IPs", () => {
    const created = api.create('Pod', pod('a', 'x'));
    assert.deepEqual(created.status, { phase: 'Pending', qosClass: 'BestEffort' });
    const spec = created.spec as Rec;
    assert.equal(spec.restartPolicy, 'Always');
    assert.equal(spec.schedulerName, 'default-scheduler');
    const c = (spec.containers as Rec[])[0]!;
    assert.deepEqual(c.ports, [{ name: 'http', containerPort: 80, protocol: 'TCP' }]);
    assert.equal(c.imagePullPolicy, 'IfNotPresent');
    assert.equal(created.metadata!.generation, 1);
    const running = api.update('Pod', pod('a', 'x'));
    assert.equal((running.status as Rec).phase, 'Running');
    assert.equal(running.metadata!.generation, 1, 'a status write is no spec change');
  });

  it("serves the pods' selectable fields; a pod that finishes leaves a phase-filtered watch as DELETED", async () => {
    api.create('Pod', pod('a', 'x'));
    api.update('Pod', pod('a', 'x'));
    api.create('Pod', pod('host', 'x', { spec: { hostNetwork: true } }));
    api.update('Pod', pod('host', 'x', { spec: { hostNetwork: true } }));
    api.create('Pod', pod('done', 'x'));
    // Finished: the kubelet's last status carries no address any more.
    api.update('Pod', { ...pod('done', 'x'), status: { phase: 'Succeeded' } });
    const live = encodeURIComponent('status.phase!=Succeeded,status.phase!=Failed');
    const names = async (q: string): Promise<string[]> =>
      (
        (await getJson(`${api.url}/api/v1/pods?fieldSelector=${q}`)).body.items as {
          metadata: { name: string };
        }[]
      )
        .map((i) => i.metadata.name)
        .sort();
    assert.deepEqual(await names(live), ['a', 'host']);
    assert.deepEqual(await names(encodeURIComponent('spec.hostNetwork=true')), ['host']);
    assert.deepEqual(await names(encodeURIComponent('spec.nodeName=node-1,status.podIP=10.244.1.5')), [
      'a',
      'host',
    ]);
    const bad = await getJson(
      `${api.url}/api/v1/pods?fieldSelector=${encodeURIComponent('spec.containers=x')}`,
    );
    assert.equal(bad.status, 400);
    assert.match(String(bad.body.message), /field label not supported: spec.containers/);
    const badNp = await getJson(
      `${api.url}/apis/networking.k8s.io/v1/networkpolicies?fieldSelector=${encodeURIComponent('spec.podSelector=x')}`,
    );
    assert.equal(badNp.status, 400);
    assert.match(String(badNp.body.message), /"spec.podSelector" is not a known field selector/);

    const events = watchEvents(
      `${api.url}/api/v1/pods?watch=true&resourceVersion=${api.resourceVersion}&fieldSelector=${live}`,
      1,
    );
    await new Promise((r) => setTimeout(r, 50));
    api.update('Pod', { ...pod('a', 'x'), status: { phase: 'Failed' } });
    const [ev] = await events;
    assert.equal(ev!.type, 'DELETED');
    assert.equal(((ev!.object as Rec).metadata as Rec).name, 'a');
  });

  it('a Namespace carries kubernetes.io/metadata.name (always its name), a finalizer and phase Active', () => {
    const ns = api.create('Namespace', {
      metadata: { name: 'x', labels: { team: 'a', 'kubernetes.io/metadata.name': 'other' } },
    });
    assert.deepEqual(ns.metadata!.labels, { team: 'a', 'kubernetes.io/metadata.name': 'x' });
    assert.deepEqual(ns.spec, { finalizers: ['kubernetes'] });
    assert.deepEqual(ns.status, { phase: 'Active' });
    assert.equal(ns.metadata!.namespace, undefined);
    const relabelled = api.update('Namespace', { metadata: { name: 'x', labels: { team: 'b' } } });
    assert.deepEqual(relabelled.metadata!.labels, { team: 'b', 'kubernetes.io/metadata.name': 'x' });
  });

  it('deletes a Namespace in two steps (Terminating, then gone), and only once it is empty', async () => {
    api.create('Namespace', { metadata: { name: 'x' } });
    api.create('Pod', pod('a', 'x'));
    assert.throws(() => api.delete('Namespace', '', 'x'), /delete its Pod first/);
    api.delete('Pod', 'x', 'a');
    const rv = api.resourceVersion;
    const events = watchEvents(`${api.url}/api/v1/namespaces?watch=true&resourceVersion=${rv}`, 2);
    await new Promise((r) => setTimeout(r, 50));
    api.delete('Namespace', '', 'x');
    const [modified, deleted] = await events;
    assert.equal(modified!.type, 'MODIFIED');
    assert.equal(((modified!.object as Rec).status as Rec).phase, 'Terminating');
    assert.ok(((modified!.object as Rec).metadata as Rec).deletionTimestamp);
    assert.equal(deleted!.type, 'DELETED');
    assert.equal(api.get('Namespace', '', 'x'), undefined);
  });

  it("bookmarks carry each kind's empty object", async () => {
    for (const [path, kind, extra] of [
      ['/apis/networking.k8s.io/v1/networkpolicies', 'NetworkPolicy', { spec: { podSelector: {} } }],
      ['/api/v1/pods', 'Pod', { spec: { containers: null }, status: {} }],
      ['/api/v1/namespaces', 'Namespace', { spec: {}, status: {} }],
    ] as const) {
      const [ev] = await watchEvents(
        `${api.url}${path}?watch=true&allowWatchBookmarks=true&resourceVersion=${api.resourceVersion}`,
        1,
      );
      assert.equal(ev!.type, 'BOOKMARK', path);
      const { metadata, ...rest } = ev!.object as Rec;
      assert.deepEqual(rest, {
        kind,
        apiVersion: kind === 'NetworkPolicy' ? 'networking.k8s.io/v1' : 'v1',
        ...extra,
      });
      assert.equal((metadata as Rec).resourceVersion, api.resourceVersion);
    }
  });
});
