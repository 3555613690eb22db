import assert from 'node:assert/strict';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { eventually } from '../support/daemon.js';
import { serviceObject, sliceObject, type ServiceSpec } from '../support/iptables-harness.js';
import { metricSum, seriesValue } from '../support/metrics-text.js';
import { expectReply } from '../support/sandbox.js';
import { UML_NODE, useUmlDaemon } from './helpers.js';
import { httpGet, scrapeMetrics, type HttpAnswer } from '../support/http.js';

/**
 * `svcplane run --proxy-mode=ipvs --metrics-bind-address …` (the daemon, from the build, real IPVS):
 * what a kube-proxy operator scrapes in IPVS mode. Each sync is observed under kube-proxy's names
 * (sync_proxy_rules_duration_seconds, _last_timestamp_seconds, the change counters, the per-policy
 * no_local_endpoints_total), no sync is counted or logged as failed, /healthz answers 200, and the
 * families kube-proxy registers in iptables mode only are absent. Before cd5ae96 the IPVS report's
 * numeric noLocalEndpoints made the metrics listener throw inside the controller's 'synced' emit: every
 * sync written to the kernel was then logged and counted as failed and retried with backoff, and the
 * listeners after the metrics (health-check node ports) never ran.
 */

const NODE = UML_NODE;
const PORT = 8080;
const WEB = '10.96.82.1';
const ITP = '10.96.82.2';
const LB = '10.96.82.3';
const HC_PORT = 30556;
const FAILED = 'sync failed; previous rules stay in place';

function service(name: string, ip: string, spec: Partial<ServiceSpec> = {}, nodePort?: number): object {
  return serviceObject(name, {
    clusterIPs: [ip],
    ports: [{ name: 'http', port: 80, targetPort: PORT, nodePort }],
    ...spec,
  });
}

function slice(sb: Sandbox, name: string, eps: readonly { pod: string; node: string }[]): object {
  const endpoints = eps.map((e) => ({ ip: sb.podIP(e.pod), nodeName: e.node }));
  return sliceObject(name, 'IPv4', [{ name: 'http', port: PORT }], endpoints);
}

/**
 * web: endpoint on this node. itp: internalTrafficPolicy Local, its endpoints on `itpNode` only.
 * lb: externalTrafficPolicy Local with a health-check node port, its endpoint on another node.
 */
function cluster(sb: Sandbox, itpNode: string): object[] {
  return [
    service('web', WEB),
    slice(sb, 'web', [{ pod: 'a', node: NODE }]),
    service('itp', ITP, { internalTrafficPolicy: 'Local' }),
    slice(sb, 'itp', [{ pod: 'a', node: itpNode }]),
    service(
      'lb',
      LB,
      { type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: HC_PORT },
      30582,
    ),
    slice(sb, 'lb', [{ pod: 'b', node: 'node-2' }]),
  ];
}

/** Metric families kube-proxy registers in IPVS mode, with or without a sample yet. */
const IPVS_FAMILIES: readonly [string, string][] = [
  ['kubeproxy_sync_proxy_rules_duration_seconds', 'histogram'],
  ['kubeproxy_sync_proxy_rules_last_timestamp_seconds', 'gauge'],
  ['kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds', 'gauge'],
  ['kubeproxy_network_programming_duration_seconds', 'histogram'],
  ['kubeproxy_sync_proxy_rules_endpoint_changes_pending', 'gauge'],
  ['kubeproxy_sync_proxy_rules_endpoint_changes_total', 'counter'],
  ['kubeproxy_sync_proxy_rules_service_changes_pending', 'gauge'],
  ['kubeproxy_sync_proxy_rules_service_changes_total', 'counter'],
  ['kubeproxy_sync_proxy_rules_no_local_endpoints_total', 'gauge'],
  ['kubeproxy_sync_proxy_rules_iptables_restore_failures_total', 'counter'],
  ['kubeproxy_proxy_healthz_total', 'counter'],
  ['kubeproxy_proxy_livez_total', 'counter'],
];

/** Registered by kube-proxy in iptables mode only (its RegisterMetrics). */
const IPTABLES_ONLY = [
  'kubeproxy_sync_full_proxy_rules_duration_seconds',
  'kubeproxy_sync_partial_proxy_rules_duration_seconds',
  'kubeproxy_sync_proxy_rules_iptables_total',
  'kubeproxy_sync_proxy_rules_iptables_last',
  'kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total',
];

const V4 = '{ip_family="IPv4"}';

