import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { IPFamily } from '../model/types.js';
import { run, type RunOptions, type RunResult } from '../util/exec.js';
import { AgentProcess } from './agent-process.js';
import { DEFAULT_POD_NAMESPACE, renderPodManifest, validateNamespace } from './pod-manifest.js';
import {
  GATEWAY_V4,
  GATEWAY_V6,
  NODE_IP_V4,
  NODE_IP_V6,
  NODE_SYSCTLS,
  NS_PREFIX,
  OUTSIDE_IP_V4,
  OUTSIDE_IP_V6,
  idOfNamespace,
  nextFreeIndex,
  nodeNsName,
  outsideNsName,
  planPod,
  renderNodePodLinks,
  renderNodeSetup,
  renderOutsideSetup,
  renderPodSetup,
  sandboxPrefix,
  validateId,
  validatePodName,
  validatePort,
  type PodPlan,
} from './names.js';
import type { ProbeResult, RequestSpec } from './protocol.js';
import {
  currentOwner,
  isAgentOf,
  ownerAlive,
  readState,
  removeState,
  stateDir,
  stateIds,
  writeState,
  type AgentRecord,
  type PodRecord,
  type SandboxState,
} from './state.js';

/**
 * A sandbox: network namespaces that mimic one Kubernetes node with pods on a bridge, plus an
 * outside client (layout in ./names.ts). Each namespace can run an agent (./agent.ts) that serves
 * TCP/UDP echo and makes client requests from inside the namespace, for traffic tests.
 *
 * Nothing is created in the caller's network namespace: only namespaces are added (under
 * /run/netns), and every link, address and route is created inside them. The node's default
 * routes end in the outside namespace, which has no other link, so no packet can leave.
 */

export interface PodSpec {
  /** [a-z0-9-], 1-32 characters; not 'node' or 'outside'. */
  readonly name: string;
  /** Host part N of 10.244.0.N / fd00:10:244::N (2-254); default: the lowest free. */
  readonly index?: number;
  /** Echo server ports; with any, the pod's agent starts with the pod. */
  readonly tcpPorts?: readonly number[];
  readonly udpPorts?: readonly number[];
  /** Kubernetes namespace (default `default`) and labels, for pods.json (./pod-manifest.ts). */
  readonly namespace?: string;
  readonly labels?: Readonly<Record<string, string>>;
}

export interface PodInfo {
  readonly name: string;
  /** The pod's network namespace. */
  readonly ns: string;
  readonly index: number;
  readonly ipv4: string;
  readonly ipv6: string;
  /** The host end of its veth pair, on cbr0 in the node namespace. */
  readonly hostVeth: string;
  readonly tcpPorts: readonly number[];
  readonly udpPorts: readonly number[];
  /** Kubernetes namespace and labels (pods.json). */
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface CreateOptions {
  readonly id: string;
  readonly pods?: readonly PodSpec[];
  /**
   * Operator mode (CLI): the sandbox outlives this process, agents run detached with their PIDs
   * in the state file, and it is never treated as a leftover. Default false: the sandbox belongs
   * to this process, its agents die with it and a crashed run's remains are leftovers.
   */
  readonly persistent?: boolean;
  /**
   * bridge-nf-call-ip{,6}tables in the node namespace (only when br_netfilter is loaded):
   * true sets them to 1 (error if unavailable), false to 0, undefined leaves the kernel's default.
   * See {@link Sandbox.brNetfilter}.
   */
  readonly brNetfilter?: boolean;
}

/** 'node', 'outside', or a pod name. */
export type Where = string;

/** A TCP connection kept open by an agent, for established-connection tests. */
export interface OpenConnection {
  /** The result of connecting (with the server's greeting when ok). */
  readonly result: ProbeResult;
  /** Sends one line on the connection and waits for the next reply. */
  send(timeoutMs?: number): Promise<ProbeResult>;
  close(): Promise<void>;
}

/** Echo servers a namespace's agent should run. */
export interface ServeSpec {
  readonly tcpPorts?: readonly number[];
  readonly udpPorts?: readonly number[];
}

const NETNS_DIR = '/run/netns';

/** This process's sandboxes by id: re-creating an id destroys the old object, so its destroy() cannot hit the new one. */
const live = new Map<string, Sandbox>();

async function ipBatch(ns: string | undefined, lines: readonly string[], what: string): Promise<void> {
  const argv = ns ? ['ip', '-n', ns, '-batch', '-'] : ['ip', '-batch', '-'];
  try {
    await run(argv, { input: `${lines.join('\n')}\n`, timeoutMs: 30_000 });
  } catch (err) {
    throw new Error(`sandbox: ${what} failed: ${(err as Error).message}`, { cause: err });
  }
}

function uniquePorts(ports: readonly number[] | undefined, what: string): number[] {
  return [...new Set((ports ?? []).map((p) => validatePort(p, what)))].sort((a, b) => a - b);
}

export class Sandbox {
  readonly id: string;
  /** `svcp-<id>-`: every namespace of this sandbox starts with it. */
  readonly prefix: string;
  readonly nodeNs: string;
  readonly outsideNs: string;
  readonly nodeIPv4 = NODE_IP_V4;
  readonly nodeIPv6 = NODE_IP_V6;
  readonly outsideIPv4 = OUTSIDE_IP_V4;
  readonly outsideIPv6 = OUTSIDE_IP_V6;
  readonly gatewayIPv4 = GATEWAY_V4;
  readonly gatewayIPv6 = GATEWAY_V6;
  /** Whether bridged traffic in the node passes iptables (br_netfilter loaded and enabled there). */
  brNetfilter = false;

