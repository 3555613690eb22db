/**
 * Synthetic clusters for the benchmark: raw Kubernetes objects (Service + EndpointSlice + the Node),
 * deterministic for a given size, turned into a ClusterState by the real buildClusterState.
 * Mix: ~70% ClusterIP, 20% NodePort, 10% LoadBalancer (a third of those eTP=Local, half with source
 * ranges); 10% of Services have two ports; every Service has `endpointsPerService` ready endpoints.
 * Node ports are unique, as the API server's allocator makes them: 30% of 10k Services need more than
 * the default range's 2768, so the bench builds its states with BENCH_LIMITS (range 30000-65535, as
 * `--service-node-port-range=30000-65535` would).
 */
import { DEFAULT_SERVICE_LIMITS, type ServiceLimits } from '../src/model/limits.js';

export const BENCH_LIMITS: ServiceLimits = {
  ...DEFAULT_SERVICE_LIMITS,
  nodePortRange: { first: 30000, last: 65535 },
};

export const BENCH_NODE = 'node-1';
export const BENCH_NODE_IP = '192.0.2.1';

export interface ClusterShape {
  readonly services: number;
  readonly endpointsPerService: number;
}

type Raw = Record<string, unknown>;

function ipOf(base: [number, number], n: number): string {
  return `${base[0]}.${base[1] + ((n >> 16) & 1)}.${(n >> 8) & 255}.${n & 255}`;
}

/** Service i's ClusterIP: 10.96.0.0/12 holds a million addresses. */
function clusterIP(i: number): string {
  return `10.${96 + ((i >> 16) & 15)}.${(i >> 8) & 255}.${i & 255}`;
}

/** Pod IP of endpoint e of Service i, unique within 10.128.0.0/9. */
function podIP(i: number, e: number, per: number): string {
  const n = i * per + e + 1;
  return `10.${128 + ((n >> 16) & 127)}.${(n >> 8) & 255}.${n & 255}`;
}

export function serviceName(i: number): string {
  return `svc-${String(i).padStart(6, '0')}`;
}

export function namespaceOf(i: number): string {
  return `ns-${i % 50}`;
}

/** The Service and its EndpointSlice; `generation` varies one endpoint (for change benchmarks). */
export function serviceObjects(i: number, per: number, generation = 0): Raw[] {
  const name = serviceName(i);
  const namespace = namespaceOf(i);
  const kind = i % 10;
  const type = kind < 7 ? 'ClusterIP' : kind < 9 ? 'NodePort' : 'LoadBalancer';
  const multi = i % 10 === 3;
  const local = type === 'LoadBalancer' && i % 30 === 9;
  const ports: Raw[] = [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }];
  if (multi) ports.push({ name: 'metrics', protocol: 'TCP', port: 9090, targetPort: 9090 });
  // Node-port Services (i % 10 in 7..9) have one port: two numbers each, the node port and (for
  // eTP=Local) the health-check port.
  const nodePortBase = 30000 + 2 * (Math.floor(i / 10) * 3 + (kind - 7));
  if (type !== 'ClusterIP') {
    if (nodePortBase + 1 > BENCH_LIMITS.nodePortRange.last)
      throw new Error(`bench: no node port left for Service ${i}`);
    ports.forEach((p, k) => (p.nodePort = nodePortBase + k));
  }
  const spec: Raw = { selector: { app: name }, clusterIP: clusterIP(i), type, ports };
  const status: Raw = {};
  if (type === 'LoadBalancer') {
    spec.externalTrafficPolicy = local ? 'Local' : 'Cluster';
    if (local) spec.healthCheckNodePort = nodePortBase + 1;
    if (i % 20 === 9) spec.loadBalancerSourceRanges = ['198.51.100.0/24', '203.0.113.0/25'];
    status.loadBalancer = { ingress: [{ ip: ipOf([198, 18], i) }] };
  }
  const svc: Raw = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace },
    spec,
    status,
  };
  const endpoints: Raw[] = [];
  for (let e = 0; e < per; e++) {
    // generation shifts the last endpoint to a fresh address: one endpoint of one Service changes.
    const ip =
      e === per - 1 && generation > 0
        ? `100.${64 + ((generation >> 16) & 63)}.${(generation >> 8) & 255}.${generation & 255}`
        : podIP(i, e, per);
    endpoints.push({
      addresses: [ip],
      conditions: { ready: true, serving: true, terminating: false },
      // Every fifth endpoint is local, so eTP=Local Services have local endpoints.
      nodeName: e === 0 ? BENCH_NODE : `node-${2 + ((i + e) % 200)}`,
    });
  }
  const slice: Raw = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${name}-abcde`,
      namespace,
      labels: { 'kubernetes.io/service-name': name },
    },
    addressType: 'IPv4',
    ports: ports.map((p) => ({ name: p.name, protocol: 'TCP', port: p.targetPort })),
    endpoints,
  };
  return [svc, slice];
}

export function nodeObject(): Raw {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: BENCH_NODE, labels: { 'kubernetes.io/hostname': BENCH_NODE } },
    status: { addresses: [{ type: 'InternalIP', address: BENCH_NODE_IP }] },
  };
}

/** All raw objects of a cluster of the given shape. */
export function clusterObjects(shape: ClusterShape): Raw[] {
  const out: Raw[] = [nodeObject()];
  for (let i = 0; i < shape.services; i++) out.push(...serviceObjects(i, shape.endpointsPerService));
  return out;
}
