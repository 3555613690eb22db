import type { LocalDetector } from '../modes/local-traffic.js';
import {
  familyFrontends,
  needsHealthCheck,
  type FamilyFrontends,
  type NodeContext,
} from '../model/selection.js';
import type { ClusterState, IPFamily, Service, ServicePort } from '../model/types.js';
import { servicePortName } from '../model/types.js';
import { isServiceChainName } from './names.js';
import { masqueradeMark } from '../iptables-rules/masquerade-mark.js';
import { NAT_LEAF_CHAINS, renderFixedHead, renderFixedTail } from './render-fixed.js';
import { ChunkingError, chunkedRestoreInput, type ChunkLimits } from './render-chunks.js';
import { mergeExtraLines, type ExtraLines } from '../iptables-rules/jump-plan.js';
import {
  isPort,
  isSafeCIDR,
  isSafeInterfaceName,
  isSafeIP,
  isSafeServicePortName,
} from '../modes/rule-input-checks.js';
import { blockOf, chainLine, EMPTY_BLOCK, LineBuffer, Section, type Block } from './render-lines.js';
import { renderServicePort, type ServiceRenderContext } from './render-service.js';

/**
 * The pure iptables renderer: one ClusterState and one IP family in, one `iptables-restore --noflush`
 * input out, rule for rule what kube-proxy's iptables proxier writes (see
 * shared/reference/kube-proxy-iptables.md). Deterministic: Services are taken in key order and
 * ports in spec order (kube-proxy uses Go's random map order; only order within a chain matters).
 */

export type { LocalDetector } from '../modes/local-traffic.js';

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
  /**
   * Service-prefixed nat chains that exist in the kernel now (parsed from iptables-save by the
   * caller); those no longer generated are deleted. Not needed with `previous`.
   */
  existingServiceChains?: ReadonlySet<string>;
  /**
   * Partial syncs: the state whose rules the kernel holds (rendered with this same config). Its
   * changed and removed Services' chains that are no longer generated are deleted, and when no
   * fixed chain (KUBE-SERVICES …) differs from what it rendered to, they are left out of the input.
   */
  previous?: ClusterState;
  /**
   * With `previous` and `changedServices`: the Services `previous` had and `state` has not. Given,
   * a partial render totals its counts from `previous`'s (when that render kept them, see
   * RenderTotals) plus the changed and removed Services' contributions: O(changed), not O(Services).
   */
  removedServices?: ReadonlySet<string>;
}

