import { createHash } from 'node:crypto';
import { ipFamilyOf } from '../model/ip.js';
import type { IPBlock, NetworkPolicy, PodInfo, PolicyPeer, PolicyRule } from '../model/policy-types.js';
import { formatSelector, selectorKey } from '../model/selector.js';
import type { ClusterState, IPFamily, Protocol } from '../model/types.js';
import { compareStrings } from '../model/validate.js';
import { ipBlockCidrs } from './ip-ranges.js';
import {
  appliesIn,
  candidatePods,
  type Direction,
  DIRECTIONS,
  nameOfPolicy,
  ownedAddresses,
  peerSelectsPod,
  type PolicyIndex,
  policyIndex,
  policyIsolates,
  policySelects,
  podKey,
} from './pod-index.js';

/**
 * The policy plan of one node: what its kernel must enforce for the pods it runs, independent of
 * the mode that will write it (nftables sets and chains, or iptables chains and ipsets). Pure.
 *
 * Shape, chosen so that a pod coming, going or changing labels changes set elements only:
 * - sets of addresses (per family), networks, (protocol, port range) and (address, protocol, port);
 *   a set's name is derived from what defines it (a selector, a list of CIDRs, a port list), never
 *   from what it contains, so membership changes never rename anything;
 * - rules, each an independent allow: "a packet whose local end is in `targets` and whose other end
 *   is in `peer`, to a port in `ports`, is allowed in `direction`". Rules do not depend on which pods
 *   exist: every policy of the cluster has its rules on every node (with empty sets where it selects
 *   nothing here), so only a policy change changes rules. Their order is irrelevant.
 * - `isolated-ingress-*` / `isolated-egress-*`: the local pods some policy isolates in that
 *   direction; `local-*`: every local pod (the own-node pods the mechanism knows).
 *
 * Intended mechanism (docs/network-policy.md): a packet of a new connection whose source is in
 * `isolated-egress` must match an egress rule, and one whose destination is in `isolated-ingress`
 * an ingress rule, else it is dropped; established/related packets, a pod reaching itself, and the
 * node reaching its own pods are always allowed. Sets of rules whose policy selects no local pod
 * stay empty (no need to track peers no local pod can talk to); they fill when one appears.
 */

export interface PortRange {
  readonly protocol: Protocol;
  readonly first: number;
  readonly last: number;
}

/** One resolved named port: `address` is the destination pod's, `port` its number there. */
export interface AddressPort {
  readonly address: string;
  readonly protocol: Protocol;
  readonly port: number;
}

interface SetBase {
  readonly name: string;
  /** What defines the set, for comments and `svcplane explain`. */
  readonly description: string;
}

export type PlanSet =
  | (SetBase & {
      readonly kind: 'addresses';
      readonly family: IPFamily;
      readonly elements: readonly string[];
    })
  | (SetBase & { readonly kind: 'networks'; readonly family: IPFamily; readonly elements: readonly string[] })
  | (SetBase & { readonly kind: 'ports'; readonly elements: readonly PortRange[] })
  | (SetBase & {
      readonly kind: 'address-ports';
      readonly family: IPFamily;
      readonly elements: readonly AddressPort[];
    });

export type SetKind = PlanSet['kind'];

export interface PlanRule {
  readonly direction: Direction;
  readonly family: IPFamily;
  /** `namespace/name` of the policy this rule comes from, and the rule's index in its ingress/egress. */
  readonly policy: string;
  readonly rule: number;
  /** Local pods the policy selects: the destination for ingress, the source for egress. */
  readonly targets: string;
  /** The other end must be in this `addresses` or `networks` set; absent = any address. */
  readonly peer?: string;
  /**
   * Absent = any protocol and port. `ports`: (protocol, destination port) in a `ports` set.
   * `named`: (destination address, protocol, destination port) in an `address-ports` set: a named
   * port resolved on each destination pod.
   */
  readonly ports?: { readonly kind: 'ports' | 'named'; readonly set: string };
}

export interface PlannedDirection {
  readonly isolated: boolean;
  /** `namespace/name` of the policies that isolate the pod in this direction. */
  readonly policies: readonly string[];
}

/** A pod of this node that policies may concern, and what they do to it. */
export interface PlannedPod {
  readonly namespace: string;
  readonly name: string;
  readonly ips: readonly string[];
  readonly ingress: PlannedDirection;
  readonly egress: PlannedDirection;
  /** The pod could not be read (see PodInfo.invalid): isolated wherever a policy of its namespace applies. */
  readonly invalid?: readonly string[];
  /** Addresses another live pod claims too: in no selector set, isolated if either claimant is. */
  readonly sharedAddresses?: readonly string[];
}

