import { cidrContains } from '../model/ip.js';
import {
  categorizeEndpoints,
  externalPolicyLocal,
  externallyAccessible,
  familyFrontends,
  internalPolicyLocal,
  type FamilyFrontends,
  type NodeContext,
} from '../model/selection.js';
import type { ClusterState, Endpoint, IPFamily, Service, ServicePort } from '../model/types.js';
import { servicePortName } from '../model/types.js';
import type { LocalDetector } from '../modes/local-traffic.js';
import {
  isPort,
  isSafeCIDR,
  isSafeInterfaceName,
  isSafeIP,
  isSafeServicePortName,
} from '../modes/rule-input-checks.js';
import {
  CLUSTER_IPS_SET,
  FIREWALL_IPS_MAP,
  MARK_MASQ_CHAIN,
  NO_ENDPOINT_NODEPORTS_MAP,
  NO_ENDPOINT_SERVICES_MAP,
  portNames,
  REJECT_CHAIN,
  SERVICE_IPS_MAP,
  SERVICE_NODEPORTS_MAP,
  type ElementContainer,
} from './names.js';

/**
 * The pure nftables renderer: one ClusterState and one IP family in, kube-proxy's nftables layout
 * out (pkg/proxy/nftables/proxier.go syncProxyRules), per Service: its map/set elements, its own
 * chains with their rules, its affinity sets. The transaction builder (transaction.ts) turns this
 * into `nft -f` input, whole or as a delta. Services are rendered once per Service object and
 * config (the model shares unchanged objects between states), so a partial sync renders only what
 * changed.
 */

export interface NftRenderConfig {
  readonly family: IPFamily;
  readonly node: NodeContext;
  /** This node's IP(s) of this family: a source range containing one also admits the LB VIPs. */
  readonly nodeIPs: readonly string[];
  /** Default 14 → mark 0x4000. */
  readonly masqueradeBit: number;
  readonly masqueradeAll: boolean;
  readonly localDetector: LocalDetector;
  /** --nodeport-addresses resolved to this family's node addresses, or all local addresses. */
  readonly nodePortAddresses: { matchAll: true } | { matchAll: false; addresses: readonly string[] };
  /** ServiceCIDRs of this family: an unallocated ClusterIP inside them is dropped. */
  readonly serviceCIDRs?: readonly string[];
}

/** One element of a map (`value` set) or set (`value` ''). */
export interface NftElement {
  readonly container: ElementContainer;
  /** `10.96.0.10 . tcp . 80` */
  readonly key: string;
  /** `goto service-…`, `drop`; '' in a set. */
  readonly value: string;
  readonly comment?: string;
}

/** What one Service contributes in one family. */
export interface ServiceRules {
  readonly serviceKey: string;
  /** Its own chains in creation order, each with its rules in order. */
  readonly chains: ReadonlyMap<string, readonly string[]>;
  /** Affinity sets (name → timeout seconds). */
  readonly affinitySets: ReadonlyMap<string, number>;
  readonly elements: readonly NftElement[];
  readonly skipped: readonly string[];
  readonly noLocalInternal: number;
  readonly noLocalExternal: number;
}

export class NftRenderConfigError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`nftables render config: ${field}: ${reason}`);
    this.name = 'NftRenderConfigError';
  }
}

/** Checked config pieces in nft syntax. */
export interface CheckedNftConfig {
  readonly v6: boolean;
  /** `ip` / `ip6`. */
  readonly ipX: string;
  /** `ipv4_addr` / `ipv6_addr`. */
  readonly addrType: string;
  /** `0x00004000` (Go `%#08x`). */
  readonly mark: string;
  readonly detector: { readonly ifLocal: string; readonly ifNotLocal: string } | undefined;
}

