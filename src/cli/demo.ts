import { join } from 'node:path';
import type { Command } from 'commander';
import { parseIptablesSave, ruleComment } from '../iptables/save-parse.js';
import { Sandbox } from '../netns/sandbox.js';
import type { ProbeResult, RequestSpec } from '../netns/protocol.js';
import { startProcess, type ChildHandle } from '../util/exec.js';
import { packageRoot } from '../util/paths.js';

/**
 * `svcplane demo` (what `npm start` runs): a sandbox node with pods, svcplane running inside the
 * node namespace on the manifests in examples/, real requests, a table of who answered, teardown.
 */

interface DemoPod {
  readonly name: string;
  readonly index: number;
  readonly tcp: readonly number[];
  readonly udp?: readonly number[];
}

/** The pods the example manifests point at (examples/*.yaml). */
export const DEMO_PODS: readonly DemoPod[] = [
  { name: 'pod-a', index: 2, tcp: [9376, 8080, 8443] },
  { name: 'pod-b', index: 3, tcp: [9376, 8080, 8443] },
  { name: 'db', index: 4, tcp: [5432] },
  { name: 'redis', index: 5, tcp: [6379, 6380] },
  { name: 'dns', index: 6, tcp: [53], udp: [53] },
  { name: 'client', index: 10, tcp: [] },
];

/**
 * What kube-proxy gives for a probe of the examples, checked by the demo (it fails otherwise):
 * `backends` are the pods behind the Service; `spread` 'all' means every one of them answers (a
 * balanced Service), 'one' that a single one answers every request (ClientIP affinity); `masquerade`
 * whether the backend sees the node (its pod-network address) instead of the client.
 */
export interface DemoExpectation {
  readonly backends: readonly string[];
  readonly spread: 'all' | 'one';
  readonly masquerade: boolean;
}

export interface DemoProbe {
  readonly service: string;
  readonly from: string;
  readonly req: RequestSpec;
  /** Requests sent at least; a balanced Service gets more (up to MAX_BALANCED_REQUESTS) until every backend answered. */
  readonly times: number;
  readonly expect: DemoExpectation;
}

/** A balanced Service of two backends misses one of them in 24 random picks with probability 2^-23. */
export const MAX_BALANCED_REQUESTS = 24;

const BOTH = ['pod-a', 'pod-b'];
const balanced = (masquerade = false): DemoExpectation => ({ backends: BOTH, spread: 'all', masquerade });
const only = (pod: string): DemoExpectation => ({ backends: [pod], spread: 'all', masquerade: false });

export const DEMO_PROBES: readonly DemoProbe[] = [
  {
    service: 'default/hello (ClusterIP)',
    from: 'client',
    req: { proto: 'tcp', ip: '10.96.0.10', port: 80 },
    times: 4,
    expect: balanced(),
  },
  {
    service: 'default/external-db (Endpoints, no selector)',
    from: 'client',
    req: { proto: 'tcp', ip: '10.96.0.11', port: 5432 },
    times: 1,
    expect: only('db'),
  },
  {
    service: 'default/redis',
    from: 'client',
    req: { proto: 'tcp', ip: '10.97.97.97', port: 6379 },
    times: 1,
    expect: only('redis'),
  },
  {
    service: 'default/web-nodeport (NodePort)',
    from: 'outside',
    req: { proto: 'tcp', ip: '192.0.2.1', port: 30080 },
    times: 3,
    expect: balanced(true),
  },
  {
    service: 'default/sticky (ClientIP affinity)',
    from: 'client',
    req: { proto: 'tcp', ip: '10.96.0.13', port: 80 },
    times: 4,
    expect: { backends: BOTH, spread: 'one', masquerade: false },
  },
  {
    service: 'default/multi:http',
    from: 'client',
    req: { proto: 'tcp', ip: '10.96.0.14', port: 80 },
    times: 2,
    expect: balanced(),
  },
  {
    service: 'default/multi:https',
    from: 'client',
    req: { proto: 'tcp', ip: '10.96.0.14', port: 443 },
    times: 2,
    expect: balanced(),
  },
  {
    service: 'default/extip (externalIPs)',
    from: 'outside',
    req: { proto: 'tcp', ip: '203.0.113.10', port: 80 },
    times: 2,
    expect: balanced(true),
  },
  {
    service: 'kube-system/dns:dns (UDP)',
    from: 'client',
    req: { proto: 'udp', ip: '10.96.0.53', port: 53 },
    times: 2,
    expect: only('dns'),
  },
  {
    service: 'kube-system/dns:dns-tcp',
    from: 'client',
    req: { proto: 'tcp', ip: '10.96.0.53', port: 53 },
    times: 1,
    expect: only('dns'),
  },
];

