import { strict as assert } from 'node:assert';
import { ApiSource, resourceSpecs } from '../../../src/kube/api-source.js';
import { backoffDelay, buildQuery, kubeTransport, Reflector } from '../../../src/kube/informer.js';
import type { ReflectorOptions } from '../../../src/kube/informer.js';
import { ClusterStateBuilder, type SourceObject } from '../../../src/model/build.js';
import type { ClusterState, Problem } from '../../../src/model/types.js';
import { FakeApiServer } from '../../support/fake-apiserver.js';

const NODE = 'node-1';

/** Short timings so every failure mode is exercised in well under a few seconds. */
const FAST: Partial<ReflectorOptions> = {
  watchTimeoutSeconds: 1,
  watchdogGraceMs: 200,
  listIdleTimeoutMs: 1000,
  minWatchMs: 100,
  backoff: { initialMs: 20, maxMs: 200, factor: 2, jitter: 0.2 },
};

function service(name: string, clusterIP: string, labels: Record<string, string> = {}): object {
  return {
    metadata: { name, namespace: 'default', labels },
    spec: {
      type: 'ClusterIP',
      clusterIP,
      clusterIPs: [clusterIP],
      selector: { app: name },
      ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
    },
  };
}

function slice(svc: string, ips: string[], labels: Record<string, string> = {}, name = `${svc}-abc`): object {
  return {
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': svc, ...labels } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: NODE })),
    ports: [{ name: '', port: 8080, protocol: 'TCP' }],
  };
}

function node(name: string): object {
  return {
    metadata: { name, labels: {} },
    status: { addresses: [{ type: 'InternalIP', address: '192.168.0.1' }] },
  };
}