export interface PolicyPlan {
  readonly node: string;
  readonly families: readonly IPFamily[];
  /** Every set, by name (sorted). */
  readonly sets: ReadonlyMap<string, PlanSet>;
  /** Every allow rule, sorted by ruleKey. */
  readonly rules: readonly PlanRule[];
  /** The live pods of this node, sorted by namespace/name. */
  readonly pods: readonly PlannedPod[];
}

export const ALL_FAMILIES: readonly IPFamily[] = ['IPv4', 'IPv6'];

const FAMILY_DIGIT: Readonly<Record<IPFamily, string>> = { IPv4: '4', IPv6: '6' };

/** The well-known sets. */
export function isolatedSetName(direction: Direction, family: IPFamily): string {
  return `isolated-${direction}-v${FAMILY_DIGIT[family]}`;
}
export function localSetName(family: IPFamily): string {
  return `local-v${FAMILY_DIGIT[family]}`;
}

/**
 * `<prefix><family digit>-<16 hex>`: at most 22 characters, inside ipset's 31 and nft's limits.
 * The hash is of what defines the set, so equal definitions share one set.
 */
function setName(prefix: string, family: IPFamily | undefined, definition: string): string {
  const hash = createHash('sha256').update(definition).digest('hex').slice(0, 16);
  return `${prefix}${family ? FAMILY_DIGIT[family] : ''}-${hash}`;
}

/** The identity of a rule: two plans have "the same rule" iff the keys are equal. */
export function ruleKey(r: PlanRule): string {
  return [
    r.direction,
    r.family,
    r.policy,
    r.rule,
    r.targets,
    r.peer ?? '*',
    r.ports ? `${r.ports.kind}:${r.ports.set}` : '*',
  ].join(' ');
}

export function portRangeKey(p: PortRange): string {
  return `${p.protocol}:${p.first}-${p.last}`;
}
export function addressPortKey(e: AddressPort): string {
  return `${e.address},${e.protocol}:${e.port}`;
}

/** The key of each element of a set (what diffs compare). */
export function elementKeys(set: PlanSet): string[] {
  switch (set.kind) {
    case 'addresses':
    case 'networks':
      return [...set.elements];
    case 'ports':
      return set.elements.map(portRangeKey);
    case 'address-ports':
      return set.elements.map(addressPortKey);
  }
}

/** Numeric ports of a rule: merged ranges per protocol; a port-less entry is the whole protocol. */
function portRanges(rule: PolicyRule): PortRange[] {
  const out: PortRange[] = [];
  for (const proto of ['SCTP', 'TCP', 'UDP'] as const) {
    const ranges = rule.ports
      .filter((p) => p.protocol === proto && typeof p.port !== 'string')
      .map((p) => (p.port === undefined ? [0, 65535] : [p.port as number, p.endPort ?? (p.port as number)]))
      .sort((a, b) => a[0]! - b[0]!);
    for (const [first, last] of ranges) {
      const prev = out[out.length - 1];
      if (prev && prev.protocol === proto && first! <= prev.last + 1) {
        out[out.length - 1] = { protocol: proto, first: prev.first, last: Math.max(prev.last, last!) };
      } else out.push({ protocol: proto, first: first!, last: last! });
    }
  }
  return out;
}

function namedPorts(rule: PolicyRule): { name: string; protocol: Protocol }[] {
  const seen = new Map<string, { name: string; protocol: Protocol }>();
  for (const p of rule.ports) {
    if (typeof p.port === 'string')
      seen.set(`${p.port}/${p.protocol}`, { name: p.port, protocol: p.protocol });
  }
  return [...seen.entries()].sort(([a], [b]) => compareStrings(a, b)).map(([, v]) => v);
}

type SelectorPeer = Extract<PolicyPeer, { kind: 'pods' }>;

function peerDescription(namespace: string, peer: SelectorPeer): string {
  const pods = peer.podSelector ? formatSelector(peer.podSelector) : undefined;
  if (!peer.namespaceSelector) return `pods ${pods ?? '{}'} of namespace ${namespace}`;
  const nss = formatSelector(peer.namespaceSelector);
  return pods === undefined ? `every pod of namespaces ${nss}` : `pods ${pods} of namespaces ${nss}`;
}

