import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConntrackList } from '../../src/conntrack/entries.js';
import { ConntrackReconciler } from '../../src/conntrack/reconciler.js';
import { ProxyMetrics } from '../../src/controller/metrics.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { NftablesProxier } from '../../src/nftables/proxier.js';
import type { ClusterState } from '../../src/model/types.js';
import { run } from '../../src/util/exec.js';
import { ep, service, state } from '../unit/iptables/fixtures.js';
import { expectReply, useSandbox } from '../support/sandbox.js';

/**
 * kube-proxy's UDP conntrack cleanup, with real datagrams: a client that keeps one source port keeps
 * its conntrack entry (and so its DNAT) for as long as it sends; only deleting the entry moves it.
 * Each scenario first shows the stale behaviour (sync without cleanup) so the test can fail.
 */

const NODE = 'node-1';
const UDP_PORT = 5353;

// The same scenarios in iptables and in nftables mode: the reconciler follows the state, whatever
// programs the kernel.
for (const mode of ['iptables', 'nftables'] as const) {
  describe(`conntrack cleanup of stale UDP flows (real UDP, ${mode} mode)`, function () {
    this.timeout(60_000);
    const env = useSandbox({
      pods: [
        { name: 'a', index: 2, udpPorts: [UDP_PORT] },
        { name: 'b', index: 3, udpPorts: [UDP_PORT] },
      ],
    });
    let proxier: IptablesProxier | NftablesProxier;
    let reconciler: ConntrackReconciler;

    const dns = (clusterIP: string, pods: string[]) =>
      service(`ns/dns-${clusterIP.split('.').pop()}`, {
        clusterIP,
        ports: [
          {
            name: 'dns',
            protocol: 'UDP',
            port: 53,
            endpoints: pods.map((p) => ep(env.sb.podIP(p), UDP_PORT, { nodeName: NODE })),
          },
        ],
      });

    const sync = async (s: ClusterState): Promise<void> => {
      await proxier.sync(s);
    };
    const ask = (ip: string, sourcePort: number) =>
      env.sb.request('node', { proto: 'udp', ip, port: 53, sourcePort, timeoutMs: 700 });

    before(async function () {
      const common = {
        family: 'IPv4',
        nodeName: NODE,
        masqueradeBit: 14,
        masqueradeAll: false,
        detectLocalMode: 'ClusterCIDR',
        clusterCIDRs: ['10.244.0.0/16'],
        nodePortAddresses: [],
        netns: env.sb.nodeNs,
      } as const;
      proxier =
        mode === 'iptables'
          ? new IptablesProxier({ ...common, localhostNodePorts: true })
          : new NftablesProxier(common);
      await proxier.setup();
      reconciler = new ConntrackReconciler({ families: ['IPv4'], netns: env.sb.nodeNs });
    });

    it('removing the endpoint a client sticks to moves its next datagrams to the new backend', async () => {
      const vip = '10.96.7.53';
      await sync(state(dns(vip, ['a'])));
      expectReply(await ask(vip, 40000), 'a');
      // b joins, a leaves; without cleanup the flow stays on a (still alive, no longer an endpoint).
      const next = state(dns(vip, ['b']));
      await sync(next);
      expectReply(await ask(vip, 40000), 'a');
      expectReply(await ask(vip, 40001), 'b'); // a new flow is balanced to b
      const r = await reconciler.reconcile(next);
      assert.ok(r.deleted >= 1, `deleted ${r.deleted}`);
      for (let i = 0; i < 3; i++) expectReply(await ask(vip, 40000), 'b');
      // Nothing left to delete: flows on serving endpoints are kept.
      assert.equal((await reconciler.reconcile(next)).deleted, 0);
    });

    it('0 → N endpoints: a flow that started before the Service had rules is cleared', async () => {
      // Before the Service is programmed the datagrams follow normal routing (to the sandbox's
      // outside, which never answers) and conntrack records an un-NATed flow.
      const vip = '10.96.7.54';
      await sync(state(dns(vip, [])));
      assert.equal((await ask(vip, 41000)).ok, false, 'no endpoints: no answer');
      await sync(state());
      assert.equal((await ask(vip, 41000)).ok, false, 'no rules: no answer');
      const next = state(dns(vip, ['b']));
      await sync(next);
      assert.equal((await ask(vip, 41000)).ok, false, 'stuck on the old flow before the cleanup');
      expectReply(await ask(vip, 41001), 'b');
      const r = await reconciler.reconcile(next);
      assert.ok(r.deleted >= 1, `deleted ${r.deleted}`);
      expectReply(await ask(vip, 41000), 'b');
    });

    it('afterSync cleans only when UDP endpoints changed, and then always converges', async () => {
      const vip = '10.96.7.55';
      const first = state(dns(vip, ['a']));
      await sync(first);
      await reconciler.afterSync(first);
      expectReply(await ask(vip, 42000), 'a');
      const same = state(
        dns(vip, ['a']),
        service('ns/web', { clusterIP: '10.96.7.80', ports: [{ port: 80 }] }),
      );
      await sync(same);
      assert.equal(await reconciler.afterSync(same), undefined, 'no UDP endpoint change: no cleanup');
      const moved = state(dns(vip, ['b']));
      await sync(moved);
      const r = await reconciler.afterSync(moved);
      assert.ok(r && r.deleted >= 1);
      expectReply(await ask(vip, 42000), 'b');
    });
  });
}