export interface RenderResult {
  /** `*filter … COMMIT\n*nat … COMMIT\n` for `iptables-restore --noflush`. */
  restoreInput: string;
  /** The input declares no fixed chain: none changed since `previous` (the kernel keeps them). */
  fixedChainsOmitted: boolean;
  /** Every per-service nat chain this state needs (written or not); computed on first use. */
  readonly activeServiceChains: ReadonlySet<string>;
  /** Service keys whose per-service chains were written. */
  writtenServices: ReadonlySet<string>;
  /** Existing service chains deleted by this input (`:CHAIN` + `-X CHAIN`), sorted. */
  staleChains: readonly string[];
  largeClusterMode: boolean;
  counts: {
    /** Rules written to filter by this input. */
    filterRules: number;
    /** Rules filter holds once it is applied (kube-proxy's iptables_total{table="filter"}). */
    totalFilterRules: number;
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
  /** The totals came from `previous`'s and the changed Services' (O(changed)), not from every Service. */
  fromTotals: boolean;
}

/**
 * What one Service contributes to the rules, apart from its own chains' text: its lines in the fixed
 * chains, counts, chain names and metrics. Kept per Service object (see `contributions`).
 */
interface ServiceContribution {
  /** The render config and large-cluster mode it was rendered with. */
  readonly key: string;
  readonly serviceKey: string;
  /** Its filter rules (all in fixed chains: KUBE-SERVICES, KUBE-EXTERNAL-SERVICES …). */
  readonly filter: Block;
  /** Its rules in nat's fixed chains (KUBE-SERVICES, KUBE-NODEPORTS). */
  readonly natTop: Block;
  /** How many rules its own chains (EXT, FW, SVC, SVL, SEP) hold. */
  readonly chainRuleCount: number;
  readonly active: readonly string[];
  readonly skipped: readonly string[];
  readonly noLocalInternal: number;
  readonly noLocalExternal: number;
}

/**
 * Caches of pure computations keyed by immutable model objects, so the renderer stays a function of
 * its inputs: the model shares structure (an unchanged Service is the same object from one state to
 * the next), so a partial sync touches only what changed. Entries go with their Service objects.
 */
/** Per family: a dual-stack Service is rendered by both proxiers. */
const contributions = new WeakMap<Service, Partial<Record<IPFamily, ServiceContribution>>>();
const familyViews = new WeakMap<Service, Partial<Record<IPFamily, FamilyView>>>();

/**
 * What a render summed over every Service of a state (per family), kept with its services map so
 * that a partial render of the next state adds the changed Services' contributions and subtracts
 * their old ones instead of summing 10k memoised contributions again. A full render is the reference
 * (the property test in render-incremental.test.ts holds one against the other).
 */
interface RenderTotals {
  /** The render config (JSON) they were summed with. */
  readonly configKey: string;
  /** contributionKey: the config and large-cluster mode. */
  readonly memoKey: string;
  /** Endpoints of this family over the candidates (large-cluster mode). */
  readonly endpoints: number;
  /** Filter rules of every contribution (the fixed head and tail apart). */
  readonly filterRules: number;
  /** Nat rules of every contribution: fixed-chain lines and own chains (the fixed head and tail apart). */
  readonly natRules: number;
  readonly noLocalInternal: number;
  readonly noLocalExternal: number;
  /** Pass 1's problems by Service key (only non-empty lists). */
  readonly viewSkipped: ReadonlyMap<string, readonly string[]>;
  /** The contributions' problems by Service key (only non-empty lists). */
  readonly partSkipped: ReadonlyMap<string, readonly string[]>;
}
const renderTotals = new WeakMap<ReadonlyMap<string, Service>, Partial<Record<IPFamily, RenderTotals>>>();

function keepTotals(services: ReadonlyMap<string, Service>, family: IPFamily, totals: RenderTotals): void {
  renderTotals.set(services, { ...renderTotals.get(services), [family]: totals });
}

/** The lists of a by-key map in key order, flattened (the order a full pass gives). */
function flatByKey(m: ReadonlyMap<string, readonly string[]>): string[] {
  const out: string[] = [];
  for (const k of [...m.keys()].sort()) for (const x of m.get(k)!) out.push(x);
  return out;
}

/** Pass 1 for one Service and family: whether it renders, and with which (checked) frontends. */
interface FamilyView {
  readonly key: string;
  readonly fe: FamilyFrontends | undefined;
  readonly skipped: readonly string[];
  /** Its endpoints of this family (for large-cluster mode). */
  readonly endpoints: number;
}

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
  const { state, config, changedServices, previous } = req;
  const cc = checkConfig(config);
  const configKey = JSON.stringify(config);
  const fast = renderFromTotals(req, cc, configKey);
  if (fast !== undefined) return fast;
  const skipped: string[] = [];

  // Pass 1: the Services of this family (kube-proxy's svcPortMap) and their endpoint total.
  const viewSkipped = new Map<string, readonly string[]>();
  const { candidates, largeClusterMode, endpoints } = candidatesOf(
    state,
    config.family,
    skipped,
    viewSkipped,
  );
  const ctx = serviceContext(config, cc, largeClusterMode);
  const memoKey = contributionKey(config, largeClusterMode);

  // Pass 2: every Service's contribution. Unchanged Services on a partial sync reuse theirs (their
  // chains are not written); the others are rendered.
  const parts: ServiceContribution[] = [];
  const written = new Map<string, RenderedService>();
  for (const cand of candidates) {
    const write = changedServices === undefined || changedServices.has(cand.key);
    const memo = write ? undefined : contributionOf(cand.svc, config.family, cand.key, memoKey);
    if (memo !== undefined) {
      parts.push(memo);
      continue;
    }
    const r = renderService(
      ctx,
      cand,
      memoKey,
      write && changedServices !== undefined ? 'nat+chains' : 'nat',
    );
    parts.push(r.contribution);
    if (write) written.set(cand.key, r);
  }

  let noLocalInternal = 0;
  let noLocalExternal = 0;
  let filterRules = 0;
  let natRules = 0;
  const partSkipped = new Map<string, readonly string[]>();
  for (const part of parts) {
    for (const sk of part.skipped) skipped.push(sk);
    if (part.skipped.length > 0) partSkipped.set(part.serviceKey, part.skipped);
    noLocalInternal += part.noLocalInternal;
    noLocalExternal += part.noLocalExternal;
    filterRules += part.filter.rules;
    natRules += part.natTop.rules + part.chainRuleCount;
  }
  keepTotals(state.services, config.family, {
    configKey,
    memoKey,
    endpoints,
    filterRules,
    natRules,
    noLocalInternal,
    noLocalExternal,
    viewSkipped,
    partSkipped,
  });
  const active = lazyActiveChains(parts);

