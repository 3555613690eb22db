import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadState, runDiff } from '../../src/cli/diff.js';
import { ipvsConfigFor } from '../../src/ipvs/backend-factory.js';
import { runExplain } from '../../src/cli/explain.js';
import { resolveProxyOptions } from '../../src/cli/proxy-options.js';
import type { IpvsFamilyDrift } from '../../src/debug/ipvs-diff.js';
import type { IpvsExplainFamily } from '../../src/debug/ipvs-explain.js';
import { IpvsProxier } from '../../src/ipvs/proxier.js';
import { expectReply, useSandbox } from '../support/sandbox.js';
import { requireUml } from './helpers.js';

/**
 * `svcplane diff` / `explain` in IPVS mode against a real IPVS node (User-mode Linux): after an
 * IpvsProxier sync the node is in sync; hand-made drift (a deleted real server, a changed weight, an
 * extra virtual server, a removed kube-ipvs0 address, a removed ipset member) is found and attributed
 * to the right Service; explain shows the kernel's connection counters after real traffic.
 */

const NODE = 'node-1';
const PORT = 8080;

function sink(): { o: { write(t: string): void }; e: { write(t: string): void }; out: string; err: string } {
  const s = {
    out: '',
    err: '',
    o: { write: (t: string) => void (s.out += t) },
    e: { write: (t: string) => void (s.err += t) },
  };
  return s;
}

