import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { endpointChainName } from '../../src/iptables/names.js';
import { Daemon, type LogLine } from '../support/daemon.js';
import { expectError, expectReply, useSandbox } from '../support/sandbox.js';
import { seriesValue } from '../support/metrics-text.js';
import { httpGet, type HttpAnswer } from '../support/http.js';

/**
 * The daemon (`svcplane run`, from source through tsx) inside a sandbox node: health, metrics,
 * health-check node ports, restores the kernel refuses, a flushed filter table, a vanished
 * manifest directory and SIGTERM, each with real traffic and real HTTP.
 *
 * Refused restores are real: another agent's chain jumps to the KUBE-SEP chain a change is about to
 * delete, and the kernel refuses to delete a chain in use (EBUSY), until that rule goes.
 */

const NODE = 'node-1';
const SYNC_PERIOD_MS = 2000;

interface Json {
  [k: string]: unknown;
}

function svc(name: string, ip: string, extra: Json = {}, port: Json = {}): Json {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'hard' },
    spec: {
      clusterIP: ip,
      clusterIPs: [ip],
      ports: [{ name: 'p', port: 80, protocol: 'TCP', ...port }],
      ...extra,
    },
  };
}

function slice(service: string, eps: { ip: string; node?: string }[], port = 8080): Json {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${service}-x`, namespace: 'hard', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: 'p', port, protocol: 'TCP' }],
    endpoints: eps.map((e) => ({ addresses: [e.ip], conditions: { ready: true }, nodeName: e.node ?? NODE })),
  };
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('hardening: the daemon under failures (sandbox)', function () {
  this.timeout(90_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [8080] },
      { name: 'b', index: 3, tcpPorts: [8080] },
      { name: 'client', index: 10 },
    ],
  });
  let dir: string;
  let manifests: string;
  /** The running daemon; `last`: the one started last (its log, also once it stopped). */
  let daemon: Daemon | undefined;
  let last: Daemon | undefined;
  const lines = (): LogLine[] => last?.lines ?? [];

  const write = (file: string, objs: Json[]) => writeFile(join(manifests, file), JSON.stringify(objs));
  const http = (from: string, url: string): Promise<HttpAnswer | undefined> => httpGet(env.sb, from, url);
  const metricsText = async (): Promise<string> =>
    (await http('node', 'http://127.0.0.1:10249/metrics'))?.body ?? '';
  /** A series' value; a counter without a sample yet is 0 (Prometheus' rate() reads it so too). */
  const metric = async (name: string): Promise<number> => {
    const v = seriesValue(await metricsText(), name);
    if (v !== undefined) return v;
    return name.endsWith('_total{ip_family="IPv4"}') ? 0 : NaN;
  };
  const logged = (pred: (l: Json) => boolean, from = 0): Json | undefined => lines().slice(from).find(pred);
  const nat = (...args: string[]) => env.sb.exec('node', ['iptables', '-w', '-t', 'nat', ...args]);
  /** Another agent's rule jumps to web's KUBE-SEP chain of `pod`: the kernel refuses to delete it. */
  const holdEndpointChain = async (pod: string): Promise<void> => {
    await nat('-N', 'FOREIGN');
    await nat('-A', 'FOREIGN', '-j', endpointChainName('hard/web:p', 'tcp', `${env.sb.podIP(pod)}:8080`));
  };
  const releaseEndpointChain = async (): Promise<void> => {
    await nat('-F', 'FOREIGN');
    await nat('-X', 'FOREIGN');
  };

  /** `svcplane run` from source (tsx) inside the sandbox node; its JSON log lines are `lines()`. */
  const startDaemon = (): Daemon =>
    (last = Daemon.start(
      [
        'run',
        '--manifests',
        manifests,
        '--hostname-override',
        NODE,
        '--cluster-cidr',
        '10.244.0.0/16',
        '--ip-families',
        'IPv4',
        '--iptables-min-sync-period',
        '100ms',
        '--iptables-sync-period',
        `${SYNC_PERIOD_MS}ms`,
      ],
      { netns: env.sb.nodeNs },
    ));

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'svcp-hard-'));
    manifests = join(dir, 'manifests');
    await mkdir(manifests);

    const a = env.sb.podIP('a');
    await write('web.json', [svc('web', '10.96.8.80'), slice('web', [{ ip: a }])]);
    await write('empty.json', [svc('empty', '10.96.8.81')]);
    await write('lb.json', [
      svc(
        'lb',
        '10.96.8.82',
        { type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: 30555 },
        { nodePort: 30580 },
      ),
      slice('lb', [{ ip: env.sb.podIP('b') }]),
    ]);
    daemon = startDaemon();
    await daemon.waitFor('the first sync', 0, (l) => l.message === 'synced', 30_000);
  });

  after(async function () {
    this.timeout(20_000);
    await daemon?.stop(5000);
    await rm(dir, { recursive: true, force: true });
  });

  it('logs one JSON line per sync with its figures', () => {
    const l = logged((x) => x.message === 'synced')!;
    for (const k of [
      'backend',
      'full',
      'durationMs',
      'bytes',
      'lines',
      'writtenServices',
      'timestamp',
      'level',
    ]) {
      assert.ok(k in l, `${k} in ${JSON.stringify(l)}`);
    }
    assert.equal(l.full, true);
  });

  it('/healthz and /livez answer on 0.0.0.0:10256; /metrics only on 127.0.0.1:10249', async () => {
    const h = await waitFor('healthz 200', async () => {
      const r = await http('outside', `http://${env.sb.nodeIPv4}:10256/healthz`);
      return r?.code === 200 ? r : undefined;
    });
    const body = JSON.parse(h.body) as Json;
    assert.ok(typeof body.lastUpdated === 'string' && typeof body.currentTime === 'string');
    assert.equal((await http('outside', `http://${env.sb.nodeIPv4}:10256/livez`))?.code, 200);
    assert.equal(
      await http('outside', `http://${env.sb.nodeIPv4}:10249/metrics`),
      undefined,
      'not reachable from outside',
    );
    const text = await metricsText();
    // Per family (kube-proxy's ip_family label; this node runs IPv4 only).
    for (const name of [
      'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}',
      'kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"}',
      'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}',
      'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
      'kubeproxy_sync_proxy_rules_endpoint_changes_total',
      'kubeproxy_sync_proxy_rules_service_changes_pending',
      'kubeproxy_sync_proxy_rules_service_changes_total',
      'kubeproxy_sync_proxy_rules_iptables_total{table="nat",ip_family="IPv4"}',
      'kubeproxy_sync_proxy_rules_iptables_last{table="filter",ip_family="IPv4"}',
      'kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="external",ip_family="IPv4"}',
      'kubeproxy_proxy_healthz_total{code="200"}',
      'kubeproxy_conntrack_reconciler_deleted_entries_total',
      'svcplane_sync_restore_bytes{backend="iptables/IPv4"}',
      'process_resident_memory_bytes',
      'process_cpu_seconds_total',
      'process_open_fds',
    ]) {
      assert.ok(text.includes(`\n${name} `), `metric ${name} missing`);
    }
    // Declared, with a series once something happened (a partial sync, a trigger time, a failure).
    for (const name of [
      'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      'kubeproxy_network_programming_duration_seconds',
      'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
      'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
      'kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total',
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'));
    }
    // kube-proxy's types, as dashboards and recording rules expect them.
    const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    for (const [name, type] of [
      ['kubeproxy_sync_proxy_rules_duration_seconds', 'histogram'],
      ['kubeproxy_network_programming_duration_seconds', 'histogram'],
      ['kubeproxy_sync_proxy_rules_last_timestamp_seconds', 'gauge'],
      ['kubeproxy_sync_proxy_rules_endpoint_changes_pending', 'gauge'],
      ['kubeproxy_sync_proxy_rules_endpoint_changes_total', 'counter'],
      ['kubeproxy_sync_proxy_rules_iptables_total', 'gauge'],
      ['kubeproxy_sync_proxy_rules_iptables_restore_failures_total', 'counter'],
      ['kubeproxy_sync_proxy_rules_no_local_endpoints_total', 'gauge'],
      ['kubeproxy_proxy_healthz_total', 'counter'],
    ] as const) {
      assert.equal(types.get(name), type, `# TYPE ${name}`);
    }
    assert.ok((await metric('kubeproxy_sync_proxy_rules_iptables_total{table="nat",ip_family="IPv4"}')) > 5);
    assert.equal((await http('node', 'http://127.0.0.1:10249/proxyMode'))?.body, 'iptables');
  });

  it('serves the health-check node port of an eTP=Local LoadBalancer Service as local endpoints come and go', async () => {
    const url = `http://${env.sb.nodeIPv4}:30555/`;
    const ok = await waitFor('hc 200', async () => {
      const r = await http('outside', url);
      return r?.code === 200 ? r : undefined;
    });
    assert.deepEqual(JSON.parse(ok.body), {
      service: { namespace: 'hard', name: 'lb' },
      localEndpoints: 1,
      serviceProxyHealthy: true,
    });
    const lbSvc = svc(
      'lb',
      '10.96.8.82',
      { type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: 30555 },
      { nodePort: 30580 },
    );
    await write('lb.json', [lbSvc, slice('lb', [{ ip: env.sb.podIP('b'), node: 'node-2' }])]);
    const bad = await waitFor('hc 503', async () => {
      const r = await http('outside', url);
      return r?.code === 503 ? r : undefined;
    });
    assert.equal((JSON.parse(bad.body) as Json).localEndpoints, 0);
    await unlink(join(manifests, 'lb.json'));
    await waitFor('hc closed', async () => ((await http('outside', url)) === undefined ? true : undefined));
  });

  it('a restore the kernel refuses keeps the previous rules serving, is counted and logged with stderr, retried, then full', async () => {
    const web = { proto: 'tcp', ip: '10.96.8.80', port: 80 } as const;
    expectReply(await env.sb.request('client', web), 'a');
    const from = lines().length;
    const failuresBefore = await metric(
      'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}',
    );
    // Moving web from a to b deletes a's KUBE-SEP chain: refused while the foreign jump holds it.
    await holdEndpointChain('a');
    await write('web.json', [svc('web', '10.96.8.80'), slice('web', [{ ip: env.sb.podIP('b') }])]);
    const err = await waitFor('a logged failure', () =>
      Promise.resolve(
        logged((l) => l.level === 'error' && /Device or resource busy/.test(JSON.stringify(l)), from),
      ),
    );
    assert.match(JSON.stringify(err), /iptables-restore/);
    // web keeps being served: by the previous rules, or by the retried full sync's first transactions
    // (on nf_tables it commits in consistent parts, the stale chains' deletion last: docs/modes.md). That the
    // refused transaction itself leaves the previous rules is kernel-refusal.test.ts's.
    for (let i = 0; i < 4; i++) {
      const r = expectReply(await env.sb.request('client', web));
      assert.ok(['a', 'b'].includes(r.pod), `answered by ${r.pod}`);
    }
    await waitFor('restore failures counted', async () =>
      (await metric('kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}')) >
      failuresBefore
        ? true
        : undefined,
    );
    assert.ok(
      (await metric(
        'kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family="IPv4"}',
      )) >= 1,
    );
    assert.ok((await metric('kubeproxy_sync_proxy_rules_endpoint_changes_pending')) >= 1);
    const retries = lines()
      .slice(from)
      .filter((l) => l.level === 'error' && l.message === 'sync failed; previous rules stay in place');
    await releaseEndpointChain();
    // After the failure: a periodic sync (every 2 s) may have logged a partial 'synced' before it.
    const failedAt = lines().indexOf(err);
    const synced = await waitFor('the retried sync', () =>
      Promise.resolve(logged((l) => l.message === 'synced', failedAt)),
    );
    assert.equal(synced.full, true, 'the sync after a failure is full');
    assert.ok(retries.length >= 1);
    await waitFor('traffic on the new endpoint', async () => {
      const r = await env.sb.request('client', web);
      return r.ok && r.reply.pod === 'b' ? true : undefined;
    });
    assert.equal(await metric('kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0);
  });

  it('a change stuck behind refused restores turns /healthz 503 after 2× the sync period, then recovers', async () => {
    const healthz = async () => http('outside', `http://${env.sb.nodeIPv4}:10256/healthz`);
    // web is on b: moving it to a deletes b's KUBE-SEP chain, refused while the foreign jump holds it.
    await holdEndpointChain('b');
    const queuedAt = Date.now();
    try {
      await write('web.json', [svc('web', '10.96.8.80'), slice('web', [{ ip: env.sb.podIP('a') }])]);
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal((await healthz())?.code, 200, 'within the limit');
      const r = await waitFor(
        'healthz 503',
        async () => {
          const x = await healthz();
          return x?.code === 503 ? x : undefined;
        },
        4 * SYNC_PERIOD_MS,
      );
      assert.ok(Date.now() - queuedAt >= 2 * SYNC_PERIOD_MS);
      assert.match(String((JSON.parse(r.body) as Json).reason), /has not reached the kernel/);
      assert.equal((await http('outside', `http://${env.sb.nodeIPv4}:10256/livez`))?.code, 503);
    } finally {
      await releaseEndpointChain();
    }
    await waitFor('healthz 200 again', async () => ((await healthz())?.code === 200 ? true : undefined));
    await write('web.json', [svc('web', '10.96.8.80'), slice('web', [{ ip: env.sb.podIP('b') }])]);
    await waitFor('web back on b only', async () => {
      const got = new Set<string>();
      for (let i = 0; i < 6; i++) {
        const x = await env.sb.request('client', { proto: 'tcp', ip: '10.96.8.80', port: 80 });
        got.add(x.ok ? x.reply.pod : 'x');
      }
      return got.size === 1 && got.has('b') ? true : undefined;
    });
  });

  it('a flushed filter table is repaired within one sync period, also when a change-driven sync comes between', async () => {
    const empty = { proto: 'tcp', ip: '10.96.8.81', port: 80, timeoutMs: 500 } as const;
    expectError(await env.sb.request('client', empty), 'refused');
    const fullBefore = await metric(
      'kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"}',
    );
    // Flush right after a drift check: the worst case, a whole period until the next one.
    const before = lines().length;
    const check = await waitFor(
      'a periodic drift check',
      () => Promise.resolve(logged((l) => l.message === 'checked the kernel rules for drift', before)),
      SYNC_PERIOD_MS + 2000,
    );
    const from = lines().length;
    await env.sb.exec('node', ['iptables', '-t', 'filter', '-F']);
    const flushedAt = Date.now();
    const r = await env.sb.request('client', empty);
    assert.ok(!r.ok && r.error !== 'refused', 'the REJECT is gone after the flush');
    // A change (nat only, so a partial sync) shortly before the period ends. The drift check used to
    // live in the sync loop, whose periodic timer restarts after every sync: it then came a whole
    // period after this change, up to twice the sync period after the flush.
    const checkedAt = Date.parse(String(check.timestamp));
    await new Promise((res) => setTimeout(res, Math.max(0, checkedAt + SYNC_PERIOD_MS - 400 - Date.now())));
    await write('extra.json', [svc('extra', '10.96.8.82'), slice('extra', [{ ip: env.sb.podIP('a') }])]);
    const repair = await waitFor(
      'the full sync that repairs the filter table',
      () => Promise.resolve(logged((l) => l.message === 'synced' && l.full === true, from)),
      3 * SYNC_PERIOD_MS,
    );
    const took = Date.parse(String(repair.timestamp)) - flushedAt;
    const trail = lines()
      .slice(before)
      .map(
        (l) =>
          `${String(l.timestamp)} ${String(l.message)} ${l.full === undefined ? '' : `full=${JSON.stringify(l.full)}`}`,
      )
      .join('\n');
    assert.ok(
      took <= SYNC_PERIOD_MS + 1000,
      `repaired ${took} ms after the flush at ${new Date(flushedAt).toISOString()} (sync period ${SYNC_PERIOD_MS} ms, margin 1000 ms):\n${trail}`,
    );
    assert.ok(
      logged((l) => l.message === 'synced' && l.full === false, from),
      'the change between was a partial sync',
    );
    await waitFor('the REJECT back', async () => {
      const x = await env.sb.request('client', empty);
      return !x.ok && x.error === 'refused' ? true : undefined;
    });
    // Seen as drift (logged with the reason) and repaired by a full sync.
    assert.ok(logged((l) => l.level === 'warn' && /another agent/.test(String(l.message)), from));
    assert.ok(
      (await metric('kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"}')) > fullBefore,
    );
    assert.equal((await http('outside', `http://${env.sb.nodeIPv4}:10256/healthz`))?.code, 200);
    await unlink(join(manifests, 'extra.json'));
  });

  it('a removed manifest directory keeps the rules and turns /healthz 503 with the reason, until it is back', async () => {
    const web = { proto: 'tcp', ip: '10.96.8.80', port: 80 } as const;
    await rename(manifests, `${manifests}.gone`);
    try {
      const r = await waitFor('healthz 503', async () => {
        const x = await http('outside', `http://${env.sb.nodeIPv4}:10256/healthz`);
        return x?.code === 503 ? x : undefined;
      });
      assert.equal((JSON.parse(r.body) as Json).reason, 'source unhealthy: manifest path missing');
      expectReply(await env.sb.request('client', web), 'b');
      assert.equal(await metric('svcplane_source_healthy'), 0);
    } finally {
      await rename(`${manifests}.gone`, manifests);
    }
    await waitFor('healthz 200 again', async () =>
      (await http('outside', `http://${env.sb.nodeIPv4}:10256/healthz`))?.code === 200 ? true : undefined,
    );
    expectReply(await env.sb.request('client', web), 'b');
  });

  it('SIGTERM: exit 0, rules left in place, traffic keeps flowing; a restart converges without dropping it', async () => {
    const conn = await env.sb.openConnection('client', { ip: '10.96.8.80', port: 80 });
    expectReply(conn.result, 'b');
    const code = await daemon!.stop(10_000);
    daemon = undefined;
    assert.equal(code, 0);
    assert.ok(logged((l) => l.message === 'stopping; rules stay in place'));
    expectReply(await conn.send(), 'b');
    expectReply(await env.sb.request('client', { proto: 'tcp', ip: '10.96.8.80', port: 80 }), 'b');
    const saved = (await env.sb.exec('node', ['iptables-save', '-t', 'nat'])).stdout;
    assert.match(saved, /-A KUBE-SERVICES .*-d 10\.96\.8\.80/);

    daemon = startDaemon();
    const [first] = await daemon.waitFor(
      'the first sync after the restart',
      0,
      (l) => l.message === 'synced',
      30_000,
    );
    assert.equal(first!.full, true);
    expectReply(await conn.send(), 'b');
    await conn.close();
    expectReply(await env.sb.request('client', { proto: 'tcp', ip: '10.96.8.80', port: 80 }), 'b');
  });
});
