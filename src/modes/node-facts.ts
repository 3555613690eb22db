import type { AddressWatch } from '../kernel/address-watch.js';
import { addressesInCIDRs, listAddresses, type InterfaceAddress } from '../kernel/netif.js';
import { cidrContains } from '../model/ip.js';
import { nodeContext, type NodeContext } from '../model/selection.js';
import type { ClusterState, IPFamily, NodeInfo } from '../model/types.js';
import { nodePortAddresses as nodePortAddressesOf, primaryNodeIPs } from './node-ports.js';

/** Which local addresses accept NodePort traffic: every one, or these. */
export type NodePortAddressMatch =
  { readonly matchAll: true } | { readonly matchAll: false; readonly addresses: readonly string[] };

/** What the node facts are gathered from (the resolved configuration, for one family). */
export interface NodeFactsInput {
  readonly family: IPFamily;
  readonly nodeName: string;
  /** --bind-address: the node IP when set (and of this family). */
  readonly bindAddress?: string;
  /** --nodeport-addresses: CIDRs, or the single value `primary`; empty = all local addresses. */
  readonly nodePortAddresses: readonly string[];
  /** --iptables-localhost-nodeports (IPv4 only; modes without localhost NodePorts pass false). */
  readonly localhostNodePorts: boolean;
  /** Read the addresses inside this network namespace (tests, sandboxes). */
  readonly netns?: string;
}

/** Facts about the node that the rules depend on; a change forces a full sync. */
export interface NodeFacts {
  readonly node: NodeContext;
  readonly nodeIPs: readonly string[];
  readonly nodePortAddresses: NodePortAddressMatch;
  readonly localhostNodePorts: boolean;
}

/**
 * Node name/zone, node IPs and NodePort addresses, re-read every sync as kube-proxy does, by every
 * mode that renders them (iptables, nftables), and by `svcplane diff` with exactly the facts the
 * proxier would use. A daemon's proxier passes its AddressWatch (the addresses of `c.netns`), which
 * reads them only when they changed.
 */
export async function gatherNodeFacts(
  c: NodeFactsInput,
  state: ClusterState | undefined,
  addresses?: AddressWatch,
): Promise<NodeFacts> {
  const nodeObj: NodeInfo | undefined = state?.nodes.get(c.nodeName);
  const addrs: InterfaceAddress[] = addresses
    ? await addresses.addresses()
    : await listAddresses({ netns: c.netns });
  const nodeIPs = primaryNodeIPs(c, nodeObj, addrs);
  const wanted = nodePortAddressesOf(c.nodePortAddresses, c.family);
  let nodePortAddresses: NodePortAddressMatch;
  let localhostNodePorts = c.family === 'IPv4' && c.localhostNodePorts;
  if (wanted.kind === 'all') {
    nodePortAddresses = { matchAll: true };
  } else if (wanted.kind === 'primary') {
    nodePortAddresses = { matchAll: false, addresses: nodeIPs };
    localhostNodePorts = false;
  } else {
    const { cidrs } = wanted;
    localhostNodePorts = localhostNodePorts && cidrs.some((x) => cidrContains(x, '127.0.0.1'));
    nodePortAddresses = {
      matchAll: false,
      addresses: addressesInCIDRs(addrs, cidrs, { includeLoopback: localhostNodePorts })
        .filter((a) => a.family === c.family)
        .map((a) => a.ip),
    };
  }
  return {
    node: nodeContext(c.nodeName, nodeObj?.labels ?? {}),
    nodeIPs,
    nodePortAddresses,
    localhostNodePorts,
  };
}
