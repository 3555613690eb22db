import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Daemon, type LogLine } from '../support/daemon.js';
import { expectReply, useSandbox } from '../support/sandbox.js';

/**
 * Hostile Services against the real daemon (`svcplane run --manifests`, real command line) in a
 * sandbox node, proven with real traffic: an externalIP of 127.0.0.1 or 0.0.0.0 does not capture the
 * node's own loopback traffic, node ports 22 (SSH) and 10256 (svcplane's healthz) and one outside
 * `--service-node-port-range` open nothing, and every other Service keeps working.
 */

const NODE = 'node-1';

type Json = Record<string, unknown>;

function svc(name: string, ip: string, spec: Json, port: Json): Json {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'hostile' },
    spec: { clusterIP: ip, ports: [{ name: 'p', protocol: 'TCP', targetPort: 8080, ...port }], ...spec },
  };
}

function slice(service: string, ip: string): Json {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${service}-x`,
      namespace: 'hostile',
      labels: { 'kubernetes.io/service-name': service },
    },
    addressType: 'IPv4',
    ports: [{ name: 'p', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: [ip], conditions: { ready: true }, nodeName: NODE }],
  };
}

describe('hardening: hostile Services against the real daemon (sandbox traffic)', function () {
  this.timeout(90_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [8080] },
      { name: 'b', index: 3, tcpPorts: [8080] },
      { name: 'client', index: 10 },
    ],
  });
  let dir: string;
  let daemon: Daemon | undefined;

  const problems = (): LogLine[] => daemon?.lines.filter((l) => l.message === 'skipped invalid input') ?? [];

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'svcp-hostile-'));
    const manifests = join(dir, 'manifests');
    await mkdir(manifests);
    // The node's own listeners: on loopback (what a hostile externalIP would capture), SSH's port.
    await env.sb.serve('node', { tcpPorts: [22, 8081, 8082] });
    const a = env.sb.podIP('a');
    await writeFile(
      join(manifests, 'web.json'),
      JSON.stringify([
        svc('web', '10.96.9.80', {}, { port: 80 }),
        slice('web', a),
        svc('np-ok', '10.96.9.85', { type: 'NodePort' }, { port: 80, nodePort: 30080 }),
        slice('np-ok', env.sb.podIP('b')),
      ]),
    );
    await writeFile(
      join(manifests, 'hostile.json'),
      JSON.stringify([
        svc('ext-loopback', '10.96.9.81', { externalIPs: ['127.0.0.1'] }, { port: 8081 }),
        slice('ext-loopback', a),
        svc('ext-any', '10.96.9.82', { externalIPs: ['0.0.0.0'] }, { port: 8082 }),
        slice('ext-any', a),
        svc('np-ssh', '10.96.9.83', { type: 'NodePort' }, { port: 22, nodePort: 22 }),
        slice('np-ssh', a),
        svc('np-healthz', '10.96.9.84', { type: 'NodePort' }, { port: 80, nodePort: 10256 }),
        slice('np-healthz', a),
        svc('np-outside', '10.96.9.86', { type: 'NodePort' }, { port: 80, nodePort: 30500 }),
        slice('np-outside', a),
      ]),
    );
    daemon = Daemon.start(
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
        '2s',
        '--service-node-port-range',
        '30000-30100',
        '-v',
        '2',
      ],
      { netns: env.sb.nodeNs },
    );
    await daemon.waitFor('the first sync', 0, (l) => l.message === 'synced', 30_000);
  });

  after(async function () {
    this.timeout(20_000);
    await daemon?.stop(5000);
    await rm(dir, { recursive: true, force: true });
  });

  it('reports each hostile Service once, naming object, field and reason', () => {
    const got = problems()
      .map((l) => {
        const o = l.object as { name: string };
        return `${o.name} ${String(l.field)}: ${String(l.reason)}`;
      })
      .sort();
    assert.deepEqual(got, [
      'ext-any spec.externalIPs[0]: 0.0.0.0 may not be unspecified (0.0.0.0)',
      'ext-loopback spec.externalIPs[0]: 127.0.0.1 may not be in the loopback range (127.0.0.0/8)',
      "np-healthz spec.ports[0].nodePort: 10256 is svcplane's healthz port (--healthz-bind-address)",
      'np-outside spec.ports[0].nodePort: 30500 is outside the node-port range 30000-30100',
      'np-ssh spec.ports[0].nodePort: 22 is outside the node-port range 30000-30100',
    ]);
  });

  it('externalIPs 127.0.0.1 and 0.0.0.0 do not capture the node’s own loopback traffic', async () => {
    for (const port of [8081, 8082]) {
      expectReply(await env.sb.request('node', { proto: 'tcp', ip: '127.0.0.1', port }), 'node');
    }
    const nat = (await env.sb.exec('node', ['iptables-save', '-t', 'nat'])).stdout;
    assert.doesNotMatch(nat, /-d (127\.0\.0\.1|0\.0\.0\.0)\/32/);
    assert.doesNotMatch(nat, /hostile\/(ext-|np-ssh|np-healthz|np-outside)/);
  });

  it('node ports 22, 10256 and one outside the range open nothing; the others keep working', async () => {
    const nodeIP = env.sb.nodeIPv4;
    expectReply(await env.sb.request('outside', { proto: 'tcp', ip: nodeIP, port: 22 }), 'node');
    const healthz = await env.sb.exec(
      'outside',
      ['curl', '-s', '--max-time', '2', `http://${nodeIP}:10256/healthz`],
      { allowFailure: true },
    );
    assert.equal(healthz.exitCode, 0, healthz.stderr);
    assert.match(healthz.stdout, /"lastUpdated"/, 'svcplane answers on its healthz port, not a pod');
    const outside = await env.sb.request('outside', {
      proto: 'tcp',
      ip: nodeIP,
      port: 30500,
      timeoutMs: 1000,
    });
    assert.equal(outside.ok, false, 'nodePort 30500 is outside --service-node-port-range');
    expectReply(await env.sb.request('outside', { proto: 'tcp', ip: nodeIP, port: 30080 }), 'b');
    expectReply(await env.sb.request('client', { proto: 'tcp', ip: '10.96.9.80', port: 80 }), 'a');
  });
});
