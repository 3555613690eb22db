import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProbeResult } from '../../src/netns/protocol.js';
import { ApiStandIn } from '../support/api-stand-in.js';
import { Daemon, type LogLine } from '../support/daemon.js';
import { expectReply, useSandbox } from '../support/sandbox.js';

/**
 * `svcplane run --kubeconfig --network-policy` against the API stand-in (TLS, a bearer token, as
 * kube-apiserver answers), the way a node runs it: Pods, Namespaces and NetworkPolicies come from
 * their watches, and each change made through the API reaches the kernel: a pod relabelled, a
 * namespace labelled, a policy created, updated and deleted, each checked with real packets.
 */

const NODE = 'node-1';
const TOKEN = `svcplane-netpol-token-${process.pid}`;
const DB = 6379;

type Json = Record<string, unknown>;

describe('svcplane run --kubeconfig --network-policy: policy changes through the API reach the kernel (real packets)', function () {
  this.timeout(120_000);
  let standIn: ApiStandIn | undefined;
  let daemon: Daemon | undefined;
  let dir = '';
  /** The daemon's JSON log lines (its own array once it runs). */
  let lines: LogLine[] = [];

  // Before useSandbox's hooks: the daemon and the stand-in stop before the namespaces go.
  after(async function () {
    this.timeout(30_000);
    await daemon?.stop(5000);
    await standIn?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const env = useSandbox({
    brNetfilter: true,
    pods: [
      { name: 'db', index: 2, tcpPorts: [DB] },
      { name: 'frontend', index: 10 },
      { name: 'other', index: 11 },
    ],
  });

  const pod = (name: string, namespace: string, labels: Json): Json => ({
    metadata: { name, namespace, labels },
    spec: { nodeName: NODE, containers: [{ name: 'c', image: 'none' }] },
    status: { phase: 'Running', podIPs: [{ ip: env.sb.podIP(name) }], podIP: env.sb.podIP(name) },
  });
  const dbPolicy = (from: unknown[]): Json => ({
    metadata: { name: 'db', namespace: 'default' },
    spec: { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ from, ports: [{ port: DB }] }] },
  });
  const probe = (from: string): Promise<ProbeResult> =>
    env.sb.request(from, { proto: 'tcp', ip: env.sb.podIP('db'), port: DB, timeoutMs: 1500 });
  /** Resolves once the daemon wrote a policy change to the kernel (after log line `from`). */
  const written = (from: number): Promise<unknown> =>
    daemon!.waitFor(
      'a policy change in the kernel',
      from,
      (l) =>
        l.message === 'synced' && l.backend === 'netpol' && (l.full === true || Number(l.elementChanges) > 0),
    );

  before(async function () {
    this.timeout(90_000);
    dir = mkdtempSync(join(tmpdir(), 'svcplane-netpol-api-'));
    standIn = await ApiStandIn.start(env.sb, dir, { token: TOKEN });
    const api = standIn.api;
    api.create('Node', {
      metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } },
      status: { addresses: [{ type: 'InternalIP', address: '192.0.2.1' }] },
    });
    api.create('Namespace', { metadata: { name: 'default' } });
    api.create('Namespace', { metadata: { name: 'shop' } });
    // Created Pending, then running with their addresses (the kubelet's status write).
    for (const p of [
      pod('db', 'default', { role: 'db' }),
      pod('frontend', 'default', { role: 'frontend' }),
      pod('other', 'shop', { role: 'other' }),
    ]) {
      api.create('Pod', p);
      api.update('Pod', p);
    }
    api.create('NetworkPolicy', dbPolicy([{ podSelector: { matchLabels: { role: 'frontend' } } }]));
    daemon = Daemon.start(
      [
        'run',
        `--kubeconfig=${standIn.kubeconfig}`,
        `--hostname-override=${NODE}`,
        '--cluster-cidr=10.244.0.0/16',
        '--ip-families=IPv4',
        '--network-policy',
        '--iptables-min-sync-period=100ms',
      ],
      { netns: env.sb.nodeNs, fromBuild: true },
    );
    lines = daemon.lines;
    await written(0);
  });

  it('the policy from the API is enforced: frontend answered, other refused', async () => {
    expectReply(await probe('frontend'), 'db');
    assert.ok(!(await probe('other')).ok, 'other -> db');
  });

  it('a pod relabelled through the API: set elements, enforced at once', async () => {
    const from = lines.length;
    standIn!.api.update('Pod', pod('frontend', 'default', { role: 'gone' }));
    await written(from);
    const sync = lines.slice(from).find((l) => l.message === 'synced' && l.backend === 'netpol')!;
    assert.equal(sync.full, false, 'a label change is element writes only');
    assert.ok(!(await probe('frontend')).ok, 'frontend (role=gone) -> db');
    const back = lines.length;
    standIn!.api.update('Pod', pod('frontend', 'default', { role: 'frontend' }));
    await written(back);
    expectReply(await probe('frontend'), 'db');
  });

  it('a policy updated to a namespace selector, then the namespace labelled', async () => {
    let from = lines.length;
    standIn!.api.update(
      'NetworkPolicy',
      dbPolicy([{ namespaceSelector: { matchLabels: { team: 'shop' } } }]),
    );
    await written(from);
    assert.ok(!(await probe('frontend')).ok, 'frontend is no longer allowed');
    assert.ok(!(await probe('other')).ok, 'shop is not labelled yet');
    from = lines.length;
    standIn!.api.update('Namespace', { metadata: { name: 'shop', labels: { team: 'shop' } } });
    await written(from);
    expectReply(await probe('other'), 'db');
  });

  it('the policy deleted through the API: db is open again', async () => {
    const from = lines.length;
    standIn!.api.delete('NetworkPolicy', 'default', 'db');
    await written(from);
    expectReply(await probe('frontend'), 'db');
    expectReply(await probe('other'), 'db');
  });
});
