import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RequestSpec } from '../../src/netns/protocol.js';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { FakeApiServer, type FakeKind } from '../support/fake-apiserver.js';
import { API_PORT, ApiStandIn } from '../support/api-stand-in.js';
import { Daemon, newestMtime, until } from '../support/daemon.js';
import { assertAllAnswered, backgroundTraffic, useSandbox } from '../support/sandbox.js';
import { metricSum } from '../support/metrics-text.js';
import { httpGet, type HttpAnswer } from '../support/http.js';

/**
 * The cluster path as users run it: `svcplane run --kubeconfig FILE` as a real process
 * (`node bin/svcplane.js`, the built package) inside a sandbox node, against the Kubernetes API
 * stand-in answering exactly as kube-apiserver does (list items without kind/apiVersion, Status
 * objects, bookmarks, 410s) over TLS with a bearer token, at 192.0.2.2:6443: an API server off the
 * node, reached through the node's own link. Real traffic from a pod to Service IPs throughout;
 * /healthz and /metrics scraped over HTTP; no rule churn checked by the daemon's metrics and logs
 * and the stand-in's request log (events), not by sleeps.
 *
 * SVCPLANE_CLI may name another build's bin/svcplane.js (to run this suite against an older
 * release: that is how the takeover test was seen failing).
 */

const NODE = 'node-1';
const API_HOST = '192.0.2.2';
const TOKEN = `svcplane-test-token-${process.pid}`;
const POD_PORT = 8080;
const IPS = { web: '10.96.0.80', api: '10.96.0.81', db: '10.96.0.82', extra: '10.96.0.83' } as const;
const CLI = process.env.SVCPLANE_CLI ?? join(packageRoot(), 'bin', 'svcplane.js');

interface Json {
  [k: string]: unknown;
}

const service = (name: keyof typeof IPS): Json => ({
  metadata: { name, namespace: 'default' },
  spec: {
    type: 'ClusterIP',
    clusterIP: IPS[name],
    clusterIPs: [IPS[name]],
    ipFamilies: ['IPv4'],
    selector: { app: name },
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: POD_PORT }],
  },
});

const slice = (svc: string, pods: readonly string[], podIPs: (p: string) => string): Json => ({
  metadata: { name: `${svc}-abc12`, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'http', protocol: 'TCP', port: POD_PORT }],
  endpoints: pods.map((p) => ({
    addresses: [podIPs(p)],
    conditions: { ready: true },
    nodeName: NODE,
    targetRef: { kind: 'Pod', namespace: 'default', name: p },
  })),
});

const node: Json = {
  metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } },
  status: { addresses: [{ type: 'InternalIP', address: '192.0.2.1' }] },
};

/** Another proxy's Service: svcplane does not watch it; creating it only moves the resourceVersion. */
const foreign = (name: string): Json => ({
  metadata: { name, namespace: 'default', labels: { 'service.kubernetes.io/service-proxy-name': 'other' } },
  spec: { type: 'ClusterIP', clusterIP: '10.96.0.99', ports: [{ port: 80, protocol: 'TCP' }] },
});