function blocksDescription(blocks: readonly IPBlock[]): string {
  return blocks
    .map((b) => (b.except.length > 0 ? `${b.cidr} except ${b.except.join(' ')}` : b.cidr))
    .join(', ');
}

/** A set's name and how to describe it, per family where it has one. */
interface SetRef {
  readonly names: Readonly<Record<IPFamily, string>>;
  readonly description: string;
}

interface CompiledGroup extends SetRef {
  /** What defines the group (the key its members are computed once per plan under). */
  readonly key: string;
  readonly peer: SelectorPeer;
}

interface CompiledRule {
  readonly index: number;
  /** No `from`/`to`: any address. */
  readonly anyPeer: boolean;
  readonly groups: readonly CompiledGroup[];
  /** The rule's ipBlocks as disjoint CIDRs, per family (absent: none of that family). */
  readonly networks: ReadonlyMap<IPFamily, { readonly name: string; readonly set: PlanSet }>;
  /** No `ports`: any protocol and port. */
  readonly anyPort: boolean;
  readonly ports?: { readonly name: string; readonly set: PlanSet };
  readonly named: readonly (SetRef & { readonly portName: string; readonly protocol: Protocol })[];
}

/** What a policy means regardless of which pods exist: computed once per policy object. */
interface CompiledPolicy {
  readonly name: string;
  readonly targets: SetRef & { readonly key: string };
  readonly directions: readonly { readonly direction: Direction; readonly rules: readonly CompiledRule[] }[];
}

const perFamily = (prefix: string, definition: string): Record<IPFamily, string> => ({
  IPv4: setName(prefix, 'IPv4', definition),
  IPv6: setName(prefix, 'IPv6', definition),
});

function compileRule(np: NetworkPolicy, rule: PolicyRule, index: number): CompiledRule {
  const groups: CompiledGroup[] = [];
  for (const peer of rule.peers) {
    if (peer.kind !== 'pods') continue;
    const key = JSON.stringify([
      peer.namespaceSelector
        ? ['namespaces', selectorKey(peer.namespaceSelector)]
        : ['namespace', np.namespace],
      peer.podSelector ? selectorKey(peer.podSelector) : '*',
    ]);
    if (groups.some((g) => g.key === key)) continue;
    groups.push({
      key,
      peer,
      names: perFamily('grp', key),
      description: peerDescription(np.namespace, peer),
    });
  }
  const blocks = rule.peers.flatMap((p) => (p.kind === 'ipBlock' ? [p.ipBlock] : []));
  const networks = new Map<IPFamily, { name: string; set: PlanSet }>();
  for (const [family, cidrs] of ipBlockCidrs(blocks)) {
    if (cidrs.length === 0) continue;
    const name = setName('net', family, cidrs.join(' '));
    const description = blocksDescription(blocks.filter((b) => b.family === family));
    networks.set(family, { name, set: { kind: 'networks', name, family, description, elements: cidrs } });
  }
  const ranges = portRanges(rule);
  let ports: CompiledRule['ports'];
  if (ranges.length > 0) {
    const name = setName('prt', undefined, ranges.map(portRangeKey).join(' '));
    const description = ranges
      .map((r) => `${r.protocol}/${r.first === r.last ? r.first : `${r.first}-${r.last}`}`)
      .join(', ');
    ports = { name, set: { kind: 'ports', name, description, elements: ranges } };
  }
  return {
    index,
    anyPeer: rule.peers.length === 0,
    groups,
    networks,
    anyPort: rule.ports.length === 0,
    ...(ports ? { ports } : {}),
    named: namedPorts(rule).map((n) => ({
      portName: n.name,
      protocol: n.protocol,
      names: perFamily('nmd', `${n.name}/${n.protocol}`),
      description: `container port ${n.name}/${n.protocol} of each pod`,
    })),
  };
}

const compiledPolicies = new WeakMap<NetworkPolicy, CompiledPolicy>();

