import assert from 'node:assert/strict';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { buildClusterState } from '../../src/model/build.js';
import type { ClusterState } from '../../src/model/types.js';
import { sandboxProxierConfig } from '../support/iptables-harness.js';
import { expectReply, useSandbox } from '../support/sandbox.js';
import { Background, requireUml, tryCmd, waitFor } from './helpers.js';

/**
 * iptables mode while another process holds the xtables lock (issue 6). The legacy backend takes
 * /run/xtables.lock; inside User-mode Linux /run is private, so holding it here blocks nobody else.
 * The restore waits (-w 5) and fails; the previous rules keep serving; once the lock is free the
 * retried sync is full and converges.
 */

const LOCK = '/run/xtables.lock';

function state(pod: string, podIP: string): ClusterState {
  return buildClusterState([
    {
      obj: {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'locked', namespace: 'default' },
        spec: { clusterIP: '10.96.40.1', ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
      },
    },
    {
      obj: {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          name: 'locked-1',
          namespace: 'default',
          labels: { 'kubernetes.io/service-name': 'locked' },
        },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
        endpoints: [{ addresses: [podIP], nodeName: 'node-1', targetRef: { name: pod } }],
      },
    },
  ]);
}

describe('iptables mode with the xtables lock held by another process (UML, legacy backend)', function () {
  this.timeout(120_000);
  before(function () {
    requireUml(this);
  });
  const ctx = useSandbox({
    pods: [{ name: 'a', tcpPorts: [8080] }, { name: 'b', tcpPorts: [8080] }, { name: 'c' }],
  });
  let holder: Background | undefined;
  after(async () => {
    await holder?.stop();
  });

  it('fails the restore, keeps serving the previous rules, then converges with a full sync', async () => {
    const { sb } = ctx;
    const proxier = new IptablesProxier(sandboxProxierConfig(sb, { localhostNodePorts: false }));
    await proxier.setup();
    await proxier.sync(state('a', sb.podIP('a')));
    expectReply(await sb.request('c', { proto: 'tcp', ip: '10.96.40.1', port: 80 }), 'a');

    // One process that holds the lock itself (flock(1) would pass it on to its child), ended by PID.
    holder = new Background([
      'perl',
      '-e',
      'use Fcntl ":flock"; open(my $f, ">>", $ARGV[0]) or die; flock($f, LOCK_EX) or die; sleep 60',
      LOCK,
    ]);
    await waitFor('lock held', async () => (await tryCmd(['flock', '-n', LOCK, 'true'])).exitCode !== 0);

    const started = Date.now();
    await assert.rejects(proxier.sync(state('b', sb.podIP('b'))), /iptables-restore|lock|xtables/i);
    assert.ok(Date.now() - started >= 4000, 'the restore waited for the lock (-w 5) before failing');
    expectReply(await sb.request('c', { proto: 'tcp', ip: '10.96.40.1', port: 80 }), 'a');

    await holder.stop();
    const report = await proxier.sync(state('b', sb.podIP('b')));
    assert.equal(report.full, true, 'the sync after a failed restore is full');
    expectReply(await sb.request('c', { proto: 'tcp', ip: '10.96.40.1', port: 80 }), 'b');
  });
});
