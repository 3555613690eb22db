import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProbeResult } from '../../src/netns/protocol.js';
import { startProcess, type ChildHandle } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { until } from '../support/daemon.js';
import { FakeApiServer } from '../support/fake-apiserver.js';
import { NetnsListener } from '../support/netns-listener.js';
import { expectReply, useSandbox } from '../support/sandbox.js';

/**
 * `svcplane run --kubeconfig --network-policy` against the API stand-in (TLS, a bearer token, as
 * kube-apiserver answers), the way a node runs it: Pods, Namespaces and NetworkPolicies come from
 * their watches, and each change made through the API reaches the kernel: a pod relabelled, a
 * namespace labelled, a policy created, updated and deleted, each checked with real packets.
 */

const NODE = 'node-1';
const API_HOST = '192.0.2.2';
const API_PORT = 6443;
const TOKEN = `svcplane-netpol-token-${process.pid}`;
const DB = 6379;
const CLI = process.env.SVCPLANE_CLI ?? join(packageRoot(), 'bin', 'svcplane.js');

type Json = Record<string, unknown>;

describe('svcplane run --kubeconfig --network-policy: policy changes through the API reach the kernel (real packets)', function () {
  this.timeout(120_000);
  let api: FakeApiServer | undefined;
  let listener: NetnsListener | undefined;
  let daemon: ChildHandle | undefined;
  let dir = '';
  const lines: Json[] = [];
  const raw: string[] = [];

  // Before useSandbox's hooks: the daemon and the stand-in stop before the namespaces go.
  after(async function () {
    this.timeout(30_000);
    await daemon?.stop(5000);
    await api?.stop();
    await listener?.close();
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
  const written = (from: number): Promise<true> =>
    until(
      'a policy change in the kernel',
      () =>
        Promise.resolve(
          lines
            .slice(from)
            .some(
              (l) =>
                l.message === 'synced' &&
                l.backend === 'netpol' &&
                (l.full === true || Number(l.elementChanges) > 0),
            )
            ? true
            : undefined,
        ),
      15_000,
    );

  before(async function () {
    this.timeout(90_000);
    dir = mkdtempSync(join(tmpdir(), 'svcplane-netpol-api-'));
    listener = NetnsListener.start(env.sb.outsideNs);
    api = await FakeApiServer.create({
      tls: true,
      tokens: [TOKEN],
      bookmarkIntervalMs: 500,
      host: API_HOST,
      listenHandle: () => listener!.listen(API_HOST, API_PORT),
    });
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
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(kubeconfig, api.kubeconfigYaml(`{token: ${TOKEN}}`));
    daemon = startProcess(
      [
        process.execPath,
        CLI,
        'run',
        '--logging-format=json',
        '-v=2',
        `--kubeconfig=${kubeconfig}`,
        `--hostname-override=${NODE}`,
        '--cluster-cidr=10.244.0.0/16',
        '--ip-families=IPv4',
        '--network-policy',
        '--iptables-min-sync-period=100ms',
      ],
      { netns: env.sb.nodeNs },
    );
    daemon.onLine((l) => {
      raw.push(l);
      try {
        lines.push(JSON.parse(l) as Json);
      } catch {
        /* not a log line */
      }
    });
    await written(0).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${raw.slice(-30).join('\n')}`);
    });
  });

  it('the policy from the API is enforced: frontend answered, other refused', async () => {
    expectReply(await probe('frontend'), 'db');
    assert.ok(!(await probe('other')).ok, 'other -> db');
  });

  it('a pod relabelled through the API: set elements, enforced at once', async () => {
    const from = lines.length;
    api!.update('Pod', pod('frontend', 'default', { role: 'gone' }));
    await written(from);
    const sync = lines.slice(from).find((l) => l.message === 'synced' && l.backend === 'netpol')!;
    assert.equal(sync.full, false, 'a label change is element writes only');
    assert.ok(!(await probe('frontend')).ok, 'frontend (role=gone) -> db');
    const back = lines.length;
    api!.update('Pod', pod('frontend', 'default', { role: 'frontend' }));
    await written(back);
    expectReply(await probe('frontend'), 'db');
  });

  it('a policy updated to a namespace selector, then the namespace labelled', async () => {
    let from = lines.length;
    api!.update('NetworkPolicy', dbPolicy([{ namespaceSelector: { matchLabels: { team: 'shop' } } }]));
    await written(from);
    assert.ok(!(await probe('frontend')).ok, 'frontend is no longer allowed');
    assert.ok(!(await probe('other')).ok, 'shop is not labelled yet');
    from = lines.length;
    api!.update('Namespace', { metadata: { name: 'shop', labels: { team: 'shop' } } });
    await written(from);
    expectReply(await probe('other'), 'db');
  });

  it('the policy deleted through the API: db is open again', async () => {
    const from = lines.length;
    api!.delete('NetworkPolicy', 'default', 'db');
    await written(from);
    expectReply(await probe('frontend'), 'db');
    expectReply(await probe('other'), 'db');
  });
});
