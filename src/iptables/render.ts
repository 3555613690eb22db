import {
  familyFrontends,
  needsHealthCheck,
  type FamilyFrontends,
  type NodeContext,
} from '../model/selection.js';
import type { ClusterState, IPFamily, Service, ServicePort } from '../model/types.js';
import { servicePortName } from '../model/types.js';
import { isServiceChainName } from './names.js';
import { masqueradeMark, renderFixedHead, renderFixedTail } from './render-fixed.js';
import {
  chainLine,
  isPort,
  isSafeCIDR,
  isSafeInterfaceName,
  isSafeIP,
  isSafeServicePortName,
  LineBuffer,
} from './render-lines.js';
import { renderServicePort, type ServiceChainOutput, type ServiceRenderContext } from './render-service.js';

/**
 * The pure iptables renderer: one ClusterState and one IP family in, one `iptables-restore --noflush`
 * input out, rule for rule what kube-proxy's iptables proxier writes (see
 * shared/reference/kube-proxy-iptables.md). Deterministic: Services are taken in key order and
 * ports in spec order (kube-proxy uses Go's random map order; only order within a chain matters).
 */

/** kube-proxy's --detect-local-mode, resolved for one family. */
export type LocalDetector =
  | { mode: 'None' }
  | { mode: 'ClusterCIDR'; cidr: string }
  | { mode: 'BridgeInterface'; name: string }
  | { mode: 'InterfaceNamePrefix'; prefix: string };

export interface IptablesRenderConfig {
  family: IPFamily;
  /** Name + zone (topology hints, local endpoints). */
  node: NodeContext;
  /** This node's primary IP(s) of this family: a source range containing one also admits the VIPs. */
  nodeIPs: readonly string[];
  /** Default 14 → mark 0x4000. */
  masqueradeBit: number;
  masqueradeAll: boolean;
  localDetector: LocalDetector;
  /** Resolved node interface IPs of this family inside --nodeport-addresses, or all local addresses. */
  nodePortAddresses: { matchAll: true } | { matchAll: false; addresses: readonly string[] };
  /** Effective (IPv4 only; the caller already forced it off when not applicable). */
  localhostNodePorts: boolean;
  /** The iptables binary supports MASQUERADE --random-fully. */
  randomFully: boolean;
  /** nf_conntrack_tcp_be_liberal != 0: no INVALID drop in KUBE-FORWARD. */
  conntrackTCPBeLiberal: boolean;
}

export interface RenderRequest {
  state: ClusterState;
  config: IptablesRenderConfig;
  /** Service keys (`ns/name`) whose per-service chains are written; undefined = all (full sync). */
  changedServices?: ReadonlySet<string>;
  /** Service-prefixed nat chains that exist in the kernel now (parsed from iptables-save by the caller). */
  existingServiceChains: ReadonlySet<string>;
}

export interface RenderResult {
  /** `*filter … COMMIT\n*nat … COMMIT\n` for `iptables-restore --noflush`. */
  restoreInput: string;
  /** Every per-service nat chain this state needs (written or not). */
  activeServiceChains: ReadonlySet<string>;
  /** Service keys whose per-service chains were written. */
  writtenServices: ReadonlySet<string>;
  /** Existing service chains deleted by this input (`:CHAIN` + `-X CHAIN`), sorted. */
  staleChains: readonly string[];
  largeClusterMode: boolean;
  counts: {
    filterRules: number;
    natRules: number;
    natChains: number;
    /** Including the rules of unchanged Services that were not written (kube-proxy's iptables_total). */
    totalNatRules: number;
  };
  /** For sync_proxy_rules_no_local_endpoints_total{traffic_policy}. */
  noLocalEndpoints: { internal: number; external: number };
  /** Objects (or parts) left out because their text was unsafe: `ns/name: field: reason`. */
  skipped: readonly string[];
  lines: number;
  bytes: number;
}

/** What an unchanged Service contributed to a partial sync, for the next one (see pass 2). */
interface UnchangedOutput {
  /** The render config and large-cluster mode it was rendered with. */
  readonly key: string;
  readonly serviceKey: string;
  readonly filterLines: readonly string[];
  readonly filterCount: number;
  readonly natLines: readonly string[];
  readonly natCount: number;
  readonly chainCount: number;
  readonly chainRuleCount: number;
  readonly active: readonly string[];
  readonly skipped: readonly string[];
  readonly noLocalInternal: number;
  readonly noLocalExternal: number;
}

/**
 * A cache of a pure computation keyed by immutable model objects: the renderer stays a function of
 * its inputs. Entries go with their Service objects (WeakMap).
 */
const unchangedMemo = new WeakMap<Service, UnchangedOutput>();

/** kube-proxy's largeClusterEndpointsThreshold. */
export const LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000;