describe('svcplane run --kubeconfig against the API stand-in (real process, sandbox node, real traffic)', function () {
  this.timeout(120_000);
  let standIn: ApiStandIn | undefined;
  /** The stand-in's FakeApiServer (objects in, requests seen). */
  let api: FakeApiServer | undefined;
  let daemon: Daemon | undefined;
  let dir = '';
  /** The daemon's JSON log lines and every output line (its own arrays once it runs). */
  let lines: Json[] = [];
  let raw: string[] = [];

  // Registered before useSandbox's hooks: mocha runs `after` hooks in order, and the daemon and the
  // stand-in must stop before the sandbox's namespaces go away.
  after(async function () {
    this.timeout(30_000);
    await daemon?.stop(5000);
    await standIn?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [POD_PORT] },
      { name: 'b', index: 3, tcpPorts: [POD_PORT] },
      { name: 'c', index: 4, tcpPorts: [POD_PORT] },
      { name: 'client', index: 10 },
    ],
  });
  const podIP = (p: string): string => env.sb.podIP(p);
  const req = (name: keyof typeof IPS): RequestSpec => ({
    proto: 'tcp',
    ip: IPS[name],
    port: 80,
    timeoutMs: 1000,
  });

  // ----- scraping, rules, logs -----

  const http = (from: string, url: string): Promise<HttpAnswer | undefined> => httpGet(env.sb, from, url);
  /** /healthz as a load balancer's health check sees it: from outside, at the node's address. */
  const healthz = async (): Promise<{ code: number; body: Json }> => {
    const r = await http('outside', 'http://192.0.2.1:10256/healthz');
    if (!r) throw new Error('/healthz did not answer');
    return { code: r.code, body: JSON.parse(r.body) as Json };
  };
  const metricsText = async (): Promise<string> => {
    const r = await http('node', 'http://127.0.0.1:10249/metrics');
    if (r?.code !== 200) throw new Error('/metrics did not answer');
    return r.body;
  };
  /** Sum of a metric's samples (all label sets, or those matching `labels`). */
  const metric = async (name: string, labels = ''): Promise<number> => {
    const sum = metricSum(await metricsText(), name, labels);
    if (sum === undefined) throw new Error(`no sample of ${name}${labels}`);
    return sum;
  };
  const okSyncs = (): Promise<number> => metric('svcplane_syncs_total', 'result="ok"');
  const natRules = async (): Promise<string> =>
    (await env.sb.exec('node', ['iptables-save', '-t', 'nat'])).stdout;
  /** Jumps from KUBE-SERVICES to a Service chain: one per programmed Service port. */
  const serviceRules = async (): Promise<string[]> =>
    (await natRules()).split('\n').filter((l) => /^-A KUBE-SERVICES .*-j KUBE-SVC-/.test(l));
  const logged = (pred: (l: Json) => boolean, from = 0): Json[] => lines.slice(from).filter(pred);

  // ----- traffic -----

  async function trafficReaches(pods: readonly string[], r: RequestSpec): Promise<void> {
    const want = [...pods].sort().join(',');
    let last = '';
    await until(`traffic to ${r.ip} answered by {${want}}`, async () => {
      const got = new Set<string>();
      for (let i = 0; i < pods.length * 8; i++) {
        const x = await env.sb.request('client', r);
        got.add(x.ok ? x.reply.pod : `(${x.error})`);
      }
      last = [...got].sort().join(',');
      return last === want ? true : undefined;
    });
  }

  /** Waits until the daemon has an open watch on every resource again (after `since`). */
  const watchesBack = (since: number): Promise<true> =>
    until('the three watches re-established', () =>
      (['Service', 'EndpointSlice', 'Node'] as FakeKind[]).every(
        (k) => api!.requestsSince(since, k, 'watch') > 0,
      ) && api!.openWatches === 3
        ? true
        : undefined,
    );

  /** Every watch open and past a bookmark sent now: the daemon is connected and caught up. */
  const steady = async (): Promise<void> => {
    const rv = Number(api!.resourceVersion);
    await until('every watch open and past a fresh bookmark', () => {
      const got = api!.bookmarksSince(rv);
      return got.length === 3 && got.every((n) => n > 0) ? true : undefined;
    });
  };

  before(async function () {
    this.timeout(90_000);
    // bin/svcplane.js runs the build: it must be at least as new as the sources.
    if (process.env.SVCPLANE_CLI === undefined) {
      const built = join(packageRoot(), 'dist', '.built');
      const stale =
        newestMtime(join(packageRoot(), 'src')) > (statSync(built, { throwIfNoEntry: false })?.mtimeMs ?? 0);
      if (stale)
        throw new Error('dist/ is older than src/: run `bash scripts/setup.sh` (or npm run build) first');
    }
    dir = mkdtempSync(join(tmpdir(), 'svcplane-cluster-'));
    standIn = await ApiStandIn.start(env.sb, dir, { token: TOKEN });
    api = standIn.api;
    assert.equal(api.url, `https://${API_HOST}:${API_PORT}`);
    api.create('Node', node);
    const initial: [keyof typeof IPS, string[]][] = [
      ['web', ['a', 'b']],
      ['api', ['c']],
      ['db', ['a']],
    ];
    for (const [name, pods] of initial) {
      api.create('Service', service(name));
      api.create('EndpointSlice', slice(name, pods, podIP));
    }
    // The kubeconfig a node would have: the API's CA, its address, a bearer token.
    const kubeconfig = standIn.kubeconfig;

    // An earlier run (kube-proxy or svcplane) left the rules of the same three Services.
    const manifests = join(dir, 'manifests');
    const objs = [
      { apiVersion: 'v1', kind: 'Node', ...node },
      ...initial.flatMap(([name, pods]) => [
        { apiVersion: 'v1', kind: 'Service', ...service(name) },
        { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', ...slice(name, pods, podIP) },
      ]),
    ];
    mkdirSync(manifests);
    writeFileSync(join(manifests, 'cluster.json'), JSON.stringify(objs));
    const common = [`--hostname-override=${NODE}`, '--cluster-cidr=10.244.0.0/16', '--ip-families=IPv4'];
    await run([process.execPath, CLI, 'sync', `--manifests=${manifests}`, ...common], {
      netns: env.sb.nodeNs,
    });
    assert.equal((await serviceRules()).length, 3, 'three Service rules before svcplane run');

    daemon = Daemon.start(
      [
        'run',
        // Tests read JSON lines; -v=2 logs every sync, as kube-proxy's.
        '--logging-format=json',
        '-v=2',
        `--kubeconfig=${kubeconfig}`,
        ...common,
        '--healthz-bind-address=0.0.0.0:10256',
        '--metrics-bind-address=127.0.0.1:10249',
        '--iptables-min-sync-period=100ms',
        '--iptables-sync-period=10m',
        '--v=2',
      ],
      { netns: env.sb.nodeNs, fromBuild: true, prefix: ['env', 'SVCPLANE_API_HEALTH_GRACE_SECONDS=2'] },
    );
    lines = daemon.lines;
    raw = daemon.raw;
    await until(
      'the first sync',
      () => (logged((l) => l.message === 'synced').length > 0 ? true : undefined),
      30_000,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${raw.slice(-40).join('\n')}`);
    });
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') console.log(raw.slice(-60).join('\n'));
  });

  it('keeps every Service a real API lists (items without kind): 3 Service rules before run, 3 after (issue 11)', async () => {
    const first = logged((l) => l.message === 'synced')[0]!;
    assert.equal((await serviceRules()).length, 3, 'three Service rules after svcplane run');
    assert.equal(first.staleChains, 0, `the first sync removed Service chains: ${JSON.stringify(first)}`);
    assert.deepEqual(
      logged((l) => l.message === 'skipped invalid input'),
      [],
      'no object was rejected',
    );
    await trafficReaches(['a', 'b'], req('web'));
    await trafficReaches(['c'], req('api'));
    await trafficReaches(['a'], req('db'));
    // It asked as client-go does: the first lists from the watch cache, in pages of 500, with the token.
    const firstLists = api!.log.filter((r) => r.verb === 'list').slice(0, 3);
    for (const l of firstLists) {
      assert.equal(l.query.resourceVersion, '0');
      assert.equal(l.query.limit, '500');
      assert.equal(l.status, 200);
    }
    assert.equal(api!.lastAuthorization, `Bearer ${TOKEN}`, 'the token travels over TLS');
    assert.ok(!raw.some((l) => l.includes(TOKEN)), 'the token is never logged');
  });

  it('serves /healthz (from outside, at the node IP) and /metrics (on the node) over HTTP', async () => {
    const h = await healthz();
    assert.equal(h.code, 200, JSON.stringify(h.body));
    assert.deepEqual(Object.keys(h.body), ['lastUpdated', 'currentTime', 'nodeEligible']);
    assert.equal(h.body.nodeEligible, true);
    assert.equal(await metric('svcplane_source_healthy'), 1);
    assert.ok((await metric('kubeproxy_sync_proxy_rules_last_timestamp_seconds')) > 0);
    assert.equal(await metric('svcplane_sync_refused_total'), 0);
    assert.equal(
      (await http('outside', 'http://192.0.2.1:10249/metrics')) === undefined,
      true,
      '/metrics stays on localhost',
    );
  });

  it('Services and EndpointSlices created, scaled and deleted while traffic flows', async () => {
    const traffic = backgroundTraffic(env.sb, 'client', req('web'));
    api!.create('Service', service('extra'));
    api!.create('EndpointSlice', slice('extra', ['b', 'c'], podIP));
    await trafficReaches(['b', 'c'], req('extra'));
    for (const pods of [['a', 'b', 'c'], ['c'], ['a', 'b']]) {
      api!.update('EndpointSlice', slice('web', pods, podIP));
      await trafficReaches(pods, req('web'));
    }
    api!.delete('Service', 'default', 'extra');
    api!.delete('EndpointSlice', 'default', 'extra-abc12');
    await until("the deleted Service's rules gone", async () =>
      (await natRules()).includes(IPS.extra) ? undefined : true,
    );
    const r = await env.sb.request('client', { ...req('extra'), timeoutMs: 500 });
    assert.equal(r.ok, false, 'nothing answers the deleted ClusterIP');
    const seen = assertAllAnswered(await traffic.stop(), 'web traffic during the changes');
    assert.deepEqual([...seen].sort(), ['a', 'b', 'c']);
  });

  it('the API goes away and comes back: rules keep serving, /healthz 503 with a fixed reason, no rule churn', async () => {
    await trafficReaches(['a', 'b'], req('web'));
    await steady();
    const syncs = await okSyncs();
    const lastSync = await metric('kubeproxy_sync_proxy_rules_last_timestamp_seconds');
    const traffic = backgroundTraffic(env.sb, 'client', req('web'));
    await api!.stop();
    const down = await until('/healthz 503 once the API is gone past the grace period', async () => {
      const h = await healthz();
      return h.code === 503 ? h : undefined;
    });
    assert.equal(down.body.reason, 'source unhealthy: Kubernetes API unreachable');
    assert.equal(down.body.sourceError, 'Kubernetes API unreachable');
    assert.equal(await metric('svcplane_source_healthy'), 0);
    const t0 = Date.now();
    await api!.start();
    await watchesBack(t0);
    await until('/healthz 200 again', async () => ((await healthz()).code === 200 ? true : undefined));
    // Every watch got a bookmark after the reconnection: the daemon has read its streams past it.
    await steady();
    assert.equal(await okSyncs(), syncs, 'no sync: the objects did not change');
    assert.equal(await metric('kubeproxy_sync_proxy_rules_last_timestamp_seconds'), lastSync);
    assert.equal(
      api!.requestsSince(t0, undefined, 'list'),
      0,
      're-watched from its resourceVersion: no relist',
    );
    assertAllAnswered(await traffic.stop(), 'traffic while the API was away');
    // The next real change is exactly one sync.
    api!.update('EndpointSlice', slice('web', ['b'], podIP));
    await trafficReaches(['b'], req('web'));
    await until('one more sync', async () => ((await okSyncs()) === syncs + 1 ? true : undefined));
  });

  it('a 410 relist: the Service keeps serving through it; unchanged objects cause no sync, a missed change arrives', async () => {
    await trafficReaches(['b'], req('web'));
    await steady();
    const syncs = await okSyncs();
    const from = lines.length;
    const traffic = backgroundTraffic(env.sb, 'client', req('web'));
    // The watches go silent (no bookmark can advance them), the resourceVersion moves on, etcd
    // compacts: each re-watch from the old resourceVersion gets an ERROR event with 410 Expired.
    api!.stallWatches(true);
    api!.create('Service', foreign('foreign-1'));
    api!.compact();
    api!.stallWatches(false);
    const t0 = Date.now();
    api!.closeAllWatches();
    await until('three relists after 410', () =>
      api!.requestsSince(t0, undefined, 'list') >= 3 ? true : undefined,
    );
    await until('every resource relisted', () =>
      ['services', 'endpointslices', 'nodes'].every(
        (r) => logged((l) => l.message === 'listed' && l.resource === r, from).length > 0,
      )
        ? true
        : undefined,
    );
    // The state built after the last relist was found unchanged (logged), not emitted.
    const lastListed = Math.max(...lines.map((l, i) => (l.message === 'listed' && i >= from ? i : -1)));
    await until('the relists found nothing new', () =>
      logged((l) => l.message === 'objects unchanged; no new state', lastListed).length > 0
        ? true
        : undefined,
    );
    await watchesBack(t0);
    assert.ok(
      api!.log.some((r) => r.at >= t0 && r.verb === 'watch' && r.status === 200) &&
        logged(
          (l) => l.message === 'watch failed, retrying' && /too old resource version/.test(String(l.error)),
          from,
        ).length >= 3,
      'each watch was expired by an ERROR event',
    );
    assert.equal(await okSyncs(), syncs, 'no sync after the relists');

    // A change made while the watches could not deliver it arrives through the relist.
    await steady();
    api!.stallWatches(true);
    api!.update('EndpointSlice', slice('web', ['a', 'c'], podIP));
    api!.create('Service', foreign('foreign-2'));
    api!.compact();
    api!.stallWatches(false);
    api!.closeAllWatches();
    await trafficReaches(['a', 'c'], req('web'));
    const seen = assertAllAnswered(await traffic.stop(), 'traffic through the relists');
    assert.ok(seen.has('b') && (seen.has('a') || seen.has('c')));
  });

  it('bookmarks keep the resourceVersion fresh: after compaction the re-watch needs no relist', async () => {
    await steady();
    for (let i = 0; i < 3; i++) api!.create('Service', foreign(`bm-${i}`));
    const rv = Number(api!.resourceVersion);
    await until('a bookmark at the new resourceVersion on every watch', () =>
      api!.bookmarksSince(rv).length === 3 && api!.bookmarksSince(rv).every((n) => n > 0) ? true : undefined,
    );
    api!.compact();
    const t0 = Date.now();
    api!.closeAllWatches();
    await watchesBack(t0);
    assert.equal(api!.requestsSince(t0, undefined, 'list'), 0, 'no relist');
    for (const w of api!.log.filter((r) => r.at >= t0 && r.verb === 'watch')) {
      assert.ok(
        Number(w.query.resourceVersion) >= rv,
        `re-watch from ${w.query.resourceVersion}, not older than ${rv}`,
      );
      assert.equal(w.query.allowWatchBookmarks, 'true');
    }
  });

  it('never sent a single-object GET (RBAC verbs: list, watch) and never logged the token', () => {
    assert.equal(api!.requests(undefined, 'get'), 0);
    assert.ok(!raw.some((l) => l.includes(TOKEN)));
  });
});
