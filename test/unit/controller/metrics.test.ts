import { NftError } from '../../../src/nftables/nft.js';
import { CommandError } from '../../../src/util/exec.js';
import assert from 'node:assert/strict';
import type { Backend, SyncReport } from '../../../src/modes/backend.js';
import { Controller } from '../../../src/controller/controller.js';
import { attachMetrics, ProxyMetrics } from '../../../src/controller/metrics.js';
import { RestoreError } from '../../../src/iptables/iptables.js';
import type { IpvsSyncReport } from '../../../src/ipvs/proxier.js';
import type { ClusterState } from '../../../src/model/types.js';
import { ep, service, state } from '../iptables/fixtures.js';
import { HandSource } from '../../support/hand-source.js';
import { seriesValue } from '../../support/metrics-text.js';

/**
 * Dual-stack metrics as kube-proxy exports them: each family's proxier observes its own syncs under
 * `ip_family`. Before issue 13 both families wrote one unlabelled series: the IPv6 rule count
 * overwrote IPv4's and every sync was counted twice in sync_proxy_rules_duration_seconds.
 */

/** One family's iptables backend with fixed rule counts. */
class FamilyBackend implements Backend {
  readonly name: string;
  fail: Error | undefined;
  lastAttemptFull = true;
  constructor(
    family: 'IPv4' | 'IPv6',
    private readonly natRules: number,
  ) {
    this.name = `iptables/${family}`;
  }
  setup(): Promise<void> {
    return Promise.resolve();
  }
  detectDrift(): Promise<boolean> {
    return Promise.resolve(false);
  }
  forceFullSync(): void {}
  sync(): Promise<SyncReport> {
    if (this.fail) return Promise.reject(this.fail);
    const full = this.lastAttemptFull;
    this.lastAttemptFull = false;
    return Promise.resolve({
      backend: this.name,
      full,
      durationMs: 5,
      bytes: 100,
      lines: 10,
      writtenServices: 1,
      staleChains: 0,
      ruleCounts: {
        filterRules: 1,
        totalFilterRules: 2,
        natRules: this.natRules,
        natChains: 3,
        totalNatRules: this.natRules + 1,
      },
      noLocalEndpoints: { internal: 0, external: this.natRules === 40 ? 1 : 0 },
    } as SyncReport);
  }
}

const web = (ips: string[]): ClusterState =>
  state(
    service('ns/web', {
      clusterIP: '10.96.0.10',
      ports: [{ protocol: 'TCP', port: 80, endpoints: ips.map((ip) => ep(ip, 80)) }],
    }),
  );

async function scrape(metrics: ProxyMetrics): Promise<string> {
  return metrics.registry.metrics();
}

