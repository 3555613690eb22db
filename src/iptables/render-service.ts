import { cidrContains } from '../model/ip.js';
import {
  categorizeEndpoints,
  endpointString,
  externalPolicyLocal,
  externallyAccessible,
  internalPolicyLocal,
  needsHealthCheck,
  type FamilyFrontends,
  type NodeContext,
} from '../model/selection.js';
import type { Endpoint, IPFamily, Service, ServicePort } from '../model/types.js';
import {
  computeProbability,
  KUBE_EXTERNAL_SERVICES,
  KUBE_MARK_MASQ,
  KUBE_NODEPORTS,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
  portChainNames,
  type PortChainNames,
} from './names.js';
import { chainLine, type LineBuffer } from './render-lines.js';

/**
 * Rules for one service port (spec §6), in kube-proxy's emission order: the dispatch rules in
 * KUBE-SERVICES / KUBE-NODEPORTS and the filter table (always written), then the per-service
 * chains EXT, FW, SVC, SVL and SEP.
 *
 * Comments: kube-proxy quotes the ones with spaces and writes the bare ServicePortName unquoted;
 * the ServicePortName is checked to contain no space, so this is exactly "quoted iff it has a space".
 */

export interface ServiceRenderContext {
  readonly family: IPFamily;
  readonly node: NodeContext;
  readonly nodeIPs: readonly string[];
  readonly masqueradeAll: boolean;
  /** Local-traffic detector matches (`-s 10.0.0.0/8` / `! -s 10.0.0.0/8`); undefined = none. */
  readonly detector: { readonly ifLocal: string; readonly ifNotLocal: string } | undefined;
  /** IPv4 with localhost NodePorts: write the `-d 127.0.0.0/8` NodePort variant. */
  readonly localhostNodePorts: boolean;
  /** Drop comments from SEP rules and SVC/SVL → SEP rules. */
  readonly largeClusterMode: boolean;
}

/** Buffers that are always written (filter table, top-level nat chains). */
export interface TopLevelOutput {
  readonly filterRules: Pick<LineBuffer, 'add'>;
  readonly natRules: Pick<LineBuffer, 'add'>;
}

/** Buffers for per-service chains. */
export interface ServiceChainOutput {
  readonly natChains: LineBuffer;
  readonly natRules: LineBuffer;
}

export interface ServicePortOutcome {
  /** iTP=Local with endpoints elsewhere only (the no_local_endpoints metric, internal). */
  readonly noLocalInternal: boolean;
  /** eTP=Local with endpoints elsewhere only (external). */
  readonly noLocalExternal: boolean;
}

const PROTOCOL_LOWER = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' } as const;

interface EndpointRef {
  readonly ip: string;
  readonly str: string;
  readonly chain: string;
}

/**
 * Render one service port. `fe` must carry a cluster IP of `ctx.family`; every text field is
 * expected to have passed the renderer's safety checks. Adds each per-service chain this port
 * needs to `active`, whether it is written or discarded.
 */
