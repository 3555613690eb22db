import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDiff } from '../../src/cli/diff.js';
import { loadState } from '../../src/kube/open-source.js';
import { ipvsConfigFor } from '../../src/ipvs/backend-factory.js';
import { runExplain } from '../../src/cli/explain.js';
import { resolveProxyOptions } from '../../src/config/options.js';
import { runTrace, traceOnNode } from '../../src/cli/trace.js';
import type { IpvsFamilyDrift } from '../../src/debug/ipvs-diff.js';
import type { IpvsExplainFamily } from '../../src/debug/ipvs-explain.js';
import { formatTraceText } from '../../src/debug/trace-format.js';
import type { TraceResult } from '../../src/debug/trace.js';
import { IpvsProxier } from '../../src/ipvs/proxier.js';
import type { ClusterState } from '../../src/model/types.js';
import { peerIP } from '../../src/netns/protocol.js';
import type { Where } from '../../src/netns/sandbox.js';
import { expectReply, useSandbox } from '../support/sandbox.js';
import { run } from '../../src/util/exec.js';
import {
  KUBE_PROXY_IPVS_IPSETS,
  KUBE_PROXY_IPVS_IPTABLES,
  KUBE_PROXY_IPVS_IPVSADM,
  KUBE_PROXY_IPVS_NODE,
  KUBE_PROXY_IPVS_OBJECTS,
} from '../unit/debug/kube-proxy-ipvs.js';
import { Background, requireUml, waitFor } from './helpers.js';

/**
 * `svcplane diff` / `explain` / `trace` in IPVS mode against a real IPVS node (User-mode Linux):
 * after an IpvsProxier sync the node is in sync; hand-made drift (a deleted real server, a changed
 * weight, an extra virtual server, a removed kube-ipvs0 address, a removed ipset member) is found and
 * attributed to the right Service; explain shows the kernel's connection counters after real
 * traffic; every trace prediction (verdict, endpoints, masquerade) is checked against real
 * connections (who answered, which source the backend saw, refused vs timed out).
 */