describe('svcplane diff/explain --proxy-mode ipvs (UML)', function () {
  this.timeout(60_000);
  before(function () {
    requireUml(this);
  });
  let proxier: IpvsProxier | undefined;
  let dir: string | undefined;
  let raw: Record<string, unknown> = {};
  after(async () => {
    proxier?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [PORT] },
      { name: 'b', index: 3, tcpPorts: [PORT] },
      { name: 'client', index: 10 },
    ],
  });

  before(async function () {
    const sb = env.sb;
    const service = (name: string, ip: string, extra: Record<string, unknown> = {}): unknown => ({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'default' },
      spec: {
        clusterIP: ip,
        ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: PORT }],
        ...extra,
      },
    });
    const slice = (name: string, pods: string[]): unknown => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'http', protocol: 'TCP', port: PORT }],
      endpoints: pods.map((p) => ({
        addresses: [sb.podIP(p, 'IPv4')],
        conditions: { ready: true },
        nodeName: NODE,
      })),
    });
    const objects = [
      service('web', '10.96.30.1', {
        type: 'NodePort',
        ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: PORT, nodePort: 30180 }],
      }),
      slice('web', ['a', 'b']),
      service('api', '10.96.30.2'),
      slice('api', ['a', 'b']),
      service('empty', '10.96.30.3'),
    ];
    dir = await mkdtemp(join(tmpdir(), 'svcp-ipvs-debug-'));
    await writeFile(join(dir, 'objects.json'), JSON.stringify(objects));
    raw = {
      manifests: dir,
      proxyMode: 'ipvs',
      hostnameOverride: NODE,
      clusterCidr: ['10.244.0.0/16'],
      ipFamilies: ['IPv4'],
      netns: sb.nodeNs,
    };
    const opts = resolveProxyOptions(raw);
    const state = await loadState(opts);
    assert.deepEqual(state.problems, []);
    proxier = new IpvsProxier({ ...ipvsConfigFor(opts, 'IPv4'), netns: sb.nodeNs });
    await proxier.setup();
    await proxier.sync(state);
  });

  async function diff(): Promise<{ code: number; families: IpvsFamilyDrift[]; text: string }> {
    const j = sink();
    const code = await runDiff({ ...raw, output: 'json' }, j.o, j.e);
    assert.equal(j.err.replace(/^note: .*\n/gm, ''), '', 'diff wrote errors');
    const t = sink();
    assert.equal(await runDiff({ ...raw, output: 'text' }, t.o, t.e), code);
    const parsed = JSON.parse(j.out) as { mode: string; families: IpvsFamilyDrift[] };
    assert.equal(parsed.mode, 'ipvs');
    return { code, families: parsed.families, text: t.out };
  }
  const node = (argv: string[]) => env.sb.exec('node', argv);

  it('reports a freshly synced node as in sync (exit 0)', async () => {
    const r = await diff();
    assert.equal(r.code, 0, r.text);
    assert.match(r.text, /IPv4: in sync: ipvs in sync; iptables in sync/);
  });

  it('finds hand-made drift and attributes it to the right Service (exit 1), then a resync fixes it', async () => {
    const a = `${env.sb.podIP('a', 'IPv4')}:${PORT}`;
    const b = `${env.sb.podIP('b', 'IPv4')}:${PORT}`;
    await node(['ipvsadm', '-d', '-t', '10.96.30.1:80', '-r', a]);
    await node(['ipvsadm', '-e', '-t', '10.96.30.2:80', '-r', b, '-m', '-w', '3']);
    await node(['ipvsadm', '-A', '-t', '10.96.30.2:8443', '-s', 'rr']);
    await node(['ip', 'address', 'del', '10.96.30.3/32', 'dev', 'kube-ipvs0']);
    await node(['ipset', 'del', 'KUBE-NODE-PORT-TCP', '30180']);
    await node(['iptables', '-t', 'nat', '-F', 'KUBE-SERVICES']);
    const r = await diff();
    console.log(`      svcplane diff --proxy-mode ipvs (drift):\n${r.text.replace(/^/gm, '        ')}`);
    assert.equal(r.code, 1, r.text);
    const f = r.families[0]!;
    const kinds = (key: string): string[] =>
      (f.groups.find((g) => g.key === key)?.items ?? []).map(
        (i) => `${i.kind} ${i.virtualServer ?? i.member ?? i.address}`,
      );
    assert.deepEqual(kinds('default/web:http/TCP'), ['rs-missing -t 10.96.30.1:80', 'member-missing 30180']);
    assert.deepEqual(kinds('default/api:http/TCP'), ['rs-weight -t 10.96.30.2:80']);
    assert.deepEqual(kinds('default/api'), ['vs-extra -t 10.96.30.2:8443']);
    assert.deepEqual(kinds('default/empty:http/TCP'), ['address-missing 10.96.30.3']);
    assert.equal(f.iptables.inSync, false, 'the flushed KUBE-SERVICES is iptables drift');
    assert.ok(f.iptables.summary.missingRules > 0);
    assert.match(r.text, /# nat KUBE-SERVICES: rules differ: 9 missing/);
    await node(['ipvsadm', '-D', '-t', '10.96.30.2:8443']);
    const state = await loadState(resolveProxyOptions(raw));
    await proxier!.sync(state);
    assert.equal((await diff()).code, 0);
  });

  it('explain shows real connection counters after real traffic, and warns about no endpoints', async () => {
    for (let i = 0; i < 4; i++) {
      expectReply(await env.sb.request('client', { proto: 'tcp', ip: '10.96.30.2', port: 80 }));
    }
    const j = sink();
    assert.equal(await runExplain('default/api', { ...raw, output: 'json' }, j.o, j.e), 0, j.err);
    const report = JSON.parse(j.out) as { ipvs: IpvsExplainFamily[]; warnings: string[] };
    const vs = report.ipvs[0]?.virtualServers.find((v) => v.virtualServer === '-t 10.96.30.2:80');
    assert.ok(vs, j.out);
    const conns = vs.reals.reduce((n, r) => n + (r.active ?? 0) + (r.inactive ?? 0), 0);
    assert.ok(conns >= 4, `connections ${conns}: ${JSON.stringify(vs.reals)}`);
    assert.ok(vs.reals.every((r) => r.status === 'ok' && r.weight === 1));
    assert.ok(
      report.ipvs[0]?.ipsets.some((e) => e.set === 'KUBE-CLUSTER-IP' && e.member === '10.96.30.2,tcp:80'),
    );
    assert.deepEqual(report.warnings, []);
    const t = sink();
    assert.equal(await runExplain('default/api', { ...raw, output: 'text' }, t.o, t.e), 0);
    console.log(`      svcplane explain default/api --proxy-mode ipvs:\n${t.out.replace(/^/gm, '        ')}`);
    assert.match(t.out, /Virtual server -t 10\.96\.30\.2:80/);
    const e = sink();
    assert.equal(await runExplain('default/empty', { ...raw, output: 'json' }, e.o, e.e), 0);
    assert.match(e.out, /10\.96\.30\.3,tcp:80: no endpoints/);
  });
});