  // Stale chains: ours, in the kernel, no longer generated. Declaring flushes them; -X deletes.
  const delta =
    changedServices !== undefined && previous !== undefined
      ? partialDelta(previous, state, changedServices, written, config, ctx, memoKey, undefined)
      : undefined;
  const staleChains =
    delta?.staleChains ??
    [...(req.existingServiceChains ?? [])].filter((c) => isServiceChainName(c) && !active().has(c)).sort();
  return assemble({
    config,
    cc,
    written,
    parts: delta?.fixedChainsUnchanged === true ? undefined : parts,
    staleChains,
    largeClusterMode,
    totals: { filterRules, natRules, noLocalInternal, noLocalExternal },
    skipped,
    active,
    fromTotals: false,
  });
}

/**
 * A partial render from `previous`'s totals (RenderTotals) and the changed and removed Services
 * alone, when it can be one: `previous` was rendered with this config and kept its totals,
 * large-cluster mode stays as it was, and no fixed chain changes (so the input is the changed
 * Services' chains only). Otherwise undefined: the full pass decides.
 */
function renderFromTotals(
  req: RenderRequest,
  cc: CheckedConfig,
  configKey: string,
): RenderResult | undefined {
  const { state, config, changedServices: changed, previous, removedServices: removed } = req;
  if (changed === undefined || previous === undefined || removed === undefined) return undefined;
  const family = config.family;
  const before = renderTotals.get(previous.services)?.[family];
  if (before === undefined || before.configKey !== configKey) return undefined;
  const viewOf = (key: string, svc: Service | undefined): FamilyView | undefined =>
    svc === undefined || svc.skipReason !== undefined ? undefined : familyView(key, svc, family);

  // Pass 1 for the changed and removed Services: the endpoint total, pass 1's problems.
  const keys = [...changed].sort();
  let endpoints = before.endpoints;
  const viewSkipped = new Map(before.viewSkipped);
  for (const key of [...keys, ...removed]) {
    const was = viewOf(key, previous.services.get(key));
    if (was?.fe !== undefined) endpoints -= was.endpoints;
    const now = viewOf(key, state.services.get(key));
    if (now?.fe !== undefined) endpoints += now.endpoints;
    if (now !== undefined && now.skipped.length > 0) viewSkipped.set(key, now.skipped);
    else viewSkipped.delete(key);
  }
  const largeClusterMode = endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;
  const memoKey = contributionKey(config, largeClusterMode);
  // Large-cluster mode flipped: every contribution renders anew (comments differ).
  if (memoKey !== before.memoKey) return undefined;
  const ctx = serviceContext(config, cc, largeClusterMode);

  // Pass 2 for them: old contributions out, new ones in.
  let { filterRules, natRules, noLocalInternal, noLocalExternal } = before;
  const partSkipped = new Map(before.partSkipped);
  const add = (part: ServiceContribution, sign: 1 | -1): void => {
    filterRules += sign * part.filter.rules;
    natRules += sign * (part.natTop.rules + part.chainRuleCount);
    noLocalInternal += sign * part.noLocalInternal;
    noLocalExternal += sign * part.noLocalExternal;
  };
  const old = (key: string): ServiceContribution | undefined => {
    const svc = previous.services.get(key);
    const fe = viewOf(key, svc)?.fe;
    if (svc === undefined || fe === undefined) return undefined;
    return (
      contributionOf(svc, family, key, memoKey) ??
      renderService(ctx, { key, svc, fe }, memoKey, 'nat').contribution
    );
  };
  const written = new Map<string, RenderedService>();
  for (const key of [...keys, ...removed]) {
    const was = old(key);
    if (was !== undefined) add(was, -1);
    partSkipped.delete(key);
  }
  for (const key of keys) {
    const svc = state.services.get(key);
    const fe = viewOf(key, svc)?.fe;
    if (svc === undefined || fe === undefined) continue;
    const r = renderService(ctx, { key, svc, fe }, memoKey, 'nat+chains');
    add(r.contribution, 1);
    if (r.contribution.skipped.length > 0) partSkipped.set(key, r.contribution.skipped);
    written.set(key, r);
  }
  const gone = [...removed, ...keys.filter((k) => !written.has(k) && previous.services.has(k))];
  const delta = partialDelta(previous, state, changed, written, config, ctx, memoKey, gone);
  if (!delta.fixedChainsUnchanged) return undefined;
  keepTotals(state.services, family, {
    configKey,
    memoKey,
    endpoints,
    filterRules,
    natRules,
    noLocalInternal,
    noLocalExternal,
    viewSkipped,
    partSkipped,
  });
  return assemble({
    config,
    cc,
    written,
    parts: undefined,
    staleChains: delta.staleChains,
    largeClusterMode,
    totals: { filterRules, natRules, noLocalInternal, noLocalExternal },
    skipped: [...flatByKey(viewSkipped), ...flatByKey(partSkipped)],
    active: lazyActiveChainsOf(state, family, ctx, memoKey),
    fromTotals: true,
  });
}

