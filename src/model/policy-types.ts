import type { LabelSelector } from './selector.js';
import type { IPFamily, Protocol } from './types.js';

/**
 * The model of what NetworkPolicy enforcement reads: v1 Namespaces, v1 Pods (only the fields a
 * policy can see) and networking.k8s.io/v1 NetworkPolicies, validated and defaulted as the API server
 * would (policyTypes, protocol TCP), so that manifest input and API input mean the same.
 */

/** The label the control plane puts on every Namespace, equal to its name. */
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

export interface NamespaceInfo {
  readonly name: string;
  /** Its labels, with `kubernetes.io/metadata.name` always set to the name (as the API server does). */
  readonly labels: Readonly<Record<string, string>>;
}

export type PodPhase = 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';

/** A named container port: what a NetworkPolicy's named `port` resolves against. */
export interface NamedPort {
  /** IANA_SVC_NAME, e.g. `serve-80-tcp`. */
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: number;
}

export interface PodInfo {
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** `spec.nodeName`; '' while unscheduled. */
  readonly nodeName: string;
  readonly hostNetwork: boolean;
  /** `status.phase`; '' when the status has none yet. */
  readonly phase: PodPhase | '';
  /** Canonical `status.podIPs` (else `status.podIP`), at most one per family, in status order. */
  readonly ips: readonly string[];
  /** Named ports of `spec.containers[].ports` (unnamed ones cannot be referred to by a policy). */
  readonly namedPorts: readonly NamedPort[];
  /**
   * Set when some field could not be read: its labels and ports are not trusted, so no selector
   * matches it and, on its node, it is isolated wherever a policy of its namespace could isolate it
   * (fail closed). Holds the fields with problems.
   */
  readonly invalid?: readonly string[];
}

export type PolicyType = 'Ingress' | 'Egress';

/** One entry of a rule's `ports`: a protocol and, optionally, a port (number or name) or a range. */
export interface PolicyPort {
  /** Defaulted to TCP, as the API server does. */
  readonly protocol: Protocol;
  /** Absent: every port of the protocol. A string is a named container port of the destination pod. */
  readonly port?: number | string;
  /** Inclusive end of the range `port`..`endPort` (only with a numeric port). */
  readonly endPort?: number;
}

export interface IPBlock {
  /** Canonical, host bits cleared (`10.1.2.3/8` reads `10.0.0.0/8`, as the e2e suite's `<podIP>/4` needs). */
  readonly cidr: string;
  readonly family: IPFamily;
  /** Canonical CIDRs, each strictly inside `cidr`, sorted. */
  readonly except: readonly string[];
}

/**
 * One element of `from`/`to`. Selector peers: `podSelector` alone = pods of the policy's namespace;
 * `namespaceSelector` alone = every pod of the matching namespaces; both = AND.
 */
export type PolicyPeer =
  | {
      readonly kind: 'pods';
      readonly podSelector?: LabelSelector;
      readonly namespaceSelector?: LabelSelector;
    }
  | { readonly kind: 'ipBlock'; readonly ipBlock: IPBlock };

/** One ingress or egress rule. Traffic must match a peer AND a port. */
export interface PolicyRule {
  /** `from` / `to`; empty (missing or `[]`) = every address, pod or not. */
  readonly peers: readonly PolicyPeer[];
  /** Empty (missing or `[]`) = every port of every protocol. */
  readonly ports: readonly PolicyPort[];
}

export interface NetworkPolicy {
  readonly namespace: string;
  readonly name: string;
  /**
   * The pods it applies to, in its namespace. Undefined only for an invalid policy whose selector
   * could not be read: it then applies to every pod of the namespace (fail closed).
   */
  readonly podSelector?: LabelSelector;
  /** Defaulted: `Ingress`, plus `Egress` when `spec.egress` is non-empty. In the order Ingress, Egress. */
  readonly policyTypes: readonly PolicyType[];
  readonly ingress: readonly PolicyRule[];
  readonly egress: readonly PolicyRule[];
  /**
   * Set when the policy is invalid: the fields with problems. An invalid policy allows nothing (its
   * rules are empty) but still isolates the pods it selects for its policy types, until it is fixed.
   */
  readonly invalid?: readonly string[];
}

export function policyKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}
