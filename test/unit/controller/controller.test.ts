import { strict as assert } from 'node:assert';
import { Controller, SyncError } from '../../../src/controller/controller.js';
import { attachMetrics, ProxyMetrics, type MetricsSubject } from '../../../src/controller/metrics.js';
import { ConntrackReconciler, type ReconcileResult } from '../../../src/conntrack/reconciler.js';
import type { StateChange } from '../../../src/model/state-change.js';
import type { SourceHealth, StateSource } from '../../../src/kube/source.js';
import type { Backend, SyncReport } from '../../../src/modes/backend.js';
import { buildClusterState } from '../../../src/model/build.js';
import type { ClusterState } from '../../../src/model/types.js';
import { log } from '../../../src/util/log.js';

/**
 * The controller on its own (src/controller/controller.ts): a source that the test drives and
 * backends that record what they are asked, no kernel. It owns timing (first sync, change-driven
 * syncs, the periodic drift check), runs every backend each sync, and keeps health.
 */

const service = (name: string, ip: string): object => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { clusterIP: ip, ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
});

function stateOf(...objs: object[]): ClusterState {
  return buildClusterState(objs.map((obj, i) => ({ obj, source: `t#${i}` })));
}

/** A source whose states the test hands in. */
class TestSource implements StateSource {
  starts = 0;
  stops = 0;
  private state: ClusterState | undefined;
  private readonly listeners = new Set<(s: ClusterState) => void>();
  /** Ends a start() that waits (as a real source's stop() ends its wait for the first lists). */
  private abortStart: ((err: Error) => void) | undefined;
  constructor(
    private readonly first: ClusterState,
    private readonly completes = true,
  ) {}
  async start(): Promise<void> {
    this.starts++;
    if (!this.completes) {
      await new Promise<void>((_, reject) => (this.abortStart = reject));
    }
    this.state ??= this.first;
  }
  current(): ClusterState | undefined {
    return this.state;
  }
  onChange(listener: (state: ClusterState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  health(): SourceHealth {
    return { healthy: true };
  }
  stop(): Promise<void> {
    this.stops++;
    this.abortStart?.(new Error('stopped'));
    return Promise.resolve();
  }
  emit(state: ClusterState): void {
    this.state = state;
    for (const l of [...this.listeners]) l(state);
  }
}

/** A backend that records its calls; `fail` makes sync throw, `drift` is what detectDrift answers. */
class RecordingBackend implements Backend {
  readonly calls: string[] = [];
  readonly synced: ClusterState[] = [];
  /** The change each sync call was handed. */
  readonly changes: (StateChange | undefined)[] = [];
  fail: Error | undefined;
  drift: boolean | Error = false;
  constructor(readonly name: string) {}
  setup(): Promise<void> {
    this.calls.push('setup');
    return Promise.resolve();
  }
  sync(state: ClusterState, change?: StateChange): Promise<SyncReport> {
    this.calls.push('sync');
    this.changes.push(change);
    if (this.fail) return Promise.reject(this.fail);
    this.synced.push(state);
    const report: SyncReport = {
      backend: this.name,
      full: this.synced.length === 1,
      durationMs: 1,
      bytes: 0,
      lines: 0,
      writtenServices: state.services.size,
      staleChains: 0,
    };
    return Promise.resolve(report);
  }
  detectDrift(): Promise<boolean> {
    this.calls.push('detectDrift');
    return this.drift instanceof Error ? Promise.reject(this.drift) : Promise.resolve(this.drift);
  }
  forceFullSync(): void {
    this.calls.push('forceFullSync');
  }
}

/** A UDP Service with an EndpointSlice of `ips` (both built as the API sends them). */
function dnsObjects(ips: string[]): object[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'dns', namespace: 'default' },
      spec: { clusterIP: '10.96.0.53', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'dns-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'dns' } },
      addressType: 'IPv4',
      ports: [{ name: 'dns', port: 5353, protocol: 'UDP' }],
      endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
    },
  ];
}

/** The conntrack cleaner with the `conntrack` tool left out: it records the change of each sync. */
class RecordingReconciler extends ConntrackReconciler {
  readonly changes: (StateChange | undefined)[] = [];
  readonly runs: ClusterState[] = [];
  constructor() {
    super({ families: ['IPv4'] });
  }
  override afterSync(state: ClusterState, change?: StateChange): Promise<ReconcileResult | undefined> {
    this.changes.push(change);
    return super.afterSync(state, change);
  }
  override reconcile(state: ClusterState): Promise<ReconcileResult> {
    this.runs.push(state);
    return Promise.resolve({ listed: 0, filters: 0, deleted: 0, durationMs: 0 });
  }
}

