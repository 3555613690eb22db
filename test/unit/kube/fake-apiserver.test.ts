import { strict as assert } from 'node:assert';
import http from 'node:http';
import {
  FakeApiServer,
  labelsMatch,
  parseFieldSelector,
  parseLabelSelector,
} from '../../support/fake-apiserver.js';

interface WatchEvent {
  type: string;
  object: { metadata?: { name?: string; resourceVersion?: string }; code?: number; message?: string };
}

/** A raw watch client: collects newline-delimited events. */
function openWatch(url: string): {
  events: WatchEvent[];
  status: Promise<number>;
  ended: Promise<void>;
  close: () => void;
} {
  const events: WatchEvent[] = [];
  let buf = '';
  let resolveStatus!: (n: number) => void;
  const status = new Promise<number>((r) => (resolveStatus = r));
  let resolveEnded!: () => void;
  const ended = new Promise<void>((r) => (resolveEnded = r));
  const req = http.get(url, (res) => {
    resolveStatus(res.statusCode ?? 0);
    res.setEncoding('utf8');
    res.on('data', (c: string) => {
      buf += c;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        events.push(JSON.parse(buf.slice(0, nl)) as WatchEvent);
        buf = buf.slice(nl + 1);
      }
    });
    res.on('end', () => resolveEnded());
    res.on('error', () => resolveEnded());
  });
  req.on('error', () => resolveEnded());
  return { events, status, ended, close: () => req.destroy() };
}

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const svc = (name: string, labels: Record<string, string> = {}, ns = 'default'): object => ({
  metadata: { name, namespace: ns, labels },
  spec: { clusterIP: '10.96.0.10', ports: [{ port: 80, protocol: 'TCP' }] },
});

