import assert from 'node:assert/strict';
import { optionsFromArgs, type ProxyOptions } from '../../../src/config/options.js';
import { buildClusterState } from '../../../src/model/build.js';
import type { Backend } from '../../../src/modes/backend.js';
import type { ClusterState, IPFamily } from '../../../src/model/types.js';
import { AgentProcess } from '../../../src/netns/agent-process.js';
import { peerIP, type EchoReply, type ProbeResult, type RequestSpec } from '../../../src/netns/protocol.js';
import type { Sandbox } from '../../../src/netns/sandbox.js';
import { run } from '../../../src/util/exec.js';
import { NODE_NAME, prepareSandboxNode } from '../iptables-harness.js';
import { requireRoot, useSandbox } from '../sandbox.js';
import { traceAgrees } from '../trace-check.js';
import {
  CLUSTER_CIDRS,
  clusterObjects,
  EXPIRY_CLIENTS,
  MASQ,
  OUTSIDE_OTHER_IP,
  ROUTED_POD,
  SCENARIO_TABLE,
  STICKY_CLIENTS,
  TOPOLOGY,
  type Check,
  type Client,
  type Drop,
  type ModeName,
  type Outcome,
  type Scenario,
  type Target,
  type Topo,
} from './table.js';

/**
 * Runs the scenario table (./table.ts) against one mode: a mode's traffic suite is its ModeEntry and
 * `runScenarioTable(entry)`. The runner owns the sandbox, the cluster objects, the flags, the topology
 * changes and the checks; the entry owns how its mode starts on the sandbox node, how a drop is
 * proven (the rule's own packet counter) and what its kernel holds (for the `kernel` checks).
 */

/** The mode's backends on the sandbox node (one per family), converging it to a state. */
export interface RunningMode {
  sync(state: ClusterState): Promise<void>;
  stop(): Promise<void>;
}

export interface ModeEntry {
  readonly name: ModeName;
  /** The kube-proxy flags that select the mode. */
  readonly args: readonly string[];
  /** Starts the mode's backends on the sandbox node with these options (a restarted svcplane with other flags). */
  start(opts: ProxyOptions, netns: string): Promise<RunningMode>;
  /**
   * Runs `traffic` (which expects a timeout) and asserts that the mode's rule for `drop` dropped it:
   * its packet counter grew by at least one.
   */
  proveDrop(sb: Sandbox, drop: Drop, family: IPFamily, traffic: () => Promise<void>): Promise<void>;
  /** What the mode wrote for one family, as text (rules, sets, virtual servers). */
  kernelText(sb: Sandbox, family: IPFamily): Promise<string>;
  /** Whether `svcplane trace` walks this mode's rules (checks marked `trace` then consult it too). */
  readonly traced: boolean;
  /** Per-test timeout (User-mode Linux is slower). */
  readonly timeoutMs?: number;
}

/**
 * A RunningMode of one backend per family (the mode's proxiers), set up once at start: what the
 * daemon runs, minus the controller's timing.
 */
export async function startBackends(backends: readonly Backend[]): Promise<RunningMode> {
  for (const b of backends) await b.setup();
  return {
    async sync(state) {
      for (const b of backends) await b.sync(state);
    },
    async stop() {},
  };
}

/** A request's timeout when no answer is expected. */
const NO_ANSWER_MS = 800;
/** A refusal must come well before this timeout (and before REFUSED_WITHIN). */
const REFUSE_TIMEOUT_MS = 3500;
/**
 * ICMPv6 errors for the first SYN can arrive while connect() holds the socket (a soft error): TCP
 * then takes the retransmitted SYN's, ~1 s later. A DROP never gives 'refused' at all.
 */
const REFUSED_WITHIN_MS = 2500;
const familyOf = (ip: string): IPFamily => (ip.includes(':') ? 'IPv6' : 'IPv4');

function topoOf(sb: Sandbox): Topo {
  return {
    node4: sb.nodeIPv4,
    node6: sb.nodeIPv6,
    outside4: sb.outsideIPv4,
    outside6: sb.outsideIPv6,
    podIP: (pod, family) => sb.podIP(pod, family),
  };
}