export function renderServicePort(
  ctx: ServiceRenderContext,
  svc: Service,
  fe: FamilyFrontends,
  port: ServicePort,
  spn: string,
  top: TopLevelOutput,
  chains: ServiceChainOutput,
  active: Set<string>,
): ServicePortOutcome {
  const proto = PROTOCOL_LOWER[port.protocol];
  const clusterIP = fe.clusterIP ?? '';
  const names = portChainNames(spn, proto);
  const clusterChain = names.svc;
  const localChain = names.svl;
  const extChain = names.ext;
  const fwChain = names.fw;

  const cat = categorizeEndpoints(svc, port, ctx.family, ctx.node);
  const clusterEndpoints = cat.cluster ?? [];
  const localEndpoints = cat.local ?? [];
  const hasEndpoints = cat.hasAnyEndpoints;
  // cluster/local are undefined when the policy does not use them, so length > 0 implies "uses".
  const usesClusterChain = clusterEndpoints.length > 0;
  const usesLocalChain = localEndpoints.length > 0;

  const iLocal = internalPolicyLocal(svc);
  const eLocal = externalPolicyLocal(svc);
  const internalChain = iLocal ? localChain : clusterChain;
  const hasInternal = hasEndpoints && !(iLocal && localEndpoints.length === 0);
  const externalPolicyChain = eLocal ? localChain : clusterChain;
  const hasExternal = hasEndpoints && !(eLocal && localEndpoints.length === 0);
  // EXT exists even without external endpoints: it carries the local-traffic short-circuit.
  const usesExtChain = hasEndpoints && externallyAccessible(fe, port);
  const vips = fe.loadBalancerVIPs;
  const sourceRanges = fe.loadBalancerSourceRanges;
  const usesFWChain = hasEndpoints && vips.length > 0 && sourceRanges.length > 0;
  const lbChain = usesFWChain ? fwChain : extChain;

  let internalFilter = '';
  let externalFilter = '';
  if (!hasEndpoints) {
    internalFilter = `--comment "${spn} has no endpoints"`;
    externalFilter = internalFilter;
  } else {
    if (!hasInternal) internalFilter = `--comment "${spn} has no local endpoints"`;
    if (!hasExternal) externalFilter = `--comment "${spn} has no local endpoints"`;
  }
  const filterTarget = hasEndpoints ? 'DROP' : 'REJECT';

  const pm = `-m ${proto} -p ${proto}`;
  const svcPort = port.port;
  const clusterIPMatch = `${pm} -d ${clusterIP} --dport ${svcPort}`;
  const { filterRules, natRules } = top;

  // 1. ClusterIP.
  if (hasInternal) {
    natRules.add(
      `-A ${KUBE_SERVICES} -m comment --comment "${spn} cluster IP" ${clusterIPMatch} -j ${internalChain}`,
    );
  } else {
    filterRules.add(`-A ${KUBE_SERVICES} -m comment ${internalFilter} ${clusterIPMatch} -j ${filterTarget}`);
  }

  // 2. externalIPs.
  for (const ip of fe.externalIPs) {
    if (hasEndpoints) {
      natRules.add(
        `-A ${KUBE_SERVICES} -m comment --comment "${spn} external IP" ${pm} -d ${ip} --dport ${svcPort} -j ${extChain}`,
      );
    }
    if (!hasExternal) {
      filterRules.add(
        `-A ${KUBE_EXTERNAL_SERVICES} -m comment ${externalFilter} ${pm} -d ${ip} --dport ${svcPort} -j ${filterTarget}`,
      );
    }
  }

  // 3. LoadBalancer VIPs (ipMode Proxy was already left out by familyFrontends).
  for (const ip of vips) {
    if (hasEndpoints) {
      natRules.add(
        `-A ${KUBE_SERVICES} -m comment --comment "${spn} loadbalancer IP" ${pm} -d ${ip} --dport ${svcPort} -j ${lbChain}`,
      );
    }
    if (usesFWChain) {
      filterRules.add(
        `-A ${KUBE_PROXY_FIREWALL} -m comment --comment "${spn} traffic not accepted by ${fwChain}" ${pm} -d ${ip} --dport ${svcPort} -j DROP`,
      );
    }
  }
  if (!hasExternal) {
    for (const ip of vips) {
      filterRules.add(
        `-A ${KUBE_EXTERNAL_SERVICES} -m comment ${externalFilter} ${pm} -d ${ip} --dport ${svcPort} -j ${filterTarget}`,
      );
    }
  }

  // 4. NodePort (never subject to loadBalancerSourceRanges, as in kube-proxy).
  const nodePort = port.nodePort;
  if (nodePort !== 0) {
    if (hasEndpoints) {
      if (ctx.localhostNodePorts) {
        // kube-proxy writes this rule with `-m nfacct --nfacct-name localhost_nps_accepted_pkts` to
        // count accepted localhost NodePort packets (and omits it on kernels without nfacct: the
        // next rule matches 127.0.0.1 too). svcplane has no nfacct counters but keeps the rule, so
        // its iptables-save reads like kube-proxy's on the usual nfacct kernels and `diff` against
        // kube-proxy's rules pairs them up.
        natRules.add(
          `-A ${KUBE_NODEPORTS} -m comment --comment ${spn} ${pm} -d 127.0.0.0/8 --dport ${nodePort} -j ${extChain}`,
        );
      }
      natRules.add(
        `-A ${KUBE_NODEPORTS} -m comment --comment ${spn} ${pm} --dport ${nodePort} -j ${extChain}`,
      );
    }
    if (!hasExternal) {
      filterRules.add(
        `-A ${KUBE_EXTERNAL_SERVICES} -m comment ${externalFilter} -m addrtype --dst-type LOCAL ${pm} --dport ${nodePort} -j ${filterTarget}`,
      );
    }
  }

  // 5. Health-check NodePort: accepted even without endpoints (the health server answers 503).
  if (needsHealthCheck(svc) && svc.healthCheckNodePort !== 0) {
    filterRules.add(
      `-A ${KUBE_NODEPORTS} -m comment --comment "${spn} health check node port" -m tcp -p tcp --dport ${svc.healthCheckNodePort} -j ACCEPT`,
    );
  }

  // 6. Per-service chains from here on (maybe into discard buffers).
  const out = chains.natRules;
  const decl = chains.natChains;

  if (hasInternal) {
    if (ctx.masqueradeAll) {
      out.add(
        `-A ${internalChain} -m comment --comment "${spn} cluster IP" ${clusterIPMatch} -j ${KUBE_MARK_MASQ}`,
      );
    } else if (ctx.detector !== undefined) {
      // Off-cluster traffic to a ClusterIP (static route to a node) may bounce off-node: masquerade.
      out.add(
        `-A ${internalChain} -m comment --comment "${spn} cluster IP" ${clusterIPMatch} ${ctx.detector.ifNotLocal} -j ${KUBE_MARK_MASQ}`,
      );
    }
  }

  // 7. EXT chain.
  if (usesExtChain) {
    decl.add(chainLine(extChain));
    active.add(extChain);
    if (!eLocal) {
      out.add(
        `-A ${extChain} -m comment --comment "masquerade traffic for ${spn} external destinations" -j ${KUBE_MARK_MASQ}`,
      );
    } else {
      if (ctx.detector !== undefined) {
        // Pod → external destination acts like going out to the LB and back: any endpoint, no masq.
        out.add(
          `-A ${extChain} -m comment --comment "pod traffic for ${spn} external destinations" ${ctx.detector.ifLocal} -j ${clusterChain}`,
        );
      }
      // From the node itself the source is a local address: masquerade and use all endpoints.
      out.add(
        `-A ${extChain} -m comment --comment "masquerade LOCAL traffic for ${spn} external destinations" -m addrtype --src-type LOCAL -j ${KUBE_MARK_MASQ}`,
      );
      out.add(
        `-A ${extChain} -m comment --comment "route LOCAL traffic for ${spn} external destinations" -m addrtype --src-type LOCAL -j ${clusterChain}`,
      );
    }
    if (hasExternal) out.add(`-A ${extChain} -j ${externalPolicyChain}`);
  }

  // 8. FW chain (loadBalancerSourceRanges).
  if (usesFWChain) {
    decl.add(chainLine(fwChain));
    active.add(fwChain);
    const head = `-A ${fwChain} -m comment --comment "${spn} loadbalancer IP"`;
    let allowFromNode = false;
    for (const cidr of sourceRanges) {
      out.add(`${head} -s ${cidr} -j ${extChain}`);
      if (!allowFromNode && ctx.nodeIPs.some((ip) => cidrContains(cidr, ip))) allowFromNode = true;
    }
    // Node → VIP traffic loops back with the VIP as source when the VIP is a local address.
    if (allowFromNode) {
      for (const ip of vips) out.add(`${head} -s ${ip} -j ${extChain}`);
    }
    // What gets here was not DNATed and is dropped by KUBE-PROXY-FIREWALL in filter.
    out.add(
      `-A ${fwChain} -m comment --comment "other traffic to ${spn} will be dropped by KUBE-PROXY-FIREWALL"`,
    );
  }

  // 9. SVC / SVL chains.
  const affinity = svc.sessionAffinity.type === 'ClientIP' ? svc.sessionAffinity.timeoutSeconds : 0;
  const all = cat.allReachable;
  const allRefs = all.map((ep) => endpointRef(names, ep));
  if (usesClusterChain) {
    decl.add(chainLine(clusterChain));
    active.add(clusterChain);
    const refs = refsFor(clusterEndpoints, all, allRefs, names);
    writeServiceToEndpointRules(ctx, out, spn, clusterChain, refs, affinity);
  }
  if (usesLocalChain) {
    decl.add(chainLine(localChain));
    active.add(localChain);
    const refs = refsFor(localEndpoints, all, allRefs, names);
    writeServiceToEndpointRules(ctx, out, spn, localChain, refs, affinity);
  }

  // 10. SEP chains: hairpin masquerade, then DNAT.
  const sepComment = ctx.largeClusterMode ? '' : ` -m comment --comment ${spn}`;
  let previous = '';
  for (const ref of allRefs) {
    // Endpoints are sorted by endpoint string, so a duplicate would be adjacent: never declare twice.
    if (ref.str === previous) continue;
    previous = ref.str;
    active.add(ref.chain);
    decl.add(chainLine(ref.chain));
    out.add(`-A ${ref.chain}${sepComment} -s ${ref.ip} -j ${KUBE_MARK_MASQ}`);
    const recent = affinity > 0 ? ` -m recent --name ${ref.chain} --set` : '';
    out.add(`-A ${ref.chain}${sepComment}${recent} ${pm} -j DNAT --to-destination ${ref.str}`);
  }

  return {
    noLocalInternal: hasEndpoints && !hasInternal,
    noLocalExternal: hasEndpoints && !hasExternal,
  };
}