/**
 * The restore input and result. `parts`: every contribution in key order (the fixed chains are
 * written); undefined: none of them changed, only the written Services' own chains go out.
 */
function assemble(a: {
  config: IptablesRenderConfig;
  cc: CheckedConfig;
  written: ReadonlyMap<string, RenderedService>;
  parts: readonly ServiceContribution[] | undefined;
  staleChains: readonly string[];
  largeClusterMode: boolean;
  totals: { filterRules: number; natRules: number; noLocalInternal: number; noLocalExternal: number };
  skipped: readonly string[];
  active: () => ReadonlySet<string>;
  fromTotals: boolean;
}): RenderResult {
  const { written, parts, staleChains } = a;
  const staleDecls = new LineBuffer();
  const staleDeletes = new LineBuffer();
  for (const c of staleChains) {
    staleDecls.add(chainLine(c));
    staleDeletes.addUncounted(`-X ${c}`);
  }

  const { head, tail } = fixedRules(a.config, a.cc);
  const totalFilterRules = a.totals.filterRules + head.filterRules.count + tail.filterRules.count;
  const totalNatRules = a.totals.natRules + head.natRules.count + tail.natRules.count;

  const filterChains = new Section();
  const filter = new Section();
  const natChains = new Section();
  const natRules = new Section();
  const omitFixed = parts === undefined;
  if (omitFixed) {
    // Nothing the fixed chains hold changed: write only the changed Services' own chains. With
    // --noflush, undeclared chains keep what the kernel has (what `previous` rendered to).
    for (const r of written.values()) {
      natChains.add(r.decls);
      natRules.add(r.chains ?? EMPTY_BLOCK);
    }
    natChains.add(blockOf(staleDecls));
    natRules.add(blockOf(staleDeletes));
  } else {
    filterChains.add(blockOf(head.filterChains));
    filter.add(blockOf(head.filterRules));
    natChains.add(blockOf(head.natChains));
    natRules.add(blockOf(head.natRules));
    for (const part of parts) {
      filter.add(part.filter);
      const r = written.get(part.serviceKey);
      if (r !== undefined && r.contribution === part) {
        natChains.add(r.decls);
        natRules.add(r.nat);
      } else {
        natRules.add(part.natTop);
      }
    }
    natChains.add(blockOf(staleDecls));
    natRules.add(blockOf(staleDeletes));
    filter.add(blockOf(tail.filterRules));
    natRules.add(blockOf(tail.natRules));
  }

  // One join over every block (not one per section and then again over the sections): a
  // 10k-Service input is 21 MB, and each extra join copies all of it.
  const all: string[] = [
    '*filter',
    ...filterChains.blocks,
    ...filter.blocks,
    'COMMIT',
    '*nat',
    ...natChains.blocks,
  ];
  for (const b of natRules.blocks) all.push(b);
  all.push('COMMIT');
  const restoreInput = all.join('\n') + '\n';

  return withActiveChains(a.active, {
    restoreInput,
    fixedChainsOmitted: omitFixed,
    writtenServices: new Set(written.keys()),
    staleChains,
    largeClusterMode: a.largeClusterMode,
    counts: {
      filterRules: filter.rules,
      totalFilterRules,
      natRules: natRules.rules,
      natChains: natChains.lines,
      totalNatRules,
    },
    noLocalEndpoints: { internal: a.totals.noLocalInternal, external: a.totals.noLocalExternal },
    skipped: a.skipped,
    lines: 4 + filterChains.lines + filter.lines + natChains.lines + natRules.lines,
    // Every character is checked ASCII (names, addresses, fixed text), so length is the byte count.
    bytes: restoreInput.length,
    fromTotals: a.fromTotals,
  });
}

/** The fixed chains' declarations and rules written before and after the Services'. */
function fixedRules(
  config: IptablesRenderConfig,
  cc: CheckedConfig,
): {
  head: { filterChains: LineBuffer; filterRules: LineBuffer; natChains: LineBuffer; natRules: LineBuffer };
  tail: { filterRules: LineBuffer; natRules: LineBuffer };
} {
  const head = {
    filterChains: new LineBuffer(),
    filterRules: new LineBuffer(),
    natChains: new LineBuffer(),
    natRules: new LineBuffer(),
  };
  renderFixedHead(
    { mark: cc.mark, randomFully: config.randomFully, kubeFirewall: cc.localhostNodePorts },
    head.filterChains,
    head.filterRules,
    head.natChains,
    head.natRules,
  );
  const tail = { filterRules: new LineBuffer(), natRules: new LineBuffer() };
  renderFixedTail(
    {
      mark: cc.mark,
      v6: cc.v6,
      localhostNodePorts: cc.localhostNodePorts,
      nodePorts: config.nodePortAddresses,
      conntrackTCPBeLiberal: config.conntrackTCPBeLiberal,
    },
    tail.filterRules,
    tail.natRules,
  );
  return { head, tail };
}