export interface DemoRow {
  readonly service: string;
  readonly frontend: string;
  readonly from: string;
  readonly answers: readonly string[];
  /** Source addresses the backends saw, each with what it is ("client" or "node: masqueraded"). */
  readonly peers: readonly string[];
  /** Where the row differs from what kube-proxy gives (empty: as expected). */
  readonly problems: readonly string[];
}

/** Addresses a backend may see: the requester's own, or the node's pod-network address (masquerade). */
export interface DemoAddresses {
  /** The address of each requester (`client` pod, `outside`). */
  readonly requester: Readonly<Record<string, string>>;
  /** What masqueraded traffic comes from: the node's address on the pod network (cbr0). */
  readonly masquerade: string;
}

const hostOf = (peer: string): string => peer.replace(/^\[?(.*?)\]?:\d+$/, '$1');

/** What the backends' answers say against the probe's expectation, one sentence per deviation. */
export function checkProbe(
  probe: DemoProbe,
  results: readonly ProbeResult[],
  addrs: DemoAddresses,
): string[] {
  const problems: string[] = [];
  const failed = results.filter((r) => !r.ok).length;
  if (failed > 0) problems.push(`${failed} of ${results.length} requests not answered`);
  const ok = results.flatMap((r) => (r.ok ? [r.reply] : []));
  const pods = [...new Set(ok.map((r) => r.pod))].sort();
  const stray = pods.filter((p) => !probe.expect.backends.includes(p));
  if (stray.length > 0) problems.push(`answered by ${stray.join(', ')}, not a backend of this Service`);
  const want = [...probe.expect.backends].sort();
  if (probe.expect.spread === 'all' && stray.length === 0 && pods.join() !== want.join() && ok.length > 0)
    problems.push(`expected answers from ${want.join(' and ')}, got ${pods.join(', ')} only`);
  if (probe.expect.spread === 'one' && pods.length > 1)
    problems.push(`ClientIP affinity: one backend expected, got ${pods.join(' and ')}`);
  const client = addrs.requester[probe.from];
  const want4 = probe.expect.masquerade ? addrs.masquerade : client;
  const seen = [...new Set(ok.map((r) => hostOf(r.peer)))];
  const wrong = seen.filter((p) => p !== want4);
  if (wrong.length > 0)
    problems.push(
      probe.expect.masquerade
        ? `not masqueraded: the backend saw ${wrong.join(', ')}, kube-proxy gives the node (${addrs.masquerade})`
        : `masqueraded: the backend saw ${wrong.join(', ')}, kube-proxy keeps the client's ${client ?? '?'}`,
    );
  return problems;
}

export function summarizeProbe(
  probe: DemoProbe,
  results: readonly ProbeResult[],
  addrs: DemoAddresses,
): DemoRow {
  const answers = results.map((r) =>
    r.ok ? `${r.reply.pod} ${r.reply.ip}:${r.reply.port}` : `✗ ${r.error}`,
  );
  const peers = [...new Set(results.flatMap((r) => (r.ok ? [hostOf(r.reply.peer)] : [])))].map((p) =>
    p === addrs.masquerade
      ? `${p} (node: masqueraded)`
      : p === addrs.requester[probe.from]
        ? `${p} (client)`
        : p,
  );
  const ip = probe.req.ip.includes(':') ? `[${probe.req.ip}]` : probe.req.ip;
  return {
    service: probe.service,
    frontend: `${ip}:${probe.req.port}/${probe.req.proto}`,
    from: probe.from,
    answers,
    peers,
    problems: checkProbe(probe, results, addrs),
  };
}

/** Sends the probe's requests; a balanced Service gets more until every backend answered. */
export async function runProbe(
  probe: DemoProbe,
  request: (from: string, req: RequestSpec) => Promise<ProbeResult>,
): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  const balanced = probe.expect.spread === 'all' && probe.expect.backends.length > 1;
  const seen = new Set<string>();
  for (let i = 0; i < (balanced ? MAX_BALANCED_REQUESTS : probe.times); i++) {
    if (balanced && i >= probe.times && probe.expect.backends.every((b) => seen.has(b))) break;
    const r = await request(probe.from, probe.req);
    if (r.ok) seen.add(r.reply.pod);
    results.push(r);
  }
  return results;
}