describe('IPVS mode daemon metrics: kube-proxy names, every sync observed, /healthz (UML)', function () {
  this.timeout(180_000);
  const uml = useUmlDaemon(PORT);
  let startedAt = 0;

  // The single UML CPU is slow: 5 s per request.
  const http = (from: string, url: string): Promise<HttpAnswer | undefined> => httpGet(uml.sb, from, url, 5);
  const scrape = (): Promise<string> => scrapeMetrics(uml.sb);
  const noLocal = (text: string, policy: string): number | undefined =>
    seriesValue(
      text,
      `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="${policy}",ip_family="IPv4"}`,
    );
  /** No sync failed: none logged, none counted (by svcplane's result label or kube-proxy's counter). */
  const assertNoFailure = (text: string): void => {
    const d = uml.daemon;
    assert.deepEqual(
      d.logged(0, (l) => l.message === FAILED).map((l) => JSON.stringify(l).slice(0, 400)),
      [],
      'a sync was logged as failed',
    );
    assert.equal(
      metricSum(text, 'svcplane_syncs_total', 'result="error"'),
      undefined,
      'failed syncs counted',
    );
    assert.equal(metricSum(text, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total') ?? 0, 0);
  };

  before(async () => {
    startedAt = Date.now();
    const daemon = await uml.start(cluster(uml.sb, 'node-2'), [
      '--proxy-mode=ipvs',
      '--cluster-cidr=10.244.0.0/16',
      '--ipvs-sync-period=1h',
      '--ipvs-min-sync-period=100ms',
      '--healthz-bind-address=0.0.0.0:10256',
    ]);
    // Logged once the first sync is in the kernel, with the mode in effect.
    await daemon.waitFor('svcplane running', 0, (l) => l.message === 'svcplane running', 90_000);
  });

  it("the first sync is observed under kube-proxy's IPVS-mode names; none failed; /healthz, /livez 200", async () => {
    const d = uml.daemon;
    assert.equal(d.lines.find((l) => l.message === 'svcplane running')?.mode, 'ipvs', d.tail());
    const text = await scrape();
    assertNoFailure(text);

    const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    for (const [name, type] of IPVS_FAMILIES) assert.equal(types.get(name), type, `# TYPE ${name}`);
    for (const name of IPTABLES_ONLY) assert.ok(!types.has(name), `${name}: iptables mode only`);

    assert.ok((seriesValue(text, `kubeproxy_sync_proxy_rules_duration_seconds_count${V4}`) ?? 0) >= 1);
    const last = seriesValue(text, `kubeproxy_sync_proxy_rules_last_timestamp_seconds${V4}`) ?? 0;
    assert.ok(last * 1000 >= startedAt && last * 1000 <= Date.now(), `last_timestamp ${last}`);
    assert.ok(
      (seriesValue(text, 'svcplane_syncs_total{backend="ipvs/IPv4",kind="full",result="ok"}') ?? 0) >= 1,
    );
    for (const name of [
      'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
      'kubeproxy_sync_proxy_rules_service_changes_pending',
    ]) {
      assert.equal(seriesValue(text, name), 0, `${name}: everything is synced`);
    }
    // itp (iTP=Local) and lb (eTP=Local) have endpoints, none on this node.
    assert.equal(noLocal(text, 'internal'), 1);
    assert.equal(noLocal(text, 'external'), 1);

    const healthz = await http('outside', `http://${uml.sb.nodeIPv4}:10256/healthz`);
    assert.equal(healthz?.code, 200, healthz?.body);
    const body = JSON.parse(healthz.body) as Record<string, unknown>;
    assert.equal(typeof body.lastUpdated, 'string');
    assert.equal((await http('outside', `http://${uml.sb.nodeIPv4}:10256/livez`))?.code, 200);
    assert.equal((await http('node', 'http://127.0.0.1:10249/proxyMode'))?.body, 'ipvs');
    // The 'synced' listeners after the metrics ran: lb's health-check node port serves (no local endpoint).
    const hc = await eventually('the health-check node port', 10_000, () =>
      http('outside', `http://${uml.sb.nodeIPv4}:${HC_PORT}/`),
    );
    assert.equal(hc.code, 503, hc.body);
    assert.equal((JSON.parse(hc.body) as { localEndpoints: number }).localEndpoints, 0);
  });

  it('a change is synced and observed: count and timestamp advance, changes counted, no-local counts follow', async () => {
    const d = uml.daemon;
    const before = await scrape();
    const count = (t: string): number =>
      seriesValue(t, `kubeproxy_sync_proxy_rules_duration_seconds_count${V4}`) ?? 0;
    const last = (t: string): number =>
      seriesValue(t, `kubeproxy_sync_proxy_rules_last_timestamp_seconds${V4}`) ?? 0;
    const endpointChanges = (t: string): number =>
      seriesValue(t, 'kubeproxy_sync_proxy_rules_endpoint_changes_total') ?? 0;

    // itp's endpoint moves to this node: it serves from here, and it is no longer counted.
    const from = d.lines.length;
    await uml.write(cluster(uml.sb, NODE));
    await d.waitFor('the sync of the change', from, (l) => l.message === 'synced', 60_000);
    const after = await eventually('the sync observed', 10_000, async () => {
      const t = await scrape();
      return count(t) > count(before) ? t : undefined;
    });
    assertNoFailure(after);
    assert.ok(last(after) > last(before), `last_timestamp ${last(before)} → ${last(after)}`);
    assert.ok(endpointChanges(after) > endpointChanges(before), 'the endpoint change is counted');
    assert.equal(noLocal(after, 'internal'), 0);
    assert.equal(noLocal(after, 'external'), 1);
    const reply = expectReply(await uml.sb.request('client', { proto: 'tcp', ip: ITP, port: 80 }));
    assert.equal(reply.pod, 'a');
  });
});