/** A full render as `--noflush` transactions produced while they are written (see below). */
export interface StreamedRender {
  /** The transactions in write order; each is rendered when asked for. */
  readonly pieces: Generator<string, void, undefined>;
  /** What the render produced; only once `pieces` is exhausted. */
  result(): StreamedRenderResult;
}

export type StreamedRenderResult = Omit<
  RenderResult,
  'restoreInput' | 'fixedChainsOmitted' | 'fromTotals'
> & {
  /** The fixed chains' declarations and rules as restore text (for fixedChainContents). */
  readonly fixedChains: string;
};

/**
 * The chunked `--noflush` full sync's input (render-chunks.ts's guarantees) rendered lazily, one
 * transaction at a time, so that iptables-restore commits the first ones while the rest is rendered
 * and no joined input (21 MB at 10k Services) or re-split of it ever exists:
 *
 * 1. the fixed nat chains the Services' chains jump to (NAT_LEAF_CHAINS), declared and filled;
 * 2. the Services' own chains in key order, each Service's chains whole in one transaction of at
 *    most `maxChains` chains (more only if one Service alone has more), declarations first;
 * 3. the fixed chains of both tables (KUBE-SERVICES … with every Service's lines in them), the
 *    stale chains and `extras`, ordered by chunkedRestoreInput: they jump to the chains above, and
 *    stale chains are flushed and deleted last, when nothing jumps to them any more. With
 *    `limits.exists`, a new fixed chain nothing can reach yet (KUBE-SERVICES on a new node) is
 *    filled over several transactions (render-chunks.ts).
 *
 * Same rules as renderRestoreInput for the same request (tests compare them chain by chain).
 */