/** The outcome this mode must see for a check (its recorded difference, else the table's). */
function outcomeFor(check: Extract<Check, { kind: 'request' }>, mode: ModeName): Outcome {
  return check.modes?.[mode]?.expect ?? check.expect;
}

/** A scenario's title in one mode: where the mode differs, the table's reason is part of it. */
export function scenarioTitle(s: Scenario, mode: ModeName): string {
  const why = new Set<string>();
  for (const c of s.checks(PLACEHOLDER_TOPO)) {
    if (c.kind === 'request' && c.modes?.[mode]) why.add(c.modes[mode].why);
    if (c.kind === 'affinity-expires' && c.modes?.[mode]) why.add(c.modes[mode].why);
  }
  return why.size === 0 ? s.name : `${s.name} [${mode} differs: ${[...why].join('; ')}]`;
}

/** Titles are made before the sandbox exists: the checks only need addresses to be strings. */
const PLACEHOLDER_TOPO: Topo = {
  node4: '192.0.2.1',
  node6: '2001:db8::1',
  outside4: '192.0.2.2',
  outside6: '2001:db8::2',
  podIP: () => '10.244.0.2',
};

/** The sandbox node as the table drives it: objects, flags, topology, requests. */
class ScenarioNode {
  private running: RunningMode | undefined;
  private argsKey = '';
  private state: ClusterState | undefined;
  private routed: AgentProcess | undefined;

  constructor(
    readonly sb: Sandbox,
    readonly mode: ModeEntry,
  ) {}

  async prepare(): Promise<void> {
    await prepareSandboxNode(this.sb);
    await this.addresses(
      'outside',
      'eth0',
      [OUTSIDE_OTHER_IP, ...STICKY_CLIENTS, ...EXPIRY_CLIENTS].map((ip) => `${ip}/24`),
      'add',
    );
  }

  async addresses(where: string, dev: string, cidrs: readonly string[], op: 'add' | 'del'): Promise<void> {
    if (cidrs.length === 0) return;
    const lines = cidrs.map((c) => `addr ${op} ${c} dev ${dev}`);
    await this.sb.exec(where, ['ip', '-batch', '-'], {
      input: `${lines.join('\n')}\n`,
      allowFailure: op === 'del',
    });
  }

  /** Converges the node to the table's objects with the scenario's flags (a restart when they changed). */
  async converge(s: Pick<Scenario, 'flags' | 'noClusterCIDR'>): Promise<void> {
    const args = [
      ...this.mode.args,
      '--hostname-override',
      NODE_NAME,
      ...(s.noClusterCIDR ? [] : ['--cluster-cidr', CLUSTER_CIDRS]),
      ...(s.flags?.(topoOf(this.sb)) ?? []),
    ];
    const key = JSON.stringify(args);
    if (key !== this.argsKey || !this.running) {
      await this.running?.stop();
      this.running = undefined;
      this.running = await this.mode.start(optionsFromArgs(args), this.sb.nodeNs);
      this.argsKey = key;
      // No NAT binding made under the old rules may answer for the new ones.
      for (const family of ['ipv4', 'ipv6']) {
        await this.sb.exec('node', ['conntrack', '-F', '-f', family], { allowFailure: true });
      }
    }
    const state = buildClusterState(
      clusterObjects(this.sb).map((obj, i) => ({ obj, source: `table#${i}` })),
      this.state,
    );
    assert.deepEqual(
      state.problems.map((p) => `${p.object.kind} ${p.object.name}: ${p.field}: ${p.reason}`),
      [],
      'the table objects must be valid',
    );
    await this.running.sync(state);
    this.state = state;
  }

  async stop(): Promise<void> {
    await this.routed?.stop();
    await this.running?.stop();
  }

