/**
 * The validated cluster model: everything a dataplane backend needs, nothing else.
 * Values are plain, immutable and normalized (IPs canonical, defaults applied), so two states
 * can be compared structurally and renderers stay pure.
 */

import type { NamespaceInfo, NetworkPolicy, PodInfo } from './policy-types.js';

export type IPFamily = 'IPv4' | 'IPv6';
export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type TrafficPolicy = 'Cluster' | 'Local';
export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';

/** Where a problem or object came from: enough for an operator to find it. */
export interface ObjectRef {
  readonly kind: string;
  readonly namespace?: string;
  readonly name: string;
  /** File (and document index) for manifest input; absent for API objects. */
  readonly source?: string;
}

/** One reason an object (or part of it) was rejected. The object is skipped; nothing else is. */
export interface Problem {
  readonly object: ObjectRef;
  /** JSON-path-like field, e.g. `spec.ports[1].port`. */
  readonly field: string;
  readonly reason: string;
}

/** "skipped KIND ns/name[ (source)]: field: reason": how every command reports a skipped object. */
export function describeProblem(p: Problem, opts: { withSource?: boolean } = {}): string {
  const o = p.object;
  const source = opts.withSource === true && o.source ? ` (${o.source})` : '';
  return `skipped ${o.kind} ${o.namespace ? `${o.namespace}/` : ''}${o.name}${source}: ${p.field}: ${p.reason}`;
}

export interface LoadBalancerIngress {
  /** Canonical IP. */
  readonly ip: string;
  /** `Proxy` ingress IPs are not programmed (the load balancer delivers to the node). */
  readonly ipMode: 'VIP' | 'Proxy';
}

export type SessionAffinity =
  { readonly type: 'None' } | { readonly type: 'ClientIP'; readonly timeoutSeconds: number };

/**
 * One endpoint of one service port, as kube-proxy's endpointslicecache sees it.
 * `ready = ready ?? true`, `serving = serving ?? true` (kube-proxy: nil means serving), `terminating = terminating ?? false`.
 */
export interface Endpoint {
  /** Canonical IP (leading zeros removed, IPv6 RFC 5952). */
  readonly ip: string;
  readonly port: number;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly nodeName?: string;
  readonly zone?: string;
  /** `hints.forZones[].name`; undefined when the slice carries no zone hints for this endpoint. */
  readonly zoneHints?: readonly string[];
  /** `hints.forNodes[].name`; undefined when absent. */
  readonly nodeHints?: readonly string[];
}

/** One port of one Service, with its endpoints (both families, sorted by `ip:port` string). */
export interface ServicePort {
  readonly namespace: string;
  readonly serviceName: string;
  /** `spec.ports[].name`, '' when unnamed. */
  readonly portName: string;
  readonly protocol: Protocol;
  readonly port: number;
  /** `spec.ports[].targetPort` as written (number or name); informational, endpoints carry the real port. */
  readonly targetPort: number | string;
  /** 0 when none. */
  readonly nodePort: number;
  readonly endpoints: readonly Endpoint[];
}

/** A Service as the dataplane sees it. */
export interface Service {
  readonly namespace: string;
  readonly name: string;
  readonly type: ServiceType;
  /** Canonical cluster IPs, at most one per family, in `spec.clusterIPs` order. */
  readonly clusterIPs: readonly string[];
  readonly externalIPs: readonly string[];
  readonly loadBalancerIngress: readonly LoadBalancerIngress[];
  /** Canonical CIDRs (trimmed, network address normalized). */
  readonly loadBalancerSourceRanges: readonly string[];
  readonly sessionAffinity: SessionAffinity;
  readonly externalTrafficPolicy: TrafficPolicy;
  readonly internalTrafficPolicy: TrafficPolicy;
  /** 0 when none. */
  readonly healthCheckNodePort: number;
  readonly trafficDistribution?: string;
  readonly ports: readonly ServicePort[];
  /**
   * Set when the Service is recognized but gets no dataplane: `headless`, `ExternalName`,
   * or `service-proxy-name` (handled by another proxy).
   */
  readonly skipReason?: 'headless' | 'ExternalName' | 'service-proxy-name';
}

export interface NodeInfo {
  readonly name: string;
  /** Canonical addresses from `status.addresses` (InternalIP first, then ExternalIP). */
  readonly addresses: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  /**
   * Canonical CIDRs from `spec.podCIDRs` (else `spec.podCIDR`), at most one per family, in spec
   * order; empty when the node has none. Used by --detect-local-mode=NodeCIDR.
   */
  readonly podCIDRs: readonly string[];
  /** `metadata.deletionTimestamp`, when the Node is being deleted. */
  readonly deletionTimestamp?: string;
  /** Keys of `spec.taints`, when it has any (/healthz: the cluster autoscaler's deletion taint). */
  readonly taintKeys?: readonly string[];
}

/** A complete, validated snapshot. Keys of `services` are `namespace/name`. */
export interface ClusterState {
  readonly services: ReadonlyMap<string, Service>;
  readonly nodes: ReadonlyMap<string, NodeInfo>;
  /**
   * What NetworkPolicy enforcement reads (src/model/policy-types.ts): Namespaces by name, Pods and
   * NetworkPolicies by `namespace/name`. Absent = none (a state built by hand); buildClusterState
   * always sets them.
   */
  readonly namespaces?: ReadonlyMap<string, NamespaceInfo>;
  readonly pods?: ReadonlyMap<string, PodInfo>;
  readonly networkPolicies?: ReadonlyMap<string, NetworkPolicy>;
  /** Everything that was rejected while building this state. */
  readonly problems: readonly Problem[];
  /**
   * Per Service key, the newest `endpoints.kubernetes.io/last-change-trigger-time` of its
   * EndpointSlices (ms since the epoch), for the network-programming latency metric. Absent when
   * no slice carries the annotation (manifests usually do not).
   */
  readonly endpointsTriggerTimes?: ReadonlyMap<string, number>;
}

export const ZONE_LABEL = 'topology.kubernetes.io/zone';
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;

export function serviceKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** kube-proxy's ServicePortName string: `ns/name` plus `:portName` when the port is named. */
export function servicePortName(sp: Pick<ServicePort, 'namespace' | 'serviceName' | 'portName'>): string {
  return sp.portName === ''
    ? `${sp.namespace}/${sp.serviceName}`
    : `${sp.namespace}/${sp.serviceName}:${sp.portName}`;
}
