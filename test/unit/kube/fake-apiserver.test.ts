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

  it('lists with kind, apiVersion, resourceVersion and server-set metadata', async () => {
    const a = api.create('Service', svc('a'));
    const n = api.create('Node', { metadata: { name: 'node-1' } });
    assert.ok(Number(n.metadata!.resourceVersion) > Number(a.metadata!.resourceVersion));
    assert.equal(a.metadata!.generation, 1);
    assert.match(String(a.metadata!.uid), /^[0-9a-f-]{36}$/);
    assert.match(String(a.metadata!.creationTimestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    const { status, body } = await getJson(`${api.url}/api/v1/services`);
    assert.equal(status, 200);
    assert.equal(body.kind, 'ServiceList');
    assert.equal(body.apiVersion, 'v1');
    assert.deepEqual(body.metadata, { resourceVersion: api.resourceVersion });
    assert.equal((body.items as unknown[]).length, 1);

    const slices = await getJson(`${api.url}/apis/discovery.k8s.io/v1/endpointslices`);
    assert.equal(slices.body.kind, 'EndpointSliceList');
    assert.equal(slices.body.apiVersion, 'discovery.k8s.io/v1');
    const nodes = await getJson(`${api.url}/api/v1/nodes`);
    assert.equal(nodes.body.kind, 'NodeList');
  });

  it('updates bump resourceVersion and generation (on spec change); deletes are visible', async () => {
    const a = api.create('Service', svc('a'));
    const b = api.update('Service', { ...svc('a'), spec: { clusterIP: '10.96.0.11' } });
    assert.equal(b.metadata!.uid, a.metadata!.uid);
    assert.equal(b.metadata!.generation, 2);
    const c = api.update('Service', { ...svc('a', { x: 'y' }), spec: { clusterIP: '10.96.0.11' } });
    assert.equal(c.metadata!.generation, 2);
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

  it('sends bookmarks only when allowWatchBookmarks=true', async () => {
    const rv = api.resourceVersion;
    const with_ = watch(`/api/v1/services?watch=1&resourceVersion=${rv}&allowWatchBookmarks=true`);
    const without = watch(`/api/v1/services?watch=1&resourceVersion=${rv}`);
    await waitFor(() => with_.events.length >= 2);
    assert.equal(without.events.length, 0);
    const bm = with_.events[0]!;
    assert.equal(bm.type, 'BOOKMARK');
    assert.equal(bm.object.metadata!.resourceVersion, api.resourceVersion);
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
    assert.equal(w.events[0]!.object.code, 410);
    assert.match(w.events[0]!.object.message!, /too old resource version/);
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

  it('rejects an invalid resourceVersion with 400', async () => {
    const { status, body } = await getJson(`${api.url}/api/v1/services?watch=1&resourceVersion=abc`);
    assert.equal(status, 400);
    assert.equal(body.kind, 'Status');
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

  it('applies field selectors on metadata.name and metadata.namespace; rejects others', async () => {
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
    const bad = await getJson(`${api.url}/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue`);
    assert.equal(bad.status, 400);
    assert.match(String(bad.body.message), /field label not supported/);
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
    // A namespaced object has no cluster-wide single-object path.
    assert.equal((await getJson(`${api.url}/api/v1/services/a`)).status, 404);
    assert.equal(api.requests(undefined, 'get'), 3);
    assert.equal(api.requests(undefined, 'list'), 0);
  });

  it('returns 404 Status for unknown paths', async () => {
    const { status, body } = await getJson(`${api.url}/api/v1/pods`);
    assert.equal(status, 404);
    assert.equal(body.reason, 'NotFound');
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
    assert.throws(() => parseFieldSelector('status.phase=Running'), /not supported/);
    assert.equal(parseFieldSelector('metadata.name=x').length, 1);
  });
});