function endpointRef(names: PortChainNames, ep: Endpoint): EndpointRef {
  const str = endpointString(ep);
  return { ip: ep.ip, str, chain: names.endpointChain(str) };
}

/** Refs for the cluster or local set: usually the very same array as allReachable. */
function refsFor(
  list: readonly Endpoint[],
  all: readonly Endpoint[],
  allRefs: readonly EndpointRef[],
  names: PortChainNames,
): readonly EndpointRef[] {
  if (list === all) return allRefs;
  const byEndpoint = new Map<Endpoint, EndpointRef>();
  for (let i = 0; i < all.length; i++) byEndpoint.set(all[i]!, allRefs[i]!);
  return list.map((ep) => byEndpoint.get(ep) ?? endpointRef(names, ep));
}

/** kube-proxy's writeServiceToEndpointRules: affinity checks first, then the random split. */
function writeServiceToEndpointRules(
  ctx: ServiceRenderContext,
  out: LineBuffer,
  spn: string,
  chain: string,
  refs: readonly EndpointRef[],
  affinityTimeout: number,
): void {
  const n = refs.length;
  const large = ctx.largeClusterMode;
  if (affinityTimeout > 0) {
    for (const ref of refs) {
      const comment = large ? '' : ` -m comment --comment "${spn} -> ${ref.str}"`;
      out.add(
        `-A ${chain}${comment} -m recent --name ${ref.chain} --rcheck --seconds ${affinityTimeout} --reap -j ${ref.chain}`,
      );
    }
  }
  for (let i = 0; i < n; i++) {
    const ref = refs[i]!;
    const comment = large ? '' : ` -m comment --comment "${spn} -> ${ref.str}"`;
    const stat = i < n - 1 ? ` -m statistic --mode random --probability ${computeProbability(n - i)}` : '';
    out.add(`-A ${chain}${comment}${stat} -j ${ref.chain}`);
  }
}
