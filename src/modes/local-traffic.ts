import { parseCIDR } from '../model/ip.js';
import type { IPFamily } from '../model/types.js';

/**
 * kube-proxy's LocalTrafficDetector, once for every mode: which packets count as coming from a local
 * pod (kept, not masqueraded, on their way to a ClusterIP), by --detect-local-mode. iptables and
 * nftables render it directly; IPVS turns it into its `! -s CIDR` / `! -i IFACE` match.
 */

/** kube-proxy's --detect-local-mode, resolved for one family. */
export type LocalDetector =
  | { mode: 'None' }
  | { mode: 'ClusterCIDR'; cidr: string }
  | { mode: 'BridgeInterface'; name: string }
  | { mode: 'InterfaceNamePrefix'; prefix: string };

export type DetectLocalMode = 'ClusterCIDR' | 'NodeCIDR' | 'BridgeInterface' | 'InterfaceNamePrefix' | '';

/** What the detector is built from (the resolved configuration, for one family). */
export interface LocalDetectorInput {
  readonly family: IPFamily;
  readonly detectLocalMode: DetectLocalMode;
  /** --cluster-cidr values (any family; the one of `family` is used). */
  readonly clusterCIDRs: readonly string[];
  /** The Node object's spec.podCIDRs (NodeCIDR), resolved at start-up. */
  readonly podCIDRs?: readonly string[];
  readonly bridgeInterface?: string;
  readonly interfaceNamePrefix?: string;
}

/**
 * The detector of one family. A family without a CIDR of its own gets none (kube-proxy's warning is
 * logged where the CIDRs are resolved); a mode whose input is missing is an error naming the flag.
 */
export function localTrafficDetector(c: LocalDetectorInput): LocalDetector {
  const cidrOfFamily = (cidrs: readonly string[]): string | undefined =>
    cidrs.map((t) => parseCIDR(t)).find((p) => p !== undefined && p.family === c.family)?.cidr;
  switch (c.detectLocalMode) {
    case 'ClusterCIDR': {
      const cidr = cidrOfFamily(c.clusterCIDRs);
      return cidr ? { mode: 'ClusterCIDR', cidr } : { mode: 'None' };
    }
    case 'NodeCIDR': {
      if (c.podCIDRs === undefined) {
        throw new Error("--detect-local-mode=NodeCIDR: the Node's pod CIDRs were not resolved (podCIDRs)");
      }
      const cidr = cidrOfFamily(c.podCIDRs);
      return cidr ? { mode: 'ClusterCIDR', cidr } : { mode: 'None' };
    }
    case 'BridgeInterface':
      if (!c.bridgeInterface) {
        throw new Error('--detect-local-mode=BridgeInterface needs --pod-bridge-interface');
      }
      return { mode: 'BridgeInterface', name: c.bridgeInterface };
    case 'InterfaceNamePrefix':
      if (!c.interfaceNamePrefix) {
        throw new Error('--detect-local-mode=InterfaceNamePrefix needs --pod-interface-name-prefix');
      }
      return { mode: 'InterfaceNamePrefix', prefix: c.interfaceNamePrefix };
    default:
      return { mode: 'None' };
  }
}
