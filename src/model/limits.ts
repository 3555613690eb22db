import type { ObjectRef, Problem, Service } from './types.js';

/**
 * What one Service may ask of a node beyond field syntax: node ports inside the node-port range and
 * off svcplane's own ports, no node port taken twice, and a bounded rule cost. The API server's
 * allocator and validation give the first three in a real cluster (manifests have neither); the
 * cost bound is svcplane's own (kube-apiserver bounds only the object size). A Service over a limit
 * is skipped with a problem naming the field, as any other invalid Service: nothing of it is
 * programmed, everything else is (fail closed).
 */

/** Inclusive port range (kube-apiserver's --service-node-port-range). */
export interface PortRange {
  readonly first: number;
  readonly last: number;
}

export interface ServiceLimits {
  /** Node ports and health-check node ports must lie in it. */
  readonly nodePortRange: PortRange;
  /** Ports svcplane itself listens on (healthz, metrics), with what they are: never a node port. */
  readonly reservedPorts: ReadonlyMap<number, string>;
  /** Most rule cost (ruleCost) one Service may have. */
  readonly maxRuleCost: number;
}

/** kube-apiserver's default --service-node-port-range. */
export const DEFAULT_NODE_PORT_RANGE: PortRange = { first: 30000, last: 32767 };

/**
 * The default rule budget of one Service. A Service of 10 ports × 5000 endpoints behind a cluster IP,
 * a node port and a LoadBalancer IP costs 200,000; 100 ports × 4000 externalIPs (111 KiB of YAML, a
 * 54 MiB iptables-restore input before this bound) costs 400,000.
 */
export const DEFAULT_MAX_RULE_COST = 250_000;

/** svcplane's healthz and metrics ports (kube-proxy's 10256 and 10249). */
export const DEFAULT_RESERVED_PORTS: ReadonlyMap<number, string> = new Map([
  [10256, "svcplane's healthz port"],
  [10249, "svcplane's metrics port"],
]);

export const DEFAULT_SERVICE_LIMITS: ServiceLimits = {
  nodePortRange: DEFAULT_NODE_PORT_RANGE,
  reservedPorts: DEFAULT_RESERVED_PORTS,
  maxRuleCost: DEFAULT_MAX_RULE_COST,
};

/**
 * Parses a port range as kube-apiserver's --service-node-port-range does: `first-last`, `base+offset`
 * or a single port. Returns the range or the reason it is invalid.
 */
export function parsePortRange(text: string): PortRange | { error: string } {
  const t = text.trim();
  const m = /^(\d{1,5})(?:([-+])(\d{1,5}))?$/.exec(t);
  if (!m) return { error: `"${text}" is not a port range (first-last, e.g. 30000-32767)` };
  const a = Number(m[1]);
  const b = m[3] === undefined ? a : m[2] === '+' ? a + Number(m[3]) : Number(m[3]);
  if (a < 1 || b > 65535) return { error: `"${text}": ports must be between 1 and 65535` };
  if (b < a) return { error: `"${text}": the last port is below the first` };
  return { first: a, last: b };
}

/**
 * The limits for a node-port range and svcplane's own listening ports (port 0 = that server is off).
 * The health-check node ports of Services are checked against each other in applyServiceLimits.
 */
export function serviceLimits(
  nodePortRange: PortRange,
  ownPorts: readonly { readonly port: number; readonly what: string }[],
): ServiceLimits {
  const reservedPorts = new Map<number, string>();
  for (const { port, what } of ownPorts)
    if (port > 0 && !reservedPorts.has(port)) reservedPorts.set(port, what);
  return { nodePortRange, reservedPorts, maxRuleCost: DEFAULT_MAX_RULE_COST };
}

export function formatPortRange(r: PortRange): string {
  return `${r.first}-${r.last}`;
}

/**
 * The rule cost of a Service: per port, each frontend address (cluster IPs, external IPs,
 * LoadBalancer IPs, the node port) times its endpoints (at least one), plus its source ranges, plus
 * one for a health-check node port. It counts what the modes program per Service port: IPVS a real
 * server per (virtual server, endpoint), iptables and nftables at most a few rules per frontend,
 * source range and endpoint; so it bounds both, independent of the mode.
 */
export function ruleCost(svc: Service): number {
  const addresses = svc.clusterIPs.length + svc.externalIPs.length + svc.loadBalancerIngress.length;
  let cost = svc.healthCheckNodePort > 0 ? 1 : 0;
  for (const p of svc.ports) {
    const frontends = addresses + (p.nodePort > 0 ? 1 : 0);
    cost += frontends * Math.max(1, p.endpoints.length) + svc.loadBalancerSourceRanges.length;
  }
  return cost;
}

