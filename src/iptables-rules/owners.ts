import { portChainNames } from '../iptables/names.js';
import { endpointString } from '../model/selection.js';
import type { ClusterState, Protocol } from '../model/types.js';
import { servicePortName } from '../model/types.js';

/**
 * Who a chain or rule belongs to. kube-proxy's chain names are hashes of the ServicePortName (and
 * endpoint), so they cannot be read back; instead every name the current state could produce is
 * recomputed and looked up. Rules in shared chains (KUBE-SERVICES, KUBE-NODEPORTS, the filter
 * chains) are attributed by their comment, which always starts with (or names) the ServicePortName.
 * Pure.
 */

export type ServiceChainKind = 'SVC' | 'SVL' | 'EXT' | 'FW' | 'SEP';

export interface ServicePortRef {
  /** kube-proxy's ServicePortName string: `ns/name` or `ns/name:port`. */
  readonly servicePortName: string;
  readonly serviceKey: string;
  readonly protocol: Protocol;
  readonly port: number;
  readonly nodePort: number;
}

export interface ChainOwner {
  readonly ref: ServicePortRef;
  readonly kind: ServiceChainKind;
  /** For SEP chains: the endpoint (`ip:port` / `[ip]:port`). */
  readonly endpoint?: string;
}

export interface OwnerIndex {
  /** Per-service chain name → owner, for every chain the state could produce. */
  readonly chains: ReadonlyMap<string, ChainOwner>;
  /** ServicePortName → port. */
  readonly servicePorts: ReadonlyMap<string, ServicePortRef>;
}

const PROTOCOL_LOWER = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' } as const;

export function buildOwnerIndex(state: ClusterState): OwnerIndex {
  const chains = new Map<string, ChainOwner>();
  const servicePorts = new Map<string, ServicePortRef>();
  for (const [key, svc] of state.services) {
    for (const port of svc.ports) {
      const spn = servicePortName(port);
      const ref: ServicePortRef = {
        servicePortName: spn,
        serviceKey: key,
        protocol: port.protocol,
        port: port.port,
        nodePort: port.nodePort,
      };
      if (!servicePorts.has(spn)) servicePorts.set(spn, ref);
      const proto = PROTOCOL_LOWER[port.protocol];
      if (proto === undefined) continue;
      const names = portChainNames(spn, proto);
      chains.set(names.svc, { ref, kind: 'SVC' });
      chains.set(names.svl, { ref, kind: 'SVL' });
      chains.set(names.ext, { ref, kind: 'EXT' });
      chains.set(names.fw, { ref, kind: 'FW' });
      for (const ep of port.endpoints) {
        const e = endpointString(ep);
        chains.set(names.endpointChain(e), { ref, kind: 'SEP', endpoint: e });
      }
    }
  }
  return { chains, servicePorts };
}

// A ServicePortName: namespace/name[:port]; DNS-ish characters only, as the renderer checks.
const SPN = String.raw`[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(?::[A-Za-z0-9._-]+)?`;

// Every comment kube-proxy writes that names a ServicePortName (reference spec §8).
const SPN_COMMENTS: readonly RegExp[] = [
  new RegExp(
    String.raw`^(${SPN})(?: cluster IP| external IP| loadbalancer IP| has no endpoints| has no local endpoints| health check node port| traffic not accepted by KUBE-FW-\S+| -> \S+)?$`,
  ),
  new RegExp(
    String.raw`^(?:masquerade traffic for|pod traffic for|masquerade LOCAL traffic for|route LOCAL traffic for) (${SPN}) external destinations$`,
  ),
  new RegExp(String.raw`^other traffic to (${SPN}) will be dropped by KUBE-PROXY-FIREWALL$`),
];

/** The ServicePortName a kube-proxy comment names, or undefined for any other comment. */
export function servicePortNameFromComment(comment: string | undefined): string | undefined {
  if (comment === undefined) return undefined;
  for (const re of SPN_COMMENTS) {
    const m = re.exec(comment);
    if (m) return m[1];
  }
  return undefined;
}

/** `ns/name` of a ServicePortName. */
export function serviceKeyOf(servicePortName: string): string {
  const colon = servicePortName.indexOf(':');
  return colon < 0 ? servicePortName : servicePortName.slice(0, colon);
}