  private readonly pods = new Map<string, PodInfo>();
  private readonly agents = new Map<Where, Promise<AgentProcess>>();
  private readonly detached: AgentRecord[] = [];
  private destroyed = false;
  /** Set once destroy() succeeded: later calls are no-ops (a replacement may own the id by then). */
  private removed = false;

  private constructor(
    id: string,
    readonly persistent: boolean,
  ) {
    this.id = validateId(id);
    this.prefix = sandboxPrefix(id);
    this.nodeNs = nodeNsName(id);
    this.outsideNs = outsideNsName(id);
  }

  /**
   * Creates the sandbox. A leftover with the same id (dead owner, or this process) is removed
   * first, so create is idempotent; a sandbox of another live process is an error.
   * On failure everything created so far is removed.
   */
  static async create(opts: CreateOptions): Promise<Sandbox> {
    const id = validateId(opts.id);
    const sb = new Sandbox(id, opts.persistent ?? false);
    const plans = sb.planPods(opts.pods ?? []);
    const existing = await readState(id);
    if (existing || (await listSandboxes()).includes(id)) {
      if (existing?.owner && existing.owner.pid !== process.pid && ownerAlive(existing.owner)) {
        throw new Error(`sandbox "${id}" exists and belongs to live process ${existing.owner.pid}`);
      }
      if (existing && existing.owner === null && !sb.persistent) {
        throw new Error(
          `sandbox "${id}" exists (an operator's sandbox: remove it with "svcplane netns down --id ${id}")`,
        );
      }
      await live.get(id)?.destroy();
      await destroySandbox(id);
    }
    live.set(id, sb);
    try {
      await sb.saveState();
      const nsNames = [sb.nodeNs, sb.outsideNs, ...plans.map((p) => p.plan.ns)];
      await ipBatch(
        undefined,
        nsNames.map((n) => `netns add ${n}`),
        'creating namespaces',
      );
      await sb.configureNodeSysctls(opts.brNetfilter);
      await ipBatch(
        sb.nodeNs,
        [...renderNodeSetup(sb.outsideNs), ...plans.flatMap((p) => renderNodePodLinks(p.plan))],
        'setting up the node',
      );
      await Promise.all([
        ipBatch(sb.outsideNs, renderOutsideSetup(), 'setting up the outside namespace'),
        ...plans.map((p) => ipBatch(p.plan.ns, renderPodSetup(p.plan), `setting up pod ${p.plan.name}`)),
      ]);
      for (const p of plans) sb.pods.set(p.info.name, p.info);
      await sb.saveState();
      await Promise.all(plans.map((p) => sb.startPodAgent(p.info)));
      await sb.saveState();
      return sb;
    } catch (err) {
      await sb.destroy().catch(() => undefined);
      throw err;
    }
  }