export function checkNftConfig(c: NftRenderConfig): CheckedNftConfig {
  if (c.family !== 'IPv4' && c.family !== 'IPv6') throw new NftRenderConfigError('family', 'IPv4 or IPv6');
  const v6 = c.family === 'IPv6';
  if (!Number.isInteger(c.masqueradeBit) || c.masqueradeBit < 0 || c.masqueradeBit > 31) {
    throw new NftRenderConfigError('masqueradeBit', `must be an integer in [0, 31], got ${c.masqueradeBit}`);
  }
  const ips = [...c.nodeIPs, ...(c.nodePortAddresses.matchAll ? [] : c.nodePortAddresses.addresses)];
  for (const ip of ips) {
    if (!isSafeIP(ip, v6)) throw new NftRenderConfigError('nodeIPs', `not an ${c.family} address: ${ip}`);
  }
  for (const cidr of c.serviceCIDRs ?? []) {
    if (!isSafeCIDR(cidr, v6))
      throw new NftRenderConfigError('serviceCIDRs', `not an ${c.family} CIDR: ${cidr}`);
  }
  const ipX = v6 ? 'ip6' : 'ip';
  let detector: CheckedNftConfig['detector'];
  const d = c.localDetector;
  switch (d.mode) {
    case 'None':
      break;
    case 'ClusterCIDR':
      if (!isSafeCIDR(d.cidr, v6))
        throw new NftRenderConfigError('localDetector.cidr', `not an ${c.family} CIDR`);
      detector = { ifLocal: `${ipX} saddr ${d.cidr}`, ifNotLocal: `${ipX} saddr != ${d.cidr}` };
      break;
    case 'BridgeInterface':
      if (!isSafeInterfaceName(d.name))
        throw new NftRenderConfigError('localDetector.name', 'not an interface');
      detector = { ifLocal: `iifname "${d.name}"`, ifNotLocal: `iifname != "${d.name}"` };
      break;
    case 'InterfaceNamePrefix':
      if (!isSafeInterfaceName(d.prefix))
        throw new NftRenderConfigError('localDetector.prefix', 'not a prefix');
      detector = { ifLocal: `iifname "${d.prefix}*"`, ifNotLocal: `iifname != "${d.prefix}*"` };
      break;
    default:
      throw new NftRenderConfigError('localDetector.mode', 'unknown mode');
  }
  return {
    v6,
    ipX,
    addrType: v6 ? 'ipv6_addr' : 'ipv4_addr',
    mark: masqueradeMarkOf(c.masqueradeBit),
    detector,
  };
}

/** kube-proxy's nftables mode writes Go's `%#08x`: `0x` and at least 6 hex digits (0x004000). */
export function masqueradeMarkOf(bit: number): string {
  return `0x${(2 ** bit).toString(16).padStart(6, '0')}`;
}

const memo = new WeakMap<
  Service,
  Partial<Record<IPFamily, { readonly key: string; readonly rules: ServiceRules }>>
>();

/** The render of one Service in one family (memoised per Service object and config). */
export function renderService(
  key: string,
  svc: Service,
  config: NftRenderConfig,
  checked: CheckedNftConfig,
  configKey: string,
): ServiceRules | undefined {
  if (svc.skipReason !== undefined) return undefined;
  const hit = memo.get(svc)?.[config.family];
  if (hit !== undefined && hit.key === configKey && hit.rules.serviceKey === key) return hit.rules;
  const rules = renderServiceUncached(key, svc, config, checked);
  if (rules === undefined) return undefined;
  memo.set(svc, { ...memo.get(svc), [config.family]: { key: configKey, rules } });
  return rules;
}

/** The config key memoised renders are checked against. */
export function configKeyOf(config: NftRenderConfig): string {
  return JSON.stringify(config);
}

/** Every Service of `state` that renders in this family, in key order. */
export function renderState(state: ClusterState, config: NftRenderConfig): Map<string, ServiceRules> {
  const checked = checkNftConfig(config);
  const configKey = configKeyOf(config);
  const out = new Map<string, ServiceRules>();
  for (const key of sortedKeys(state.services)) {
    const r = renderService(key, state.services.get(key)!, config, checked, configKey);
    if (r !== undefined) out.set(key, r);
  }
  return out;
}

/** The state's Service keys in order (built states are sorted already: check, don't sort). */
function sortedKeys(services: ReadonlyMap<string, Service>): readonly string[] {
  const keys = [...services.keys()];
  for (let i = 1; i < keys.length; i++) if (keys[i - 1]! >= keys[i]!) return keys.sort();
  return keys;
}