/** Policies keep their identity across states while unchanged (buildClusterState), so this is a cache. */
function compilePolicy(np: NetworkPolicy): CompiledPolicy {
  const hit = compiledPolicies.get(np);
  if (hit) return hit;
  const key = `targets ${np.namespace} ${np.podSelector ? selectorKey(np.podSelector) : '<unreadable>'}`;
  const compiled: CompiledPolicy = {
    name: nameOfPolicy(np),
    targets: {
      key,
      names: perFamily('tgt', key),
      description: np.podSelector
        ? `pods ${formatSelector(np.podSelector)} of namespace ${np.namespace} on this node`
        : `every pod of namespace ${np.namespace} on this node (the policy's selector is unreadable)`,
    },
    directions: DIRECTIONS.filter((d) => appliesIn(np, d)).map((direction) => ({
      direction,
      rules: np[direction].map((rule, i) => compileRule(np, rule, i)),
    })),
  };
  compiledPolicies.set(np, compiled);
  return compiled;
}

/** Accumulates sets by name; elements are filled only for sets an active rule uses. */
class SetTable {
  readonly sets = new Map<string, PlanSet>();
  private readonly fill = new Map<string, () => PlanSet>();

  /** Declares a set (idempotent); `make` computes it with its elements, `empty` without. */
  declare(name: string, empty: PlanSet, make: () => PlanSet): string {
    if (!this.sets.has(name)) {
      this.sets.set(name, empty);
      this.fill.set(name, make);
    }
    return name;
  }

  /** Fills the set's elements (once). */
  activate(name: string): void {
    const make = this.fill.get(name);
    if (!make) return;
    this.fill.delete(name);
    this.sets.set(name, make());
  }
}

class PlanBuilder {
  readonly table = new SetTable();
  readonly rules = new Map<string, PlanRule>();
  private readonly localPods: PodInfo[];
  private readonly localByNamespace = new Map<string, PodInfo[]>();
  /** Members per group / targets key, computed once per plan (for every family). */
  private readonly members = new Map<string, readonly PodInfo[]>();

  constructor(
    private readonly index: PolicyIndex,
    private readonly node: string,
    private readonly families: readonly IPFamily[],
  ) {
    this.localPods = [];
    for (const [ns, pods] of index.podsByNamespace) {
      const local = pods.filter((p) => p.nodeName === node);
      if (local.length === 0) continue;
      this.localByNamespace.set(ns, local);
      this.localPods.push(...local);
    }
  }

  private memo(key: string, compute: () => readonly PodInfo[]): readonly PodInfo[] {
    let hit = this.members.get(key);
    if (!hit) {
      hit = compute();
      this.members.set(key, hit);
    }
    return hit;
  }

  addressesOf(pods: readonly PodInfo[], family: IPFamily): string[] {
    const out = new Set<string>();
    for (const pod of pods) {
      for (const ip of ownedAddresses(this.index, pod)) if (ipFamilyOf(ip) === family) out.add(ip);
    }
    return [...out].sort(compareStrings);
  }

  /** The local pods the policy selects, as a set of the family; active when it has members. */
  targetsSet(np: NetworkPolicy, c: CompiledPolicy, family: IPFamily): { name: string; active: boolean } {
    const selected = this.memo(c.targets.key, () =>
      (this.localByNamespace.get(np.namespace) ?? []).filter((p) => policySelects(np, p)),
    );
    const name = c.targets.names[family];
    const set: PlanSet = {
      kind: 'addresses',
      name,
      family,
      description: c.targets.description,
      elements: this.addressesOf(selected, family),
    };
    // Targets are always filled: they decide whether the policy's other sets are needed.
    this.table.declare(name, set, () => set);
    return { name, active: set.elements.length > 0 };
  }

  peerGroup(namespace: string, g: CompiledGroup, family: IPFamily): string {
    const name = g.names[family];
    const empty: PlanSet = { kind: 'addresses', name, family, description: g.description, elements: [] };
    return this.table.declare(name, empty, () => {
      const members = this.memo(g.key, () =>
        candidatePods(this.index, namespace, g.peer).filter((p) =>
          peerSelectsPod(this.index, namespace, g.peer, p),
        ),
      );
      return { ...empty, elements: this.addressesOf(members, family) };
    });
  }

  named(n: CompiledRule['named'][number], family: IPFamily): string {
    const name = n.names[family];
    const empty: PlanSet = { kind: 'address-ports', name, family, description: n.description, elements: [] };
    return this.table.declare(name, empty, () => {
      const keyed: [string, AddressPort][] = [];
      for (const pods of this.index.podsByNamespace.values()) {
        for (const pod of pods) {
          if (pod.invalid) continue;
          const np = pod.namedPorts.find((x) => x.name === n.portName && x.protocol === n.protocol);
          if (!np) continue;
          for (const ip of ownedAddresses(this.index, pod)) {
            if (ipFamilyOf(ip) !== family) continue;
            const e: AddressPort = { address: ip, protocol: n.protocol, port: np.port };
            keyed.push([addressPortKey(e), e]);
          }
        }
      }
      // Sorted by key, each key built once (a set of every pod's named port: 10k elements at scale).
      keyed.sort((a, b) => compareStrings(a[0], b[0]));
      return { ...empty, elements: keyed.map(([, e]) => e) };
    });
  }

