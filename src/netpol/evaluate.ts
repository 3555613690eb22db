import { parseIP } from '../model/ip.js';
import type { NetworkPolicy, PodInfo, PolicyPort, PolicyRule } from '../model/policy-types.js';
import type { ClusterState, IPFamily, Protocol } from '../model/types.js';
import { cidrHas } from './ip-ranges.js';
import {
  type Direction,
  nameOfPolicy,
  ownerOf,
  peerSelectsPod,
  type PolicyIndex,
  policyIndex,
  policyIsolates,
  policySelects,
  podKey,
} from './pod-index.js';

/**
 * What NetworkPolicy says about one packet, straight from the policies (no plan): the reference the
 * plan is checked against, and what `svcplane trace` and `svcplane explain` will print. Pure.
 *
 * A packet passes when the egress side of its source pod and the ingress side of its destination
 * pod both let it. One side is not policed when its address is no live pod's (an external address,
 * a node, a host-network pod), or, with `node`, when that pod runs on another node (its own node
 * enforces it). Always allowed: a pod reaching itself ("a pod cannot block access to itself") and,
 * for ingress, the packet's coming from the pod's own node. The packet is the one policy sees:
 * after DNAT (a Service's backend pod and target port), before SNAT.
 */

export interface Packet {
  readonly src: string;
  readonly dst: string;
  readonly protocol: Protocol;
  /** Destination port (after DNAT). */
  readonly port: number;
  /** Sent by the node itself (its host network namespace), e.g. a kubelet probe. */
  readonly fromNode?: boolean;
}

export interface EvaluateOptions {
  /** Police only the pods of this node (what this node's kernel enforces). Default: every pod. */
  readonly node?: string;
}

export interface RuleRef {
  /** `namespace/name` of the policy. */
  readonly policy: string;
  readonly direction: Direction;
  /** Index in the policy's ingress/egress. */
  readonly rule: number;
}

/** What one side (source pod for egress, destination pod for ingress) says. */
export type SideVerdict =
  | { readonly kind: 'not-policed'; readonly reason: string }
  | { readonly kind: 'exempt'; readonly pod: string; readonly reason: string }
  | { readonly kind: 'not-isolated'; readonly pod: string }
  | { readonly kind: 'allowed'; readonly pod: string; readonly by: readonly RuleRef[] }
  | {
      readonly kind: 'denied';
      readonly pod: string;
      /** The policies isolating the pod in this direction (invalid ones marked ` (invalid)`). */
      readonly isolatedBy: readonly string[];
      readonly reason: string;
    };

export interface PolicyVerdict {
  readonly allowed: boolean;
  readonly egress: SideVerdict;
  readonly ingress: SideVerdict;
  /** One line: why. */
  readonly reason: string;
}

export function sidePasses(v: SideVerdict): boolean {
  return v.kind !== 'denied';
}

/** A packet with canonical addresses, or the reason it is not one. */
export function canonicalPacket(packet: Packet): (Packet & { family: IPFamily }) | { error: string } {
  const src = parseIP(packet.src);
  const dst = parseIP(packet.dst);
  if (!src) return { error: `source ${JSON.stringify(packet.src)} is not an IP address` };
  if (!dst) return { error: `destination ${JSON.stringify(packet.dst)} is not an IP address` };
  if (src.family !== dst.family) return { error: 'source and destination are of different IP families' };
  if (!Number.isInteger(packet.port) || packet.port < 0 || packet.port > 65535) {
    return { error: `port ${packet.port} is not a port number` };
  }
  return { ...packet, src: src.ip, dst: dst.ip, family: src.family };
}

function portMatches(p: PolicyPort, packet: Packet, destination: PodInfo | undefined): boolean {
  if (p.protocol !== packet.protocol) return false;
  if (p.port === undefined) return true;
  if (typeof p.port === 'number') return packet.port >= p.port && packet.port <= (p.endPort ?? p.port);
  // A named port is a container port of the destination pod; a destination that is no pod has none.
  if (!destination || destination.invalid) return false;
  return destination.namedPorts.some(
    (n) => n.name === p.port && n.protocol === p.protocol && n.port === packet.port,
  );
}

export class PolicyEvaluator {
  private readonly index: PolicyIndex;

  constructor(
    state: ClusterState,
    private readonly options: EvaluateOptions = {},
  ) {
    this.index = policyIndex(state);
  }

  evaluate(raw: Packet): PolicyVerdict {
    const packet = canonicalPacket(raw);
    if ('error' in packet) throw new Error(`not a packet: ${packet.error}`);
    const egress = this.side(packet, 'egress');
    const ingress = this.side(packet, 'ingress');
    const allowed = sidePasses(egress) && sidePasses(ingress);
    return { allowed, egress, ingress, reason: describe(allowed, egress, ingress) };
  }

