import assert from 'node:assert/strict';
import {
  IptablesProxier,
  type IptablesProxierConfig,
  type IptablesSyncReport,
} from '../../src/iptables/proxier.js';
import type { SyncReport } from '../../src/modes/backend.js';
import { buildClusterState } from '../../src/model/build.js';
import { NftablesProxier, type NftablesProxierConfig } from '../../src/nftables/proxier.js';
import type { ClusterState, IPFamily, Protocol } from '../../src/model/types.js';
import { peerIP, type EchoReply, type ProbeResult, type RequestSpec } from '../../src/netns/protocol.js';
import type { Sandbox, Where } from '../../src/netns/sandbox.js';

/**
 * A small harness for iptables-mode traffic tests: plain Kubernetes objects in, `buildClusterState`
 * (the real model path), one in-process `IptablesProxier` per family programming the sandbox node
 * (`netns: sb.nodeNs`), then real requests through the sandbox to see who answered and which
 * source address the backend saw.
 *
 *   const h = new IptablesHarness(sb);
 *   await h.sync([
 *     serviceObject('web', { clusterIPs: ['10.96.0.10'], ports: [{ port: 80, targetPort: 8080 }] }),
 *     sliceObject('web', 'IPv4', [{ port: 8080 }], podEndpoints(sb, ['a', 'b'])),
 *   ]);
 *   const seen = await h.answers('client', { proto: 'tcp', ip: '10.96.0.10', port: 80 }, { until: ['a', 'b'] });
 *   assertAnsweredBy(seen, ['a', 'b']);
 */

export const NAMESPACE = 'default';
export const NODE_NAME = 'node-1';

// ---------------------------------------------------------------------------------------------
// Object builders (plain v1 / discovery.k8s.io/v1 objects, as a manifest or the API would hold)
// ---------------------------------------------------------------------------------------------

export interface PortSpec {
  readonly name?: string;
  readonly port: number;
  readonly protocol?: Protocol;
  readonly targetPort?: number | string;
  readonly nodePort?: number;
}

export interface ServiceSpec {
  readonly type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  /** One per family; two make a dual-stack Service. */
  readonly clusterIPs: readonly string[];
  readonly ports: readonly PortSpec[];
  readonly externalIPs?: readonly string[];
  readonly loadBalancerSourceRanges?: readonly string[];
  /** status.loadBalancer.ingress. */
  readonly ingress?: readonly { readonly ip: string; readonly ipMode?: 'VIP' | 'Proxy' }[];
  readonly sessionAffinity?: { readonly timeoutSeconds: number };
  readonly externalTrafficPolicy?: 'Cluster' | 'Local';
  readonly internalTrafficPolicy?: 'Cluster' | 'Local';
  readonly healthCheckNodePort?: number;
  readonly namespace?: string;
}

const familyOf = (ip: string): IPFamily => (ip.includes(':') ? 'IPv6' : 'IPv4');

/** A v1 Service with a selector (`app: <name>`), as the API server would return it. */
export function serviceObject(name: string, spec: ServiceSpec): Record<string, unknown> {
  const families = spec.clusterIPs.map(familyOf);
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: spec.namespace ?? NAMESPACE },
    spec: {
      type: spec.type ?? 'ClusterIP',
      selector: { app: name },
      clusterIP: spec.clusterIPs[0],
      clusterIPs: spec.clusterIPs,
      ipFamilies: families,
      ipFamilyPolicy: families.length > 1 ? 'RequireDualStack' : 'SingleStack',
      ports: spec.ports.map((p) => ({
        ...(p.name !== undefined ? { name: p.name } : {}),
        protocol: p.protocol ?? 'TCP',
        port: p.port,
        targetPort: p.targetPort ?? p.port,
        ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}),
      })),
      ...(spec.externalIPs ? { externalIPs: spec.externalIPs } : {}),
      ...(spec.loadBalancerSourceRanges ? { loadBalancerSourceRanges: spec.loadBalancerSourceRanges } : {}),
      ...(spec.sessionAffinity
        ? {
            sessionAffinity: 'ClientIP',
            sessionAffinityConfig: { clientIP: { timeoutSeconds: spec.sessionAffinity.timeoutSeconds } },
          }
        : {}),
      ...(spec.externalTrafficPolicy ? { externalTrafficPolicy: spec.externalTrafficPolicy } : {}),
      ...(spec.internalTrafficPolicy ? { internalTrafficPolicy: spec.internalTrafficPolicy } : {}),
      ...(spec.healthCheckNodePort !== undefined ? { healthCheckNodePort: spec.healthCheckNodePort } : {}),
    },
    status: { loadBalancer: spec.ingress ? { ingress: spec.ingress } : {} },
  };
}

