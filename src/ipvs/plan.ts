import { cidrContains, ipFamilyOf } from '../model/ip.js';
import {
  categorizeEndpoints,
  externalPolicyLocal,
  familyFrontends,
  internalPolicyLocal,
  needsHealthCheck,
  type NodeContext,
} from '../model/selection.js';
import { servicePortName, type ClusterState, type Endpoint, type IPFamily } from '../model/types.js';
import { SET_IDS, SETS, normalizeMember, setName, type DesiredSet, type SetId } from './ipset.js';
import { resolveSchedulerFlags, vsKey, type RealServer, type VirtualServer } from './types.js';

/**
 * The IPVS planner (kube-proxy's ipvs syncProxyRules without the kernel): from a cluster state and
 * node facts, the virtual servers with their real servers, the addresses to bind on kube-ipvs0 and
 * the ipset members. Pure. The iptables rules around the sets are in ./rules.ts.
 */

export interface IpvsPlanConfig {
  readonly node: NodeContext;
  /** Addresses NodePort virtual servers listen on (--nodeport-addresses, else all non-loopback). */
  readonly nodePortIPs: readonly string[];
  /** Local addresses on interfaces other than kube-ipvs0 (an externalIP found there is not bound). */
  readonly otherLocalIPs: readonly string[];
  /** --ipvs-scheduler (validated). */
  readonly scheduler: string;
  /** Resolved scheduler flags (resolveSchedulerFlags); undefined = kube-proxy's default for the scheduler. */
  readonly schedulerFlags?: readonly string[];
}

export interface PlannedService {
  readonly vs: VirtualServer;
  readonly reals: readonly RealServer[];
  /** `ns/name:port` of the service port, for logs and the diff tool. */
  readonly owner: string;
}

export interface IpvsDesired {
  readonly family: IPFamily;
  /** By vsKey. */
  readonly services: ReadonlyMap<string, PlannedService>;
  /** Addresses to bind on kube-ipvs0, sorted. */
  readonly bindAddresses: readonly string[];
  /** Every set of this family (also the empty ones, so they exist for the rules). */
  readonly sets: readonly DesiredSet[];
  /** LB frontends whose source ranges do not cover a node IP: `ip|proto|port` (KUBE-IPVS-OUT-FILTER). */
  readonly outFilter: readonly { ip: string; protocol: string; port: number }[];
  /**
   * Entries of the no-endpoints ipsets, and the Services (by `ns/name`) counted by kube-proxy's IPVS
   * mode for sync_proxy_rules_no_local_endpoints_total: a Local policy, endpoints, none on this node.
   */
  readonly counts: {
    readonly noEndpoints: number;
    readonly noLocalEndpoints: number;
    readonly noLocalServices: { readonly internal: number; readonly external: number };
  };
}

type Frontend = { readonly ip: string; readonly external: boolean };

