import { nodeIPsFromInterfaces, type InterfaceAddress } from '../kernel/netif.js';
import { parseCIDR } from '../model/ip.js';
import type { IPFamily, NodeInfo } from '../model/types.js';

/**
 * --nodeport-addresses, read once for every mode: which local addresses of one family accept
 * NodePorts. iptables and nftables match "any local address" (`all`) or a list; IPVS binds one
 * virtual server per address, so it turns `all` into the node's addresses.
 */
export type NodePortAddresses =
  /** Unset, or a CIDR covering everything (0.0.0.0/0, ::/0), or no CIDR of this family. */
  | { readonly kind: 'all' }
  /** `primary`: the node's primary IP(s) of this family. */
  | { readonly kind: 'primary' }
  /** Local addresses inside these CIDRs (of this family). */
  | { readonly kind: 'cidrs'; readonly cidrs: readonly string[] };

export function nodePortAddresses(values: readonly string[], family: IPFamily): NodePortAddresses {
  if (values.includes('primary')) return { kind: 'primary' };
  const cidrs = values
    .map((t) => parseCIDR(t))
    .filter((p) => p !== undefined && p.family === family)
    .map((p) => p!.cidr);
  if (cidrs.length === 0 || cidrs.some((x) => x === '0.0.0.0/0' || x === '::/0')) return { kind: 'all' };
  return { kind: 'cidrs', cidrs };
}

/**
 * The node's primary IP(s) of one family, as kube-proxy picks its node IPs (what
 * `--nodeport-addresses=primary` means, in every mode): --bind-address when it is of this family,
 * else the Node object's first address of it, else the first global addresses of the interfaces.
 */
export function primaryNodeIPs(
  c: { readonly family: IPFamily; readonly bindAddress?: string | undefined },
  node: NodeInfo | undefined,
  addrs: readonly InterfaceAddress[],
): string[] {
  const fam = (ip: string): boolean => (ip.includes(':') ? 'IPv6' : 'IPv4') === c.family;
  if (c.bindAddress && fam(c.bindAddress) && c.bindAddress !== '0.0.0.0' && c.bindAddress !== '::') {
    return [c.bindAddress];
  }
  const fromNode = node?.addresses.filter(fam) ?? [];
  if (fromNode.length > 0) return [fromNode[0]!];
  return nodeIPsFromInterfaces(addrs, c.family);
}