/** Problems of one Service alone (range, reserved ports, cost), as (field, reason) pairs. */
function ownProblems(svc: Service, limits: ServiceLimits): { field: string; reason: string }[] {
  const out: { field: string; reason: string }[] = [];
  const { first, last } = limits.nodePortRange;
  const check = (field: string, port: number): void => {
    const reserved = limits.reservedPorts.get(port);
    if (reserved !== undefined) out.push({ field, reason: `${port} is ${reserved}` });
    else if (port < first || port > last) {
      out.push({ field, reason: `${port} is outside the node-port range ${first}-${last}` });
    }
  };
  svc.ports.forEach((p, i) => {
    if (p.nodePort > 0) check(`spec.ports[${i}].nodePort`, p.nodePort);
  });
  if (svc.healthCheckNodePort > 0) check('spec.healthCheckNodePort', svc.healthCheckNodePort);
  const cost = ruleCost(svc);
  if (cost > limits.maxRuleCost) {
    out.push({
      field: 'spec',
      reason: `asks for ${cost} rules (frontend addresses × endpoints per port, plus source ranges): more than the ${limits.maxRuleCost} one Service may cost`,
    });
  }
  return out;
}

/** ownProblems depends on the Service and the limits only; built Services are reused across rebuilds. */
const ownCache = new WeakMap<
  Service,
  { limits: ServiceLimits; problems: { field: string; reason: string }[] }
>();

function ownProblemsCached(svc: Service, limits: ServiceLimits): { field: string; reason: string }[] {
  const hit = ownCache.get(svc);
  if (hit && hit.limits === limits) return hit.problems;
  const problems = ownProblems(svc, limits);
  ownCache.set(svc, { limits, problems });
  return problems;
}

/**
 * Applies the limits to built Services (in key order, which decides node-port conflicts: the first
 * Service keeps the port, as the API server's allocator would have refused the later one). Returns
 * the Services that pass and, by key in the same order, a problem for each field of the others. Pure.
 */
export function applyServiceLimits(
  services: readonly (readonly [string, Service])[],
  refs: ReadonlyMap<string, ObjectRef>,
  limits: ServiceLimits,
): { kept: [string, Service][]; rejected: Map<string, Problem[]> } {
  const kept: [string, Service][] = [];
  const rejected = new Map<string, Problem[]>();
  /** Node port number → the Service key and field holding it (one allocator for every protocol). */
  const taken = new Map<number, { key: string; field: string }>();
  for (const [key, svc] of services) {
    const ref = refs.get(key) ?? { kind: 'Service', namespace: svc.namespace, name: svc.name };
    if (svc.skipReason !== undefined) {
      kept.push([key, svc]);
      continue;
    }
    const own = ownProblemsCached(svc, limits);
    // Most Services hold no node port: nothing to claim, no allocation (this runs on every rebuild).
    if (own.length === 0 && svc.healthCheckNodePort === 0 && !svc.ports.some((p) => p.nodePort > 0)) {
      kept.push([key, svc]);
      continue;
    }
    const found = [...own];
    const mine = new Map<number, string>();
    const claim = (field: string, port: number): void => {
      const other = taken.get(port);
      if (other && other.key !== key) {
        found.push({ field, reason: `${port} is already used by ${other.key} (${other.field})` });
      } else if (!mine.has(port)) mine.set(port, field);
    };
    svc.ports.forEach((p, i) => {
      if (p.nodePort > 0) claim(`spec.ports[${i}].nodePort`, p.nodePort);
    });
    if (svc.healthCheckNodePort > 0) {
      // The health-check server listens on every address for TCP: no node port of its own Service either.
      const own = mine.get(svc.healthCheckNodePort);
      if (own !== undefined) {
        found.push({
          field: 'spec.healthCheckNodePort',
          reason: `${svc.healthCheckNodePort} is also this Service's ${own}`,
        });
      }
      claim('spec.healthCheckNodePort', svc.healthCheckNodePort);
    }
    if (found.length > 0) {
      rejected.set(
        key,
        found.map((f) => ({ object: ref, ...f })),
      );
      continue;
    }
    for (const [port, field] of mine) taken.set(port, { key, field });
    kept.push([key, svc]);
  }
  return { kept, rejected };
}