function checkFrontends(
  key: string,
  fe: FamilyFrontends,
  v6: boolean,
  skipped: string[],
): FamilyFrontends | undefined {
  if (fe.clusterIP === undefined) return undefined;
  if (!isSafeIP(fe.clusterIP, v6)) {
    skipped.push(`${key}: spec.clusterIPs: unsafe address ${JSON.stringify(fe.clusterIP)}`);
    return undefined;
  }
  const keep = (field: string, list: readonly string[], ok: (s: string) => boolean): string[] => {
    for (const b of list)
      if (!ok(b)) skipped.push(`${key}: ${field}: unsafe value ${JSON.stringify(b)} left out`);
    return list.filter(ok);
  };
  return {
    ...fe,
    externalIPs: keep('spec.externalIPs', fe.externalIPs, (ip) => isSafeIP(ip, v6)),
    loadBalancerVIPs: keep('status.loadBalancer.ingress', fe.loadBalancerVIPs, (ip) => isSafeIP(ip, v6)),
    loadBalancerSourceRanges: keep('spec.loadBalancerSourceRanges', fe.loadBalancerSourceRanges, (c) =>
      isSafeCIDR(c, v6),
    ),
  };
}

/** DNS-label-like name parts of chain names (`[a-z0-9.-]`, as the API validates them). */
function isSafeNamePart(s: string, allowEmpty: boolean): boolean {
  if (s === '') return allowEmpty;
  return /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(s) && s.length <= 253;
}

const PROTO = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' } as const;

function renderServiceUncached(
  key: string,
  svc: Service,
  config: NftRenderConfig,
  c: CheckedNftConfig,
): ServiceRules | undefined {
  const skipped: string[] = [];
  const fe = checkFrontends(key, familyFrontends(svc, config.family), c.v6, skipped);
  if (fe === undefined) {
    return skipped.length > 0 ? emptyRules(key, skipped) : undefined;
  }
  if (!isSafeNamePart(svc.namespace, false) || !isSafeNamePart(svc.name, false)) {
    return emptyRules(key, [`${key}: metadata: unsafe name`]);
  }
  if (svc.sessionAffinity.type === 'ClientIP') {
    const t = svc.sessionAffinity.timeoutSeconds;
    if (!Number.isInteger(t) || t < 1 || t > 2147483647) {
      return emptyRules(key, [`${key}: spec.sessionAffinityConfig: bad timeout ${t}`]);
    }
  }
  const out = emptyRules(key, skipped);
  const seen = new Set<string>();
  svc.ports.forEach((port, i) => {
    const where = `${key}: spec.ports[${i}]`;
    const spn = servicePortName(port);
    if (!PROTO[port.protocol]) return void skipped.push(`${where}.protocol: unsupported ${port.protocol}`);
    if (!isSafeServicePortName(spn) || !isSafeNamePart(port.portName, true)) {
      return void skipped.push(`${where}.name: unsafe service port name ${JSON.stringify(spn)}`);
    }
    if (!isPort(port.port)) return void skipped.push(`${where}.port: bad port ${port.port}`);
    if (port.nodePort !== 0 && !isPort(port.nodePort)) {
      return void skipped.push(`${where}.nodePort: bad port ${port.nodePort}`);
    }
    const id = `${spn}/${port.protocol}`;
    if (seen.has(id))
      return void skipped.push(`${where}: duplicate port name and protocol ${JSON.stringify(id)}`);
    seen.add(id);
    const ok = (ep: Endpoint): boolean => isSafeIP(ep.ip, ep.ip.includes(':')) && isPort(ep.port);
    let checkedPort: ServicePort = port;
    if (!port.endpoints.every(ok)) {
      for (const ep of port.endpoints.filter((e) => !ok(e))) {
        skipped.push(`${where}: endpoint ${JSON.stringify(ep.ip)}:${ep.port} left out (unsafe)`);
      }
      checkedPort = { ...port, endpoints: port.endpoints.filter(ok) };
    }
    renderPort(config, c, svc, fe, checkedPort, spn, out);
  });
  return out;
}