  private ruleAllows(
    np: NetworkPolicy,
    rule: PolicyRule,
    direction: Direction,
    pod: PodInfo,
    packet: Packet,
  ): boolean {
    const other = direction === 'ingress' ? packet.src : packet.dst;
    const otherPod = ownerOf(this.index, other);
    const peerOk =
      rule.peers.length === 0 ||
      rule.peers.some((peer) =>
        peer.kind === 'ipBlock'
          ? cidrHas(peer.ipBlock.cidr, peer.ipBlock.family, other) &&
            !peer.ipBlock.except.some((e) => cidrHas(e, peer.ipBlock.family, other))
          : otherPod !== undefined && peerSelectsPod(this.index, np.namespace, peer, otherPod),
      );
    if (!peerOk) return false;
    const destination = direction === 'ingress' ? pod : otherPod;
    return rule.ports.length === 0 || rule.ports.some((p) => portMatches(p, packet, destination));
  }

  private side(packet: Packet, direction: Direction): SideVerdict {
    const address = direction === 'egress' ? packet.src : packet.dst;
    const claimants = this.index.claimants.get(address) ?? [];
    if (claimants.length === 0) {
      return { kind: 'not-policed', reason: `${address} is no pod's address` };
    }
    const node = this.options.node;
    const policed = node === undefined ? claimants : claimants.filter((p) => p.nodeName === node);
    const names = claimants.map(podKey).join(', ');
    if (policed.length === 0) {
      return { kind: 'not-policed', reason: `${names} runs on another node, which enforces its policies` };
    }
    const first = podKey(policed[0]!);
    if (packet.src === packet.dst)
      return { kind: 'exempt', pod: first, reason: 'a pod may always reach itself' };
    if (direction === 'ingress' && packet.fromNode) {
      return { kind: 'exempt', pod: first, reason: 'a pod may always be reached from its own node' };
    }
    const isolating = new Map<string, NetworkPolicy>();
    for (const pod of policed) {
      for (const np of this.index.policiesByNamespace.get(pod.namespace) ?? []) {
        if (policyIsolates(np, pod, direction)) isolating.set(nameOfPolicy(np), np);
      }
    }
    if (isolating.size === 0) return { kind: 'not-isolated', pod: first };
    const isolatedBy = [...isolating.values()].map(
      (np) => `${nameOfPolicy(np)}${np.invalid ? ' (invalid)' : ''}`,
    );
    if (claimants.length > 1) {
      return {
        kind: 'denied',
        pod: first,
        isolatedBy,
        reason: `${address} is claimed by ${names}: no policy can allow it while both claim it`,
      };
    }
    const pod = claimants[0]!;
    if (pod.invalid) {
      return {
        kind: 'denied',
        pod: first,
        isolatedBy,
        reason: `pod ${first} could not be read (${pod.invalid.join(', ')}): isolated, nothing allows it`,
      };
    }
    const by: RuleRef[] = [];
    for (const np of isolating.values()) {
      if (np.invalid || !policySelects(np, pod)) continue;
      np[direction].forEach((rule, i) => {
        if (this.ruleAllows(np, rule, direction, pod, packet))
          by.push({ policy: nameOfPolicy(np), direction, rule: i });
      });
    }
    if (by.length > 0) return { kind: 'allowed', pod: first, by };
    const invalid = [...isolating.values()].filter((np) => np.invalid).map(nameOfPolicy);
    const other = direction === 'ingress' ? `from ${packet.src}` : `to ${packet.dst}`;
    return {
      kind: 'denied',
      pod: first,
      isolatedBy,
      reason:
        `no ${direction} rule of ${isolatedBy.join(', ')} allows ${packet.protocol}/${packet.port} ${other}` +
        (invalid.length > 0 ? ` (invalid, allowing nothing until fixed: ${invalid.join(', ')})` : ''),
    };
  }
}

function describeSide(direction: Direction, v: SideVerdict): string {
  switch (v.kind) {
    case 'not-policed':
      return `${direction}: not policed (${v.reason})`;
    case 'exempt':
      return `${direction} of ${v.pod}: allowed (${v.reason})`;
    case 'not-isolated':
      return `${direction} of ${v.pod}: not isolated`;
    case 'allowed':
      return `${direction} of ${v.pod}: allowed by ${v.by.map((r) => `${r.policy} ${r.direction}[${r.rule}]`).join(', ')}`;
    case 'denied':
      return `${direction} of ${v.pod}: DENIED, isolated by ${v.isolatedBy.join(', ')}: ${v.reason}`;
  }
}

function describe(allowed: boolean, egress: SideVerdict, ingress: SideVerdict): string {
  return `${allowed ? 'allowed' : 'denied'}: ${describeSide('egress', egress)}; ${describeSide('ingress', ingress)}`;
}

/** One packet, one verdict (builds the index: for many packets, use a PolicyEvaluator). */
export function evaluatePacket(
  state: ClusterState,
  packet: Packet,
  options: EvaluateOptions = {},
): PolicyVerdict {
  return new PolicyEvaluator(state, options).evaluate(packet);
}
