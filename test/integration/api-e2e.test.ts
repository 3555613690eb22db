import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProxyOptions } from '../../src/config/options.js';
import { loadConfiguration, RENDER_FLAGS } from '../../src/cli/proxy-options.js';
import type { SyncReport } from '../../src/modes/backend.js';
import { Controller } from '../../src/controller/controller.js';
import { healthzStatus, TO_BE_DELETED_TAINT, type HealthStatus } from '../../src/controller/health.js';
import { controllerHealth } from '../../src/controller/servers-factory.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { createApiSource } from '../../src/kube/api-source-factory.js';
import type { ReflectorOptions } from '../../src/kube/informer.js';
import type { RequestSpec } from '../../src/netns/protocol.js';
import { log } from '../../src/util/log.js';
import { until } from '../support/daemon.js';
import { FakeApiServer } from '../support/fake-apiserver.js';
import {
  assertAllAnswered,
  backgroundTraffic,
  expectError,
  requireRoot,
  useSandbox,
  type BackgroundTraffic,
} from '../support/sandbox.js';

/**
 * svcplane end to end against the Kubernetes API stand-in, with real traffic in a netns sandbox.
 *
 * The controller runs in this process (root network namespace, where the stand-in listens on
 * 127.0.0.1); only the iptables commands run inside the sandbox's node namespace (`netns`), so no
 * rule ever lands in the machine's own namespace. The options come through the CLI path
 * (`--config` KubeProxyConfiguration → ProxyOptions → createApiSource), with short reflector
 * timings so every failure mode plays out in a second or two.
 */

const NODE = 'node-1';
const WEB_IP = '10.96.0.80';
const API_IP = '10.96.0.81';
const SENTINEL_IP = '10.96.0.82';
const NODE_PORT = 30081;
const POD_PORT = 8080;
const GRACE_MS = 1500;

const FAST: Partial<ReflectorOptions> = {
  watchTimeoutSeconds: 1,
  watchdogGraceMs: 300,
  listIdleTimeoutMs: 1000,
  minWatchMs: 100,
  backoff: { initialMs: 50, maxMs: 400, factor: 2, jitter: 0.2 },
};

const POD_IPS: Readonly<Record<string, string>> = { a: '10.244.0.2', b: '10.244.0.3', c: '10.244.0.4' };

function service(name: string, clusterIP: string, extra: { nodePort?: number } = {}): object {
  return {
    metadata: { name, namespace: 'default' },
    spec: {
      type: extra.nodePort ? 'NodePort' : 'ClusterIP',
      clusterIP,
      clusterIPs: [clusterIP],
      ipFamilies: ['IPv4'],
      selector: { app: name },
      ports: [
        {
          name: 'http',
          protocol: 'TCP',
          port: 80,
          targetPort: POD_PORT,
          ...(extra.nodePort ? { nodePort: extra.nodePort } : {}),
        },
      ],
    },
  };
}

/** The Service's EndpointSlice with `pods` ready; `zones` adds topology hints per pod. */
function slice(svc: string, pods: readonly string[], zones: Readonly<Record<string, string>> = {}): object {
  return {
    metadata: {
      name: `${svc}-abc12`,
      namespace: 'default',
      labels: { 'kubernetes.io/service-name': svc },
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: POD_PORT }],
    endpoints: pods.map((p) => ({
      addresses: [POD_IPS[p]],
      conditions: { ready: true },
      nodeName: NODE,
      targetRef: { kind: 'Pod', namespace: 'default', name: p },
      ...(zones[p] ? { zone: zones[p], hints: { forZones: [{ name: zones[p] }] } } : {}),
    })),
  };
}