export class RenderConfigError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`iptables render config: ${field}: ${reason}`);
    this.name = 'RenderConfigError';
  }
}

interface CheckedConfig {
  readonly v6: boolean;
  readonly mark: string;
  readonly detector: ServiceRenderContext['detector'];
  readonly localhostNodePorts: boolean;
}

function checkConfig(c: IptablesRenderConfig): CheckedConfig {
  const v6 = c.family === 'IPv6';
  if (c.family !== 'IPv4' && c.family !== 'IPv6')
    throw new RenderConfigError('family', 'must be IPv4 or IPv6');
  if (!Number.isInteger(c.masqueradeBit) || c.masqueradeBit < 0 || c.masqueradeBit > 31) {
    throw new RenderConfigError(
      'masqueradeBit',
      `must be an integer in [0, 31], got ${String(c.masqueradeBit)}`,
    );
  }
  for (const ip of c.nodeIPs) {
    if (!isSafeIP(ip, v6))
      throw new RenderConfigError('nodeIPs', `not an ${c.family} address: ${JSON.stringify(ip)}`);
  }
  if (!c.nodePortAddresses.matchAll) {
    for (const ip of c.nodePortAddresses.addresses) {
      if (!isSafeIP(ip, v6)) {
        throw new RenderConfigError('nodePortAddresses', `not an ${c.family} address: ${JSON.stringify(ip)}`);
      }
    }
  }
  let detector: ServiceRenderContext['detector'];
  const d = c.localDetector;
  switch (d.mode) {
    case 'None':
      detector = undefined;
      break;
    case 'ClusterCIDR':
      if (!isSafeCIDR(d.cidr, v6)) {
        throw new RenderConfigError(
          'localDetector.cidr',
          `not an ${c.family} CIDR: ${JSON.stringify(d.cidr)}`,
        );
      }
      detector = { ifLocal: `-s ${d.cidr}`, ifNotLocal: `! -s ${d.cidr}` };
      break;
    case 'BridgeInterface':
      if (!isSafeInterfaceName(d.name)) {
        throw new RenderConfigError('localDetector.name', `not an interface name: ${JSON.stringify(d.name)}`);
      }
      detector = { ifLocal: `-i ${d.name}`, ifNotLocal: `! -i ${d.name}` };
      break;
    case 'InterfaceNamePrefix':
      if (!isSafeInterfaceName(d.prefix)) {
        throw new RenderConfigError(
          'localDetector.prefix',
          `not an interface name prefix: ${JSON.stringify(d.prefix)}`,
        );
      }
      detector = { ifLocal: `-i ${d.prefix}+`, ifNotLocal: `! -i ${d.prefix}+` };
      break;
    default:
      throw new RenderConfigError('localDetector.mode', 'unknown mode');
  }
  return {
    v6,
    mark: masqueradeMark(c.masqueradeBit),
    detector,
    // Localhost NodePorts never exist on IPv6, whatever the caller passed.
    localhostNodePorts: c.localhostNodePorts && !v6,
  };
}

/** A Service this family renders, with its frontends checked. */
interface Candidate {
  readonly key: string;
  readonly svc: Service;
  readonly fe: FamilyFrontends;
}

function checkFrontends(
  key: string,
  fe: FamilyFrontends,
  v6: boolean,
  skipped: string[],
): FamilyFrontends | undefined {
  if (fe.clusterIP === undefined) return undefined; // not a Service of this family
  if (!isSafeIP(fe.clusterIP, v6)) {
    skipped.push(`${key}: spec.clusterIPs: unsafe address ${JSON.stringify(fe.clusterIP)}`);
    return undefined;
  }
  const okIP = (ip: string): boolean => isSafeIP(ip, v6);
  const okCIDR = (c: string): boolean => isSafeCIDR(c, v6);
  if (
    fe.externalIPs.every(okIP) &&
    fe.loadBalancerVIPs.every(okIP) &&
    fe.loadBalancerSourceRanges.every(okCIDR)
  ) {
    return fe;
  }
  const report = (field: string, bad: readonly string[]): void => {
    for (const b of bad) skipped.push(`${key}: ${field}: unsafe value ${JSON.stringify(b)} left out`);
  };
  report(
    'spec.externalIPs',
    fe.externalIPs.filter((ip) => !okIP(ip)),
  );
  report(
    'status.loadBalancer.ingress',
    fe.loadBalancerVIPs.filter((ip) => !okIP(ip)),
  );
  report(
    'spec.loadBalancerSourceRanges',
    fe.loadBalancerSourceRanges.filter((c) => !okCIDR(c)),
  );
  return {
    ...fe,
    externalIPs: fe.externalIPs.filter(okIP),
    loadBalancerVIPs: fe.loadBalancerVIPs.filter(okIP),
    loadBalancerSourceRanges: fe.loadBalancerSourceRanges.filter(okCIDR),
  };
}

