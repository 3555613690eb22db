import assert from 'node:assert/strict';
import { ConntrackReconciler } from '../../src/conntrack/reconciler.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import type { ClusterState } from '../../src/model/types.js';
import { ep, service, state } from '../unit/iptables/fixtures.js';
import { expectReply, useSandbox } from '../support/sandbox.js';

/**
 * kube-proxy's UDP conntrack cleanup, with real datagrams: a client that keeps one source port keeps
 * its conntrack entry (and so its DNAT) for as long as it sends; only deleting the entry moves it.
 * Each scenario first shows the stale behaviour (sync without cleanup) so the test can fail.
 */

const NODE = 'node-1';
const UDP_PORT = 5353;

describe('conntrack cleanup of stale UDP flows (real UDP)', function () {
  this.timeout(60_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, udpPorts: [UDP_PORT] },
      { name: 'b', index: 3, udpPorts: [UDP_PORT] },
    ],
  });
  let proxier: IptablesProxier;
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
    proxier = new IptablesProxier({
      family: 'IPv4',
      nodeName: NODE,
      masqueradeBit: 14,
      masqueradeAll: false,
      detectLocalMode: 'ClusterCIDR',
      clusterCIDRs: ['10.244.0.0/16'],
      nodePortAddresses: [],
      localhostNodePorts: true,
      netns: env.sb.nodeNs,
    });
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
