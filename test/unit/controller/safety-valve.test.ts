import { strict as assert } from 'node:assert';
import type { Backend, SyncReport } from '../../../src/modes/backend.js';
import { Controller, SafetyValveError } from '../../../src/controller/controller.js';
import { healthzStatus } from '../../../src/controller/health.js';
import { attachMetrics, ProxyMetrics } from '../../../src/controller/metrics.js';
import { massRemovalVerdict, programmedKeys } from '../../../src/controller/safety-valve.js';
import { programmedServiceKeys } from '../../../src/iptables/programmed.js';
import { parseIptablesSave } from '../../../src/iptables/save-parse.js';
import { buildClusterState } from '../../../src/model/build.js';
import type { ClusterState } from '../../../src/model/types.js';
import { HandSource } from '../../support/hand-source.js';

/**
 * The safety valve: refuse a sync that takes most programmed Services out of service while as many
 * objects became invalid. States come from raw objects through the real model, the way a reflector
 * that lost list items' kind (issue 11) would hand them over.
 */

interface Raw {
  [k: string]: unknown;
}

const svc = (name: string, ip: string): Raw => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: {
    type: 'ClusterIP',
    clusterIP: ip,
    clusterIPs: [ip],
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
  },
});
const slice = (name: string, ips: string[]): Raw => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${name}-x`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
});
/** What a reflector that forgot list items' TypeMeta hands over. */
const kindless = (o: Raw): Raw => {
  const { kind: _k, apiVersion: _a, ...rest } = o;
  void _k;
  void _a;
  return rest;
};
const build = (objs: Raw[]): ClusterState => buildClusterState(objs.map((obj) => ({ obj })));

const NAMES = ['a', 'b', 'c', 'd'];
const good = (n = 4): Raw[] =>
  NAMES.slice(0, n).flatMap((name, i) => [svc(name, `10.96.0.${10 + i}`), slice(name, [`10.0.0.${10 + i}`])]);

describe('safety valve: the verdict', () => {
  it('refuses when most Services would go while as many objects became invalid (list items without kind)', () => {
    const previous = build(good());
    const next = build(good().map(kindless));
    const v = massRemovalVerdict({ programmed: programmedKeys(previous), previous, next });
    assert.equal(v.refuse, true);
    assert.equal(v.removed, 4);
    assert.equal(v.newProblems, 8);
    assert.deepEqual(v.examples, ['default/a', 'default/b', 'default/c', 'default/d']);
  });

  it('counts Services left without endpoints because their slices became invalid', () => {
    const previous = build(good());
    const next = build(good().map((o) => (o.kind === 'EndpointSlice' ? kindless(o) : o)));
    const v = massRemovalVerdict({ programmed: programmedKeys(previous), previous, next });
    assert.deepEqual([v.refuse, v.removed, v.emptied, v.newProblems], [true, 0, 4, 4]);
  });

  it('applies deletions, scale-downs, single broken objects and minorities', () => {
    const previous = build(good());
    const cases: [string, ClusterState][] = [
      ['3 of 4 deleted', build(good(1))],
      ['all scaled to zero', build(NAMES.map((n, i) => [svc(n, `10.96.0.${10 + i}`), slice(n, [])]).flat())],
      ['2 of 4 broken (not more than half)', build([...good(2), ...good(4).slice(4).map(kindless)])],
    ];
    for (const [what, next] of cases) {
      assert.equal(
        massRemovalVerdict({ programmed: programmedKeys(previous), previous, next }).refuse,
        false,
        what,
      );
    }
    // A one-Service cluster whose Service breaks: one broken object is skipped, as always.
    const one = build(good(1));
    const v = massRemovalVerdict({
      programmed: programmedKeys(one),
      previous: one,
      next: build(good(1).map(kindless)),
    });
    assert.equal(v.refuse, false);
    // Two Services, both broken at once: refused.
    const two = build(good(2));
    assert.equal(
      massRemovalVerdict({
        programmed: programmedKeys(two),
        previous: two,
        next: build(good(2).map(kindless)),
      }).refuse,
      true,
    );
  });

  it('problems that were there before do not count again', () => {
    const junk: Raw[] = [{ metadata: { name: 'x' } }, { metadata: { name: 'y' } }];
    const previous = build([...good(), ...junk]);
    // All four Services deleted; the two broken objects were broken before: applied.
    const v = massRemovalVerdict({ programmed: programmedKeys(previous), previous, next: build(junk) });
    assert.deepEqual([v.refuse, v.removed, v.newProblems], [false, 4, 0]);
  });

  it("the first sync of a process: the kernel's Services, all problems new", () => {
    const next = build(good().map(kindless));
    const v = massRemovalVerdict({
      programmed: new Set(['default/a', 'default/b', 'default/c']),
      previous: undefined,
      next,
    });
    assert.deepEqual([v.refuse, v.removed, v.programmed], [true, 3, 3]);
    assert.equal(
      massRemovalVerdict({ programmed: new Set(), previous: undefined, next }).refuse,
      false,
      'empty kernel',
    );
  });

  it("reads the programmed Services from kube-proxy's and svcplane's entry rules", () => {
    const saved = parseIptablesSave(
      [
        '*filter',
        ':KUBE-SERVICES - [0:0]',
        ':KUBE-EXTERNAL-SERVICES - [0:0]',
        '-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "ns2/empty:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable',
        'COMMIT',
        '*nat',
        ':KUBE-SERVICES - [0:0]',
        ':KUBE-NODEPORTS - [0:0]',
        ':KUBE-SVC-AAAA - [0:0]',
        '-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-AAAA',
        '-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-AAAA',
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        '-A KUBE-NODEPORTS -p tcp -m comment --comment default/np -m tcp --dport 30080 -j KUBE-SVC-AAAA',
        'COMMIT',
        '',
      ].join('\n'),
    );
    assert.deepEqual([...programmedServiceKeys(saved)].sort(), [
      'default/kubernetes',
      'default/np',
      'kube-system/kube-dns',
      'ns2/empty',
    ]);
  });
});

class RecordingBackend implements Backend {
  readonly name = 'fake/IPv4';
  applied: ClusterState[] = [];
  constructor(private readonly kernel: ReadonlySet<string> = new Set()) {}
  setup(): Promise<void> {
    return Promise.resolve();
  }
  detectDrift(): Promise<boolean> {
    return Promise.resolve(false);
  }
  forceFullSync(): void {}
  programmedServices(): Promise<ReadonlySet<string>> {
    return Promise.resolve(this.kernel);
  }
  sync(s: ClusterState): Promise<SyncReport> {
    this.applied.push(s);
    return Promise.resolve({
      backend: this.name,
      full: true,
      durationMs: 1,
      bytes: 1,
      lines: 1,
      writtenServices: s.services.size,
      staleChains: 0,
    });
  }
}

const until = async (cond: () => boolean, what: string): Promise<void> => {
  const deadline = Date.now() + 3000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not in time`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('safety valve: the controller', () => {
  it('refuses (no backend sync), reports in /healthz and the metric, and lifts once the objects are fixed', async () => {
    const src = new HandSource(build(good()));
    const be = new RecordingBackend();
    const c = new Controller(src, [be], { minSyncPeriodMs: 1, syncPeriodMs: 60_000 });
    const metrics = new ProxyMetrics();
    attachMetrics(metrics, c);
    let refused = 0;
    c.on('syncRefused', () => refused++);
    await c.start();
    assert.equal(be.applied.length, 1);

    src.set(build(good().map(kindless)));
    await until(() => refused === 1, 'refused');
    assert.equal(be.applied.length, 1, 'nothing applied');
    const h = c.health();
    assert.notEqual(h.refusedSince, 0);
    assert.notEqual(h.queuedSince, 0, 'the change stays queued');
    const hz = healthzStatus({
      ...h,
      source: { healthy: true },
      node: { eligible: true },
      syncPeriodMs: 60_000,
      now: Date.now(),
    });
    assert.equal(hz.code, 503);
    assert.match(hz.body.reason ?? '', /refused by the safety valve/);
    assert.match(await metrics.registry.metrics(), /^svcplane_sync_refused_total 1$/m);

    // Another change that still breaks everything: refused again (counted), nothing applied.
    src.set(
      build(
        good()
          .map(kindless)
          .concat([{ metadata: { name: 'z' } }]),
      ),
    );
    await until(() => refused === 2, 'refused again');
    assert.equal(be.applied.length, 1);

    // Fixed: applied, health clear.
    src.set(build(good(3)));
    await until(() => be.applied.length === 2, 'applied');
    assert.equal(c.health().refusedSince, 0);
    await c.stop();
  });

  it("guards the first sync of a process with the kernel's Services; `svcplane sync` fails with the reason", async () => {
    const kernel = new Set(['default/a', 'default/b', 'default/c']);
    const be = new RecordingBackend(kernel);
    const c = new Controller(new HandSource(build(good().map(kindless))), [be], {
      minSyncPeriodMs: 1,
      syncPeriodMs: 60_000,
    });
    await assert.rejects(
      c.syncOnce(),
      (e: unknown) => e instanceof SafetyValveError && /3 of 3 programmed Services/.test(e.message),
    );
    assert.equal(be.applied.length, 0);
    // A kernel without Services (a fresh node): nothing to protect, the state applies.
    const fresh = new RecordingBackend();
    await new Controller(new HandSource(build(good().map(kindless))), [fresh], {
      minSyncPeriodMs: 1,
      syncPeriodMs: 60_000,
    }).syncOnce();
    assert.equal(fresh.applied.length, 1);
  });
});