  /** Re-opens an existing sandbox from its state file (the CLI does this between commands). */
  static async attach(id: string): Promise<Sandbox> {
    const state = await readState(validateId(id));
    if (!state) throw new Error(`sandbox "${id}" not found (no state in ${stateDir(id)})`);
    const names = await namespacesOf(id);
    if (!names.includes(nodeNsName(id)))
      throw new Error(`sandbox "${id}" is incomplete: namespace ${nodeNsName(id)} is missing`);
    const sb = new Sandbox(id, state.owner === null);
    for (const r of state.pods)
      sb.pods.set(
        r.name,
        podInfoOf(
          planPod(id, r.name, r.index),
          r.tcpPorts,
          r.udpPorts,
          r.namespace ?? DEFAULT_POD_NAMESPACE,
          r.labels ?? {},
        ),
      );
    sb.detached.push(...state.agents);
    return sb;
  }

  private planPods(specs: readonly PodSpec[]): { plan: PodPlan; info: PodInfo }[] {
    const used = new Set([...this.pods.values()].map((p) => p.index));
    const names = new Set(this.pods.keys());
    for (const s of specs) if (s.index !== undefined) used.add(s.index);
    const out: { plan: PodPlan; info: PodInfo }[] = [];
    const claimed = new Set<number>();
    for (const s of specs) {
      const name = validatePodName(s.name);
      if (names.has(name)) throw new Error(`sandbox ${this.id}: pod "${name}" already exists`);
      names.add(name);
      let index = s.index;
      if (index !== undefined) {
        if (claimed.has(index) || [...this.pods.values()].some((p) => p.index === index)) {
          throw new Error(`sandbox ${this.id}: pod "${name}": index ${index} is already used`);
        }
      } else {
        index = nextFreeIndex(used);
        used.add(index);
      }
      claimed.add(index);
      const plan = planPod(this.id, name, index);
      out.push({
        plan,
        info: podInfoOf(
          plan,
          uniquePorts(s.tcpPorts, 'tcp port'),
          uniquePorts(s.udpPorts, 'udp port'),
          validateNamespace(s.namespace ?? DEFAULT_POD_NAMESPACE),
          { ...(s.labels ?? {}) },
        ),
      });
    }
    return out;
  }

  private async configureNodeSysctls(brNetfilter: boolean | undefined): Promise<void> {
    const bridgeKeys = ['net.bridge.bridge-nf-call-iptables', 'net.bridge.bridge-nf-call-ip6tables'];
    // Forwarding must work; the bridge keys exist only with br_netfilter: two commands, so which
    // failed is told by the exit status, not by reading the error text.
    const forwarding = await run(['sysctl', '-w', ...NODE_SYSCTLS], {
      netns: this.nodeNs,
      allowFailure: true,
    });
    if (forwarding.exitCode !== 0)
      throw new Error(`sandbox ${this.id}: sysctl in ${this.nodeNs} failed: ${forwarding.stderr.trim()}`);
    const bridge =
      brNetfilter === undefined
        ? undefined
        : await run(['sysctl', '-w', ...bridgeKeys.map((k) => `${k}=${brNetfilter ? 1 : 0}`)], {
            netns: this.nodeNs,
            allowFailure: true,
          });
    const read = await run(['sysctl', '-e', '-n', bridgeKeys[0]!], {
      netns: this.nodeNs,
      allowFailure: true,
    });
    this.brNetfilter = read.stdout.trim() === '1';
    if (brNetfilter === true && !this.brNetfilter) {
      throw new Error(
        `sandbox ${this.id}: brNetfilter requested but br_netfilter is not available (${(bridge?.stderr ?? '').trim()})`,
      );
    }
  }

  private async saveState(): Promise<void> {
    const pods: PodRecord[] = [...this.pods.values()].map((p) => ({
      name: p.name,
      index: p.index,
      tcpPorts: p.tcpPorts,
      udpPorts: p.udpPorts,
      namespace: p.namespace,
      labels: p.labels,
    }));
    const state: SandboxState = {
      id: this.id,
      owner: this.persistent ? null : currentOwner(),
      pods,
      agents: [...this.detached],
    };
    await writeState(state);
    await writeFile(this.podManifestPath, renderPodManifest(this.listPods()));
  }

