import assert from 'node:assert/strict';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:http';
import type { Backend, SyncReport } from '../../../src/modes/backend.js';
import { Controller } from '../../../src/controller/controller.js';
import {
  healthHandler,
  healthzStatus,
  livezStatus,
  nodeEligibility,
  NodeEligibilityTracker,
  TO_BE_DELETED_TAINT,
} from '../../../src/controller/health.js';
import {
  HealthCheckNodePorts,
  healthCheckResponse,
  healthCheckTargets,
} from '../../../src/controller/healthcheck-nodeports.js';
import { attachMetrics, MAX_PENDING_TRIGGER_TIMES, ProxyMetrics } from '../../../src/controller/metrics.js';
import { RestoreError } from '../../../src/iptables/iptables.js';
import { redactSecrets } from '../../../src/util/log.js';
import { buildClusterState, type SourceObject } from '../../../src/model/build.js';
import type { ClusterState } from '../../../src/model/types.js';
import { stateChange } from '../../../src/model/state-change.js';
import { ep, service, state } from '../iptables/fixtures.js';
import { HandSource } from '../../support/hand-source.js';

/** A source the test drives by hand. */

/** A backend whose syncs the test releases (or fails) one by one. */
class GatedBackend implements Backend {
  readonly name = 'fake/IPv4';
  lastAttemptFull = true;
  syncs: ClusterState[] = [];
  private gate: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  private entered: (() => void) | undefined;
  fail: Error | undefined;
  setup(): Promise<void> {
    return Promise.resolve();
  }
  detectDrift(): Promise<boolean> {
    return Promise.resolve(false);
  }
  forceFullSync(): void {
    this.lastAttemptFull = true;
  }
  waitEntered(): Promise<void> {
    return new Promise((r) => (this.entered = r));
  }
  release(): void {
    this.gate?.resolve();
  }
  async sync(s: ClusterState): Promise<SyncReport> {
    this.syncs.push(s);
    await new Promise<void>((resolve, reject) => {
      this.gate = { resolve, reject };
      this.entered?.();
    });
    if (this.fail !== undefined) throw this.fail;
    const full = this.lastAttemptFull;
    this.lastAttemptFull = false;
    return {
      backend: this.name,
      full,
      durationMs: 12,
      bytes: 1000,
      lines: 20,
      writtenServices: 1,
      staleChains: 0,
      ruleCounts: { filterRules: 3, totalFilterRules: 5, natRules: 7, natChains: 4, totalNatRules: 9 },
      noLocalEndpoints: { internal: 1, external: 2 },
    } as SyncReport;
  }
}

/** A controller with metrics over a GatedBackend; `start` runs it through its first (gated) sync. */
function gatedController(initial: ClusterState) {
  const src = new HandSource(initial);
  const be = new GatedBackend();
  const c = new Controller(src, [be], { minSyncPeriodMs: 10, syncPeriodMs: 60_000 });
  const metrics = new ProxyMetrics();
  attachMetrics(metrics, c);
  const start = async (): Promise<void> => {
    const entered = be.waitEntered();
    const started = c.start();
    await entered;
    be.release();
    await started;
  };
  return { src, be, c, metrics, start };
}

const udp = (ips: string[]) =>
  service('ns/dns', {
    clusterIP: '10.96.0.53',
    ports: [{ protocol: 'UDP', port: 53, endpoints: ips.map((ip) => ep(ip, 53)) }],
  });

const H = { syncPeriodMs: 30_000, source: { healthy: true }, node: { eligible: true } };

/** This node as the model builds it from a v1 Node object (`extra` merged into it). */
function nodeFrom(extra: { metadata?: object; spec?: object } = {}): ClusterState {
  return buildClusterState([
    {
      obj: {
        apiVersion: 'v1',
        kind: 'Node',
        ...extra,
        metadata: { name: 'node-1', ...extra.metadata },
        status: { addresses: [{ type: 'InternalIP', address: '192.0.2.1' }] },
      },
    },
  ]);
}

