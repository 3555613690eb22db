import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  exponentialBuckets,
  linearBuckets,
} from 'prom-client';
import { RestoreError } from '../iptables/iptables.js';
import { NftError } from '../nftables/nft.js';
import type { StateSource } from '../kube/source.js';
import { changeSinceApplied, stateChange, type StateChange } from '../model/state-change.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import type { Backend, SyncReport } from '../modes/backend.js';
import { SyncError } from './controller.js';
import type { ValveVerdict } from './safety-valve.js';

/**
 * Prometheus metrics with kube-proxy's names, labels and types (dashboards and alerts written for
 * kube-proxy keep working): per IP family where kube-proxy has its `ip_family` label (each family's
 * proxier observes its own sync once), the mode-specific families only in their mode (as kube-proxy's
 * RegisterMetrics), the process and runtime metrics (prom-client's defaults: process_cpu_seconds_total,
 * process_resident_memory_bytes, process_open_fds …), plus svcplane_* ones. The class only records;
 * `attachMetrics` wires it to a controller.
 */

/** The family a backend programs (kube-proxy's per-family proxiers): `iptables/IPv4` → IPv4. */
export function backendFamily(name: string): IPFamily | undefined {
  if (name.endsWith('IPv4')) return 'IPv4';
  if (name.endsWith('IPv6')) return 'IPv6';
  return undefined;
}

export interface ProxyMetricsOptions {
  /**
   * Whether to register the iptables mode's sync families (kube-proxy registers them only in that
   * mode); the mode in effect says (DataplaneMode.metrics). Default true.
   */
  readonly iptablesSyncFamilies?: boolean;
  /** nftables mode: its failure counters, and the full/partial sync durations. Default false. */
  readonly nftablesSyncFamilies?: boolean;
  /** prom-client's process and Node.js runtime metrics (default true). */
  readonly processMetrics?: boolean;
}

/** How often the event-loop lag (nodejs_eventloop_lag_*) is sampled. */
const LAG_SAMPLE_MS = 1000;
/** kube-proxy's buckets for sync durations: 1 ms … ~16 s. */
const SYNC_BUCKETS = exponentialBuckets(0.001, 2, 15);
/** kube-proxy's network-programming buckets: 0.25 s … 5 min. */
const PROGRAMMING_BUCKETS = [
  ...linearBuckets(0.25, 0.25, 2),
  ...linearBuckets(1, 1, 59),
  ...linearBuckets(60, 5, 12),
  ...linearBuckets(120, 30, 7),
];

export class ProxyMetrics {
  readonly registry = new Registry();
  /** Registers the families of the iptables mode only there (kube-proxy's RegisterMetrics). */
  private readonly iptablesRegistries: Registry[];
  private readonly restoreRegistries: Registry[];