export function planIpvs(state: ClusterState, config: IpvsPlanConfig, family: IPFamily): IpvsDesired {
  const services = new Map<string, PlannedService>();
  const bind = new Set<string>();
  const members = new Map<SetId, Set<string>>(SET_IDS.map((id) => [id, new Set<string>()]));
  const add = (id: SetId, m: string): void => void members.get(id)!.add(normalizeMember(m));
  const outFilter: { ip: string; protocol: string; port: number }[] = [];
  const other = new Set(config.otherLocalIPs);
  let noEndpoints = 0;
  let noLocal = 0;
  const noLocalInternal = new Set<string>();
  const noLocalExternal = new Set<string>();
  const schedFlags = [
    ...(config.schedulerFlags ?? resolveSchedulerFlags(config.scheduler, undefined)),
  ].sort();

  const keys = [...state.services.keys()].sort();
  for (const key of keys) {
    const svc = state.services.get(key)!;
    if (svc.skipReason !== undefined) continue;
    const fe = familyFrontends(svc, family);
    if (fe.clusterIP === undefined) continue;
    const eLocal = externalPolicyLocal(svc);
    const iLocal = internalPolicyLocal(svc);
    if (needsHealthCheck(svc) && svc.healthCheckNodePort !== 0) {
      add('healthCheckNodePort', String(svc.healthCheckNodePort));
    }
    for (const port of svc.ports) {
      const proto = port.protocol.toLowerCase();
      const cats = categorizeEndpoints(svc, port, family, config.node);
      const owner = `${servicePortName(port)}/${port.protocol}`;
      const vsBase = {
        protocol: port.protocol,
        port: port.port,
        scheduler: config.scheduler,
        schedFlags,
        ...(svc.sessionAffinity.type === 'ClientIP'
          ? { persistence: svc.sessionAffinity.timeoutSeconds }
          : {}),
      };
      const pick = (local: boolean): readonly Endpoint[] => (local ? cats.local : cats.cluster) ?? [];
      // kube-proxy's IPVS mode counts a Service once (not per port) under each Local policy it has.
      if ((iLocal || eLocal) && cats.hasAnyEndpoints && (cats.local ?? []).length === 0) {
        if (iLocal) noLocalInternal.add(key);
        if (eLocal) noLocalExternal.add(key);
      }
      const internalEps = pick(iLocal);
      const externalEps = pick(eLocal);

      const frontends: Frontend[] = [{ ip: fe.clusterIP, external: false }];
      for (const ip of fe.externalIPs) frontends.push({ ip, external: true });
      for (const ip of fe.loadBalancerVIPs) frontends.push({ ip, external: true });
      const entry = (ip: string): string => `${ip},${proto}:${port.port}`;

      const addVS = (ip: string, external: boolean, vsPort = port.port): void => {
        const eps = external ? externalEps : internalEps;
        const vs: VirtualServer = { ...vsBase, address: ip, port: vsPort };
        const reals = eps
          .map((ep) => ({ address: ep.ip, port: ep.port, weight: 1 }))
          .sort((a, b) => (a.address + a.port < b.address + b.port ? -1 : 1));
        services.set(vsKey(vs), { vs, reals, owner });
        const fm = `${ip},${proto}:${vsPort}`;
        if (!cats.hasAnyEndpoints) {
          add('noEndpoints', fm);
          noEndpoints++;
        } else if (eps.length === 0) {
          add('noLocalEndpoints', fm);
          noLocal++;
        }
      };

      // ClusterIP
      addVS(fe.clusterIP, false);
      bind.add(fe.clusterIP);
      add('clusterIP', entry(fe.clusterIP));
      // externalIPs
      for (const ip of fe.externalIPs) {
        addVS(ip, true);
        if (!other.has(ip)) bind.add(ip);
        add(eLocal ? 'externalIPLocal' : 'externalIP', entry(ip));
      }
      // LoadBalancer VIPs
      for (const ip of fe.loadBalancerVIPs) {
        addVS(ip, true);
        if (!other.has(ip)) bind.add(ip);
        add('loadBalancer', entry(ip));
        if (eLocal) add('loadBalancerLocal', entry(ip));
        if (fe.loadBalancerSourceRanges.length > 0) {
          add('loadBalancerFW', entry(ip));
          for (const cidr of fe.loadBalancerSourceRanges)
            add('loadBalancerSourceCIDR', `${entry(ip)},${cidr}`);
          // kube-proxy: a node IP inside the ranges may reach the LB IP with the LB IP as its source.
          const nodeInRange = config.nodePortIPs.some((n) =>
            fe.loadBalancerSourceRanges.some((c) => cidrContains(c, n)),
          );
          if (nodeInRange) add('loadBalancerSourceIP', `${entry(ip)},${ip}`);
          else outFilter.push({ ip, protocol: proto, port: port.port });
        }
      }
      // NodePorts on every node address
      if (port.nodePort !== 0) {
        for (const ip of config.nodePortIPs) addVS(ip, true, port.nodePort);
        if (port.protocol === 'SCTP') {
          for (const ip of config.nodePortIPs) {
            add('nodePortSCTP', `${ip},sctp:${port.nodePort}`);
            if (eLocal) add('nodePortLocalSCTP', `${ip},sctp:${port.nodePort}`);
          }
        } else {
          const [all, local]: [SetId, SetId] =
            port.protocol === 'TCP'
              ? ['nodePortTCP', 'nodePortLocalTCP']
              : ['nodePortUDP', 'nodePortLocalUDP'];
          add(all, String(port.nodePort));
          if (eLocal) add(local, String(port.nodePort));
        }
      }
      // Hairpin: a local endpoint reaching itself through a frontend is masqueraded.
      const seen = new Set<string>();
      for (const ep of [...internalEps, ...externalEps]) {
        if (ep.nodeName !== config.node.name || seen.has(ep.ip + ep.port)) continue;
        seen.add(ep.ip + ep.port);
        add('loopBack', `${ep.ip},${proto}:${ep.port},${ep.ip}`);
      }
    }
  }
  for (const ip of bind) add('ipvsIPs', ip);
  const sets: DesiredSet[] = SET_IDS.map((id) => ({
    name: setName(SETS[id].base, family),
    type: SETS[id].type,
    members: members.get(id)!,
  }));
  return {
    family,
    services,
    bindAddresses: [...bind].filter((ip) => ipFamilyOf(ip) === family).sort(),
    sets,
    outFilter,
    counts: {
      noEndpoints,
      noLocalEndpoints: noLocal,
      noLocalServices: { internal: noLocalInternal.size, external: noLocalExternal.size },
    },
  };
}
