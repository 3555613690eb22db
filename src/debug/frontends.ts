import { parseIP } from '../model/ip.js';
import { familyFrontends } from '../model/selection.js';
import { servicePortName, type ClusterState } from '../model/types.js';

/**
 * Which Service port a packet is addressed to, from the cluster state: by frontend (cluster IP,
 * external IP, load-balancer IP and port) or, for a node address, by node port. IPVS mode needs
 * it: neither the virtual servers nor the ipsets carry a Service name (iptables mode reads the
 * rules' comments instead). Pure.
 */

export interface FrontendIndex {
  /** `tcp|10.96.0.10|80` → ServicePortName. */
  readonly byFrontend: ReadonlyMap<string, string>;
  /** `tcp|30080` → ServicePortName. */
  readonly byNodePort: ReadonlyMap<string, string>;
}

const key = (proto: string, ip: string, port: number): string => `${proto}|${ip}|${port}`;

export function buildFrontendIndex(state: ClusterState): FrontendIndex {
  const byFrontend = new Map<string, string>();
  const byNodePort = new Map<string, string>();
  for (const svc of state.services.values()) {
    if (svc.skipReason !== undefined) continue;
    for (const family of ['IPv4', 'IPv6'] as const) {
      const fe = familyFrontends(svc, family);
      const ips = [
        ...(fe.clusterIP !== undefined ? [fe.clusterIP] : []),
        ...fe.externalIPs,
        ...fe.loadBalancerVIPs,
      ];
      for (const port of svc.ports) {
        const proto = port.protocol.toLowerCase();
        const spn = servicePortName(port);
        for (const ip of ips)
          if (!byFrontend.has(key(proto, ip, port.port))) byFrontend.set(key(proto, ip, port.port), spn);
        if (port.nodePort !== 0) byNodePort.set(`${proto}|${port.nodePort}`, spn);
      }
    }
  }
  return { byFrontend, byNodePort };
}

/** The ServicePortName the packet is addressed to; `dstIsNode`: the destination is a node address. */
export function serviceForDestination(
  idx: FrontendIndex,
  packet: { readonly proto: string; readonly dst: string; readonly dport: number },
  dstIsNode: boolean,
): string | undefined {
  const ip = parseIP(packet.dst)?.ip ?? packet.dst;
  return (
    idx.byFrontend.get(key(packet.proto, ip, packet.dport)) ??
    (dstIsNode ? idx.byNodePort.get(`${packet.proto}|${packet.dport}`) : undefined)
  );
}