export function renderChunkedRestoreInput(
  req: Pick<RenderRequest, 'state' | 'config' | 'existingServiceChains'>,
  limits: number | ChunkLimits,
  ...extras: readonly ExtraLines[]
): StreamedRender {
  const maxChains = typeof limits === 'number' ? limits : limits.maxChains;
  if (!Number.isInteger(maxChains) || maxChains < 1) throw new ChunkingError(`maxChains ${maxChains}`);
  let result: StreamedRenderResult | undefined;
  function* pieces(): Generator<string, void, undefined> {
    const { state, config } = req;
    const cc = checkConfig(config);
    const skipped: string[] = [];
    const viewSkipped = new Map<string, readonly string[]>();
    const { candidates, largeClusterMode, endpoints } = candidatesOf(
      state,
      config.family,
      skipped,
      viewSkipped,
    );
    const ctx = serviceContext(config, cc, largeClusterMode);
    const memoKey = contributionKey(config, largeClusterMode);
    const { head, tail } = fixedRules(config, cc);
    let lines = 0;
    let bytes = 0;
    // A transaction goes out in pieces of at most PIECE_CHARS: V8 allocates a longer string in its
    // large-object space, which only a full collection frees (21 MB of them at 10k Services).
    function* transaction(table: string, body: readonly string[]): Generator<string, void, undefined> {
      let parts: string[] = [`*${table}`];
      let size = parts[0]!.length;
      for (const b of body) {
        if (size + b.length >= PIECE_CHARS && parts.length > 0) {
          yield counted(parts.join('\n') + '\n');
          parts = [];
          size = 0;
        }
        parts.push(b);
        size += b.length + 1;
      }
      parts.push('COMMIT');
      yield counted(parts.join('\n') + '\n');
    }
    const counted = (text: string): string => {
      bytes += text.length;
      lines += countNewlines(text);
      return text;
    };

    // 1. The leaf chains, with their head rules (they have no others).
    const isLeaf = (line: string): boolean => NAT_LEAF_CHAINS.some((c) => line.startsWith(`-A ${c} `));
    const leafDecls = NAT_LEAF_CHAINS.map((c) => chainLine(c));
    const leafRules = head.natRules.lines.filter(isLeaf);
    const otherHeadNat = head.natRules.lines.filter((l) => !isLeaf(l));
    const prelude = [...leafDecls, ...leafRules];
    let natChainsCount = leafDecls.length;
    let natRulesCount = leafRules.length;
    yield* transaction('nat', prelude);

    // 2. The Services' own chains.
    const parts: ServiceContribution[] = [];
    const written = new Set<string>();
    let decls: string[] = [];
    let rules: string[] = [];
    let chains = 0;
    for (const cand of candidates) {
      const r = renderService(ctx, cand, memoKey, 'chains');
      parts.push(r.contribution);
      written.add(cand.key);
      if (r.decls.lines === 0) continue;
      if (chains > 0 && chains + r.decls.lines > maxChains) {
        yield* transaction('nat', [...decls, ...rules]);
        decls = [];
        rules = [];
        chains = 0;
      }
      decls.push(r.decls.text);
      if (r.chains !== undefined && r.chains.text !== '') rules.push(r.chains.text);
      chains += r.decls.lines;
      natChainsCount += r.decls.lines;
      natRulesCount += r.chains?.rules ?? 0;
    }
    if (chains > 0) yield* transaction('nat', [...decls, ...rules]);
    decls.length = 0;
    rules.length = 0;

    // 3. The fixed chains, the stale chains and the extras.
    let noLocalInternal = 0;
    let noLocalExternal = 0;
    let totalFilterRules = head.filterRules.count + tail.filterRules.count;
    let filterRules = totalFilterRules;
    let totalNatRules = head.natRules.count + tail.natRules.count;
    natRulesCount += otherHeadNat.length + tail.natRules.count;
    const filterLines: string[] = [...head.filterChains.lines, ...head.filterRules.lines];
    const natTop: string[] = [];
    const partSkipped = new Map<string, readonly string[]>();
    let partsFilterRules = 0;
    let partsNatRules = 0;
    for (const part of parts) {
      for (const sk of part.skipped) skipped.push(sk);
      if (part.skipped.length > 0) partSkipped.set(part.serviceKey, part.skipped);
      partsFilterRules += part.filter.rules;
      partsNatRules += part.natTop.rules + part.chainRuleCount;
      noLocalInternal += part.noLocalInternal;
      noLocalExternal += part.noLocalExternal;
      totalFilterRules += part.filter.rules;
      filterRules += part.filter.rules;
      totalNatRules += part.natTop.rules + part.chainRuleCount;
      natRulesCount += part.natTop.rules;
      if (part.filter.text !== '') filterLines.push(part.filter.text);
      if (part.natTop.text !== '') natTop.push(part.natTop.text);
    }
    for (const l of tail.filterRules.lines) filterLines.push(l);
    // The next partial render starts from these (renderFromTotals).
    keepTotals(state.services, config.family, {
      configKey: JSON.stringify(config),
      memoKey,
      endpoints,
      filterRules: partsFilterRules,
      natRules: partsNatRules,
      noLocalInternal,
      noLocalExternal,
      viewSkipped,
      partSkipped,
    });
    const active = lazyActiveChains(parts);
    const staleChains = [...(req.existingServiceChains ?? [])]
      .filter((c) => isServiceChainName(c) && !active().has(c))
      .sort();
    const fixedNatDecls = head.natChains.lines.filter((l) => !leafDecls.includes(l));
    natChainsCount += fixedNatDecls.length + staleChains.length;
    const fixedInput =
      `*filter\n${filterLines.join('\n')}\nCOMMIT\n` +
      `*nat\n${[
        ...fixedNatDecls,
        ...staleChains.map(chainLine),
        ...otherHeadNat,
        ...natTop,
        ...staleChains.map((c) => `-X ${c}`),
        ...tail.natRules.lines,
      ].join('\n')}\nCOMMIT\n`;
    let fixedPieces: string[];
    try {
      fixedPieces = chunkedRestoreInput(fixedInput, limits, ...extras);
    } catch (err) {
      if (!(err instanceof ChunkingError)) throw err;
      // Fixed chains that cannot be ordered (a jump cycle): one transaction per table.
      fixedPieces = [mergeExtraLines(fixedInput, ...extras)];
    }
    for (const p of fixedPieces) yield counted(p);
    result = withActiveChains(active, {
      fixedChains: `*nat\n${prelude.join('\n')}\nCOMMIT\n${fixedInput}`,
      writtenServices: written,
      staleChains,
      largeClusterMode,
      counts: {
        filterRules,
        totalFilterRules,
        natRules: natRulesCount,
        natChains: natChainsCount,
        totalNatRules,
      },
      noLocalEndpoints: { internal: noLocalInternal, external: noLocalExternal },
      skipped,
      lines,
      bytes,
    });
  }
  return {
    pieces: pieces(),
    result: () => {
      if (result === undefined) throw new Error('renderChunkedRestoreInput: result() before the last piece');
      return result;
    },
  };
}

/** Characters per streamed piece: below V8's large-object threshold (128 KiB), a few pipe buffers. */
const PIECE_CHARS = 48 * 1024;

function countNewlines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/** Outside the renderer's scope, so the getter's closure cannot keep the render's lines alive. */
function withActiveChains<R extends object>(
  active: () => ReadonlySet<string>,
  r: R,
): R & { readonly activeServiceChains: ReadonlySet<string> } {
  return {
    ...r,
    get activeServiceChains() {
      return active();
    },
  };
}

/**
 * The chain names of every contribution, as a set built on first use (partial syncs need it only when
 * the caller asks). A function of its own so the set's closure holds the contributions and nothing of
 * the render (its lines).
 */