function serviceProblem(svc: Service): string | undefined {
  if (svc.sessionAffinity.type === 'ClientIP') {
    const t = svc.sessionAffinity.timeoutSeconds;
    if (!Number.isInteger(t) || t < 1 || t > 2147483647)
      return `spec.sessionAffinityConfig: bad timeout ${t}`;
  }
  if (needsHealthCheck(svc) && svc.healthCheckNodePort !== 0 && !isPort(svc.healthCheckNodePort)) {
    return `spec.healthCheckNodePort: bad port ${svc.healthCheckNodePort}`;
  }
  return undefined;
}

function portProblem(port: ServicePort, spn: string): string | undefined {
  if (port.protocol !== 'TCP' && port.protocol !== 'UDP' && port.protocol !== 'SCTP') {
    return `protocol: unsupported ${JSON.stringify(port.protocol)}`;
  }
  if (!isSafeServicePortName(spn)) return `name: unsafe service port name ${JSON.stringify(spn)}`;
  if (!isPort(port.port)) return `port: bad port ${port.port}`;
  if (port.nodePort !== 0 && !isPort(port.nodePort)) return `nodePort: bad port ${port.nodePort}`;
  return undefined;
}

/** The port with unsafe endpoints left out (the common case returns the port itself). */
function checkEndpoints(port: ServicePort, where: string, skipped: string[]): ServicePort {
  const ok = (ep: ServicePort['endpoints'][number]): boolean =>
    isSafeIP(ep.ip, ep.ip.includes(':')) && isPort(ep.port);
  if (port.endpoints.every(ok)) return port;
  for (const ep of port.endpoints) {
    if (!ok(ep)) skipped.push(`${where}: endpoint ${JSON.stringify(ep.ip)}:${ep.port} left out (unsafe)`);
  }
  return { ...port, endpoints: port.endpoints.filter(ok) };
}