  /** Wires the routed pod (ROUTED_POD): its own namespace and veth calitest0, routed, no bridge. */
  async addRoutedPod(): Promise<AgentProcess> {
    const sb = this.sb;
    const ns = `${sb.prefix}${ROUTED_POD.name}`;
    // Namespaces are added from the root mount namespace (`ip netns exec` has a private one).
    await run(['ip', 'netns', 'add', ns]);
    await run(['ip', '-n', sb.nodeNs, '-batch', '-'], {
      input: [
        `link add ${ROUTED_POD.hostIf} type veth peer name eth0 netns ${ns}`,
        `addr add ${ROUTED_POD.gateway}/30 dev ${ROUTED_POD.hostIf}`,
        `link set dev ${ROUTED_POD.hostIf} up`,
        '',
      ].join('\n'),
    });
    await run(['ip', '-n', ns, '-batch', '-'], {
      input: [
        'link set dev lo up',
        `addr add ${ROUTED_POD.ip}/30 dev eth0`,
        'link set dev eth0 up',
        `route add default via ${ROUTED_POD.gateway} dev eth0`,
        '',
      ].join('\n'),
    });
    this.routed = await AgentProcess.start({
      ns,
      name: ROUTED_POD.name,
      sandbox: sb.id,
      addrs: [ROUTED_POD.ip],
    });
    return this.routed;
  }

  async removeRoutedPod(): Promise<void> {
    await this.routed?.stop();
    this.routed = undefined;
    await run(['ip', 'netns', 'del', `${this.sb.prefix}${ROUTED_POD.name}`], { allowFailure: true });
  }

  request(from: Client, to: Target, timeoutMs?: number): Promise<ProbeResult> {
    const req: RequestSpec & { sourceIP?: string } = {
      proto: to.proto,
      ip: to.ip,
      port: to.port,
      ...(to.sourceIP !== undefined ? { sourceIP: to.sourceIP } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    };
    if (from === 'routed') {
      if (!this.routed) throw new Error('the scenario has no routed pod (topology.routedPod)');
      return this.routed.request(req);
    }
    return this.sb.request(from, req);
  }

  /** The sender's own address in the target's family (what the backend sees without masquerade). */
  sourceOf(from: Client, to: Target): string {
    const family = familyOf(to.ip);
    if (to.sourceIP !== undefined) return to.sourceIP;
    if (from === 'routed') return ROUTED_POD.ip;
    if (from === 'outside') return family === 'IPv4' ? this.sb.outsideIPv4 : this.sb.outsideIPv6;
    if (from === 'node') return family === 'IPv4' ? this.sb.nodeIPv4 : this.sb.nodeIPv6;
    return this.sb.podIP(from, family);
  }
}

const describeReq = (from: Client, to: Target): string =>
  `${from} → ${to.proto} ${to.ip.includes(':') ? `[${to.ip}]` : to.ip}:${to.port}${to.sourceIP ? ` (from ${to.sourceIP})` : ''}`;

async function checkRequest(node: ScenarioNode, check: Extract<Check, { kind: 'request' }>): Promise<void> {
  const { sb, mode } = node;
  const { from, to } = check;
  const expect = outcomeFor(check, mode.name);
  const what = describeReq(from, to);
  const family = familyOf(to.ip);
  if ('answeredBy' in expect) {
    // Until every expected pod answered (at least 6 requests, so "only a" means something).
    const seen = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const r = await node.request(from, to);
      if (!r.ok) assert.fail(`${what}: request ${i + 1}: ${r.error} ${r.detail}`);
      const reply: EchoReply = r.reply;
      assert.ok(
        (expect.answeredBy as readonly string[]).includes(reply.pod),
        `${what}: answered by ${reply.pod}, expected ${expect.answeredBy.join(', ')}`,
      );
      assert.equal(reply.ip, sb.podIP(reply.pod, family), `${what}: DNATed to the pod's ${family} address`);
      assert.equal(reply.proto, to.proto);
      if (expect.port !== undefined) assert.equal(reply.port, expect.port, `${what}: the endpoint port`);
      if (expect.peer !== undefined) {
        const want: string = expect.peer === 'masq' ? MASQ[family] : node.sourceOf(from, to);
        assert.equal(
          peerIP(reply.peer),
          want,
          `${what}: the backend sees ${expect.peer === 'masq' ? 'the node (masqueraded)' : 'the client'}`,
        );
      }
      seen.set(reply.pod, (seen.get(reply.pod) ?? 0) + 1);
      if (i >= 5 && expect.answeredBy.every((p) => seen.has(p))) break;
    }
    assert.deepEqual(
      [...seen.keys()].sort(),
      [...expect.answeredBy].sort(),
      `${what}: answered by ${JSON.stringify(Object.fromEntries(seen))}`,
    );
  } else if ('refused' in expect) {
    const started = performance.now();
    const r = await node.request(from, to, REFUSE_TIMEOUT_MS);
    const ms = performance.now() - started;
    assert.equal(r.ok ? `answered by ${r.reply.pod}` : r.error, 'refused', what);
    assert.ok(ms < REFUSED_WITHIN_MS, `${what}: refused after ${Math.round(ms)} ms`);
  } else if ('dropped' in expect) {
    await mode.proveDrop(sb, expect.dropped, family, async () => {
      const r = await node.request(from, to, NO_ANSWER_MS);
      assert.equal(r.ok ? `answered by ${r.reply.pod}` : r.error, 'timeout', `${what}: dropped`);
    });
  } else {
    const r = await node.request(from, to, NO_ANSWER_MS);
    if (r.ok) assert.fail(`${what}: expected no answer, got one from ${r.reply.pod}`);
    if (expect.unanswered !== 'any') assert.equal(r.error, expect.unanswered, `${what}: ${r.detail}`);
  }
  if (check.trace === true && mode.traced && from !== 'routed') {
    // svcplane trace reads the node's kernel and must predict the same (its real requests agree too).
    const t = await traceAgrees(
      sb,
      from,
      { proto: to.proto, ip: to.ip, port: to.port },
      to.sourceIP ? { sourceIP: to.sourceIP } : {},
    );
    const verdict =
      'answeredBy' in expect
        ? 'dnat'
        : 'refused' in expect
          ? 'reject'
          : 'dropped' in expect
            ? 'drop'
            : undefined;
    if (verdict !== undefined) assert.equal(t.verdict, verdict, `trace of ${what}`);
    else assert.notEqual(t.verdict, 'dnat', `trace of ${what}`);
    if ('answeredBy' in expect) {
      assert.equal(t.endpoints.length, expect.answeredBy.length, `trace of ${what}: endpoints`);
      if (expect.peer !== undefined)
        assert.equal(t.masquerade, expect.peer === 'masq', `trace of ${what}: masquerade`);
    }
  }
}