  constructor(opts: ProxyMetricsOptions = {}) {
    this.iptablesRegistries = opts.iptablesSyncFamilies === false ? [] : [this.registry];
    const nftRegistries = opts.nftablesSyncFamilies === true ? [this.registry] : [];
    // kube-proxy's nftables mode has the full/partial sync durations too.
    const fullPartialRegistries = [...new Set([...this.iptablesRegistries, ...nftRegistries])];
    // kube-proxy's IPVS mode restores iptables too and counts its failures.
    this.restoreRegistries = [this.registry];
    // The event-loop lag histogram samples once a second, not every 10 ms (prom-client's default):
    // its timer was 100 wake-ups a second of an otherwise idle daemon (issue 14).
    if (opts.processMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: LAG_SAMPLE_MS });
    }
    this.syncFullDuration = this.histogram(
      'kubeproxy_sync_full_proxy_rules_duration_seconds',
      'SyncProxyRules latency in seconds for full resyncs',
      fullPartialRegistries,
    );
    this.syncPartialDuration = this.histogram(
      'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      'SyncProxyRules latency in seconds for partial resyncs',
      fullPartialRegistries,
    );
    this.iptablesTotal = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_iptables_total',
      help: 'Total number of iptables rules owned by kube-proxy',
      labelNames: ['table', 'ip_family'],
      registers: this.iptablesRegistries,
    });
    this.iptablesLast = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_iptables_last',
      help: 'Number of iptables rules written by kube-proxy in last sync',
      labelNames: ['table', 'ip_family'],
      registers: this.iptablesRegistries,
    });
    this.restoreFailures = new Counter({
      name: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
      help: 'Cumulative proxy iptables restore failures',
      labelNames: ['ip_family'],
      registers: this.restoreRegistries,
    });
    this.nftablesSyncFailures = new Counter({
      name: 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total',
      help: 'Cumulative proxy nftables sync failures',
      labelNames: ['ip_family'],
      registers: nftRegistries,
    });
    this.nftablesCleanupFailures = new Counter({
      name: 'kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total',
      help: 'Cumulative proxy nftables cleanup failures',
      labelNames: ['ip_family'],
      registers: nftRegistries,
    });
    this.partialRestoreFailures = new Counter({
      name: 'kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total',
      help: 'Cumulative proxy iptables partial restore failures',
      labelNames: ['ip_family'],
      registers: this.iptablesRegistries,
    });
  }

  readonly syncDuration = new Histogram({
    name: 'kubeproxy_sync_proxy_rules_duration_seconds',
    help: 'SyncProxyRules latency in seconds',
    labelNames: ['ip_family'],
    buckets: SYNC_BUCKETS,
    registers: [this.registry],
  });
  readonly syncFullDuration: Histogram<'ip_family'>;
  readonly syncPartialDuration: Histogram<'ip_family'>;
  readonly networkProgramming = new Histogram({
    name: 'kubeproxy_network_programming_duration_seconds',
    help: 'In Cluster Network Programming Latency in seconds',
    labelNames: ['ip_family'],
    buckets: PROGRAMMING_BUCKETS,
    registers: [this.registry],
  });
  readonly lastSyncTimestamp = this.gauge(
    'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
    'The last time proxy rules were successfully synced',
    ['ip_family'],
  );
  readonly lastQueuedTimestamp = this.gauge(
    'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
    'The last time a sync of proxy rules was queued',
    ['ip_family'],
  );
  readonly endpointChangesPending = this.gauge(
    'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
    'Pending proxy rules Endpoint changes',
  );
  readonly endpointChangesTotal = this.counter(
    'kubeproxy_sync_proxy_rules_endpoint_changes_total',
    'Cumulative proxy rules Endpoint changes',
  );
  readonly serviceChangesPending = this.gauge(
    'kubeproxy_sync_proxy_rules_service_changes_pending',
    'Pending proxy rules Service changes',
  );
  readonly serviceChangesTotal = this.counter(
    'kubeproxy_sync_proxy_rules_service_changes_total',
    'Cumulative proxy rules Service changes',
  );
  readonly iptablesTotal: Gauge<'table' | 'ip_family'>;
  readonly iptablesLast: Gauge<'table' | 'ip_family'>;
  readonly restoreFailures: Counter<'ip_family'>;
  readonly partialRestoreFailures: Counter<'ip_family'>;
  readonly nftablesSyncFailures: Counter<'ip_family'>;
  readonly nftablesCleanupFailures: Counter<'ip_family'>;
  readonly noLocalEndpoints = this.gauge(
    'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
    'Number of services with a Local traffic policy and no endpoints',
    ['traffic_policy', 'ip_family'],
  );
  readonly healthzTotal = this.counter(
    'kubeproxy_proxy_healthz_total',
    'Cumulative proxy healthz HTTP status',
    ['code'],
  );
  readonly livezTotal = this.counter('kubeproxy_proxy_livez_total', 'Cumulative proxy livez HTTP status', [
    'code',
  ]);
  readonly conntrackDuration = new Histogram({
    name: 'kubeproxy_conntrack_reconciler_sync_duration_seconds',
    help: 'ReconcileConntrackFlowsLatency latency in seconds',
    buckets: SYNC_BUCKETS,
    registers: [this.registry],
  });
  readonly conntrackDeleted = this.counter(
    'kubeproxy_conntrack_reconciler_deleted_entries_total',
    'Cumulative conntrack flows deleted by conntrack reconciler',
  );
  readonly conntrackRuns = this.counter(
    'svcplane_conntrack_reconciler_runs_total',
    'Conntrack reconciliations started (bursts of syncs coalesce into at most two)',
  );
  readonly conntrackCommands = this.counter(
    'svcplane_conntrack_reconciler_commands_total',
    'conntrack processes the reconciler started (one listing and at most one batch delete per family and run)',
  );
  readonly conntrackFailures = this.counter(
    'svcplane_conntrack_reconciler_failures_total',
    'Conntrack reconciliations that failed (listing or deleting)',
  );
  readonly restoreBytes = this.gauge(
    'svcplane_sync_restore_bytes',
    'Bytes handed to the kernel writer by the last sync',
    ['backend'],
  );
  readonly restoreLines = this.gauge(
    'svcplane_sync_restore_lines',
    'Lines handed to the kernel writer by the last sync',
    ['backend'],
  );
  readonly syncsTotal = this.counter('svcplane_syncs_total', 'Syncs by backend, kind and result', [
    'backend',
    'kind',
    'result',
  ]);
  readonly syncRefused = this.counter(
    'svcplane_sync_refused_total',
    'Syncs refused by the safety valve: the new state would take most programmed Services out of service while as many objects became invalid',
  );
  readonly problems = this.gauge(
    'svcplane_input_problems',
    'Objects (or parts) skipped as invalid in the current state, by object kind',
    ['kind'],
  );
  /** Read at scrape time (a vanished manifest directory triggers no event). */
  sourceHealth: (() => boolean) | undefined;
  readonly sourceHealthy: Gauge = new Gauge({
    name: 'svcplane_source_healthy',
    help: '1 when the state source (API or manifests) is healthy, 0 otherwise',
    registers: [this.registry],
    collect: () => {
      if (this.sourceHealth) this.sourceHealthy.set(this.sourceHealth() ? 1 : 0);
    },
  });

  private histogram(
    name: string,
    help: string,
    registers: Registry[] = [this.registry],
  ): Histogram<'ip_family'> {
    return new Histogram({ name, help, labelNames: ['ip_family'], buckets: SYNC_BUCKETS, registers });
  }

  private gauge<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Gauge<L> {
    return new Gauge<L>({ name, help, labelNames, registers: [this.registry] });
  }

  private counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return new Counter<L>({ name, help, labelNames, registers: [this.registry] });
  }

  /** One successful sync of one backend: observed once, under its family. */
  observeReport(r: SyncReport, nowMs = Date.now()): void {
    const seconds = r.durationMs / 1000;
    const ip_family = backendFamily(r.backend) ?? '';
    this.syncDuration.observe({ ip_family }, seconds);
    (r.full ? this.syncFullDuration : this.syncPartialDuration).observe({ ip_family }, seconds);
    this.lastSyncTimestamp.set({ ip_family }, nowMs / 1000);
    this.restoreBytes.set({ backend: r.backend }, r.bytes);
    this.restoreLines.set({ backend: r.backend }, r.lines);
    this.syncsTotal.inc({ backend: r.backend, kind: r.full ? 'full' : 'partial', result: 'ok' });
    const cleanupFailures = r.details?.cleanupFailures;
    if (typeof cleanupFailures === 'number' && cleanupFailures > 0) {
      this.nftablesCleanupFailures.inc({ ip_family }, cleanupFailures);
    }
    const counts = r.ruleCounts;
    if (counts !== undefined) {
      this.iptablesTotal.set({ table: 'filter', ip_family }, counts.totalFilterRules);
      this.iptablesTotal.set({ table: 'nat', ip_family }, counts.totalNatRules);
      this.iptablesLast.set({ table: 'filter', ip_family }, counts.filterRules);
      this.iptablesLast.set({ table: 'nat', ip_family }, counts.natRules);
    }
    const nle = r.noLocalEndpoints;
    if (nle !== undefined) {
      this.noLocalEndpoints.set({ traffic_policy: 'internal', ip_family }, nle.internal);
      this.noLocalEndpoints.set({ traffic_policy: 'external', ip_family }, nle.external);
    }
  }

  /** A sync queued for these families (kube-proxy: each family's proxier queues its own). */
  observeQueued(families: readonly IPFamily[], nowMs = Date.now()): void {
    for (const ip_family of families) this.lastQueuedTimestamp.set({ ip_family }, nowMs / 1000);
  }

  /** A failed backend sync: restore failures are counted per family, as kube-proxy does. */
  observeFailure(backend: Backend | undefined, name: string, error: unknown): void {
    const full = backend?.lastAttemptFull ?? true;
    this.syncsTotal.inc({ backend: name, kind: full ? 'full' : 'partial', result: 'error' });
    if (error instanceof NftError) this.nftablesSyncFailures.inc({ ip_family: backendFamily(name) ?? '' });
    if (error instanceof RestoreError) {
      const ip_family = backendFamily(name) ?? '';
      this.restoreFailures.inc({ ip_family });
      if (!full) this.partialRestoreFailures.inc({ ip_family });
    }
  }

  observeProblems(state: ClusterState): void {
    this.problems.reset();
    const byKind = new Map<string, number>();
    for (const p of state.problems) {
      // The kind of an unknown object is the input's own text: one label value each would let a
      // manifest directory mint any number of series.
      const kind = PROBLEM_KINDS.has(p.object.kind) ? p.object.kind : 'other';
      byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
    }
    for (const [kind, n] of byKind) this.problems.set({ kind }, n);
  }
}