export function formatTable(rows: readonly DemoRow[]): string {
  const header = [
    'Service',
    'frontend',
    'from',
    'answered by (each request)',
    'source seen by backend',
    'as kube-proxy',
  ];
  const body = rows.map((r) => [
    r.service,
    r.frontend,
    r.from,
    countAnswers(r.answers),
    r.peers.join(', ') || '-',
    r.problems.length === 0 ? '✓' : `✗ ${r.problems.join('; ')}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

function countAnswers(answers: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const a of answers) counts.set(a, (counts.get(a) ?? 0) + 1);
  return [...counts].map(([a, n]) => (n > 1 ? `${a} ×${n}` : a)).join(', ');
}

/**
 * The seeds' NetworkPolicy (examples/network-policy.yaml: redis is role=db, client role=frontend,
 * pod-b in namespace myproject, pod-a role=backend), each connection checked: what the policy allows
 * must be answered by that pod, what it does not must fail.
 */
export interface PolicyProbe {
  readonly from: string;
  /** Who the requester is, as the policy sees it. */
  readonly fromWhat: string;
  readonly to: string;
  readonly port: number;
  readonly allowed: boolean;
  readonly why: string;
}

export const POLICY_PROBES: readonly PolicyProbe[] = [
  {
    from: 'client',
    fromWhat: 'default, role=frontend',
    to: 'redis',
    port: 6379,
    allowed: true,
    why: 'ingress: pods role=frontend, TCP 6379',
  },
  {
    from: 'pod-b',
    fromWhat: 'namespace myproject',
    to: 'redis',
    port: 6379,
    allowed: true,
    why: 'ingress: namespaces project=myproject',
  },
  {
    from: 'pod-a',
    fromWhat: 'default, role=backend',
    to: 'redis',
    port: 6379,
    allowed: false,
    why: 'no rule allows role=backend',
  },
  {
    from: 'client',
    fromWhat: 'default, role=frontend',
    to: 'redis',
    port: 6380,
    allowed: false,
    why: 'port 6380 is not in the rule',
  },
  {
    from: 'outside',
    fromWhat: '192.0.2.2, outside the cluster',
    to: 'redis',
    port: 6379,
    allowed: false,
    why: 'not in 172.17.0.0/16',
  },
  {
    from: 'node',
    fromWhat: 'the node (kubelet)',
    to: 'redis',
    port: 6379,
    allowed: true,
    why: 'a node always reaches its pods',
  },
  {
    from: 'redis',
    fromWhat: 'default, role=db',
    to: 'pod-a',
    port: 9376,
    allowed: false,
    why: 'egress only to 10.0.0.0/24 TCP 5978',
  },
  {
    from: 'client',
    fromWhat: 'default, role=frontend',
    to: 'pod-a',
    port: 9376,
    allowed: true,
    why: 'pod-a is selected by no policy',
  },
];

export function formatPolicyTable(
  rows: readonly (PolicyProbe & { readonly got: string; readonly ok: boolean })[],
): string {
  const header = ['client', 'as', 'port', 'pod', 'expected', 'got', 'why', 'check'];
  const body = rows.map((r) => [
    r.from,
    r.fromWhat,
    String(r.port),
    r.to,
    r.allowed ? 'allowed' : 'denied',
    r.got,
    r.why,
    r.ok ? '✓' : '✗',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

/** The example Services that must get no dataplane (headless and ExternalName). */
export const NO_RULE_SERVICES: readonly string[] = ['default/headless-db', 'default/search'];

/**
 * The Services of `services` (`ns/name`) that some rule in `saveText` (iptables-save output, any
 * table) belongs to, judged by kube-proxy's comments (`<ns/name>`, `<ns/name>:<port> …`, `<ns/name> …`).
 */
export function servicesWithRules(saveText: string, services: readonly string[]): string[] {
  const comments = [...parseIptablesSave(saveText).tables.values()]
    .flatMap((t) => t.rules)
    .map((r) => ruleComment(r))
    .filter((c): c is string => c !== undefined);
  return services.filter((s) =>
    comments.some((c) => c === s || c.startsWith(`${s}:`) || c.startsWith(`${s} `)),
  );
}

async function waitForSync(daemon: ChildHandle, timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`svcplane did not sync within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const families = new Set<string>();
    daemon.onLine((line) => {
      if (!line.startsWith('{')) return;
      try {
        const rec = JSON.parse(line) as { message?: string; backend?: string; level?: string };
        if (rec.message === 'synced' && rec.backend) families.add(rec.backend);
        if (families.size >= 1 && rec.message === 'svcplane running') {
          clearTimeout(timer);
          resolve();
        }
      } catch {
        // not a log record
      }
    });
    void daemon.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`svcplane exited early with status ${String(code)}`));
    });
  });
}

