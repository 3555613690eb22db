import {
  ENDPOINT_CHAIN_PREFIX,
  KUBE_EXTERNAL_SERVICES,
  KUBE_NODEPORTS,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
  portChainNames,
} from '../iptables/names.js';
import { ruleComment, ruleTarget, type SavedRule, type SavedRuleset } from '../iptables/save-parse.js';
import { ipFamilyOf } from '../model/ip.js';
import {
  categorizeEndpoints,
  endpointString,
  externalPolicyLocal,
  externallyAccessible,
  familyFrontends,
  internalPolicyLocal,
  type NodeContext,
} from '../model/selection.js';
import type { ClusterState, IPFamily, Problem, Service } from '../model/types.js';
import { servicePortName } from '../model/types.js';
import type { FamilyDrift } from '../iptables-rules/compare.js';
import { servicePortNameFromComment } from '../iptables-rules/owners.js';

/**
 * `svcplane explain NAMESPACE/NAME`, the pure part: a Service's frontends, its endpoints by category,
 * the kernel chains and rules implementing it (with packet counters), and what looks wrong.
 */

export interface ExplainFamilyInput {
  readonly family: IPFamily;
  /** iptables-save -c of this family (undefined: not available). */
  readonly kernel?: SavedRuleset;
  /** The diff of this family, to report drift of this Service. */
  readonly drift?: FamilyDrift;
  /** This mode writes no per-Service iptables chains (IPVS): no kernel rules to show, nothing to warn. */
  readonly noServiceChains?: boolean;
}

export interface ExplainInput {
  readonly key: string;
  readonly state: ClusterState;
  readonly node: NodeContext;
  readonly families: readonly ExplainFamilyInput[];
}

export interface ExplainRule {
  readonly table: string;
  readonly chain: string;
  readonly text: string;
  readonly packets?: number;
  readonly bytes?: number;
}

export interface ExplainChain {
  readonly table: string;
  readonly chain: string;
  readonly role: string;
  readonly present: boolean;
  readonly rules: readonly ExplainRule[];
}

export interface ExplainEndpoint {
  readonly endpoint: string;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly node: string | null;
  readonly local: boolean;
  /** Which of this node's sets use it: cluster (SVC), local (SVL); empty = not used here. */
  readonly usedFor: readonly ('cluster' | 'local')[];
}

export interface ExplainPort {
  readonly servicePortName: string;
  readonly family: IPFamily;
  readonly protocol: string;
  readonly port: number;
  readonly nodePort: number;
  readonly targetPort: number | string;
  readonly endpoints: readonly ExplainEndpoint[];
  /** Rules naming this port in shared chains (KUBE-SERVICES, KUBE-NODEPORTS, filter chains). */
  readonly dispatch: readonly ExplainRule[];
  readonly chains: readonly ExplainChain[];
}

export interface ExplainReport {
  readonly service: string;
  readonly found: boolean;
  readonly type?: string;
  readonly skipReason?: string;
  readonly frontends?: {
    readonly clusterIPs: readonly string[];
    readonly externalIPs: readonly string[];
    readonly loadBalancerIPs: readonly { ip: string; ipMode: string }[];
    readonly loadBalancerSourceRanges: readonly string[];
    readonly healthCheckNodePort: number;
    readonly externalTrafficPolicy: string;
    readonly internalTrafficPolicy: string;
    readonly sessionAffinity: string;
  };
  readonly ports: readonly ExplainPort[];
  readonly warnings: readonly string[];
  readonly problems: readonly Problem[];
}

const PROTO = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' } as const;
const SHARED = [
  ['nat', KUBE_SERVICES],
  ['nat', KUBE_NODEPORTS],
  ['filter', KUBE_SERVICES],
  ['filter', KUBE_EXTERNAL_SERVICES],
  ['filter', KUBE_NODEPORTS],
  ['filter', KUBE_PROXY_FIREWALL],
] as const;