describe('conntrack cleanup under churn (real conntrack table)', function () {
  this.timeout(60_000);
  const env = useSandbox({});
  let dir: string;
  let wrapper: string;
  let callLog: string;

  before(async () => {
    // A conntrack that records each start: counts processes the same way on any implementation.
    dir = await mkdtemp(join(tmpdir(), 'svcp-ct-'));
    callLog = join(dir, 'calls');
    wrapper = join(dir, 'conntrack');
    await writeFile(wrapper, `#!/bin/sh\necho "$1" >> '${callLog}'\nexec conntrack "$@"\n`);
    await chmod(wrapper, 0o755);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const VIP = '10.96.8.53';
  const STALE = ['10.244.0.251', '10.244.0.252'];
  const SERVING = '10.244.0.3';
  const dns = (ips: string[]) =>
    state(
      service('ns/dns-churn', {
        clusterIP: VIP,
        ports: [{ name: 'dns', protocol: 'UDP', port: 53, endpoints: ips.map((ip) => ep(ip, 5353)) }],
      }),
    );
  /** UDP flows as DNAT leaves them: client 10.244.0.9:sport → VIP:53, answered by backend:5353. */
  const flowLine = (sport: number, backend: string): string =>
    `-I -p udp --orig-src 10.244.0.9 --orig-dst ${VIP} --sport ${sport} --dport 53 ` +
    `--reply-src ${backend} --reply-dst 10.244.0.9 --reply-port-src 5353 --reply-port-dst ${sport} --timeout 300\n`;
  const listFlows = async () =>
    parseConntrackList(
      (await run(['conntrack', '-L', '-f', 'ipv4', '-p', 'udp', '-o', 'extended'], { netns: env.sb.nodeNs }))
        .stdout,
    ).filter((e) => e.orig.dst === VIP);

  it('a burst of 30 syncs costs at most two runs, each one listing and one batch delete', async () => {
    // 2 × 40 clients stuck on two removed endpoints, 10 on the serving one.
    let input = '';
    for (let i = 0; i < 80; i++) input += flowLine(41000 + i, STALE[i % 2]!);
    for (let i = 0; i < 10; i++) input += flowLine(42000 + i, SERVING);
    // One process for all 90 (-R reads a file: it cannot open a socket stdin as /dev/stdin).
    await writeFile(join(dir, 'flows'), input);
    await run(['conntrack', '-R', join(dir, 'flows')], { netns: env.sb.nodeNs });
    assert.equal((await listFlows()).length, 90);

    const metrics = new ProxyMetrics();
    const reconciler = new ConntrackReconciler({
      families: ['IPv4'],
      netns: env.sb.nodeNs,
      binary: wrapper,
      metrics,
    });
    // 30 syncs back to back, as a rollout produces them: endpoints come and go, each sync's UDP
    // endpoints differ from the one before, the last state serves from SERVING only.
    const results = [];
    for (let i = 0; i < 30; i++) {
      const eps = i === 29 ? [SERVING] : i % 2 === 0 ? [SERVING, '10.244.0.4'] : [SERVING, '10.244.0.5'];
      results.push(reconciler.afterSync(dns(eps)));
    }
    await Promise.all(results);
    await reconciler.idle();

    const left = await listFlows();
    assert.deepEqual(
      [...new Set(left.map((e) => e.reply.src))],
      [SERVING],
      'only flows on the serving endpoint remain',
    );
    assert.equal(left.length, 10);

    const calls = (await readFile(callLog, 'utf8')).trim().split('\n');
    const lists = calls.filter((c) => c === '-L').length;
    assert.ok(
      lists <= 2,
      `${lists} runs (listings) and ${calls.length} processes for a burst of 30 syncs: runs must coalesce`,
    );
    assert.ok(
      calls.length <= 2 * lists,
      `${calls.length} conntrack processes for ${lists} runs (${calls.filter((c) => c === '-D').length} single deletes)`,
    );
    const text = await metrics.registry.metrics();
    assert.match(text, new RegExp(`svcplane_conntrack_reconciler_runs_total ${lists}\\n`));
    assert.match(text, new RegExp(`svcplane_conntrack_reconciler_commands_total ${calls.length}\\n`));
    assert.match(text, /kubeproxy_conntrack_reconciler_deleted_entries_total 80\n/);
  });
});