export async function runDemo(opts: {
  manifests: string;
  id: string;
  verbose: boolean;
  /** Where the report goes (stdout by default). */
  out?: (line: string) => void;
  /** Services that must have no rules (default: the examples' headless and ExternalName ones). */
  noRuleServices?: readonly string[];
}): Promise<number> {
  const root = packageRoot();
  const out = opts.out ?? ((s: string): boolean => process.stdout.write(s + '\n'));
  out(
    `svcplane demo: building sandbox "${opts.id}" (node 192.0.2.1, pods on 10.244.0.0/24, an outside client)…`,
  );
  const sb = await Sandbox.create({
    id: opts.id,
    pods: DEMO_PODS.map((p) => ({ name: p.name, index: p.index, tcpPorts: p.tcp, udpPorts: p.udp ?? [] })),
  });
  let daemon: ChildHandle | undefined;
  try {
    out(`svcplane demo: starting "svcplane run --manifests ${opts.manifests}" inside ${sb.nodeNs}…`);
    daemon = startProcess(
      [
        process.execPath,
        join(root, 'bin', 'svcplane.js'),
        'run',
        `--manifests=${opts.manifests}`,
        '--hostname-override=node-1',
        '--cluster-cidr=10.244.0.0/16,fd00:10:244::/64',
        '--healthz-bind-address=127.0.0.1:10256',
        '--metrics-bind-address=127.0.0.1:10249',
        // examples/network-policy.yaml: the seeds' NetworkPolicy, enforced.
        '--network-policy',
        // waitForSync reads JSON lines and the per-sync line (-v=2, as kube-proxy's).
        '--logging-format=json',
        '-v=2',
      ],
      { netns: sb.nodeNs },
    );
    if (opts.verbose) daemon.onLine((l) => process.stderr.write(`  [svcplane] ${l}\n`));
    await waitForSync(daemon, 30_000);
    out("svcplane demo: rules are in the node's kernel; sending requests…\n");
    const rows: DemoRow[] = [];
    const addrs: DemoAddresses = {
      requester: { client: sb.podIP('client'), outside: sb.outsideIPv4 },
      masquerade: sb.gatewayIPv4,
    };
    for (const probe of DEMO_PROBES) {
      const results = await runProbe(probe, (from, req) => sb.request(from, { ...req, timeoutMs: 1500 }));
      rows.push(summarizeProbe(probe, results, addrs));
    }
    out(formatTable(rows));
    const expectNone = opts.noRuleServices ?? NO_RULE_SERVICES;
    const saves = await Promise.all(['iptables-save', 'ip6tables-save'].map((c) => sb.exec('node', [c])));
    const withRules = [...new Set(saves.flatMap((r) => servicesWithRules(r.stdout, expectNone)))];
    if (withRules.length === 0) {
      out(
        `\nNo rules for ${expectNone.join(' and ')} (headless and ExternalName Services get no dataplane), as kube-proxy.`,
      );
    } else {
      out(`\n✗ ${withRules.join(' and ')} got rules, but must have none (headless / ExternalName).`);
    }
    const wrong = rows.filter((r) => r.problems.length > 0);
    out(
      wrong.length === 0
        ? '\nAll frontends answered as kube-proxy would: balanced Services by every backend, the ClientIP one by one, masquerade where kube-proxy masquerades.'
        : `\n✗ ${wrong.length} frontend(s) not as kube-proxy would:\n${wrong.map((r) => `  ${r.service}: ${r.problems.join('; ')}`).join('\n')}`,
    );
    const policyRows = [];
    for (const p of POLICY_PROBES) {
      const r = await sb.request(p.from, { proto: 'tcp', ip: sb.podIP(p.to), port: p.port, timeoutMs: 1500 });
      const answered = r.ok && r.reply.pod === p.to;
      policyRows.push({
        ...p,
        got: answered ? 'answered' : r.ok ? `answered by ${r.reply.pod}` : r.error,
        ok: answered === p.allowed,
      });
    }
    out('\nNetworkPolicy default/test-network-policy (examples/network-policy.yaml), with --network-policy:');
    out(formatPolicyTable(policyRows));
    const policyWrong = policyRows.filter((r) => !r.ok);
    out(
      policyWrong.length === 0
        ? '\nEvery connection the policy allows was answered, every other one failed.'
        : `\n✗ ${policyWrong.length} connection(s) not as the policy says.`,
    );
    return wrong.length === 0 && withRules.length === 0 && policyWrong.length === 0 ? 0 : 1;
  } finally {
    if (daemon) {
      const code = await daemon.stop();
      out(`svcplane demo: svcplane stopped (exit ${String(code)}); tearing the sandbox down.`);
    }
    await sb.destroy();
  }
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'build a sandbox node with pods, run svcplane on examples/ inside it, show who answers, tear down',
    )
    .option('--manifests <path>', 'manifests to load', join(packageRoot(), 'examples'))
    .option('--id <id>', 'sandbox id', 'demo')
    .option('--verbose', 'show svcplane logs', false)
    .action(async (o: { manifests: string; id: string; verbose: boolean }) => {
      process.exitCode = await runDemo(o);
    });
}
