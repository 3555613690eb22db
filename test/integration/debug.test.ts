import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runDiff } from '../../src/cli/diff.js';
import { loadState } from '../../src/kube/open-source.js';
import { readKernelRules } from '../../src/iptables-rules/families.js';
import { runExplain } from '../../src/cli/explain.js';
import { main } from '../../src/cli/main.js';
import { iptablesProxierConfig } from '../../src/iptables/mode.js';
import { resolveProxyOptions, type ProxyOptions } from '../../src/config/options.js';
import { traceOnNode } from '../../src/cli/trace.js';
import type { FamilyDrift } from '../../src/iptables-rules/compare.js';
import { formatTraceText } from '../../src/debug/trace-format.js';
import type { TraceResult } from '../../src/debug/trace.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { portChainNames } from '../../src/iptables/names.js';
import { peerIP, type EchoReply, type RequestSpec } from '../../src/netns/protocol.js';
import { joinHostPort } from '../../src/model/ip.js';
import type { Where } from '../../src/netns/sandbox.js';
import { run } from '../../src/util/exec.js';
import { svcplaneArgv } from '../support/daemon.js';
import { expectReply, requireRoot, useSandbox } from '../support/sandbox.js';
import { diffRulesets } from '../../src/iptables-rules/compare.js';
import { formatDriftText } from '../../src/debug/diff.js';
import { buildOwnerIndex } from '../../src/iptables-rules/owners.js';
import { jumpRules } from '../../src/iptables-rules/jumps.js';
import { parseIptablesSave } from '../../src/iptables/save-parse.js';
import { render, state } from '../unit/iptables/fixtures.js';
import { KUBE_PROXY_SVC2, svc2, TEST_NODE } from '../unit/debug/kube-proxy-svc2.js';
import { tracePacket } from '../../src/debug/trace.js';

/**
 * svcplane diff / trace / explain against a real node (a sandbox): the proxier converges the node,
 * diff must say "in sync", hand-made drift must be found and attributed to the right Service, and
 * every trace prediction is checked against real traffic (who answered, which peer it saw).
 */

const NODE = 'node-1';
const PORT = 8080;
const UDP_PORT = 5353;
const SCTP_PORT = 7777;
const MASQ_V4 = '10.244.0.1';
const MASQ_V6 = 'fd00:10:244::1';
const OUTSIDE = '192.0.2.2';
const NODE_IP = '192.0.2.1';

interface Capture {
  out: string;
  err: string;
}
const sink = (): Capture & { o: { write(t: string): void }; e: { write(t: string): void } } => {
  const c = {
    out: '',
    err: '',
    o: { write: (t: string) => void (c.out += t) },
    e: { write: (t: string) => void (c.err += t) },
  };
  return c;
};

function service(name: string, spec: Record<string, unknown>, status: Record<string, unknown> = {}): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { selector: { app: name }, ports: [{ protocol: 'TCP', port: 80, targetPort: PORT }], ...spec },
    status: { loadBalancer: status },
  };
}

function slice(name: string, ips: readonly string[], nodeName = NODE): unknown {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${name}-x`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: '', protocol: 'TCP', port: PORT }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName })),
  };
}

interface SliceEndpoint {
  readonly ip: string;
  readonly node?: string;
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating?: boolean;
}

/** An EndpointSlice with per-endpoint nodes and conditions, any family and protocol. */
function sliceOf(
  name: string,
  eps: readonly SliceEndpoint[],
  opts: { family?: 'IPv4' | 'IPv6'; protocol?: string; port?: number } = {},
): unknown {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${name}-${(opts.family ?? 'IPv4').toLowerCase()}`,
      namespace: 'default',
      labels: { 'kubernetes.io/service-name': name },
    },
    addressType: opts.family ?? 'IPv4',
    ports: [{ name: '', protocol: opts.protocol ?? 'TCP', port: opts.port ?? PORT }],
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      conditions: {
        ready: e.ready ?? true,
        ...(e.serving !== undefined ? { serving: e.serving } : {}),
        ...(e.terminating !== undefined ? { terminating: e.terminating } : {}),
      },
      nodeName: e.node ?? NODE,
    })),
  };
}

