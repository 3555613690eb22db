import type { IPFamily } from '../model/types.js';
import { sha256Base32 } from '../util/base32.js';

/**
 * Names in kube-proxy's nftables table, exactly as its nftables proxier builds them
 * (`hashAndTruncate`, `servicePortChainNameBase`, `servicePortEndpointChainNameBase`), so that
 * `nft list table ip kube-proxy` reads the same and a node can switch between kube-proxy and svcplane.
 */

export const TABLE = 'kube-proxy';

/** The nft address family of kube-proxy's table for an IP family. */
export function nftFamily(family: IPFamily): 'ip' | 'ip6' {
  return family === 'IPv6' ? 'ip6' : 'ip';
}

// Base chains (`${type}-${hook}`).
export const FILTER_PREROUTING = 'filter-prerouting';
export const FILTER_INPUT = 'filter-input';
export const FILTER_FORWARD = 'filter-forward';
export const FILTER_OUTPUT = 'filter-output';
export const FILTER_OUTPUT_POST_DNAT = 'filter-output-post-dnat';
export const NAT_PREROUTING = 'nat-prerouting';
export const NAT_OUTPUT = 'nat-output';
export const NAT_POSTROUTING = 'nat-postrouting';

// Regular top-level chains.
export const SERVICES_CHAIN = 'services';
export const SERVICE_ENDPOINTS_CHECK = 'service-endpoints-check';
export const NODEPORT_ENDPOINTS_CHECK = 'nodeport-endpoints-check';
export const REJECT_CHAIN = 'reject-chain';
export const CLUSTER_IPS_CHECK = 'cluster-ips-check';
export const FIREWALL_CHECK = 'firewall-check';
export const MARK_MASQ_CHAIN = 'mark-for-masquerade';
export const MASQUERADING_CHAIN = 'masquerading';

// Maps and sets.
export const SERVICE_IPS_MAP = 'service-ips';
export const SERVICE_NODEPORTS_MAP = 'service-nodeports';
export const NODEPORT_IPS_SET = 'nodeport-ips';
export const CLUSTER_IPS_SET = 'cluster-ips';
export const NO_ENDPOINT_SERVICES_MAP = 'no-endpoint-services';
export const NO_ENDPOINT_NODEPORTS_MAP = 'no-endpoint-nodeports';
export const FIREWALL_IPS_MAP = 'firewall-ips';

/** The maps and sets whose elements follow the Services (diffed element by element on partial syncs). */
export const ELEMENT_CONTAINERS = [
  CLUSTER_IPS_SET,
  SERVICE_IPS_MAP,
  FIREWALL_IPS_MAP,
  NO_ENDPOINT_SERVICES_MAP,
  NO_ENDPOINT_NODEPORTS_MAP,
  SERVICE_NODEPORTS_MAP,
] as const;
export type ElementContainer = (typeof ELEMENT_CONTAINERS)[number];

export const CLUSTER_CHAIN_PREFIX = 'service-';
export const LOCAL_CHAIN_PREFIX = 'local-';
export const EXTERNAL_CHAIN_PREFIX = 'external-';
export const FIREWALL_CHAIN_PREFIX = 'firewall-';
export const ENDPOINT_CHAIN_PREFIX = 'endpoint-';
export const AFFINITY_SET_PREFIX = 'affinity-';

/** knftables.NameLengthMax (256) minus the longest prefix (16). */
const NAME_BASE_MAX = 256 - 16;

/** `HASH8-name`, truncated with `...` past 240 characters (never, in practice). */
export function hashAndTruncate(name: string): string {
  const out = `${sha256Base32(name, 1)}-${name}`;
  return out.length > NAME_BASE_MAX ? `${out.slice(0, NAME_BASE_MAX - 3)}...` : out;
}

export interface PortNames {
  readonly cluster: string;
  readonly local: string;
  readonly external: string;
  readonly firewall: string;
  /** `[chain, affinity set]` of one endpoint (`ip:port` or `[ip]:port`). */
  endpoint(ip: string, port: number): { readonly chain: string; readonly affinitySet: string };
}

/** The chain names of one service port: `HASH-namespace/name/protocol/portName`. */
export function portNames(
  namespace: string,
  name: string,
  protocolLower: string,
  portName: string,
): PortNames {
  const base = `${namespace}/${name}/${protocolLower}/${portName}`;
  const hashed = hashAndTruncate(base);
  return {
    cluster: CLUSTER_CHAIN_PREFIX + hashed,
    local: LOCAL_CHAIN_PREFIX + hashed,
    external: EXTERNAL_CHAIN_PREFIX + hashed,
    firewall: FIREWALL_CHAIN_PREFIX + hashed,
    endpoint(ip, port) {
      // IPv6 colons are not allowed in a chain name: kube-proxy writes them as dots.
      const ep = hashAndTruncate(`${base}__${ip.replaceAll(':', '.')}/${port}`);
      return { chain: ENDPOINT_CHAIN_PREFIX + ep, affinitySet: AFFINITY_SET_PREFIX + ep };
    },
  };
}

/** Per-Service chains carry a `/` (kube-proxy's isServiceChainName); the stock chains never do. */
export function isServiceChainName(chain: string): boolean {
  return chain.includes('/');
}

export function isAffinitySetName(set: string): boolean {
  return set.startsWith(AFFINITY_SET_PREFIX);
}

const OWNER_PREFIXES = [
  CLUSTER_CHAIN_PREFIX,
  LOCAL_CHAIN_PREFIX,
  EXTERNAL_CHAIN_PREFIX,
  FIREWALL_CHAIN_PREFIX,
  ENDPOINT_CHAIN_PREFIX,
  AFFINITY_SET_PREFIX,
];

/** `namespace/name` of the Service a per-Service chain or affinity set belongs to, from its name. */
export function serviceOfName(name: string): string | undefined {
  const prefix = OWNER_PREFIXES.find((p) => name.startsWith(p));
  if (prefix === undefined) return undefined;
  const rest = name.slice(prefix.length + 9); // HASH8 + '-'
  const parts = rest.split('/');
  return parts.length >= 4 && parts[0] && parts[1] ? `${parts[0]}/${parts[1]}` : undefined;
}