function node(zone: string): object {
  return {
    metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE, 'topology.kubernetes.io/zone': zone } },
    status: { addresses: [{ type: 'InternalIP', address: '192.0.2.1' }] },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('svcplane against the API stand-in (end to end, real traffic)', function () {
  this.timeout(60_000);
  let api: FakeApiServer | undefined;
  let controller: Controller | undefined;
  let proxier: IptablesProxier;
  let opts: ProxyOptions;
  let dir: string | undefined;
  let syncs = 0;
  let syncErrors = 0;
  let logLevel = log.level;

  // Registered before useSandbox's hooks: mocha runs `after` hooks in order, and the controller
  // must stop before the sandbox's namespaces go away.
  after(async function () {
    this.timeout(20_000);
    await controller?.stop();
    await api?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    log.level = logLevel;
  });

  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [POD_PORT] },
      { name: 'b', index: 3, tcpPorts: [POD_PORT] },
      { name: 'c', index: 4, tcpPorts: [POD_PORT] },
      { name: 'client', index: 10 },
    ],
  });

  const web: RequestSpec = { proto: 'tcp', ip: WEB_IP, port: 80, timeoutMs: 1000 };

  /**
   * Connections that must reach every one of two endpoints chosen at random: with 10 the kernel's
   * coin sent all of them to one endpoint 1 time in 512 (seen once in CI); 30 makes it 1 in 5·10^8.
   */
  const SPREAD = 30;

  /** `n` new connections from `from`; every one must be answered; returns who answered. */
  async function answering(n: number, req: RequestSpec = web, from = 'client'): Promise<Set<string>> {
    const pods = new Set<string>();
    for (let i = 0; i < n; i++) {
      const r = await env.sb.request(from, req);
      if (!r.ok) assert.fail(`request ${i + 1}/${n} to ${req.ip}:${req.port} failed: ${r.error} ${r.detail}`);
      pods.add(r.reply.pod);
    }
    return pods;
  }

  /**
   * Waits until a round of connections is answered by exactly `pods` (a failed connection, e.g.
   * before the sync that adds the first endpoints, counts as "not yet").
   */
  async function trafficReaches(
    pods: readonly string[],
    req: RequestSpec = web,
    from = 'client',
  ): Promise<void> {
    const want = [...pods].sort().join(',');
    await until(
      `traffic to ${req.ip}:${req.port} answered by {${want}}`,
      async () => {
        const got = new Set<string>();
        for (let i = 0; i < pods.length * 8; i++) {
          const r = await env.sb.request(from, req);
          got.add(r.ok ? r.reply.pod : `(${r.error})`);
        }
        const last = [...got].sort().join(',');
        // Not yet: the shared until() names the last error when it gives up.
        if (last !== want) throw new Error(`last answered by {${last}}`);
        return true;
      },
      8000,
    );
  }

  /** Connections in a loop until stopped: proves traffic keeps flowing while things change. */
  function background(req: RequestSpec = web): BackgroundTraffic & {
    follows: (pods: readonly string[]) => Promise<void>;
  } {
    const traffic = backgroundTraffic(env.sb, 'client', req);
    return {
      ...traffic,
      // Once the rules of a phase are in (trafficReaches passed), the background's next connections
      // must all land on that phase's pods. Waiting for them makes the check independent of how many
      // background probes happened to fall inside a short phase.
      follows: async (pods) => {
        const { results } = traffic;
        const from = results.length;
        await until('three background probes', () => results.length >= from + 3, 8000);
        const got = results.slice(from).map((r) => (r.ok ? r.reply.pod : `(${r.error})`));
        assert.ok(
          got.every((p) => pods.includes(p)),
          `background traffic follows {${pods.join(',')}}: got ${got.join(',')}`,
        );
      },
    };
  }

  /**
   * Waits until no change is queued: the last sync has finished and been counted. (Traffic can show
   * new rules a moment before the controller has seen iptables-restore exit and emitted 'synced'.)
   */
  const settled = async (): Promise<void> => {
    await until('the controller settled', () => controller!.health().queuedSince === 0, 5000);
  };

  /** kube-proxy's /healthz answer for the controller now (the inputs and function the server uses). */
  let healthInputs: ReturnType<typeof controllerHealth> | undefined;
  const healthz = (): HealthStatus => {
    healthInputs ??= controllerHealth(controller!, {
      syncPeriodMs: opts.syncPeriodMs,
      nodeName: opts.hostnameOverride,
    });
    return healthzStatus(healthInputs());
  };
  const health = (): number => healthz().code;
  const natRules = async (): Promise<string> =>
    (await env.sb.exec('node', ['iptables-save', '-t', 'nat'])).stdout;

  before(async function () {
    requireRoot(this);
    // Reconnect warnings are the point of several tests here; keep the output readable.
    logLevel = log.level;
    log.level = 'error';
    api = await FakeApiServer.create({ bookmarkIntervalMs: 300 });
    api.create('Node', node('zone-a'));
    api.create('Service', service('web', WEB_IP));
    api.create('EndpointSlice', slice('web', ['a', 'b']));
    // Objects svcplane must not see (kube-proxy's informer selectors).
    api.create('Service', {
      ...service('other-proxy', '10.96.0.99'),
      metadata: {
        name: 'other-proxy',
        namespace: 'default',
        labels: { 'service.kubernetes.io/service-proxy-name': 'foreign' },
      },
    });
    api.create('Node', { metadata: { name: 'node-2' }, status: { addresses: [] } });

    dir = mkdtempSync(join(tmpdir(), 'svcplane-e2e-'));
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      `apiVersion: v1\nkind: Config\nclusters: [{name: fake, cluster: {server: "${api.url}"}}]\n` +
        'users: [{name: p, user: {token: t}}]\ncontexts: [{name: fake, context: {cluster: fake, user: p}}]\n' +
        'current-context: fake\n',
    );
    const config = join(dir, 'config.yaml');
    writeFileSync(
      config,
      [
        'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
        'kind: KubeProxyConfiguration',
        `clientConnection: {kubeconfig: "${kubeconfig}"}`,
        `hostnameOverride: ${NODE}`,
        'clusterCIDR: 10.244.0.0/16',
        // No periodic resync during the test: every sync counted below is caused by a change.
        'iptables: {minSyncPeriod: 50ms, syncPeriod: 10m}',
        '',
      ].join('\n'),
    );
    opts = (await loadConfiguration([`--config=${config}`], RENDER_FLAGS)).options;
    assert.equal(opts.kubeconfig, kubeconfig);

    const source = await createApiSource(opts, { env: {}, reflector: FAST, healthGraceMs: GRACE_MS });
    proxier = new IptablesProxier({
      family: 'IPv4',
      nodeName: opts.hostnameOverride,
      masqueradeBit: opts.masqueradeBit,
      masqueradeAll: opts.masqueradeAll,
      detectLocalMode: opts.detectLocalMode,
      clusterCIDRs: opts.clusterCIDRs,
      nodePortAddresses: opts.nodePortAddresses,
      localhostNodePorts: opts.localhostNodePorts,
      netns: env.sb.nodeNs,
    });
    controller = new Controller(source, [proxier], opts);
    controller.on('synced', () => syncs++);
    controller.on('syncError', () => syncErrors++);
    await controller.start();
  });

  afterEach(() => {
    assert.equal(syncErrors, 0, 'no sync failed');
  });

  it('syncs only after the initial lists, then traffic reaches the Service endpoints', async () => {
    assert.equal(syncs, 1, 'one sync, from the complete initial state');
    assert.equal(health(), 200);
    assert.deepEqual([...(controller!.source.current()?.nodes.keys() ?? [])], [NODE], 'only this node');
    assert.equal(controller!.source.current()?.services.has('default/other-proxy'), false);
    assert.deepEqual([...(await answering(20))].sort(), ['a', 'b']);
  });

  it('a Service and EndpointSlice created through the API: ClusterIP and NodePort traffic flows', async () => {
    const before = syncs;
    api!.create('Service', service('api', API_IP, { nodePort: NODE_PORT }));
    api!.create('EndpointSlice', slice('api', ['c']));
    await until('a sync after the creation', () => syncs > before, 5000);
    await trafficReaches(['c'], { proto: 'tcp', ip: API_IP, port: 80, timeoutMs: 1000 });
    // From outside the node, to the node IP the Node object carries.
    await trafficReaches(
      ['c'],
      { proto: 'tcp', ip: '192.0.2.1', port: NODE_PORT, timeoutMs: 1000 },
      'outside',
    );
  });

  it('scaled up and down while traffic flows: traffic follows, no connection fails', async () => {
    const traffic = background();
    for (const pods of [['a', 'b', 'c'], ['c'], ['a', 'b']]) {
      api!.update('EndpointSlice', slice('web', pods));
      await trafficReaches(pods);
      await traffic.follows(pods);
    }
    const seen = assertAllAnswered(await traffic.stop(), 'background traffic during scaling');
    assert.deepEqual([...seen].sort(), ['a', 'b', 'c']);
    // Scaled to zero: kube-proxy's REJECT for a Service without endpoints.
    api!.update('EndpointSlice', slice('web', []));
    await until('no endpoints', async () => !(await env.sb.request('client', web)).ok, 5000);
    expectError(await env.sb.request('client', web), 'refused');
    api!.update('EndpointSlice', slice('web', ['a', 'b']));
    await trafficReaches(['a', 'b']);
  });

  it("the Node object feeds the node's zone: topology hints follow a zone change", async () => {
    api!.update('EndpointSlice', slice('web', ['a', 'b'], { a: 'zone-a', b: 'zone-b' }));
    await trafficReaches(['a']);
    api!.update('Node', node('zone-b'));
    await trafficReaches(['b']);
    api!.update('Node', node('zone-a'));
    api!.update('EndpointSlice', slice('web', ['a', 'b']));
    await trafficReaches(['a', 'b']);
  });

  it('a Service deleted through the API: its rules are gone, others keep working', async () => {
    assert.match(await natRules(), /default\/api:http/);
    api!.delete('Service', 'default', 'api');
    api!.delete('EndpointSlice', 'default', 'api-abc12');
    await until(
      'rules of default/api removed',
      async () => !/default\/api:http/.test(await natRules()),
      5000,
    );
    const nat = await natRules();
    assert.doesNotMatch(nat, new RegExp(API_IP.replaceAll('.', '\\.')));
    assert.doesNotMatch(nat, new RegExp(`--dport ${NODE_PORT}`));
    const r = await env.sb.request('client', { proto: 'tcp', ip: API_IP, port: 80, timeoutMs: 500 });
    assert.equal(r.ok, false, 'nothing answers the deleted ClusterIP');
    const o = await env.sb.request('outside', {
      proto: 'tcp',
      ip: '192.0.2.1',
      port: NODE_PORT,
      timeoutMs: 500,
    });
    assert.equal(o.ok, false, 'nothing answers the deleted NodePort');
    assert.deepEqual([...(await answering(SPREAD))].sort(), ['a', 'b']);
  });

  it('watches closed by the server and 410 Gone (relist): no rule churn', async () => {
    await settled();
    const before = { syncs };
    const watches = api!.requests(undefined, 'watch');
    api!.closeAllWatches();
    await until('all three re-watched', () => api!.requests(undefined, 'watch') >= watches + 3, 5000);
    // An event none of our selectors match moves the resourceVersion past what the reflectors saw;
    // compacting then makes every re-watch get 410 Gone, and the reflectors relist.
    const lists = api!.requests(undefined, 'list');
    api!.create('Service', {
      ...service('foreign', '10.96.0.98'),
      metadata: { name: 'foreign', labels: { 'service.kubernetes.io/service-proxy-name': 'x' } },
    });
    api!.compact();
    api!.closeAllWatches();
    await until('all three relisted after 410', () => api!.requests(undefined, 'list') >= lists + 3, 5000);
    // A sentinel change after the relists, instead of waiting "long enough": the source's events are
    // ordered, so a (wrong) sync caused by the re-watches or relists comes before the sentinel's sync,
    // or is folded into it and then writes more than the sentinel's one Service.
    const reports: SyncReport[][] = [];
    const record = (r: SyncReport[]): void => void reports.push(r);
    controller!.on('synced', record);
    try {
      api!.create('Service', service('sentinel', SENTINEL_IP));
      await until("the sentinel's sync", () => reports.length >= 1, 5000);
      await settled();
    } finally {
      controller!.off('synced', record);
    }
    assert.equal(syncs, before.syncs + 1, 'one sync after re-watch and relist: the sentinel');
    assert.deepEqual(
      reports.map((r) => r.map((x) => [x.full, x.writtenServices])),
      [[[false, 1]]],
      'a partial sync writing the sentinel Service only (no rule churn from the relist)',
    );
    assert.equal(health(), 200);
    assert.deepEqual([...(await answering(SPREAD))].sort(), ['a', 'b']);
    api!.delete('Service', 'default', 'sentinel');
    await until("the sentinel's removal synced", () => syncs === before.syncs + 2, 5000);
    await settled();
  });

  it('HTTP 500s from the API: backoff (no hot loop), rules stay, then recovery', async () => {
    await settled();
    const before = syncs;
    const t0 = Date.now();
    api!.failNext(9, 500);
    api!.closeAllWatches();
    const traffic = background();
    await until('nine failures and three good requests', () => api!.requestsSince(t0) >= 12, 8000);
    const elapsed = Date.now() - t0;
    assertAllAnswered(await traffic.stop(), 'traffic during HTTP 500s');
    // 3 failures per reflector back off 50 + 100 + 200 ms (±20 %): not a reconnect storm.
    assert.ok(elapsed >= 250, `recovered after ${elapsed} ms: too fast for a backoff`);
    assert.ok(api!.requestsSince(t0) <= 20, `${api!.requestsSince(t0)} requests: a hot loop`);
    assert.equal(syncs, before, 'errors alone change no rule');
    api!.update('EndpointSlice', slice('web', ['b', 'c']));
    await trafficReaches(['b', 'c']);
  });

  it('dead watch connections: the watchdog notices and changes arrive', async () => {
    api!.stallWatches(true);
    api!.update('EndpointSlice', slice('web', ['a']));
    await sleep(100);
    api!.stallWatches(false);
    // Watch timeout (1 s) + grace (300 ms), then a re-watch from the last resourceVersion.
    await trafficReaches(['a']);
  });

  it('the API goes away: rules stay and serve, health turns unhealthy after the grace period; it comes back: recovery', async () => {
    api!.update('EndpointSlice', slice('web', ['a', 'b']));
    await trafficReaches(['a', 'b']);
    await settled();
    const before = { syncs, report: proxier.lastSync };
    assert.equal(health(), 200);
    const t0 = Date.now();
    const traffic = background();
    await api!.stop();
    // Changes made while svcplane cannot see them.
    api!.update('EndpointSlice', slice('web', ['c']));
    await until('unhealthy', () => health() === 503, GRACE_MS + 4000);
    const unhealthyAfter = Date.now() - t0;
    assert.ok(
      unhealthyAfter >= GRACE_MS - 100,
      `unhealthy after ${unhealthyAfter} ms, before the grace period`,
    );
    assert.match(healthz().body.sourceError ?? '', /API unreachable/);
    await sleep(300);
    const during = assertAllAnswered(await traffic.stop(), 'traffic while the API is down');
    assert.deepEqual([...during].sort(), ['a', 'b'], 'the last programmed rules keep serving');
    assert.equal(syncs, before.syncs);
    assert.equal(proxier.lastSync, before.report);

    await api!.start();
    await until('healthy again', () => health() === 200, 5000);
    await trafficReaches(['c']);
    api!.update('EndpointSlice', slice('web', ['a', 'c']));
    await trafficReaches(['a', 'c']);
  });
  it('the Node marked for deletion (autoscaler taint, deletionTimestamp): /healthz 503 nodeEligible false, traffic unaffected', async () => {
    await settled();
    assert.equal(health(), 200);
    assert.equal(healthz().body.nodeEligible, true);
    const tainted = {
      ...node('zone-a'),
      spec: { taints: [{ key: TO_BE_DELETED_TAINT, value: '1764600000', effect: 'NoSchedule' }] },
    };
    api!.update('Node', tainted);
    await until('unhealthy once the autoscaler taints the node', () => health() === 503, 5000);
    assert.equal(healthz().body.nodeEligible, false);
    assert.match(healthz().body.reason ?? '', /has the taint ToBeDeletedByClusterAutoscaler/);
    // Load balancers drain the node; svcplane keeps serving what still arrives.
    assert.deepEqual([...(await answering(SPREAD))].sort(), ['a', 'c']);
    api!.update('Node', node('zone-a'));
    await until('eligible again without the taint', () => health() === 200, 5000);

    // A DELETE while a finalizer holds the Node: the API sets deletionTimestamp, the Node stays.
    const held = {
      ...node('zone-a'),
      metadata: { ...(node('zone-a') as { metadata: object }).metadata, finalizers: ['svcplane.test/hold'] },
    };
    api!.update('Node', held);
    api!.delete('Node', '', NODE);
    await until('unhealthy once the node is being deleted', () => health() === 503, 5000);
    assert.equal(healthz().body.nodeEligible, false);
    assert.match(healthz().body.reason ?? '', /is being deleted/);
    // The finalizer goes, so does the Node: its last state keeps it ineligible (as kube-proxy).
    api!.update('Node', node('zone-a'));
    await until('the Node gone', () => !controller!.source.current()?.nodes.has(NODE), 5000);
    assert.equal(healthz().body.nodeEligible, false);
    // Re-registered: eligible again.
    api!.create('Node', node('zone-a'));
    await until('eligible after the Node is back', () => health() === 200, 5000);
    assert.deepEqual([...(await answering(SPREAD))].sort(), ['a', 'c']);
  });

  it('needs no single-object GET (the RBAC verbs are list and watch)', () => {
    assert.ok(api!.requests(undefined, 'list') > 0 && api!.requests(undefined, 'watch') > 0);
    assert.equal(api!.requests(undefined, 'get'), 0);
  });
});
