import { ipFamilyOf, joinHostPort } from './ip.js';
import type { Endpoint, IPFamily, Service, ServicePort } from './types.js';
import { ZONE_LABEL } from './types.js';

/**
 * Endpoint selection shared by every backend (kube-proxy's pkg/proxy/topology.go CategorizeEndpoints
 * and serviceport.go policy helpers), so iptables and IPVS modes cannot drift apart semantically.
 */

/** The frontends of one Service for one IP family (kube-proxy's per-family serviceInfo view). */
export interface FamilyFrontends {
  readonly family: IPFamily;
  readonly clusterIP: string | undefined;
  readonly externalIPs: readonly string[];
  /** LoadBalancer ingress IPs with ipMode VIP (Proxy is skipped). */
  readonly loadBalancerVIPs: readonly string[];
  /** Source ranges of this family; empty when unrestricted (also when a /0 range is present). */
  readonly loadBalancerSourceRanges: readonly string[];
}

export function familyFrontends(svc: Service, family: IPFamily): FamilyFrontends {
  const ranges = svc.loadBalancerSourceRanges.filter((c) => ipFamilyOf(c.split('/')[0] ?? '') === family);
  const openRange = ranges.some((c) => c === '0.0.0.0/0' || c === '::/0');
  return {
    family,
    clusterIP: svc.clusterIPs.find((ip) => ipFamilyOf(ip) === family),
    externalIPs: svc.externalIPs.filter((ip) => ipFamilyOf(ip) === family),
    loadBalancerVIPs: svc.loadBalancerIngress
      .filter((ing) => ing.ipMode === 'VIP' && ipFamilyOf(ing.ip) === family)
      .map((ing) => ing.ip),
    loadBalancerSourceRanges: openRange ? [] : ranges,
  };
}

/** `ExternalPolicyLocal`: eTP=Local only counts for NodePort and LoadBalancer Services. */
export function externalPolicyLocal(svc: Service): boolean {
  return (svc.type === 'NodePort' || svc.type === 'LoadBalancer') && svc.externalTrafficPolicy === 'Local';
}

export function internalPolicyLocal(svc: Service): boolean {
  return svc.internalTrafficPolicy === 'Local';
}

/** `NeedsHealthCheck`: LoadBalancer with eTP=Local gets a health-check node port. */
export function needsHealthCheck(svc: Service): boolean {
  return svc.type === 'LoadBalancer' && svc.externalTrafficPolicy === 'Local';
}

export function externallyAccessible(fe: FamilyFrontends, port: ServicePort): boolean {
  return port.nodePort !== 0 || fe.loadBalancerVIPs.length > 0 || fe.externalIPs.length > 0;
}

export function usesClusterEndpoints(svc: Service, fe: FamilyFrontends, port: ServicePort): boolean {
  return !internalPolicyLocal(svc) || externallyAccessible(fe, port);
}

export function usesLocalEndpoints(svc: Service, fe: FamilyFrontends, port: ServicePort): boolean {
  return internalPolicyLocal(svc) || (externalPolicyLocal(svc) && externallyAccessible(fe, port));
}

/** What svcplane knows about the node it programs. */
export interface NodeContext {
  readonly name: string;
  /** From the Node's topology.kubernetes.io/zone label; '' when unknown. */
  readonly zone: string;
}

export function nodeContext(name: string, labels: Readonly<Record<string, string>> = {}): NodeContext {
  return { name, zone: labels[ZONE_LABEL] ?? '' };
}

export interface EndpointCategories {
  /** Endpoints for Cluster-policy traffic; undefined when this port does not use cluster endpoints. */
  readonly cluster: readonly Endpoint[] | undefined;
  /** Endpoints for Local-policy traffic; undefined when unused, [] when used but none is local. */
  readonly local: readonly Endpoint[] | undefined;
  /** Union of both (the endpoints that get a KUBE-SEP chain / an IPVS real server), sorted. */
  readonly allReachable: readonly Endpoint[];
  /** Some usable endpoint exists anywhere in the cluster. */
  readonly hasAnyEndpoints: boolean;
}

