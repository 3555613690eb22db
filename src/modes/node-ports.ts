import { parseCIDR } from '../model/ip.js';
import type { IPFamily } from '../model/types.js';

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
