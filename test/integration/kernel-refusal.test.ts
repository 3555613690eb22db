import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serviceChainName } from '../../src/iptables/names.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { Daemon, eventually, type LogLine } from '../support/daemon.js';
import { useSandbox } from '../support/sandbox.js';
import { seriesValue } from '../support/metrics-text.js';
import { scrapeMetrics } from '../support/http.js';

/**
 * A write the kernel itself refuses, through the running daemon (no wrapper around iptables-restore):
 * another agent's rule jumps to the KUBE-SVC chain of a Service that is then deleted, so the kernel
 * refuses to delete that chain (EBUSY), and the full sync that follows refuses the dangling jump. The
 * previous rules keep serving every Service, the failures are counted (kube-proxy's metric) and logged
 * with the kernel's words, retries back off exponentially, and removing the foreign rule lets the next
 * retry converge.
 */

const NODE = 'node-1';
const PORT = 8080;
const WEB = '10.96.70.1';
const OLD = '10.96.70.2';

function service(sb: Sandbox, name: string, ip: string, pod: string): object[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'default' },
      spec: { clusterIP: ip, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: PORT }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-x`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'http', protocol: 'TCP', port: PORT }],
      endpoints: [{ addresses: [sb.podIP(pod)], conditions: { ready: true }, nodeName: NODE }],
    },
  ];
}

describe('a write the kernel refuses (real EBUSY, running daemon)', function () {
  this.timeout(90_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [PORT] },
      { name: 'b', index: 3, tcpPorts: [PORT] },
      { name: 'client', index: 10 },
    ],
  });
  let dir = '';
  let daemon: Daemon | undefined;

  const answer = async (ip: string): Promise<string> => {
    const r = await env.sb.request('client', { proto: 'tcp', ip, port: 80, timeoutMs: 500 });
    return r.ok ? r.reply.pod : r.error;
  };
  /** A counter's value (0 before its first sample, as Prometheus reads a labelled counter). */
  const metric = async (name: string): Promise<number> => {
    const text = await scrapeMetrics(env.sb);
    assert.match(text, new RegExp(`^# TYPE ${name.replace(/\{.*/, '')} `, 'm'), `${name} in /metrics`);
    return seriesValue(text, name) ?? 0;
  };
  const nat = (...args: string[]) => env.sb.exec('node', ['iptables', '-w', '-t', 'nat', ...args]);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'svcp-refusal-'));
    await writeFile(
      join(dir, 'svc.json'),
      JSON.stringify([...service(env.sb, 'web', WEB, 'a'), ...service(env.sb, 'old', OLD, 'b')]),
    );
    daemon = Daemon.start(
      [
        'run',
        `--manifests=${dir}`,
        `--hostname-override=${NODE}`,
        '--cluster-cidr=10.244.0.0/16',
        '--ip-families=IPv4',
        '--iptables-sync-period=1h',
        '--iptables-min-sync-period=1s',
        '--healthz-bind-address=127.0.0.1:10256',
        '--metrics-bind-address=127.0.0.1:10249',
      ],
      { netns: env.sb.nodeNs },
    );
    await daemon.waitFor('the first sync', 0, (l) => l.message === 'synced', 30_000);
  });

  after(async function () {
    this.timeout(20_000);
    // (The foreign chain goes with the sandbox's node namespace.)
    await daemon?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('keeps the previous rules serving, counts and logs the refusal, backs off, converges once the obstacle is gone', async () => {
    const d = daemon!;
    assert.equal(await answer(WEB), 'a');
    assert.equal(await answer(OLD), 'b');
    // Another agent's chain jumps to old's KUBE-SVC chain (as CNI or service-mesh rules do).
    const oldChain = serviceChainName('default/old:http', 'tcp');
    await nat('-N', 'FOREIGN');
    await nat('-A', 'FOREIGN', '-j', oldChain);
    const failuresBefore = await metric(
      'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}',
    );

    // old deleted (its chains must go) and web moved to b, in one change.
    const from = d.lines.length;
    await writeFile(join(dir, 'svc.json'), JSON.stringify(service(env.sb, 'web', WEB, 'b')));
    const failed = (l: LogLine): boolean => l.message === 'sync failed; previous rules stay in place';
    // The change's sync is one --noflush transaction: refused whole, so the previous rules serve.
    // Checked before the retry, which comes the announced delay later (--iptables-min-sync-period 1s).
    const [first] = await d.waitFor('the refused sync', from, failed, 10_000);
    const retryAt = Date.parse(String(first!.timestamp)) + Number(first!.retryInMs);
    for (let i = 0; i < 3; i++) {
      assert.equal(await answer(WEB), 'a');
      assert.equal(await answer(OLD), 'b');
    }
    assert.ok(Date.now() < retryAt, 'the previous rules were checked before the retry');
    const failures = await d.waitFor('three failed syncs', from, failed, 20_000, 3);
    const text = JSON.stringify(failures[0]);
    console.log(`      (${failures.length} refusals; the first: ${text.slice(0, 400)})`);
    assert.match(text, /iptables-restore/, text);
    assert.match(text, /busy|does not exist|No chain/i, `the kernel's refusal in the log: ${text}`);
    assert.deepEqual(
      d.logged(from, (l) => l.message === 'synced'),
      [],
      'no sync succeeded',
    );
    // The retries are full syncs, written on nf_tables as consistent transactions with the stale
    // chains' deletion last (docs/modes.md): what serves is the previous state or the new one, Service by
    // Service (web on a or b; old on b or gone), never anything else.
    for (let i = 0; i < 3; i++) {
      assert.ok(['a', 'b'].includes(await answer(WEB)), 'web: previous or new endpoint');
      assert.ok(['b', 'timeout'].includes(await answer(OLD)), 'old: previous endpoint or gone');
    }
    const counted = await metric(
      'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}',
    );
    assert.ok(counted >= failuresBefore + 3, `restore failures counted: ${failuresBefore} → ${counted}`);
    // Exponential backoff: each retry announced twice as far as the one before, and kept.
    const retries = failures.slice(0, 3).map((l) => Number(l.retryInMs));
    assert.deepEqual(
      retries,
      [retries[0]!, retries[0]! * 2, retries[0]! * 4],
      `retryInMs ${retries.join(', ')}`,
    );
    const at = failures.slice(0, 3).map((l) => Date.parse(String(l.timestamp)));
    assert.ok(
      at[2]! - at[1]! >= retries[1]!,
      `second retry ${at[2]! - at[1]!} ms after the first, announced ${retries[1]} ms`,
    );

    // The obstacle goes: the next retry converges (a full sync, after the failures).
    const cleared = d.lines.length;
    await nat('-F', 'FOREIGN');
    await nat('-X', 'FOREIGN');
    const [synced] = await d.waitFor(
      'the retry that converges',
      cleared,
      (l) => l.message === 'synced',
      30_000,
    );
    assert.equal(synced!.full, true, 'the sync after failures is full');
    await eventually('web on b', 5000, async () => ((await answer(WEB)) === 'b' ? true : undefined));
    assert.equal(await answer(OLD), 'timeout', 'old has no rules any more');
  });
});