const NODE = 'node-1';
const PORT = 8080;
const LB_IP = '198.51.100.30';
const SCTP_PORT = 7777;
/** The node's address on the pod bridge: what a masqueraded connection comes from. */
const MASQ_SOURCE = '10.244.0.1';

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
  let clusterState: ClusterState | undefined;
  const servers: Background[] = [];
  after(async () => {
    proxier?.stop();
    for (const s of servers) await s.stop();
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
    const slice = (name: string, pods: string[], nodes: Record<string, string> = {}): unknown => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'http', protocol: 'TCP', port: PORT }],
      endpoints: pods.map((p) => ({
        addresses: [sb.podIP(p, 'IPv4')],
        conditions: { ready: true },
        nodeName: nodes[p] ?? NODE,
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
      // Allowed from the outside client only: a pod's connection is dropped.
      {
        ...(service('lb', '10.96.30.4', {
          type: 'LoadBalancer',
          loadBalancerSourceRanges: [`${sb.outsideIPv4}/32`],
          ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: PORT, nodePort: 30184 }],
        }) as object),
        status: { loadBalancer: { ingress: [{ ip: LB_IP }] } },
      },
      slice('lb', ['a', 'b']),
      // eTP=Local: a on this node, b "elsewhere".
      service('local', '10.96.30.5', {
        type: 'NodePort',
        externalTrafficPolicy: 'Local',
        ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: PORT, nodePort: 30185 }],
      }),
      slice('local', ['a', 'b'], { b: 'node-2' }),
      service('sctp', '10.96.30.6', {
        ports: [{ name: 'assoc', protocol: 'SCTP', port: SCTP_PORT, targetPort: SCTP_PORT }],
      }),
      {
        ...(slice('sctp', ['a']) as object),
        ports: [{ name: 'assoc', protocol: 'SCTP', port: SCTP_PORT }],
      },
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
    clusterState = state;
    // SCTP: the UML kernel has it (the host's has no SCTP sockets); socat speaks it.
    await run(['modprobe', '-a', 'sctp', 'xt_sctp']);
    servers.push(
      new Background([
        'ip',
        'netns',
        'exec',
        sb.pod('a').ns,
        'socat',
        `SCTP-LISTEN:${SCTP_PORT},fork,reuseaddr`,
        'SYSTEM:echo a $SOCAT_PEERADDR',
      ]),
    );
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

  // ---- trace, checked against real connections ----

  async function trace(
    from: Where,
    dst: string,
    dport: number,
  ): Promise<{ t: TraceResult; client: string; text: string }> {
    const sb = env.sb;
    const client = from === 'outside' ? sb.outsideIPv4 : sb.podIP(from, 'IPv4');
    const { packet, trace: t } = await traceOnNode(
      { src: client, dst, dport, proto: 'tcp', iptablesBinary: 'iptables', netns: sb.nodeNs },
      'IPv4',
      clusterState,
    );
    assert.deepEqual(t.unsupported, [], 'every match was evaluated');
    return { t, client, text: formatTraceText(packet, t) };
  }

  /**
   * Real connections from `from` agree with the trace: for dnat every answer comes from a predicted
   * endpoint, every predicted endpoint answers (rr alternates) and the backend sees the node (masq)
   * or the client; reject is refused, drop times out.
   */
  async function agrees(
    from: Where,
    dst: string,
    dport: number,
    t: TraceResult,
    client: string,
  ): Promise<void> {
    const req = { proto: 'tcp' as const, ip: dst, port: dport, timeoutMs: 800 };
    if (t.verdict !== 'dnat') {
      const r = await env.sb.request(from, req);
      const want = t.verdict === 'reject' ? 'refused' : t.verdict === 'drop' ? 'timeout' : 'answered';
      assert.equal(r.ok ? 'answered' : r.error, want, `${t.verdict} predicted`);
      return;
    }
    const predicted = new Map(t.endpoints.map((e) => [e.endpoint, e]));
    const seen = new Set<string>();
    for (let i = 0; i < 3 * predicted.size && seen.size < predicted.size; i++) {
      const reply = expectReply(await env.sb.request(from, req));
      const at = `${reply.ip}:${reply.port}`;
      const e = predicted.get(at);
      assert.ok(e, `${at} answered, predicted ${[...predicted.keys()].join(', ')}`);
      assert.equal(
        peerIP(reply.peer),
        e.masquerade ? MASQ_SOURCE : client,
        `masquerade ${e.masquerade} predicted`,
      );
      seen.add(at);
    }
    assert.equal(seen.size, predicted.size, `answered by ${[...seen].join(', ')}`);
  }

  const ep = (pod: string): string => `${env.sb.podIP(pod, 'IPv4')}:${PORT}`;

  it('trace ClusterIP from a pod: IPVS to both real servers, no masquerade; real connections agree', async () => {
    const { t, client, text } = await trace('client', '10.96.30.2', 80);
    console.log(`      svcplane trace (IPVS, ClusterIP from a pod):\n${text.replace(/^/gm, '        ')}`);
    assert.deepEqual(
      [t.verdict, t.service, t.masquerade, t.endpoints.map((e) => [e.endpoint, e.probability])],
      [
        'dnat',
        'default/api:http',
        false,
        [
          [ep('a'), 0.5],
          [ep('b'), 0.5],
        ],
      ],
    );
    assert.equal(t.ipvs?.virtualServer, '-t 10.96.30.2:80');
    // The CLI path: --manifests names the Service; without it the JSON says null and a note why.
    const cli = async (extra: Record<string, string>) => {
      const j = sink();
      const o = { src: client, dst: '10.96.30.2', dport: 80, proto: 'tcp' as const, output: 'json' as const };
      const code = await runTrace(
        { ...o, iptablesBinary: 'iptables', netns: env.sb.nodeNs, ...extra },
        j.o,
        j.e,
      );
      assert.equal(code, 0, j.err);
      return JSON.parse(j.out) as { verdict: string; service: string | null; notes: string[] };
    };
    const named = await cli({ manifests: dir! });
    assert.deepEqual([named.verdict, named.service], ['dnat', 'default/api:http']);
    const anonymous = await cli({});
    assert.deepEqual([anonymous.verdict, anonymous.service], ['dnat', null]);
    assert.ok(anonymous.notes.some((n) => /pass --manifests or --kubeconfig/.test(n)));
    await agrees('client', '10.96.30.2', 80, t, client);
  });

  it('trace ClusterIP from outside via the node: masqueraded (source outside --cluster-cidr); real connections agree', async () => {
    const { t, client } = await trace('outside', '10.96.30.2', 80);
    assert.deepEqual([t.verdict, t.masquerade], ['dnat', true]);
    assert.match(t.masqueradeReason, /! -s 10\.244\.0\.0\/16 .*KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ/);
    await agrees('outside', '10.96.30.2', 80, t, client);
  });

  it('trace NodePort from outside: masqueraded; real connections agree', async () => {
    const { t, client, text } = await trace('outside', env.sb.nodeIPv4, 30180);
    console.log(`      svcplane trace (IPVS, NodePort from outside):\n${text.replace(/^/gm, '        ')}`);
    assert.deepEqual([t.verdict, t.service, t.masquerade], ['dnat', 'default/web:http', true]);
    assert.equal(t.endpoints.length, 2);
    await agrees('outside', env.sb.nodeIPv4, 30180, t, client);
  });

  it('trace a Service without endpoints: reject; a real connection is refused', async () => {
    const { t, client } = await trace('client', '10.96.30.3', 80);
    assert.deepEqual([t.verdict, t.service, t.endpoints], ['reject', 'default/empty:http', []]);
    await agrees('client', '10.96.30.3', 80, t, client);
  });

  it('trace LB source ranges: the allowed client gets dnat (masqueraded), a pod is dropped; real connections agree', async () => {
    const allowed = await trace('outside', LB_IP, 80);
    assert.deepEqual(
      [allowed.t.verdict, allowed.t.service, allowed.t.masquerade],
      ['dnat', 'default/lb:http', true],
    );
    await agrees('outside', LB_IP, 80, allowed.t, allowed.client);
    const denied = await trace('client', LB_IP, 80);
    assert.deepEqual([denied.t.verdict, denied.t.service], ['drop', 'default/lb:http']);
    assert.ok(denied.t.path.some((s) => s.chain === 'KUBE-SOURCE-RANGES-FIREWALL' && s.action === 'DROP'));
    await agrees('client', LB_IP, 80, denied.t, denied.client);
  });

  it('trace eTP=Local NodePort from outside: the local endpoint only, client IP kept; real connections agree', async () => {
    const { t, client } = await trace('outside', env.sb.nodeIPv4, 30185);
    assert.deepEqual(
      [t.verdict, t.service, t.masquerade, t.endpoints.map((e) => e.endpoint)],
      ['dnat', 'default/local:http', false, [ep('a')]],
    );
    await agrees('outside', env.sb.nodeIPv4, 30185, t, client);
  });
  it('trace SCTP ClusterIP from a pod: the one real server, no masquerade; a real association agrees', async () => {
    const sb = env.sb;
    const client = sb.podIP('client', 'IPv4');
    const { packet, trace: t } = await traceOnNode(
      {
        src: client,
        dst: '10.96.30.6',
        dport: SCTP_PORT,
        proto: 'sctp',
        iptablesBinary: 'iptables',
        netns: sb.nodeNs,
      },
      'IPv4',
      clusterState,
    );
    assert.deepEqual(t.unsupported, []);
    assert.deepEqual(
      [t.verdict, t.service, t.masquerade, t.endpoints.map((e) => e.endpoint), t.ipvs?.virtualServer],
      [
        'dnat',
        'default/sctp:assoc',
        false,
        [`${sb.podIP('a', 'IPv4')}:${SCTP_PORT}`],
        `--sctp-service 10.96.30.6:${SCTP_PORT}`,
      ],
      formatTraceText(packet, t),
    );
    await waitFor('the SCTP server', async () => {
      const r = await sb.exec(
        'client',
        // -u: only the server's line (STDIO's empty stdin would start the 0.5 s half-close timeout).
        ['socat', '-T', '10', '-u', `SCTP-CONNECT:10.96.30.6:${SCTP_PORT}`, 'STDOUT'],
        { allowFailure: true, timeoutMs: 20_000 },
      );
      const m = /^(\S+) (\S+)$/m.exec(r.stdout);
      if (!m) return false;
      assert.deepEqual(
        [m[1], m[2]],
        ['a', client],
        'answered by the predicted endpoint, client address kept',
      );
      return true;
    });
  });
});