describe('metrics: one series per IP family (dual-stack scrape)', () => {
  it('each family counted once per sync, with its own rule counts', async () => {
    const src = new HandSource(web(['10.0.0.1']));
    const v4 = new FamilyBackend('IPv4', 40);
    const v6 = new FamilyBackend('IPv6', 6);
    const c = new Controller(src, [v4, v6], { minSyncPeriodMs: 1, syncPeriodMs: 60_000 });
    const metrics = new ProxyMetrics({ processMetrics: false });
    attachMetrics(metrics, c);
    await c.start();
    const synced = new Promise((r) => c.once('synced', r));
    src.set(web(['10.0.0.2']));
    await synced;
    const text = await scrape(metrics);
    await c.stop();
    for (const f of ['IPv4', 'IPv6']) {
      assert.equal(
        seriesValue(text, `kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="${f}"}`),
        2,
        f,
      );
      assert.equal(
        seriesValue(text, `kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="${f}"}`),
        1,
      );
      assert.equal(
        seriesValue(text, `kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="${f}"}`),
        1,
      );
      assert.ok(
        seriesValue(text, `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="${f}"}`)! > 0,
      );
      assert.ok(
        seriesValue(text, `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="${f}"}`)! > 0,
      );
    }
    assert.equal(
      seriesValue(text, 'kubeproxy_sync_proxy_rules_iptables_total{table="nat",ip_family="IPv4"}'),
      41,
    );
    assert.equal(
      seriesValue(text, 'kubeproxy_sync_proxy_rules_iptables_total{table="nat",ip_family="IPv6"}'),
      7,
    );
    assert.equal(
      seriesValue(text, 'kubeproxy_sync_proxy_rules_iptables_last{table="nat",ip_family="IPv4"}'),
      40,
    );
    assert.equal(
      seriesValue(
        text,
        'kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="external",ip_family="IPv4"}',
      ),
      1,
    );
    assert.equal(
      seriesValue(
        text,
        'kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="external",ip_family="IPv6"}',
      ),
      0,
    );
    // The change trackers are shared by both families in kube-proxy: no label there.
    assert.equal(seriesValue(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), 1);
    assert.doesNotMatch(text, /^kubeproxy_sync_proxy_rules_iptables_total\{table="nat"\}/m);
  });

  it('restore failures counted for the family that failed', async () => {
    const src = new HandSource(web(['10.0.0.1']));
    const v4 = new FamilyBackend('IPv4', 4);
    const v6 = new FamilyBackend('IPv6', 4);
    const c = new Controller(src, [v4, v6], { minSyncPeriodMs: 1, syncPeriodMs: 60_000 });
    const metrics = new ProxyMetrics({ processMetrics: false });
    attachMetrics(metrics, c);
    await c.start();
    v6.fail = new RestoreError(['ip6tables-restore'], 1, 'line 2 failed', 'exit', 2, 'x', 2);
    const failed = new Promise((r) => c.once('syncError', r));
    src.set(web(['10.0.0.2']));
    await failed;
    const text = await scrape(metrics);
    await c.stop();
    assert.equal(
      seriesValue(text, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv6"}'),
      1,
    );
    assert.equal(
      seriesValue(text, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}'),
      undefined,
    );
    assert.equal(
      seriesValue(
        text,
        'kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family="IPv6"}',
      ),
      1,
    );
  });

  it("mode-specific families as kube-proxy's RegisterMetrics: IPVS mode has no iptables rule counts", async () => {
    const ipvs = await scrape(new ProxyMetrics({ iptablesSyncFamilies: false, processMetrics: false }));
    const iptables = await scrape(new ProxyMetrics({ iptablesSyncFamilies: true, processMetrics: false }));
    const families = (t: string): Set<string> =>
      new Set([...t.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]!));
    for (const name of [
      'kubeproxy_sync_proxy_rules_iptables_total',
      'kubeproxy_sync_proxy_rules_iptables_last',
      'kubeproxy_sync_full_proxy_rules_duration_seconds',
      'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      'kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total',
    ]) {
      assert.ok(families(iptables).has(name), name);
      assert.ok(!families(ipvs).has(name), name);
    }
    for (const name of [
      'kubeproxy_sync_proxy_rules_duration_seconds',
      'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
      'kubeproxy_network_programming_duration_seconds',
    ]) {
      assert.ok(families(ipvs).has(name), name);
    }
  });

  it('an IPVS mode report is observed (its ipset entry counts are not the no-local-endpoints gauge)', async () => {
    // Before: observeReport read IPVS's numeric noLocalEndpoints as kube-proxy's {internal, external}
    // and threw "Value is not a valid number", inside the controller's 'synced' emit.
    const metrics = new ProxyMetrics({ iptablesSyncFamilies: false, processMetrics: false });
    const report: IpvsSyncReport = {
      backend: 'ipvs/IPv4',
      full: true,
      durationMs: 5,
      bytes: 10,
      lines: 2,
      writtenServices: 1,
      staleChains: 0,
      draining: 0,
      noEndpointsEntries: 1,
      noLocalEndpointsEntries: 2,
      noLocalEndpoints: { internal: 0, external: 1 },
    };
    metrics.observeReport(report);
    const text = await metrics.registry.metrics();
    assert.equal(seriesValue(text, 'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}'), 1);
    // kube-proxy's IPVS mode sets the per-policy Service counts too (not the ipset entry counts).
    const noLocal = (policy: string): number | undefined =>
      seriesValue(
        text,
        `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="${policy}",ip_family="IPv4"}`,
      );
    assert.equal(noLocal('internal'), 0);
    assert.equal(noLocal('external'), 1);
  });

  it('process and runtime metrics by default', async () => {
    const text = await scrape(new ProxyMetrics());
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'process_open_fds',
      'process_start_time_seconds',
      'nodejs_heap_size_used_bytes',
    ]) {
      assert.match(text, new RegExp(`^${name} \\d`, 'm'), name);
    }
  });
});

describe('metrics: nftables mode (kube-proxy names)', () => {
  it('sync and cleanup failures, full/partial durations and no-local-endpoint counts; no iptables families', async () => {
    const metrics = new ProxyMetrics({
      processMetrics: false,
      iptablesSyncFamilies: false,
      nftablesSyncFamilies: true,
    });
    const report = {
      backend: 'nftables/IPv6',
      full: false,
      durationMs: 12,
      bytes: 100,
      lines: 3,
      writtenServices: 1,
      staleChains: 0,
      details: { cleanupFailures: 2 },
      noLocalEndpoints: { internal: 1, external: 3 },
    };
    metrics.observeReport(report);
    metrics.observeFailure(
      undefined,
      'nftables/IPv6',
      new NftError(new CommandError(['nft', '-f', '-'], 1, 'Error: busy', 'exit'), 'sync'),
    );
    const text = await metrics.registry.metrics();
    assert.equal(
      seriesValue(text, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv6"}'),
      1,
    );
    assert.equal(
      seriesValue(text, 'kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total{ip_family="IPv6"}'),
      2,
    );
    assert.equal(
      seriesValue(text, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv6"}'),
      1,
    );
    assert.equal(
      seriesValue(
        text,
        'kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="external",ip_family="IPv6"}',
      ),
      3,
    );
    assert.doesNotMatch(text, /kubeproxy_sync_proxy_rules_iptables_total/);
    assert.doesNotMatch(text, /kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total/);
  });
});