  addRules(np: NetworkPolicy, family: IPFamily): void {
    const c = compilePolicy(np);
    const targets = this.targetsSet(np, c, family);
    for (const { direction, rules } of c.directions) {
      for (const rule of rules) {
        const peers: (string | undefined)[] = [];
        if (rule.anyPeer) peers.push(undefined);
        else {
          for (const g of rule.groups) peers.push(this.peerGroup(np.namespace, g, family));
          const net = rule.networks.get(family);
          if (net) peers.push(this.table.declare(net.name, net.set, () => net.set));
        }
        const ports: PlanRule['ports'][] = [];
        if (rule.anyPort) ports.push(undefined);
        else {
          const p = rule.ports;
          if (p) ports.push({ kind: 'ports', set: this.table.declare(p.name, p.set, () => p.set) });
          for (const n of rule.named) ports.push({ kind: 'named', set: this.named(n, family) });
        }
        for (const peer of peers) {
          for (const p of ports) {
            const r: PlanRule = {
              direction,
              family,
              policy: c.name,
              rule: rule.index,
              targets: targets.name,
              ...(peer !== undefined ? { peer } : {}),
              ...(p !== undefined ? { ports: p } : {}),
            };
            this.rules.set(ruleKey(r), r);
            if (targets.active) {
              if (peer !== undefined) this.table.activate(peer);
              if (p !== undefined) this.table.activate(p.set);
            }
          }
        }
      }
    }
  }

  plannedPod(pod: PodInfo): PlannedPod {
    const policies = this.index.policiesByNamespace.get(pod.namespace) ?? [];
    const dir = (d: Direction): PlannedDirection => {
      const isolating = policies.filter((np) => policyIsolates(np, pod, d)).map(nameOfPolicy);
      return { isolated: isolating.length > 0, policies: isolating };
    };
    const shared = pod.ips.filter((ip) => (this.index.claimants.get(ip)?.length ?? 0) > 1);
    return {
      namespace: pod.namespace,
      name: pod.name,
      ips: pod.ips,
      ingress: dir('ingress'),
      egress: dir('egress'),
      ...(pod.invalid ? { invalid: pod.invalid } : {}),
      ...(shared.length > 0 ? { sharedAddresses: shared } : {}),
    };
  }

  build(): PolicyPlan {
    const pods = [...this.localPods]
      .sort((a, b) => compareStrings(podKey(a), podKey(b)))
      .map((p) => this.plannedPod(p));
    for (const family of this.families) {
      const inFamily = (ips: readonly string[]): string[] =>
        ips.filter((ip) => ipFamilyOf(ip) === family).sort(compareStrings);
      const local = localSetName(family);
      const localSet: PlanSet = {
        kind: 'addresses',
        name: local,
        family,
        description: 'every pod of this node',
        elements: [...new Set(inFamily(pods.flatMap((p) => p.ips)))],
      };
      this.table.declare(local, localSet, () => localSet);
      for (const d of DIRECTIONS) {
        const name = isolatedSetName(d, family);
        const elements = [...new Set(inFamily(pods.filter((p) => p[d].isolated).flatMap((p) => p.ips)))];
        const set: PlanSet = {
          kind: 'addresses',
          name,
          family,
          description: `pods of this node isolated for ${d}`,
          elements,
        };
        this.table.declare(name, set, () => set);
      }
      for (const np of this.index.policies) if (!np.invalid) this.addRules(np, family);
    }
    const sets = new Map([...this.table.sets].sort(([a], [b]) => compareStrings(a, b)));
    const rules = [...this.rules].sort(([a], [b]) => compareStrings(a, b)).map(([, r]) => r);
    return { node: this.node, families: this.families, sets, rules, pods };
  }
}

/** The policy plan of `node` for the families it runs. */
export function computePolicyPlan(
  state: ClusterState,
  node: string,
  families: readonly IPFamily[] = ALL_FAMILIES,
): PolicyPlan {
  return new PlanBuilder(policyIndex(state), node, families).build();
}