describe("svcplane diff --proxy-mode ipvs on kube-proxy's IPVS rules (UML, a private netns)", function () {
  this.timeout(60_000);
  const ns = `svcp-kpipvs${randomBytes(3).toString('hex')}`;
  let dir: string | undefined;
  let raw: Record<string, unknown> = {};
  before(async function () {
    requireUml(this);
    // The node kube-proxy converged (test/unit/debug/kube-proxy-ipvs.ts): its sets, rules and
    // virtual servers restored as saved, on a node with the same addresses.
    await run(['ip', 'netns', 'add', ns]);
    const inNs = (argv: string[], input?: string) => run(argv, { netns: ns, input, timeoutMs: 30_000 });
    await inNs(['ip', 'link', 'set', 'lo', 'up']);
    await inNs(['ip', 'link', 'add', 'ext0', 'type', 'dummy']);
    await inNs(['ip', 'address', 'add', `${KUBE_PROXY_IPVS_NODE.ip}/24`, 'dev', 'ext0']);
    await inNs(['ip', 'link', 'add', 'kube-ipvs0', 'type', 'dummy']);
    const bound = KUBE_PROXY_IPVS_IPSETS.split('\n')
      .filter((l) => l.startsWith('add KUBE-IPVS-IPS '))
      .map((l) => l.split(' ')[2]!);
    await run(['ip', '-n', ns, '-batch', '-'], {
      input: bound.map((ip) => `address add ${ip}/32 dev kube-ipvs0`).join('\n') + '\n',
    });
    await inNs(['ipset', 'restore'], KUBE_PROXY_IPVS_IPSETS);
    await inNs(['iptables-restore'], KUBE_PROXY_IPVS_IPTABLES);
    await inNs(['ipvsadm', '-R'], KUBE_PROXY_IPVS_IPVSADM);
    dir = await mkdtemp(join(tmpdir(), 'svcp-kpipvs-'));
    await writeFile(join(dir, 'objects.json'), JSON.stringify(KUBE_PROXY_IPVS_OBJECTS.map((o) => o.obj)));
    raw = {
      manifests: dir,
      proxyMode: 'ipvs',
      hostnameOverride: KUBE_PROXY_IPVS_NODE.name,
      clusterCidr: [KUBE_PROXY_IPVS_NODE.clusterCIDR],
      nodeportAddresses: ['192.0.2.0/24'],
      ipFamilies: ['IPv4'],
      netns: ns,
    };
  });
  after(async () => {
    await run(['ip', 'netns', 'del', ns], { allowFailure: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is in sync (exit 0) and lists what svcplane would change on taking over; a deleted rule is drift (exit 1)', async () => {
    const t = sink();
    const code = await runDiff({ ...raw, output: 'text' }, t.o, t.e);
    console.log(
      `      svcplane diff --proxy-mode ipvs (node written by kube-proxy):\n${t.out.replace(/^/gm, '        ')}`,
    );
    assert.equal(code, 0, t.out + t.err);
    assert.match(
      t.out,
      /IPv4: in sync: ipvs in sync; iptables in sync; written by kube-proxy: svcplane would add 9 and remove 2/,
    );
    const j = sink();
    assert.equal(await runDiff({ ...raw, output: 'json' }, j.o, j.e), 0);
    const f = (JSON.parse(j.out) as { families: IpvsFamilyDrift[] }).families[0]!;
    assert.equal(f.layout, 'kube-proxy');
    assert.deepEqual(
      f.takeover.filter((c) => c.effect).map((c) => `${c.op} ${c.kind} ${c.where}`),
      ['add rule filter KUBE-IPVS-FILTER', 'remove real-server -t 192.0.2.1:30081'],
    );
    await run(
      [
        'iptables',
        '-t',
        'nat',
        '-D',
        'KUBE-SERVICES',
        '-m',
        'set',
        '--match-set',
        'KUBE-CLUSTER-IP',
        'dst,dst',
        '-j',
        'ACCEPT',
      ],
      { netns: ns },
    );
    const d = sink();
    assert.equal(await runDiff({ ...raw, output: 'text' }, d.o, d.e), 1, d.out);
    assert.match(d.out, /^-(-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT)$/m);
  });
});
