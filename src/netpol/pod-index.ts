import type { NamespaceInfo, NetworkPolicy, PodInfo, PolicyPeer, PolicyType } from '../model/policy-types.js';
import { policyKey } from '../model/policy-types.js';
import { selectorMatches } from '../model/selector.js';
import type { ClusterState } from '../model/types.js';
import { compareStrings } from '../model/validate.js';

/**
 * Who is who, once per state, for the plan and for evaluate(): the same rules in both, so that they
 * can only disagree if one of them encodes a rule wrongly (which the property test looks for).
 *
 * - A pod takes part in policy (selected, or matched as a peer) when it is live: not host-network
 *   (its addresses are the node's; both reference agents and ClusterNetworkPolicy leave such pods
 *   out), and not Succeeded/Failed (its address may already belong to a new pod).
 * - An address is a pod's only while that pod alone claims it; an address two live pods claim is
 *   nobody's: no selector matches it (only an ipBlock can), and it is isolated if either is.
 * - A pod whose Namespace object is unknown matches no namespaceSelector: its labels are unknown,
 *   and guessing could open (a `NotIn` selector matches a namespace without labels). With the API
 *   this lasts until the Namespace arrives; in manifests, write the Namespace.
 * - An invalid pod (labels unreadable) matches no selector, and is isolated in every direction a
 *   policy of its namespace applies to (see PodInfo.invalid).
 */

export type Direction = 'ingress' | 'egress';

export const DIRECTIONS: readonly Direction[] = ['ingress', 'egress'];

const TYPE_OF: Readonly<Record<Direction, PolicyType>> = { ingress: 'Ingress', egress: 'Egress' };

export interface PolicyIndex {
  readonly namespaces: ReadonlyMap<string, NamespaceInfo>;
  /** Live pods by namespace, each list sorted by name. */
  readonly podsByNamespace: ReadonlyMap<string, readonly PodInfo[]>;
  /** Address → the live pods that claim it. */
  readonly claimants: ReadonlyMap<string, readonly PodInfo[]>;
  /** Every policy, by `namespace/name`. */
  readonly policies: readonly NetworkPolicy[];
  readonly policiesByNamespace: ReadonlyMap<string, readonly NetworkPolicy[]>;
}

export const podKey = (pod: Pick<PodInfo, 'namespace' | 'name'>): string => `${pod.namespace}/${pod.name}`;

export const nameOfPolicy = (np: Pick<NetworkPolicy, 'namespace' | 'name'>): string =>
  policyKey(np.namespace, np.name);

export function isLive(pod: PodInfo): boolean {
  return !pod.hostNetwork && pod.phase !== 'Succeeded' && pod.phase !== 'Failed';
}

const byName = <T extends { readonly name: string }>(a: T, b: T): number => compareStrings(a.name, b.name);

export function policyIndex(state: ClusterState): PolicyIndex {
  const podsByNamespace = new Map<string, PodInfo[]>();
  const claimants = new Map<string, PodInfo[]>();
  for (const pod of state.pods?.values() ?? []) {
    if (!isLive(pod)) continue;
    const list = podsByNamespace.get(pod.namespace);
    if (list) list.push(pod);
    else podsByNamespace.set(pod.namespace, [pod]);
    for (const ip of pod.ips) {
      const c = claimants.get(ip);
      if (c) c.push(pod);
      else claimants.set(ip, [pod]);
    }
  }
  for (const list of podsByNamespace.values()) list.sort(byName);
  const policies = [...(state.networkPolicies?.values() ?? [])].sort(
    (a, b) => compareStrings(a.namespace, b.namespace) || byName(a, b),
  );
  const policiesByNamespace = new Map<string, NetworkPolicy[]>();
  for (const np of policies) {
    const list = policiesByNamespace.get(np.namespace);
    if (list) list.push(np);
    else policiesByNamespace.set(np.namespace, [np]);
  }
  return {
    namespaces: state.namespaces ?? new Map(),
    podsByNamespace,
    claimants,
    policies,
    policiesByNamespace,
  };
}

/** The pod that alone claims `ip`, if any. */
export function ownerOf(index: PolicyIndex, ip: string): PodInfo | undefined {
  const c = index.claimants.get(ip);
  return c?.length === 1 ? c[0] : undefined;
}

/** The addresses of `pod` that it alone claims. */
export function ownedAddresses(index: PolicyIndex, pod: PodInfo): string[] {
  return pod.ips.filter((ip) => index.claimants.get(ip)?.length === 1);
}

export function appliesIn(np: NetworkPolicy, direction: Direction): boolean {
  return np.policyTypes.includes(TYPE_OF[direction]);
}

/** Whether the policy's podSelector selects the pod (an unreadable selector selects its whole namespace). */
export function policySelects(np: NetworkPolicy, pod: PodInfo): boolean {
  if (pod.namespace !== np.namespace || pod.invalid) return false;
  return np.podSelector === undefined || selectorMatches(np.podSelector, pod.labels);
}

/**
 * Whether a policy isolates the pod in the direction: it applies in that direction and selects the
 * pod, or the pod is invalid and the policy is of its namespace (fail closed).
 */
export function policyIsolates(np: NetworkPolicy, pod: PodInfo, direction: Direction): boolean {
  if (!appliesIn(np, direction) || np.namespace !== pod.namespace) return false;
  return pod.invalid !== undefined || policySelects(np, pod);
}

/** Whether a selector peer of a policy in `policyNamespace` matches the pod. */
export function peerSelectsPod(
  index: PolicyIndex,
  policyNamespace: string,
  peer: Extract<PolicyPeer, { kind: 'pods' }>,
  pod: PodInfo,
): boolean {
  if (pod.invalid) return false;
  if (peer.namespaceSelector) {
    const ns = index.namespaces.get(pod.namespace);
    if (!ns || !selectorMatches(peer.namespaceSelector, ns.labels)) return false;
  } else if (pod.namespace !== policyNamespace) return false;
  return peer.podSelector === undefined || selectorMatches(peer.podSelector, pod.labels);
}

/** The live pods a selector peer can match (the namespaces it looks in), for the plan's scans. */
export function candidatePods(
  index: PolicyIndex,
  policyNamespace: string,
  peer: Extract<PolicyPeer, { kind: 'pods' }>,
): PodInfo[] {
  if (!peer.namespaceSelector) return [...(index.podsByNamespace.get(policyNamespace) ?? [])];
  const out: PodInfo[] = [];
  // Order is irrelevant: members become sorted addresses.
  for (const [name, ns] of index.namespaces) {
    if (selectorMatches(peer.namespaceSelector, ns.labels))
      out.push(...(index.podsByNamespace.get(name) ?? []));
  }
  return out;
}