  /** The sandbox's pods as Namespace and Pod objects (./pod-manifest.ts), rewritten with the state. */
  get podManifestPath(): string {
    return path.join(stateDir(this.id), 'pods.json');
  }

  private check(): void {
    if (this.destroyed) throw new Error(`sandbox ${this.id} has been destroyed`);
  }

  /** Adds a pod: namespace, veth pair on cbr0 (hairpin on), addresses, routes, and its agent if it has ports. */
  async addPod(spec: PodSpec): Promise<PodInfo> {
    this.check();
    const [p] = this.planPods([spec]);
    const { plan, info } = p!;
    this.pods.set(info.name, info);
    try {
      await this.saveState();
      await run(['ip', 'netns', 'add', plan.ns]);
      await ipBatch(this.nodeNs, renderNodePodLinks(plan), `adding pod ${plan.name} to the bridge`);
      await ipBatch(plan.ns, renderPodSetup(plan), `setting up pod ${plan.name}`);
      await this.startPodAgent(info);
      await this.saveState();
    } catch (err) {
      await this.removePod(info.name).catch(() => undefined);
      throw err;
    }
    return info;
  }

  /** Removes a pod: its agent, its veth pair and its namespace. Unknown names are ignored. */
  async removePod(name: string): Promise<void> {
    const pod = this.pods.get(name);
    if (!pod) return;
    await this.stopAgent(name);
    await run(['ip', '-n', this.nodeNs, 'link', 'del', pod.hostVeth], { allowFailure: true });
    await killProcessesIn(pod.ns);
    await run(['ip', 'netns', 'del', pod.ns], { allowFailure: true });
    this.pods.delete(name);
    await this.saveState();
  }

  pod(name: string): PodInfo {
    const p = this.pods.get(name);
    if (!p) throw new Error(`sandbox ${this.id}: no pod "${name}"`);
    return p;
  }

  listPods(): PodInfo[] {
    return [...this.pods.values()].sort((a, b) => a.index - b.index);
  }

  podIP(name: string, family: IPFamily = 'IPv4'): string {
    const p = this.pod(name);
    return family === 'IPv4' ? p.ipv4 : p.ipv6;
  }

  /** The namespace of 'node', 'outside', a pod name, or a full namespace name of this sandbox. */
  nsOf(where: Where): string {
    if (where === 'node') return this.nodeNs;
    if (where === 'outside') return this.outsideNs;
    const pod = this.pods.get(where);
    if (pod) return pod.ns;
    if (where.startsWith(this.prefix)) return where;
    throw new Error(`sandbox ${this.id}: unknown place "${where}" (expected node, outside or a pod name)`);
  }

  /** Runs a short-lived command inside a namespace of the sandbox. */
  exec(where: Where, argv: readonly string[], opts: Omit<RunOptions, 'netns'> = {}): Promise<RunResult> {
    this.check();
    return run(argv, { ...opts, netns: this.nsOf(where) });
  }

  private addrsOf(where: Where): string[] {
    if (where === 'node') return [NODE_IP_V4, NODE_IP_V6, GATEWAY_V4, GATEWAY_V6, '127.0.0.1', '::1'];
    if (where === 'outside') return [OUTSIDE_IP_V4, OUTSIDE_IP_V6, '127.0.0.1', '::1'];
    const p = this.pod(where);
    return [p.ipv4, p.ipv6, '127.0.0.1', '::1'];
  }

  private agentFor(where: Where, serve: ServeSpec = {}): Promise<AgentProcess> {
    this.check();
    const existing = this.agents.get(where);
    if (existing) return existing;
    const started = AgentProcess.start({
      ns: this.nsOf(where),
      name: where,
      sandbox: this.id,
      addrs: this.addrsOf(where),
      ...(serve.tcpPorts ? { tcpPorts: serve.tcpPorts } : {}),
      ...(serve.udpPorts ? { udpPorts: serve.udpPorts } : {}),
    });
    this.agents.set(where, started);
    started.catch(() => this.agents.delete(where));
    return started;
  }