export function explainService(input: ExplainInput): ExplainReport {
  const svc = input.state.services.get(input.key);
  const [ns = '', name = ''] = input.key.split('/');
  const problems = input.state.problems.filter((p) => concerns(p, ns, name));
  const warnings: string[] = problems.map(
    (p) => `${p.object.kind} ${p.object.name}: ${p.field}: ${p.reason} (skipped by the model)`,
  );
  if (!svc) {
    const kernelRules = input.families.flatMap((f) => (f.kernel ? rulesNaming(f.kernel, input.key) : []));
    if (kernelRules.length > 0) {
      warnings.push(
        `not in the current state, but the kernel still has ${kernelRules.length} rule(s) for it (stale: run svcplane sync)`,
      );
    }
    return { service: input.key, found: false, ports: [], warnings, problems };
  }
  if (svc.skipReason !== undefined) {
    warnings.push(`no dataplane for this Service: ${svc.skipReason}`);
  }
  const ports: ExplainPort[] = [];
  for (const f of input.families) {
    const fe = familyFrontends(svc, f.family);
    if (fe.clusterIP === undefined) continue;
    for (const port of svc.ports) {
      ports.push(explainPort(svc, port, f, input.node, warnings));
    }
    for (const g of f.drift?.groups ?? []) {
      const spn = g.servicePortName;
      if (spn === undefined || !(spn === input.key || spn.startsWith(`${input.key}:`))) continue;
      const missing = g.chains.reduce((n, c) => n + c.changes.filter((x) => x.op === 'missing').length, 0);
      const extra = g.chains.reduce((n, c) => n + c.changes.filter((x) => x.op === 'extra').length, 0);
      warnings.push(
        `${f.family} ${spn}: kernel rules drifted (${missing} missing, ${extra} extra, chains: ${g.chains
          .map((c) => `${c.table}/${c.chain} ${c.status}`)
          .join(', ')}): see svcplane diff`,
      );
    }
    if (!f.kernel && f.noServiceChains !== true)
      warnings.push(`${f.family}: iptables-save not available; kernel rules not shown`);
  }
  return {
    service: input.key,
    found: true,
    type: svc.type,
    ...(svc.skipReason !== undefined ? { skipReason: svc.skipReason } : {}),
    frontends: {
      clusterIPs: svc.clusterIPs,
      externalIPs: svc.externalIPs,
      loadBalancerIPs: svc.loadBalancerIngress.map((i) => ({ ip: i.ip, ipMode: i.ipMode })),
      loadBalancerSourceRanges: svc.loadBalancerSourceRanges,
      healthCheckNodePort: svc.healthCheckNodePort,
      externalTrafficPolicy: svc.externalTrafficPolicy,
      internalTrafficPolicy: svc.internalTrafficPolicy,
      sessionAffinity:
        svc.sessionAffinity.type === 'ClientIP'
          ? `ClientIP (${svc.sessionAffinity.timeoutSeconds} s)`
          : 'None',
    },
    ports,
    warnings,
    problems,
  };
}