function lazyActiveChains(parts: readonly ServiceContribution[]): () => ReadonlySet<string> {
  let set: Set<string> | undefined;
  return () => (set ??= new Set(parts.flatMap((p) => p.active)));
}

/** Pass 1 over a state: its Services of this family, and whether large-cluster mode is on. */
function candidatesOf(
  state: ClusterState,
  family: IPFamily,
  skipped: string[],
  skippedByKey?: Map<string, readonly string[]>,
): { candidates: Candidate[]; largeClusterMode: boolean; endpoints: number } {
  const candidates: Candidate[] = [];
  let totalEndpoints = 0;
  for (const key of sortedKeys(state.services)) {
    const svc = state.services.get(key)!;
    if (svc.skipReason !== undefined) continue;
    const view = familyView(key, svc, family);
    for (const sk of view.skipped) skipped.push(sk);
    if (view.skipped.length > 0) skippedByKey?.set(key, view.skipped);
    if (view.fe === undefined) continue;
    candidates.push({ key, svc, fe: view.fe });
    totalEndpoints += view.endpoints;
  }
  return {
    candidates,
    largeClusterMode: totalEndpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD,
    endpoints: totalEndpoints,
  };
}

/** Every chain name of a state's contributions, built on first use (a partial render from totals). */
function lazyActiveChainsOf(
  state: ClusterState,
  family: IPFamily,
  ctx: ServiceRenderContext,
  memoKey: string,
): () => ReadonlySet<string> {
  let set: Set<string> | undefined;
  return () => {
    if (set !== undefined) return set;
    set = new Set<string>();
    for (const cand of candidatesOf(state, family, []).candidates) {
      const part =
        contributionOf(cand.svc, family, cand.key, memoKey) ??
        renderService(ctx, cand, memoKey, 'nat').contribution;
      for (const c of part.active) set.add(c);
    }
    return set;
  };
}

function serviceContext(
  config: IptablesRenderConfig,
  cc: CheckedConfig,
  largeClusterMode: boolean,
): ServiceRenderContext {
  return {
    family: config.family,
    node: config.node,
    nodeIPs: config.nodeIPs,
    masqueradeAll: config.masqueradeAll,
    detector: cc.detector,
    localhostNodePorts: cc.localhostNodePorts,
    largeClusterMode,
  };
}

function contributionKey(config: IptablesRenderConfig, largeClusterMode: boolean): string {
  return `${JSON.stringify(config)}|${largeClusterMode}`;
}

/**
 * What a partial sync changes relative to `previous`, from the changed and removed Services alone
 * (a chain name hashes its Service port, so no two Services share a chain): their chains that are no
 * longer generated, and whether every fixed chain stays as `previous` rendered it. The fixed chains
 * are the fixed head and tail (same config) plus every Service's fixed-chain lines in key order.
 */
function partialDelta(
  previous: ClusterState,
  state: ClusterState,
  changed: ReadonlySet<string>,
  written: ReadonlyMap<string, RenderedService>,
  config: IptablesRenderConfig,
  ctx: ServiceRenderContext,
  memoKey: string,
  /** The Services of `previous` no longer rendered (removed, or changed out of this family); undefined: find them. */
  gone: readonly string[] | undefined,
): { staleChains: string[]; fixedChainsUnchanged: boolean } {
  // Only a contribution's fixed-chain lines and chain names are compared, and those do not depend on
  // large-cluster mode (comments do): one rendered in either mode will do.
  const otherKey = contributionKey(config, !ctx.largeClusterMode);
  const before = (key: string): ServiceContribution | undefined => {
    const old = previous.services.get(key);
    if (old === undefined || old.skipReason !== undefined) return undefined;
    const fe = familyView(key, old, config.family).fe;
    if (fe === undefined) return undefined;
    return (
      contributionOf(old, config.family, key, memoKey) ??
      contributionOf(old, config.family, key, otherKey) ??
      renderService(ctx, { key, svc: old, fe }, memoKey, 'nat').contribution
    );
  };
  const stale: string[] = [];
  let unchanged = true;
  const compare = (key: string, now: ServiceContribution | undefined): void => {
    const old = before(key);
    if (old === undefined) {
      if (now !== undefined && (now.filter.lines > 0 || now.natTop.lines > 0)) unchanged = false;
      return;
    }
    const keep = new Set(now?.active ?? []);
    for (const c of old.active) if (!keep.has(c)) stale.push(c);
    if (
      unchanged &&
      !(old.filter.text === (now?.filter.text ?? '') && old.natTop.text === (now?.natTop.text ?? ''))
    ) {
      unchanged = false;
    }
  };
  for (const [key, r] of written) compare(key, r.contribution);
  if (gone !== undefined) {
    for (const key of gone) compare(key, undefined);
    return { staleChains: stale.sort(), fixedChainsUnchanged: unchanged };
  }
  for (const key of previous.services.keys()) {
    // Unchanged Services render the same; written ones were compared above. The rest were removed,
    // or changed and are no longer rendered in this family.
    if (written.has(key) || (state.services.has(key) && !changed.has(key))) continue;
    compare(key, undefined);
  }
  return { staleChains: stale.sort(), fixedChainsUnchanged: unchanged };
}