async function checkSticky(node: ScenarioNode, check: Extract<Check, { kind: 'sticky' }>): Promise<void> {
  const landed = new Set<string>();
  for (const sourceIP of check.sources) {
    const to = { ...check.to, ...(sourceIP !== undefined ? { sourceIP } : {}) };
    const pods: string[] = [];
    for (let i = 0; i < (check.sources.length === 1 ? 12 : 3); i++) {
      const r = await node.request(check.from, to);
      if (!r.ok) assert.fail(`${describeReq(check.from, to)}: ${r.error} ${r.detail}`);
      pods.push(r.reply.pod);
    }
    assert.equal(new Set(pods).size, 1, `${describeReq(check.from, to)} moved backends: ${pods.join(',')}`);
    assert.ok((check.backends as readonly string[]).includes(pods[0]!), pods[0]);
    landed.add(pods[0]!);
    if (landed.size === check.backends.length) break;
  }
  if (check.sources.length > 1) {
    assert.deepEqual([...landed].sort(), [...check.backends].sort(), 'clients land on every backend');
  }
}

async function checkAffinityExpires(
  node: ScenarioNode,
  check: Extract<Check, { kind: 'affinity-expires' }>,
): Promise<void> {
  const pick = async (sourceIP: string): Promise<string> => {
    const r = await node.request('outside', { ...check.to, sourceIP });
    if (!r.ok) assert.fail(`${describeReq('outside', { ...check.to, sourceIP })}: ${r.error} ${r.detail}`);
    return r.reply.pod;
  };
  const first = new Map<string, string>();
  for (const sourceIP of check.sources) {
    const pods = [await pick(sourceIP), await pick(sourceIP), await pick(sourceIP)];
    assert.equal(new Set(pods).size, 1, `${sourceIP} stuck to one backend: ${pods.join(',')}`);
    first.set(sourceIP, pods[0]!);
  }
  // Each client is forgotten `seconds` after its last new connection: one wait for all of them.
  const extra = check.modes?.[node.mode.name]?.extraWaitS ?? 0;
  await new Promise((r) => setTimeout(r, (check.seconds + extra) * 1000 + 300));
  // A round-robin scheduler (IPVS rr) gives the same order of picks the same backends again: one new
  // connection from another client first shifts it, so a forgotten client lands elsewhere (harmless
  // where the pick is random).
  await node.request('outside', check.to);
  const moved: string[] = [];
  for (const sourceIP of check.sources) {
    const now = await pick(sourceIP);
    if (now !== first.get(sourceIP)) {
      moved.push(sourceIP);
      // ...and sticks to its new backend.
      assert.equal(await pick(sourceIP), now, `${sourceIP} sticks to its new backend`);
    }
  }
  // Without expiry no client could move; with it each picks afresh (random: all staying is p = 2^-16).
  assert.ok(moved.length > 0, 'some client moved to the other backend after the timeout');
}