  private async startPodAgent(pod: PodInfo): Promise<void> {
    if (pod.tcpPorts.length === 0 && pod.udpPorts.length === 0) return;
    if (!this.persistent) {
      await this.agentFor(pod.name, pod);
      return;
    }
    const log = path.join(stateDir(this.id), `${pod.name}.log`);
    const pid = await AgentProcess.startDetached(
      {
        ns: pod.ns,
        name: pod.name,
        sandbox: this.id,
        addrs: this.addrsOf(pod.name),
        tcpPorts: pod.tcpPorts,
        udpPorts: pod.udpPorts,
      },
      log,
    );
    this.detached.push({ where: pod.name, pid });
    await waitForReady(log, pid, `agent of pod ${pod.name}`);
  }

  private async stopAgent(where: Where): Promise<void> {
    const a = this.agents.get(where);
    this.agents.delete(where);
    if (a) await (await a.catch(() => undefined))?.stop();
    for (const r of this.detached.filter((d) => d.where === where)) await killAgentPid(r.pid, this.id);
    this.detached.splice(0, this.detached.length, ...this.detached.filter((d) => d.where !== where));
  }

  /**
   * Makes `where` ('node', 'outside' or a pod) serve TCP/UDP echo on these ports (in addition to
   * any it serves already). Not for persistent (CLI) sandboxes.
   */
  async serve(where: Where, spec: ServeSpec): Promise<void> {
    const tcp = uniquePorts(spec.tcpPorts, 'tcp port');
    const udp = uniquePorts(spec.udpPorts, 'udp port');
    const fresh = !this.agents.has(where);
    const agent = await this.agentFor(where, { tcpPorts: tcp, udpPorts: udp });
    if (!fresh) await agent.listen(tcp, udp);
  }

  /** One request from inside `where`: connect (TCP) or send a datagram (UDP) and read one reply. */
  async request(from: Where, req: RequestSpec): Promise<ProbeResult> {
    validatePort(req.port);
    return (await this.agentFor(from)).request(req);
  }

  /** Opens a TCP connection from inside `from` and keeps it open. */
  async openConnection(from: Where, req: Omit<RequestSpec, 'proto'>): Promise<OpenConnection> {
    validatePort(req.port);
    const agent = await this.agentFor(from);
    const { conn, result } = await agent.open({ ...req, proto: 'tcp' });
    return {
      result,
      send: (timeoutMs?: number) => agent.send(conn, timeoutMs),
      close: () => agent.closeConnection(conn),
    };
  }

  /** PIDs of this sandbox's agents (in-process and detached). */
  async agentPids(): Promise<number[]> {
    const live = await Promise.all(
      [...this.agents.values()].map((a) => a.then((x) => x.pid).catch(() => undefined)),
    );
    return [...live.filter((p): p is number => p !== undefined), ...this.detached.map((d) => d.pid)];
  }

  /**
   * Stops this process's own agents but leaves the sandbox (namespaces, detached agents) in place:
   * for a CLI process that attached to an operator's sandbox and is about to exit.
   */
  async release(): Promise<void> {
    const agents = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(agents.map(async (a) => (await a.catch(() => undefined))?.stop()));
  }