function explainPort(
  svc: Service,
  port: Service['ports'][number],
  f: ExplainFamilyInput,
  node: NodeContext,
  warnings: string[],
): ExplainPort {
  const spn = servicePortName(port);
  const family = f.family;
  const fe = familyFrontends(svc, family);
  const cat = categorizeEndpoints(svc, port, family, node);
  const inCluster = new Set((cat.cluster ?? []).map(endpointString));
  const inLocal = new Set((cat.local ?? []).map(endpointString));
  const endpoints: ExplainEndpoint[] = port.endpoints
    .filter((ep) => ipFamilyOf(ep.ip) === family)
    .map((ep) => {
      const e = endpointString(ep);
      const usedFor: ('cluster' | 'local')[] = [];
      if (inCluster.has(e)) usedFor.push('cluster');
      if (inLocal.has(e)) usedFor.push('local');
      return {
        endpoint: e,
        ready: ep.ready,
        serving: ep.serving,
        terminating: ep.terminating,
        node: ep.nodeName ?? null,
        local: ep.nodeName !== undefined && ep.nodeName === node.name,
        usedFor,
      };
    });

  const label = `${family} ${spn} (${port.port}/${port.protocol})`;
  if (!cat.hasAnyEndpoints) {
    warnings.push(`${label}: no usable endpoints: every frontend REJECTs (clients see connection refused)`);
  } else {
    if (!endpoints.some((e) => e.ready) && endpoints.some((e) => e.serving && e.terminating)) {
      warnings.push(`${label}: only terminating endpoints left; they still serve (kube-proxy's fallback)`);
    }
    if (externalPolicyLocal(svc) && externallyAccessible(fe, port) && (cat.local ?? []).length === 0) {
      warnings.push(
        `${label}: externalTrafficPolicy=Local but no endpoint runs on node ${node.name}: external traffic (NodePort, LB, externalIP) is DROPPED here`,
      );
    }
    if (internalPolicyLocal(svc) && (cat.local ?? []).length === 0) {
      warnings.push(
        `${label}: internalTrafficPolicy=Local but no endpoint runs on node ${node.name}: ClusterIP traffic from this node is DROPPED`,
      );
    }
  }
  const notServing = endpoints.filter((e) => !e.serving).length;
  if (notServing > 0) warnings.push(`${label}: ${notServing} endpoint(s) not serving (never used)`);

  const proto = PROTO[port.protocol];
  const names = portChainNames(spn, proto);
  const chains: ExplainChain[] = [];
  const dispatch: ExplainRule[] = [];
  const kernel = f.kernel;
  if (kernel) {
    for (const [table, chain] of SHARED) {
      for (const r of kernel.tables.get(table)?.rulesByChain.get(chain) ?? []) {
        const named = servicePortNameFromComment(ruleComment(r));
        const jumpsHere = [names.svc, names.svl, names.ext, names.fw].includes(ruleTarget(r) ?? '');
        if (named === spn || (named === undefined && jumpsHere)) dispatch.push(toRule(table, r));
      }
    }
    const roles: [string, string][] = [
      [names.ext, 'external traffic (EXT)'],
      [names.fw, 'loadBalancerSourceRanges (FW)'],
      [names.svc, 'cluster-policy endpoints (SVC)'],
      [names.svl, 'local-policy endpoints (SVL)'],
    ];
    const seps = new Map<string, string>();
    for (const ep of port.endpoints) {
      if (ipFamilyOf(ep.ip) !== family) continue;
      seps.set(names.endpointChain(endpointString(ep)), `endpoint ${endpointString(ep)} (SEP)`);
    }
    const nat = kernel.tables.get('nat');
    for (const [chain, role] of roles) {
      const present = nat?.chainsByName.has(chain) ?? false;
      if (!present) continue;
      const rules = nat?.rulesByChain.get(chain) ?? [];
      chains.push({ table: 'nat', chain, role, present, rules: rules.map((r) => toRule('nat', r)) });
      // SEP chains the kernel jumps to, even ones for endpoints the state no longer has.
      for (const r of rules) {
        const t = ruleTarget(r);
        if (t?.startsWith(ENDPOINT_CHAIN_PREFIX) && !seps.has(t))
          seps.set(t, 'endpoint (not in the current state: stale)');
      }
    }
    for (const [chain, role] of seps) {
      const present = nat?.chainsByName.has(chain) ?? false;
      if (!present) continue;
      chains.push({
        table: 'nat',
        chain,
        role,
        present,
        rules: (nat?.rulesByChain.get(chain) ?? []).map((r) => toRule('nat', r)),
      });
    }
    if (dispatch.length === 0 && chains.length === 0) {
      warnings.push(`${label}: the kernel has no rules for this port (not programmed yet, or flushed)`);
    }
  }
  return {
    servicePortName: spn,
    family,
    protocol: port.protocol,
    port: port.port,
    nodePort: port.nodePort,
    targetPort: port.targetPort,
    endpoints,
    dispatch,
    chains,
  };
}

function toRule(table: string, r: SavedRule): ExplainRule {
  return {
    table,
    chain: r.chain,
    text: r.text,
    ...(r.packets !== undefined ? { packets: r.packets } : {}),
    ...(r.bytes !== undefined ? { bytes: r.bytes } : {}),
  };
}

