import { joinHostPort } from '../../../src/model/ip.js';
import type {
  ClusterState,
  Endpoint,
  LoadBalancerIngress,
  Protocol,
  Service,
  ServicePort,
  SessionAffinity,
  ServiceType,
  TrafficPolicy,
} from '../../../src/model/types.js';
import {
  renderRestoreInput,
  type IptablesRenderConfig,
  type RenderRequest,
  type RenderResult,
} from '../../../src/iptables/render.js';

/**
 * Tiny builders for renderer tests: model objects written directly (no manifests), with the
 * defaults of kube-proxy's proxier_test.go (node "test-node", node IP 192.168.0.2, pod CIDR
 * 10.0.0.0/8 detector, localhost NodePorts on).
 */

export const NODE = 'test-node';

export function ep(ip: string, port: number, opts: Partial<Omit<Endpoint, 'ip' | 'port'>> = {}): Endpoint {
  return { ip, port, ready: true, serving: true, terminating: false, ...opts };
}

export interface PortSpec {
  name?: string;
  protocol?: Protocol;
  port: number;
  nodePort?: number;
  endpoints?: Endpoint[];
}

export interface ServiceSpec {
  type?: ServiceType;
  clusterIPs?: string[];
  /** Shorthand for a single cluster IP. */
  clusterIP?: string;
  externalIPs?: string[];
  lbIPs?: (string | LoadBalancerIngress)[];
  sourceRanges?: string[];
  affinity?: SessionAffinity;
  eTP?: TrafficPolicy;
  iTP?: TrafficPolicy;
  healthCheckNodePort?: number;
  skipReason?: Service['skipReason'];
  ports: PortSpec[];
}

/** Endpoints sorted by endpoint string, as the model promises. */
function sortEndpoints(eps: readonly Endpoint[]): Endpoint[] {
  return [...eps].sort((a, b) => {
    const x = joinHostPort(a.ip, a.port);
    const y = joinHostPort(b.ip, b.port);
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

export function service(key: string, spec: ServiceSpec): Service {
  const [namespace = '', name = ''] = key.split('/');
  const ports: ServicePort[] = spec.ports.map((p) => ({
    namespace,
    serviceName: name,
    portName: p.name ?? '',
    protocol: p.protocol ?? 'TCP',
    port: p.port,
    targetPort: p.port,
    nodePort: p.nodePort ?? 0,
    endpoints: sortEndpoints(p.endpoints ?? []),
  }));
  const svc: Service = {
    namespace,
    name,
    type: spec.type ?? 'ClusterIP',
    clusterIPs: spec.clusterIPs ?? (spec.clusterIP !== undefined ? [spec.clusterIP] : []),
    externalIPs: spec.externalIPs ?? [],
    loadBalancerIngress: (spec.lbIPs ?? []).map((x) =>
      typeof x === 'string' ? { ip: x, ipMode: 'VIP' } : x,
    ),
    loadBalancerSourceRanges: spec.sourceRanges ?? [],
    sessionAffinity: spec.affinity ?? { type: 'None' },
    externalTrafficPolicy: spec.eTP ?? 'Cluster',
    internalTrafficPolicy: spec.iTP ?? 'Cluster',
    healthCheckNodePort: spec.healthCheckNodePort ?? 0,
    ports,
  };
  return spec.skipReason !== undefined ? { ...svc, skipReason: spec.skipReason } : svc;
}

export function state(...services: Service[]): ClusterState {
  return {
    services: new Map(services.map((s) => [`${s.namespace}/${s.name}`, s])),
    nodes: new Map(),
    problems: [],
  };
}

export function config(overrides: Partial<IptablesRenderConfig> = {}): IptablesRenderConfig {
  return {
    family: 'IPv4',
    node: { name: NODE, zone: '' },
    nodeIPs: ['192.168.0.2'],
    masqueradeBit: 14,
    masqueradeAll: false,
    localDetector: { mode: 'ClusterCIDR', cidr: '10.0.0.0/8' },
    nodePortAddresses: { matchAll: true },
    localhostNodePorts: true,
    randomFully: false,
    conntrackTCPBeLiberal: false,
    ...overrides,
  };
}

export function config6(overrides: Partial<IptablesRenderConfig> = {}): IptablesRenderConfig {
  return config({
    family: 'IPv6',
    nodeIPs: ['fd00::2'],
    localDetector: { mode: 'ClusterCIDR', cidr: 'fd00:10::/64' },
    localhostNodePorts: false,
    ...overrides,
  });
}

export function render(
  services: Service[],
  cfg: Partial<IptablesRenderConfig> = {},
  extra: Partial<Omit<RenderRequest, 'state' | 'config'>> = {},
): RenderResult {
  return renderRestoreInput({
    state: state(...services),
    config: config(cfg),
    existingServiceChains: new Set(),
    ...extra,
  });
}

/** The lines of one table section (between `*table` and `COMMIT`). */
export function tableLines(input: string, table: 'filter' | 'nat'): string[] {
  const lines = input.split('\n');
  const start = lines.indexOf(`*${table}`);
  if (start < 0) return [];
  const end = lines.indexOf('COMMIT', start);
  return lines.slice(start + 1, end);
}

/** `-A CHAIN …` rules of one chain, in order. */
export function chainRules(input: string, table: 'filter' | 'nat', chain: string): string[] {
  const prefix = `-A ${chain} `;
  return tableLines(input, table).filter((l) => l.startsWith(prefix));
}

/** Chains declared (`:CHAIN - [0:0]`) in one table, in order. */
export function declaredChains(input: string, table: 'filter' | 'nat'): string[] {
  return tableLines(input, table)
    .filter((l) => l.startsWith(':'))
    .map((l) => l.slice(1, l.indexOf(' ')));
}

/** All rule lines of a table mentioning `text` (handy to cut one Service out of a table). */
export function linesWith(input: string, table: 'filter' | 'nat', text: string): string[] {
  return tableLines(input, table).filter((l) => l.includes(text));
}