async function checkKernel(node: ScenarioNode, check: Extract<Check, { kind: 'kernel' }>): Promise<void> {
  const text = await node.mode.kernelText(node.sb, check.family);
  const has = check.has[node.mode.name];
  const lacks = check.lacks[node.mode.name];
  assert.match(text, has, `${node.mode.name} ${check.family}: the kernel holds ${has}`);
  assert.doesNotMatch(text, lacks, `${node.mode.name} ${check.family}: the kernel holds no ${lacks}`);
}

async function runScenario(node: ScenarioNode, s: Scenario): Promise<void> {
  const added = s.topology?.nodeAddresses ?? [];
  try {
    await node.addresses('node', 'ext0', added, 'add');
    if (s.topology?.routedPod) await node.addRoutedPod();
    await node.converge(s);
    for (const [key, value] of Object.entries(s.topology?.sysctls ?? {})) {
      await node.sb.exec('node', ['sysctl', '-q', '-w', `${key}=${value}`]);
    }
    for (const check of s.checks(topoOf(node.sb))) {
      if (check.kind === 'request') await checkRequest(node, check);
      else if (check.kind === 'sticky') await checkSticky(node, check);
      else if (check.kind === 'affinity-expires') await checkAffinityExpires(node, check);
      else await checkKernel(node, check);
    }
  } finally {
    if (s.topology?.routedPod) await node.removeRoutedPod();
    await node.addresses('node', 'ext0', added, 'del');
  }
}

/** The table's scenarios, each a test, against `mode` (one sandbox for the suite). */
export function runScenarioTable(mode: ModeEntry): void {
  describe(`${mode.name} mode: the traffic scenario table (real traffic)`, function () {
    this.timeout(mode.timeoutMs ?? 30_000);
    let node: ScenarioNode | undefined;
    // Registered before useSandbox's (mocha runs after hooks in order): the mode's processes and
    // timers end while the namespaces still exist.
    after(async () => {
      await node?.stop();
    });
    const env = useSandbox(TOPOLOGY);
    before(async function () {
      requireRoot(this);
      this.timeout(120_000);
      node = new ScenarioNode(env.sb, mode);
      await node.prepare();
      await node.converge({});
    });
    for (const group of SCENARIO_TABLE) {
      describe(group.name, () => {
        for (const s of group.scenarios) {
          it(scenarioTitle(s, mode.name), async () => {
            if (!node) throw new Error('the scenario node was not set up (before hook failed)');
            await runScenario(node, s);
          });
        }
      });
    }
  });
}

/** How many scenarios (tests) the table holds. */
export const SCENARIO_COUNT = SCENARIO_TABLE.reduce((n, g) => n + g.scenarios.length, 0);