describe('hardening: health', () => {
  it('healthz: 200 with lastUpdated/currentTime; 503 when a change waited > 2× sync period', () => {
    const ok = healthzStatus({ ...H, queuedSince: 1000, lastSyncedAt: 500, now: 1000 + 60_000 });
    assert.equal(ok.code, 200);
    assert.equal(ok.body.lastUpdated, new Date(500).toISOString());
    assert.equal(ok.body.currentTime, new Date(61_000).toISOString());
    const stale = healthzStatus({ ...H, queuedSince: 1000, lastSyncedAt: 500, now: 1000 + 60_001 });
    assert.equal(stale.code, 503);
    assert.equal(stale.body.reason, 'a change has not reached the kernel within twice the sync period');
    assert.equal(livezStatus({ ...H, queuedSince: 1000, lastSyncedAt: 500, now: 61_001 }).code, 503);
  });

  it('healthz: 503 with a fixed reason when the source is unhealthy, never its text; livez stays 200', () => {
    const h = {
      ...H,
      source: {
        healthy: false,
        problem: 'api-credentials' as const,
        reason: 'exec plugin: refresh_token=rt-secret client_secret=cs-secret',
      },
      queuedSince: 0,
      lastSyncedAt: 5,
      now: 10,
    };
    const s = healthzStatus(h);
    assert.equal(s.code, 503);
    assert.equal(s.body.reason, 'source unhealthy: kubeconfig credential plugin or auth provider failed');
    assert.equal(s.body.sourceError, 'kubeconfig credential plugin or auth provider failed');
    assert.doesNotMatch(JSON.stringify(s.body), /secret|refresh_token/);
    const unknown = healthzStatus({ ...h, source: { healthy: false, reason: '/path: EACCES' } });
    assert.equal(unknown.body.reason, 'source unhealthy: source unhealthy');
    assert.doesNotMatch(JSON.stringify(unknown.body), /EACCES|path/);
    const refused = healthzStatus({ ...h, source: { healthy: true }, refusedSince: 7 });
    assert.equal(refused.code, 503);
    assert.match(refused.body.reason ?? '', /refused by the safety valve/);
    assert.equal(livezStatus(h).code, 200);
    assert.equal(healthzStatus({ ...H, queuedSince: 0, lastSyncedAt: 0, now: 10 }).code, 503, 'never synced');
  });

  it('serves /healthz and /livez over HTTP and counts codes', async () => {
    const metrics = new ProxyMetrics();
    let inputs = { ...H, queuedSince: 0, lastSyncedAt: 5, now: 10 };
    const server = createServer(healthHandler(() => inputs, metrics));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const get = (path: string) =>
      new Promise<{ code: number; body: string }>((resolve, reject) => {
        request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
        })
          .on('error', reject)
          .end();
      });
    try {
      const a = await get('/healthz');
      assert.equal(a.code, 200);
      assert.deepEqual(Object.keys(JSON.parse(a.body) as object).slice(0, 2), ['lastUpdated', 'currentTime']);
      inputs = { ...inputs, queuedSince: 1, now: 100_000 };
      assert.equal((await get('/healthz')).code, 503);
      assert.equal((await get('/livez')).code, 503);
      assert.equal((await get('/other')).code, 404);
      const text = await metrics.registry.metrics();
      assert.match(text, /kubeproxy_proxy_healthz_total\{code="200"\} 1/);
      assert.match(text, /kubeproxy_proxy_healthz_total\{code="503"\} 1/);
      assert.match(text, /kubeproxy_proxy_livez_total\{code="503"\} 1/);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe('hardening: /healthz nodeEligible (KEP-3836)', () => {
  const taint = (key: string) => ({ spec: { taints: [{ key, value: '1700000000', effect: 'NoSchedule' }] } });

  it('the model reads the deletion timestamp and the taint keys of a Node', () => {
    const node = nodeFrom({
      metadata: { deletionTimestamp: '2026-11-30T10:00:00Z' },
      ...taint(TO_BE_DELETED_TAINT),
    }).nodes.get('node-1');
    assert.equal(node?.deletionTimestamp, '2026-11-30T10:00:00Z');
    assert.deepEqual(node?.taintKeys, [TO_BE_DELETED_TAINT]);
    const plain = nodeFrom().nodes.get('node-1');
    assert.equal(plain?.deletionTimestamp, undefined);
    assert.equal(plain?.taintKeys, undefined);
    // Broken values are problems (the Node is skipped), as for any other field.
    const bad = nodeFrom({ metadata: { deletionTimestamp: 'soon' }, spec: { taints: [{ key: 'a b' }] } });
    assert.deepEqual(
      bad.problems.map((p) => p.field),
      ['metadata.deletionTimestamp', 'spec.taints[0].key'],
    );
  });

  it('503 with nodeEligible false for a Node being deleted or tainted by the autoscaler; livez unaffected', () => {
    const base = { ...H, queuedSince: 0, lastSyncedAt: 5, now: 10 };
    const cases: [string, ClusterState, boolean][] = [
      ['plain', nodeFrom(), true],
      ['another taint', nodeFrom(taint('node.kubernetes.io/unschedulable')), true],
      ['autoscaler taint', nodeFrom(taint(TO_BE_DELETED_TAINT)), false],
      ['being deleted', nodeFrom({ metadata: { deletionTimestamp: '2026-11-30T10:00:00Z' } }), false],
    ];
    for (const [what, st, eligible] of cases) {
      const node = nodeEligibility(st.nodes.get('node-1')!);
      const h = healthzStatus({ ...base, node });
      assert.equal(h.code, eligible ? 200 : 503, what);
      assert.equal(h.body.nodeEligible, eligible, what);
      if (!eligible)
        assert.match(
          h.body.reason ?? '',
          /^not eligible: node (is being deleted|has the taint ToBeDeletedByClusterAutoscaler)$/,
        );
      const l = livezStatus({ ...base, node });
      assert.equal(l.code, 200, `${what}: livez`);
      assert.equal('nodeEligible' in l.body, false, "kube-proxy's /livez has no nodeEligible");
    }
  });

  it('eligible until a Node says otherwise; a vanished Node keeps its last verdict', () => {
    const t = new NodeEligibilityTracker();
    assert.equal(t.observe(undefined).eligible, true, 'starting up');
    assert.equal(t.observe(nodeFrom(taint(TO_BE_DELETED_TAINT)).nodes.get('node-1')).eligible, false);
    assert.equal(t.observe(undefined).eligible, false, 'deleted: the last state decides');
    assert.equal(t.observe(nodeFrom().nodes.get('node-1')).eligible, true);
  });
});

describe('hardening: controller queue bookkeeping and metrics', () => {
  it('a change arriving during a sync stays queued; the next sync clears it', async () => {
    const { src, be, c, metrics, start } = gatedController(state(udp(['10.0.0.1'])));
    await start();
    assert.equal(c.health().queuedSince, 0, 'initial state synced');

    src.set(state(udp(['10.0.0.2'])));
    assert.notEqual(c.health().queuedSince, 0);
    const second = be.waitEntered();
    await second;
    // A change while the sync of the previous one is in flight.
    src.set(state(udp(['10.0.0.3'])));
    const third = be.waitEntered();
    be.release();
    await new Promise((r) => setTimeout(r, 5));
    assert.notEqual(c.health().queuedSince, 0, 'the change seen during the sync is still queued');
    await third;
    be.release();
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(c.health().queuedSince, 0);
    assert.equal(be.syncs.length, 3);

    const text = await metrics.registry.metrics();
    assert.match(text, /kubeproxy_sync_proxy_rules_endpoint_changes_total 2/);
    assert.match(text, /kubeproxy_sync_proxy_rules_endpoint_changes_pending 0/);
    // No EndpointSlice trigger-time annotation on these changes: no latency is recorded (kube-proxy).
    assert.doesNotMatch(text, /kubeproxy_network_programming_duration_seconds_count\{/);
    assert.match(text, /kubeproxy_sync_full_proxy_rules_duration_seconds_count\{ip_family="IPv4"\} 1/);
    assert.match(text, /kubeproxy_sync_partial_proxy_rules_duration_seconds_count\{ip_family="IPv4"\} 2/);
    assert.match(text, /kubeproxy_sync_proxy_rules_iptables_total\{table="nat",ip_family="IPv4"\} 9/);
    assert.match(text, /kubeproxy_sync_proxy_rules_iptables_last\{table="nat",ip_family="IPv4"\} 7/);
    assert.match(
      text,
      /kubeproxy_sync_proxy_rules_no_local_endpoints_total\{traffic_policy="external",ip_family="IPv4"\} 2/,
    );
    assert.match(text, /kubeproxy_sync_proxy_rules_last_timestamp_seconds\{ip_family="IPv4"\} \d/);
    assert.match(text, /kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds\{ip_family="IPv4"\} \d/);
    assert.match(text, /svcplane_sync_restore_bytes\{backend="fake\/IPv4"\} 1000/);
    await c.stop();
  });

  it('counts restore failures, partial ones apart, and keeps the change queued', async () => {
    const { src, be, c, metrics, start } = gatedController(state(udp(['10.0.0.1'])));
    await start();
    be.fail = new RestoreError(['iptables-restore'], 1, 'iptables-restore: line 3 failed', 'exit', 3, 'x', 3);
    const failed = new Promise((r) => c.once('syncError', r));
    const next = be.waitEntered();
    src.set(state(udp(['10.0.0.2'])));
    await next;
    be.release();
    await failed;
    assert.notEqual(c.health().queuedSince, 0);
    const text = await metrics.registry.metrics();
    assert.match(text, /kubeproxy_sync_proxy_rules_iptables_restore_failures_total\{ip_family="IPv4"\} 1/);
    assert.match(
      text,
      /kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total\{ip_family="IPv4"\} 1/,
    );
    assert.match(text, /kubeproxy_sync_proxy_rules_endpoint_changes_pending 1/);
    await c.stop();
  });

  it('network programming latency comes from the EndpointSlice trigger-time annotation', async () => {
    const { src, be, c, metrics, start } = gatedController(state());
    const withTrigger = (ips: string[], trigger: number): ClusterState => ({
      ...state(udp(ips)),
      endpointsTriggerTimes: new Map([['ns/dns', trigger]]),
    });
    // Older than svcplane (the initial list): not observed.
    src.set(withTrigger(['10.0.0.1'], Date.now() - 3_600_000));
    await start();
    const count = async (): Promise<string> =>
      /kubeproxy_network_programming_duration_seconds_count\{ip_family="IPv4"\} (\d+)/.exec(
        await metrics.registry.metrics(),
      )?.[1] ?? '0';
    assert.equal(await count(), '0');
    const next = be.waitEntered();
    src.set(withTrigger(['10.0.0.2'], Date.now() - 1));
    await next;
    await new Promise((r) => setTimeout(r, 30));
    be.release();
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(await count(), '1');
    const text = await metrics.registry.metrics();
    const sum = Number(
      /kubeproxy_network_programming_duration_seconds_sum\{ip_family="IPv4"\} (\S+)/.exec(text)?.[1],
    );
    assert.ok(sum >= 0.03 && sum < 5, `latency ${sum}`);
    await c.stop();
  });

  it('network programming latency: one observation per trigger time, each in the sync that carried it', async () => {
    const { src, be, c, metrics, start } = gatedController(state(udp(['10.0.0.1'])));
    await start();
    await new Promise((r) => setTimeout(r, 20));
    const at = (ips: string[], trigger: number): ClusterState => ({
      ...state(udp(ips)),
      endpointsTriggerTimes: new Map([['ns/dns', trigger]]),
    });
    const count = async (): Promise<number> =>
      Number(
        /kubeproxy_network_programming_duration_seconds_count\{ip_family="IPv4"\} (\d+)/.exec(
          await metrics.registry.metrics(),
        )?.[1],
      );
    const t1 = Date.now() - 5;
    src.set(at(['10.0.0.2'], t1));
    const second = be.waitEntered();
    await second;
    // Two more changes while that sync runs: they are not in the kernel when it ends.
    src.set(at(['10.0.0.3'], t1 + 1));
    src.set(at(['10.0.0.4'], t1 + 2));
    const third = be.waitEntered();
    be.release();
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(await count(), 1, 'the sync observed only its own trigger time');
    await third;
    be.release();
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(await count(), 3, 'both trigger times coalesced into the next sync are observed');
    await c.stop();
  });

  it(`while syncs fail, at most ${MAX_PENDING_TRIGGER_TIMES} trigger times per Service wait; none is observed twice`, async () => {
    const src = new HandSource(state(udp(['10.0.0.1'])));
    let failing = false;
    const be: Backend = {
      name: 'switch/IPv4',
      setup: () => Promise.resolve(),
      detectDrift: () => Promise.resolve(false),
      forceFullSync: () => undefined,
      sync: () =>
        failing
          ? Promise.reject(new RestoreError(['iptables-restore'], 1, 'refused', 'exit', 1, 'x', 1))
          : Promise.resolve({
              backend: 'switch/IPv4',
              full: false,
              durationMs: 1,
              bytes: 0,
              lines: 0,
              writtenServices: 0,
              staleChains: 0,
            }),
    };
    const c = new Controller(src, [be], { minSyncPeriodMs: 1, syncPeriodMs: 60_000 });
    const metrics = new ProxyMetrics();
    attachMetrics(metrics, c);
    await c.start();
    await new Promise((r) => setTimeout(r, 300));
    failing = true;
    const base = Date.now() - 250;
    for (let i = 0; i < 200; i++) {
      src.set({
        ...state(udp([`10.0.${Math.floor(i / 200)}.${(i % 200) + 2}`])),
        endpointsTriggerTimes: new Map([['ns/dns', base + i]]),
      });
    }
    await new Promise<void>((r) => c.once('syncError', () => r()));
    failing = false;
    await new Promise<void>((r) => c.once('synced', () => r()));
    const text = await metrics.registry.metrics();
    assert.match(
      text,
      new RegExp(
        `kubeproxy_network_programming_duration_seconds_count\\{ip_family="IPv4"\\} ${MAX_PENDING_TRIGGER_TIMES}\\n`,
      ),
    );
    // The oldest ones were kept: the sum is that of the 16 longest waits.
    const sum = Number(
      /kubeproxy_network_programming_duration_seconds_sum\{ip_family="IPv4"\} (\S+)/.exec(text)?.[1],
    );
    assert.ok(sum >= MAX_PENDING_TRIGGER_TIMES * 0.2, `sum ${sum}`);
    c.requestSync();
    await new Promise<void>((r) => c.once('synced', () => r()));
    assert.match(
      await metrics.registry.metrics(),
      new RegExp(
        `kubeproxy_network_programming_duration_seconds_count\\{ip_family="IPv4"\\} ${MAX_PENDING_TRIGGER_TIMES}\\n`,
      ),
      'nothing left to observe again',
    );
    await c.stop();
  });

  it("exposes kube-proxy's metric names with kube-proxy's types", async () => {
    const text = await new ProxyMetrics().registry.metrics();
    const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    const kubeProxy: Record<string, string> = {
      kubeproxy_sync_proxy_rules_duration_seconds: 'histogram',
      kubeproxy_sync_full_proxy_rules_duration_seconds: 'histogram',
      kubeproxy_sync_partial_proxy_rules_duration_seconds: 'histogram',
      kubeproxy_network_programming_duration_seconds: 'histogram',
      kubeproxy_sync_proxy_rules_last_timestamp_seconds: 'gauge',
      kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds: 'gauge',
      kubeproxy_sync_proxy_rules_endpoint_changes_pending: 'gauge',
      kubeproxy_sync_proxy_rules_endpoint_changes_total: 'counter',
      kubeproxy_sync_proxy_rules_service_changes_pending: 'gauge',
      kubeproxy_sync_proxy_rules_service_changes_total: 'counter',
      kubeproxy_sync_proxy_rules_iptables_total: 'gauge',
      kubeproxy_sync_proxy_rules_iptables_last: 'gauge',
      kubeproxy_sync_proxy_rules_iptables_restore_failures_total: 'counter',
      kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total: 'counter',
      // A gauge in kube-proxy despite the _total suffix.
      kubeproxy_sync_proxy_rules_no_local_endpoints_total: 'gauge',
      kubeproxy_proxy_healthz_total: 'counter',
      kubeproxy_proxy_livez_total: 'counter',
      kubeproxy_conntrack_reconciler_sync_duration_seconds: 'histogram',
      kubeproxy_conntrack_reconciler_deleted_entries_total: 'counter',
    };
    for (const [name, type] of Object.entries(kubeProxy)) assert.equal(types.get(name), type, name);
    // kube-proxy's nfacct packet counters are not implemented (docs/operations.md): not exported either.
    assert.equal(types.has('kubeproxy_iptables_ct_state_invalid_dropped_packets_total'), false);
    assert.equal(types.has('kubeproxy_iptables_localhost_nodeports_accepted_packets_total'), false);
    // Process and runtime metrics, as every kube-proxy dashboard reads them (prom-client's defaults).
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'process_open_fds',
      'process_max_fds',
      'process_start_time_seconds',
    ]) {
      assert.ok(types.has(name), name);
    }
    for (const name of types.keys()) assert.match(name, /^(kubeproxy|svcplane|process|nodejs)_/, name);
  });

  it('reads the trigger-time annotation of EndpointSlices (newest per Service; junk ignored)', () => {
    const sl = (name: string, trigger: string): SourceObject => ({
      obj: {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          name,
          namespace: 'ns',
          labels: { 'kubernetes.io/service-name': 'web' },
          annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': trigger },
        },
        addressType: 'IPv4',
        ports: [{ name: '', protocol: 'TCP', port: 80 }],
        endpoints: [{ addresses: [`10.0.0.${name.length}`] }],
      },
    });
    const svcObj: SourceObject = {
      obj: {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'web', namespace: 'ns' },
        spec: { clusterIP: '10.96.0.80', ports: [{ port: 80 }] },
      },
    };
    const s = buildClusterState([
      svcObj,
      sl('a', '2026-11-22T05:00:00Z'),
      sl('bb', '2026-11-22T05:00:03.5Z'),
      sl('ccc', 'yesterday; rm -rf /'),
    ]);
    assert.deepEqual(s.problems, []);
    assert.equal(s.endpointsTriggerTimes?.get('ns/web'), Date.parse('2026-11-22T05:00:03.5Z'));
    assert.equal(buildClusterState([svcObj]).endpointsTriggerTimes, undefined);
  });

  it('tells Service changes from endpoint changes', () => {
    const a = state(udp(['10.0.0.1']));
    const b = state(udp(['10.0.0.2']));
    const c = state(
      service('ns/dns', {
        clusterIP: '10.96.0.54',
        ports: [{ protocol: 'UDP', port: 53, endpoints: [ep('10.0.0.2', 53)] }],
      }),
    );
    assert.deepEqual([...stateChange(a, b).endpoints], ['ns/dns']);
    assert.deepEqual([...stateChange(a, b).services], []);
    assert.deepEqual([...stateChange(b, c).services], ['ns/dns']);
    assert.deepEqual([...stateChange(b, c).endpoints], []);
  });
});