async function waitFor(cond: () => boolean, ms = 4000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function endpointIPs(state: ClusterState | undefined, key: string): string[] {
  return (state?.services.get(key)?.ports[0]?.endpoints ?? []).map((e) => e.ip);
}

describe('ApiSource against the API stand-in', function () {
  this.timeout(15000);
  let api: FakeApiServer;
  let source: ApiSource | undefined;
  let states: ClusterState[];
  let built: (readonly SourceObject[])[];

  const makeSource = (
    opts: { healthGraceMs?: number; reflector?: Partial<ReflectorOptions> } = {},
  ): ApiSource => {
    source = new ApiSource(api.kubeConfig(), {
      nodeName: NODE,
      debounceMs: 5,
      healthGraceMs: opts.healthGraceMs ?? 60_000,
      reflector: opts.reflector ?? FAST,
      builder: new (class extends ClusterStateBuilder {
        override set(group: string, objects: readonly SourceObject[], problems?: readonly Problem[]): void {
          built.push(objects);
          super.set(group, objects, problems);
        }
      })(),
    });
    source.onChange((s) => states.push(s));
    return source;
  };

  beforeEach(async () => {
    api = await FakeApiServer.create({ bookmarkIntervalMs: 100 });
    states = [];
    built = [];
    api.create('Node', node(NODE));
    api.create('Node', node('other-node'));
    api.create('Service', service('web', '10.96.0.10'));
    api.create('EndpointSlice', slice('web', ['10.0.0.1', '10.0.0.2']));
  });

  afterEach(async () => {
    await source?.stop();
    source = undefined;
    await api.stop();
  });

  it('resolves start() only after every initial list, then has the complete state', async () => {
    await api.stop();
    const s = makeSource();
    let resolved = false;
    const started = s.start().then(() => (resolved = true));
    await sleep(200);
    assert.equal(resolved, false);
    assert.equal(s.current(), undefined);
    await api.start();
    await started;
    const st = s.current()!;
    assert.deepEqual([...st.services.keys()], ['default/web']);
    assert.deepEqual(endpointIPs(st, 'default/web'), ['10.0.0.1', '10.0.0.2']);
    assert.deepEqual([...st.nodes.keys()], [NODE], 'only this node, by field selector');
    assert.equal(states.length, 0, 'the initial state is not a change');
  });

  it('watches only what kube-proxy watches (label and field selectors)', async () => {
    api.create(
      'Service',
      service('foreign', '10.96.0.20', { 'service.kubernetes.io/service-proxy-name': 'x' }),
    );
    api.create('EndpointSlice', slice('headless', ['10.0.1.1'], { 'service.kubernetes.io/headless': '' }));
    const s = makeSource();
    await s.start();
    const names = built
      .flat()
      .map((o) => (o.obj as { metadata: { name: string } }).metadata.name)
      .sort();
    assert.deepEqual(names, [NODE, 'web', 'web-abc']);
    const specs = resourceSpecs(NODE);
    assert.equal(
      buildQuery(specs.slices, {}),
      '/apis/discovery.k8s.io/v1/endpointslices?labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name',
    );
    assert.equal(buildQuery(specs.node, {}), '/api/v1/nodes?fieldSelector=metadata.name%3Dnode-1');
  });

  it('propagates adds, updates (scaling) and deletes', async () => {
    const s = makeSource();
    await s.start();
    api.create('Service', service('api', '10.96.0.11'));
    api.create('EndpointSlice', slice('api', ['10.0.2.1']));
    await waitFor(() => endpointIPs(s.current(), 'default/api').length === 1, 4000, 'add');
    api.update('EndpointSlice', slice('api', ['10.0.2.1', '10.0.2.2', '10.0.2.3']));
    await waitFor(() => endpointIPs(s.current(), 'default/api').length === 3, 4000, 'scale up');
    api.update('EndpointSlice', slice('api', []));
    await waitFor(() => endpointIPs(s.current(), 'default/api').length === 0, 4000, 'scale to zero');
    api.delete('EndpointSlice', 'default', 'api-abc');
    api.delete('Service', 'default', 'api');
    await waitFor(() => !s.current()!.services.has('default/api'), 4000, 'delete');
    assert.ok(s.current()!.services.has('default/web'));
    assert.ok(states.length >= 4 && states.length <= 6, `batched emissions: ${states.length}`);
    assert.equal(states[states.length - 1], s.current());
  });

  it('batches a burst of changes into few states', async () => {
    const s = makeSource();
    await s.start();
    for (let i = 0; i < 20; i++) api.create('Service', service(`burst-${i}`, `10.96.1.${i + 1}`));
    await waitFor(() => s.current()!.services.size === 21);
    assert.ok(states.length <= 5, `emissions: ${states.length}`);
  });

  it('emits nothing on re-watch after server-closed watches (objects unchanged)', async () => {
    const s = makeSource();
    await s.start();
    const lists = api.requests(undefined, 'list');
    for (let i = 0; i < 3; i++) {
      api.closeAllWatches();
      await sleep(100);
    }
    await waitFor(() => api.openWatches === 3, 2000, 'watches re-opened');
    assert.equal(api.requests(undefined, 'list'), lists, 're-watch from the last resourceVersion, no relist');
    assert.equal(states.length, 0);
    api.update('Service', {
      ...service('web', '10.96.0.10'),
      spec: {
        ...(service('web', '10.96.0.10') as { spec: object }).spec,
        ports: [{ port: 81, protocol: 'TCP' }],
      },
    });
    await waitFor(() => states.length === 1, 4000, 'change after re-watch');
  });

  it('relists on 410 Gone and emits nothing when the objects did not change', async () => {
    const s = makeSource();
    await s.start();
    const lists = api.requests(undefined, 'list');
    await api.stop();
    // Advance the global resourceVersion without touching anything the source watches, then compact.
    api.create(
      'Service',
      service('foreign', '10.96.0.30', { 'service.kubernetes.io/service-proxy-name': 'x' }),
    );
    api.compact();
    await api.start();
    await waitFor(() => api.requests(undefined, 'list') >= lists + 3, 4000, 'relists');
    await waitFor(() => api.openWatches === 3, 2000, 'watches re-opened');
    await sleep(100);
    assert.equal(states.length, 0, 'no state churn on an unchanged relist');
    assert.equal(built.length, 3, 'the relisted objects (same versions) are not validated again');
  });

  it('hands the builder only the objects that changed (issue 14: O(changed) per change)', async () => {
    const s = makeSource();
    await s.start();
    assert.equal(built.length, 3, 'the initial objects, one group each');
    api.update('EndpointSlice', slice('web', ['10.0.0.7']));
    await waitFor(() => endpointIPs(s.current(), 'default/web')[0] === '10.0.0.7', 4000, 'update');
    api.delete('Service', 'default', 'web');
    await waitFor(() => !s.current()!.services.has('default/web'), 4000, 'delete');
    const names = built.slice(3).map((objs) => objs.map((o) => (o.obj as { kind: string }).kind));
    assert.deepEqual(names, [['EndpointSlice']], 'one object set, the Service deleted by its group');
  });

  it('recovers a change missed during an outage through the 410 relist', async () => {
    const s = makeSource();
    await s.start();
    await api.stop();
    api.update('EndpointSlice', slice('web', ['10.0.0.9']));
    api.compact();
    await api.start();
    await waitFor(() => endpointIPs(s.current(), 'default/web').join() === '10.0.0.9', 4000, 'relist');
    assert.equal(states.length, 1);
  });

  it('after stop()/start() of the API (history intact) re-watches from its resourceVersion', async () => {
    const s = makeSource();
    await s.start();
    await api.stop();
    api.create('Service', service('during-outage', '10.96.0.12'));
    await sleep(300);
    assert.ok(s.current()!.services.has('default/web'), 'the last state stays during the outage');
    const lists = api.requests(undefined, 'list');
    await api.start();
    await waitFor(() => s.current()!.services.has('default/during-outage'), 4000, 'event from history');
    assert.equal(api.requests(undefined, 'list'), lists, 'no relist needed');
    assert.equal(states.length, 1);
  });

  it('backs off on HTTP 500s (no hot loop) and recovers', async () => {
    const s = makeSource();
    await s.start();
    api.failNext(1_000_000, 500);
    api.closeAllWatches();
    const t0 = Date.now();
    api.resetCounts();
    await sleep(1000);
    const n = api.requestsSince(t0);
    // 3 reflectors, backoff 20 ms doubling to 200 ms: about 8 attempts each per second.
    assert.ok(n >= 3 && n <= 40, `requests in 1 s while failing: ${n}`);
    api.failNext(0);
    api.create('Service', service('after-500', '10.96.0.13'));
    await waitFor(() => s.current()!.services.has('default/after-500'), 4000, 'recovery');
  });

  it('backs off when the server closes every watch at once', async () => {
    const s = makeSource();
    await s.start();
    // The server (or a proxy in front of it) ends each watch right after its headers, with no events.
    api.closeWatchesAtOnce();
    api.closeAllWatches();
    const t0 = Date.now();
    await sleep(1000);
    const n = api.requestsSince(t0, undefined, 'watch');
    assert.ok(n >= 3 && n <= 40, `watch requests in 1 s: ${n}`);
    assert.equal(states.length, 0);
  });

  it('detects a stalled (dead) watch with the idle watchdog and re-watches', async () => {
    const s = makeSource();
    await s.start();
    api.stallWatches();
    api.update('EndpointSlice', slice('web', ['10.0.0.7']));
    await sleep(300);
    assert.deepEqual(endpointIPs(s.current(), 'default/web'), ['10.0.0.1', '10.0.0.2'], 'nothing arrives');
    api.stallWatches(false);
    // watchdog: timeoutSeconds (1 s) + grace (200 ms) of silence.
    await waitFor(() => endpointIPs(s.current(), 'default/web').join() === '10.0.0.7', 4000, 'watchdog');
  });

  it('turns unhealthy after the grace period of an outage and healthy again after it', async () => {
    const s = makeSource({ healthGraceMs: 300 });
    await s.start();
    assert.deepEqual(s.health(), { healthy: true });
    const before = s.current();
    await api.stop();
    await sleep(150);
    assert.equal(s.health().healthy, true, 'within the grace period');
    await waitFor(() => !s.health().healthy, 3000, 'unhealthy');
    const h = s.health();
    assert.equal(h.problem, 'api-unreachable');
    // Fixed words: the category and the resources down (those past the grace period so far).
    assert.match(
      h.reason!,
      /^api-unreachable: (services|endpointslices|nodes) for \d+s(, (endpointslices|nodes) for \d+s)*$/,
    );
    assert.equal(s.current(), before, 'the last state stays available');
    await api.start();
    await waitFor(() => s.health().healthy, 4000, 'healthy again');
    assert.equal(states.length, 0);
  });

  it('a server that rejects the token: unhealthy after the grace period as api-unauthorized, no text', async () => {
    await api.stop();
    api = await FakeApiServer.create({ tls: true, tokens: ['the-right-one'] });
    source = new ApiSource(api.kubeConfig('a-wrong-token'), {
      nodeName: NODE,
      healthGraceMs: 200,
      reflector: FAST,
    });
    const started = source.start();
    started.catch(() => undefined);
    await waitFor(() => !source!.health().healthy, 4000, 'unhealthy');
    const h = source.health();
    assert.equal(h.problem, 'api-unauthorized');
    assert.doesNotMatch(h.reason ?? '', /Unauthorized|token/);
    assert.ok(api.log.length >= 3, 'the lists were tried');
    assert.ok(
      api.log.every((r) => r.status === 401),
      JSON.stringify(api.log.map((r) => r.status)),
    );
  });

  it('needs only the RBAC verbs list and watch: no single-object GET, also across relists', async () => {
    const s = makeSource();
    await s.start();
    api.update('Node', node(NODE));
    api.create('Service', service('more', '10.96.0.14'));
    await waitFor(() => s.current()!.services.has('default/more'), 4000, 'change');
    const lists = api.requests(undefined, 'list');
    await api.stop();
    // Past every reflector's resourceVersion, then compacted: the re-watches get 410 and relist.
    api.create(
      'Service',
      service('foreign', '10.96.0.31', { 'service.kubernetes.io/service-proxy-name': 'x' }),
    );
    api.compact();
    await api.start();
    await waitFor(() => api.requests(undefined, 'list') >= lists + 3, 4000, 'relists after 410');
    assert.ok(api.requests('Node', 'list') >= 2 && api.requests('Node', 'watch') >= 1);
    assert.equal(api.requests(undefined, 'get'), 0);
  });

  it('a non-410 ERROR event: backoff, re-watch from the last resourceVersion (no relist), nothing lost', async () => {
    const s = makeSource();
    await s.start();
    api.update('EndpointSlice', slice('web', ['10.0.0.3']));
    await waitFor(() => endpointIPs(s.current(), 'default/web').join() === '10.0.0.3', 4000, 'update');
    const lists = api.requests(undefined, 'list');
    const watches = api.requests(undefined, 'watch');
    assert.equal(api.injectWatchError(500, 'etcdserver: request timed out'), 3);
    await waitFor(() => api.openWatches === 3, 4000, 'watches re-opened');
    // A change after the error arrives through the new watches …
    api.update('EndpointSlice', slice('web', ['10.0.0.4']));
    await waitFor(() => endpointIPs(s.current(), 'default/web').join() === '10.0.0.4', 4000, 'after error');
    // … which started from the last resourceVersion: no relist, and the store kept every object.
    assert.equal(api.requests(undefined, 'list'), lists, 'no relist after a non-410 error');
    assert.ok(api.requests(undefined, 'watch') >= watches + 3);
    assert.deepEqual([...s.current()!.services.keys()], ['default/web']);
    assert.deepEqual([...s.current()!.nodes.keys()], [NODE]);
    assert.deepEqual(s.health(), { healthy: true }, 'a short error is no outage');
    // 429 too; and a 410 ERROR event (the API's way to expire a watch) relists.
    assert.equal(api.injectWatchError(429, 'too many requests', 'Service'), 1);
    await waitFor(() => api.openWatches === 3, 4000, 're-watch after 429');
    assert.equal(api.requests(undefined, 'list'), lists);
    assert.equal(api.injectWatchError(410, 'too old resource version', 'Node'), 1);
    await waitFor(() => api.requests('Node', 'list') === 2, 4000, 'relist after a 410 ERROR event');
    assert.equal(api.requests(undefined, 'list'), lists + 1);
  });

  it('a hung LIST is aborted after listIdleTimeoutMs and retried; start() resolves once lists answer', async () => {
    api.stallLists();
    const s = makeSource(); // listIdleTimeoutMs 1000
    let resolved = false;
    const t0 = Date.now();
    const started = s.start().then(() => (resolved = true));
    await waitFor(() => api.hungListCount === 3, 2000, 'three hung lists');
    await sleep(600);
    assert.equal(api.requests(undefined, 'list'), 3, 'no retry before the list timeout');
    // The client gives up on each hung list (the stand-in sees the connection close) and retries.
    await waitFor(() => api.requests(undefined, 'list') >= 6, 3000, 'lists retried');
    assert.ok(Date.now() - t0 >= 1000, 'retried only after listIdleTimeoutMs');
    assert.ok(api.hungListCount <= 3, `only the current attempts hang (${api.hungListCount})`);
    assert.equal(resolved, false, 'no sync from an incomplete list');
    assert.equal(s.current(), undefined);
    api.stallLists(false);
    await started;
    assert.deepEqual(endpointIPs(s.current(), 'default/web'), ['10.0.0.1', '10.0.0.2']);
    await waitFor(() => api.hungListCount === 0, 3000, 'hung lists given up');
  });

  it('a BOOKMARK advances the resourceVersion, so a re-watch after compaction needs no relist', async () => {
    // The Node reflector sees no event while Services change: only bookmarks tell it the new
    // resourceVersion. After compaction, its re-watch from that resourceVersion is still valid.
    const runNodeReflector = async (server: FakeApiServer): Promise<{ relisted: boolean; rv?: string }> => {
      const r = new Reflector(kubeTransport(server.kubeConfig()), resourceSpecs(NODE).node, FAST);
      r.start();
      try {
        await r.waitForSync();
        const listedRv = r.status().resourceVersion;
        for (let i = 0; i < 3; i++) server.create('Service', service(`bm-${i}`, `10.96.2.${i + 1}`));
        await sleep(400); // several bookmark periods (100 ms here)
        const rv = r.status().resourceVersion;
        const lists = server.requests('Node', 'list');
        const watches = server.requests('Node', 'watch');
        server.compact();
        server.closeAllWatches();
        await waitFor(() => server.requests('Node', 'watch') > watches && server.openWatches === 1, 4000);
        await sleep(200);
        assert.notEqual(listedRv, undefined);
        return { relisted: server.requests('Node', 'list') > lists, ...(rv !== listedRv ? { rv } : {}) };
      } finally {
        await r.stop();
      }
    };
    const withBookmarks = await runNodeReflector(api);
    assert.equal(withBookmarks.rv, api.resourceVersion, 'the bookmark carried the latest resourceVersion');
    assert.equal(withBookmarks.relisted, false, 'no relist: the bookmark kept the watch valid');

    // The same without bookmarks (period far beyond the test): the re-watch is too old → 410 → relist.
    const quiet = await FakeApiServer.create({ bookmarkIntervalMs: 600_000 });
    try {
      quiet.create('Node', node(NODE));
      const without = await runNodeReflector(quiet);
      assert.equal(without.rv, undefined, 'no bookmark, no new resourceVersion');
      assert.equal(without.relisted, true);
    } finally {
      await quiet.stop();
    }
  });

  it('stop() before the initial sync rejects start()', async () => {
    await api.stop();
    const s = makeSource();
    const started = s.start();
    await sleep(50);
    await s.stop();
    await assert.rejects(started, /stopped before initial sync/);
  });
});

describe('Reflector helpers', () => {
  it('backoffDelay grows exponentially to the cap, with jitter below the base', () => {
    const b = { initialMs: 200, maxMs: 30_000, factor: 2, jitter: 0.5 };
    assert.equal(backoffDelay(0, b), 0);
    assert.equal(
      backoffDelay(1, b, () => 0),
      200,
    );
    assert.equal(
      backoffDelay(4, b, () => 0),
      1600,
    );
    assert.equal(
      backoffDelay(50, b, () => 0),
      30_000,
    );
    assert.equal(
      backoffDelay(50, b, () => 1),
      15_000,
    );
  });

  it('a reflector lists with resourceVersion=0 and limit=500, and watches with bookmarks and a timeout', async () => {
    const api = await FakeApiServer.create();
    const seen: string[] = [];
    const transport = {
      get: async (p: string, signal: AbortSignal) => {
        seen.push(p);
        const { kubeTransport } = await import('../../../src/kube/informer.js');
        return kubeTransport(api.kubeConfig()).get(p, signal);
      },
    };
    const r = new Reflector(transport, resourceSpecs(NODE).services, FAST);
    r.start();
    await r.waitForSync();
    await waitFor(() => seen.length >= 2);
    await r.stop();
    await api.stop();
    // As client-go sends them: keys sorted, the first list from the watch cache in pages of 500.
    const sel = 'labelSelector=%21service.kubernetes.io%2Fservice-proxy-name';
    assert.equal(seen[0], `/api/v1/services?${sel}&limit=500&resourceVersion=0`);
    assert.match(
      seen[1]!,
      new RegExp(
        `^/api/v1/services\\?allowWatchBookmarks=true&${sel}&resourceVersion=\\d+&timeoutSeconds=1&watch=true$`,
      ),
    );
  });
});
