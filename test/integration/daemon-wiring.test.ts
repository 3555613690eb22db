import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { Daemon, eventually } from '../support/daemon.js';
import { expectReply, useSandbox } from '../support/sandbox.js';

/**
 * The daemon's wiring, not only its parts: `svcplane run --manifests` (from source) in a sandbox node.
 * - Conntrack cleanup through the running daemon: a UDP client that keeps its source port stays on
 *   the endpoint its conntrack entry points at for as long as it sends; only the daemon deleting that
 *   entry after the endpoint moved sends it to the new one.
 * - A burst of manifest files is one sync (source debounce + controller), read from the daemon's own
 *   "synced" log lines, not inferred from timing.
 */

const NODE = 'node-1';
const UDP_PORT = 5353;
const TCP_PORT = 8080;

type Json = Record<string, unknown>;

function udpService(sb: Sandbox, name: string, ip: string, pods: readonly string[]): Json[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'default' },
      spec: { clusterIP: ip, ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: UDP_PORT }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-x`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'dns', protocol: 'UDP', port: UDP_PORT }],
      endpoints: pods.map((p) => ({ addresses: [sb.podIP(p)], conditions: { ready: true }, nodeName: NODE })),
    },
  ];
}

function tcpService(sb: Sandbox, name: string, ip: string, pod: string): Json[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'default' },
      spec: { clusterIP: ip, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: TCP_PORT }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-x`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'http', protocol: 'TCP', port: TCP_PORT }],
      endpoints: [{ addresses: [sb.podIP(pod)], conditions: { ready: true }, nodeName: NODE }],
    },
  ];
}

describe('svcplane run: conntrack cleanup and debounce through the running daemon', function () {
  this.timeout(90_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, udpPorts: [UDP_PORT], tcpPorts: [TCP_PORT] },
      { name: 'b', index: 3, udpPorts: [UDP_PORT], tcpPorts: [TCP_PORT] },
      { name: 'client', index: 10 },
    ],
  });
  let dir = '';
  let daemon: Daemon | undefined;
  /** The daemon's JSON log lines (its own array once it runs). */
  let lines: Json[] = [];

  const manifest = (file: string, objects: Json[]): Promise<void> =>
    writeFile(join(dir, file), JSON.stringify(objects));
  const logged = (from: number, pred: (l: Json) => boolean): Json[] => lines.slice(from).filter(pred);

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'svcp-wiring-'));
    await manifest('dns.json', udpService(env.sb, 'dns', '10.96.60.53', ['a']));
    daemon = Daemon.start(
      [
        'run',
        // Tests read JSON lines; -v=2 logs every sync, as kube-proxy's.
        '--logging-format=json',
        '-v=2',
        `--manifests=${dir}`,
        `--hostname-override=${NODE}`,
        '--cluster-cidr=10.244.0.0/16',
        '--ip-families=IPv4',
        // No periodic sync in the way: every sync in these tests comes from a change.
        '--iptables-sync-period=1h',
        '--iptables-min-sync-period=100ms',
        '--healthz-bind-address=127.0.0.1:10256',
        '--metrics-bind-address=127.0.0.1:10249',
      ],
      { netns: env.sb.nodeNs },
    );
    lines = daemon.lines;
    await daemon.waitFor('the first sync', 0, (l) => l.message === 'synced', 30_000);
  });

  after(async function () {
    this.timeout(20_000);
    await daemon?.stop(5000);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a UDP flow stuck on a removed endpoint moves to the new one once the daemon cleans conntrack', async () => {
    const ask = (sourcePort: number) =>
      env.sb.request('client', { proto: 'udp', ip: '10.96.60.53', port: 53, sourcePort, timeoutMs: 700 });
    // The flow under test, on a (its only endpoint); a keeps running after it stops being an endpoint.
    expectReply(await ask(41000), 'a');
    const from = lines.length;
    await manifest('dns.json', udpService(env.sb, 'dns', '10.96.60.53', ['b']));
    await eventually('the sync that moves the endpoint', 10_000, () =>
      Promise.resolve(logged(from, (l) => l.message === 'synced')[0]),
    );
    // New flows go to b as soon as the rules changed.
    expectReply(await ask(41001), 'b');
    // The old flow keeps sending every ~100 ms (its conntrack entry never times out meanwhile): it can
    // only reach b if the daemon deleted that entry.
    const moved = await eventually('the old flow answered by b', 10_000, async () => {
      const r = await ask(41000);
      return r.ok && r.reply.pod === 'b' ? r : undefined;
    });
    expectReply(moved, 'b');
    for (let i = 0; i < 3; i++) expectReply(await ask(41000), 'b');
  });

  it('five manifest files written 30 ms apart are one sync that writes all five Services', async () => {
    const from = lines.length;
    for (let i = 0; i < 5; i++) {
      if (i) await new Promise((r) => setTimeout(r, 30));
      await manifest(
        `burst-${i}.json`,
        tcpService(env.sb, `burst-${i}`, `10.96.61.${i + 1}`, i % 2 ? 'b' : 'a'),
      );
    }
    // Every one is served through the daemon's rules …
    for (let i = 0; i < 5; i++) {
      await eventually(`burst-${i} served`, 10_000, async () => {
        const r = await env.sb.request('client', {
          proto: 'tcp',
          ip: `10.96.61.${i + 1}`,
          port: 80,
          timeoutMs: 500,
        });
        return r.ok ? r : undefined;
      });
    }
    // … after exactly one sync, which wrote the five of them.
    const syncs = logged(from, (l) => l.message === 'synced');
    assert.equal(syncs.length, 1, JSON.stringify(syncs));
    assert.equal(syncs[0]!.writtenServices, 5, JSON.stringify(syncs[0]));
  });
});