type MutableRules = Omit<
  ServiceRules,
  'chains' | 'affinitySets' | 'elements' | 'noLocalInternal' | 'noLocalExternal'
> & {
  chains: Map<string, string[]>;
  affinitySets: Map<string, number>;
  elements: NftElement[];
  noLocalInternal: number;
  noLocalExternal: number;
};

/** A Service's rules before any port is rendered (and what a Service that cannot be rendered gets). */
function emptyRules(key: string, skipped: string[]): MutableRules {
  return {
    serviceKey: key,
    chains: new Map(),
    affinitySets: new Map(),
    elements: [],
    skipped,
    noLocalInternal: 0,
    noLocalExternal: 0,
  };
}

/** One service port, following kube-proxy's syncProxyRules loop body line for line. */
function renderPort(
  config: NftRenderConfig,
  c: CheckedNftConfig,
  svc: Service,
  fe: FamilyFrontends,
  port: ServicePort,
  spn: string,
  out: MutableRules,
): void {
  const proto = PROTO[port.protocol];
  const names = portNames(svc.namespace, svc.name, proto, port.portName);
  const clusterIP = fe.clusterIP!;
  const cat = categorizeEndpoints(svc, port, config.family, config.node);
  const clusterEndpoints = cat.cluster ?? [];
  const localEndpoints = cat.local ?? [];
  const hasEndpoints = cat.hasAnyEndpoints;
  const all = cat.allReachable;
  const affinity = svc.sessionAffinity.type === 'ClientIP' ? svc.sessionAffinity.timeoutSeconds : 0;

  const chain = (name: string): string[] => {
    let rules = out.chains.get(name);
    if (rules === undefined) {
      rules = [];
      out.chains.set(name, rules);
    }
    return rules;
  };
  // Chains are created (in kube-proxy's order) before any rule refers to them.
  const epNames = all.map((ep) => names.endpoint(ep.ip, ep.port));
  for (const n of epNames) chain(n.chain);
  const usesClusterChain = clusterEndpoints.length > 0;
  if (usesClusterChain) chain(names.cluster);
  const usesLocalChain = localEndpoints.length > 0;
  if (usesLocalChain) chain(names.local);

  const iLocal = internalPolicyLocal(svc);
  const eLocal = externalPolicyLocal(svc);
  const internalChain = iLocal ? names.local : names.cluster;
  const hasInternal = hasEndpoints && !(iLocal && localEndpoints.length === 0);
  const externalPolicyChain = eLocal ? names.local : names.cluster;
  const hasExternal = hasEndpoints && !(eLocal && localEndpoints.length === 0);
  const usesExtChain = hasEndpoints && externallyAccessible(fe, port);
  if (usesExtChain) chain(names.external);

  let internalVerdict = '';
  let externalVerdict = '';
  if (!hasEndpoints) {
    internalVerdict = `goto ${REJECT_CHAIN}`;
    externalVerdict = internalVerdict;
  } else {
    if (!hasInternal) {
      internalVerdict = 'drop';
      out.noLocalInternal++;
    }
    if (!hasExternal) {
      externalVerdict = 'drop';
      out.noLocalExternal++;
    }
  }

  const el = (container: ElementContainer, key: string, value: string, comment?: string): void => {
    out.elements.push(comment === undefined ? { container, key, value } : { container, key, value, comment });
  };
  const k3 = (ip: string): string => `${ip} . ${proto} . ${port.port}`;

  el(CLUSTER_IPS_SET, clusterIP, '');
  if (hasInternal) el(SERVICE_IPS_MAP, k3(clusterIP), `goto ${internalChain}`);
  else el(NO_ENDPOINT_SERVICES_MAP, k3(clusterIP), internalVerdict, spn);

  for (const ip of fe.externalIPs) {
    if (hasEndpoints) el(SERVICE_IPS_MAP, k3(ip), `goto ${names.external}`);
    if (!hasExternal) el(NO_ENDPOINT_SERVICES_MAP, k3(ip), externalVerdict, spn);
  }

  const vips = fe.loadBalancerVIPs;
  const ranges = fe.loadBalancerSourceRanges;
  const usesFWChain = vips.length > 0 && ranges.length > 0;
  if (usesFWChain) chain(names.firewall);
  for (const ip of vips) {
    if (hasEndpoints) el(SERVICE_IPS_MAP, k3(ip), `goto ${names.external}`);
    if (usesFWChain) el(FIREWALL_IPS_MAP, k3(ip), `goto ${names.firewall}`);
  }
  if (!hasExternal) for (const ip of vips) el(NO_ENDPOINT_SERVICES_MAP, k3(ip), externalVerdict, spn);

  if (port.nodePort !== 0) {
    const k2 = `${proto} . ${port.nodePort}`;
    // NodePorts are not subject to loadBalancerSourceRanges (as in kube-proxy).
    if (hasEndpoints) el(SERVICE_NODEPORTS_MAP, k2, `goto ${names.external}`);
    if (!hasExternal) el(NO_ENDPOINT_NODEPORTS_MAP, k2, externalVerdict, spn);
  }

  const { ipX } = c;
  if (hasInternal) {
    const match = `${ipX} daddr ${clusterIP} ${proto} dport ${port.port}`;
    if (config.masqueradeAll) chain(internalChain).push(`${match} jump ${MARK_MASQ_CHAIN}`);
    else if (c.detector !== undefined) {
      // Off-cluster traffic to a ClusterIP (a static route to a node) may bounce off-node.
      chain(internalChain).push(`${match} ${c.detector.ifNotLocal} jump ${MARK_MASQ_CHAIN}`);
    }
  }

  if (usesExtChain) {
    const ext = chain(names.external);
    if (!eLocal) ext.push(`jump ${MARK_MASQ_CHAIN}`);
    else {
      if (c.detector !== undefined) {
        ext.push(`${c.detector.ifLocal} goto ${names.cluster} comment "short-circuit pod traffic"`);
      }
      ext.push(`fib saddr type local jump ${MARK_MASQ_CHAIN} comment "masquerade local traffic"`);
      ext.push(`fib saddr type local goto ${names.cluster} comment "short-circuit local traffic"`);
    }
    if (hasExternal) ext.push(`goto ${externalPolicyChain}`);
  }

  if (usesFWChain) {
    const sources = [...ranges];
    if (ranges.some((cidr) => config.nodeIPs.some((ip) => cidrContains(cidr, ip)))) sources.push(...vips);
    chain(names.firewall).push(`${ipX} saddr != { ${sources.join(', ')} } drop`);
  }

  if (affinity > 0) for (const n of epNames) out.affinitySets.set(n.affinitySet, affinity);

  const epIndex = new Map(all.map((ep, i) => [ep, i]));
  const toEndpoints = (chainName: string, eps: readonly Endpoint[]): void => {
    const rules = chain(chainName);
    const refs = eps.map((ep) => epNames[epIndex.get(ep) ?? -1] ?? names.endpoint(ep.ip, ep.port));
    if (affinity > 0) for (const r of refs) rules.push(`${ipX} saddr @${r.affinitySet} goto ${r.chain}`);
    const vmap = refs.map((r, i) => `${i} : goto ${r.chain}`).join(', ');
    rules.push(`numgen random mod ${refs.length} vmap { ${vmap} }`);
  };
  if (usesClusterChain) toEndpoints(names.cluster, clusterEndpoints);
  if (usesLocalChain) toEndpoints(names.local, localEndpoints);

  all.forEach((ep, i) => {
    const n = epNames[i]!;
    const rules = chain(n.chain);
    if (rules.length > 0) return; // the same endpoint twice: one chain
    rules.push(`${ipX} saddr ${ep.ip} jump ${MARK_MASQ_CHAIN}`);
    if (affinity > 0) rules.push(`update @${n.affinitySet} { ${ipX} saddr }`);
    const dest = c.v6 ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
    rules.push(`meta l4proto ${proto} dnat to ${dest}`);
  });
}
