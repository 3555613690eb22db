import assert from 'node:assert/strict';
import { Controller, SafetyValveError } from '../../src/controller/controller.js';
import { healthzStatus } from '../../src/controller/health.js';
import { attachMetrics, ProxyMetrics } from '../../src/controller/metrics.js';
import { controllerHealth } from '../../src/controller/servers-factory.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import type { StateSource } from '../../src/kube/source.js';
import { buildClusterState } from '../../src/model/build.js';
import type { ClusterState } from '../../src/model/types.js';
import type { RequestSpec } from '../../src/netns/protocol.js';
import { log } from '../../src/util/log.js';
import { until } from '../support/daemon.js';
import { useSandbox } from '../support/sandbox.js';
import { HandSource } from '../support/hand-source.js';
import { NODE_NAME, sandboxProxierConfig } from '../support/iptables-harness.js';

/**
 * The safety valve against the real kernel: rules written by a good state stay in the kernel (and
 * keep serving traffic) when the next state would remove most Services because its objects became
 * invalid — here the way a reflector that lost list items' kind/apiVersion (issue 11) hands them
 * over. Also for the first sync of a fresh controller (a restarted daemon), which only knows what the
 * kernel holds. Deletions still apply.
 */

const PORT = 8080;

interface Raw {
  [k: string]: unknown;
}

const kindless = (o: Raw): Raw => {
  const { kind: _k, apiVersion: _a, ...rest } = o;
  void _k;
  void _a;
  return rest;
};

describe('safety valve with real rules in the kernel (sandbox)', function () {
  this.timeout(60_000);
  const controllers: Controller[] = [];
  let level = log.level;
  after(async () => {
    for (const c of controllers) await c.stop();
    log.level = level;
  });
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [PORT] },
      { name: 'b', index: 3, tcpPorts: [PORT] },
      { name: 'client', index: 10 },
    ],
  });

  const NAMES = ['web', 'api', 'db', 'cache'];
  const ip = (i: number): string => `10.96.7.${10 + i}`;
  const objects = (names = NAMES): Raw[] =>
    names.flatMap((name) => {
      const i = NAMES.indexOf(name);
      return [
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name, namespace: 'default' },
          spec: {
            type: 'ClusterIP',
            clusterIP: ip(i),
            clusterIPs: [ip(i)],
            ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
          },
        },
        {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
          metadata: {
            name: `${name}-x`,
            namespace: 'default',
            labels: { 'kubernetes.io/service-name': name },
          },
          addressType: 'IPv4',
          ports: [{ name: 'http', port: PORT, protocol: 'TCP' }],
          endpoints: [
            {
              addresses: [env.sb.podIP(i % 2 === 0 ? 'a' : 'b')],
              conditions: { ready: true },
              nodeName: NODE_NAME,
            },
          ],
        },
      ];
    });
  const build = (objs: Raw[]): ClusterState => buildClusterState(objs.map((obj) => ({ obj })));
  const req = (i: number): RequestSpec => ({ proto: 'tcp', ip: ip(i), port: 80, timeoutMs: 1000 });
  const serviceRules = async (): Promise<string[]> =>
    (await env.sb.exec('node', ['iptables-save', '-t', 'nat'])).stdout
      .split('\n')
      .filter((l) => /^-A KUBE-SERVICES .*-j KUBE-SVC-/.test(l))
      .sort();
  const newController = (source: StateSource): Controller => {
    const proxier = new IptablesProxier(sandboxProxierConfig(env.sb));
    const c = new Controller(source, [proxier], { minSyncPeriodMs: 10, syncPeriodMs: 600_000 });
    controllers.push(c);
    return c;
  };
  const allServed = async (): Promise<void> => {
    for (let i = 0; i < NAMES.length; i++) {
      const r = await env.sb.request('client', req(i));
      assert.ok(r.ok, `${NAMES[i]} (${ip(i)}) answers: ${r.ok ? '' : `${r.error} ${r.detail}`}`);
      assert.equal(r.reply.pod, i % 2 === 0 ? 'a' : 'b');
    }
  };

  before(() => {
    level = log.level;
    log.level = 'error';
  });

  it('refuses a state whose objects all became invalid: the rules stay and serve; counted; /healthz says so', async () => {
    const source = new HandSource(build(objects()));
    const c = newController(source);
    const metrics = new ProxyMetrics();
    attachMetrics(metrics, c);
    await c.start();
    const before = await serviceRules();
    assert.equal(before.length, 4);
    await allServed();

    let refusals = 0;
    c.on('syncRefused', () => refusals++);
    source.set(build(objects().map(kindless)));
    await until('the refusal', () => refusals === 1, 10_000);
    assert.deepEqual(await serviceRules(), before, 'every Service rule is still in the kernel');
    await allServed();
    assert.match(await metrics.registry.metrics(), /^svcplane_sync_refused_total 1$/m);
    const health = healthzStatus(controllerHealth(c, { syncPeriodMs: 600_000, nodeName: NODE_NAME })());
    assert.equal(health.code, 503);
    assert.equal(
      health.body.reason,
      'a sync was refused by the safety valve (it would have removed most Services)',
    );

    // Deleting three of the four Services (fixed objects, no new problems): applied.
    let syncs = 0;
    c.on('synced', () => syncs++);
    source.set(build(objects(['web'])));
    await until('the deletion applied', () => syncs === 1, 10_000);
    assert.equal((await serviceRules()).length, 1);
    assert.equal(c.health().refusedSince, 0);
    assert.ok((await env.sb.request('client', req(0))).ok);
    assert.equal((await env.sb.request('client', { ...req(1), timeoutMs: 500 })).ok, false, 'api is gone');
    await c.stop();
  });

  it("a restarted daemon (fresh controller) whose first state is all invalid: the kernel's rules stay", async () => {
    // An earlier run leaves four Services.
    const first = newController(new HandSource(build(objects())));
    await first.start();
    await first.stop();
    const before = await serviceRules();
    assert.equal(before.length, 4);

    const fresh = newController(new HandSource(build(objects().map(kindless))));
    let refused = false;
    fresh.on('syncRefused', () => (refused = true));
    await fresh.start();
    assert.equal(refused, true, 'the first sync was refused');
    assert.deepEqual(await serviceRules(), before);
    await allServed();
    await fresh.stop();
    // `svcplane sync`'s path: an error naming the reason, nothing written.
    await assert.rejects(
      newController(new HandSource(build(objects().map(kindless)))).syncOnce(),
      (e: unknown) => e instanceof SafetyValveError && /4 of 4 programmed Services/.test(e.message),
    );
    assert.deepEqual(await serviceRules(), before);
  });
});