describe('svcplane diff / trace / explain on a real node', function () {
  this.timeout(60_000);
  const env = useSandbox({
    brNetfilter: true,
    pods: [
      { name: 'a', index: 2, tcpPorts: [PORT], udpPorts: [UDP_PORT] },
      { name: 'b', index: 3, tcpPorts: [PORT], udpPorts: [UDP_PORT] },
      { name: 'client', index: 10 },
    ],
  });
  let dir = '';
  let opts: ProxyOptions;
  let raw: Record<string, unknown>;
  const proxiers: IptablesProxier[] = [];

  before(async function () {
    const sb = env.sb;
    const a = sb.podIP('a');
    const b = sb.podIP('b');
    const objects = [
      {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: NODE },
        status: { addresses: [{ type: 'InternalIP', address: NODE_IP }] },
      },
      service('web', {
        type: 'NodePort',
        clusterIP: '10.96.0.10',
        externalIPs: ['203.0.113.10'],
        ports: [{ protocol: 'TCP', port: 80, targetPort: PORT, nodePort: 30080 }],
      }),
      slice('web', [a, b]),
      service('local', {
        type: 'NodePort',
        clusterIP: '10.96.0.11',
        externalTrafficPolicy: 'Local',
        ports: [{ protocol: 'TCP', port: 80, targetPort: PORT, nodePort: 30081 }],
      }),
      // a is on this node, b "elsewhere": external traffic may only reach a.
      {
        ...(slice('local', [a]) as object),
        endpoints: [
          { addresses: [a], conditions: { ready: true }, nodeName: NODE },
          { addresses: [b], conditions: { ready: true }, nodeName: 'node-2' },
        ],
      },
      service('empty', { clusterIP: '10.96.0.12' }),
      service(
        'lb',
        {
          type: 'LoadBalancer',
          clusterIP: '10.96.0.13',
          loadBalancerSourceRanges: ['203.0.113.0/24'],
          ports: [{ protocol: 'TCP', port: 80, targetPort: PORT, nodePort: 30083 }],
        },
        { ingress: [{ ip: '198.51.100.10' }] },
      ),
      slice('lb', [a, b]),
      service('hp', { clusterIP: '10.96.0.14' }),
      slice('hp', [a]),
      service('sticky', {
        clusterIP: '10.96.0.15',
        sessionAffinity: 'ClientIP',
        sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
      }),
      slice('sticky', [a, b]),
      // iTP=Local: a on this node, b elsewhere; itp-none has only a remote endpoint.
      service('itp', { clusterIP: '10.96.0.16', internalTrafficPolicy: 'Local' }),
      sliceOf('itp', [{ ip: a }, { ip: b, node: 'node-2' }]),
      service('itp-none', { clusterIP: '10.96.0.17', internalTrafficPolicy: 'Local' }),
      sliceOf('itp-none', [{ ip: b, node: 'node-2' }]),
      service('etp-none', {
        type: 'NodePort',
        clusterIP: '10.96.0.18',
        externalTrafficPolicy: 'Local',
        ports: [{ protocol: 'TCP', port: 80, targetPort: PORT, nodePort: 30087 }],
      }),
      sliceOf('etp-none', [{ ip: b, node: 'node-2' }]),
      // No ready endpoint: a is terminating but serving (the fallback), b is terminating, not serving.
      service('term', { clusterIP: '10.96.0.19' }),
      sliceOf('term', [
        { ip: a, ready: false, serving: true, terminating: true },
        { ip: b, ready: false, serving: false, terminating: true },
      ]),
      service('dns', {
        clusterIP: '10.96.0.20',
        ports: [{ protocol: 'UDP', port: 53, targetPort: UDP_PORT }],
      }),
      sliceOf('dns', [{ ip: a }, { ip: b }], { protocol: 'UDP', port: UDP_PORT }),
      service('v6', { clusterIP: 'fd00:10:96::21', clusterIPs: ['fd00:10:96::21'], ipFamilies: ['IPv6'] }),
      sliceOf('v6', [{ ip: sb.podIP('a', 'IPv6') }, { ip: sb.podIP('b', 'IPv6') }], { family: 'IPv6' }),
      service('sctp', {
        clusterIP: '10.96.0.22',
        ports: [{ protocol: 'SCTP', port: SCTP_PORT, targetPort: SCTP_PORT }],
      }),
      sliceOf('sctp', [{ ip: a }], { protocol: 'SCTP', port: SCTP_PORT }),
      service(
        'lb-open',
        {
          type: 'LoadBalancer',
          clusterIP: '10.96.0.23',
          loadBalancerSourceRanges: [`${OUTSIDE}/32`],
          ports: [{ protocol: 'TCP', port: 80, targetPort: PORT, nodePort: 30088 }],
        },
        { ingress: [{ ip: '198.51.100.11' }] },
      ),
      slice('lb-open', [a, b]),
      service(
        'lb-local',
        {
          type: 'LoadBalancer',
          clusterIP: '10.96.0.24',
          externalTrafficPolicy: 'Local',
          healthCheckNodePort: 32024,
          ports: [{ protocol: 'TCP', port: 80, targetPort: PORT, nodePort: 30089 }],
        },
        { ingress: [{ ip: '198.51.100.12' }] },
      ),
      sliceOf('lb-local', [{ ip: a }, { ip: b, node: 'node-2' }]),
    ];
    dir = await mkdtemp(join(tmpdir(), 'svcp-debug-'));
    await writeFile(join(dir, 'objects.json'), JSON.stringify(objects));
    raw = {
      manifests: dir,
      hostnameOverride: NODE,
      clusterCidr: ['10.244.0.0/16', 'fd00:10:244::/64'],
      netns: sb.nodeNs,
    };
    opts = resolveProxyOptions(raw);
    // Many REJECT probes to one client: no ICMP rate limit in the test node.
    await sb.exec('node', [
      'sysctl',
      '-q',
      '-w',
      'net.ipv4.icmp_ratelimit=0',
      'net.ipv4.conf.all.send_redirects=0',
    ]);
    const state = await loadState(opts);
    assert.deepEqual(state.problems, []);
    for (const family of opts.ipFamilies) {
      const p = new IptablesProxier({ ...iptablesProxierConfig(opts, family), netns: sb.nodeNs });
      await p.setup();
      await p.sync(state);
      proxiers.push(p);
    }
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function diffJson(): Promise<{
    code: number;
    inSync: boolean;
    families: FamilyDrift[];
    text: string;
  }> {
    const j = sink();
    const code = await runDiff({ ...raw, output: 'json' }, j.o, j.e);
    assert.equal(j.err.replace(/^note: .*\n/gm, ''), '', 'diff wrote errors');
    const t = sink();
    await runDiff({ ...raw, output: 'text' }, t.o, t.e);
    const parsed = JSON.parse(j.out) as { inSync: boolean; families: FamilyDrift[] };
    return { code, ...parsed, text: t.out };
  }

  async function resync(): Promise<void> {
    const state = await loadState(opts);
    for (const p of proxiers) {
      p.forceFullSync();
      await p.sync(state);
    }
  }

  it('diff: a converged node is in sync (both families), exit 0', async () => {
    const d = await diffJson();
    assert.equal(d.code, 0, d.text);
    assert.equal(d.inSync, true);
    assert.deepEqual(
      d.families.map((f) => [f.family, f.inSync]),
      [
        ['IPv4', true],
        ['IPv6', true],
      ],
    );
    assert.match(d.text, /IPv4: in sync/);
  });

  it('diff: hand-made drift is found and attributed to the right Service, exit 1; a full sync repairs it', async () => {
    const sb = env.sb;
    const ipt = (...args: string[]): Promise<unknown> => sb.exec('node', ['iptables', '-w', ...args]);
    const web = portChainNames('default/web', 'tcp');
    const sepA = web.endpointChain(`${sb.podIP('a')}:${PORT}`);
    // 1. a deleted rule (the SVC chain's second endpoint jump), 2. a changed DNAT target,
    // 3. an extra chain, 4. a missing VIP rule (local's cluster IP) and a missing REJECT (empty),
    // 5. a foreign rule in KUBE-SERVICES.
    await ipt('-t', 'nat', '-D', web.svc, '3');
    await ipt(
      '-t',
      'nat',
      '-R',
      sepA,
      '2',
      '-p',
      'tcp',
      '-m',
      'comment',
      '--comment',
      'default/web',
      '-m',
      'tcp',
      '-j',
      'DNAT',
      '--to-destination',
      '10.244.0.99:8080',
    );
    await ipt('-t', 'nat', '-N', 'KUBE-SEP-ZZZZZZZZZZZZZZZZ');
    await ipt(
      '-t',
      'nat',
      '-D',
      'KUBE-SERVICES',
      '-d',
      '10.96.0.11/32',
      '-p',
      'tcp',
      '-m',
      'comment',
      '--comment',
      'default/local cluster IP',
      '-m',
      'tcp',
      '--dport',
      '80',
      '-j',
      portChainNames('default/local', 'tcp').svc,
    );
    await ipt(
      '-t',
      'filter',
      '-D',
      'KUBE-SERVICES',
      '-d',
      '10.96.0.12/32',
      '-p',
      'tcp',
      '-m',
      'comment',
      '--comment',
      'default/empty has no endpoints',
      '-m',
      'tcp',
      '--dport',
      '80',
      '-j',
      'REJECT',
      '--reject-with',
      'icmp-port-unreachable',
    );
    await ipt('-t', 'nat', '-I', 'KUBE-SERVICES', '1', '-d', '10.96.0.99/32', '-p', 'tcp', '-j', 'ACCEPT');

    const d = await diffJson();
    assert.equal(d.code, 1, d.text);
    const v4 = d.families.find((f) => f.family === 'IPv4');
    assert.ok(v4 && !v4.inSync);
    const group = (spn: string) => v4.groups.find((g) => g.servicePortName === spn);
    const changes = (spn: string, chain: string) =>
      group(spn)
        ?.chains.filter((c) => c.chain === chain)
        .flatMap((c) => c.changes) ?? [];

    const svc = changes('default/web', web.svc);
    assert.deepEqual(
      svc.map((c) => c.op),
      ['missing'],
      JSON.stringify(svc),
    );
    assert.match(svc[0]!.rule, new RegExp(`-j KUBE-SEP-`));

    const sep = group('default/web')?.chains.find((c) => c.chain === sepA);
    assert.equal(sep?.kind, 'SEP');
    assert.equal(sep?.endpoint, `${sb.podIP('a')}:${PORT}`);
    assert.deepEqual(
      sep?.changes.map((c) => [c.op, /--to-destination (\S+)/.exec(c.rule)?.[1]]),
      [
        ['missing', `${sb.podIP('a')}:${PORT}`],
        ['extra', `10.244.0.99:${PORT}`],
      ],
    );

    const stale = v4.groups.flatMap((g) => g.chains).find((c) => c.chain === 'KUBE-SEP-ZZZZZZZZZZZZZZZZ');
    assert.equal(stale?.status, 'stale');

    assert.deepEqual(
      changes('default/local', 'KUBE-SERVICES').map((c) => c.op),
      ['missing'],
    );
    assert.match(changes('default/local', 'KUBE-SERVICES')[0]!.rule, /-d 10\.96\.0\.11\/32/);
    assert.deepEqual(
      changes('default/empty', 'KUBE-SERVICES').map((c) => c.op),
      ['missing'],
    );
    assert.match(changes('default/empty', 'KUBE-SERVICES')[0]!.rule, /REJECT/);

    const node = v4.groups.find((g) => g.key === 'node');
    const foreign = node?.chains.flatMap((c) => c.changes).filter((c) => c.foreign) ?? [];
    assert.deepEqual(
      foreign.map((c) => c.rule),
      ['-A KUBE-SERVICES -d 10.96.0.99/32 -p tcp -j ACCEPT'],
    );
    assert.equal(v4.summary.staleChains, 1);
    assert.equal(v4.summary.foreignRules, 1);
    assert.equal(d.families.find((f) => f.family === 'IPv6')?.inSync, true);
    // The text report groups by Service and ends with the summary.
    assert.match(d.text, /=== IPv4: Service default\/web port 80\/TCP ===/);
    assert.match(
      d.text,
      /\+-A KUBE-SEP-\S+ -p tcp -m comment --comment default\/web -m tcp -j DNAT --to-destination 10\.244\.0\.99:8080|\+-A KUBE-SEP-\S+ -p tcp -m comment --comment default\/web -j DNAT --to-destination 10\.244\.0\.99:8080/,
    );
    assert.match(d.text, /Summary:\n {2}IPv4: DRIFT: /);

    await resync();
    const again = await diffJson();
    assert.equal(again.code, 0, again.text);
  });

  it('diff: a missing jump rule from a built-in chain is reported', async () => {
    await env.sb.exec('node', [
      'iptables',
      '-w',
      '-t',
      'nat',
      '-D',
      'PREROUTING',
      '-m',
      'comment',
      '--comment',
      'kubernetes service portals',
      '-j',
      'KUBE-SERVICES',
    ]);
    const d = await diffJson();
    assert.equal(d.code, 1);
    const v4 = d.families.find((f) => f.family === 'IPv4');
    assert.deepEqual(
      v4?.missingJumps.map((j) => `${j.table}/${j.chain}->${j.target}`),
      ['nat/PREROUTING->KUBE-SERVICES'],
    );
    await resync();
    assert.equal((await diffJson()).code, 0);
  });

  // ---- trace, checked against real traffic ----

  async function trace(
    src: string,
    dst: string,
    dport: number,
    extra: { fromNode?: boolean; proto?: 'tcp' | 'udp' | 'sctp' } = {},
  ): Promise<TraceResult> {
    const r = await traceOnNode(
      { src, dst, dport, proto: 'tcp', iptablesBinary: 'iptables', netns: env.sb.nodeNs, ...extra },
      dst.includes(':') ? 'IPv6' : 'IPv4',
    );
    assert.deepEqual(r.trace.unsupported, [], 'every match was evaluated');
    return r.trace;
  }

  /**
   * Real connections from `from` agree with the trace: for dnat every answer comes from a predicted
   * endpoint, every predicted endpoint answers (within `max` tries) and the backend sees the node's
   * bridge address (masquerade) or `client`; reject is refused, drop times out.
   */
  async function agrees(
    from: Where,
    req: RequestSpec,
    t: TraceResult,
    client: string,
    max = 30,
  ): Promise<EchoReply[]> {
    if (t.verdict !== 'dnat') {
      const r = await env.sb.request(from, { timeoutMs: 600, ...req });
      const want = t.verdict === 'reject' ? 'refused' : t.verdict === 'drop' ? 'timeout' : 'answered';
      assert.equal(r.ok ? 'answered' : r.error, want, `${t.verdict} predicted`);
      return [];
    }
    const masq = req.ip.includes(':') ? MASQ_V6 : MASQ_V4;
    const predicted = new Map(t.endpoints.map((e) => [e.endpoint, e]));
    const seen = new Set<string>();
    const replies: EchoReply[] = [];
    for (let i = 0; i < max && seen.size < predicted.size; i++) {
      const r = await env.sb.request(from, req);
      if (!r.ok) assert.fail(`${from} -> ${req.ip}:${req.port}: ${r.error} ${r.detail}`);
      const at = joinHostPort(r.reply.ip, r.reply.port);
      const e = predicted.get(at);
      assert.ok(e, `${at} answered, predicted ${[...predicted.keys()].join(', ')}`);
      assert.equal(
        peerIP(r.reply.peer),
        e.masquerade ? masq : client,
        `masquerade ${e.masquerade} predicted`,
      );
      seen.add(at);
      replies.push(r.reply);
    }
    assert.deepEqual([...seen].sort(), [...predicted.keys()].sort());
    return replies;
  }

  /** Requests until every pod in `until` answered (or `max`); returns replies. */
  async function probe(from: Where, req: RequestSpec, until: readonly string[], max = 30) {
    const replies = [];
    const seen = new Set<string>();
    for (let i = 0; i < max && !until.every((p) => seen.has(p)); i++) {
      const r = await env.sb.request(from, req);
      if (!r.ok) assert.fail(`${from} -> ${req.ip}:${req.port}: ${r.error} ${r.detail}`);
      seen.add(r.reply.pod);
      replies.push(r.reply);
    }
    assert.deepEqual([...seen].sort(), [...until].sort());
    return replies;
  }

  const ep = (pod: string): string => `${env.sb.podIP(pod)}:${PORT}`;

  it('trace ClusterIP from a pod: both endpoints at 50%, no masquerade; real requests land on them', async () => {
    const sb = env.sb;
    const t = await trace(sb.podIP('client'), '10.96.0.10', 80);
    assert.equal(t.verdict, 'dnat');
    assert.equal(t.service, 'default/web');
    assert.deepEqual(
      t.endpoints.map((e) => [e.endpoint, e.probability]),
      [
        [ep('a'), 0.5],
        [ep('b'), 0.5],
      ],
    );
    assert.equal(t.masquerade, false);
    // 40 new connections: every one lands on a predicted endpoint, unmasqueraded, and the split
    // matches 50/50 (outside 8..32 of 40 has a chance of about 1e-5 for a fair coin).
    const predicted = new Set(t.endpoints.map((e) => e.endpoint));
    const hits = new Map<string, number>();
    for (let i = 0; i < 40; i++) {
      const r = await sb.request('client', { proto: 'tcp', ip: '10.96.0.10', port: 80 });
      if (!r.ok) assert.fail(`request ${i}: ${r.error} ${r.detail}`);
      const at = `${r.reply.ip}:${r.reply.port}`;
      assert.ok(predicted.has(at), `${at} was not predicted`);
      assert.equal(peerIP(r.reply.peer), sb.podIP('client'), 'not masqueraded, as predicted');
      hits.set(at, (hits.get(at) ?? 0) + 1);
    }
    for (const e of t.endpoints) {
      const n = hits.get(e.endpoint) ?? 0;
      assert.ok(n >= 8 && n <= 32, `${e.endpoint}: ${n} of 40 for a predicted ${e.probability}`);
    }
    const text = formatTraceText(
      {
        family: 'IPv4',
        src: sb.podIP('client'),
        dst: '10.96.0.10',
        proto: 'tcp',
        dport: 80,
        fromNode: false,
      },
      t,
    );
    assert.match(text, /^Verdict: {4}dnat/m);
    assert.match(text, /^Service: {4}default\/web$/m);
    assert.match(text, /50\.0% +masquerade no/);
  });

  it('trace NodePort from outside: masquerade yes; the backend really sees the node as peer', async () => {
    const t = await trace(OUTSIDE, NODE_IP, 30080);
    assert.equal(t.verdict, 'dnat');
    assert.equal(t.masquerade, true);
    assert.match(t.masqueradeReason, /marked by nat KUBE-EXT-\S+ rule 1/);
    assert.deepEqual(
      t.endpoints.map((e) => e.endpoint),
      [ep('a'), ep('b')],
    );
    for (const reply of await probe('outside', { proto: 'tcp', ip: NODE_IP, port: 30080 }, ['a', 'b'])) {
      assert.equal(peerIP(reply.peer), MASQ_V4);
    }
  });

  it('trace eTP=Local NodePort from outside: only the local endpoint, no masquerade (client IP kept)', async () => {
    const t = await trace(OUTSIDE, NODE_IP, 30081);
    assert.equal(t.service, 'default/local');
    assert.deepEqual(
      t.endpoints.map((e) => [e.endpoint, e.probability, e.masquerade]),
      [[ep('a'), 1, false]],
    );
    assert.equal(t.masquerade, false);
    for (const reply of await probe('outside', { proto: 'tcp', ip: NODE_IP, port: 30081 }, ['a'], 6)) {
      assert.equal(peerIP(reply.peer), OUTSIDE);
    }
  });

  it('trace a Service without endpoints: reject; a real request is refused', async () => {
    const t = await trace(env.sb.podIP('client'), '10.96.0.12', 80);
    assert.equal(t.verdict, 'reject');
    assert.equal(t.service, 'default/empty');
    assert.deepEqual(t.endpoints, []);
    const r = await env.sb.request('client', { proto: 'tcp', ip: '10.96.0.12', port: 80 });
    assert.equal(r.ok ? 'answered' : r.error, 'refused');
  });

  it('trace a LoadBalancer IP from outside the source ranges: drop; a real request times out', async () => {
    const t = await trace(OUTSIDE, '198.51.100.10', 80);
    assert.equal(t.verdict, 'drop');
    assert.equal(t.service, 'default/lb');
    assert.ok(t.path.some((s) => s.chain === 'KUBE-PROXY-FIREWALL' && s.action === 'DROP'));
    const r = await env.sb.request('outside', {
      proto: 'tcp',
      ip: '198.51.100.10',
      port: 80,
      timeoutMs: 600,
    });
    assert.equal(r.ok ? 'answered' : r.error, 'timeout');
  });

  it('trace an externalIP from outside: DNAT to both endpoints, masqueraded; real requests agree', async () => {
    const t = await trace(OUTSIDE, '203.0.113.10', 80);
    assert.equal(t.verdict, 'dnat');
    assert.equal(t.masquerade, true);
    assert.deepEqual(
      t.endpoints.map((e) => e.endpoint),
      [ep('a'), ep('b')],
    );
    for (const reply of await probe('outside', { proto: 'tcp', ip: '203.0.113.10', port: 80 }, ['a', 'b'])) {
      assert.equal(peerIP(reply.peer), MASQ_V4);
    }
  });

  it('trace hairpin (a pod to its own Service): masquerade by the SEP rule; the pod sees the node, not itself', async () => {
    const sb = env.sb;
    const t = await trace(sb.podIP('a'), '10.96.0.14', 80);
    assert.deepEqual(
      t.endpoints.map((e) => [e.endpoint, e.masquerade]),
      [[ep('a'), true]],
    );
    assert.match(t.masqueradeReason, /marked by nat KUBE-SEP-\S+ rule 1: .* -s 10\.244\.0\.2\/32/);
    const [reply] = await probe('a', { proto: 'tcp', ip: '10.96.0.14', port: 80 }, ['a'], 3);
    assert.equal(peerIP(reply!.peer), MASQ_V4);
  });

  it('trace from the node itself (OUTPUT) to a ClusterIP: both endpoints, masqueraded; real connections agree', async () => {
    const t = await trace(NODE_IP, '10.96.0.10', 80);
    assert.equal(t.path[0]?.chain, 'OUTPUT');
    assert.deepEqual(
      [t.verdict, t.masquerade, t.endpoints.map((e) => e.endpoint)],
      ['dnat', true, [ep('a'), ep('b')]],
    );
    await agrees('node', { proto: 'tcp', ip: '10.96.0.10', port: 80 }, t, NODE_IP);
  });

  it('trace ClusterIP from outside via the node: masqueraded (source outside --cluster-cidr); real connections agree', async () => {
    const t = await trace(OUTSIDE, '10.96.0.10', 80);
    assert.deepEqual([t.verdict, t.masquerade], ['dnat', true]);
    assert.match(t.masqueradeReason, /marked by nat KUBE-SVC-\S+ rule 1: .*! -s 10\.244\.0\.0\/16/);
    await agrees('outside', { proto: 'tcp', ip: '10.96.0.10', port: 80 }, t, OUTSIDE);
  });

  it('trace session affinity: after a first connection the trace reads xt_recent and predicts the sticky endpoint', async () => {
    const sb = env.sb;
    const client = sb.podIP('client');
    const first = await trace(client, '10.96.0.15', 80);
    assert.equal(first.service, 'default/sticky');
    assert.deepEqual(
      first.endpoints.map((e) => [e.endpoint, e.probability]),
      [
        [ep('a'), 0.5],
        [ep('b'), 0.5],
      ],
    );
    assert.equal(first.affinity.length, 2);
    assert.ok(
      first.affinity.every((a) => a.clientListed === false && a.seconds === 600),
      JSON.stringify(first.affinity),
    );
    // A first connection lands on one of the predicted endpoints, which records the client.
    const r0 = expectReply(await sb.request('client', { proto: 'tcp', ip: '10.96.0.15', port: 80 }));
    assert.equal(peerIP(r0.peer), client, 'not masqueraded, as predicted');
    const stuck = joinHostPort(r0.ip, r0.port);
    assert.ok(
      first.endpoints.some((e) => e.endpoint === stuck),
      stuck,
    );
    const again = await trace(client, '10.96.0.15', 80);
    assert.deepEqual(
      again.endpoints.map((e) => [e.endpoint, e.probability]),
      [[stuck, 1]],
    );
    assert.deepEqual(
      again.affinity.filter((a) => a.clientListed === true).length,
      1,
      JSON.stringify(again.affinity),
    );
    const text = formatTraceText(
      { family: 'IPv4', src: client, dst: '10.96.0.15', proto: 'tcp', dport: 80, fromNode: false },
      again,
    );
    console.log(
      `      svcplane trace (session affinity, returning client):\n${text.replace(/^/gm, '        ')}`,
    );
    assert.match(
      text,
      /the client has an entry in KUBE-SEP-\S+ \(age not checked\), so it sticks to that endpoint/,
    );
    // The next connections all go where the trace said.
    for (let i = 0; i < 4; i++) {
      const r = expectReply(await sb.request('client', { proto: 'tcp', ip: '10.96.0.15', port: 80 }));
      assert.equal(joinHostPort(r.ip, r.port), stuck);
    }
  });

  it('trace iTP=Local: the local endpoint only; with no local endpoint: drop; real connections agree', async () => {
    const client = env.sb.podIP('client');
    const t = await trace(client, '10.96.0.16', 80);
    assert.deepEqual(
      [t.verdict, t.service, t.masquerade, t.endpoints.map((e) => e.endpoint)],
      ['dnat', 'default/itp', false, [ep('a')]],
    );
    await agrees('client', { proto: 'tcp', ip: '10.96.0.16', port: 80 }, t, client, 6);
    const none = await trace(client, '10.96.0.17', 80);
    assert.deepEqual([none.verdict, none.service, none.endpoints], ['drop', 'default/itp-none', []]);
    await agrees('client', { proto: 'tcp', ip: '10.96.0.17', port: 80 }, none, client);
  });

  it('trace eTP=Local NodePort without local endpoints from outside: drop; a real connection times out', async () => {
    const t = await trace(OUTSIDE, NODE_IP, 30087);
    assert.deepEqual([t.verdict, t.service], ['drop', 'default/etp-none']);
    await agrees('outside', { proto: 'tcp', ip: NODE_IP, port: 30087 }, t, OUTSIDE);
  });

  it('trace terminating fallback: only the serving terminating endpoint; real connections agree', async () => {
    const client = env.sb.podIP('client');
    const t = await trace(client, '10.96.0.19', 80);
    assert.deepEqual(
      [t.verdict, t.service, t.endpoints.map((e) => [e.endpoint, e.probability])],
      ['dnat', 'default/term', [[ep('a'), 1]]],
    );
    await agrees('client', { proto: 'tcp', ip: '10.96.0.19', port: 80 }, t, client, 6);
  });

  it('trace UDP ClusterIP: both endpoints, no masquerade; real datagrams agree', async () => {
    const client = env.sb.podIP('client');
    const t = await trace(client, '10.96.0.20', 53, { proto: 'udp' });
    assert.deepEqual(
      [t.verdict, t.service, t.masquerade, t.endpoints.map((e) => e.endpoint)],
      [
        'dnat',
        'default/dns',
        false,
        [`${env.sb.podIP('a')}:${UDP_PORT}`, `${env.sb.podIP('b')}:${UDP_PORT}`],
      ],
    );
    await agrees('client', { proto: 'udp', ip: '10.96.0.20', port: 53 }, t, client);
  });

  it('trace IPv6 ClusterIP from a pod: [ip]:port endpoints, no masquerade; real connections agree', async () => {
    const client = env.sb.podIP('client', 'IPv6');
    const t = await trace(client, 'fd00:10:96::21', 80);
    assert.deepEqual(
      [t.verdict, t.service, t.masquerade, t.endpoints.map((e) => e.endpoint)],
      [
        'dnat',
        'default/v6',
        false,
        [`[${env.sb.podIP('a', 'IPv6')}]:${PORT}`, `[${env.sb.podIP('b', 'IPv6')}]:${PORT}`],
      ],
    );
    await agrees('client', { proto: 'tcp', ip: 'fd00:10:96::21', port: 80 }, t, client);
  });

  it('trace SCTP ClusterIP (trace only: this kernel has no SCTP sockets, so no real association can be made)', async () => {
    const t = await trace(env.sb.podIP('client'), '10.96.0.22', SCTP_PORT, { proto: 'sctp' });
    assert.deepEqual(
      [t.verdict, t.service, t.endpoints.map((e) => e.endpoint)],
      ['dnat', 'default/sctp', [`${env.sb.podIP('a')}:${SCTP_PORT}`]],
    );
    // The same packet as TCP is not this Service's.
    assert.equal((await trace(env.sb.podIP('client'), '10.96.0.22', SCTP_PORT)).verdict, 'untouched');
  });

  it('trace LB allowed source and eTP=Local LB from outside; real connections agree', async () => {
    const open = await trace(OUTSIDE, '198.51.100.11', 80);
    assert.deepEqual(
      [open.verdict, open.service, open.masquerade, open.endpoints.length],
      ['dnat', 'default/lb-open', true, 2],
    );
    await agrees('outside', { proto: 'tcp', ip: '198.51.100.11', port: 80 }, open, OUTSIDE);
    const local = await trace(OUTSIDE, '198.51.100.12', 80);
    assert.deepEqual(
      [local.verdict, local.service, local.masquerade, local.endpoints.map((e) => e.endpoint)],
      ['dnat', 'default/lb-local', false, [ep('a')]],
    );
    await agrees('outside', { proto: 'tcp', ip: '198.51.100.12', port: 80 }, local, OUTSIDE, 6);
  });

  it('trace localhost NodePort (127.0.0.1:nodePort from the node): masqueraded; real connections agree', async () => {
    const t = await trace('127.0.0.1', '127.0.0.1', 30080);
    assert.deepEqual(
      [t.verdict, t.service, t.masquerade, t.endpoints.map((e) => e.endpoint)],
      ['dnat', 'default/web', true, [ep('a'), ep('b')]],
    );
    await agrees('node', { proto: 'tcp', ip: '127.0.0.1', port: 30080 }, t, '127.0.0.1');
  });

  it('explain: endpoints by category, kernel rules with counters, warnings', async () => {
    const c = sink();
    const code = await runExplain('default/local', { ...raw, output: 'json' }, c.o, c.e);
    assert.equal(code, 0, c.err);
    const r = JSON.parse(c.out) as {
      found: boolean;
      ports: {
        family: string;
        endpoints: { endpoint: string; local: boolean; usedFor: string[] }[];
        chains: { chain: string; rules: { packets?: number }[] }[];
        dispatch: unknown[];
      }[];
      warnings: string[];
    };
    assert.equal(r.found, true);
    const v4 = r.ports.find((p) => p.family === 'IPv4');
    assert.deepEqual(
      v4?.endpoints.map((e) => [e.endpoint, e.local, e.usedFor.join('+')]),
      [
        [ep('a'), true, 'cluster+local'],
        [ep('b'), false, 'cluster'],
      ],
    );
    const svl = v4?.chains.find((ch) => ch.chain === portChainNames('default/local', 'tcp').svl);
    assert.ok(svl, 'SVL chain shown');
    // The eTP=Local requests of the previous test went through the SVL chain: counted.
    assert.ok((svl.rules[0]?.packets ?? 0) > 0, JSON.stringify(svl));
    assert.ok((v4?.dispatch.length ?? 0) >= 2);

    const e = sink();
    assert.equal(await runExplain('default/empty', { ...raw, output: 'text' }, e.o, e.e), 0);
    assert.match(e.out, /no usable endpoints: every frontend REJECTs/);
    const t = sink();
    assert.equal(await runExplain('default/web', { ...raw, output: 'text' }, t.o, t.e), 0);
    assert.match(t.out, /^Port default\/web 80\/TCP nodePort 30080 -> 8080 \[IPv4\]$/m);
    assert.match(t.out, /^ {2}Chain nat KUBE-SVC-\S+: cluster-policy endpoints \(SVC\)$/m);
    assert.match(
      t.out,
      /^ {4}\[\d+ \d+\] +-A KUBE-SEP-\S+ -p tcp .*DNAT --to-destination 10\.244\.0\.2:8080$/m,
    );
    const n = sink();
    assert.equal(await runExplain('default/nope', { ...raw }, n.o, n.e), 2);
  });

  it('the real CLI: diff exits 0 in sync and 2 on error, trace --output json gives verdict/endpoints/masquerade/service', async () => {
    const cli = (args: string[]) => run(svcplaneArgv(args), { allowFailure: true, timeoutMs: 30_000 });
    const d = await cli([
      'diff',
      '--manifests',
      dir,
      '--hostname-override',
      NODE,
      '--cluster-cidr',
      '10.244.0.0/16,fd00:10:244::/64',
      '--netns',
      env.sb.nodeNs,
    ]);
    assert.equal(d.exitCode, 0, d.stdout + d.stderr);
    // An error (here: the node to inspect does not exist) is exit 2, with the reason on stderr.
    const gone = await cli([
      'diff',
      '--manifests',
      dir,
      '--hostname-override',
      NODE,
      '--netns',
      `${env.sb.nodeNs}-gone`,
    ]);
    assert.equal(gone.exitCode, 2, gone.stdout + gone.stderr);
    assert.match(gone.stderr, /^svcplane diff: .*-gone/m);
    assert.equal(gone.stdout, '');
    const t = await cli([
      'trace',
      '--src',
      OUTSIDE,
      '--dst',
      NODE_IP,
      '--dport',
      '30080',
      '--proto',
      'tcp',
      '--output',
      'json',
      '--netns',
      env.sb.nodeNs,
    ]);
    assert.equal(t.exitCode, 0, t.stderr);
    const j = JSON.parse(t.stdout) as {
      verdict: string;
      endpoints: { endpoint: string; probability: number }[];
      masquerade: boolean;
      service: string;
    };
    assert.deepEqual(
      {
        verdict: j.verdict,
        masquerade: j.masquerade,
        service: j.service,
        endpoints: j.endpoints.map((e) => [e.endpoint, e.probability]),
      },
      {
        verdict: 'dnat',
        masquerade: true,
        service: 'default/web',
        endpoints: [
          [ep('a'), 0.5],
          [ep('b'), 0.5],
        ],
      },
    );
    // Usage errors exit 2 (in-process: no third node start).
    const stderr = process.stderr.write.bind(process.stderr);
    process.stderr.write = () => true;
    try {
      assert.equal(
        await main(['node', 'svcplane', 'trace', '--src', 'nope', '--dst', NODE_IP, '--dport', '1']),
        2,
      );
      assert.equal(await main(['node', 'svcplane', 'diff', '--output', 'yaml']), 2);
    } finally {
      process.stderr.write = stderr;
    }
  });
  it('trace --masquerade-all: a pod to a ClusterIP is masqueraded; real connections agree', async () => {
    const all = resolveProxyOptions({ ...raw, masqueradeAll: true });
    const p = new IptablesProxier({ ...iptablesProxierConfig(all, 'IPv4'), netns: env.sb.nodeNs });
    try {
      await p.setup();
      p.forceFullSync();
      await p.sync(await loadState(all));
      const client = env.sb.podIP('client');
      const t = await trace(client, '10.96.0.10', 80);
      assert.deepEqual([t.verdict, t.masquerade], ['dnat', true]);
      assert.match(
        t.masqueradeReason,
        /marked by nat KUBE-SVC-\S+ rule 1: -A KUBE-SVC-\S+ -d 10\.96\.0\.10\/32/,
      );
      await agrees('client', { proto: 'tcp', ip: '10.96.0.10', port: 80 }, t, client);
    } finally {
      await resync();
    }
    // Back to the normal rules: not masqueraded again.
    assert.equal((await trace(env.sb.podIP('client'), '10.96.0.10', 80)).masquerade, false);
  });
});

describe('svcplane diff / trace on rules written by kube-proxy (a private netns)', function () {
  this.timeout(30_000);
  const ns = `svcp-dbg${randomBytes(3).toString('hex')}`;
  before(async function () {
    requireRoot(this);
    await run(['ip', 'netns', 'add', ns]);
    // kube-proxy's ns2/svc2 reference rules, through the real iptables-restore and iptables-save.
    // kube-proxy adds the nfacct matches only when its counters exist; this netns has none.
    const input = KUBE_PROXY_SVC2.replace(/ -m nfacct --nfacct-name \S+/g, '');
    await run(['iptables-restore', '--noflush'], { netns: ns, input });
  });
  after(async () => {
    await run(['ip', 'netns', 'del', ns], { allowFailure: true });
  });

  it("trace reads kube-proxy's layout through iptables-save: pod short-circuit and external DROP", async () => {
    const ruleset = await readKernelRules({ iptablesBinary: 'iptables' }, 'IPv4', ns);
    assert.ok(ruleset);
    const at = (src: string) =>
      tracePacket({
        ruleset,
        node: TEST_NODE,
        packet: { family: 'IPv4', src, dst: '1.2.3.4', proto: 'tcp', dport: 80, fromNode: false },
      });
    const pod = at('10.0.0.2');
    assert.deepEqual(
      [pod.verdict, pod.endpoints.map((e) => e.endpoint), pod.masquerade, pod.service],
      ['dnat', ['10.180.0.2:80'], false, 'ns2/svc2:p80'],
    );
    assert.equal(at('203.0.113.1').verdict, 'drop');
  });

  it('diff is in sync with the same state rendered by svcplane; a deleted kube-proxy rule is drift', async () => {
    const actual = await readKernelRules({ iptablesBinary: 'iptables' }, 'IPv4', ns);
    assert.ok(actual);
    const input = {
      family: 'IPv4' as const,
      desired: parseIptablesSave(render([svc2]).restoreInput),
      owners: buildOwnerIndex(state(svc2)),
      jumps: jumpRules('IPv4', { localhostNodePorts: true }),
    };
    const r = diffRulesets({ ...input, actual });
    assert.equal(r.inSync, true, formatDriftText([r]));
    await run(['iptables', '-t', 'nat', '-F', 'KUBE-SVC-GNZBNJ2PO5MGZ6GT'], { netns: ns });
    const drifted = diffRulesets({
      ...input,
      actual: (await readKernelRules({ iptablesBinary: 'iptables' }, 'IPv4', ns))!,
    });
    assert.deepEqual(
      drifted.groups.map((g) => [g.servicePortName, g.chains.map((c) => c.chain)]),
      [['ns2/svc2:p80', ['KUBE-SVC-GNZBNJ2PO5MGZ6GT']]],
    );
    assert.equal(drifted.summary.missingRules, 2);
  });
});