export interface SlicePort {
  /** Must equal the Service port's name ('' / absent for an unnamed port). */
  readonly name?: string;
  readonly port: number;
  readonly protocol?: Protocol;
}

export interface SliceEndpoint {
  readonly ip: string;
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating?: boolean;
  readonly nodeName?: string;
  readonly zone?: string;
  /** Topology hints, as the EndpointSlice controller writes them. */
  readonly forNodes?: readonly string[];
  readonly forZones?: readonly string[];
}

/** One EndpointSlice (`<service>-<v4|v6>`) of one address family for a Service. */
export function sliceObject(
  serviceName: string,
  family: IPFamily,
  ports: readonly SlicePort[],
  endpoints: readonly SliceEndpoint[],
  namespace = NAMESPACE,
): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${serviceName}-${family === 'IPv4' ? 'v4' : 'v6'}`,
      namespace,
      labels: { 'kubernetes.io/service-name': serviceName },
    },
    addressType: family,
    ports: ports.map((p) => ({ name: p.name ?? '', protocol: p.protocol ?? 'TCP', port: p.port })),
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: {
        ready: e.ready ?? true,
        serving: e.serving ?? e.ready ?? true,
        terminating: e.terminating ?? false,
      },
      nodeName: e.nodeName ?? NODE_NAME,
      ...(e.zone !== undefined ? { zone: e.zone } : {}),
      ...(e.forNodes || e.forZones
        ? {
            hints: {
              ...(e.forNodes ? { forNodes: e.forNodes.map((name) => ({ name })) } : {}),
              ...(e.forZones ? { forZones: e.forZones.map((name) => ({ name })) } : {}),
            },
          }
        : {}),
    })),
  };
}

/** Ready endpoints on this node for sandbox pods. */
export function podEndpoints(
  sb: Sandbox,
  pods: readonly string[],
  family: IPFamily = 'IPv4',
): SliceEndpoint[] {
  return pods.map((p) => ({ ip: sb.podIP(p, family) }));
}

/** The Node object: fixes the node IPs whatever extra addresses a test adds to the node. */
export function nodeObject(sb: Sandbox, labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: NODE_NAME, labels: { 'kubernetes.io/hostname': NODE_NAME, ...labels } },
    status: {
      addresses: [
        { type: 'InternalIP', address: sb.nodeIPv4 },
        { type: 'InternalIP', address: sb.nodeIPv6 },
        { type: 'Hostname', address: NODE_NAME },
      ],
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The proxiers
// ---------------------------------------------------------------------------------------------

/** What a scenario may change about the proxier (kube-proxy's flags); the rest is fixed per sandbox. */
export type ProxierOptions = Partial<
  Pick<
    IptablesProxierConfig,
    | 'masqueradeAll'
    | 'detectLocalMode'
    | 'clusterCIDRs'
    | 'nodePortAddresses'
    | 'localhostNodePorts'
    | 'masqueradeBit'
    | 'bindAddress'
    | 'bridgeInterface'
    | 'interfaceNamePrefix'
    | 'fullSyncMode'
  > &
    Pick<NftablesProxierConfig, 'fullSyncPartLines'>
>;

/** The sandbox's cluster CIDRs (its pod networks). */
export const CLUSTER_CIDRS = ['10.244.0.0/16', 'fd00:10:244::/64'] as const;

/** kube-proxy's defaults with `--cluster-cidr` set to the sandbox's pod networks. */
export const DEFAULT_OPTIONS: Required<
  Pick<
    IptablesProxierConfig,
    | 'masqueradeAll'
    | 'detectLocalMode'
    | 'clusterCIDRs'
    | 'nodePortAddresses'
    | 'localhostNodePorts'
    | 'masqueradeBit'
  >
> = {
  masqueradeAll: false,
  detectLocalMode: 'ClusterCIDR',
  clusterCIDRs: CLUSTER_CIDRS,
  nodePortAddresses: [],
  localhostNodePorts: true,
  masqueradeBit: 14,
};

/**
 * The config of one in-process IptablesProxier programming the sandbox node: IPv4, node-1 and
 * kube-proxy's defaults (DEFAULT_OPTIONS), with what a test changes on top (`family`, `binaries`, …).
 */
export function sandboxProxierConfig(
  sb: Pick<Sandbox, 'nodeNs'>,
  overrides: Partial<IptablesProxierConfig> = {},
): IptablesProxierConfig {
  return { family: 'IPv4', nodeName: NODE_NAME, netns: sb.nodeNs, ...DEFAULT_OPTIONS, ...overrides };
}

/** Which dataplane the harness programs: the same scenarios run against each mode. */
export type HarnessMode = 'iptables' | 'nftables';

export class IptablesHarness {
  private proxiers: IptablesProxier[] = [];
  private nftProxiers: NftablesProxier[] = [];
  private optionsKey = '';
  private state: ClusterState | undefined;
  private nodePrepared = false;
  /** The reports of the last sync, one per family (full/partial, duration, lines). */
  lastReports: readonly IptablesSyncReport[] = [];
  /** nftables mode: the reports of the last sync. */
  lastNftReports: readonly SyncReport[] = [];

  constructor(
    readonly sb: Sandbox,
    readonly families: readonly IPFamily[] = ['IPv4', 'IPv6'],
    readonly mode: HarnessMode = 'iptables',
  ) {}

  /** The nftables proxier of one family (nftables mode, after the first sync). */
  nftProxier(family: IPFamily = 'IPv4'): NftablesProxier {
    const p = this.nftProxiers.find((x) => x.name === `nftables/${family}`);
    if (!p) throw new Error(`no nftables ${family} proxier: nftables mode, call sync() first`);
    return p;
  }

  /** The proxier of one family (after the first sync). */
  proxier(family: IPFamily = 'IPv4'): IptablesProxier {
    const p = this.proxiers.find((x) => x.name === `iptables/${family}`);
    if (!p) throw new Error(`no ${family} proxier: call sync() first`);
    return p;
  }

  get current(): ClusterState {
    if (!this.state) throw new Error('no state synced yet');
    return this.state;
  }

  /**
   * Builds the state from `objects` and converges the node's kernel (both families). A change of
   * `options` starts fresh proxiers (a restarted svcplane with other flags: full sync, setup again)
   * and flushes conntrack, so no earlier NAT binding answers for the new rules.
   */
  async sync(objects: readonly unknown[], options: ProxierOptions = {}): Promise<ClusterState> {
    const state = buildClusterState(
      objects.map((obj, i) => ({ obj, source: `scenario#${i}` })),
      this.state,
    );
    assert.deepEqual(
      state.problems.map((p) => `${p.object.kind} ${p.object.name}: ${p.field}: ${p.reason}`),
      [],
      'scenario objects must be valid',
    );
    const merged = { ...DEFAULT_OPTIONS, ...options };
    const key = JSON.stringify(merged);
    if (!this.nodePrepared) {
      await this.prepareNode();
      this.nodePrepared = true;
    }
    if (this.mode === 'nftables') {
      if (key !== this.optionsKey) {
        // kube-proxy's nftables mode has no localhost NodePorts and one way of writing.
        const {
          localhostNodePorts: _l,
          fullSyncMode: _f,
          ...nftOptions
        } = merged as typeof merged & Pick<ProxierOptions, 'fullSyncMode'>;
        this.nftProxiers = this.families.map(
          (family) =>
            new NftablesProxier({ family, nodeName: NODE_NAME, netns: this.sb.nodeNs, ...nftOptions }),
        );
        for (const p of this.nftProxiers) await p.setup();
        await this.flushConntrack();
        this.optionsKey = key;
      }
      const nftReports: SyncReport[] = [];
      for (const p of this.nftProxiers) nftReports.push(await p.sync(state));
      this.lastNftReports = nftReports;
      this.state = state;
      return state;
    }
    if (key !== this.optionsKey) {
      this.proxiers = this.families.map(
        (family) => new IptablesProxier(sandboxProxierConfig(this.sb, { ...merged, family })),
      );
      for (const p of this.proxiers) await p.setup();
      await this.flushConntrack();
      this.optionsKey = key;
    }
    const reports: IptablesSyncReport[] = [];
    for (const p of this.proxiers) reports.push(await p.sync(state));
    this.lastReports = reports;
    this.state = state;
    return state;
  }

  /** Test-only node settings (see {@link prepareSandboxNode}). */
  async prepareNode(): Promise<void> {
    await prepareSandboxNode(this.sb);
  }

  /** Drops every conntrack entry in the node (stale NAT bindings would mask a rule change). */
  async flushConntrack(): Promise<void> {
    for (const family of ['ipv4', 'ipv6']) {
      await this.sb.exec('node', ['conntrack', '-F', '-f', family], { allowFailure: true });
    }
  }

  /** Adds addresses (`ip/len`) to a link of a sandbox namespace (e.g. a second node IP on ext0). */
  async addAddresses(where: Where, dev: string, cidrs: readonly string[]): Promise<void> {
    const lines = cidrs.map((c) => `addr add ${c} dev ${dev}`);
    await this.sb.exec(where, ['ip', '-batch', '-'], { input: `${lines.join('\n')}\n` });
  }

  /** Removes addresses added by {@link addAddresses}; missing ones are ignored (for `finally`). */
  async removeAddresses(where: Where, dev: string, cidrs: readonly string[]): Promise<void> {
    for (const c of cidrs) {
      await this.sb.exec(where, ['ip', 'addr', 'del', c, 'dev', dev], { allowFailure: true });
    }
  }

  /** `iptables-save` / `ip6tables-save` of the node. */
  async save(family: IPFamily = 'IPv4'): Promise<string> {
    return this.proxier(family).ipt.save();
  }

  /**
   * Sends up to `max` requests and counts who answered (errors count under `!<error>`). Stops early
   * once every pod in `until` has answered, so "both endpoints eventually answer" costs only a few
   * requests.
   */
  async answers(
    from: Where,
    req: RequestSpec,
    opts: { until?: readonly string[]; max?: number } = {},
  ): Promise<Map<string, number>> {
    const seen = new Map<string, number>();
    const max = opts.max ?? 40;
    for (let i = 0; i < max; i++) {
      const r = await this.sb.request(from, req);
      const who = r.ok ? r.reply.pod : `!${r.error}`;
      seen.set(who, (seen.get(who) ?? 0) + 1);
      if (opts.until && opts.until.every((p) => seen.has(p))) break;
    }
    return seen;
  }
}