/** The state's Service keys in order (built states are sorted already: check, don't sort). */
function sortedKeys(services: ReadonlyMap<string, Service>): readonly string[] {
  const keys = [...services.keys()];
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1]! >= keys[i]!) return keys.sort();
  }
  return keys;
}

/** Pass 1 for one Service, memoised per Service object and family. */
function familyView(key: string, svc: Service, family: IPFamily): FamilyView {
  const views = familyViews.get(svc);
  const hit = views?.[family];
  if (hit !== undefined && hit.key === key) return hit;
  const v6 = family === 'IPv6';
  const skipped: string[] = [];
  let fe = checkFrontends(key, familyFrontends(svc, family), v6, skipped);
  let endpoints = 0;
  if (fe !== undefined) {
    const problem = serviceProblem(svc);
    if (problem !== undefined) {
      skipped.push(`${key}: ${problem}`);
      fe = undefined;
    } else {
      for (const port of svc.ports) {
        for (const ep of port.endpoints) if (ep.ip.includes(':') === v6) endpoints++;
      }
    }
  }
  const view: FamilyView = { key, fe, skipped, endpoints };
  familyViews.set(svc, { ...views, [family]: view });
  return view;
}

function contributionOf(
  svc: Service,
  family: IPFamily,
  key: string,
  memoKey: string,
): ServiceContribution | undefined {
  const memo = contributions.get(svc)?.[family];
  return memo !== undefined && memo.key === memoKey && memo.serviceKey === key ? memo : undefined;
}

/** One Service's rules: its contribution, plus the text of its own chains. */
interface RenderedService {
  readonly contribution: ServiceContribution;
  readonly decls: Block;
  /**
   * Its nat rules in kube-proxy's emission order: fixed-chain rules and own-chain rules mixed
   * (empty when only `chains` was asked for).
   */
  readonly nat: Block;
  /** Its own chains' rules alone (partial syncs, for an input without the fixed chains). */
  readonly chains?: Block;
}

/**
 * Which text of its nat rules a caller needs: kube-proxy's mixed order (`nat`), plus its own chains'
 * rules apart (`nat+chains`, partial syncs), or only those (`chains`, the streamed full sync, which
 * writes the fixed chains from the contributions).
 */
type NatText = 'nat' | 'nat+chains' | 'chains';

function renderService(
  ctx: ServiceRenderContext,
  cand: Candidate,
  memoKey: string,
  want: NatText,
): RenderedService {
  const { key, svc, fe } = cand;
  const filterRules = new LineBuffer();
  const natRules = new LineBuffer();
  const natChains = new LineBuffer();
  const active = new Set<string>();
  const skipped: string[] = [];
  let noLocalInternal = 0;
  let noLocalExternal = 0;
  const topAt: number[] = [];
  const natTop = {
    add: (line: string): void => {
      topAt.push(natRules.lines.length);
      natRules.add(line);
    },
  };
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
    const outcome = renderServicePort(
      ctx,
      svc,
      fe,
      port,
      spn,
      { filterRules, natRules: natTop },
      { natChains, natRules },
      active,
    );
    if (outcome.noLocalInternal) noLocalInternal++;
    if (outcome.noLocalExternal) noLocalExternal++;
  }
  // Which of its nat rules went to fixed chains (kept by position: testing the text would flatten
  // every rendered line).
  const top = new LineBuffer();
  const own = new LineBuffer();
  const lines = natRules.lines;
  for (let i = 0, t = 0; i < lines.length; i++) {
    if (t < topAt.length && topAt[t] === i) {
      top.add(lines[i]!);
      t++;
    } else {
      own.add(lines[i]!);
    }
  }
  const contribution: ServiceContribution = {
    key: memoKey,
    serviceKey: key,
    filter: blockOf(filterRules),
    natTop: blockOf(top),
    chainRuleCount: own.count,
    active: [...active],
    skipped,
    noLocalInternal,
    noLocalExternal,
  };
  contributions.set(svc, { ...contributions.get(svc), [ctx.family]: contribution });
  return {
    contribution,
    decls: blockOf(natChains),
    nat: want === 'chains' ? EMPTY_BLOCK : blockOf(natRules),
    ...(want !== 'nat' ? { chains: blockOf(own) } : {}),
  };
}