function nextSync(c: Controller): Promise<void> {
  return new Promise((resolve) => c.once('synced', () => resolve()));
}

describe('Controller (its own tests: fake source and backends)', () => {
  let controller: Controller | undefined;
  before(() => {
    log.silent = true;
  });
  after(() => {
    log.silent = false;
  });
  afterEach(async () => {
    await controller?.stop();
    controller = undefined;
  });

  it('start(): sets every backend up once, syncs the first state to each, resolves after it', async () => {
    const first = stateOf(service('a', '10.96.0.10'));
    const source = new TestSource(first);
    const [b1, b2] = [new RecordingBackend('x/IPv4'), new RecordingBackend('x/IPv6')];
    controller = new Controller(source, [b1, b2], { minSyncPeriodMs: 0, syncPeriodMs: 60_000 });
    const synced = nextSync(controller);
    await controller.start();
    await synced;
    for (const b of [b1, b2]) {
      assert.deepEqual(b.calls, ['setup', 'sync']);
      assert.equal(b.synced[0], first);
    }
    assert.ok(controller.health().lastSyncedAt > 0);
    assert.equal(controller.health().queuedSince, 0, 'nothing queued after the first sync');
  });

  it('a change of the source is synced to every backend; setup is not repeated', async () => {
    const source = new TestSource(stateOf());
    const b = new RecordingBackend('x/IPv4');
    controller = new Controller(source, [b], { minSyncPeriodMs: 0, syncPeriodMs: 60_000 });
    await controller.start();
    const next = stateOf(service('a', '10.96.0.10'), service('b', '10.96.0.11'));
    const synced = nextSync(controller);
    source.emit(next);
    await synced;
    assert.deepEqual(b.calls, ['setup', 'sync', 'sync']);
    assert.equal(b.synced.at(-1), next);
  });

  it('a failing backend: the others still sync, syncError names it, lastSyncedAt stays', async () => {
    const source = new TestSource(stateOf());
    const [ok, bad] = [new RecordingBackend('ok/IPv4'), new RecordingBackend('bad/IPv4')];
    controller = new Controller(source, [bad, ok], { minSyncPeriodMs: 0, syncPeriodMs: 60_000 });
    await controller.start();
    const lastSynced = controller.health().lastSyncedAt;
    bad.fail = new Error('kernel said no');
    const failed = new Promise<Error>((resolve) => controller!.once('syncError', resolve));
    source.emit(stateOf(service('a', '10.96.0.10')));
    const err = await failed;
    assert.ok(err instanceof SyncError);
    assert.deepEqual(
      err.failures.map((f) => f.backend),
      ['bad/IPv4'],
    );
    assert.match(err.message, /bad\/IPv4: kernel said no/);
    assert.equal(ok.synced.length, 2, 'the healthy backend synced the new state');
    assert.equal(controller.health().lastSyncedAt, lastSynced);
    assert.ok(controller.health().queuedSince > 0, 'the change stays queued');
  });

  it('every syncPeriod each backend is asked for drift before the sync; a failed check forces a full sync', async () => {
    const source = new TestSource(stateOf());
    const [quiet, broken] = [new RecordingBackend('q/IPv4'), new RecordingBackend('b/IPv4')];
    broken.drift = new Error('cannot list');
    controller = new Controller(source, [quiet, broken], { minSyncPeriodMs: 0, syncPeriodMs: 150 });
    await controller.start();
    await nextSync(controller);
    assert.deepEqual(quiet.calls.slice(0, 4), ['setup', 'sync', 'detectDrift', 'sync']);
    assert.deepEqual(broken.calls.slice(0, 5), ['setup', 'sync', 'detectDrift', 'forceFullSync', 'sync']);
  });

  it('one change per sync: every backend, the metrics and the conntrack cleaner get the same one', async () => {
    const first = stateOf(service('a', '10.96.0.10'), ...dnsObjects(['10.244.0.2', '10.244.0.3']));
    const source = new TestSource(first);
    const [b4, b6] = [new RecordingBackend('x/IPv4'), new RecordingBackend('x/IPv6')];
    controller = new Controller(source, [b4, b6], { minSyncPeriodMs: 0, syncPeriodMs: 60_000 });
    // The metrics' 'synced' listener, as attachMetrics registers it, records what it is called with.
    const toMetrics: StateChange[] = [];
    const on = controller.on.bind(controller) as (event: string, fn: (...args: unknown[]) => void) => unknown;
    const subject: MetricsSubject = {
      source,
      backends: controller.backends,
      on: (event: string, fn: (...args: never[]) => void) =>
        on(event, (...args) => {
          if (event === 'synced') toMetrics.push(args[2] as StateChange);
          (fn as (...a: unknown[]) => void)(...args);
        }),
      off: () => undefined,
    };
    const metrics = new ProxyMetrics({ processMetrics: false });
    attachMetrics(metrics, subject);
    const conntrack = new RecordingReconciler();
    conntrack.attach(controller);

    await controller.start();
    // A UDP endpoint goes away.
    const next = stateOf(service('a', '10.96.0.10'), ...dnsObjects(['10.244.0.3']));
    const synced = nextSync(controller);
    source.emit(next);
    await synced;
    await conntrack.idle();

    assert.equal(toMetrics.length, 2);
    for (const [i, change] of toMetrics.entries()) {
      assert.equal(b4.changes[i], change, `sync ${i}: IPv4 backend`);
      assert.equal(b6.changes[i], change, `sync ${i}: IPv6 backend`);
      assert.equal(conntrack.changes[i], change, `sync ${i}: conntrack cleaner`);
    }
    const [initial, moved] = toMetrics;
    assert.equal(initial!.previous, undefined);
    assert.equal(initial!.next, first);
    assert.equal(moved!.previous, first);
    assert.equal(moved!.next, next);
    assert.deepEqual([...moved!.changed], ['default/dns']);
    assert.deepEqual([...moved!.udpEndpoints], ['default/dns']);
    // The cleaner ran for both: the first sync after a start, then the UDP endpoint gone.
    assert.deepEqual(conntrack.runs, [first, next]);
  });

  it('after a failed sync the next change starts at the state every backend applied last', async () => {
    const s0 = stateOf();
    const source = new TestSource(s0);
    const [ok, bad] = [new RecordingBackend('ok/IPv4'), new RecordingBackend('bad/IPv6')];
    controller = new Controller(source, [ok, bad], { minSyncPeriodMs: 0, syncPeriodMs: 60_000 });
    await controller.start();
    bad.fail = new Error('kernel said no');
    const failed = new Promise<Error>((resolve) => controller!.once('syncError', resolve));
    const s1 = stateOf(service('a', '10.96.0.10'));
    source.emit(s1);
    await failed;
    bad.fail = undefined;
    const synced = nextSync(controller);
    const s2 = stateOf(service('a', '10.96.0.10'), service('b', '10.96.0.11'));
    source.emit(s2);
    await synced;
    const last = ok.changes.at(-1)!;
    assert.equal(bad.changes.at(-1), last);
    assert.equal(last.previous, s0, 'not s1: the failed backend never applied it');
    assert.deepEqual([...last.changed].sort(), ['default/a', 'default/b']);
  });

  it('syncOnce(): starts the source, syncs once, stops it, returns the reports', async () => {
    const source = new TestSource(stateOf(service('a', '10.96.0.10')));
    const b = new RecordingBackend('x/IPv4');
    const once = new Controller(source, [b], { minSyncPeriodMs: 0, syncPeriodMs: 60_000 });
    const reports = await once.syncOnce();
    assert.deepEqual(
      reports.map((r) => [r.backend, r.writtenServices]),
      [['x/IPv4', 1]],
    );
    assert.deepEqual([source.starts, source.stops], [1, 1]);
    assert.deepEqual(b.calls, ['setup', 'sync']);
  });

  it('stop() while the source never completes: start() returns, nothing was synced', async () => {
    const source = new TestSource(stateOf(), false);
    const b = new RecordingBackend('x/IPv4');
    controller = new Controller(source, [b], { minSyncPeriodMs: 0, syncPeriodMs: 60_000 });
    const started = controller.start();
    await controller.stop();
    await Promise.race([
      started,
      new Promise((_, reject) => setTimeout(() => reject(new Error('start() did not return')), 2000)),
    ]);
    assert.deepEqual(b.calls, []);
  });
});