/** The `kind` label values of svcplane_input_problems; every other kind counts as `other`. */
const PROBLEM_KINDS: ReadonlySet<string> = new Set([
  'Service',
  'EndpointSlice',
  'Endpoints',
  'Node',
  // Read for NetworkPolicy enforcement (src/model/policy-types.ts).
  'Namespace',
  'Pod',
  'NetworkPolicy',
  'List',
  'File',
  'Unknown',
]);

/** The part of a Controller the metrics need (an interface, so tests can drive it). */
export interface MetricsSubject {
  readonly source: StateSource;
  readonly backends: readonly Backend[];
  on(event: 'synced', fn: (reports: SyncReport[], state: ClusterState, change: StateChange) => void): unknown;
  on(event: 'syncError', fn: (error: Error) => void): unknown;
  on(event: 'syncRefused', fn: (verdict: ValveVerdict, state: ClusterState) => void): unknown;
  off(
    event: 'synced',
    fn: (reports: SyncReport[], state: ClusterState, change: StateChange) => void,
  ): unknown;
  off(event: 'syncError', fn: (error: Error) => void): unknown;
  off(event: 'syncRefused', fn: (verdict: ValveVerdict, state: ClusterState) => void): unknown;
}

/** Trigger times kept per Service while its changes wait for the kernel (syncs failing). */
export const MAX_PENDING_TRIGGER_TIMES = 16;