  /** Removes everything: agents, namespaces (and with them links, routes, rules), the state file. Idempotent. */
  async destroy(): Promise<void> {
    if (this.removed) return;
    this.destroyed = true;
    if (live.get(this.id) === this) live.delete(this.id);
    const agents = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(agents.map(async (a) => (await a.catch(() => undefined))?.stop()));
    await destroySandbox(this.id);
    this.removed = true;
    this.pods.clear();
    this.detached.length = 0;
  }
}

function podInfoOf(
  plan: PodPlan,
  tcpPorts: readonly number[],
  udpPorts: readonly number[],
  namespace: string,
  labels: Readonly<Record<string, string>>,
): PodInfo {
  return {
    name: plan.name,
    ns: plan.ns,
    index: plan.index,
    ipv4: plan.ipv4,
    ipv6: plan.ipv6,
    hostVeth: plan.hostVeth,
    tcpPorts,
    udpPorts,
    namespace,
    labels,
  };
}

/** Waits until a detached agent logged that it is ready (or failed). */
async function waitForReady(logFile: string, pid: number, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(logFile, 'utf8').catch(() => '');
    if (text.includes(`"event":"ready","pid":${pid}`)) return;
    const fatal = /"event":"fatal","error":"([^"]*)"/.exec(text);
    if (fatal || !isAlive(pid))
      throw new Error(`${what} failed to start: ${fatal?.[1] ?? text.trim().slice(-2000)}`);
    if (Date.now() > deadline)
      throw new Error(`${what} did not start within ${timeoutMs} ms (log: ${logFile})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pids: readonly number[], timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

/** Kills a recorded agent PID, only after checking that it still is this sandbox's agent. */
async function killAgentPid(pid: number, id: string): Promise<void> {
  if (!isAgentOf(pid, id)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitGone([pid]);
}

/**
 * Ends every process inside a sandbox namespace (they would keep it alive after `ip netns del`):
 * SIGTERM first, so that a daemon a test left running cleans up after itself (its kernel watch's
 * /tmp directory, iptables/commit-name.ts), then SIGKILL for what is left after 3 s.
 */
async function killProcessesIn(ns: string): Promise<void> {
  const res = await run(['ip', 'netns', 'pids', ns], { allowFailure: true });
  if (res.exitCode !== 0) return;
  const pids = res.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
    .filter((p) => p !== process.pid);
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    for (const pid of pids) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
    await waitGone(pids);
  }
}

/** Namespaces (names) of sandbox `id`. */
async function namespacesOf(id: string): Promise<string[]> {
  const prefix = sandboxPrefix(id);
  return (await netnsNames()).filter((n) => n.startsWith(prefix));
}

async function netnsNames(): Promise<string[]> {
  try {
    return await readdir(NETNS_DIR);
  } catch {
    return [];
  }
}

/**
 * Removes sandbox `id` whatever its state: recorded agents (verified by PID), any process inside
 * its namespaces, the namespaces, the state directory.
 */
export async function destroySandbox(id: string): Promise<void> {
  validateId(id);
  const state = await readState(id).catch(() => undefined);
  for (const a of state?.agents ?? []) await killAgentPid(a.pid, id);
  const names = await namespacesOf(id);
  for (const ns of names) await killProcessesIn(ns);
  if (names.length > 0) {
    // Pods first, the node last: deleting a namespace deletes its links (and their veth peers).
    const ordered = [
      ...names.filter((n) => n !== nodeNsName(id)),
      ...names.filter((n) => n === nodeNsName(id)),
    ];
    await run(['ip', '-force', '-batch', '-'], {
      input: `${ordered.map((n) => `netns del ${n}`).join('\n')}\n`,
      allowFailure: true,
    });
    const left = await namespacesOf(id);
    if (left.length > 0)
      throw new Error(`sandbox ${id}: namespaces could not be removed: ${left.join(', ')}`);
  }
  await removeState(id);
}

/** Ids of all sandboxes on this machine (from namespace names and state directories). */
export async function listSandboxes(): Promise<string[]> {
  const ids = new Set<string>();
  for (const n of await netnsNames()) {
    if (!n.startsWith(NS_PREFIX)) continue;
    const id = idOfNamespace(n);
    if (id) ids.add(id);
  }
  for (const id of await stateIds()) ids.add(id);
  return [...ids].sort();
}

/** Whether sandbox `id` is a leftover: no state, or its (non-operator) owner process is gone. */
export async function isLeftover(id: string): Promise<boolean> {
  const state = await readState(id).catch(() => undefined);
  if (!state) return true;
  if (state.owner === null) return false;
  return !ownerAlive(state.owner);
}

/**
 * Removes leftovers of crashed runs (sandboxes whose owner died). With `all`, removes every
 * sandbox, including operators' and other live processes' ones. Returns the removed ids.
 */
export async function cleanupLeftovers(opts: { all?: boolean } = {}): Promise<string[]> {
  const removed: string[] = [];
  for (const id of await listSandboxes()) {
    if (opts.all || (await isLeftover(id))) {
      await destroySandbox(id);
      removed.push(id);
    }
  }
  return removed;
}