function rulesNaming(kernel: SavedRuleset, key: string): SavedRule[] {
  const out: SavedRule[] = [];
  for (const t of kernel.tables.values()) {
    for (const r of t.rules) {
      const spn = servicePortNameFromComment(ruleComment(r));
      if (spn !== undefined && (spn === key || spn.startsWith(`${key}:`))) out.push(r);
    }
  }
  return out;
}

/** A problem about this Service, its EndpointSlices (`<name>-…`) or its Endpoints object. */
function concerns(p: Problem, ns: string, name: string): boolean {
  const o = p.object;
  if (o.namespace !== undefined && o.namespace !== ns) return false;
  if (o.kind === 'Service' || o.kind === 'Endpoints') return o.name === name;
  if (o.kind === 'EndpointSlice') return o.name === name || o.name.startsWith(`${name}-`);
  return false;
}

// ---- text ----

/** `rules: false` leaves out the iptables chains (IPVS mode shows its own section instead). */
export function formatExplainText(
  r: ExplainReport,
  opts: { rules?: boolean; extra?: readonly string[] } = {},
): string {
  const out: string[] = [];
  const kind = r.skipReason !== undefined ? `${r.skipReason}: no dataplane` : (r.type ?? '');
  out.push(`Service ${r.service}${r.found ? ` (${kind})` : ': not found in the current state'}`);
  const fe = r.frontends;
  if (fe) {
    out.push('Frontends:');
    out.push(`  cluster IPs:        ${fe.clusterIPs.join(', ') || '-'}`);
    if (fe.externalIPs.length) out.push(`  external IPs:       ${fe.externalIPs.join(', ')}`);
    if (fe.loadBalancerIPs.length)
      out.push(`  load balancer IPs:  ${fe.loadBalancerIPs.map((i) => `${i.ip} (${i.ipMode})`).join(', ')}`);
    if (fe.loadBalancerSourceRanges.length)
      out.push(`  source ranges:      ${fe.loadBalancerSourceRanges.join(', ')}`);
    if (fe.healthCheckNodePort) out.push(`  health check port:  ${fe.healthCheckNodePort}`);
    out.push(
      `  traffic policy:     external ${fe.externalTrafficPolicy}, internal ${fe.internalTrafficPolicy}; affinity ${fe.sessionAffinity}`,
    );
  }
  for (const p of r.ports) {
    out.push('');
    out.push(
      `Port ${p.servicePortName} ${p.port}/${p.protocol}${p.nodePort ? ` nodePort ${p.nodePort}` : ''} -> ${String(p.targetPort)} [${p.family}]`,
    );
    out.push('  Endpoints:');
    if (p.endpoints.length === 0) out.push('    (none)');
    for (const e of p.endpoints) {
      const state = e.ready
        ? 'ready'
        : e.serving
          ? e.terminating
            ? 'serving, terminating'
            : 'serving'
          : e.terminating
            ? 'terminating'
            : 'not ready';
      out.push(
        `    ${e.endpoint.padEnd(24)} ${state.padEnd(21)} ${e.local ? 'local' : 'remote'}${e.node ? ` (${e.node})` : ''}  used for: ${e.usedFor.join(', ') || '-'}`,
      );
    }
    if (opts.rules === false) continue;
    out.push('  Rules in shared chains [packets bytes]:');
    if (p.dispatch.length === 0) out.push('    (none)');
    for (const d of p.dispatch) out.push(`    ${counters(d)} ${d.table}: ${d.text}`);
    for (const c of p.chains) {
      out.push(`  Chain ${c.table} ${c.chain}: ${c.role}`);
      for (const rule of c.rules) out.push(`    ${counters(rule)} ${rule.text}`);
    }
  }
  if (opts.extra) out.push(...opts.extra);
  out.push('');
  if (r.warnings.length === 0) out.push('Warnings: none');
  else {
    out.push('Warnings:');
    for (const w of r.warnings) out.push(`  - ${w}`);
  }
  return `${out.join('\n')}\n`;
}

function counters(r: ExplainRule): string {
  return r.packets === undefined ? '' : `[${r.packets} ${r.bytes ?? 0}]`.padEnd(12);
}