/**
 * Feeds `metrics` from a controller and its source: change counters (kube-proxy's change trackers
 * count per object; here per Service whose spec or endpoints changed: the state change of each
 * source event, and pending = the change from the last synced state to the current one, both from
 * src/model/state-change.ts), network-programming latency (the Services whose endpoints the sync's
 * own change carried), sync figures and failures.
 *
 * Network programming latency is kube-proxy's: one observation per EndpointSlice trigger time
 * (`endpoints.kubernetes.io/last-change-trigger-time`) of each Service whose endpoints a successful
 * sync carried, from that time to the end of the sync. Without the annotation nothing is recorded
 * (there is no trustworthy start), nor for trigger times older than svcplane (the initial list).
 * Between successful syncs only those trigger times are kept, per Service, deduplicated and at most
 * MAX_PENDING_TRIGGER_TIMES (the oldest), for Services still in the state: bounded however long
 * syncs fail.
 * Must be attached before the controller starts. Returns a detach function.
 */
export function attachMetrics(metrics: ProxyMetrics, subject: MetricsSubject): () => void {
  const startedAt = Date.now();
  let lastSeen: ClusterState | undefined = subject.source.current();
  let lastSynced: ClusterState | undefined;
  /** Sequence number of each state seen, so a sync clears only what came with or before its state. */
  let seq = 0;
  const seqOf = new WeakMap<ClusterState, number>();
  /** Per Service: trigger time → sequence number of the state that brought it; not yet synced. */
  const pendingTriggers = new Map<string, Map<number, number>>();

  const addTriggers = (state: ClusterState, keys: Iterable<string>, at: number): void => {
    for (const key of keys) {
      const t = state.endpointsTriggerTimes?.get(key);
      if (t === undefined || t < startedAt) continue;
      let times = pendingTriggers.get(key);
      if (!times) pendingTriggers.set(key, (times = new Map<number, number>()));
      if (!times.has(t) && times.size < MAX_PENDING_TRIGGER_TIMES) times.set(t, at);
    }
    // A Service gone from the state has nothing left to program.
    for (const key of pendingTriggers.keys()) if (!state.services.has(key)) pendingTriggers.delete(key);
  };
  const updatePending = (): void => {
    const current = subject.source.current();
    if (!current) return;
    // Nothing is pending when the current state is the one just synced.
    const d = current === lastSynced ? undefined : stateChange(lastSynced, current);
    metrics.endpointChangesPending.set(d?.endpoints.size ?? 0);
    metrics.serviceChangesPending.set(d?.services.size ?? 0);
  };
  const families = (): IPFamily[] => [
    ...new Set(subject.backends.map((b) => backendFamily(b.name)).filter((f) => f !== undefined)),
  ];
  const onChange = (state: ClusterState): void => {
    const now = Date.now();
    const d = stateChange(lastSeen, state);
    metrics.endpointChangesTotal.inc(d.endpoints.size);
    metrics.serviceChangesTotal.inc(d.services.size);
    metrics.observeQueued(families(), now);
    lastSeen = state;
    seqOf.set(state, ++seq);
    addTriggers(state, d.endpoints, seq);
    updatePending();
  };
  const onSynced = (reports: SyncReport[], state: ClusterState, change: StateChange): void => {
    const now = Date.now();
    for (const r of reports) metrics.observeReport(r, now);
    // The first sync carries the initial state, which came without a change event: every Service
    // in it is new (the controller's change starts from nothing then).
    if (lastSynced === undefined)
      addTriggers(state, changeSinceApplied(change, undefined, state).endpoints, 0);
    const upTo = seqOf.get(state) ?? 0;
    // Each family's proxier programmed the change: one observation per family, as kube-proxy's.
    const synced = [...new Set(reports.map((r) => backendFamily(r.backend) ?? ''))];
    for (const [key, times] of pendingTriggers) {
      for (const [t, at] of times) {
        if (at > upTo) continue; // came with a later state: not in the kernel yet
        if (t <= now) {
          for (const ip_family of synced) metrics.networkProgramming.observe({ ip_family }, (now - t) / 1000);
        }
        times.delete(t);
      }
      if (times.size === 0) pendingTriggers.delete(key);
    }
    lastSynced = state;
    lastSeen ??= state;
    updatePending();
    metrics.observeProblems(state);
  };
  const onError = (error: Error): void => {
    const failures = error instanceof SyncError ? error.failures : [{ backend: '', error }];
    for (const f of failures) {
      metrics.observeFailure(
        subject.backends.find((b) => b.name === f.backend),
        f.backend,
        f.error,
      );
    }
  };
  const onRefused = (_verdict: ValveVerdict, state: ClusterState): void => {
    metrics.syncRefused.inc();
    metrics.observeProblems(state);
  };
  metrics.sourceHealth = () => subject.source.health().healthy;
  const unsubscribe = subject.source.onChange(onChange);
  subject.on('synced', onSynced);
  subject.on('syncError', onError);
  subject.on('syncRefused', onRefused);
  return () => {
    unsubscribe();
    subject.off('synced', onSynced);
    subject.off('syncError', onError);
    subject.off('syncRefused', onRefused);
  };
}