export const endpointString = (ep: Endpoint): string => joinHostPort(ep.ip, ep.port);

const isLocal = (ep: Endpoint, node: NodeContext): boolean =>
  ep.nodeName !== undefined && ep.nodeName === node.name;

type TopologyMode = '' | 'PreferSameNode' | 'PreferSameZone';

function topologyModeFromHints(endpoints: readonly Endpoint[], node: NodeContext): TopologyMode {
  let hasForNode = false;
  let allNodeHints = true;
  let hasForZone = false;
  let allZoneHints = true;
  for (const ep of endpoints) {
    if (!ep.ready) continue;
    if (!ep.nodeHints || ep.nodeHints.length === 0) allNodeHints = false;
    else if (ep.nodeHints.includes(node.name)) hasForNode = true;
    if (!ep.zoneHints || ep.zoneHints.length === 0) allZoneHints = false;
    else if (ep.zoneHints.includes(node.zone)) hasForZone = true;
  }
  if (allNodeHints && hasForNode) return 'PreferSameNode';
  if (allZoneHints && hasForZone) return 'PreferSameZone';
  return '';
}

function availableForTopology(ep: Endpoint, mode: TopologyMode, node: NodeContext): boolean {
  if (mode === 'PreferSameNode') return ep.nodeHints?.includes(node.name) ?? false;
  if (mode === 'PreferSameZone') return ep.zoneHints?.includes(node.zone) ?? false;
  return true;
}

/**
 * kube-proxy's CategorizeEndpoints for one service port and one IP family.
 * Cluster set: ready endpoints passing topology, else serving+terminating ones (any node).
 * Local set: local ready endpoints, else local serving+terminating ones.
 */
export function categorizeEndpoints(
  svc: Service,
  port: ServicePort,
  family: IPFamily,
  node: NodeContext,
): EndpointCategories {
  const fe = familyFrontends(svc, family);
  const endpoints = port.endpoints.filter((ep) => ipFamilyOf(ep.ip) === family);
  let cluster: Endpoint[] | undefined;
  let local: Endpoint[] | undefined;
  let hasAny = false;

  if (usesClusterEndpoints(svc, fe, port)) {
    const mode = topologyModeFromHints(endpoints, node);
    cluster = endpoints.filter((ep) => ep.ready && availableForTopology(ep, mode, node));
    if (cluster.length === 0) cluster = endpoints.filter((ep) => ep.serving && ep.terminating);
    if (cluster.length > 0) hasAny = true;
  }
  if (!usesLocalEndpoints(svc, fe, port)) {
    return { cluster, local: undefined, allReachable: cluster ?? [], hasAnyEndpoints: hasAny };
  }

  let localReady = false;
  let localServingTerminating = false;
  for (const ep of endpoints) {
    if (ep.ready) {
      hasAny = true;
      if (isLocal(ep, node)) localReady = true;
    } else if (ep.serving && ep.terminating) {
      hasAny = true;
      if (isLocal(ep, node)) localServingTerminating = true;
    }
  }
  if (localReady) local = endpoints.filter((ep) => isLocal(ep, node) && ep.ready);
  else if (localServingTerminating)
    local = endpoints.filter((ep) => isLocal(ep, node) && ep.serving && ep.terminating);
  else local = [];

  if (cluster === undefined) return { cluster, local, allReachable: local, hasAnyEndpoints: hasAny };
  if (local.length === 0) return { cluster, local, allReachable: cluster, hasAnyEndpoints: hasAny };
  const seen = new Map<string, Endpoint>();
  for (const ep of [...cluster, ...local]) seen.set(endpointString(ep), ep);
  const allReachable = [...seen.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, ep]) => ep);
  return { cluster, local, allReachable, hasAnyEndpoints: hasAny };
}