describe('hardening: health-check node ports', () => {
  const lb = (eps: Parameters<typeof ep>[], hc = 0) =>
    service('ns/lb', {
      type: 'LoadBalancer',
      eTP: 'Local',
      healthCheckNodePort: hc,
      clusterIP: '10.96.0.80',
      ports: [{ port: 80, nodePort: 30080, endpoints: eps.map((a) => ep(...a)) }],
    });

  it('counts local ready endpoints per Service; 200 only with ≥1 and a healthy proxy', () => {
    const s = state(
      lb(
        [
          ['10.0.0.1', 80, { nodeName: 'n1' }],
          ['10.0.0.2', 80, { nodeName: 'n1', ready: false }],
          ['10.0.0.3', 80, { nodeName: 'n2' }],
        ],
        31000,
      ),
    );
    const t = healthCheckTargets(s, 'n1').get(31000)!;
    assert.deepEqual(t, { namespace: 'ns', name: 'lb', localEndpoints: 1 });
    assert.deepEqual(JSON.parse(healthCheckResponse(t, true).body), {
      service: { namespace: 'ns', name: 'lb' },
      localEndpoints: 1,
      serviceProxyHealthy: true,
    });
    assert.equal(healthCheckResponse(t, true).code, 200);
    assert.equal(healthCheckResponse(t, false).code, 503);
    assert.equal(healthCheckResponse(healthCheckTargets(s, 'n3').get(31000)!, true).code, 503);
    assert.equal(healthCheckTargets(state(lb([], 0)), 'n1').size, 0);
  });

  it('opens and closes servers as Services come and go', async function () {
    // A port the kernel just handed out and took back: free, so failing to open it is svcplane's fault.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const hc = new HealthCheckNodePorts({ host: '127.0.0.1' });
    const get = () =>
      new Promise<{ code: number; body: string }>((resolve, reject) => {
        request({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
          let body = '';
          res.on('data', (ch: Buffer) => (body += ch.toString()));
          res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
        })
          .on('error', reject)
          .end();
      });
    try {
      // Two syncs in a row: the updates must not race to open the same port.
      void hc.update(state(lb([['10.0.0.1', 80, { nodeName: 'n2' }]], port)), 'n1');
      await hc.update(state(lb([['10.0.0.1', 80, { nodeName: 'n1' }]], port)), 'n1');
      assert.deepEqual(hc.ports(), [port], 'the health check server opened its port');
      assert.equal((await get()).code, 200);
      await hc.update(state(lb([['10.0.0.1', 80, { nodeName: 'n2' }]], port)), 'n1');
      const r = await get();
      assert.equal(r.code, 503);
      assert.equal((JSON.parse(r.body) as { localEndpoints: number }).localEndpoints, 0);
      await hc.update(state(), 'n1');
      assert.deepEqual(hc.ports(), []);
      await assert.rejects(get(), /ECONNREFUSED/);
    } finally {
      await hc.close();
    }
  });
});

describe('hardening: logs', () => {
  it('never writes secret-looking fields', () => {
    const out = redactSecrets({
      server: 'https://10.0.0.1:6443',
      user: { token: 'abc', 'client-key-data': 'xyz', name: 'svcplane' },
      headers: [{ Authorization: 'Bearer abc' }],
    });
    assert.equal(JSON.stringify(out).includes('abc'), false);
    assert.equal(JSON.stringify(out).includes('xyz'), false);
    assert.match(JSON.stringify(out), /svcplane/);
    assert.match(JSON.stringify(out), /10\.0\.0\.1/);
  });
});