export function renderRestoreInput(req: RenderRequest): RenderResult {
  const { state, config, changedServices } = req;
  const cc = checkConfig(config);
  const v6 = cc.v6;
  const skipped: string[] = [];

  // Pass 1: the Services of this family (kube-proxy's svcPortMap) and their endpoint total.
  const keys = [...state.services.keys()].sort();
  const candidates: Candidate[] = [];
  let totalEndpoints = 0;
  for (const key of keys) {
    const svc = state.services.get(key);
    if (svc === undefined || svc.skipReason !== undefined) continue;
    const fe = checkFrontends(key, familyFrontends(svc, config.family), v6, skipped);
    if (fe === undefined) continue;
    const problem = serviceProblem(svc);
    if (problem !== undefined) {
      skipped.push(`${key}: ${problem}`);
      continue;
    }
    candidates.push({ key, svc, fe });
    for (const port of svc.ports) {
      for (const ep of port.endpoints) if (ep.ip.includes(':') === v6) totalEndpoints++;
    }
  }
  const largeClusterMode = totalEndpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;

  const filterChains = new LineBuffer(true);
  const filterRules = new LineBuffer(true);
  const natChains = new LineBuffer(true);
  const natRules = new LineBuffer(true);
  const written: ServiceChainOutput = { natChains, natRules };
  const discarded: ServiceChainOutput = { natChains: LineBuffer.discard(), natRules: LineBuffer.discard() };

  renderFixedHead(
    { mark: cc.mark, randomFully: config.randomFully, kubeFirewall: cc.localhostNodePorts },
    filterChains,
    filterRules,
    natChains,
    natRules,
  );

  const ctx: ServiceRenderContext = {
    family: config.family,
    node: config.node,
    nodeIPs: config.nodeIPs,
    masqueradeAll: config.masqueradeAll,
    detector: cc.detector,
    localhostNodePorts: cc.localhostNodePorts,
    largeClusterMode,
  };
  const top = { filterRules, natRules };
  const active = new Set<string>();
  const writtenServices = new Set<string>();
  let noLocalInternal = 0;
  let noLocalExternal = 0;

  // Pass 2: rules per service port. An unchanged Service on a partial sync only contributes its
  // top-level lines (KUBE-SERVICES …), chain names and counts, which are memoised per Service object
  // (structural sharing keeps the object while nothing in it changes).
  const memoKey = `${JSON.stringify(config)}|${largeClusterMode}`;
  for (const { key, svc, fe } of candidates) {
    const write = changedServices === undefined || changedServices.has(key);
    if (!write) {
      const memo = unchangedMemo.get(svc);
      if (memo !== undefined && memo.key === memoKey && memo.serviceKey === key) {
        filterRules.append(memo.filterLines, memo.filterCount);
        natRules.append(memo.natLines, memo.natCount);
        discarded.natChains.skip(memo.chainCount);
        discarded.natRules.skip(memo.chainRuleCount);
        for (const c of memo.active) active.add(c);
        for (const sk of memo.skipped) skipped.push(sk);
        noLocalInternal += memo.noLocalInternal;
        noLocalExternal += memo.noLocalExternal;
        continue;
      }
    }
    const chains = write ? written : discarded;
    const mark = write
      ? undefined
      : {
          filterLines: filterRules.lines.length,
          filterCount: filterRules.count,
          natLines: natRules.lines.length,
          natCount: natRules.count,
          chainCount: discarded.natChains.count,
          chainRuleCount: discarded.natRules.count,
          skipped: skipped.length,
        };
    const svcActive = write ? active : new Set<string>();
    let svcNoLocalInternal = 0;
    let svcNoLocalExternal = 0;
    const seen: string[] = [];
    for (let i = 0; i < svc.ports.length; i++) {
      let port = svc.ports[i]!;
      const spn = servicePortName(port);
      const where = `${key}: spec.ports[${i}]`;
      const problem = portProblem(port, spn);
      if (problem !== undefined) {
        skipped.push(`${where}.${problem}`);
        continue;
      }
      // Two ports with the same name and protocol would share chain names: keep the first.
      const id = spn + '/' + port.protocol;
      if (seen.includes(id)) {
        skipped.push(`${where}: duplicate port name and protocol ${JSON.stringify(id)}`);
        continue;
      }
      seen.push(id);
      port = checkEndpoints(port, where, skipped);
      const outcome = renderServicePort(ctx, svc, fe, port, spn, top, chains, svcActive);
      if (outcome.noLocalInternal) svcNoLocalInternal++;
      if (outcome.noLocalExternal) svcNoLocalExternal++;
    }
    noLocalInternal += svcNoLocalInternal;
    noLocalExternal += svcNoLocalExternal;
    if (write) {
      writtenServices.add(key);
    } else if (mark !== undefined) {
      for (const c of svcActive) active.add(c);
      unchangedMemo.set(svc, {
        key: memoKey,
        serviceKey: key,
        filterLines: filterRules.lines.slice(mark.filterLines),
        filterCount: filterRules.count - mark.filterCount,
        natLines: natRules.lines.slice(mark.natLines),
        natCount: natRules.count - mark.natCount,
        chainCount: discarded.natChains.count - mark.chainCount,
        chainRuleCount: discarded.natRules.count - mark.chainRuleCount,
        active: [...svcActive],
        skipped: skipped.slice(mark.skipped),
        noLocalInternal: svcNoLocalInternal,
        noLocalExternal: svcNoLocalExternal,
      });
    }
  }

  // Stale chains: ours, in the kernel, no longer generated. Declaring flushes them; -X deletes.
  const staleChains = [...req.existingServiceChains]
    .filter((c) => isServiceChainName(c) && !active.has(c))
    .sort();
  for (const c of staleChains) {
    natChains.add(chainLine(c));
    natRules.addUncounted(`-X ${c}`);
  }

  renderFixedTail(
    {
      mark: cc.mark,
      v6,
      localhostNodePorts: cc.localhostNodePorts,
      nodePorts: config.nodePortAddresses,
      conntrackTCPBeLiberal: config.conntrackTCPBeLiberal,
    },
    filterRules,
    natRules,
  );

  // One join over every line (not one per buffer and then again over the sections): a 10k-Service
  // input is 21 MB, and each extra join copies all of it.
  const all: string[] = ['*filter'];
  for (const b of [filterChains, filterRules]) pushNonEmpty(all, b.lines);
  all.push('COMMIT', '*nat');
  for (const b of [natChains, natRules]) pushNonEmpty(all, b.lines);
  all.push('COMMIT');
  const restoreInput = all.join('\n') + '\n';
  const lines =
    4 + filterChains.lines.length + filterRules.lines.length + natChains.lines.length + natRules.lines.length;

  return {
    restoreInput,
    activeServiceChains: active,
    writtenServices,
    staleChains,
    largeClusterMode,
    counts: {
      filterRules: filterRules.count,
      natRules: natRules.count,
      natChains: natChains.count,
      totalNatRules: natRules.count + discarded.natRules.count,
    },
    noLocalEndpoints: { internal: noLocalInternal, external: noLocalExternal },
    skipped,
    lines,
    // Every character is checked ASCII (names, addresses, fixed text), so length is the byte count.
    bytes: restoreInput.length,
  };
}

/** Appends a buffer's lines, unless they would join to nothing (as the per-buffer join did). */
function pushNonEmpty(out: string[], lines: readonly string[]): void {
  if (lines.length === 0 || (lines.length === 1 && lines[0] === '')) return;
  for (const l of lines) out.push(l);
}