async function getJson(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('FakeApiServer (Kubernetes API stand-in)', () => {
  let api: FakeApiServer;
  const watches: { close: () => void }[] = [];
  const watch = (path: string): ReturnType<typeof openWatch> => {
    const w = openWatch(api.url + path);
    watches.push(w);
    return w;
  };

  beforeEach(async () => {
    api = await FakeApiServer.create({ bookmarkIntervalMs: 50 });
  });
  afterEach(async () => {
    for (const w of watches.splice(0)) w.close();
    await api.stop();
  });

  it('lists as kube-apiserver does: list TypeMeta and metadata, items WITHOUT kind/apiVersion', async () => {
    const a = api.create('Service', svc('a'));
    const n = api.create('Node', { metadata: { name: 'node-1' } });
    const e = api.create('EndpointSlice', {
      metadata: { name: 'a-x', labels: { 'kubernetes.io/service-name': 'a' } },
      addressType: 'IPv4',
    });
    assert.ok(Number(n.metadata!.resourceVersion) > Number(a.metadata!.resourceVersion));
    assert.equal(a.metadata!.generation, undefined, 'the Service strategy sets no generation');
    assert.equal(e.metadata!.generation, 1, 'EndpointSlices start at generation 1');
    assert.match(String(a.metadata!.uid), /^[0-9a-f-]{36}$/);
    assert.match(String(a.metadata!.creationTimestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.ok(Array.isArray(a.metadata!.managedFields));
    assert.deepEqual(a.status, { loadBalancer: {} }, 'status is a struct: always written');
    assert.equal(e.endpoints, null, 'endpoints/ports have no omitempty: null when empty');
    assert.equal(e.ports, null);

    const res = await fetch(`${api.url}/api/v1/services`);
    assert.equal(res.headers.get('cache-control'), 'no-cache, private');
    const text = await res.text();
    assert.ok(text.endsWith('}\n'), 'the body ends with a newline');
    const body = JSON.parse(text) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body), ['kind', 'apiVersion', 'metadata', 'items']);
    assert.equal(body.kind, 'ServiceList');
    assert.equal(body.apiVersion, 'v1');
    assert.deepEqual(body.metadata, { resourceVersion: api.resourceVersion });
    const items = body.items as Record<string, unknown>[];
    assert.equal(items.length, 1);
    assert.equal(items[0]!.kind, undefined, 'kubernetes/kubernetes#3030: no kind on list items');
    assert.equal(items[0]!.apiVersion, undefined);
    assert.deepEqual(Object.keys(items[0]!.metadata as object).slice(0, 5), [
      'name',
      'namespace',
      'uid',
      'resourceVersion',
      'creationTimestamp',
    ]);

    const slices = await getJson(`${api.url}/apis/discovery.k8s.io/v1/endpointslices`);
    assert.equal(slices.body.kind, 'EndpointSliceList');
    assert.equal(slices.body.apiVersion, 'discovery.k8s.io/v1');
    assert.equal((slices.body.items as Record<string, unknown>[])[0]!.kind, undefined);
    const nodes = await getJson(`${api.url}/api/v1/nodes`);
    assert.equal(nodes.body.kind, 'NodeList');
    const empty = await getJson(`${api.url}/api/v1/namespaces/none/services`);
    assert.deepEqual(empty.body.items, [], 'items is [] when empty, never null');
  });

  it("updates bump resourceVersion (and an EndpointSlice's generation on a change); deletes are visible", async () => {
    const a = api.create('Service', svc('a'));
    const b = api.update('Service', { ...svc('a'), spec: { clusterIP: '10.96.0.11' } });
    assert.equal(b.metadata!.uid, a.metadata!.uid);
    assert.ok(Number(b.metadata!.resourceVersion) > Number(a.metadata!.resourceVersion));
    assert.equal(b.metadata!.generation, undefined);
    const sl = { metadata: { name: 's' }, addressType: 'IPv4', endpoints: [] };
    api.create('EndpointSlice', sl);
    assert.equal(
      api.update('EndpointSlice', { ...sl, metadata: { name: 's', labels: { x: 'y' } } }).metadata!
        .generation,
      1,
    );
    assert.equal(
      api.update('EndpointSlice', { ...sl, endpoints: [{ addresses: ['10.0.0.1'] }] }).metadata!.generation,
      2,
    );
    api.delete('Service', 'default', 'a');
    const { body } = await getJson(`${api.url}/api/v1/services`);
    assert.deepEqual(body.items, []);
  });

  it('DELETE with finalizers sets deletionTimestamp (server-owned); removing the last one deletes', async () => {
    api.create('Node', {
      metadata: { name: 'n', finalizers: ['example.com/hold'], deletionTimestamp: '2020-01-01T00:00:00Z' },
    });
    assert.equal(
      api.get('Node', '', 'n')!.metadata!.deletionTimestamp,
      undefined,
      'not settable by a client',
    );
    const w = watch(`/api/v1/nodes?watch=1&resourceVersion=${api.resourceVersion}`);
    assert.equal(await w.status, 200);
    api.delete('Node', '', 'n');
    const ts = api.get('Node', '', 'n')!.metadata!.deletionTimestamp;
    assert.match(String(ts), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    api.update('Node', { metadata: { name: 'n', finalizers: ['example.com/hold'], labels: { a: 'b' } } });
    assert.equal(api.get('Node', '', 'n')!.metadata!.deletionTimestamp, ts, 'an update keeps it');
    api.update('Node', { metadata: { name: 'n', finalizers: [] } });
    assert.equal(api.get('Node', '', 'n'), undefined, 'gone with its last finalizer');
    await waitFor(() => w.events.length === 4);
    assert.deepEqual(
      w.events.map((e) => e.type),
      ['MODIFIED', 'MODIFIED', 'MODIFIED', 'DELETED'],
    );
    api.create('Service', svc('plain'));
    api.delete('Service', 'default', 'plain');
    assert.equal(api.get('Service', 'default', 'plain'), undefined, 'no finalizers: deleted at once');
  });

  it('filters namespaced paths', async () => {
    api.create('Service', svc('a', {}, 'one'));
    api.create('Service', svc('b', {}, 'two'));
    const { body } = await getJson(`${api.url}/api/v1/namespaces/two/services`);
    assert.deepEqual(
      (body.items as { metadata: { name: string } }[]).map((i) => i.metadata.name),
      ['b'],
    );
  });

  it('watches from a resourceVersion: only later events, in order', async () => {
    api.create('Service', svc('old'));
    const rv = api.resourceVersion;
    api.create('Service', svc('a'));
    api.update('Service', svc('a', { v: '2' }));
    const w = watch(`/api/v1/services?watch=1&resourceVersion=${rv}`);
    assert.equal(await w.status, 200);
    await waitFor(() => w.events.length === 2);
    api.delete('Service', 'default', 'a');
    await waitFor(() => w.events.length === 3);
    assert.deepEqual(
      w.events.map((e) => `${e.type} ${e.object.metadata!.name}`),
      ['ADDED a', 'MODIFIED a', 'DELETED a'],
    );
    const rvs = w.events.map((e) => Number(e.object.metadata!.resourceVersion));
    assert.deepEqual([...rvs].sort(), rvs);
  });

  it('a watch without resourceVersion starts with synthetic ADDED events', async () => {
    api.create('Service', svc('a'));
    api.create('Service', svc('b'));
    const w = watch('/api/v1/services?watch=true');
    await waitFor(() => w.events.length === 2);
    assert.deepEqual(
      w.events.map((e) => e.type),
      ['ADDED', 'ADDED'],
    );
  });

  it("watch events carry kind and apiVersion; DELETED has the deletion's resourceVersion", async () => {
    api.create('Service', svc('a'));
    const w = watch(`/api/v1/services?watch=true&resourceVersion=${api.resourceVersion}`);
    assert.equal(await w.status, 200);
    api.update('Service', svc('a', { v: '2' }));
    api.delete('Service', 'default', 'a');
    await waitFor(() => w.events.length === 2);
    for (const e of w.events) {
      assert.equal((e.object as { kind?: string }).kind, 'Service');
      assert.equal((e.object as { apiVersion?: string }).apiVersion, 'v1');
    }
    assert.equal(w.events[1]!.object.metadata!.resourceVersion, api.resourceVersion);
  });

  it('sends bookmarks only when allowWatchBookmarks=true: an empty object of the kind with the resourceVersion', async () => {
    const rv = api.resourceVersion;
    const with_ = watch(`/api/v1/services?watch=1&resourceVersion=${rv}&allowWatchBookmarks=true`);
    const without = watch(`/api/v1/services?watch=1&resourceVersion=${rv}`);
    const slices = watch(
      `/apis/discovery.k8s.io/v1/endpointslices?watch=1&resourceVersion=${rv}&allowWatchBookmarks=true`,
    );
    await waitFor(() => with_.events.length >= 2 && slices.events.length >= 1);
    assert.equal(without.events.length, 0);
    const bm = with_.events[0]!;
    assert.equal(bm.type, 'BOOKMARK');
    assert.deepEqual(bm.object, {
      kind: 'Service',
      apiVersion: 'v1',
      metadata: { resourceVersion: api.resourceVersion },
      spec: {},
      status: { loadBalancer: {} },
    });
    assert.deepEqual(slices.events[0]!.object, {
      kind: 'EndpointSlice',
      apiVersion: 'discovery.k8s.io/v1',
      metadata: { resourceVersion: api.resourceVersion },
      addressType: '',
      endpoints: null,
      ports: null,
    });
  });

  it('watch-list: a watch from "" or "0" gets the initial ADDED events, then the initial-events-end bookmark', async () => {
    api.create('Service', svc('a'));
    api.create('Service', svc('b'));
    const w = watch('/api/v1/services?watch=true&resourceVersion=0&allowWatchBookmarks=true');
    await waitFor(() => w.events.length >= 3);
    assert.deepEqual(
      w.events.slice(0, 3).map((e) => e.type),
      ['ADDED', 'ADDED', 'BOOKMARK'],
    );
    const end = w.events[2]!.object as {
      metadata: { annotations?: Record<string, string>; resourceVersion: string };
    };
    assert.deepEqual(end.metadata.annotations, { 'k8s.io/initial-events-end': 'true' });
    assert.equal(end.metadata.resourceVersion, api.resourceVersion);
    // Explicit form, and its validation.
    const explicit = watch(
      '/api/v1/services?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true',
    );
    await waitFor(() => explicit.events.length >= 3);
    const bad = await getJson(`${api.url}/api/v1/services?watch=true&sendInitialEvents=true`);
    assert.equal(bad.status, 422);
    assert.equal(bad.body.reason, 'Invalid');
    const rvm = await getJson(
      `${api.url}/api/v1/services?watch=true&resourceVersionMatch=NotOlderThan&resourceVersion=1`,
    );
    assert.equal(rvm.status, 422);
    // With the server's WatchList gate off: rejected, and no defaulting.
    await api.stop();
    api = await FakeApiServer.create({ watchList: false, bookmarkIntervalMs: 50 });
    const off = await getJson(
      `${api.url}/api/v1/services?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan`,
    );
    assert.equal(off.status, 422);
    assert.match(String(off.body.message), /WatchList feature gate/);
  });

  it('answers a compacted resourceVersion with an ERROR event carrying 410 Gone, then closes', async () => {
    const rv = api.resourceVersion;
    api.create('Service', svc('a'));
    api.compact();
    const w = watch(`/api/v1/services?watch=1&resourceVersion=${rv}`);
    assert.equal(await w.status, 200);
    await w.ended;
    assert.equal(w.events.length, 1);
    assert.equal(w.events[0]!.type, 'ERROR');
    assert.deepEqual(w.events[0]!.object, {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: `too old resource version: ${rv} (${api.resourceVersion})`,
      reason: 'Expired',
      code: 410,
    });
    // The current resourceVersion is still watchable.
    const ok = watch(`/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}`);
    assert.equal(await ok.status, 200);
  });

  it('expires resourceVersions that fell out of the bounded history', async () => {
    await api.stop();
    api = await FakeApiServer.create({ historySize: 3 });
    const rv = api.resourceVersion;
    for (let i = 0; i < 5; i++) api.create('Service', svc(`s${i}`));
    const w = watch(`/api/v1/services?watch=1&resourceVersion=${rv}`);
    await w.ended;
    assert.equal(w.events[0]!.object.code, 410);
    const recent = watch(`/api/v1/services?watch=1&resourceVersion=${Number(api.resourceVersion) - 3}`);
    await waitFor(() => recent.events.length === 3);
  });

  it('answers a non-numeric resourceVersion as the storage layer fails: 500, no reason', async () => {
    for (const q of ['watch=1&resourceVersion=abc', 'resourceVersion=abc']) {
      const { status, body } = await getJson(`${api.url}/api/v1/services?${q}`);
      assert.equal(status, 500, q);
      assert.equal(body.kind, 'Status');
      assert.equal(body.reason, undefined);
      assert.match(String(body.message), /resourceVersion: Invalid value: "abc"/);
    }
  });

  it('applies label selectors: =, !=, in, notin, exists, !exists', async () => {
    api.create('Service', svc('plain'));
    api.create('Service', svc('proxied', { 'service.kubernetes.io/service-proxy-name': 'other' }));
    api.create('Service', svc('tier-a', { tier: 'a' }));
    api.create('Service', svc('tier-b', { tier: 'b' }));
    const names = async (sel: string): Promise<string[]> => {
      const { body } = await getJson(`${api.url}/api/v1/services?labelSelector=${encodeURIComponent(sel)}`);
      return (body.items as { metadata: { name: string } }[]).map((i) => i.metadata.name).sort();
    };
    assert.deepEqual(await names('!service.kubernetes.io/service-proxy-name'), ['plain', 'tier-a', 'tier-b']);
    assert.deepEqual(await names('tier=a'), ['tier-a']);
    assert.deepEqual(await names('tier==a'), ['tier-a']);
    assert.deepEqual(await names('tier!=a'), ['plain', 'proxied', 'tier-b']);
    assert.deepEqual(await names('tier in (a, b)'), ['tier-a', 'tier-b']);
    assert.deepEqual(await names('tier notin (a)'), ['plain', 'proxied', 'tier-b']);
    assert.deepEqual(await names('tier'), ['tier-a', 'tier-b']);
    assert.deepEqual(await names('tier,!service.kubernetes.io/service-proxy-name,tier!=b'), ['tier-a']);
    const bad = await getJson(`${api.url}/api/v1/services?labelSelector=${encodeURIComponent('a b c')}`);
    assert.equal(bad.status, 400);
  });

  it('translates selector transitions into ADDED / DELETED for watchers', async () => {
    api.create('Service', svc('a'));
    const rv = api.resourceVersion;
    const sel = encodeURIComponent('!service.kubernetes.io/service-proxy-name');
    const w = watch(`/api/v1/services?watch=1&resourceVersion=${rv}&labelSelector=${sel}`);
    assert.equal(await w.status, 200);
    api.update('Service', svc('a', { 'service.kubernetes.io/service-proxy-name': 'x' }));
    api.update('Service', svc('a', { 'service.kubernetes.io/service-proxy-name': 'y' }));
    api.update('Service', svc('a'));
    await waitFor(() => w.events.length === 2);
    assert.deepEqual(
      w.events.map((e) => e.type),
      ['DELETED', 'ADDED'],
    );
  });

  it("applies field selectors (metadata.*, Services' spec.clusterIP/spec.type); rejects others as the API does", async () => {
    api.create('Node', { metadata: { name: 'node-1' } });
    api.create('Node', { metadata: { name: 'node-2' } });
    const { body } = await getJson(`${api.url}/api/v1/nodes?fieldSelector=metadata.name%3Dnode-2`);
    assert.deepEqual(
      (body.items as { metadata: { name: string } }[]).map((i) => i.metadata.name),
      ['node-2'],
    );
    api.create('Service', svc('a', {}, 'x'));
    api.create('Service', svc('b', {}, 'y'));
    const ns = await getJson(`${api.url}/api/v1/services?fieldSelector=metadata.namespace!%3Dx`);
    assert.deepEqual(
      (ns.body.items as { metadata: { name: string } }[]).map((i) => i.metadata.name),
      ['b'],
    );
    const ip = await getJson(`${api.url}/api/v1/services?fieldSelector=spec.clusterIP!%3DNone`);
    assert.equal((ip.body.items as unknown[]).length, 2);
    const sched = await getJson(`${api.url}/api/v1/nodes?fieldSelector=spec.unschedulable%3Dfalse`);
    assert.equal((sched.body.items as unknown[]).length, 2);
    const bad = await getJson(`${api.url}/api/v1/nodes?fieldSelector=status.phase%3DRunning`);
    assert.equal(bad.status, 400);
    assert.match(String(bad.body.message), /field label not supported: status.phase/);
    const slices = await getJson(
      `${api.url}/apis/discovery.k8s.io/v1/endpointslices?fieldSelector=foo%3Dbar`,
    );
    assert.equal(slices.status, 400);
    assert.equal(
      slices.body.message,
      '"foo" is not a known field selector: only "metadata.name", "metadata.namespace"',
    );
  });

  it('closes watches at timeoutSeconds', async () => {
    const t0 = Date.now();
    const w = watch(`/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}&timeoutSeconds=1`);
    await w.ended;
    const took = Date.now() - t0;
    assert.ok(took >= 900 && took < 3000, `closed after ${took} ms`);
  });

  it('closeAllWatches() ends every open watch cleanly', async () => {
    const a = watch(`/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}`);
    const b = watch(`/api/v1/nodes?watch=1&resourceVersion=${api.resourceVersion}`);
    await Promise.all([a.status, b.status]);
    assert.equal(api.openWatches, 2);
    api.closeAllWatches();
    await Promise.all([a.ended, b.ended]);
    assert.equal(api.openWatches, 0);
  });

  it('failNext(n, status) fails exactly n requests with a Status body', async () => {
    api.failNext(2, 503);
    const r1 = await getJson(`${api.url}/api/v1/services`);
    const r2 = await getJson(`${api.url}/api/v1/nodes`);
    const r3 = await getJson(`${api.url}/api/v1/services`);
    assert.deepEqual([r1.status, r2.status, r3.status], [503, 503, 200]);
    assert.equal(r1.body.kind, 'Status');
    assert.equal(r1.body.code, 503);
    assert.equal(r1.body.reason, 'ServiceUnavailable');
    api.failNext(1, 429);
    const res = await fetch(`${api.url}/api/v1/services`);
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.deepEqual(((await res.json()) as { details: unknown }).details, { retryAfterSeconds: 1 });
  });

  it('setLatencyMs delays responses', async () => {
    api.setLatencyMs(150);
    const t0 = Date.now();
    await getJson(`${api.url}/api/v1/services`);
    assert.ok(Date.now() - t0 >= 140);
  });

  it('stallWatches(): open watches go silent, new watches never answer', async () => {
    const open = watch(
      `/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}&allowWatchBookmarks=true`,
    );
    await open.status;
    api.stallWatches();
    const seen = open.events.length;
    const fresh = watch(`/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}&timeoutSeconds=1`);
    let answered = false;
    void fresh.status.then(() => (answered = true));
    api.create('Service', svc('a'));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(open.events.length, seen, 'a stalled watch delivers nothing (not even bookmarks)');
    assert.equal(answered, false, 'a new watch gets no response headers');
    assert.equal(api.openWatches, 2, 'sockets stay open');
    api.stallWatches(false);
    const later = watch(`/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}`);
    assert.equal(await later.status, 200);
  });

  it('injectWatchError(): one ERROR event with the Status, then the watch ends; others untouched', async () => {
    const svcWatch = watch(`/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}`);
    const nodeWatch = watch(`/api/v1/nodes?watch=1&resourceVersion=${api.resourceVersion}`);
    await Promise.all([svcWatch.status, nodeWatch.status]);
    assert.equal(api.injectWatchError(500, 'etcdserver: request timed out', 'Service'), 1);
    await svcWatch.ended;
    assert.deepEqual(
      svcWatch.events.map((e) => [e.type, e.object.code, e.object.message]),
      [['ERROR', 500, 'etcdserver: request timed out']],
    );
    assert.equal(api.openWatches, 1, 'the Node watch stays open');
    api.create('Node', { metadata: { name: 'n' } });
    await waitFor(() => nodeWatch.events.length === 1);
    assert.equal(nodeWatch.events[0]!.type, 'ADDED');
  });

  it('stallLists(): lists hang until the client gives up; watches still work', async () => {
    api.stallLists();
    const ac = new AbortController();
    const hung = fetch(`${api.url}/api/v1/services`, { signal: ac.signal });
    await waitFor(() => api.hungListCount === 1);
    const w = watch(`/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}`);
    assert.equal(await w.status, 200);
    api.stallLists(false);
    assert.equal((await getJson(`${api.url}/api/v1/services`)).status, 200);
    assert.equal(api.hungListCount, 1, 'the earlier list still hangs');
    ac.abort();
    await assert.rejects(hung);
    await waitFor(() => api.hungListCount === 0);
  });

  it('stop()/start(): the API goes away and comes back on the same port with its objects', async () => {
    api.create('Service', svc('a'));
    const port = api.port;
    const w = watch(`/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}`);
    await w.status;
    await api.stop();
    await w.ended;
    await assert.rejects(fetch(`${api.url}/api/v1/services`));
    await api.start();
    assert.equal(api.port, port);
    const { body } = await getJson(`${api.url}/api/v1/services`);
    assert.equal((body.items as unknown[]).length, 1);
  });

  it('counts requests by kind and verb', async () => {
    await getJson(`${api.url}/api/v1/services`);
    await getJson(`${api.url}/api/v1/services`);
    const w = watch(`/api/v1/nodes?watch=1&resourceVersion=${api.resourceVersion}`);
    await w.status;
    assert.equal(api.requests('Service', 'list'), 2);
    assert.equal(api.requests('Node', 'watch'), 1);
    assert.equal(api.requests(), 3);
    assert.equal(api.requestsSince(Date.now() + 1000), 0);
    api.resetCounts();
    assert.equal(api.requests(), 0);
  });

  it('serves single-object GETs (counted as verb "get") and 404 for a missing object', async () => {
    api.create('Service', svc('a', {}, 'one'));
    api.create('Node', { metadata: { name: 'node-1' } });
    const one = await getJson(`${api.url}/api/v1/namespaces/one/services/a`);
    assert.equal(one.status, 200);
    assert.equal(one.body.kind, 'Service');
    assert.equal((one.body.metadata as { name: string }).name, 'a');
    const node = await getJson(`${api.url}/api/v1/nodes/node-1`);
    assert.equal(node.status, 200);
    assert.equal(node.body.kind, 'Node');
    const missing = await getJson(`${api.url}/api/v1/namespaces/two/services/a`);
    assert.equal(missing.status, 404);
    assert.equal(missing.body.reason, 'NotFound');
    assert.equal(missing.body.message, 'services "a" not found');
    assert.deepEqual(missing.body.details, { name: 'a', kind: 'services' });
    // A namespaced object has no cluster-wide single-object path.
    assert.equal((await getJson(`${api.url}/api/v1/services/a`)).status, 404);
    assert.equal(api.requests(undefined, 'get'), 3);
    assert.equal(api.requests(undefined, 'list'), 0);
  });

  it('returns 404 Status for unknown paths', async () => {
    const { status, body } = await getJson(`${api.url}/api/v1/configmaps`);
    assert.equal(status, 404);
    assert.equal(body.reason, 'NotFound');
  });
});

describe('FakeApiServer list semantics (resourceVersion, resourceVersionMatch, limit/continue)', () => {
  let api: FakeApiServer;
  afterEach(async () => {
    await api.stop();
  });
  const items = (b: Record<string, unknown>): string[] =>
    (b.items as { metadata: { name: string } }[]).map((i) => i.metadata.name);
  const meta = (
    b: Record<string, unknown>,
  ): { resourceVersion: string; continue?: string; remainingItemCount?: number } =>
    b.metadata as { resourceVersion: string; continue?: string; remainingItemCount?: number };

  it('limit/continue pages at one snapshot; remainingItemCount only without selectors', async () => {
    api = await FakeApiServer.create();
    for (const n of ['a', 'b', 'c', 'd', 'e']) api.create('Service', svc(n));
    const first = await getJson(`${api.url}/api/v1/services?limit=2`);
    assert.deepEqual(items(first.body), ['a', 'b']);
    const m = meta(first.body);
    assert.equal(m.remainingItemCount, 3);
    const snapshot = m.resourceVersion;
    // The token is base64url JSON {v, rv, start}: opaque to clients, but this is its real shape.
    assert.deepEqual(JSON.parse(Buffer.from(m.continue!, 'base64url').toString()), {
      v: 'meta.k8s.io/v1',
      rv: Number(snapshot),
      start: 'default/b\u0000',
    });
    // Changes after the first page do not show: the pages are one consistent snapshot.
    api.delete('Service', 'default', 'c');
    api.create('Service', svc('bb'));
    const second = await getJson(`${api.url}/api/v1/services?limit=2&continue=${m.continue!}`);
    assert.deepEqual(items(second.body), ['c', 'd']);
    assert.equal(meta(second.body).resourceVersion, snapshot);
    const last = await getJson(`${api.url}/api/v1/services?limit=2&continue=${meta(second.body).continue!}`);
    assert.deepEqual(items(last.body), ['e']);
    assert.deepEqual(meta(last.body), { resourceVersion: snapshot });
    const sel = await getJson(`${api.url}/api/v1/services?limit=1&labelSelector=x!%3Dy`);
    assert.ok(meta(sel.body).continue);
    assert.equal(meta(sel.body).remainingItemCount, undefined);
  });

  it('resourceVersion=0 is served from the watch cache: the limit is ignored (not with the cache off)', async () => {
    api = await FakeApiServer.create();
    for (const n of ['a', 'b', 'c']) api.create('Service', svc(n));
    const cached = await getJson(`${api.url}/api/v1/services?limit=1&resourceVersion=0`);
    assert.deepEqual(items(cached.body), ['a', 'b', 'c']);
    assert.equal(meta(cached.body).continue, undefined);
    await api.stop();
    api = await FakeApiServer.create({ watchCache: false });
    for (const n of ['a', 'b', 'c']) api.create('Service', svc(n));
    const etcd = await getJson(`${api.url}/api/v1/services?limit=1&resourceVersion=0`);
    assert.deepEqual(items(etcd.body), ['a']);
    assert.ok(meta(etcd.body).continue);
  });

  it('validation: continue with a resourceVersion is 400, resourceVersionMatch misuse is 422, a bad token 400', async () => {
    api = await FakeApiServer.create();
    api.create('Service', svc('a'));
    api.create('Service', svc('b'));
    const tok = meta((await getJson(`${api.url}/api/v1/services?limit=1`)).body).continue!;
    const both = await getJson(`${api.url}/api/v1/services?limit=1&continue=${tok}&resourceVersion=5`);
    assert.equal(both.status, 400);
    assert.equal(both.body.message, 'specifying resource version is not allowed when using continue');
    for (const q of [
      'resourceVersionMatch=Exact',
      'resourceVersionMatch=Exact&resourceVersion=0',
      'resourceVersionMatch=Sometime&resourceVersion=5',
    ]) {
      const r = await getJson(`${api.url}/api/v1/services?${q}`);
      assert.equal(r.status, 422, q);
      assert.equal(r.body.reason, 'Invalid', q);
      assert.equal((r.body.details as { kind: string }).kind, 'ListOptions');
    }
    const bad = await getJson(`${api.url}/api/v1/services?limit=1&continue=garbage`);
    assert.equal(bad.status, 400);
    assert.match(String(bad.body.message), /^invalid continue token/);
  });

  it('Exact and limit+resourceVersion lists show that version; a compacted one is 410 Expired, as is a stale continue', async () => {
    api = await FakeApiServer.create();
    api.create('Service', svc('a'));
    const rv = api.resourceVersion;
    api.create('Service', svc('b'));
    const exact = await getJson(
      `${api.url}/api/v1/services?resourceVersion=${rv}&resourceVersionMatch=Exact`,
    );
    assert.deepEqual(items(exact.body), ['a']);
    assert.equal(meta(exact.body).resourceVersion, rv);
    const paged = await getJson(`${api.url}/api/v1/services?resourceVersion=${rv}&limit=10`);
    assert.deepEqual(items(paged.body), ['a']);
    const notOlder = await getJson(
      `${api.url}/api/v1/services?resourceVersion=${rv}&resourceVersionMatch=NotOlderThan`,
    );
    assert.deepEqual(items(notOlder.body), ['a', 'b']);
    const tok = meta((await getJson(`${api.url}/api/v1/services?limit=1`)).body).continue!;
    // etcd compacts up to a revision: later writes, then the compaction.
    api.create('Service', svc('c'));
    api.compact();
    const gone = await getJson(`${api.url}/api/v1/services?resourceVersion=${rv}&resourceVersionMatch=Exact`);
    assert.equal(gone.status, 410);
    assert.equal(gone.body.reason, 'Expired');
    assert.equal(gone.body.message, 'The resourceVersion for the provided list is too old.');
    const stale = await getJson(`${api.url}/api/v1/services?limit=1&continue=${tok}`);
    assert.equal(stale.status, 410);
    assert.match(String(stale.body.message), /^The provided continue parameter is too old/);
    // "Not older than" is still served from the cache.
    assert.equal((await getJson(`${api.url}/api/v1/services?resourceVersion=${rv}`)).status, 200);
  });

  it('a resourceVersion the server has not reached: 504 Timeout, ResourceVersionTooLarge, after a wait', async () => {
    api = await FakeApiServer.create({ tooLargeResourceVersionWaitMs: 100 });
    const ahead = Number(api.resourceVersion) + 5;
    const t0 = Date.now();
    const r = await getJson(`${api.url}/api/v1/services?resourceVersion=${ahead}`);
    assert.ok(Date.now() - t0 >= 90);
    assert.equal(r.status, 504);
    assert.equal(r.body.reason, 'Timeout');
    assert.equal(
      r.body.message,
      `Timeout: Too large resource version: ${ahead}, current: ${api.resourceVersion}`,
    );
    assert.deepEqual(r.body.details, {
      causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
      retryAfterSeconds: 1,
    });
  });

  it('tokens: 401 Unauthorized Status without an accepted bearer token; TLS with its own CA', async () => {
    api = await FakeApiServer.create({ tls: true, tokens: ['good'] });
    assert.match(api.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const { kubeTransport } = await import('../../../src/kube/informer.js');
    const read = async (token: string): Promise<{ status: number; body: string }> => {
      const res = await kubeTransport(api.kubeConfig(token)).get(
        '/api/v1/services',
        new AbortController().signal,
      );
      const chunks: Buffer[] = [];
      for await (const c of res.body) chunks.push(c as Buffer);
      return { status: res.status, body: Buffer.concat(chunks).toString() };
    };
    const denied = await read('bad');
    assert.equal(denied.status, 401);
    assert.deepEqual(JSON.parse(denied.body), {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'Unauthorized',
      reason: 'Unauthorized',
      code: 401,
    });
    assert.equal((await read('good')).status, 200);
  });
});

describe('label/field selector parsing', () => {
  it('parses and matches all operators', () => {
    const reqs = parseLabelSelector('a=1,b!=2,c in (x, y),d notin (z),e,!f');
    assert.equal(reqs.length, 6);
    assert.ok(labelsMatch(reqs, { a: '1', c: 'x', e: '' }));
    assert.ok(!labelsMatch(reqs, { a: '1', c: 'x', e: '', f: '' }));
    assert.ok(!labelsMatch(reqs, { a: '1', b: '2', c: 'x', e: '' }));
    assert.ok(!labelsMatch(reqs, { a: '1', c: 'x', d: 'z', e: '' }));
    assert.ok(labelsMatch(parseLabelSelector(''), {}));
  });
  it('rejects unsupported fields', () => {
    assert.throws(() => parseFieldSelector('status.phase=Running', 'Node'), /not supported/);
    assert.throws(
      () => parseFieldSelector('spec.type=ClusterIP', 'EndpointSlice'),
      /not a known field selector/,
    );
    assert.equal(parseFieldSelector('spec.type=ClusterIP', 'Service').length, 1);
    assert.equal(parseFieldSelector('metadata.name=x').length, 1);
  });
});