/**
 * Test-only node settings. Unanswered probes that the node routes back out of ext0 (an
 * unprogrammed VIP) make it send ICMP redirects to the outside client; afterwards REJECT's ICMP
 * errors to that client were seen rate-limited into timeouts. No redirects, no ICMP rate limit.
 */
export async function prepareSandboxNode(sb: Sandbox): Promise<void> {
  await sb.exec('node', [
    'sysctl',
    '-q',
    '-w',
    'net.ipv4.icmp_ratelimit=0',
    'net.ipv6.icmp.ratelimit=0',
    'net.ipv4.conf.all.send_redirects=0',
    'net.ipv4.conf.default.send_redirects=0',
    'net.ipv4.conf.ext0.send_redirects=0',
  ]);
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

/** Asserts that every pod in `pods` (and nobody else) answered at least once. */
export function assertAnsweredBy(seen: ReadonlyMap<string, number>, pods: readonly string[]): void {
  const who = [...seen.keys()].sort();
  assert.deepEqual(who, [...pods].sort(), `answered by ${JSON.stringify(Object.fromEntries(seen))}`);
}

/** Asserts a reply and returns the source address the backend saw. */
export function answeredPeer(
  r: ProbeResult,
  pod?: string | readonly string[],
): { reply: EchoReply; peer: string } {
  if (!r.ok) assert.fail(`expected a reply, got ${r.error}: ${r.detail}`);
  if (typeof pod === 'string') assert.equal(r.reply.pod, pod, `answered by ${r.reply.pod}, expected ${pod}`);
  else if (pod)
    assert.ok(pod.includes(r.reply.pod), `answered by ${r.reply.pod}, expected one of ${pod.join(', ')}`);
  return { reply: r.reply, peer: peerIP(r.reply.peer) };
}

/**
 * Asserts that a request gets no answer; with `error`, that it fails that way. Returns how long
 * the failure took (for "REJECT answers quickly").
 */
export async function expectNoAnswer(
  sb: Sandbox,
  from: Where,
  req: RequestSpec,
  error?: Extract<ProbeResult, { ok: false }>['error'],
): Promise<number> {
  const started = performance.now();
  const r = await sb.request(from, req);
  const ms = performance.now() - started;
  if (r.ok)
    assert.fail(
      `expected no answer from ${req.ip}:${req.port}, got one from ${r.reply.pod} (peer ${r.reply.peer})`,
    );
  if (error !== undefined) {
    assert.equal(
      r.error,
      error,
      `${from} → ${req.proto} ${req.ip}:${req.port}: expected ${error}, got ${r.error}: ${r.detail}`,
    );
  }
  return ms;
}
